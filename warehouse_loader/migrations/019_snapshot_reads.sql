-- Snapshot reads written straight to the lake (capture's lake snapshot and resync): the files of a
-- table's read are applied in any order, by several loaders, and a completion marker lists them.
-- On the marker the loader applies whichever listed file is not in _snapshot_files yet, records
-- the read in _ghost_sweeps and tombstones the rows the read did not see (ghost rows: deleted at
-- the source while nothing was listening); a file of that table applied later recomputes the
-- ghost tombstones of its rows (a late version below a read changes what the read missed).

CREATE TABLE mirror._snapshot_files (
    file_key text PRIMARY KEY,
    source_table text NOT NULL,
    commit_ts timestamptz,  -- the snapshot's time (its reads'); null for a file without rows
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE mirror._ghost_sweeps (
    source_table text NOT NULL,
    source_lsn bigint NOT NULL,  -- the read's lowest position: ghost tombstones at (lsn, 0)
    commit_ts timestamptz NOT NULL,  -- the snapshot's time: the ghost tombstones' commit time
    swept_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source_table, source_lsn)
);
