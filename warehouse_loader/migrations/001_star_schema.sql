-- The star schema of docs/warehouse.md: type 1 dimensions, append-only facts, current-state views.
-- Facts carry their source position; UNIQUE (source_lsn, source_seq) makes a replayed file append
-- nothing. Facts have no foreign keys to dimensions: a fact may arrive before its dimension row.

CREATE TABLE dim_date (
    date_id date PRIMARY KEY,
    year integer NOT NULL,
    month integer NOT NULL,
    day integer NOT NULL,
    day_of_week integer NOT NULL,      -- ISO: Monday = 1 ... Sunday = 7
    day_name text NOT NULL,
    month_name text NOT NULL,
    quarter integer NOT NULL
);

CREATE TABLE dim_design (
    design_id integer PRIMARY KEY,
    design_name text,
    file_location text,
    file_name text
);

CREATE TABLE dim_currency (
    currency_id integer PRIMARY KEY,
    currency_code text,
    currency_name text
);

CREATE TABLE dim_location (
    location_id integer PRIMARY KEY,
    address_line_1 text,
    address_line_2 text,
    district text,
    city text,
    postal_code text,
    country text,
    phone text
);

CREATE TABLE dim_counterparty (
    counterparty_id integer PRIMARY KEY,
    counterparty_legal_name text,
    counterparty_legal_address_line_1 text,
    counterparty_legal_address_line_2 text,
    counterparty_legal_district text,
    counterparty_legal_city text,
    counterparty_legal_postal_code text,
    counterparty_legal_country text,
    counterparty_legal_phone_number text
);

CREATE TABLE dim_staff (
    staff_id integer PRIMARY KEY,
    first_name text,
    last_name text,
    department_name text,
    location text,
    email_address text
);

CREATE TABLE dim_payment_type (
    payment_type_id integer PRIMARY KEY,
    payment_type_name text
);

CREATE TABLE dim_transaction (
    transaction_id integer PRIMARY KEY,
    transaction_type text,
    sales_order_id integer,
    purchase_order_id integer
);

CREATE TABLE fact_sales_order (
    sales_record_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sales_order_id integer NOT NULL,
    created_date date,
    created_time time,
    last_updated_date date,
    last_updated_time time,
    sales_staff_id integer,
    counterparty_id integer,
    units_sold integer,
    unit_price numeric(10,2),
    currency_id integer,
    design_id integer,
    agreed_payment_date date,
    agreed_delivery_date date,
    agreed_delivery_location_id integer,
    source_op char(1) NOT NULL CHECK (source_op IN ('r', 'c', 'u', 'd')),
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    source_commit_ts timestamptz NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    is_deleted boolean NOT NULL DEFAULT false,
    UNIQUE (source_lsn, source_seq)
);

CREATE TABLE fact_purchase_order (
    purchase_record_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    purchase_order_id integer NOT NULL,
    created_date date,
    created_time time,
    last_updated_date date,
    last_updated_time time,
    staff_id integer,
    counterparty_id integer,
    item_code text,
    item_quantity integer,
    item_unit_price numeric(10,2),
    currency_id integer,
    agreed_delivery_date date,
    agreed_payment_date date,
    agreed_delivery_location_id integer,
    source_op char(1) NOT NULL CHECK (source_op IN ('r', 'c', 'u', 'd')),
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    source_commit_ts timestamptz NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    is_deleted boolean NOT NULL DEFAULT false,
    UNIQUE (source_lsn, source_seq)
);

CREATE TABLE fact_payment (
    payment_record_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id integer NOT NULL,
    created_date date,
    created_time time,
    last_updated_date date,
    last_updated_time time,
    transaction_id integer,
    counterparty_id integer,
    payment_amount numeric(10,2),
    currency_id integer,
    payment_type_id integer,
    paid boolean,
    payment_date date,
    source_op char(1) NOT NULL CHECK (source_op IN ('r', 'c', 'u', 'd')),
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    source_commit_ts timestamptz NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    is_deleted boolean NOT NULL DEFAULT false,
    UNIQUE (source_lsn, source_seq)
);

-- Latency and "what is new" queries (dashboard, status) read facts by loaded_at.
CREATE INDEX ON fact_sales_order (loaded_at);
CREATE INDEX ON fact_purchase_order (loaded_at);
CREATE INDEX ON fact_payment (loaded_at);

-- A fact row's order among the versions of its source row. A truncate tombstone cannot take the
-- truncate's own position (one truncate deletes many rows), so it is stored with
-- source_seq = -(truncate seq * 2^31 + source id); this maps it back to the truncate's seq.
CREATE FUNCTION fact_version_seq(source_seq bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN source_seq < 0 THEN (-source_seq) / 2147483648 ELSE source_seq END $$;

CREATE INDEX ON fact_sales_order (sales_order_id, source_lsn DESC, fact_version_seq(source_seq) DESC);
CREATE INDEX ON fact_purchase_order (purchase_order_id, source_lsn DESC, fact_version_seq(source_seq) DESC);
CREATE INDEX ON fact_payment (payment_id, source_lsn DESC, fact_version_seq(source_seq) DESC);

-- Current state: the latest version of each source row, unless that version is a deletion.
CREATE VIEW fact_sales_order_current AS
SELECT * FROM (
    SELECT DISTINCT ON (sales_order_id) * FROM fact_sales_order
    ORDER BY sales_order_id, source_lsn DESC, fact_version_seq(source_seq) DESC
) latest WHERE NOT is_deleted;

CREATE VIEW fact_purchase_order_current AS
SELECT * FROM (
    SELECT DISTINCT ON (purchase_order_id) * FROM fact_purchase_order
    ORDER BY purchase_order_id, source_lsn DESC, fact_version_seq(source_seq) DESC
) latest WHERE NOT is_deleted;

CREATE VIEW fact_payment_current AS
SELECT * FROM (
    SELECT DISTINCT ON (payment_id) * FROM fact_payment
    ORDER BY payment_id, source_lsn DESC, fact_version_seq(source_seq) DESC
) latest WHERE NOT is_deleted;
