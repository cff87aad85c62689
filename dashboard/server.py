"""The dashboard's web server: the page, and a Server-Sent Events stream per open page.

Two background threads feed every stream through one :class:`Hub`:
- the *watcher* polls the warehouse twice a second for the newest sales fact row and the newest
  change to the dimensions shown (:func:`dashboard.queries.version`) and, when either moves, wakes
  the streams, which each re-run their page's queries and push the results (``sales``, the
  history for the page's filters, and ``live``, the last 15 minutes); ``live`` is also pushed every
  LIVE_SECONDS without a change, since its window slides with the clock;
- the *health* thread reads :func:`totes_ops.status.collect` every few seconds and pushes it.
A page's filters are part of its stream's URL: changing one reopens the stream, which answers at once.
Nothing here writes to the warehouse; its connections are read-only.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg2

from dashboard import queries
from dashboard.errors import BadRequest
from totes_cdc.db import connect, describe
from totes_cdc.errors import ConfigError, TotesError, first_line
from totes_ops import status

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
HEALTH_SECONDS = 5.0
LIVE_SECONDS = 5.0
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}


@dataclass
class Hub:
    """What the background threads last saw; streams wait on ``changed`` for something new."""

    warehouse_dsn: str = field(repr=False)
    version: tuple[int, int] | None = None
    health: dict[str, Any] | None = None
    health_seq: int = 0
    error: str | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, **values: Any) -> None:
        with self.changed:
            for name, value in values.items():
                setattr(self, name, value)
            self.changed.notify_all()

    def stop(self) -> None:
        self.stopping.set()
        self.publish()

    def read_only_connection(self) -> Any:
        conn = connect(self.warehouse_dsn, "warehouse", connect_timeout=5)
        conn.set_session(readonly=True, autocommit=True)
        return conn


def watch_warehouse(hub: Hub) -> None:
    """Publish the warehouse's sales version whenever it moves (reconnecting after failures)."""
    conn = None
    while not hub.stopping.is_set():
        try:
            conn = conn or hub.read_only_connection()
            current = queries.version(conn)
            if current != hub.version or hub.error:
                hub.publish(version=current, error=None)
        except (psycopg2.Error, TotesError) as exc:
            reason = first_line(exc)
            if reason != hub.error:
                log.warning("dashboard: warehouse not readable: %s", reason)
                hub.publish(error=f"warehouse not readable: {reason}")
            if conn is not None:
                conn.close()
            conn = None
        hub.stopping.wait(POLL_SECONDS)
    if conn is not None:
        conn.close()


def watch_health(hub: Hub, source_dsn: str | None, state_dir: Path) -> None:
    """Publish the pipeline's status every HEALTH_SECONDS."""
    while not hub.stopping.is_set():
        reading = status.collect(source_dsn, hub.warehouse_dsn, state_dir).as_dict()
        hub.publish(health=reading, health_seq=hub.health_seq + 1)
        hub.stopping.wait(HEALTH_SECONDS)


def sales_event(conn: Any, filters: queries.Filters, version: tuple[int, int]) -> dict[str, Any]:
    today = date.today()
    return {**queries.sales(conn, filters, today), "options": queries.options(conn),
            "filters": filters.__dict__, "version": version,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}


