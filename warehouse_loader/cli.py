"""Subcommands: ``warehouse migrate`` and ``reconcile``."""

from __future__ import annotations

import argparse

from totes_cdc.runtime import add_dsn_argument


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    warehouse = subparsers.add_parser("warehouse", help="manage the warehouse schema")
    actions = warehouse.add_subparsers(dest="action", required=True, metavar="ACTION")
    migrate = actions.add_parser("migrate", help="create or upgrade the warehouse schema (idempotent)",
                                 description="Apply the versioned warehouse migrations not yet applied.")
    add_dsn_argument(migrate, "warehouse")
    migrate.set_defaults(func=_migrate)

    reconcile = subparsers.add_parser(
        "reconcile", help="check the warehouse against the source (exit 0 only when they match)",
        description="Compare every dimension with its derivation from the source's current rows, "
                    "every fact table's current-state table with the source table, and every fact "
                    "table's history with the change events in the raw zone (docs/reconcile.md). "
                    "Exit 0 when everything matches, 1 when there are differences.")
    add_dsn_argument(reconcile, "source")
    add_dsn_argument(reconcile, "warehouse")
    reconcile.add_argument("--json", action="store_true", help="print a machine-readable report")
    reconcile.add_argument("--no-history", action="store_true",
                           help="compare current state only (no raw zone at hand)")
    reconcile.set_defaults(func=_reconcile)


def _migrate(args: argparse.Namespace) -> int:
    from totes_cdc.db import connect, describe
    from warehouse_loader.migrate import migrate

    conn = connect(args.warehouse_dsn, "warehouse")
    try:
        applied = migrate(conn)
    finally:
        conn.close()
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "none (already up to date)"
    print(f"warehouse {describe(args.warehouse_dsn)}: migrations applied: {names}")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from warehouse_loader.reconcile import RawZone, reconcile, render

    report = reconcile(args.source_dsn, args.warehouse_dsn,
                       None if args.no_history else RawZone.from_settings())
    print(render(report, as_json=args.json))
    return 0 if report.ok else 1
