-- Every version of every source row the loader has applied, kept so that the warehouse does not
-- depend on the order files arrive in: a version's values are resolved as of its source position
-- (a delete, a truncate's tombstone and a TOAST-unchanged column take them from the versions
-- before it), and a version that arrives late re-resolves the versions after it.
--
-- One table per mirror table, same name, same columns, plus:
--   source_op         r, c, u, d as on the stream; t for a truncate's tombstone of the row, at the
--                     truncate's own position
--   source_commit_ts  the commit time of the change (null for the versions this migration carries
--                     over from the mirror)
--   unchanged         the columns the version does not carry (TOAST-unchanged); null for a delete or
--                     a tombstone, which carry none but the key
-- A later migration that adds a column to a mirror table adds it here too.

CREATE SCHEMA mirror_history;

DO $$
DECLARE
    t record;
    columns text;
    definitions text;
    keys text;
BEGIN
    FOR t IN SELECT c.oid, c.relname FROM pg_class c
             WHERE c.relnamespace = 'mirror'::regnamespace AND c.relkind = 'r'
               AND c.relname <> '_truncations' LOOP
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
               string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', '
                          ORDER BY a.attnum)
          INTO columns, definitions
          FROM pg_attribute a
         WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname NOT IN ('source_lsn', 'source_seq', 'is_deleted');
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) INTO keys
          FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = t.oid AND i.indisprimary;
        EXECUTE format('CREATE TABLE mirror_history.%I (%s, source_lsn bigint NOT NULL, '
                       'source_seq bigint NOT NULL, source_op char(1) NOT NULL, '
                       'source_commit_ts timestamptz, unchanged text[], '
                       'PRIMARY KEY (%s, source_lsn, source_seq))', t.relname, definitions, keys);
        -- The versions whose values depend on earlier ones, looked up when an earlier one arrives.
        EXECUTE format('CREATE INDEX ON mirror_history.%I (%s) '
                       'WHERE unchanged IS DISTINCT FROM ''{}''', t.relname, keys);
        -- What the mirror holds becomes the first known version of each row, carrying its values.
        EXECUTE format('INSERT INTO mirror_history.%I (%s, source_lsn, source_seq, source_op, unchanged) '
                       'SELECT %s, source_lsn, source_seq, CASE WHEN is_deleted THEN ''d'' ELSE ''c'' END, '
                       '''{}'' FROM mirror.%I', t.relname, columns, columns, t.relname);
    END LOOP;
END $$;
