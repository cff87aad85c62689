-- The waterfall's "capture read" stage: source commit -> Kinesis splits at capture's read of the
-- file's batch (its last event), carried from capture in the Kinesis records (totes_cdc.kpl).
-- Files without it (written before, or from records capture did not stamp) leave it NULL.
ALTER TABLE pipeline_latency
    DROP COLUMN commit_to_kinesis_p50_ms,
    DROP COLUMN commit_to_kinesis_p99_ms,
    ADD COLUMN capture_read timestamptz,  -- capture read the file's batch's last event
    ADD COLUMN commit_to_capture_p50_ms double precision,
    ADD COLUMN commit_to_capture_p99_ms double precision,
    ADD COLUMN capture_to_kinesis_ms double precision;
