"""The lake as tables others can query: the processed zone (Parquet) and the raw zone (Avro).

In AWS the zones are declared in the Glue Data Catalog (``infra/modules/lake``) with partition
projection, so Athena reads them with no crawler: one table ``processed_<table>`` per source
table and one ``raw_change_events`` for the Avro change events, in the database
:data:`DATABASE`. The columns of the processed tables come from :func:`catalog`, which
``totes-cdc lake catalog`` writes to ``infra/modules/lake/tables.json`` for Terraform.

Locally, :func:`sync` copies the emulator's processed zone to a folder (object keys are immutable:
a key is copied once) and :func:`connect` opens DuckDB on it with the same database and table
names, so a query written for Athena runs unchanged on the local stack.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from totes_cdc import contract
from totes_cdc.contract import Column
from totes_cdc.errors import ConfigError
from totes_cdc.settings import settings

SCHEMA_FILE = "change_event.avsc"
# The change event's name in the Glue Schema Registry, whose registry is settings' deploy.name.
SCHEMA_NAME = "change_event"
TOTESYS_SCHEMA = resources.files("totes_ops.stack").joinpath("totesys_schema.sql")
# The partition column every processed and raw object key carries (``.../date=YYYY-MM-DD/``).
PARTITION = "date"

_TABLE = re.compile(r"CREATE TABLE public\.(\w+) \((.*?)\n\);", re.DOTALL)
_NAME = re.compile(r"\w+")  # a table name that is safe as a DuckDB identifier
_COLUMN = re.compile(r"\s*(\w+) (.+?)(?= PRIMARY| NOT| DEFAULT| REFERENCES| UNIQUE|,?$)")


def database() -> str:
    """The Glue database (and DuckDB schema) of the lake's tables."""
    name: str = settings()["deploy"]["name"]
    database = name.replace("-", "_") + "_lake"
    if not _NAME.fullmatch(database):  # it is written into DuckDB's statements: a plain name only
        raise ConfigError(f"settings deploy.name {name!r}: use letters, digits, '-' and '_'")
    return database


def avro_schema_text() -> str:
    """The change events' Avro schema as published (``totes_cdc/change_event.avsc``)."""
    return resources.files("totes_cdc").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def register_schema(glue: Any) -> None:
    """Register the change event's schema in the Glue Schema Registry, as Terraform does in AWS
    (the local stack calls this for its emulator). Idempotent."""
    registry = settings()["deploy"]["name"]
    with contextlib.suppress(glue.exceptions.AlreadyExistsException):
        glue.create_registry(RegistryName=registry, Description="Schemas of the change stream.")
    with contextlib.suppress(glue.exceptions.AlreadyExistsException):
        glue.create_schema(RegistryId={"RegistryName": registry}, SchemaName=SCHEMA_NAME,
                           DataFormat="AVRO", Compatibility="BACKWARD",
                           SchemaDefinition=avro_schema_text())


def source_columns() -> dict[str, tuple[Column, ...]]:
    """Each totesys table's columns with their ``format_type()`` names, from the schema file."""
    tables = {}
    for table, body in _TABLE.findall(TOTESYS_SCHEMA.read_text(encoding="utf-8")):
        columns = []
        for line in body.splitlines():
            match = _COLUMN.match(line)
            if match:
                name, pg_type = match.groups()
                pg_type = {"serial": "integer"}.get(pg_type, pg_type)
                columns.append(Column(name, pg_type.removeprefix("public."), "PRIMARY KEY" in line))
        tables[table] = tuple(columns)
    return tables


def hive_type(arrow: pa.DataType) -> str:
    """The Glue/Athena column type that reads an Arrow (Parquet) type."""
    if pa.types.is_decimal(arrow):
        return f"decimal({arrow.precision},{arrow.scale})"
    if pa.types.is_list(arrow):
        return f"array<{hive_type(arrow.value_type)}>"
    if pa.types.is_timestamp(arrow):
        return "timestamp"
    names = {pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint", pa.bool_(): "boolean",
             pa.float32(): "float", pa.float64(): "double", pa.date32(): "date", pa.string(): "string"}
    return names[arrow]


