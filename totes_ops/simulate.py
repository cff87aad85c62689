"""Business traffic on a live totesys database, shaped like the real data.

Each action is one source transaction, drawn with these weights:

- a new sales order with its transaction and (unpaid) payment (50%);
- a new purchase order with its transaction and payment (14%);
- a payment flipping to paid (22%), picked among the unpaid ones;
- an edit (5%): an address's phone or second line, a department's manager, or a design's name;
- a cancellation (6%), picked among the unpaid payments: a sales order's is cancelled whole
  (its payment, then its transaction, then the order: ``payment`` references ``transaction``
  with RESTRICT, ``transaction`` references the order with SET NULL), a purchase order's payment
  is removed alone;
- a long transaction (3%): a new sales order made on a second connection and held open while
  the next 3-10 actions commit on the first, then committed. Its changes were written before
  those commits and commit after them, as a slow OLTP transaction does.

The rate counts *changes*: rows inserted, updated or deleted at the source, i.e. change events in
the pipeline (a new order is three). The loop paces itself to that rate and, when it falls behind,
does not burst to catch up. The same ``seed`` on the same starting database gives the same actions
and values (timestamps are the wall clock).
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

from totes_cdc.db import connect, translated
from totes_cdc.errors import ConfigError
from totes_ops.stack import synthetic

log = logging.getLogger(__name__)

ACTIONS = ("sales_order", "purchase_order", "payment_paid", "edit", "cancel", "long")
WEIGHTS = (50, 14, 22, 5, 6, 3)
HELD_FOR = (3, 10)  # a long transaction stays open while this many other actions commit
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
    sales_orders_cancelled: int = 0
    payments_removed: int = 0
    long_transactions: int = 0  # committed; their sales orders are counted in sales_orders

    @property
    def rate(self) -> float:
        """Changes per second actually achieved."""
        return self.changes / self.seconds if self.seconds else 0.0

    @property
    def fact_versions(self) -> int:
        """Fact rows the run's actions make: an order and its payment (2), a payment paid (1),
        a cancelled sales order's and its payment's tombstones (2), a removed payment's (1)."""
        return (2 * (self.sales_orders + self.purchase_orders + self.sales_orders_cancelled)
                + self.payments_paid + self.payments_removed)


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


@dataclass
class _Held:
    """The long transaction open on the second connection."""

    commit_after: int  # the first-connection transaction count at which it commits
    payment_id: int
    chain: tuple[int, int | None]


