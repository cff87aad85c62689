"""A fault-injecting HTTP proxy between the pipeline's components and the AWS emulator.

Components reach AWS through ``AWS_ENDPOINT_URL``; pointing that at this proxy lets a test make
the "cloud" misbehave the way real AWS does, while everything else passes through unchanged:

- Kinesis ``PutRecords`` (JSON protocol, ``X-Amz-Target: Kinesis_20131202.PutRecords``): either
  the whole call is answered ``400 ProvisionedThroughputExceededException`` without forwarding, or
  only some records are forwarded and the others are answered as failed with that error code in
  their place in ``Records`` (so, as on Kinesis, a failed record is really not stored);
- S3 ``PutObject``: answered ``503 SlowDown`` without forwarding;
- a Kinesis stall (:meth:`FaultProxy.stall`): every ``PutRecords`` call waits, unanswered, until
  :meth:`FaultProxy.release`, as a stream that has stopped accepting writes does.

Which calls fail is drawn from a seeded random generator; :class:`Faults` can be changed while the
proxy runs, and :class:`Injected` counts what was done. Listens on 127.0.0.1, a free port.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
import urllib.parse
import uuid
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PUT_RECORDS_TARGET = "Kinesis_20131202.PutRecords"
THROUGHPUT_EXCEEDED = "ProvisionedThroughputExceededException"
ACCOUNT = "123456789012"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "content-length",
              "host"}
# Query parameters that make a PUT on an object key something other than PutObject.
NOT_PUT_OBJECT = {"uploadId", "partNumber", "tagging", "acl", "retention", "legal-hold"}
UPSTREAM_TIMEOUT = 60.0  # above the longest long poll (SQS WaitTimeSeconds <= 20)


@dataclass
class Faults:
    """What the proxy injects now (all zero: a plain pass-through). Fractions are 0..1."""

    put_records_throttled: float = 0.0  # PutRecords calls answered with a whole-call 400
    put_records_partial: float = 0.0  # PutRecords calls in which some records fail
    failed_record_share: float = 0.5  # in a partial call, the chance each record fails
    s3_put_failed: float = 0.0  # PutObject calls answered 503 SlowDown


@dataclass
class Injected:
    """What the proxy did."""

    put_records_calls: int = 0
    put_records_stalled: int = 0
    put_records_throttled: int = 0
    put_records_partial: int = 0
    records_failed: int = 0
    records_forwarded: int = 0
    s3_puts: int = 0
    s3_puts_failed: int = 0


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _json_reply(status: int, payload: dict[str, Any]) -> Reply:
    return Reply(status, [("Content-Type", "application/x-amz-json-1.1"),
                          ("x-amzn-RequestId", str(uuid.uuid4()))], json.dumps(payload).encode())


def throttled_reply(stream: str) -> Reply:
    """A whole PutRecords call refused, as Kinesis refuses it."""
    return _json_reply(400, {"__type": THROUGHPUT_EXCEEDED,
                             "message": f"Rate exceeded for stream {stream} under account {ACCOUNT}."})


def failed_record(stream: str) -> dict[str, str]:
    """The entry Kinesis puts in ``Records`` for a record it did not store."""
    return {"ErrorCode": THROUGHPUT_EXCEEDED,
            "ErrorMessage": f"Rate exceeded for shard in stream {stream} under account {ACCOUNT}."}


def slow_down_reply() -> Reply:
    request_id = uuid.uuid4().hex[:16].upper()
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            "<Message>Please reduce your request rate.</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>")
    return Reply(503, [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)],
                 body.encode())


def is_put_object(method: str, path: str, headers: dict[str, str]) -> bool:
    """A path-style S3 PutObject: PUT /bucket/key, not a copy, part upload or sub-resource."""
    if method != "PUT" or "x-amz-target" in headers or "x-amz-copy-source" in headers:
        return False
    parsed = urllib.parse.urlsplit(path)
    bucket, _, key = parsed.path.lstrip("/").partition("/")
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    return bool(bucket and key) and not NOT_PUT_OBJECT & set(query)


class FaultProxy:
    """The proxy; :meth:`start` it, point components at :attr:`endpoint`, :meth:`stop` it."""

    def __init__(self, upstream: str, seed: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.faults = Faults()
        self.injected = Injected()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "the proxy is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._server = None

    def set_faults(self, **fractions: float) -> None:
        """Replace the faults (unnamed ones go back to zero)."""
        with self._lock:
            self.faults = Faults(**fractions)

    def stall(self) -> None:
        """Hold every PutRecords call from now on until :meth:`release`."""
        self._flowing.clear()

    def release(self) -> None:
        """Forward the held PutRecords calls and every later one."""
        self._flowing.set()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return asdict(self.injected)

    def _chance(self, fraction: float) -> bool:
        return fraction > 0 and self._rng.random() < fraction

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if headers.get("x-amz-target") == PUT_RECORDS_TARGET:
            return self._put_records(method, path, headers, body)
        if is_put_object(method, path, headers):
            with self._lock:
                self.injected.s3_puts += 1
                fail = self._chance(self.faults.s3_put_failed)
                self.injected.s3_puts_failed += fail
            if fail:
                return slow_down_reply()
        return self.forward(method, path, headers, body)

    def _put_records(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if not self._flowing.is_set():
            with self._lock:
                self.injected.put_records_stalled += 1
            self._flowing.wait()
        request = json.loads(body)
        records = request["Records"]
        stream = request.get("StreamName") or request.get("StreamARN", "").rpartition("/")[2]
        with self._lock:
            faults, counts = self.faults, self.injected
            counts.put_records_calls += 1
            if self._chance(faults.put_records_throttled):
                counts.put_records_throttled += 1
                return throttled_reply(stream)
            failed = set()
            if self._chance(faults.put_records_partial):
                failed = {i for i in range(len(records)) if self._rng.random() < faults.failed_record_share}
                failed = failed or {self._rng.randrange(len(records))}
                counts.put_records_partial += 1
                counts.records_failed += len(failed)
            counts.records_forwarded += len(records) - len(failed)
        if not failed:
            return self.forward(method, path, headers, body)
        kept = [r for i, r in enumerate(records) if i not in failed]
        stored: list[dict[str, Any]] = []
        encryption = {}
        if kept:
            reply = self.forward(method, path, headers, json.dumps({**request, "Records": kept}).encode())
            if reply.status != 200:
                return reply
            answer = json.loads(reply.body)
            stored = answer["Records"]
            encryption = {k: v for k, v in answer.items() if k == "EncryptionType"}
        results = iter(stored)
        merged = [failed_record(stream) if i in failed else next(results) for i in range(len(records))]
        return _json_reply(200, {"FailedRecordCount": sum("ErrorCode" in r for r in merged),
                                 "Records": merged, **encryption})

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                          timeout=UPSTREAM_TIMEOUT)
        try:
            out = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
            out["host"] = f"{self.upstream_host}:{self.upstream_port}"
            if body or method in ("POST", "PUT"):
                out["content-length"] = str(len(body))
            conn.request(method, path, body=body or None, headers=out)
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders()
                    if k.lower() not in HOP_BY_HOP or (method == "HEAD" and k.lower() == "content-length")]
            return Reply(response.status, kept, data)
        finally:
            conn.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def close_connections(self) -> None:
        """End kept-alive client connections, so no handler thread outlives the proxy."""
        with self.connections_lock:
            for sock in self.connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.connections.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle kept-alive client connection is closed after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _proxy(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.server.proxy.handle(self.command, self.path, headers, self._body())
        except (OSError, http.client.HTTPException) as exc:
            reply = Reply(502, [("Content-Type", "text/plain")], f"upstream: {exc}".encode())
        self.send_response(reply.status)
        for key, value in reply.headers:
            self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _proxy

