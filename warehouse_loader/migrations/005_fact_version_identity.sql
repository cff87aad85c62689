-- A fact version is identified by its source row and position, so versions of two rows that share
-- (source_lsn, source_seq) are both kept (a key change was once to be sent as a delete of the old
-- key at the position of the update; positions are unique per table now, and the facts do not
-- depend on it).

ALTER TABLE fact_sales_order DROP CONSTRAINT fact_sales_order_source_lsn_source_seq_key,
    ADD UNIQUE (sales_order_id, source_lsn, source_seq);
ALTER TABLE fact_purchase_order DROP CONSTRAINT fact_purchase_order_source_lsn_source_seq_key,
    ADD UNIQUE (purchase_order_id, source_lsn, source_seq);
ALTER TABLE fact_payment DROP CONSTRAINT fact_payment_source_lsn_source_seq_key,
    ADD UNIQUE (payment_id, source_lsn, source_seq);
