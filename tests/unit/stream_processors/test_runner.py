"""The local event source mapping, against an in-memory Kinesis that can reshard and expire iterators."""

import dataclasses
import datetime as dt
import json
import threading

import pytest

from local_aws.checkpoint import Checkpoint, CheckpointStore
from local_aws.kinesis_runner import Runner, lowest_failure, take_batch
from stream_processors.config import MappingConfig

NOW = dt.datetime.now(dt.UTC)


class ExpiredIteratorException(Exception):
    pass


class FakeKinesis:
    """Shards as lists; an iterator is (shard, position); closed shards end their iterators."""

    class exceptions:
        ExpiredIteratorException = ExpiredIteratorException

    def __init__(self, shards):
        self.shards = {s["ShardId"]: s for s in shards}
        self.records = {s["ShardId"]: [] for s in shards}
        self.closed = set()
        self.expire_next = False
        self.reads = []

    def put(self, shard_id, count, arrival=None):
        for _ in range(count):
            seq = str(sum(len(r) for r in self.records.values()) + 1)
            self.records[shard_id].append({"SequenceNumber": seq, "Data": f"d{seq}".encode(),
                                           "PartitionKey": f"k{seq}",
                                           "ApproximateArrivalTimestamp": arrival or NOW})

    def describe_stream_summary(self, StreamName):
        return {"StreamDescriptionSummary": {"StreamARN": f"arn:aws:kinesis:eu-west-2:1:stream/{StreamName}"}}

    def list_shards(self, StreamName=None, NextToken=None):
        ids = sorted(self.shards)
        if NextToken is None:
            return {"Shards": [self.shards[i] for i in ids[:1]], "NextToken": "page2"}
        return {"Shards": [self.shards[i] for i in ids[1:]]}

    def get_shard_iterator(self, StreamName, ShardId, ShardIteratorType, StartingSequenceNumber=None):
        records = self.records[ShardId]
        if ShardIteratorType == "TRIM_HORIZON":
            pos = 0
        elif ShardIteratorType == "LATEST":
            pos = len(records)
        else:
            pos = next((i + 1 for i, r in enumerate(records)
                        if int(r["SequenceNumber"]) == int(StartingSequenceNumber)))
        return {"ShardIterator": f"{ShardId}|{pos}"}

    def get_records(self, ShardIterator, Limit):
        if self.expire_next:
            self.expire_next = False
            raise ExpiredIteratorException("expired")
        shard_id, pos = ShardIterator.split("|")
        records = self.records[shard_id][int(pos):int(pos) + Limit]
        end = int(pos) + len(records)
        self.reads.append((shard_id, len(records)))
        done = shard_id in self.closed and end == len(self.records[shard_id])
        return {"Records": records, "MillisBehindLatest": 0 if end == len(self.records[shard_id]) else 500,
                **({} if done else {"NextShardIterator": f"{shard_id}|{end}"})}


class Recorder:
    def __init__(self):
        self.calls = []

    def put_metric_data(self, **kwargs):
        self.calls.append(kwargs)

    def get_queue_url(self, QueueName):
        return {"QueueUrl": f"https://sqs/{QueueName}"}

    def send_message(self, QueueUrl, MessageBody):
        self.calls.append(json.loads(MessageBody))


def shard(shard_id, parent=None):
    return {"ShardId": shard_id, **({"ParentShardId": parent} if parent else {})}


@pytest.fixture
def config():
    return dataclasses.replace(MappingConfig.from_settings(), batch_size=4, batching_window_seconds=0)


class Handler:
    """Records every batch; ``fail`` maps a sequence number to how it fails."""

    def __init__(self, fail=None):
        self.batches = []
        self.fail = fail or {}

    def __call__(self, event, context):
        seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        self.batches.append(seqs)
        assert context.get_remaining_time_in_millis() > 0
        print('{"_aws":{"Timestamp":0,"CloudWatchMetrics":[{"Namespace":"TotesCDC","Dimensions":[[]],'
              f'"Metrics":[{{"Name":"EventsProcessed","Unit":"Count"}}]}}]}},"EventsProcessed":[{len(seqs)}]}}')
        print("a log line")
        failures = []
        for seq in seqs:
            how = self.fail.get(seq)
            if how == "raise":
                raise RuntimeError(f"cannot process {seq}")
            if how == "item":
                failures.append({"itemIdentifier": seq})
            if how == "item-once":
                del self.fail[seq]
                failures.append({"itemIdentifier": seq})
        return {"batchItemFailures": failures}


def make_runner(config, tmp_path, kinesis, handler, sqs=None, cloudwatch=None):
    return Runner(config, tmp_path, handler, kinesis=kinesis, sqs=sqs or Recorder(),
                  cloudwatch=cloudwatch or Recorder(), namespace="TotesCDC")


def drain(runner, cycles=20):
    stop = threading.Event()
    for _ in range(cycles):
        runner.cycle(stop)


def delivered(handler):
    return [s for batch in handler.batches for s in batch]


