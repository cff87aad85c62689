"""RELIABILITY.md is rendered from the suite's results: every scenario, its figures and failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos import report
from tests.chaos.report import render

pytestmark = pytest.mark.chaos

RUN = {"date": "2026-11-27T21:44:01+00:00", "seed": 8, "rate_changes_per_s": 20.0,
       "machine": "vm: 2 cores", "moto": "5.2.5", "seed_data": "totesys", "source_rows": 48066,
       "postgres": "/usr/lib/postgresql/15/bin", "start_and_snapshot_seconds": 27.2,
       "settings_overrides": {"loader_mapping": {"visibility_timeout_seconds": 20}},
       "loader_workers": 4, "wal_sender_timeout": "4s"}


def scenario(name: str, outcome: str, **extra: object) -> dict[str, object]:
    return {"name": name, "title": f"the {name} scenario", "outcome": outcome, "seconds": 12.5,
            "faults": ["+1.0 s: kill -9 capture (pid 1)"],
            "source_changes": {"simulated changes": 1200, "simulated transactions": 500},
            "warehouse_changes": {"fact_payment rows appended": 300, "fact_sales_order rows appended": 90},
            "notes": ["traffic interrupted 1 time(s) and resumed"], **extra}


def test_every_scenario_is_reported_with_its_figures() -> None:
    text = render({"run": RUN, "scenarios": [
        scenario("kills", "passed", catch_up_seconds=8.4, restarts={"capture": 3},
                 reconcile={"exit_code": 0, "ok": True, "tables_compared": 17, "differences": 0,
                            "failing": {}, "compared": {
                                "source_wal_lsn": "0/2FB0888", "history": True, "raw_events": 82349,
                                "history_through": {"lsn": "0/2FA9960", "seq": 4}}},
                 dead_letters={"s3://dl/records/x.json": "not a change event"},
                 alerts=["2 dead-lettered objects/messages"]),
        scenario("outage", "failed", failure="AssertionError: boom",
                 reconcile={"exit_code": 1, "ok": False, "tables_compared": 11, "differences": 4,
                            "failing": {"fact_payment": {"missing": 4}}},
                 log_tails={"load": "line 1\nline 2"}),
    ]})
    assert text.startswith("# Reliability")
    assert "| the kills scenario | passed | 1 | 1,200 | 390 | 0 | 8.4 |" in text
    assert "| the outage scenario | failed | 1 | 1,200 | 390 | 4 | - |" in text
    assert "TOTES_CDC_CHAOS_SEED=8" in text
    assert "Loader runner workers: 4; source `wal_sender_timeout` 4s" in text
    assert ("History compared: 82,349 raw change events of the fact tables, through commit LSN "
            "0/2FA9960 position 4; source read at WAL position 0/2FB0888") in text
    assert "Components restarted by the supervisor: capture 3" in text
    assert "`s3://dl/records/x.json`: not a change event" in text
    assert "alerts: 2 dead-lettered objects/messages" in text
    assert '"fact_payment": {"missing": 4}' in text
    assert "AssertionError: boom" in text and "line 2" in text
    assert "Note: traffic interrupted 1 time(s) and resumed" in text


def test_a_run_stopped_before_reconcile_says_so() -> None:
    text = render({"run": RUN, "scenarios": [scenario("early", "error")]})
    assert "| the early scenario | error | 1 | 1,200 | 390 | not reached | - |" in text


def test_regenerating_keeps_the_hand_written_findings(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:

    results, target = tmp_path / "results.json", tmp_path / "RELIABILITY.md"
    monkeypatch.setattr(report, "RESULTS_PATH", results)
    monkeypatch.setattr(report, "TARGET", target)
    monkeypatch.setattr("sys.argv", ["report"])
    results.write_text(json.dumps({"run": RUN, "scenarios": [scenario("early", "error")]}))
    report.main()
    assert target.read_text().endswith(f"{report.FINDINGS}\n\n## Findings\n")
    target.write_text(target.read_text().replace("the early", "an old") + "- a finding\n")
    report.main()
    text = target.read_text()
    assert "the early scenario" in text and "an old" not in text
    assert text.endswith(f"{report.FINDINGS}\n\n## Findings\n- a finding\n")
