"""A deterministic stand-in for the real totesys rows, for machines without ``../shared/totesys``.

It follows the shape measured on the real data (row counts, value ranges, nulls, dates), not its
values: names come from the small word lists below. The row builders are shared with the traffic
simulator (:mod:`totes_ops.simulate`), so generated history and live traffic look alike:

- sales orders: units 1,001-99,999 at 2.00-4.00 each, in GBP/USD/EUR about equally;
- purchase orders: 1-999 items at 3.00-999.99, a unique 7-character item code;
- every order has one transaction (exactly one of sales_order_id / purchase_order_id) and one
  payment of units x price, in the order's currency, to the order's counterparty, created with it;
- agreed dates and payment dates are ``YYYY-MM-DD`` text, 0-6 days after creation (delivery now and
  then months later); about 61% of payments flip to paid 0.5-6 days after creation;
- ``created_at``/``last_updated`` are ``timestamp(3)``; ``address_line_2`` is null in 20 of 30
  addresses and ``district`` in 14 of 30; counterparty names contain commas; design names repeat.
"""

from __future__ import annotations

import bisect
import csv
import io
import random
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from totes_ops.stack.seed import LOAD_ORDER, set_sequences

COUNTS = {"address": 30, "counterparty": 20, "currency": 3, "department": 8, "design": 473,
          "payment_type": 4, "staff": 20, "sales_order": 11187, "purchase_order": 4649}
# The history the seed covers: two years of trading, like the real export.
HISTORY_START = datetime(2022, 11, 3, 14, 20, 49, 962000)
HISTORY_DAYS = 743
CURRENCIES = ("GBP", "USD", "EUR")
PAYMENT_TYPES = ("SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND")
SALES_RECEIPT, PURCHASE_PAYMENT = 1, 3
PAID_SHARE = 0.61

FIRST_NAMES = ("Alma", "Boris", "Carmen", "Dylan", "Esme", "Felix", "Greta", "Hugo", "Ines", "Jonas",
               "Kira", "Leon", "Maya", "Nils", "Olive", "Pavel", "Quinn", "Rosa", "Silas", "Tessa",
               "Uma", "Victor", "Wanda", "Xavi", "Yara", "Zane")
SURNAMES = ("Abbott", "Bergstrom", "Calloway", "Dunmore", "Ellery", "Fairbank", "Gorsuch", "Hartwell",
            "Ingram", "Jessop", "Kettering", "Lindqvist", "Marlowe", "Northcott", "Okafor", "Pemberton",
            "Quarrie", "Rowntree", "Stainsby", "Thackeray", "Underhill", "Vance", "Whitlock", "Yardley")
STREET_KINDS = ("Road", "Lane", "Cliffs", "Fort", "Track", "Island", "Way", "Mews", "Row", "Parade")
TOWN_SUFFIXES = ("ton", "bury", "field", "ford", "mouth", "haven", "stead", "wick")
DISTRICTS = ("Avon", "Kent", "Cumbria", "Dorset", "Fife", "Powys")
COUNTRIES = ("Portugal", "Chile", "Norway", "Kenya", "Japan", "Canada", "Peru", "Iceland", "Ghana",
             "Poland", "Vietnam", "Morocco", "Estonia", "Uruguay", "Malta", "Nepal", "Jordan",
             "Ireland", "Mexico", "Finland", "Greece", "Senegal", "Bhutan", "Belize", "Oman",
             "Croatia", "Latvia", "Panama", "Tunisia")
COMPANY_FORMS = ("{a} and Sons", "{a}, {b} and {c}", "{a} Inc", "{a} - {b}", "{a} LLC", "{a} Group",
                 "{a}, {b} and {c}")
DEPARTMENTS = (("Sales", "Manchester"), ("Purchasing", "Manchester"), ("Production", "Leeds"),
               ("Dispatch", "Leeds"), ("Finance", "Manchester"), ("Facilities", "Manchester"),
               ("Communications", "Leeds"), ("HR", "Leeds"))
MATERIALS = ("Steel", "Granite", "Concrete", "Soft", "Frozen", "Bronze", "Plastic", "Cotton",
             "Metal", "Fresh", "Wooden", "Rubber")
FILE_LOCATIONS = ("/designs", "/designs/archive", "/srv/art", "/srv/art/new", "/home/studio",
                  "/mnt/share", "/opt/designs", "/var/designs")
CODE_ALPHABET = string.ascii_uppercase + string.digits


def timestamp(moment: datetime) -> str:
    """``timestamp(3)`` text: milliseconds, always three digits."""
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}"


def day(moment: datetime | date, days: int = 0) -> str:
    """A ``YYYY-MM-DD`` text date ``days`` after ``moment``."""
    return (moment + timedelta(days=days)).strftime("%Y-%m-%d")


def person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(SURNAMES)


@dataclass(frozen=True)
class Keys:
    """The ids new orders may point at."""

    addresses: Sequence[int]
    counterparties: Sequence[int]
    currencies: Sequence[int]
    staff: Sequence[int]
    designs: Sequence[int]


