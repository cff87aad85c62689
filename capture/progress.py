"""Progress of table copies (snapshot and resync): rows done / estimated total, rate, ETA.

The readers copying a table call :meth:`ProgressTracker.start` (with the estimate the server
keeps in ``pg_class.reltuples``), :meth:`~ProgressTracker.advance` per batch of rows, from any
number of threads, and :meth:`~ProgressTracker.finish`. Capture's log lines, its status file and
its CloudWatch metric read :meth:`~ProgressTracker.snapshot`. The rate is measured over a recent
window, not since the start, so that the ETA follows the copy when it speeds up or slows down.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WINDOW_SECONDS = 30.0
# Samples closer together than this are merged, so memory stays bounded however often rows come.
_RESOLUTION_SECONDS = 1.0


@dataclass(frozen=True)
class TableProgress:
    """Where the copy of one table stands."""

    table: str
    rows_done: int
    estimated_total: int | None
    """``pg_class.reltuples`` when the copy started; None when the server has no estimate."""
    rate: float
    """Rows per second over the last :data:`WINDOW_SECONDS` (over the whole copy once finished)."""
    eta_seconds: float | None
    """Seconds left at the current rate; 0 once finished, None while it cannot be told."""
    finished: bool

    def as_dict(self) -> dict[str, Any]:
        """The JSON form the status file and ``totes-cdc status --json`` carry."""
        return {"table": self.table, "rows_done": self.rows_done,
                "estimated_total": self.estimated_total, "rate": round(self.rate, 1),
                "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
                "finished": self.finished}

    def describe(self) -> str:
        """One line (capture's log, `totes-cdc status`):
        ``public.t 120,000/1,000,000 rows (12%), 40,000 rows/s, ETA 22 s``."""
        total = "?" if self.estimated_total is None else f"{self.estimated_total:,}"
        share = ("" if not self.estimated_total
                 else f" ({min(100, 100 * self.rows_done // self.estimated_total)}%)")
        if self.finished:
            return f"{self.table} {self.rows_done:,} rows, done ({self.rate:,.0f} rows/s)"
        eta = "unknown" if self.eta_seconds is None else f"{self.eta_seconds:,.0f} s"
        return (f"{self.table} {self.rows_done:,}/{total} rows{share}, "
                f"{self.rate:,.0f} rows/s, ETA {eta}")


class _Table:
    def __init__(self, estimated_total: int | None, done: int, now: float) -> None:
        self.estimated_total = estimated_total
        self.started = now
        self.done_before = done
        self.rows = done
        self.finished_at: float | None = None
        # (time, rows done then); the first one is the last sample at or before the window start.
        self.samples: deque[tuple[float, int]] = deque([(now, done)])

    def record(self, now: float) -> None:
        if len(self.samples) >= 2 and now - self.samples[-2][0] < _RESOLUTION_SECONDS:
            self.samples[-1] = (now, self.rows)
        else:
            self.samples.append((now, self.rows))
        self._prune(now)

    def _prune(self, now: float) -> None:
        while len(self.samples) > 1 and self.samples[1][0] <= now - WINDOW_SECONDS:
            self.samples.popleft()

    def progress(self, table: str, now: float) -> TableProgress:
        if self.finished_at is not None:
            elapsed = self.finished_at - self.started
            rate = (self.rows - self.done_before) / elapsed if elapsed > 0 else 0.0
            return TableProgress(table, self.rows, self.estimated_total, rate, 0.0, True)
        self._prune(now)
        since, rows_then = self.samples[0]
        rate = (self.rows - rows_then) / (now - since) if now > since else 0.0
        eta = None
        if self.estimated_total is not None and rate > 0:
            eta = max(self.estimated_total - self.rows, 0) / rate
        return TableProgress(table, self.rows, self.estimated_total, rate, eta, False)


class ProgressTracker:
    """Thread-safe progress of the table copies of one capture process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tables: dict[str, _Table] = {}
        self._copied = 0

    @property
    def copied(self) -> int:
        """Rows copied since this tracker was made, every table and every copy counted."""
        with self._lock:
            return self._copied

    def start(self, table: str, estimated_total: int | None, done: int = 0) -> None:
        """A copy of ``table`` begins (again: a table copied before starts from zero), or resumes
        with ``done`` rows copied before (counted as done, not in the rate).

        ``estimated_total`` is ``pg_class.reltuples``; a negative one (never analysed) is unknown.
        """
        estimate = None if estimated_total is None or estimated_total < 0 else int(estimated_total)
        with self._lock:
            self._tables[table] = _Table(estimate, done, self._clock())

    def advance(self, table: str, rows: int) -> None:
        """``rows`` more rows of ``table`` are copied."""
        with self._lock:
            entry = self._tables[table]
            entry.rows += rows
            self._copied += rows
            entry.record(self._clock())

    def finish(self, table: str) -> None:
        """The copy of ``table`` is complete."""
        with self._lock:
            self._tables[table].finished_at = self._clock()

    def snapshot(self) -> list[TableProgress]:
        """Every table started in this process, in the order they started."""
        with self._lock:
            now = self._clock()
            return [entry.progress(table, now) for table, entry in self._tables.items()]
