-- The current state of each fact becomes a table kept up to date with the fact history, so a reader
-- pays for the current rows only, not for every version ever loaded (the views were DISTINCT ON
-- over the whole history). Same names and columns as the views; one row per source id, the latest
-- version of that id unless it is a deletion.
--
-- Statement triggers on each fact table recompute the current row of exactly the ids a statement
-- inserted, updated or deleted, in that statement's transaction: whatever writes the history (the
-- loader, out of order and concurrently; a repair by hand; a bulk copy) leaves the current table
-- what the history derives, and the loader's per-row locks serialise the recomputes of one id.

CREATE FUNCTION fact_current_refresh() RETURNS trigger
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
    -- The transition tables a statement of this kind has (see the triggers below).
    changed := CASE TG_OP
        WHEN 'INSERT' THEN format('SELECT %I FROM new_rows', id)
        WHEN 'DELETE' THEN format('SELECT %I FROM old_rows', id)
        ELSE format('SELECT %1$I FROM new_rows UNION SELECT %1$I FROM old_rows', id) END;
    EXECUTE format('DELETE FROM %s WHERE %I IN (%s)', current, id, changed);
    -- The order of the fact index on (id, source_lsn DESC, fact_version_seq(source_seq) DESC).
    -- Whole rows are copied: the current table has the fact table's columns, in its order.
    EXECUTE format('INSERT INTO %1$s SELECT * FROM ('
                   '  SELECT DISTINCT ON (%3$I) * FROM %2$s WHERE %3$I IN (%4$s)'
                   '  ORDER BY %3$I, source_lsn DESC, fact_version_seq(source_seq) DESC) latest '
                   'WHERE NOT is_deleted', current, history, id, changed);
    RETURN NULL;
END $$;

DROP VIEW fact_sales_order_current, fact_purchase_order_current, fact_payment_current;

CREATE TABLE fact_sales_order_current (LIKE fact_sales_order, PRIMARY KEY (sales_order_id));
CREATE TABLE fact_purchase_order_current (LIKE fact_purchase_order, PRIMARY KEY (purchase_order_id));
CREATE TABLE fact_payment_current (LIKE fact_payment, PRIMARY KEY (payment_id));

INSERT INTO fact_sales_order_current SELECT * FROM (
    SELECT DISTINCT ON (sales_order_id) * FROM fact_sales_order
    ORDER BY sales_order_id, source_lsn DESC, fact_version_seq(source_seq) DESC
) latest WHERE NOT is_deleted;
INSERT INTO fact_purchase_order_current SELECT * FROM (
    SELECT DISTINCT ON (purchase_order_id) * FROM fact_purchase_order
    ORDER BY purchase_order_id, source_lsn DESC, fact_version_seq(source_seq) DESC
) latest WHERE NOT is_deleted;
INSERT INTO fact_payment_current SELECT * FROM (
    SELECT DISTINCT ON (payment_id) * FROM fact_payment
    ORDER BY payment_id, source_lsn DESC, fact_version_seq(source_seq) DESC
) latest WHERE NOT is_deleted;

-- One trigger per event: a trigger with transition tables fires on one event only.
CREATE TRIGGER current_after_insert AFTER INSERT ON fact_sales_order
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('sales_order_id');
CREATE TRIGGER current_after_update AFTER UPDATE ON fact_sales_order
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('sales_order_id');
CREATE TRIGGER current_after_delete AFTER DELETE ON fact_sales_order
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('sales_order_id');
CREATE TRIGGER current_after_truncate AFTER TRUNCATE ON fact_sales_order
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('sales_order_id');

CREATE TRIGGER current_after_insert AFTER INSERT ON fact_purchase_order
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('purchase_order_id');
CREATE TRIGGER current_after_update AFTER UPDATE ON fact_purchase_order
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('purchase_order_id');
CREATE TRIGGER current_after_delete AFTER DELETE ON fact_purchase_order
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('purchase_order_id');
CREATE TRIGGER current_after_truncate AFTER TRUNCATE ON fact_purchase_order
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('purchase_order_id');

CREATE TRIGGER current_after_insert AFTER INSERT ON fact_payment
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('payment_id');
CREATE TRIGGER current_after_update AFTER UPDATE ON fact_payment
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('payment_id');
CREATE TRIGGER current_after_delete AFTER DELETE ON fact_payment
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('payment_id');
CREATE TRIGGER current_after_truncate AFTER TRUNCATE ON fact_payment
    FOR EACH STATEMENT EXECUTE FUNCTION fact_current_refresh('payment_id');
