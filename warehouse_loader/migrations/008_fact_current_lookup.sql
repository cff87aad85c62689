-- The current rows of the ids a statement changed are read one id at a time through the fact
-- index on (id, source_lsn DESC, fact_version_seq(source_seq) DESC), the first entry of each id
-- its latest version: migration 007 left the join to the planner, which, before the fact table
-- had statistics (a bulk load, until autovacuum analyses it), read the whole history for a file
-- of ten rows.

CREATE OR REPLACE FUNCTION fact_current_refresh() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    id text := TG_ARGV[0];
    current regclass := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME || '_current')::regclass;
    history regclass := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME)::regclass;
    changed text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('DELETE FROM %s', current);
        RETURN NULL;
    END IF;
    -- The transition tables a statement of this kind has (see the triggers of migration 007).
    changed := CASE TG_OP
        WHEN 'INSERT' THEN format('SELECT DISTINCT %I FROM new_rows', id)
        WHEN 'DELETE' THEN format('SELECT DISTINCT %I FROM old_rows', id)
        ELSE format('SELECT %1$I FROM new_rows UNION SELECT %1$I FROM old_rows', id) END;
    EXECUTE format('DELETE FROM %1$s c USING (%2$s) k WHERE c.%3$I = k.%3$I', current, changed, id);
    -- Whole rows are copied: the current table has the fact table's columns, in its order.
    EXECUTE format('INSERT INTO %1$s SELECT latest.* FROM (%4$s) k CROSS JOIN LATERAL ('
                   '  SELECT * FROM %2$s f WHERE f.%3$I = k.%3$I'
                   '  ORDER BY f.source_lsn DESC, fact_version_seq(f.source_seq) DESC LIMIT 1) latest '
                   'WHERE NOT latest.is_deleted', current, history, id, changed);
    RETURN NULL;
END $$;
