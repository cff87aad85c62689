"""A second terminal next to `totes-cdc up`: status, reconcile and lake query with no flags find
the running stack through its stack.json; once the stack has stopped, the file is not used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from tests.e2e.conftest import start_stack, stop_stack
from totes_cdc.settings import settings

pytestmark = pytest.mark.e2e


def plain_env() -> dict[str, str]:
    """A fresh terminal's environment: no DSN, state dir or AWS variable set (and boto3 kept from
    looking for credentials on the network when the stack's are not used)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("TOTES_CDC_", "AWS_"))},
            "AWS_EC2_METADATA_DISABLED": "true"}


def totes_cdc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "totes_ops", *args], cwd=cwd, env=plain_env(),
                          capture_output=True, text=True, timeout=120)


def test_commands_with_no_flags_use_the_running_stack_and_never_a_stopped_one(tmp_path):
    state = tmp_path / ".totes-cdc"                # the default state dir, seen from tmp_path
    stack = start_stack(state, "--seed", "synthetic")
    try:
        assert "Next, in another terminal:" in stack.output
        assert f"export TOTES_CDC_STATE_DIR={state.resolve()}" in stack.output
        assert " status " in stack.output and " reconcile " in stack.output
        assert f"open {stack.info['dashboard_url']}" in stack.output
        saved = (state / "stack.json").read_text()

        deadline = time.monotonic() + 240
        while (reconcile := totes_cdc(tmp_path, "reconcile", "--json")).returncode != 0:
            assert time.monotonic() < deadline, reconcile.stdout[-3000:] + reconcile.stderr[-3000:]
            time.sleep(3)
        taken = f"totes-cdc: using the running stack of {Path('.totes-cdc') / 'stack.json'}"
        assert reconcile.stderr.startswith(taken)
        assert "source DSN, warehouse DSN, AWS endpoint http://127.0.0.1:" in reconcile.stderr

        status = totes_cdc(tmp_path, "status", "--json")
        assert status.returncode == 0 and status.stderr.startswith(taken)
        report = json.loads(status.stdout)
        assert report["slot_lag_bytes"] is not None and report["files_waiting"] is not None
        assert report["capture"]["tables"] == 11
        assert report["last_loaded_at"] is not None

        lake = totes_cdc(tmp_path, "lake", "query", "--json",
                         "SELECT count(*) AS n FROM processed_sales_order WHERE _op = 'r'")
        assert lake.returncode == 0, lake.stderr
        assert json.loads(lake.stdout) == [{"n": stack.info["source_row_counts"]["sales_order"]}]

        # Sales orders deleted while nothing listened (their table out of the publication then)
        # stay current in the warehouse until `resync` reads the table again. The raw zone has no
        # delete for them: reconcile's history check expects their ghost tombstones at the read.
        publication = settings()["capture"]["publication"]
        for statement in (f"ALTER PUBLICATION {publication} DROP TABLE public.sales_order",
                          "DELETE FROM sales_order WHERE sales_order_id IN (SELECT sales_order_id "
                          "FROM sales_order ORDER BY sales_order_id LIMIT 3)",
                          f"ALTER PUBLICATION {publication} ADD TABLE public.sales_order"):
            stack.execute([(statement, ())])
        resync = totes_cdc(tmp_path, "resync", "--table", "sales_order")
        assert resync.returncode == 0, resync.stderr[-3000:]
        assert resync.stderr.startswith(taken) and "copy of public.sales_order" in resync.stderr
        deadline = time.monotonic() + 120
        while (reconcile := totes_cdc(tmp_path, "reconcile", "--json")).returncode:
            assert time.monotonic() < deadline, [t for t in json.loads(reconcile.stdout)["tables"]
                                                 if t["differences"]]
            time.sleep(3)
        conn = psycopg2.connect(stack.warehouse_dsn)
        with conn, conn.cursor() as cur:  # the ghosts' history: their versions, then a tombstone
            cur.execute("SELECT sales_order_id, array_agg(source_op ORDER BY source_lsn, source_seq) "
                        "FROM fact_sales_order GROUP BY 1 ORDER BY 1 LIMIT 3")
            assert [ops[-1] for _, ops in cur.fetchall()] == ["d", "d", "d"]
        conn.close()
    finally:
        output = stop_stack(stack)
    assert "stopped" in output
    assert not (state / "stack.json").exists()        # a stopped stack takes its file away

    # A file left behind by an `up` that is gone (say, killed) is reported and not used.
    (state / "stack.json").write_text(saved)
    status = totes_cdc(tmp_path, "status")
    assert status.returncode == 0
    assert f"is stale: the `totes-cdc up` that wrote it (pid {stack.process.pid}) is gone" in status.stderr
    assert "using the running stack" not in status.stderr
    assert "unknown slot_lag_bytes: no source DSN" in status.stdout
    reconcile = totes_cdc(tmp_path, "reconcile")
    assert reconcile.returncode == 2 and "reconcile needs the source database" in reconcile.stderr