class Simulator:
    """Performs actions on ``conn``; each commits its own transaction. A long transaction runs on
    ``side``, a second connection to the same database."""

    def __init__(self, conn: Any, side: Any, seed: int) -> None:
        self.conn, self.side = conn, side
        # Reproducible traffic, not secrets: a seeded generator is the point.
        self.rng = random.Random(seed)  # noqa: S311  # nosec B311
        with conn.cursor() as cur:
            self.keys = synthetic.Keys(*(_ids(cur, t) for t in (
                "address", "counterparty", "currency", "staff", "design")))
            self.departments = _ids(cur, "department")
            self.unpaid = _ids(cur, "payment", "NOT paid")
            # payment id -> (its transaction, that transaction's sales order or None)
            cur.execute("SELECT p.payment_id, p.transaction_id, t.sales_order_id FROM public.payment p "
                        "JOIN public.transaction t USING (transaction_id) WHERE NOT p.paid")
            self.chains: dict[int, tuple[int, int | None]] = {
                p: (t, s) for p, t, s in cur.fetchall()}
        conn.commit()
        self.held: _Held | None = None
        if not all((*vars(self.keys).values(), self.departments)):
            raise ConfigError("the source has no totesys reference rows (addresses, counterparties, "
                              "currencies, staff, designs, departments): seed it first")

    def step(self, stats: SimulationStats) -> None:
        """One action, committed (or the due long transaction's commit); counts it in ``stats``."""
        if self.held is not None and stats.transactions >= self.held.commit_after:
            self.finish(stats)
            return
        action = self.rng.choices(ACTIONS, WEIGHTS)[0]
        if action in ("payment_paid", "cancel") and not self.unpaid:
            action = "sales_order"
        if action == "long" and self.held is not None:
            action = "sales_order"
        if action == "long":
            self._begin_long(stats)
            return
        with self.conn.cursor() as cur:
            if action in ("sales_order", "purchase_order"):
                stats.changes += self._new_order(cur, action)
            elif action == "payment_paid":
                stats.changes += self._pay(cur)
                stats.payments_paid += 1
            elif action == "cancel":
                stats.changes += self._cancel(cur, stats)
            else:
                stats.changes += self._edit(cur)
                stats.edits += 1
        self.conn.commit()
        stats.transactions += 1
        if action == "sales_order":
            stats.sales_orders += 1
        elif action == "purchase_order":
            stats.purchase_orders += 1

    def finish(self, stats: SimulationStats) -> None:
        """Commit the long transaction, if one is open."""
        if self.held is None:
            return
        self.side.commit()
        self._unpaid(self.held.payment_id, self.held.chain)
        self.held = None
        stats.changes += 3
        stats.transactions += 1
        stats.sales_orders += 1
        stats.long_transactions += 1

    def _begin_long(self, stats: SimulationStats) -> None:
        with self.side.cursor() as cur:
            payment_id, chain = self._order_rows(cur, "sales_order")
        self.held = _Held(stats.transactions + self.rng.randint(*HELD_FOR), payment_id, chain)

    def _order_rows(self, cur: Any, table: str) -> tuple[int, tuple[int, int | None]]:
        """Insert an order, its transaction and its payment: the payment id and its chain."""
        created = _now()
        build = synthetic.sales_order if table == "sales_order" else synthetic.purchase_order
        order = build(self.rng, self.keys, created)
        order_id = _insert(cur, table, order)
        transaction_id = _insert(cur, "transaction", synthetic.transaction(order, order_id))
        payment_id = _insert(cur, "payment", synthetic.payment(self.rng, order, transaction_id, created))
        return payment_id, (transaction_id, order_id if table == "sales_order" else None)

    def _unpaid(self, payment_id: int, chain: tuple[int, int | None]) -> None:
        self.unpaid.append(payment_id)
        self.chains[payment_id] = chain

    def _new_order(self, cur: Any, table: str) -> int:
        self._unpaid(*self._order_rows(cur, table))
        return 3

    def _pick_unpaid(self) -> tuple[int, tuple[int, int | None]]:
        payment_id = self.unpaid.pop(self.rng.randrange(len(self.unpaid)))
        return payment_id, self.chains.pop(payment_id)

    def _pay(self, cur: Any) -> int:
        payment_id, _ = self._pick_unpaid()
        cur.execute("UPDATE public.payment SET paid = true, last_updated = %s WHERE payment_id = %s",
                    (synthetic.timestamp(_now()), payment_id))
        return cur.rowcount  # type: ignore[no-any-return]

    def _cancel(self, cur: Any, stats: SimulationStats) -> int:
        """A sales order cancelled with its transaction and payment, or a purchase payment removed."""
        payment_id, (transaction_id, sales_order_id) = self._pick_unpaid()
        cur.execute("DELETE FROM public.payment WHERE payment_id = %s", (payment_id,))
        changes: int = cur.rowcount
        if sales_order_id is None:
            stats.payments_removed += 1
            return changes
        cur.execute("DELETE FROM public.transaction WHERE transaction_id = %s", (transaction_id,))
        changes += cur.rowcount
        cur.execute("DELETE FROM public.sales_order WHERE sales_order_id = %s", (sales_order_id,))
        stats.sales_orders_cancelled += 1
        return changes + cur.rowcount  # type: ignore[no-any-return]

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

    ``progress`` is called about once a second with the running totals. The source ending its
    sessions or refusing a statement on the way is an error saying so: one line and exit 2 from
    the CLI.
    """
    if rate <= 0:
        raise ConfigError("--rate must be positive")
    stop = stop or threading.Event()
    conn = connect(dsn, "source")
    side: Any = None
    stats = SimulationStats()
    try:
        side = connect(dsn, "source")
        with translated("simulating traffic on the source"):
            simulator = Simulator(conn, side, seed)
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
            simulator.finish(stats)
            stats.seconds = time.monotonic() - start
    finally:
        if side is not None:
            side.close()
        conn.close()
    return stats


def describe(stats: SimulationStats) -> str:
    return (f"{stats.changes} changes in {stats.transactions} transactions, {stats.seconds:.0f} s, "
            f"{stats.rate:.1f} changes/s ({stats.sales_orders} sales orders, "
            f"{stats.purchase_orders} purchase orders, {stats.payments_paid} payments paid, "
            f"{stats.edits} edits, {stats.sales_orders_cancelled} sales orders cancelled, "
            f"{stats.payments_removed} payments removed, {stats.long_transactions} long transactions)")


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
