"""Versioned warehouse migrations: ``migrations/NNN_name.sql``, each applied once, in order.

``schema_migrations`` records what is applied; each migration runs in its own transaction together
with its bookkeeping row, so a crash leaves it either fully applied or not at all. A session
advisory lock serialises concurrent runners (``totes-cdc load`` runs ``migrate`` at every start).
The Lambda loader does not migrate (a migration of a large warehouse may outlast a Lambda call):
it refuses to apply files while :func:`pending` names any, and SQS keeps them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from totes_cdc.db import translated

log = logging.getLogger(__name__)

# pg_advisory_lock key of the migration runner (an arbitrary constant, unique to this project).
MIGRATION_LOCK_KEY = 0x746F7465735F6D67
_NAME = re.compile(r"(\d{3})_(\w+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The packaged migrations, by version."""
    found = []
    for entry in resources.files("warehouse_loader.migrations").iterdir():
        if m := _NAME.fullmatch(entry.name):
            found.append(Migration(int(m[1]), m[2], entry.read_text("utf-8")))
    return sorted(found, key=lambda mig: mig.version)


def pending(conn: Any) -> list[Migration]:
    """The packaged migrations the warehouse has not applied (every one before the first run).
    Ends the transaction it reads in."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
        missing = _not_applied(cur) if cur.fetchone()[0] else available()
    conn.rollback()
    return missing


def _not_applied(cur: Any) -> list[Migration]:
    """The packaged migrations ``schema_migrations`` does not record."""
    cur.execute("SELECT version FROM public.schema_migrations")
    done = {row[0] for row in cur.fetchall()}
    return [migration for migration in available() if migration.version not in done]


def migrate(conn: Any) -> list[Migration]:
    """Bring the warehouse schema up to date; returns the migrations applied now (maybe none).

    A statement the warehouse refuses is a DatabaseError (or DatabaseUnavailable: its session
    ended) naming the migration."""
    conn.autocommit = False
    applied_now = []
    with translated("warehouse migrate"), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.commit()
        try:
            cur.execute("CREATE TABLE IF NOT EXISTS public.schema_migrations ("
                        "version integer PRIMARY KEY, name text NOT NULL, "
                        "applied_at timestamptz NOT NULL DEFAULT now())")
            missing = _not_applied(cur)
            conn.commit()
            for migration in missing:
                with translated(f"warehouse migration {migration.version:03d}_{migration.name}"):
                    cur.execute(migration.sql)
                cur.execute("INSERT INTO public.schema_migrations (version, name) VALUES (%s, %s)",
                            (migration.version, migration.name))
                conn.commit()
                log.info("applied warehouse migration %03d_%s", migration.version, migration.name)
                applied_now.append(migration)
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        finally:
            if not conn.closed:  # a session that ended took its lock with it
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
                conn.commit()
    return applied_now