def avro_hive_type(avro: Any) -> str:
    """The Glue/Athena column type that reads an Avro type of the contract (Hive's AvroSerDe)."""
    if isinstance(avro, list):  # ["null", T]: every Hive column is nullable
        return avro_hive_type(next(t for t in avro if t != "null"))
    if isinstance(avro, str):
        return {"int": "int", "long": "bigint", "string": "string", "boolean": "boolean"}[avro]
    kind = avro["type"]
    if kind == "array":
        return f"array<{avro_hive_type(avro['items'])}>"
    if kind == "map":
        return f"map<string,{avro_hive_type(avro['values'])}>"
    if kind == "record":
        return "struct<" + ",".join(f"{f['name']}:{avro_hive_type(f['type'])}"
                                    for f in avro["fields"]) + ">"
    return {"enum": "string", "long": "bigint"}[kind]  # timestamp-micros is read as its long


def catalog() -> dict[str, Any]:
    """The Glue columns of ``raw_change_events`` (the Avro contract) and of each
    ``processed_<table>`` (the contract's metadata columns, then the row's typed columns)."""
    return {
        "raw_change_events": [{"name": f["name"], "type": avro_hive_type(f["type"])}
                              for f in contract.AVRO_SCHEMA["fields"]],
        "processed": {f"processed_{table}": [{"name": field.name, "type": hive_type(field.type)}
                                             for field in contract.parquet_schema(columns)]
                      for table, columns in sorted(source_columns().items())},
    }


def sync(s3: Any, local_dir: Path) -> int:
    """Copy the processed zone's objects that ``local_dir`` does not have yet; how many were copied."""
    cfg = settings()
    bucket, prefix = cfg["buckets"]["processed"], cfg["prefixes"]["processed"]
    copied = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            target = local_dir / item["Key"]
            if target.exists() or not item["Key"].endswith(cfg["suffixes"]["processed"]):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            s3.download_file(bucket, item["Key"], str(partial))
            partial.rename(target)  # whole files only: a query never sees half an object
            copied += 1
    return copied


def _table_dirs(local_dir: Path) -> Iterator[tuple[str, Path]]:
    zone = local_dir / settings()["prefixes"]["processed"]
    for folder in sorted(zone.glob("*.*")):
        table = folder.name.split(".", 1)[1]
        if _NAME.fullmatch(table) and any(folder.glob(f"{PARTITION}=*/*.parquet")):
            yield f"processed_{table}", folder


def connect(local_dir: Path) -> Any:
    """DuckDB with a view ``<database>.processed_<table>`` per table that has files in ``local_dir``.

    ``date`` is the partition column, a string as in the Glue tables.
    """
    try:
        import duckdb
    except ImportError:
        raise ConfigError("`lake query` needs DuckDB: pip install duckdb") from None
    conn = duckdb.connect()
    schema = database()
    conn.execute(f'CREATE SCHEMA "{schema}"')
    for name, folder in _table_dirs(local_dir):
        files = str(folder / f"{PARTITION}=*" / "*.parquet").replace("'", "''")
        # A view cannot take parameters: names are \w+ and the path's quotes are doubled.
        source = (f"read_parquet('{files}', hive_partitioning = true, "
                  f"hive_types = {{'{PARTITION}': VARCHAR}}, union_by_name = true)")
        conn.execute(f'CREATE VIEW "{schema}"."{name}" AS SELECT * FROM {source}')  # nosec B608
    conn.execute(f'SET schema = \'{schema}\'')
    return conn


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def render(self) -> str:
        """Aligned text columns with a header, then the row count."""
        cells = [self.columns, *[["NULL" if v is None else str(v) for v in row] for row in self.rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"({len(self.rows)} row{'' if len(self.rows) == 1 else 's'})")
        return "\n".join(lines)


def query(conn: Any, text: str) -> Result:
    """Run one SQL statement; a mistake in it is a ConfigError (the user's to fix)."""
    import duckdb

    try:
        cursor = conn.execute(text)
    except duckdb.Error as exc:
        # DuckDB's first paragraph, on one line: the error and its hint ("Did you mean ...")
        first_paragraph = " ".join(str(exc).split("\n\n")[0].split())
        raise ConfigError(f"query failed: {first_paragraph}") from None
    columns = [d[0] for d in cursor.description or []]
    return Result(columns, cursor.fetchall() if columns else [])
