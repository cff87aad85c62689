-- A snapshot read of a row new to the warehouse is kept in the row's mirror row alone until a
-- later file concerns the row, which files it in the history first (warehouse_loader.apply:
-- lock_keys_sql, file_pending_reads_sql): an initial load writes each row once fewer. While the
-- history may lack the mirror row's version, pending_read_ts holds that read's commit time (its
-- position is the row's, its op r, it carries every column); otherwise it is null.
-- A 1,000,000-row snapshot load (2 loaders, 10 files and the marker) took 1.21 and 1.09 times as
-- long with every read written to the history too (median pair ratios of 5 and 6 alternated
-- pairs on a noisy machine; one loader: 1.02 and 1.11, 4 pairs each).
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'mirror'::regnamespace AND c.relkind = 'r'
               AND c.relname NOT LIKE '\_%' LOOP
        EXECUTE format('ALTER TABLE mirror.%I ADD COLUMN pending_read_ts timestamptz', t.relname);
    END LOOP;
END $$;
