"""``totes-cdc up``: the whole pipeline on one machine, until Ctrl-C.

Starts (or connects to) the source and warehouse PostgreSQL servers, seeds the source, migrates
the warehouse, starts the AWS emulator with the pipeline's resources, writes
``<state-dir>/stack.json``, then runs the components under the supervisor. On Ctrl-C or SIGTERM it
stops everything it started, in reverse order, and nothing else.

The emulator keeps its state in memory, so every ``up`` is a fresh pipeline: component state from
an earlier run (``<state-dir>/run``) is cleared, and the capture slot of an earlier run is dropped
so that the new stream starts with a consistent snapshot.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from totes_cdc import db
from totes_cdc.errors import ConfigError
from totes_cdc.runtime import DEFAULT_STATE_DIR, STATE_DIR_ENV
from totes_cdc.settings import settings
from totes_ops.stack import seed as seeding
from totes_ops.stack.emulator import (
    EMULATOR_CREDENTIALS,
    Emulator,
    client_env,
    create_resources,
)
from totes_ops.stack.ports import ensure_port_free, free_port, wait_until_answering
from totes_ops.stack.postgres import LocalPostgres, make_base_dir
from totes_ops.stack.supervisor import Component, Supervisor, child_env, totes_cdc_command
from totes_ops.stackfile import FILE_NAME

log = logging.getLogger(__name__)

PIPELINE = ("capture", "process", "load", "dashboard")
DASHBOARD_START_SECONDS = 60.0


@dataclass(frozen=True)
class StackOptions:
    """What ``up`` was asked for (built from the command line)."""

    state_dir: Path
    source_dsn: str | None = None
    warehouse_dsn: str | None = None
    seed: str = "auto"
    seed_dir: Path | None = None
    emulator_port: int | None = None
    source_port: int | None = None
    warehouse_port: int | None = None
    dashboard_port: int | None = None
    simulate_rate: float = 0.0
    components: tuple[str, ...] = PIPELINE
    # Where the components reach AWS, when not the emulator itself (e.g. a fault-injecting proxy).
    component_aws_endpoint: str | None = None


@dataclass
class Stack:
    """What ``up`` started; :meth:`close` stops it all, last started first."""

    options: StackOptions
    run_dir: Path
    source_dsn: str = ""
    warehouse_dsn: str = ""
    dashboard_port: int = 0
    servers: list[LocalPostgres] = field(default_factory=list)
    emulator: Emulator | None = None
    supervisor: Supervisor | None = None
    base_dir: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seeded_with: str = "none"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}/"

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def description(self) -> dict[str, Any]:
        """What stack.json holds: endpoints, DSNs and PIDs (the file is readable by its owner only).

        ``pid`` is this ``up`` process: other commands use the file only while it is alive.
        """
        if self.emulator is None:
            raise RuntimeError("the stack is not up")
        return {
            "pid": os.getpid(),
            "source_dsn": self.source_dsn,
            "warehouse_dsn": self.warehouse_dsn,
            "aws_endpoint_url": self.emulator.endpoint,
            "aws_region": settings()["region"],
            "aws_access_key_id": EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "dashboard_url": self.dashboard_url if "dashboard" in self.options.components else None,
            "run_dir": str(self.run_dir),
            "logs": str(self.run_dir / "logs"),
            "seed": self.seeded_with,
            "source_row_counts": self.counts,
            "components": self.supervisor.pids() if self.supervisor else {},
            "processes": {
                "emulator": self.emulator.process.pid if self.emulator.process else None,
                **{f"postgres-{s.data_dir.name}": s.pid() for s in self.servers}},
        }


def _check_free(port: int | None, what: str) -> int:
    if port is None:
        return free_port()
    ensure_port_free(port, what)
    return port


def _has_totesys(conn: Any) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.sales_order') IS NOT NULL")
        return bool(cur.fetchone()[0])


def _drop_old_slot(conn: Any) -> None:
    slot = settings()["capture"]["slot"]
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
        if row is None:
            return
        if row[0] is not None:
            raise ConfigError(f"replication slot {slot} is in use by process {row[0]} on the source: "
                              "is another capture (or another `totes-cdc up`) running against it?")
        log.info("dropping replication slot %s of an earlier run (its stream is gone)", slot)
        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def _seed(stack: Stack, conn: Any) -> None:
    opts = stack.options
    choice = opts.seed
    if choice == "auto":
        if opts.source_dsn is not None:
            choice = "none"
        elif seeding.real_data_available(opts.seed_dir):
            choice = "totesys"
        else:
            choice = "synthetic"
            log.info("real totesys data not found in %s: seeding synthetic data",
                     (opts.seed_dir or seeding.default_seed_dir()) / "data")
    if choice != "none":
        if _has_totesys(conn):
            raise ConfigError(f"the source {db.describe(stack.source_dsn)} already has the totesys "
                              "tables; use --seed none to capture what is there")
        seeding.create_schema(conn)
        if choice == "totesys":
            stack.counts = seeding.load_totesys(conn, opts.seed_dir)
        else:
            from totes_ops.stack.synthetic import load_synthetic

            stack.counts = load_synthetic(conn)
    elif _has_totesys(conn):
        stack.counts = seeding.row_counts(conn)
    stack.seeded_with = choice


def _server(stack: Stack, name: str, port: int | None, logical: bool) -> str:
    if stack.base_dir is None:
        stack.base_dir = make_base_dir()
    server = LocalPostgres(stack.base_dir / name, port=_check_free(port, f"the {name} server"),
                           logical=logical)
    server.init()
    server.start()
    stack.servers.append(server)
    log.info("started PostgreSQL %s server on 127.0.0.1:%d (%s)", name, server.port, server.bindir)
    return server.create_database(name)


def _components(stack: Stack) -> list[Component]:
    commands = {
        "capture": ("capture", "--stream", settings()["stream"]["name"]),
        "process": ("process",),
        "load": ("load",),
        "dashboard": ("dashboard", "--port", str(stack.dashboard_port)),
        "simulate": ("simulate", "--rate", str(stack.options.simulate_rate)),
    }
    return [Component(name, totes_cdc_command(*commands[name])) for name in stack.options.components]


def new_stack(options: StackOptions) -> Stack:
    """An empty stack whose run directory (component state of this run) is fresh."""
    options.state_dir.mkdir(parents=True, exist_ok=True)
    run_dir = options.state_dir.resolve() / "run"  # absolute: stack.json is read from anywhere
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    return Stack(options, run_dir)


def start(stack: Stack) -> None:
    """Bring the stack up; the caller must ``close()`` it, also when this raises."""
    options, run_dir = stack.options, stack.run_dir
    emulator_port = _check_free(options.emulator_port, "the AWS emulator")
    stack.dashboard_port = _check_free(options.dashboard_port, "the dashboard")

    stack.source_dsn = options.source_dsn or _server(stack, "source", options.source_port, True)
    stack.warehouse_dsn = (options.warehouse_dsn
                           or _server(stack, "warehouse", options.warehouse_port, False))

    conn = db.connect(stack.source_dsn, "source")
    try:
        db.require_logical_decoding(conn)
        _seed(stack, conn)
        _drop_old_slot(conn)
    finally:
        conn.close()
    from warehouse_loader.migrate import migrate

    conn = db.connect(stack.warehouse_dsn, "warehouse")
    try:
        migrate(conn)
    finally:
        conn.close()

    stack.emulator = Emulator(port=emulator_port, log_path=run_dir / "emulator.log")
    stack.emulator.start()
    create_resources(stack.emulator, {"source": db.secret_from_dsn(stack.source_dsn),
                                      "warehouse": db.secret_from_dsn(stack.warehouse_dsn)})

    env = child_env({**client_env(options.component_aws_endpoint or stack.emulator.endpoint),
                     "TOTES_CDC_SOURCE_DSN": stack.source_dsn,
                     "TOTES_CDC_WAREHOUSE_DSN": stack.warehouse_dsn,
                     "TOTES_CDC_STATE_DIR": str(run_dir)})
    supervisor = stack.supervisor = Supervisor(_components(stack), env, run_dir / "logs")
    supervisor.start()
    # The summary hands out the dashboard's address: it must open (its process takes a moment
    # to import and bind, longer on a busy machine).
    if "dashboard" in options.components and not wait_until_answering(
            stack.dashboard_url, DASHBOARD_START_SECONDS, lambda: "dashboard" in supervisor.pids()):
        raise ConfigError(f"the dashboard did not answer on {stack.dashboard_url} (its process ended, "
                          f"or {DASHBOARD_START_SECONDS:.0f} s passed): see "
                          f"{run_dir / 'logs' / 'dashboard.log'}")


def write_description(stack: Stack) -> Path:
    path = stack.options.state_dir / FILE_NAME
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(stack.description(), indent=2) + "\n", encoding="utf-8")
    return path


def summary(stack: Stack, path: Path) -> str:
    d = stack.description()
    lines = [f"totes-cdc stack is up (seed: {stack.seeded_with})",
             f"  source     {db.describe(stack.source_dsn)}",
             f"  warehouse  {db.describe(stack.warehouse_dsn)}",
             f"  AWS        {d['aws_endpoint_url']} (emulator, region {d['aws_region']})"]
    if d["dashboard_url"]:
        lines.append(f"  dashboard  {d['dashboard_url']}")
    lines.append(f"  logs       {d['logs']}")
    lines.append(f"  DSNs with passwords: {path} (owner-readable only)")
    if stack.counts:
        lines.append("  source rows: " + ", ".join(f"{t} {n:,}" for t, n in stack.counts.items()))
    lines.append(next_steps(stack))
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def _program() -> str:
    """How to type ``totes-cdc`` here: the script beside this interpreter, relative when it can be."""
    script = Path(sys.executable).parent / "totes-cdc"
    if not script.exists():
        return "totes-cdc"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def next_steps(stack: Stack) -> str:
    """The commands worth running next, in another terminal; they find this stack by stack.json."""
    program = _program()
    state_dir = stack.options.state_dir
    if state_dir == Path(DEFAULT_STATE_DIR):
        lines = [f"Next, in another terminal, in {Path.cwd()}:"]
    else:
        lines = ["Next, in another terminal:"]
        lines.append(f"  export {STATE_DIR_ENV}={shlex.quote(str(state_dir.resolve()))}")
    commands = [(f"{program} status", "how far behind each stage is"),
                (f"{program} reconcile", "does the warehouse match the source? (under the "
                                         "demo's traffic, changes in flight show as differences)")]
    if "dashboard" in stack.options.components:
        commands.append((f"open {stack.dashboard_url}", "the live dashboard"))
    width = max(len(command) for command, _ in commands)
    lines.extend(f"  {command:<{width}}   # {why}" for command, why in commands)
    return "\n".join(lines)


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another `totes-cdc up` is running with state dir {state_dir}") from None
        yield


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def run(options: StackOptions) -> int:
    """``up``: start, print, supervise until Ctrl-C/SIGTERM, stop."""
    with _state_lock(options.state_dir):
        # Both signals stop the stack, even when started with SIGINT ignored (as a background job).
        previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        stack = new_stack(options)
        try:
            start(stack)
            path = write_description(stack)
            print(summary(stack, path), flush=True)
            pids = stack.supervisor.pids() if stack.supervisor else {}
            while stack.supervisor is not None:
                stack.supervisor.check()
                if stack.supervisor.pids() != pids:  # a restart: keep stack.json true
                    pids = stack.supervisor.pids()
                    write_description(stack)
                time.sleep(0.5)
        except _Stop:
            print("stopping ...", flush=True)
        finally:
            for sig in previous:  # a second Ctrl-C must not cut the clean-up short
                signal.signal(sig, signal.SIG_IGN)
            # Nothing may take the stack for running once it stops.
            (options.state_dir / FILE_NAME).unlink(missing_ok=True)
            stack.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print("stopped", flush=True)
    return 0
