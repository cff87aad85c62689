"""Files applied at the same time by several loaders end as if applied one after the other."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest

from tests.integration.warehouse_loader.files import event
from tests.integration.warehouse_loader.test_apply import load, payment, query
from tests.integration.warehouse_loader.test_current_state import assert_current_is_derived
from totes_cdc.contract import snapshot_seq

pytestmark = pytest.mark.integration

GATE = 0x676174  # the advisory lock the tests hold to keep a loader's transaction open


def _hold_commit_of(conn: Any, table: str, when: str) -> None:
    """Make a transaction that inserts a row of ``table`` matching ``when`` wait at its commit
    until the test releases GATE (a deferred constraint trigger takes GATE shared)."""
    with conn.cursor() as cur:
        cur.execute("CREATE FUNCTION test_gate() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN PERFORM pg_advisory_xact_lock_shared({GATE}); RETURN NULL; END $$")
        cur.execute(f"CREATE CONSTRAINT TRIGGER gate AFTER INSERT ON {table} DEFERRABLE "
                    f"INITIALLY DEFERRED FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION test_gate()")
    conn.commit()


def _waiting(conn: Any) -> int:
    """Backends of this database waiting for a lock."""
    return query(conn, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                       "WHERE NOT l.granted AND a.datname = current_database()")[0][0]


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _second_while_first_waits_at_commit(warehouse: Any, dsn: str, columns: dict[str, Any],
                                        first: list[dict[str, Any]],
                                        second: list[dict[str, Any]]) -> None:
    """Apply the payment file ``first`` on a connection of its own and, while it waits at its
    commit (see _hold_commit_of), the file ``second``; then let both finish."""
    errors: list[BaseException] = []

    def apply(rows: list[dict[str, Any]]) -> None:
        conn = psycopg2.connect(dsn)
        try:
            load(conn, columns, "payment", rows)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            conn.close()

    query(warehouse, "SELECT pg_advisory_lock(%s)", (GATE,))
    threads = [threading.Thread(target=apply, args=(rows,)) for rows in (first, second)]
    threads[0].start()
    _until(lambda: _waiting(warehouse) == 1)  # the first file waits at its commit
    threads[1].start()
    # The second file is done, or waits for the first (a lock of the loader's own).
    _until(lambda: not threads[1].is_alive() or _waiting(warehouse) == 2)
    query(warehouse, "SELECT pg_advisory_unlock(%s)", (GATE,))
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert_current_is_derived(warehouse)


@pytest.mark.parametrize("first", ["late row", "truncate"])
def test_a_truncate_and_an_older_row_applied_at_once_leave_the_row_deleted(
        warehouse, warehouse_dsn, totesys_columns, first):
    """Regression: at READ COMMITTED with no lock, neither file saw the other and the row older
    than the truncate stayed current. The first file is held open at its commit while the second
    is applied."""
    load(warehouse, totesys_columns, "payment", [event("r", 100, 1, payment(1))])
    files = {"late row": [event("c", 250, 1, payment(2))], "truncate": [event("t", 300, 1)]}
    _hold_commit_of(warehouse, "mirror._truncations" if first == "truncate" else "mirror.payment",
                    "true" if first == "truncate" else "NEW.payment_id = 2")
    second = "late row" if first == "truncate" else "truncate"
    _second_while_first_waits_at_commit(warehouse, warehouse_dsn, totesys_columns, files[first],
                                        files[second])

    assert query(warehouse, "SELECT payment_id, is_deleted FROM mirror.payment ORDER BY 1") == [
        (1, True), (2, True)]
    assert query(warehouse, "SELECT count(*) FROM fact_payment_current") == [(0,)]
    assert query(warehouse, "SELECT payment_id, source_op, payment_amount::text FROM fact_payment "
                            "WHERE is_deleted ORDER BY 1") == [(1, "d", "56925.44"),
                                                               (2, "d", "56925.44")]


@pytest.mark.parametrize("first", ["insert", "delete"])
def test_a_delete_and_the_insert_before_it_applied_at_once_give_the_tombstone_its_values(
        warehouse, warehouse_dsn, totesys_columns, first):
    """Two files of one row at the same time: the second resolves after the first commits."""
    files = {"insert": [event("c", 100, 1, payment(1))],
             "delete": [event("d", 200, 1, {"payment_id": "1"})]}
    op = files[first][0]["_op"]
    _hold_commit_of(warehouse, "mirror_history.payment", f"NEW.source_op = '{op}'")
    _second_while_first_waits_at_commit(warehouse, warehouse_dsn, totesys_columns, files[first],
                                        files["delete" if first == "insert" else "insert"])

    assert query(warehouse, "SELECT payment_id, is_deleted, payment_amount::text "
                            "FROM mirror.payment") == [(1, True, "56925.44")]
    assert query(warehouse, "SELECT source_op, payment_amount::text FROM fact_payment "
                            "ORDER BY source_lsn") == [("c", "56925.44"), ("d", "56925.44")]


def test_two_snapshot_files_of_overlapping_keys_applied_at_once_end_as_one_after_the_other(
        warehouse, warehouse_dsn, totesys_columns, bulk_checks, new_key_checks):
    """The snapshot queue's loaders apply two files of reads at once: a chunk read at C1, and the
    same chunk read again at C2 (capture killed before it saved the chunk's progress), one row
    changed meanwhile and one row new. Both are bulk files; the second's plain insert of its mirror
    rows waits for the first's new mirror rows and fails once they commit, and the file goes back
    to the general way: its own new key the short way (its facts the first versions of their ids:
    migration 022), the others as known rows."""
    first = [event("r", 1000, snapshot_seq(n), payment(n)) for n in (1, 2)]
    second = [event("r", 2000, snapshot_seq(1), payment(1)),
              event("r", 2000, snapshot_seq(2), payment(2, payment_amount="10.00")),
              event("r", 2000, snapshot_seq(3), payment(3))]
    _hold_commit_of(warehouse, "mirror.payment", "NEW.payment_id = 1")
    _second_while_first_waits_at_commit(warehouse, warehouse_dsn, totesys_columns, first, second)

    assert bulk_checks == [("payment", True), ("payment", True)]
    assert new_key_checks == [("payment", True), ("payment", False)]
    # The unchanged re-read is no version of its own; the changed one and the new row are.
    assert query(warehouse, "SELECT payment_id, source_lsn, payment_amount::text FROM fact_payment "
                            "ORDER BY 1, 2") == [(1, 1000, "56925.44"), (2, 1000, "56925.44"),
                                                 (2, 2000, "10.00"), (3, 2000, "56925.44")]
    assert query(warehouse, "SELECT payment_id, payment_amount::text FROM fact_payment_current "
                            "ORDER BY 1") == [(1, "56925.44"), (2, "10.00"), (3, "56925.44")]
