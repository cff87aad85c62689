"""The synthetic seed loads into a real totesys schema with every constraint holding."""

from __future__ import annotations

import psycopg2
import pytest

from totes_ops.stack import seed, synthetic
from totes_ops.stack.seed import LOAD_ORDER

pytestmark = pytest.mark.integration


def _fingerprint(dsn: str) -> dict[str, str]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            found = {}
            for table in LOAD_ORDER:
                cur.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t")
                found[table] = cur.fetchone()[0]
            return found
    finally:
        conn.close()


def test_synthetic_rows_load_deterministically_with_sequences_past_max_ids(totesys_dsn, source_server):
    other = source_server.create_database(totesys_dsn.split("dbname=")[1].split()[0] + "_again")
    for dsn in (totesys_dsn, other):
        conn = psycopg2.connect(dsn)
        try:
            if dsn == other:
                seed.create_schema(conn)
            counts = synthetic.load_synthetic(conn, seed=7)
            assert counts == seed.row_counts(conn) == {
                "address": 30, "counterparty": 20, "currency": 3, "department": 8, "design": 473,
                "payment_type": 4, "staff": 20, "sales_order": 11187, "purchase_order": 4649,
                "transaction": 15836, "payment": 15836}
        finally:
            conn.close()
    assert _fingerprint(totesys_dsn) == _fingerprint(other)

    conn = psycopg2.connect(totesys_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO currency (currency_code, last_updated) VALUES ('JPY', now()) "
                        "RETURNING currency_id")
            assert cur.fetchone()[0] == 4
            cur.execute("SELECT count(*) FROM transaction "
                        "WHERE (sales_order_id IS NULL) = (purchase_order_id IS NULL)")
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT max(to_date(agreed_delivery_date, 'YYYY-MM-DD')) > max(created_at) "
                        "FROM sales_order")
            assert cur.fetchone()[0] is True
            cur.execute("SELECT count(*) FROM payment WHERE paid AND last_updated > created_at")
            assert 9000 < cur.fetchone()[0] < 10500
    finally:
        conn.rollback()
        conn.close()
