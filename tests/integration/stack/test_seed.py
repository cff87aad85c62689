"""The totesys schema and real rows load into a real server as the source expects them."""

import psycopg2
import pytest

from tests.conftest import SEED_DIR, requires_real_data
from totes_cdc.errors import ConfigError
from totes_ops.stack import seed

pytestmark = pytest.mark.integration

REAL_COUNTS = {"address": 30, "counterparty": 20, "currency": 3, "department": 8, "design": 473,
               "payment": 15836, "payment_type": 4, "purchase_order": 4649, "sales_order": 11187,
               "staff": 20, "transaction": 15836}


@requires_real_data
def test_real_totesys_rows_load_with_sequences_past_max_ids(totesys_dsn):
    conn = psycopg2.connect(totesys_dsn)
    try:
        assert seed.load_totesys(conn, SEED_DIR) == REAL_COUNTS
        assert seed.row_counts(conn) == REAL_COUNTS
        with conn.cursor() as cur:
            cur.execute("INSERT INTO currency (currency_code, last_updated) VALUES ('JPY', now()) "
                        "RETURNING currency_id")
            assert cur.fetchone()[0] == 4
            cur.execute("SELECT count(*) FROM address WHERE address_line_2 IS NULL")
            assert cur.fetchone()[0] == 20
    finally:
        conn.close()


def test_missing_seed_file_is_a_clear_error(totesys_dsn, tmp_path):
    conn = psycopg2.connect(totesys_dsn)
    try:
        with pytest.raises(ConfigError, match=r"seed file missing: .*address\.csv"):
            seed.load_totesys(conn, tmp_path)
    finally:
        conn.close()
