"""The runner's event building and metric batching, and the reconciliation report (pure parts)."""

from __future__ import annotations

import json

from local_aws.metrics import METRICS_PER_PUT, MetricSink
from local_aws.sqs_runner import sqs_event
from warehouse_loader.reconcile import Report, compare, render


def test_sqs_event_has_the_shape_lambda_builds():
    event = sqs_event([{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}",
                        "Attributes": {"ApproximateReceiveCount": "2"}, "MD5OfBody": "x"}],
                      "arn:aws:sqs:eu-west-2:1:q", "eu-west-2")
    assert event == {"Records": [{
        "messageId": "m1", "receiptHandle": "r1", "body": "{}",
        "attributes": {"ApproximateReceiveCount": "2"}, "messageAttributes": {},
        "md5OfBody": "x", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-2:1:q",
        "awsRegion": "eu-west-2"}]}


def test_the_metric_sink_puts_in_chunks_cloudwatch_accepts():
    calls = []

    class CloudWatch:
        def put_metric_data(self, **kwargs):
            calls.append(kwargs)

    buffer = MetricSink(CloudWatch(), "NS")
    for _ in range(METRICS_PER_PUT + 1):
        buffer.add("FilesLoaded", "Count", 1)
    buffer.flush()
    buffer.flush()
    assert [len(c["MetricData"]) for c in calls] == [METRICS_PER_PUT, 1]
    assert calls[0]["Namespace"] == "NS"
    assert calls[0]["MetricData"][0] == {"MetricName": "FilesLoaded", "Unit": "Count", "Value": 1.0}


def test_compare_finds_missing_extra_and_different_keys():
    report = compare("dim_x", [(1, "a"), (2, "b"), (3, "c")], [(2, "b"), (3, "C"), (4, "d"), (5, "e")],
                     may_stay=frozenset({5}))
    assert (report.compared, report.missing, report.extra, report.different) == (3, 1, 1, 1)
    assert (report.sample_missing, report.sample_extra, report.sample_different) == ([1], [4], [3])
    assert compare("dim_date", [(1, "a")], [(1, "a"), (2, "b")], may_stay=None).differences == 0


def test_compare_keeps_only_the_first_keys():
    report = compare("t", [(i, i) for i in range(20)], [])
    assert report.missing == 20 and report.sample_missing == [0, 1, 2, 3, 4]


def test_render_as_text_and_json():
    bad = compare("fact_x", [(1, "a")], [(1, "b")])
    raw = compare("raw zone x", [(1, "a")], [], against="the raw zone")
    report = Report([compare("dim_ok", [(1, "a")], [(1, "a")]), bad, raw],
                    {"source_wal_lsn": "0/16B3F28", "history": True, "raw_events": 1234,
                     "history_through": {"lsn": "0/16B3F00", "seq": 3}})
    text = render(report)
    assert "fact_x: 1 different, first keys: [1]" in text
    assert "raw zone x: 1 missing from the raw zone, first keys: [1]" in text
    assert ("compared: the source as of WAL position 0/16B3F28; fact history: 1,234 raw change "
            "events, through commit LSN 0/16B3F00 position 3") in text
    assert text.endswith("reconcile: DIFFERENCES in 2 table(s): fact_x, raw zone x\n(under traffic, "
                         "changes still in flight show as differences too: run it again once "
                         "`totes-cdc status` shows nothing waiting)")
    data = json.loads(render(report, as_json=True))
    assert data["ok"] is False and data["tables"][1]["differences"] == 1
    assert data["compared"]["raw_events"] == 1234


def test_render_says_when_history_was_not_compared():
    text = render(Report([], {"source_wal_lsn": "0/1", "history": False}))
    assert "fact history not compared (no raw zone given, or --no-history)" in text
