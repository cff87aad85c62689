"""Container health check of the capture task: healthy while this task's capture process makes progress.

Capture rewrites ``<state dir>/status/capture.json`` (phase, updated_at, pid) every metrics
interval in every phase: starting, snapshot (also a resumed one, on its temporary slot), streaming
and reconnecting (before each retry). The check exits 0 when that file was written by a live process
of this container within ``capture.health_max_age_seconds``, 1 otherwise, with the reason on stderr;
ECS replaces a task that stays unhealthy.

It does not ask the source about the replication slot: the slot has no reader between its creation
and START_REPLICATION and while a resumed snapshot reads through a temporary slot, and an active slot
may be held by another connection, not by this task. A source outage keeps the task healthy (it is
reconnecting); the slot-lag and heartbeat alarms report the outage.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from totes_cdc.runtime import alive, default_state_dir
from totes_cdc.settings import settings


def status_path() -> Path:
    """Where capture writes its status (capture/cli.py: the state folder's status/capture.json)."""
    return Path(default_state_dir()) / "status" / "capture.json"


def liveness_problem(path: Path, max_age_seconds: float, now: dt.datetime | None = None) -> str | None:
    """Why the capture process that should write ``path`` is not live, or None when it is."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
        pid, phase = int(status["pid"]), str(status["phase"])
        updated_at = dt.datetime.fromisoformat(status["updated_at"])
    except FileNotFoundError:
        return f"capture has written no status to {path} yet"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable status {path}: {exc}"
    if not alive(pid):
        return f"the process that wrote {path} (pid {pid}) is not running"
    age = ((now or dt.datetime.now(dt.UTC)) - updated_at).total_seconds()
    if age > max_age_seconds:
        return f"no progress for {age:.0f}s (more than {max_age_seconds:g}s) in phase {phase}"
    return None


def main() -> int:
    problem = liveness_problem(status_path(), float(settings()["capture"]["health_max_age_seconds"]))
    if problem:
        print(f"capture unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