def agreed_dates(rng: random.Random, created: datetime) -> tuple[str, str]:
    """(agreed_delivery_date, agreed_payment_date): days after creation, delivery sometimes months."""
    delivery = rng.randint(60, 650) if rng.random() < 0.005 else rng.randint(0, 7)
    return day(created, delivery), day(created, rng.randint(0, 6))


def sales_order(rng: random.Random, keys: Keys, created: datetime) -> dict[str, Any]:
    delivery, payment = agreed_dates(rng, created)
    return {"created_at": timestamp(created), "last_updated": timestamp(created),
            "design_id": rng.choice(keys.designs), "staff_id": rng.choice(keys.staff),
            "counterparty_id": rng.choice(keys.counterparties),
            "units_sold": rng.randint(1001, 99999),
            "unit_price": Decimal(rng.randint(200, 400)) / 100,
            "currency_id": rng.choice(keys.currencies), "agreed_delivery_date": delivery,
            "agreed_payment_date": payment, "agreed_delivery_location_id": rng.choice(keys.addresses)}


def purchase_order(rng: random.Random, keys: Keys, created: datetime) -> dict[str, Any]:
    delivery, payment = agreed_dates(rng, created)
    return {"created_at": timestamp(created), "last_updated": timestamp(created),
            "staff_id": rng.choice(keys.staff), "counterparty_id": rng.choice(keys.counterparties),
            "item_code": "".join(rng.choices(CODE_ALPHABET, k=7)),
            "item_quantity": rng.randint(1, 999),
            "item_unit_price": Decimal(rng.randint(300, 99999)) / 100,
            "currency_id": rng.choice(keys.currencies), "agreed_delivery_date": delivery,
            "agreed_payment_date": payment, "agreed_delivery_location_id": rng.choice(keys.addresses)}


def transaction(order: dict[str, Any], order_id: int) -> dict[str, Any]:
    """The transaction of a sales order (it has ``units_sold``) or of a purchase order."""
    sale = "units_sold" in order
    return {"transaction_type": "SALE" if sale else "PURCHASE",
            "sales_order_id": order_id if sale else None,
            "purchase_order_id": None if sale else order_id,
            "created_at": order["created_at"], "last_updated": order["last_updated"]}


def payment(rng: random.Random, order: dict[str, Any], transaction_id: int,
            created: datetime) -> dict[str, Any]:
    """The (unpaid) payment of an order: its full amount, currency and counterparty."""
    sale = "units_sold" in order
    amount = (order["units_sold"] * order["unit_price"] if sale
              else order["item_quantity"] * order["item_unit_price"])
    return {"created_at": timestamp(created), "last_updated": timestamp(created),
            "transaction_id": transaction_id, "counterparty_id": order["counterparty_id"],
            "payment_amount": amount, "currency_id": order["currency_id"],
            "payment_type_id": SALES_RECEIPT if sale else PURCHASE_PAYMENT, "paid": False,
            "payment_date": day(created, rng.randint(0, 6)),
            "company_ac_number": rng.randint(10_000_000, 99_999_999),
            "counterparty_ac_number": rng.randint(10_000_000, 99_999_999)}


def paid_after(rng: random.Random) -> timedelta:
    """How long after creation a payment flips to paid (0.5-6 days)."""
    return timedelta(days=rng.uniform(0.54, 6.0))


def address(rng: random.Random, created: datetime, line_2: bool, district: bool) -> dict[str, Any]:
    town = rng.choice(SURNAMES) + rng.choice(TOWN_SUFFIXES)
    postal = f"{rng.randint(0, 99999):05d}" + (f"-{rng.randint(0, 9999):04d}" if rng.random() < 0.3
                                               else "")
    return {"address_line_1": f"{rng.randint(1, 99999)} {rng.choice(SURNAMES)} "
                              f"{rng.choice(STREET_KINDS)}",
            "address_line_2": f"{rng.choice(SURNAMES)} {rng.choice(('House', 'Court', 'Works'))}"
                              if line_2 else None,
            "district": rng.choice(DISTRICTS) if district else None,
            "city": town, "postal_code": postal, "country": rng.choice(COUNTRIES),
            "phone": f"{rng.randint(0, 9999):04d} {rng.randint(0, 999999):06d}",
            "created_at": timestamp(created), "last_updated": timestamp(created)}


def design(rng: random.Random, created: datetime) -> dict[str, Any]:
    name = rng.choice(MATERIALS)
    suffix = "".join(rng.choices(string.ascii_lowercase + string.digits, k=4))
    return {"created_at": timestamp(created), "design_name": name,
            "file_location": rng.choice(FILE_LOCATIONS),
            "file_name": f"{name.lower()}-{created:%Y%m%d}-{suffix}.json",
            "last_updated": timestamp(created)}