def test_delivers_every_shard_in_batches_and_checkpoints(config, tmp_path, capsys):
    kinesis = FakeKinesis([shard("shardId-0"), shard("shardId-1")])
    kinesis.put("shardId-0", 6)
    kinesis.put("shardId-1", 3)
    cloudwatch = Recorder()
    handler = Handler()
    runner = make_runner(config, tmp_path, kinesis, handler, cloudwatch=cloudwatch)
    drain(runner)
    assert handler.batches == [["1", "2", "3", "4"], ["7", "8", "9"], ["5", "6"]]
    store = CheckpointStore(tmp_path / "checkpoints" / config.stream)
    assert store.load("shardId-0") == Checkpoint("6")
    assert store.load("shardId-1") == Checkpoint("9")
    names = [d["MetricName"] for c in cloudwatch.calls for d in c["MetricData"]]
    assert "EventsProcessed" in names and "IteratorAgeMilliseconds" in names
    assert "a log line" in capsys.readouterr().out
    runner.write_status(force=True)
    status = json.loads((tmp_path / "status" / "process.json").read_text())
    assert status["shards"]["shardId-0"]["checkpoint"] == "6"
    assert status["counts"]["records"] == 9


def test_restart_resumes_after_the_checkpoint(config, tmp_path):
    kinesis = FakeKinesis([shard("shardId-0")])
    kinesis.put("shardId-0", 5)
    first = Handler()
    drain(make_runner(config, tmp_path, kinesis, first))
    kinesis.put("shardId-0", 2)
    second = Handler()
    drain(make_runner(config, tmp_path, kinesis, second))
    assert delivered(first) == ["1", "2", "3", "4", "5"]
    assert delivered(second) == ["6", "7"]


def test_item_failure_checkpoints_before_it_and_retries_from_it(config, tmp_path):
    kinesis = FakeKinesis([shard("shardId-0")])
    kinesis.put("shardId-0", 4)
    handler = Handler({"3": "item-once"})
    drain(make_runner(config, tmp_path, kinesis, handler))
    assert handler.batches == [["1", "2", "3", "4"], ["3", "4"]]


def test_item_failure_after_the_retries_goes_to_the_on_failure_destination(config, tmp_path):
    kinesis = FakeKinesis([shard("shardId-0")])
    kinesis.put("shardId-0", 4)
    sqs = Recorder()
    handler = Handler({"2": "item"})
    drain(make_runner(config, tmp_path, kinesis, handler, sqs=sqs), cycles=3)
    assert handler.batches == [["1", "2", "3", "4"]] + [["2", "3", "4"]] * 3
    [message] = sqs.calls
    info = message["KinesisBatchInfo"]
    assert (info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        "shardId-0", "2", "4", 3)
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert CheckpointStore(tmp_path / "checkpoints" / config.stream).load("shardId-0") == Checkpoint("4")


def test_function_error_bisects_down_to_the_bad_record(config, tmp_path):
    kinesis = FakeKinesis([shard("shardId-0")])
    kinesis.put("shardId-0", 4)
    sqs = Recorder()
    handler = Handler({"3": "raise"})
    config = dataclasses.replace(config, maximum_retry_attempts=1)
    runner = make_runner(config, tmp_path, kinesis, handler, sqs=sqs)
    drain(runner, cycles=2)
    assert handler.batches == [["1", "2", "3", "4"], ["1", "2"], ["3", "4"], ["3"], ["3"], ["4"]]
    [message] = sqs.calls
    assert message["KinesisBatchInfo"]["startSequenceNumber"] == "3"
    assert message["responseContext"]["functionError"] == "Unhandled"
    assert runner.counts["function_errors"] == 4


def test_records_older_than_the_maximum_age_skip_the_handler(config, tmp_path):
    kinesis = FakeKinesis([shard("shardId-0")])
    kinesis.put("shardId-0", 2, arrival=NOW - dt.timedelta(days=2))
    kinesis.put("shardId-0", 1)
    sqs = Recorder()
    handler = Handler()
    drain(make_runner(config, tmp_path, kinesis, handler, sqs=sqs), cycles=2)
    assert handler.batches == [["3"]]
    assert sqs.calls[0]["requestContext"]["condition"] == "RecordAgeExceeded"
    assert sqs.calls[0]["KinesisBatchInfo"]["endSequenceNumber"] == "2"


def test_children_start_only_after_the_parent_is_read_to_its_end(config, tmp_path):
    kinesis = FakeKinesis([shard("shardId-0"), shard("shardId-1", parent="shardId-0"),
                           shard("shardId-2", parent="shardId-0")])
    kinesis.put("shardId-0", 3)
    kinesis.closed.add("shardId-0")
    kinesis.put("shardId-1", 2)
    kinesis.put("shardId-2", 1)
    handler = Handler()
    runner = make_runner(config, tmp_path, kinesis, handler)
    drain(runner, cycles=5)
    assert handler.batches == [["1", "2", "3"], ["4", "5"], ["6"]]
    assert CheckpointStore(tmp_path / "checkpoints" / config.stream).load("shardId-0").finished
    restarted = Handler()
    drain(make_runner(config, tmp_path, kinesis, restarted), cycles=3)
    assert restarted.batches == []


