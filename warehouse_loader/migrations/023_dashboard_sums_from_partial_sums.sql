-- The dashboard's sums of a set of current rows in two passes: the orders are summed once per
-- (currency, day) and hour or member (location, design, staff), four groupings where migration
-- 022 hashed every order into twelve, and the twelve sets are then summed from those partial sums,
-- a few thousand rows for 100,000 orders. The same rows and values as migration 022's (sums of
-- sums: counts, units and values are integers and exact numerics; an hour lies in one day and a
-- day in one month). 100,000 orders of an initial load: the query 148 ms against 352, the
-- trigger about 100 ms less (BENCHMARKS.md, bulk load).
-- PART is GROUPING(hour, location, design, staff) of the first pass: 7 for the hours, 11 for the
-- locations, 13 for the designs, 14 for the staff; SETS as in migration 022.
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
        'FROM (SELECT currency_id, part, hour, day, month, location, design, staff, '
        '    GROUPING(hour, day, month, location, design, staff) AS sets, '
        '    sum(orders)::bigint AS orders, coalesce(sum(units), 0)::bigint AS units, '
        '    coalesce(sum(value), 0) AS value '
        '  FROM (SELECT *, date_trunc(''month'', day) AS month FROM ('
        '    SELECT currency_id, hour, day, location, design, staff, '
        '      GROUPING(hour, location, design, staff) AS part, sum(sign) AS orders, '
        '      sum(sign * units_sold) AS units, sum(sign * units_sold * unit_price) AS value '
        '    FROM (SELECT sign, currency_id, units_sold, unit_price, '
        '        date_trunc(''hour'', at) AS hour, date_trunc(''day'', at) AS day, '
        '        agreed_delivery_location_id AS location, design_id AS design, '
        '        sales_staff_id AS staff '
        '      FROM (SELECT *, created_date + coalesce(created_time, time ''00:00'') AS at '
        '        FROM (%s) c) r) r '
        '    GROUP BY currency_id, GROUPING SETS ((day, hour), (day, location), (day, design), '
        '      (day, staff))) p) p '
        '  GROUP BY currency_id, part, GROUPING SETS ((hour), (day), (month), (day, location), '
        '    (month, location), (day, design), (month, design), (day, staff), (month, staff), '
        '    (location), (design), (staff))) a '
        'JOIN (VALUES (7, 31, ''hour'', ''time''), (7, 47, ''day'', ''time''), '
        '  (7, 55, ''month'', ''time''), (11, 43, ''day'', ''location''), '
        '  (11, 51, ''month'', ''location''), (11, 59, ''total'', ''location''), '
        '  (13, 45, ''day'', ''design''), (13, 53, ''month'', ''design''), '
        '  (13, 61, ''total'', ''design''), (14, 46, ''day'', ''staff''), '
        '  (14, 54, ''month'', ''staff''), (14, 62, ''total'', ''staff'')'
        ') m (part, sets, resolution, grain) USING (part, sets)', changes) $$;