class Handler(BaseHTTPRequestHandler):
    """GET of the page's files, ``/events`` (the live stream) and ``/healthz``."""

    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in STATIC:
            name, content_type = STATIC[url.path]
            body = resources.files("dashboard").joinpath(name).read_bytes()
            self._send(HTTPStatus.OK, content_type, body)
        elif url.path == "/healthz":
            self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n")
        elif url.path == "/events":
            try:
                filters = queries.Filters.from_query(parse_qs(url.query))
            except BadRequest as exc:
                self._send(HTTPStatus.BAD_REQUEST, "text/plain; charset=utf-8",
                           f"{exc}\n".encode())
                return
            self._stream(filters)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, code: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _event(self, name: str, data: Any) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n".encode())
        self.wfile.flush()

    def _stream(self, filters: queries.Filters) -> None:
        """Push ``sales`` and ``live`` when the warehouse moves (``live`` at least every
        LIVE_SECONDS), ``health`` when read, until the page goes away."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        hub = self.server.hub
        sent_version: tuple[int, int] | None = None
        sent_health = sent_error = None
        live_sent_at = 0.0
        conn = None
        try:
            while not hub.stopping.is_set():
                with hub.changed:
                    if (hub.version, hub.health_seq, hub.error) == (sent_version, sent_health,
                                                                     sent_error):
                        # Until the live window is due to slide (nothing is due before a first push).
                        due = live_sent_at + LIVE_SECONDS if sent_version is not None else None
                        hub.changed.wait(LIVE_SECONDS if due is None
                                         else max(0.0, due - time.monotonic()))
                    version, health_seq, health, error = (hub.version, hub.health_seq, hub.health,
                                                          hub.error)
                if error != sent_error:
                    self._event("problem", {"message": error})
                    sent_error = error
                if version is not None and (version != sent_version
                                            or time.monotonic() >= live_sent_at + LIVE_SECONDS):
                    try:
                        conn = conn or hub.read_only_connection()
                        if version != sent_version:
                            self._event("sales", sales_event(conn, filters, version))
                        self._event("live", queries.live(conn))
                        live_sent_at = time.monotonic()
                        sent_version = version
                    except (psycopg2.Error, TotesError) as exc:
                        self._event("problem", {"message": f"query failed: {exc}".strip()})
                        if conn is not None:
                            conn.close()
                        conn = None
                        hub.stopping.wait(POLL_SECONDS)
                if health is not None and health_seq != sent_health:
                    self._event("health", health)
                    sent_health = health_seq
                self.wfile.write(b": keepalive\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.debug("dashboard: a page closed its stream")
        finally:
            if conn is not None:
                conn.close()


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], hub: Hub) -> None:
        self.hub = hub
        super().__init__(address, Handler)


def start(warehouse_dsn: str, host: str = "127.0.0.1", port: int = 0, *, source_dsn: str | None = None,
          state_dir: Path = Path(".totes-cdc")) -> tuple[DashboardServer, list[threading.Thread]]:
    """Bind and start serving in background threads; stop with :func:`stop`."""
    hub = Hub(warehouse_dsn)
    try:
        server = DashboardServer((host, port), hub)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use: choose another with --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    threads = [threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True),
               threading.Thread(target=watch_warehouse, args=(hub,), name="dashboard-watch",
                                daemon=True),
               threading.Thread(target=watch_health, args=(hub, source_dsn, state_dir),
                                name="dashboard-health", daemon=True)]
    for thread in threads:
        thread.start()
    return server, threads


def stop(server: DashboardServer, threads: list[threading.Thread]) -> None:
    server.hub.stop()
    server.shutdown()
    server.server_close()
    for thread in threads:
        thread.join(timeout=10)


def exposed(host: str) -> bool:
    """Whether a server listening on ``host`` can be reached from other machines."""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return host != "localhost"


def serve(warehouse_dsn: str, host: str = "127.0.0.1", port: int = 8050, *,
          source_dsn: str | None = None, state_dir: Path = Path(".totes-cdc"),
          stop_event: threading.Event | None = None) -> None:
    """Serve until ``stop_event`` is set (the CLI sets it on SIGTERM/SIGINT)."""
    server, threads = start(warehouse_dsn, host, port, source_dsn=source_dsn, state_dir=state_dir)
    url = f"http://{host}:{server.server_port}/"
    log.info("dashboard on %s (warehouse %s)", url, describe(warehouse_dsn))
    if exposed(host):
        log.warning("the dashboard listens on %s: other machines can reach it, and it asks no one "
                    "for a password; the warehouse's sales are on it", host)
    print(f"dashboard: {url}", flush=True)
    try:
        (stop_event or threading.Event()).wait()
    finally:
        stop(server, threads)
