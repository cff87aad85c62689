"""``totes-cdc lake``: SQL over the processed zone (DuckDB, locally) and the Glue catalog's columns."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from totes_cdc.runtime import add_state_dir_argument


def _query(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from totes_cdc.errors import ConfigError
    from totes_ops import lake

    local_dir = (args.stack.run_dir if args.stack is not None else Path(args.state_dir)) / "lake"
    try:
        copied = lake.sync(boto3.client("s3"), local_dir)
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"cannot read the processed zone: {exc}") from None
    if copied:
        print(f"totes-cdc: copied {copied:,} new processed files to {local_dir}", file=sys.stderr)
    result = lake.query(lake.connect(local_dir), args.sql)
    print(json.dumps(result.as_dicts(), indent=1, default=str) if args.json else result.render())
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from totes_ops import lake

    print(json.dumps(lake.catalog(), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("lake", help="query the lake (the processed zone) with SQL",
                                   description="The processed zone as tables, locally through "
                                               "DuckDB, in AWS through Athena (Glue catalog).")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    query = actions.add_parser(
        "query", help="run SQL (DuckDB) over a local copy of the processed zone",
        description="Copies the processed zone's new files from S3 (the running stack's emulator, "
                    "or wherever boto3 points) to <state-dir>/lake, then runs SQL over the tables "
                    "processed_<table> (schema totes_cdc_lake, as in the Glue catalog).")
    query.add_argument("sql", help='one SQL statement, e.g. "SELECT count(*) FROM processed_sales_order"')
    query.add_argument("--json", action="store_true", help="rows as a JSON array of objects")
    add_state_dir_argument(query)
    query.set_defaults(func=_query)
    catalog = actions.add_parser(
        "catalog", help="the Glue columns of the processed tables, as JSON",
        description="What infra/modules/lake/tables.json holds (Terraform declares the Glue tables "
                    "from it): totes-cdc lake catalog > infra/modules/lake/tables.json")
    catalog.set_defaults(func=_catalog)
