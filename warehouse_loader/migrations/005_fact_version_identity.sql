-- A fact version is identified by its source row and position. Capture sends an update that moves
-- a row's key out of a snapshot range it reads again as a delete of the old key at the update's own
-- position, so versions of two rows can share (source_lsn, source_seq): both are facts.

ALTER TABLE fact_sales_order DROP CONSTRAINT fact_sales_order_source_lsn_source_seq_key,
    ADD UNIQUE (sales_order_id, source_lsn, source_seq);
ALTER TABLE fact_purchase_order DROP CONSTRAINT fact_purchase_order_source_lsn_source_seq_key,
    ADD UNIQUE (purchase_order_id, source_lsn, source_seq);
ALTER TABLE fact_payment DROP CONSTRAINT fact_payment_source_lsn_source_seq_key,
    ADD UNIQUE (payment_id, source_lsn, source_seq);
