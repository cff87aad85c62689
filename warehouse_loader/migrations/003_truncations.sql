-- Every truncate applied, per source table. Files of different shards arrive in any order, so a row
-- written before a truncate can arrive after it: applying a file re-applies the truncates newer
-- than its rows, which then get their tombstones as if they had been there in time.

CREATE TABLE mirror._truncations (
    source_table text NOT NULL,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    source_commit_ts timestamptz NOT NULL,
    PRIMARY KEY (source_table, source_lsn, source_seq)
);