def generate(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows (with ids), in load order; the same seed gives the same rows."""
    # Reproducible data, not secrets: a seeded generator is the point.
    rng = random.Random(seed)  # noqa: S311  # nosec B311
    start = HISTORY_START
    end = start + timedelta(days=HISTORY_DAYS)
    rows: dict[str, list[dict[str, Any]]] = {table: [] for table in LOAD_ORDER}

    n = COUNTS["address"]
    no_line_2 = set(rng.sample(range(n), 20))
    no_district = set(rng.sample(range(n), 14))
    rows["address"] = [{"address_id": i + 1, **address(rng, start, i not in no_line_2,
                                                       i not in no_district)} for i in range(n)]
    later = start + timedelta(seconds=1.6)
    for i in range(COUNTS["counterparty"]):
        names = dict(zip("abc", rng.sample(SURNAMES, 3), strict=True))
        rows["counterparty"].append({
            "counterparty_id": i + 1,
            "counterparty_legal_name": COMPANY_FORMS[i % len(COMPANY_FORMS)].format(**names),
            "legal_address_id": rng.randint(1, n), "commercial_contact": " ".join(person(rng)),
            "delivery_contact": " ".join(person(rng)),
            "created_at": timestamp(later), "last_updated": timestamp(later)})
    rows["currency"] = [{"currency_id": i + 1, "currency_code": code, "created_at": timestamp(start),
                         "last_updated": timestamp(start)} for i, code in enumerate(CURRENCIES)]
    rows["department"] = [{"department_id": i + 1, "department_name": name, "location": location,
                           "manager": " ".join(person(rng)), "created_at": timestamp(start),
                           "last_updated": timestamp(start)}
                          for i, (name, location) in enumerate(DEPARTMENTS)]
    # A dozen designs at the start, the rest added over the two years.
    design_times = sorted([start] * 12 + [start + (end - start) * rng.random()
                                          for _ in range(COUNTS["design"] - 12)])
    rows["design"] = [{"design_id": i + 1, **design(rng, t)} for i, t in enumerate(design_times)]
    rows["payment_type"] = [{"payment_type_id": i + 1, "payment_type_name": name,
                             "created_at": timestamp(start), "last_updated": timestamp(start)}
                            for i, name in enumerate(PAYMENT_TYPES)]
    for i in range(COUNTS["staff"]):
        first, last = FIRST_NAMES[i], SURNAMES[i]
        rows["staff"].append({"staff_id": i + 1, "first_name": first, "last_name": last,
                              "department_id": rng.randint(2, len(DEPARTMENTS)),
                              "email_address": f"{first.lower()}.{last.lower()}@totes.example.com",
                              "created_at": timestamp(later), "last_updated": timestamp(later)})
    _orders(rng, rows, start, end)
    return rows


def _orders(rng: random.Random, rows: dict[str, list[dict[str, Any]]], start: datetime,
            end: datetime) -> None:
    """Orders through the history, each with its transaction and payment, in creation order."""
    sales, purchases = COUNTS["sales_order"], COUNTS["purchase_order"]
    span = (end - start).total_seconds()
    moments = sorted(start + timedelta(seconds=2 + rng.random() * span)
                     for _ in range(sales + purchases))
    kinds = [True] * sales + [False] * purchases
    rng.shuffle(kinds)
    design_created = [row["created_at"] for row in rows["design"]]
    base = Keys(addresses=range(1, COUNTS["address"] + 1),
                counterparties=range(1, COUNTS["counterparty"] + 1),
                currencies=range(1, len(CURRENCIES) + 1), staff=range(1, COUNTS["staff"] + 1),
                designs=range(1, 13))
    for moment, sale in zip(moments, kinds, strict=True):
        created = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        # Only designs that exist by then (ids are in creation order, a dozen from the start).
        known = bisect.bisect_right(design_created, timestamp(created))
        keys = Keys(base.addresses, base.counterparties, base.currencies, base.staff,
                    range(1, known + 1))
        if sale:
            order = sales_order(rng, keys, created)
            table = "sales_order"
        else:
            order = purchase_order(rng, keys, created)
            table = "purchase_order"
        order_id = len(rows[table]) + 1
        rows[table].append({f"{table}_id": order_id, **order})
        transaction_id = len(rows["transaction"]) + 1
        rows["transaction"].append({"transaction_id": transaction_id,
                                    **transaction(order, order_id)})
        pay = payment(rng, order, transaction_id, created)
        if rng.random() < PAID_SHARE:
            pay["paid"] = True
            pay["last_updated"] = timestamp(created + paid_after(rng))
        rows["payment"].append({"payment_id": transaction_id, **pay})


def _copy(cur: Any, table: str, rows: Iterable[dict[str, Any]]) -> int:
    rows = list(rows)
    columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow(row[c] for c in columns)
    buffer.seek(0)
    cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.Identifier("public", table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns)).as_string(cur), buffer)
    return len(rows)


def load_synthetic(conn: Any, seed: int = 0) -> dict[str, int]:
    """COPY generated rows into an empty totesys schema (one transaction); row counts per table."""
    rows = generate(seed)
    with conn.cursor() as cur:
        counts = {table: _copy(cur, table, rows[table]) for table in LOAD_ORDER}
    conn.commit()
    set_sequences(conn)
    return counts
