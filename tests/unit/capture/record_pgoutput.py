"""Record real pgoutput bytes for the decoder's unit tests: ``python -m tests.unit.capture.record_pgoutput``.

Starts a throwaway PostgreSQL server, runs a scripted workload covering every message and value
kind, reads it back through a replication slot three ways (protocol 1 text, protocol 1 binary,
protocol 2 streaming) and writes the messages as hex into ``data/pgoutput.json``. Long runs of
messages of one type (the bulk inserts) are cut to their first few: every kept message is real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg2
import psycopg2.extras

from totes_ops.stack.postgres import LocalPostgres, make_base_dir

OUT = Path(__file__).parent / "data" / "pgoutput.json"
MAX_RUN = 5

SETUP = """
CREATE TYPE "Mood" AS ENUM ('happy', 'sad');
CREATE TABLE item (id integer PRIMARY KEY, name text, big text, price numeric(10,2),
                   mood "Mood", ok boolean, at timestamptz);
ALTER TABLE item ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE nokey (a integer, b text);
ALTER TABLE nokey REPLICA IDENTITY FULL;
CREATE TABLE bulk (id integer PRIMARY KEY);
CREATE PUBLICATION pub FOR TABLE item, nokey, bulk;
"""

WORKLOAD = [
    "INSERT INTO item VALUES (1, 'one', repeat('x', 5000), 12.50, 'happy', true, "
    "'2024-01-02 03:04:05+00'), (2, NULL, NULL, NULL, NULL, NULL, NULL)",
    "UPDATE item SET name = 'uno' WHERE id = 1",            # big unchanged: 'u'
    "UPDATE item SET id = 3 WHERE id = 2",                  # key change: old key 'K'
    "DELETE FROM item WHERE id = 3",                        # old key 'K'
    "INSERT INTO nokey VALUES (1, 'a')",
    "UPDATE nokey SET b = 'b'",                             # REPLICA IDENTITY FULL: old row 'O'
    "DELETE FROM nokey",
    "SELECT pg_logical_emit_message(true, 'tx_prefix', 'in a transaction')",
    "SELECT pg_logical_emit_message(false, 'totes_cdc_heartbeat', 'beat')",
    "ALTER TABLE item ADD COLUMN extra integer",
    "INSERT INTO item (id, name, extra) VALUES (4, 'four', 44)",
    "TRUNCATE item, nokey RESTART IDENTITY CASCADE",
]


def _read(dsn: str, slot: str, options: dict[str, str]) -> list[str]:
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    messages: list[str] = []
    run = 0
    try:
        cur = conn.cursor()
        cur.start_replication(slot_name=slot, decode=False, options=options)
        while True:
            msg = cur.read_message()
            if msg is None:
                import select

                if not select.select([cur], [], [], 2.0)[0]:
                    return messages
                continue
            run = run + 1 if messages and messages[-1][:2] == msg.payload[:1].hex() else 1
            if run <= MAX_RUN:
                messages.append(msg.payload.hex())
    finally:
        conn.close()


def main() -> None:
    base = make_base_dir()
    server = LocalPostgres(base / "pg", settings={"logical_decoding_work_mem": "'64kB'"})
    server.init()
    server.start()
    try:
        dsn = server.dsn()
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(SETUP)
        for slot in ("v1", "v1_binary", "v2"):
            cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        for statement in WORKLOAD:
            cur.execute(statement)
        # Big enough to pass logical_decoding_work_mem: streamed under protocol 2.
        cur.execute("INSERT INTO bulk SELECT generate_series(1, 3000)")
        cur.execute("BEGIN")
        cur.execute("INSERT INTO bulk SELECT generate_series(10001, 13000)")
        cur.execute("ROLLBACK")
        conn.close()
        base_options = {"proto_version": "1", "publication_names": "pub", "messages": "true"}
        recorded = {
            "v1": _read(dsn, "v1", base_options),
            "v1_binary": _read(dsn, "v1_binary", {**base_options, "binary": "true"}),
            "v2": _read(dsn, "v2", {**base_options, "proto_version": "2", "streaming": "on"}),
        }
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    OUT.write_text(json.dumps(recorded, indent=0) + "\n")
    print({name: len(messages) for name, messages in recorded.items()})


if __name__ == "__main__":
    main()
