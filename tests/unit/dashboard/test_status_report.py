"""Alerts and the text report of ``totes-cdc status`` (pure functions)."""

from totes_cdc.settings import settings
from totes_ops.status import Status, alerts, render


def test_no_values_no_alerts():
    assert alerts(Status()) == []


def test_each_threshold_fires_only_when_exceeded():
    a = settings()["alarms"]
    at_limit = Status(slot_lag_bytes=a["slot_lag_bytes"], stream_lag_ms=a["iterator_age_ms"],
                      latency_ms={"p50": 1.0, "p95": 2.0, "p99": a["end_to_end_latency_p99_ms"]},
                      heartbeat_age_s=a["heartbeat_missing_seconds"], dead_lettered_objects=0,
                      dead_letter_queue_depth=0)
    assert alerts(at_limit) == []
    over = Status(slot_lag_bytes=a["slot_lag_bytes"] + 1, stream_lag_ms=a["iterator_age_ms"] + 1.0,
                  latency_ms={"p50": 1.0, "p95": 2.0, "p99": a["end_to_end_latency_p99_ms"] + 1.0},
                  heartbeat_age_s=a["heartbeat_missing_seconds"] + 1.0, dead_lettered_objects=1,
                  heartbeat_missing=False)
    assert len(alerts(over)) == 5


def test_missing_heartbeat_is_an_alert():
    assert alerts(Status(heartbeat_missing=True)) == ["capture heartbeat missing"]


def test_render_shows_values_unknowns_and_alerts():
    text = render(Status(slot_lag_bytes=123456, stream_lag_ms=12.4, last_loaded_at="2026-01-01T00:00:00",
                         latency_ms={"p50": 100.0, "p95": 200.0, "p99": 300.4},
                         alerts=["stream lag 9 ms > 1"], unknown={"files_waiting": "no queue"}))
    assert "replication slot lag" in text and "123,456 bytes" in text
    assert "stream lag                 12 ms" in text
    assert "end-to-end latency p99     300 ms" in text
    assert "files waiting              unknown" in text
    assert "alerts: stream lag 9 ms > 1" in text
    assert "unknown files_waiting: no queue" in text
    assert "alerts: none" in render(Status())


def test_aws_clients_follow_the_environment(monkeypatch):
    from totes_ops import status

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    first = status._aws("sqs")
    assert first.meta.endpoint_url == "http://127.0.0.1:1"
    assert status._aws("sqs") is first
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert status._aws("sqs").meta.endpoint_url == "http://127.0.0.1:2"


def test_snapshot_progress_is_read_from_the_local_capture_status(tmp_path):
    import json

    from totes_ops.status import capture_progress

    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "capture.json").write_text(json.dumps({"phase": "snapshot", "snapshot": {
        "public.sales_order": {"done": True, "rows": 300, "total": 300},
        "public.payment": {"done": False, "rows": 100, "total": 700},
        "public.staff": {"done": False, "rows": 0, "total": None}}}))
    progress = capture_progress(tmp_path)
    assert progress == {"phase": "snapshot", "behind_ms": None, "snapshot_rows": 400,
                        "snapshot_total": 1000, "tables_done": 1, "tables": 3}
    assert "capture snapshot           snapshot: 400 of 1,000 rows (40%), 1 of 3 tables done" in \
        render(Status(capture=progress))
    assert "capture snapshot           unknown" in render(Status())
