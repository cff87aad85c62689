-- The latency waterfall: one row per processed file, written by the loader in the file's own
-- transaction. The stage times come from the file's key-value metadata (stream processor) and the
-- loader's clock; the row stages (from each row's source commit) are percentiles over the file's
-- streamed rows (snapshot rows have no meaningful commit time), the others one value per file.
CREATE TABLE pipeline_latency (
    file_key text PRIMARY KEY,
    source_table text NOT NULL,
    events integer NOT NULL,
    streamed_events integer NOT NULL,
    kinesis_accepted timestamptz,  -- the file's batch's last Kinesis record accepted
    processor_read timestamptz,
    file_written timestamptz,  -- the processed file complete, just before its put
    loaded_at timestamptz NOT NULL,  -- the loader's last statement before its commit
    commit_to_kinesis_p50_ms double precision,
    commit_to_kinesis_p99_ms double precision,
    kinesis_to_processor_ms double precision,
    processor_to_file_ms double precision,
    file_to_warehouse_ms double precision,
    end_to_end_p50_ms double precision,
    end_to_end_p99_ms double precision
);

-- status and the dashboard read the files loaded in the last minutes.
CREATE INDEX pipeline_latency_loaded_at ON pipeline_latency (loaded_at);
