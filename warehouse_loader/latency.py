"""The latency waterfall's warehouse side: one ``pipeline_latency`` row per processed file.

Written in the file's own transaction (its last statement before the commit), so a row exists
exactly when the file's changes do, and a file applied again keeps its first row. The stage times
come from the file's metadata (totes_cdc.stages); the loader's time is the warehouse's clock
(``clock_timestamp()``, the clock of the facts' ``loaded_at``). The two stages that start at the
source commit are per row: their p50 and p99 over the file's streamed rows (a snapshot row's
commit time is the snapshot's, not its change's). Cost: one statement per file.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg2 import sql

from totes_cdc.contract import OP_SNAPSHOT
from totes_cdc.stages import METADATA_KEY, STAGES

# p_q(t - commit) = t - p_(1-q)(commit): the row stages need only two percentiles of the commits.
_INSERT = """
INSERT INTO public.pipeline_latency (
    file_key, source_table, events, streamed_events, capture_read, kinesis_accepted, processor_read,
    file_written, loaded_at, commit_to_capture_p50_ms, commit_to_capture_p99_ms,
    capture_to_kinesis_ms, kinesis_to_processor_ms, processor_to_file_ms, file_to_warehouse_ms,
    end_to_end_p50_ms, end_to_end_p99_ms)
SELECT %(key)s, %(table)s, %(events)s, %(streamed)s, to_timestamp(%(captured)s::float8),
    to_timestamp(%(accepted)s::float8), to_timestamp(%(read)s::float8),
    to_timestamp(%(written)s::float8), to_timestamp(t.now),
    (%(captured)s::float8 - %(c50)s::float8) * 1000, (%(captured)s::float8 - %(c01)s::float8) * 1000,
    (%(accepted)s::float8 - %(captured)s::float8) * 1000,
    (%(read)s::float8 - %(accepted)s::float8) * 1000, (%(written)s::float8 - %(read)s::float8) * 1000,
    (t.now - %(written)s::float8) * 1000, (t.now - %(c50)s::float8) * 1000,
    (t.now - %(c01)s::float8) * 1000
FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS now) t
ON CONFLICT (file_key) DO NOTHING
RETURNING {}
"""
_METRICS = [stage for stage in STAGES if stage.metric]
INSERT_SQL = sql.SQL(_INSERT).format(
    sql.SQL(", ").join(sql.Identifier(stage.p50_column) for stage in _METRICS))


def streamed_commits(table: pa.Table) -> pa.ChunkedArray:
    """The commit times (epoch s) of the file's streamed rows (snapshot rows left out)."""
    commits = pc.filter(table["_commit_ts"], pc.not_equal(table["_op"], OP_SNAPSHOT))
    return pc.divide(commits.cast(pa.int64()).cast(pa.float64()), 1e6)  # micros: exact in a double


def record(cur: Any, key: str, name: str, table: pa.Table) -> tuple[tuple[str, float], ...]:
    """Write file ``key``'s row (source table ``name``, rows ``table``); the stage metrics to
    publish, (metric name, ms): none when the file carries no stage times or was recorded before."""
    carried = (table.schema.metadata or {}).get(METADATA_KEY)
    if carried is None:
        return ()
    times = json.loads(carried)
    commits = streamed_commits(table)
    # Linear interpolation between the closest ranks, as percentile_cont and numpy.
    c50, c01 = pc.quantile(commits, q=[0.5, 0.01]).to_pylist() if len(commits) else (None, None)
    cur.execute(INSERT_SQL, {
        "key": key, "table": name, "events": table.num_rows, "streamed": len(commits),
        "captured": times.get("capture_read"), "accepted": times.get("kinesis_accepted"),
        "read": times.get("processor_read"), "written": times.get("file_written"), "c50": c50,
        "c01": c01})
    row = cur.fetchone()
    if row is None:
        return ()
    return tuple((stage.metric, float(value)) for stage, value in zip(_METRICS, row, strict=True)
                 if stage.metric and value is not None)
