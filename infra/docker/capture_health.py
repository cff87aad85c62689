"""Container health check of the capture task: healthy while the replication slot is being read.

Connects as the capture process does ($TOTES_CDC_SOURCE_DSN plus libpq's PG* variables, which ECS
injects from the source secret) and exits 0 when the slot named in settings.json is active, 1
otherwise, with the reason on stderr. ECS replaces a task that stays unhealthy.
"""

from __future__ import annotations

import os
import sys

from totes_cdc.db import connect
from totes_cdc.errors import ConfigError
from totes_cdc.settings import settings


def slot_problem(dsn: str, slot: str) -> str | None:
    """Why ``slot`` is not being read, or None when it is."""
    try:
        conn = connect(dsn, "source", connect_timeout=5)
    except ConfigError as exc:
        return str(exc)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        return f"replication slot {slot} does not exist"
    return None if row[0] else f"replication slot {slot} has no reader"


def main() -> int:
    problem = slot_problem(os.environ.get("TOTES_CDC_SOURCE_DSN", ""), settings()["capture"]["slot"])
    if problem:
        print(f"capture unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
