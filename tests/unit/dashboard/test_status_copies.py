"""`totes-cdc status`: the tables being copied (initial snapshot, resync), from the status files of
the live capture and resync processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from totes_ops.status import Status, capture_progress, copies, render


def copy(table: str, done: int, total: int | None, finished: bool = False) -> dict[str, Any]:
    return {"table": table, "rows_done": done, "estimated_total": total, "rate": 2500.0,
            "eta_seconds": None if total is None else (total - done) // 2500, "finished": finished}


def write(state_dir: Path, name: str, pid: int, *tables: dict[str, Any]) -> None:
    (state_dir / "status").mkdir(exist_ok=True)
    (state_dir / "status" / name).write_text(json.dumps({"phase": "streaming", "pid": pid,
                                                        "copies": list(tables)}))


def gone_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_copies_of_capture_and_of_a_resync_are_both_shown_finished_ones_not(tmp_path: Path) -> None:
    write(tmp_path, "capture.json", os.getpid(), copy("public.staff", 20, 20, finished=True),
          copy("public.payment", 1000, 5000))
    write(tmp_path, "resync.json", os.getpid(), copy("public.sales_order", 250_000, 1_000_000))
    found = copies(tmp_path)
    assert [c["table"] for c in found] == ["public.payment", "public.sales_order"]
    text = render(Status(copies=found))
    assert ("source     table copy                 public.payment 1,000/5,000 rows (20%), "
            "2,500 rows/s, ETA 1 s") in text
    assert ("source     table copy                 public.sales_order 250,000/1,000,000 rows (25%), "
            "2,500 rows/s, ETA 300 s") in text


def test_the_file_of_a_process_that_is_gone_is_not_read(tmp_path: Path) -> None:
    write(tmp_path, "capture.json", os.getpid())
    write(tmp_path, "resync.json", gone_pid(), copy("public.sales_order", 10, 100))  # killed
    assert copies(tmp_path) == []
    assert "table copies               none running" in render(Status(copies=[]))


def test_no_status_file_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="no local capture or resync status"):
        copies(tmp_path)
    assert "table copies               unknown" in render(Status())


def test_a_snapshot_of_tables_without_estimates_shows_its_rows_not_of_0() -> None:
    """Tables never analysed have no estimate (capture's status says total null): their snapshot
    read "48,066 of 0 rows"."""
    capture = {"phase": "streaming", "behind_ms": None, "snapshot_rows": 48066, "snapshot_total": 0,
               "tables_done": 11, "tables": 11}
    assert "capture snapshot           streaming: 48,066 rows, 11 of 11 tables done" in render(
        Status(capture=capture))


def test_capture_snapshot_progress_is_shown_while_the_snapshot_runs(tmp_path: Path) -> None:
    """Before capture streams, its status file has its copies and no snapshot summary yet."""
    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "capture.json").write_text(json.dumps({
        "phase": "snapshot", "pid": os.getpid(),
        "copies": [copy("public.staff", 20, 20, finished=True), copy("public.payment", 1000, 5000)]}))
    status = Status(capture=capture_progress(tmp_path))
    assert "snapshot: 1,020 of 5,020 rows (20%), 1 of 2 tables done" in render(status)
