-- The streamed rows of each fact table (every op but the snapshot's 'r') by loaded_at. The status
-- reading (totes_ops/status.py), a new connection every 5 s from the dashboard, takes its latency
-- percentiles and the newest change's age from the newest streamed rows. Through migration 001's
-- loaded_at index it also walked every snapshot row loaded after them, one heap fetch each: during
-- an initial load or a resync, hundreds of thousands of rows a reading. Snapshot rows, which come
-- in bulk, add no entry here.
CREATE INDEX fact_sales_order_streamed_loaded_at ON fact_sales_order (loaded_at) WHERE source_op <> 'r';
CREATE INDEX fact_purchase_order_streamed_loaded_at ON fact_purchase_order (loaded_at) WHERE source_op <> 'r';
CREATE INDEX fact_payment_streamed_loaded_at ON fact_payment (loaded_at) WHERE source_op <> 'r';