def test_expired_iterator_is_renewed_after_the_last_record_read(config, tmp_path):
    kinesis = FakeKinesis([shard("shardId-0")])
    kinesis.put("shardId-0", 2)
    config = dataclasses.replace(config, batching_window_seconds=3600)
    handler = Handler()
    runner = make_runner(config, tmp_path, kinesis, handler)
    drain(runner, cycles=1)
    kinesis.expire_next = True
    kinesis.put("shardId-0", 2)
    drain(runner, cycles=3)
    assert handler.batches == [["1", "2", "3", "4"]]


def test_run_stops_on_the_event_and_survives_aws_errors(config, tmp_path):
    from botocore.exceptions import EndpointConnectionError

    kinesis = FakeKinesis([shard("shardId-0")])
    calls = []

    def failing_list_shards(**kwargs):
        calls.append(kwargs)
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    kinesis.list_shards = failing_list_shards
    runner = make_runner(config, tmp_path, kinesis, Handler())
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    while not calls:
        stop.wait(0.05)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    status = json.loads((tmp_path / "status" / "process.json").read_text())
    assert "EndpointConnectionError" in status["last_error"]


def test_lowest_failure_treats_an_unknown_identifier_as_the_whole_batch():
    records = [{"SequenceNumber": s} for s in ("10", "11", "12")]
    assert lowest_failure({"batchItemFailures": []}, records) is None
    two = {"batchItemFailures": [{"itemIdentifier": "12"}, {"itemIdentifier": "11"}]}
    assert lowest_failure(two, records) == 1
    assert lowest_failure({"batchItemFailures": [{"itemIdentifier": ""}]}, records) == 0
    assert lowest_failure(None, records) is None


def test_take_batch_keeps_under_the_invocation_payload_limit():
    big = [{"Data": b"x" * 1_000_000, "PartitionKey": "k"} for _ in range(10)]
    assert len(take_batch(big, 1000)) == 4
    assert len(take_batch(big[:2], 1)) == 1


def test_process_command_runs_until_stopped_and_writes_its_status(tmp_path, monkeypatch):
    import signal

    from local_aws import kinesis_runner as runner_module
    from totes_ops.cli import main

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    seen = {}

    def run(self, stop):
        seen["stream"] = self.config.stream
        signal.raise_signal(signal.SIGTERM)  # what the supervisor sends
        seen["stopped"] = stop.is_set()

    monkeypatch.setattr(runner_module.Runner, "run", run)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert main(["process", "--state-dir", str(tmp_path)]) == 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert seen == {"stream": "totes-cdc-changes", "stopped": True}
    assert json.loads((tmp_path / "status" / "process.json").read_text())["component"] == "process"


def test_a_shard_retrying_a_batch_does_not_hold_up_another_shard(config, tmp_path):
    """Each shard is served by its own thread, as the Lambda mapping polls each shard on its own:
    a batch in retry backoff on one shard delays no other shard, and each shard keeps its order."""
    kinesis = FakeKinesis([shard("shardId-0"), shard("shardId-1")])
    kinesis.put("shardId-0", 1)
    kinesis.put("shardId-1", 6)
    handler = Handler(fail={"1": "item"})  # retried 3 times, backing off 0.2 s, 0.4 s, 0.8 s
    runner = make_runner(config, tmp_path, kinesis, handler)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        for _ in range(200):
            if len(handler.batches) >= 6:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    shard_0 = [i for i, batch in enumerate(handler.batches) if batch == ["1"]]
    shard_1 = [batch for batch in handler.batches if batch != ["1"]]
    assert len(shard_0) == 4 and shard_1 == [["2", "3", "4", "5"], ["6", "7"]]
    later = [i for i, batch in enumerate(handler.batches) if batch != ["1"]]
    assert max(later) < shard_0[-1], handler.batches  # shard 1 done during shard 0's retries


def test_every_idle_shard_is_polled_at_least_once_a_second(config, tmp_path):
    """Lambda's standard polling reads each shard once a second; the local mapping no less often."""
    kinesis = FakeKinesis([shard("shardId-0"), shard("shardId-1")])
    runner = make_runner(config, tmp_path, kinesis, Handler())
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    stop.wait(2.0)
    stop.set()
    thread.join(timeout=10)
    reads = [shard_id for shard_id, _ in kinesis.reads]
    assert reads.count("shardId-0") >= 2 and reads.count("shardId-1") >= 2, reads


def test_an_unexpected_error_in_a_shard_thread_ends_run_with_it(config, tmp_path):
    """As when one thread served every shard: an error that is not AWS's (here the checkpoint
    disk) ends ``run`` with that error, for the supervisor to see, instead of a thread retrying
    behind its back."""
    kinesis = FakeKinesis([shard("shardId-0"), shard("shardId-1")])
    kinesis.put("shardId-0", 2)
    runner = make_runner(config, tmp_path, kinesis, Handler())

    def disk_full(shard_id, checkpoint):
        raise OSError(28, "No space left on device")

    runner.checkpoints.save = disk_full
    raised = []

    def run():
        try:
            runner.run(threading.Event())
        except OSError as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and [e.errno for e in raised] == [28]
