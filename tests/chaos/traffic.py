"""Steady simulated business traffic in a thread, which carries on across source outages."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import TracebackType

import psycopg2

from totes_cdc.errors import TotesError, first_line
from totes_ops import simulate

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0


@dataclass
class TrafficTotals:
    """What the traffic did; ``interruptions`` counts runs cut short by a lost source."""

    changes: int = 0
    transactions: int = 0
    seconds: float = 0.0
    interruptions: int = 0

    def add(self, stats: simulate.SimulationStats) -> None:
        self.changes += stats.changes
        self.transactions += stats.transactions
        self.seconds += stats.seconds


class Traffic:
    """``with Traffic(dsn, rate, seed) as t:`` runs :func:`totes_ops.simulate.run` until the block ends.

    When the source goes away the run ends with an error: it is counted (with the changes made
    up to its last progress report) and a new run starts once the source answers again. The one
    transaction in flight when the connection broke may or may not have committed; reconcile
    compares against what the source holds, so that does not matter for the checks.
    """

    def __init__(self, dsn: str, rate: float, seed: int) -> None:
        self.dsn, self.rate, self.seed = dsn, rate, seed
        self.totals = TrafficTotals()
        self._stop = threading.Event()
        self._live: simulate.SimulationStats | None = None
        self._thread = threading.Thread(target=self._run, name="chaos-traffic", daemon=True)

    def _track(self, stats: simulate.SimulationStats) -> None:
        self._live = stats

    def _run(self) -> None:
        segment = 0
        while not self._stop.is_set():
            self._live = None
            try:
                self.totals.add(simulate.run(self.dsn, self.rate, seed=self.seed * 1000 + segment,
                                             stop=self._stop, progress=self._track))
            except (psycopg2.Error, TotesError) as exc:
                if self._live is not None:
                    self.totals.add(self._live)
                self.totals.interruptions += 1
                log.info("traffic interrupted (%s); resuming in %.0f s",
                         first_line(exc),
                         RETRY_SECONDS)
                self._stop.wait(RETRY_SECONDS)
            segment += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
