"""Business traffic on a live totesys database, shaped like the real data.

Each action is one source transaction, drawn with these weights:

- a new sales order with its transaction and (unpaid) payment (55%);
- a new purchase order with its transaction and payment (15%);
- a payment flipping to paid (25%), picked among the unpaid ones;
- an edit (5%): an address's phone or second line, a department's manager, or a design's name.

The rate counts *changes*: rows inserted or updated at the source, i.e. change events in the
pipeline (a new order is three). The loop paces itself to that rate and, when it falls behind, does
not burst to catch up. The same ``seed`` on the same starting database gives the same actions and
values (timestamps are the wall clock).
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg2 import sql

from totes_cdc.db import connect
from totes_cdc.errors import ConfigError
from totes_cdc.stack import synthetic

log = logging.getLogger(__name__)

ACTIONS = ("sales_order", "purchase_order", "payment_paid", "edit")
WEIGHTS = (55, 15, 25, 5)
PROGRESS_SECONDS = 10.0


@dataclass
class SimulationStats:
    """What a run did."""

    changes: int = 0
    transactions: int = 0
    seconds: float = 0.0
    sales_orders: int = 0
    purchase_orders: int = 0
    payments_paid: int = 0
    edits: int = 0

    @property
    def rate(self) -> float:
        """Changes per second actually achieved."""
        return self.changes / self.seconds if self.seconds else 0.0


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _insert(cur: Any, table: str, row: dict[str, Any]) -> int:
    cur.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
        sql.Identifier("public", table), sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)), sql.Identifier(f"{table}_id")),
        list(row.values()))
    new_id: int = cur.fetchone()[0]
    return new_id


def _ids(cur: Any, table: str, where: str = "true") -> list[int]:
    """The ids of ``table`` (rows matching the constant condition ``where``), ascending."""
    cur.execute(sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY 1").format(
        sql.Identifier(f"{table}_id"), sql.Identifier("public", table), sql.SQL(where)))
    return [row[0] for row in cur.fetchall()]


class Simulator:
    """Performs actions on one connection; each action commits its own transaction."""

    def __init__(self, conn: Any, seed: int) -> None:
        self.conn = conn
        # Reproducible traffic, not secrets: a seeded generator is the point.
        self.rng = random.Random(seed)  # noqa: S311  # nosec B311
        with conn.cursor() as cur:
            self.keys = synthetic.Keys(*(_ids(cur, t) for t in (
                "address", "counterparty", "currency", "staff", "design")))
            self.departments = _ids(cur, "department")
            self.unpaid = _ids(cur, "payment", "NOT paid")
        conn.commit()
        if not all((*vars(self.keys).values(), self.departments)):
            raise ConfigError("the source has no totesys reference rows (addresses, counterparties, "
                              "currencies, staff, designs, departments): seed it first")

    def step(self, stats: SimulationStats) -> None:
        """One action, committed; counts it in ``stats``."""
        action = self.rng.choices(ACTIONS, WEIGHTS)[0]
        if action == "payment_paid" and not self.unpaid:
            action = "sales_order"
        with self.conn.cursor() as cur:
            if action in ("sales_order", "purchase_order"):
                stats.changes += self._new_order(cur, action)
            elif action == "payment_paid":
                stats.changes += self._pay(cur)
                stats.payments_paid += 1
            else:
                stats.changes += self._edit(cur)
                stats.edits += 1
        self.conn.commit()
        stats.transactions += 1
        if action == "sales_order":
            stats.sales_orders += 1
        elif action == "purchase_order":
            stats.purchase_orders += 1

    def _new_order(self, cur: Any, table: str) -> int:
        created = _now()
        build = synthetic.sales_order if table == "sales_order" else synthetic.purchase_order
        order = build(self.rng, self.keys, created)
        order_id = _insert(cur, table, order)
        transaction_id = _insert(cur, "transaction", synthetic.transaction(order, order_id))
        self.unpaid.append(_insert(cur, "payment",
                                   synthetic.payment(self.rng, order, transaction_id, created)))
        return 3

    def _pay(self, cur: Any) -> int:
        payment_id = self.unpaid.pop(self.rng.randrange(len(self.unpaid)))
        cur.execute("UPDATE public.payment SET paid = true, last_updated = %s WHERE payment_id = %s",
                    (synthetic.timestamp(_now()), payment_id))
        return cur.rowcount  # type: ignore[no-any-return]

    def _edit(self, cur: Any) -> int:
        rng, now = self.rng, synthetic.timestamp(_now())
        kind = rng.choice(("address", "department", "design"))
        if kind == "address":
            cur.execute("UPDATE public.address SET phone = %s, last_updated = %s "
                        "WHERE address_id = %s",
                        (f"{rng.randint(0, 9999):04d} {rng.randint(0, 999999):06d}", now,
                         rng.choice(self.keys.addresses)))
        elif kind == "department":
            cur.execute("UPDATE public.department SET manager = %s, last_updated = %s "
                        "WHERE department_id = %s",
                        (" ".join(synthetic.person(rng)), now, rng.choice(self.departments)))
        else:
            cur.execute("UPDATE public.design SET design_name = %s, last_updated = %s "
                        "WHERE design_id = %s",
                        (rng.choice(synthetic.MATERIALS), now, rng.choice(self.keys.designs)))
        return cur.rowcount  # type: ignore[no-any-return]


def run(dsn: str, rate: float = 50.0, duration: float | None = None, seed: int = 0, *,
        stop: threading.Event | None = None,
        progress: Callable[[SimulationStats], None] | None = None) -> SimulationStats:
    """Make ``rate`` changes per second until ``duration`` seconds pass or ``stop`` is set.

    ``progress`` is called about once a second with the running totals.
    """
    if rate <= 0:
        raise ConfigError("--rate must be positive")
    stop = stop or threading.Event()
    conn = connect(dsn, "source")
    stats = SimulationStats()
    try:
        simulator = Simulator(conn, seed)
        start = paced_from = last_report = time.monotonic()
        paced_changes = 0
        while not stop.is_set():
            now = time.monotonic()
            stats.seconds = now - start
            if duration is not None and stats.seconds >= duration:
                break
            if progress and now - last_report >= 1.0:
                progress(stats)
                last_report = now
            ahead = (stats.changes - paced_changes) / rate - (now - paced_from)
            if ahead > 0:
                stop.wait(min(ahead, 0.5))
                continue
            if ahead < -1.0:
                # More than a second behind: pace from here rather than bursting to catch up.
                paced_from, paced_changes = now, stats.changes
            simulator.step(stats)
        stats.seconds = time.monotonic() - start
    finally:
        conn.close()
    return stats


def describe(stats: SimulationStats) -> str:
    return (f"{stats.changes} changes in {stats.transactions} transactions, {stats.seconds:.0f} s, "
            f"{stats.rate:.1f} changes/s ({stats.sales_orders} sales orders, "
            f"{stats.purchase_orders} purchase orders, {stats.payments_paid} payments paid, "
            f"{stats.edits} edits)")


def progress_printer(tty: bool) -> Callable[[SimulationStats], None]:
    """One updating line on a terminal; a log line every PROGRESS_SECONDS otherwise."""
    last = [0.0]

    def show(stats: SimulationStats) -> None:
        if tty:
            sys.stderr.write("\r" + describe(stats) + " ")
            sys.stderr.flush()
        elif stats.seconds - last[0] >= PROGRESS_SECONDS:
            last[0] = stats.seconds
            log.info("simulating: %s", describe(stats))

    return show
