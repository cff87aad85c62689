"""Real-shaped change events and Lambda events for the stream processor's tests and benchmark.

Column types follow totesys_schema.sql as ``format_type()`` names them; values are the text
PostgreSQL sends. The JSON files here are Lambda events as the service delivers them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from local_aws.events import kinesis_event, stream_arn
from totes_cdc import contract, kpl
from totes_cdc.contract import ChangeEvent, Column

EVENTS_DIR = Path(__file__).resolve().parent
TS3 = "timestamp(3) without time zone"
SHARD = "shardId-000000000000"
ARN = stream_arn("totes-cdc-changes", "eu-west-2")
COMMIT_TS = dt.datetime(2024, 11, 15, 10, 30, 0, 123456, tzinfo=dt.UTC)


def _cols(spec: str, key: str) -> tuple[Column, ...]:
    pairs = [item.split(":", 1) for item in spec.split(";")]
    return tuple(Column(name, typ, name == key) for name, typ in pairs)


COLUMNS: dict[str, tuple[Column, ...]] = {
    "sales_order": _cols(
        f"sales_order_id:integer;created_at:{TS3};last_updated:{TS3};design_id:integer;"
        "staff_id:integer;counterparty_id:integer;units_sold:integer;unit_price:numeric(10,2);"
        "currency_id:integer;agreed_delivery_date:text;agreed_payment_date:text;"
        "agreed_delivery_location_id:integer", "sales_order_id"),
    "payment": _cols(
        f"payment_id:integer;created_at:{TS3};last_updated:{TS3};transaction_id:integer;"
        "counterparty_id:integer;payment_amount:numeric(10,2);currency_id:integer;"
        "payment_type_id:integer;paid:boolean;payment_date:text;company_ac_number:integer;"
        "counterparty_ac_number:integer", "payment_id"),
    "currency": _cols(f"currency_id:integer;currency_code:character varying(3);created_at:{TS3};"
                      f"last_updated:{TS3}", "currency_id"),
    "payment_type": _cols(f'payment_type_id:integer;payment_type_name:"PaymentTypeName";'
                          f"created_at:{TS3};last_updated:{TS3}", "payment_type_id"),
    "transaction": _cols(f'transaction_id:integer;transaction_type:"TransactionType";'
                         f"sales_order_id:integer;purchase_order_id:integer;created_at:{TS3};"
                         f"last_updated:{TS3}", "transaction_id"),
    "address": _cols(
        "address_id:integer;address_line_1:text;address_line_2:text;district:text;city:text;"
        f"postal_code:text;country:text;phone:text;created_at:{TS3};last_updated:{TS3}",
        "address_id"),
}


def sales_order_values(order_id: int) -> dict[str, str | None]:
    return {"sales_order_id": str(order_id), "created_at": "2022-11-03 14:20:49.962",
            "last_updated": "2022-11-03 14:20:49", "design_id": "9", "staff_id": "16",
            "counterparty_id": "18", "units_sold": "84754", "unit_price": "2.43",
            "currency_id": "3", "agreed_delivery_date": "2022-11-10",
            "agreed_payment_date": "2022-11-03", "agreed_delivery_location_id": "4"}


SAMPLE_VALUES: dict[str, dict[str, str | None]] = {
    "sales_order": sales_order_values(2),
    "payment": {"payment_id": "2", "created_at": "2022-11-03 14:20:52.187",
                "last_updated": "2022-11-03 14:20:52.187", "transaction_id": "2",
                "counterparty_id": "15", "payment_amount": "552548.62", "currency_id": "2",
                "payment_type_id": "3", "paid": "f", "payment_date": "2022-11-04",
                "company_ac_number": "67305075", "counterparty_ac_number": "31622269"},
    "currency": {"currency_id": "1", "currency_code": "GBP", "created_at": "2022-11-03 14:20:49.962",
                 "last_updated": "2022-11-03 14:20:49.962"},
    "payment_type": {"payment_type_id": "1", "payment_type_name": "SALES_RECEIPT",
                     "created_at": "2022-11-03 14:20:49.962",
                     "last_updated": "2022-11-03 14:20:49.962"},
    "transaction": {"transaction_id": "1", "transaction_type": "PURCHASE", "sales_order_id": None,
                    "purchase_order_id": "2", "created_at": "2022-11-03 14:20:52.186",
                    "last_updated": "2022-11-03 14:20:52.186"},
    "address": {"address_id": "1", "address_line_1": "6826 Herzog Via", "address_line_2": None,
                "district": "Avon", "city": "New Patienceburgh", "postal_code": "28441",
                "country": "Turkey", "phone": "1803 637401", "created_at": "2022-11-03 14:20:49.962",
                "last_updated": "2022-11-03 14:20:49.962"},
}


def change(table: str, values: Mapping[str, str | None], lsn: int, seq: int, op: str = "c",
           columns: Sequence[Column] | None = None, commit_ts: dt.datetime = COMMIT_TS,
           unchanged: Sequence[str] = ()) -> ChangeEvent:
    """A change event of ``public.<table>``; a delete carries only the key in ``before``."""
    cols = tuple(columns if columns is not None else COLUMNS[table])
    keys = {c.name: values.get(c.name) for c in cols if c.key}
    before = keys if op == contract.OP_DELETE else None
    after = None if op in (contract.OP_DELETE, contract.OP_TRUNCATE) else dict(values)
    return ChangeEvent(op=op, schema="public", table=table, lsn=lsn, seq=seq, commit_ts=commit_ts,
                       columns=() if op == contract.OP_TRUNCATE else cols, before=before,
                       after=after, xid=None if op == contract.OP_SNAPSHOT else 700 + lsn,
                       snapshot=op == contract.OP_SNAPSHOT, unchanged=tuple(unchanged))


def sales_orders(count: int, lsn: int = 1000, first_id: int = 1) -> list[ChangeEvent]:
    return [change("sales_order", sales_order_values(first_id + i), lsn, i + 1) for i in range(count)]


def aggregated(events: Iterable[ChangeEvent], per_record: int = 100,
               read_at: float | None = None) -> list[tuple[str, bytes]]:
    """Kinesis records (partition key, data) as capture puts them: KPL aggregates of encoded events
    (stamped as capture read at ``read_at``)."""
    pairs = [(e.partition_key, contract.encode(e)) for e in events]
    return [(pairs[i][0], kpl.aggregate(pairs[i:i + per_record], read_at))
            for i in range(0, len(pairs), per_record)]


def lambda_event(records: Sequence[tuple[str, bytes]], first_sequence: int = 1,
                 shard_id: str = SHARD) -> dict[str, Any]:
    """The Lambda Kinesis event for these records, with consecutive sequence numbers."""
    get_records = [{"PartitionKey": key, "Data": data, "SequenceNumber": str(first_sequence + i),
                    "ApproximateArrivalTimestamp": COMMIT_TS} for i, (key, data) in enumerate(records)]
    return kinesis_event(get_records, shard_id, ARN, "eu-west-2")


def load(name: str) -> dict[str, Any]:
    """A stored event JSON file of this folder."""
    data: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text())
    return data


class Context:
    """The LambdaContext attributes the handler's logger reads."""

    function_name = "totes-cdc-stream-processor"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-2:123456789012:function:totes-cdc-stream-processor"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000
