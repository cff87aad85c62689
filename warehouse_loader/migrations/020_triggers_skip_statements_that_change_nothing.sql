-- A statement on a fact table that changes no row leaves the current tables and the dashboard's
-- sums alone, and takes no lock for them. The loader runs its corrections on every file (append
-- the missing versions, fix the values that differ, drop the tombstones no longer called for)
-- and most change nothing; each still fired the statement triggers, and the dashboard trigger's
-- lock (one transaction at a time, to its commit: migration 010) was then held by every file of
-- sales orders from that statement on. A long one (a resync's 100,000 reads of unchanged rows)
-- made every file of the stream wait for its commit.

-- Migration 008's function, returning first when the statement changed no row.
CREATE OR REPLACE FUNCTION fact_current_refresh() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    id text := TG_ARGV[0];
    current regclass := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME || '_current')::regclass;
    history regclass := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME)::regclass;
    changed text;
    any_row boolean;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('DELETE FROM %s', current);
        RETURN NULL;
    END IF;
    -- An UPDATE's two transition tables have as many rows as each other.
    EXECUTE CASE TG_OP WHEN 'DELETE' THEN 'SELECT EXISTS (SELECT 1 FROM old_rows)'
                       ELSE 'SELECT EXISTS (SELECT 1 FROM new_rows)' END INTO any_row;
    IF NOT any_row THEN
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

-- Migration 010's function, returning first (before its lock) when the statement changed no row.
CREATE OR REPLACE FUNCTION dashboard_sales_refresh() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    changes text;
    any_row boolean;
BEGIN
    IF TG_OP <> 'TRUNCATE' THEN
        EXECUTE CASE TG_OP WHEN 'DELETE' THEN 'SELECT EXISTS (SELECT 1 FROM old_rows)'
                           ELSE 'SELECT EXISTS (SELECT 1 FROM new_rows)' END INTO any_row;
        IF NOT any_row THEN
            RETURN NULL;
        END IF;
    END IF;
    -- Files applied at the same time change the same summary rows (today's, in one currency)
    -- over several statements each: one transaction at a time, from here to its commit, so two
    -- can never wait for each other's rows. An arbitrary project constant ("totes_ds").
    PERFORM pg_advisory_xact_lock(8390052609890673779);
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM dashboard_sales;
        RETURN NULL;
    END IF;
    changes := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT 1 AS sign, * FROM new_rows'
        WHEN 'DELETE' THEN 'SELECT -1 AS sign, * FROM old_rows'
        ELSE 'SELECT 1 AS sign, * FROM new_rows UNION ALL SELECT -1, * FROM old_rows' END;
    EXECUTE 'INSERT INTO dashboard_sales AS s SELECT * FROM (' || dashboard_sales_rows(changes)
        || ') d ORDER BY 1, 2, 3, 4, 5 '
        'ON CONFLICT (resolution, grain, bucket, currency_id, member_id) DO UPDATE '
        'SET orders = s.orders + EXCLUDED.orders, '
        'units = s.units + EXCLUDED.units, value = s.value + EXCLUDED.value';
    DELETE FROM dashboard_sales WHERE orders = 0;
    RETURN NULL;
END $$;
