-- The triggers' share of a bulk load. A file of 100,000 snapshot reads spent most of its time in
-- the fact table's triggers: the dashboard's sums (0.9 s) and the current table's lookup of each
-- id's latest version (0.5 s), against 0.8 s for the fact insert itself (BENCHMARKS.md, bulk load).

-- The summary rows of a set of current rows in one pass over them: one hashed grouping set per
-- (resolution, grain), each order's value computed once (migration 010's query made twelve copies
-- of every order, each multiplied and summed on its own). Same columns and rows as before.
-- GROUPING(hour, day, month, location, design, staff) has a bit set for each column a set leaves
-- out, the first column the highest bit.
CREATE OR REPLACE FUNCTION dashboard_sales_rows(changes text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT format(
        'SELECT m.resolution, m.grain, '
        '  CASE m.resolution WHEN ''hour'' THEN a.hour WHEN ''day'' THEN a.day '
        '    WHEN ''month'' THEN a.month END, '
        '  a.currency_id, '
        '  CASE m.grain WHEN ''location'' THEN a.location WHEN ''design'' THEN a.design '
        '    WHEN ''staff'' THEN a.staff END, '
        '  a.orders, a.units, a.value '
        'FROM (SELECT currency_id, hour, day, month, location, design, staff, '
        '    GROUPING(hour, day, month, location, design, staff) AS sets, '
        '    sum(sign)::bigint AS orders, coalesce(sum(sign * units_sold), 0)::bigint AS units, '
        '    coalesce(sum(value), 0) AS value '
        '  FROM (SELECT sign, currency_id, units_sold, sign * units_sold * unit_price AS value, '
        '      date_trunc(''hour'', at) AS hour, date_trunc(''day'', at) AS day, '
        '      date_trunc(''month'', at) AS month, agreed_delivery_location_id AS location, '
        '      design_id AS design, sales_staff_id AS staff '
        '    FROM (SELECT *, created_date + coalesce(created_time, time ''00:00'') AS at '
        '      FROM (%s) c) r) r '
        '  GROUP BY currency_id, GROUPING SETS ((hour), (day), (month), (day, location), '
        '    (month, location), (day, design), (month, design), (day, staff), (month, staff), '
        '    (location), (design), (staff))) a '
        'JOIN (VALUES (31, ''hour'', ''time''), (47, ''day'', ''time''), (55, ''month'', ''time''), '
        '  (43, ''day'', ''location''), (51, ''month'', ''location''), (45, ''day'', ''design''), '
        '  (53, ''month'', ''design''), (46, ''day'', ''staff''), (54, ''month'', ''staff''), '
        '  (59, ''total'', ''location''), (61, ''total'', ''design''), (62, ''total'', ''staff'')'
        ') m (sets, resolution, grain) USING (sets)', changes) $$;

-- Hashed, the twelve sets need about 20 MB for 100,000 orders; in the default 4 MB the planner
-- sorts the orders six times instead (the first sort on disk), about 1.7 times as slow (200 ms
-- against 120). Only while the dashboard's functions run.
ALTER FUNCTION dashboard_sales_refresh() SET work_mem = '64MB';
ALTER FUNCTION dashboard_sales_rebuild() SET work_mem = '64MB';

-- Migration 020's function, with a short way for the loader's bulk path: a statement inserting
-- only the first versions of their ids (the loader says so with the transaction-local setting
-- totes_cdc.first_versions = 'on', for the facts of a snapshot file's keys new to the warehouse,
-- which have no other version anywhere: warehouse_loader/apply.py, lock_keys_sql) makes its live
-- rows current as they are, with no removal and no lookup of each id's latest version.
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
    IF TG_OP = 'INSERT' AND current_setting('totes_cdc.first_versions', true) = 'on' THEN
        EXECUTE format('INSERT INTO %s SELECT * FROM new_rows WHERE NOT is_deleted', current);
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
