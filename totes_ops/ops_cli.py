"""Subcommands for running and watching the pipeline: ``simulate``, ``status`` and ``dashboard``."""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from totes_cdc.runtime import add_dsn_argument, add_state_dir_argument, tcp_port


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a loop can finish its step and exit cleanly."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def simulate(args: argparse.Namespace) -> int:
    from totes_ops import simulate as sim

    tty = sys.stderr.isatty()
    stats = sim.run(args.source_dsn, rate=args.rate, duration=args.duration, seed=args.seed,
                    stop=_stop_on_signals(), progress=sim.progress_printer(tty))
    if tty:
        sys.stderr.write("\n")
    print(sim.describe(stats))
    return 0


def _component_state_dir(args: argparse.Namespace) -> Path:
    """Where the components write their status: the running stack's run dir, else --state-dir."""
    return args.stack.run_dir if args.stack is not None else Path(args.state_dir)


def status(args: argparse.Namespace) -> int:
    from totes_ops import status as st

    if getattr(args, "stack", None) is None and not (args.source_dsn or args.warehouse_dsn):
        print("totes-cdc: no running stack found and no --source-dsn or --warehouse-dsn given: what "
              "needs a database is unknown (run it where `totes-cdc up` runs, or give the DSNs)",
              file=sys.stderr)
    report = st.collect(args.source_dsn, args.warehouse_dsn, _component_state_dir(args))
    print(json.dumps(report.as_dict(), indent=2) if args.json else st.render(report))
    return 0


def dashboard(args: argparse.Namespace) -> int:
    from dashboard.server import serve

    serve(args.warehouse_dsn, host=args.host, port=args.port, source_dsn=args.source_dsn,
          state_dir=_component_state_dir(args), stop_event=_stop_on_signals())
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("simulate", help="make realistic business traffic on totesys",
                              description="Insert orders with their transactions and payments, "
                                          "flip payments to paid and edit reference rows, at a "
                                          "steady rate, until --duration or Ctrl-C.")
    add_dsn_argument(p, "source")
    p.add_argument("--rate", type=float, default=50.0,
                   help="changes (rows inserted or updated) per second (default 50)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same traffic")
    p.set_defaults(func=simulate)

    p = subparsers.add_parser("status", help="how far behind each pipeline stage is",
                              description="Slot lag, stream lag, files waiting, dead letters, last "
                                          "load and end-to-end latency; unknown where a stage "
                                          "cannot be read.")
    add_dsn_argument(p, "source", required=False)
    add_dsn_argument(p, "warehouse", required=False)
    add_state_dir_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=status)

    p = subparsers.add_parser("dashboard", help="serve the live sales dashboard",
                              description="A web page of the warehouse's sales, updated live, "
                                          "with the pipeline's health.")
    add_dsn_argument(p, "warehouse")
    add_dsn_argument(p, "source", required=False)
    add_state_dir_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=functools.partial(tcp_port, lowest=0), default=8050,
                   help="port to listen on (default 8050; 0: any free port)")
    p.set_defaults(func=dashboard)
