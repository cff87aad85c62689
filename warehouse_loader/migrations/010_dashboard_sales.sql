-- The dashboard's sales figures, kept summed as the current orders change, so a refresh reads
-- summary rows (as many as time buckets x dimension members), however many orders and versions
-- the warehouse holds (the grouped query over fact_sales_order_current read every current order:
-- seconds with millions).
--
-- One row per grain, time resolution, bucket, currency and member: orders, units and value of the
-- current orders in it. Grains are what the dashboard groups by: 'time' (no member), 'location',
-- 'design' and 'staff' (the member is that id). Members are dimension ids, not names: the
-- dimensions are type 1 and a rename must show at once, so names are joined when read. Buckets
-- are the order's created date and time truncated to the hour ('time' only), the day and the
-- month, and for the members also all time in one ('total', no bucket): a date range reads whole
-- months plus the days of its first, partial month; all time reads the time grain's months and
-- the members' totals. One partition per resolution, so a read of one does not pick its rows
-- out of another's.
CREATE TABLE dashboard_sales (
    resolution text NOT NULL,
    grain text NOT NULL CHECK (grain IN ('time', 'location', 'design', 'staff')),
    bucket timestamp,  -- null for 'total' rows and for orders without a created date
    currency_id integer,
    member_id integer,
    orders bigint NOT NULL,
    units bigint NOT NULL,
    value numeric NOT NULL,
    CONSTRAINT dashboard_sales_key UNIQUE NULLS NOT DISTINCT
        (resolution, grain, bucket, currency_id, member_id)
) PARTITION BY LIST (resolution);
CREATE TABLE dashboard_sales_hour PARTITION OF dashboard_sales FOR VALUES IN ('hour');
CREATE TABLE dashboard_sales_day PARTITION OF dashboard_sales FOR VALUES IN ('day');
CREATE TABLE dashboard_sales_month PARTITION OF dashboard_sales FOR VALUES IN ('month');
CREATE TABLE dashboard_sales_total PARTITION OF dashboard_sales FOR VALUES IN ('total');

-- Emptied buckets are removed at once; this finds them without a scan.
CREATE INDEX dashboard_sales_empty ON dashboard_sales (grain) WHERE orders = 0;

-- The summary rows of a set of current rows, each counted with its sign (+1 added, -1 removed).
CREATE FUNCTION dashboard_sales_rows(changes text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT format(
        'SELECT g.resolution, g.grain, g.bucket, r.currency_id, g.member_id, '
        '  sum(r.sign)::bigint AS orders, coalesce(sum(r.sign * r.units_sold), 0)::bigint AS units, '
        '  coalesce(sum(r.sign * r.units_sold * r.unit_price), 0) AS value '
        'FROM (SELECT *, created_date + coalesce(created_time, time ''00:00'') AS at FROM (%s) c) r '
        'CROSS JOIN LATERAL (VALUES '
        '  (''hour'', ''time'', date_trunc(''hour'', r.at), NULL::integer), '
        '  (''day'', ''time'', date_trunc(''day'', r.at), NULL), '
        '  (''month'', ''time'', date_trunc(''month'', r.at), NULL), '
        '  (''day'', ''location'', date_trunc(''day'', r.at), r.agreed_delivery_location_id), '
        '  (''month'', ''location'', date_trunc(''month'', r.at), r.agreed_delivery_location_id), '
        '  (''day'', ''design'', date_trunc(''day'', r.at), r.design_id), '
        '  (''month'', ''design'', date_trunc(''month'', r.at), r.design_id), '
        '  (''day'', ''staff'', date_trunc(''day'', r.at), r.sales_staff_id), '
        '  (''month'', ''staff'', date_trunc(''month'', r.at), r.sales_staff_id), '
        '  (''total'', ''location'', NULL, r.agreed_delivery_location_id), '
        '  (''total'', ''design'', NULL, r.design_id), '
        '  (''total'', ''staff'', NULL, r.sales_staff_id)'
        ') g (resolution, grain, bucket, member_id) '
        'GROUP BY 1, 2, 3, 4, 5', changes) $$;

-- Statement triggers on fact_sales_order_current (itself kept by the fact table's triggers, in
-- the same transaction) add what a statement inserted and subtract what it deleted.
CREATE FUNCTION dashboard_sales_refresh() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    changes text;
BEGIN
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

-- One trigger per event: a trigger with transition tables fires on one event only.
CREATE TRIGGER dashboard_sales_after_insert AFTER INSERT ON fact_sales_order_current
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_sales_refresh();
CREATE TRIGGER dashboard_sales_after_update AFTER UPDATE ON fact_sales_order_current
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_sales_refresh();
CREATE TRIGGER dashboard_sales_after_delete AFTER DELETE ON fact_sales_order_current
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_sales_refresh();
CREATE TRIGGER dashboard_sales_after_truncate AFTER TRUNCATE ON fact_sales_order_current
    FOR EACH STATEMENT EXECUTE FUNCTION dashboard_sales_refresh();

-- Recompute every summary row from the current orders: here for the orders already current when
-- the warehouse is migrated, and after a bulk load written with the triggers off.
CREATE FUNCTION dashboard_sales_rebuild() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(8390052609890673779);
    DELETE FROM dashboard_sales;
    -- In key order: a date range of one grain is then read from neighbouring pages.
    EXECUTE 'INSERT INTO dashboard_sales SELECT * FROM ('
        || dashboard_sales_rows('SELECT 1 AS sign, * FROM fact_sales_order_current')
        || ') d ORDER BY 1, 2, 3, 4, 5';
END $$;

SELECT dashboard_sales_rebuild();
