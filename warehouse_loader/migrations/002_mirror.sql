-- The mirror: the loader's copy of the source tables' current state, from which dimensions are
-- derived and delete tombstones / TOAST-unchanged columns take their last known values.
-- Columns keep the source's names and types (enums as text); only the key is NOT NULL, as a delete
-- can arrive for a row never seen. Every row carries the source position (source_lsn, source_seq)
-- of the change it holds: an upsert only applies a newer position. A deleted row keeps its last
-- known values with is_deleted = true.

CREATE SCHEMA mirror;

CREATE TABLE mirror.address (
    address_id integer PRIMARY KEY,
    address_line_1 text,
    address_line_2 text,
    district text,
    city text,
    postal_code text,
    country text,
    phone text,
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE mirror.counterparty (
    counterparty_id integer PRIMARY KEY,
    counterparty_legal_name text,
    legal_address_id integer,
    commercial_contact text,
    delivery_contact text,
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);
CREATE INDEX ON mirror.counterparty (legal_address_id);

CREATE TABLE mirror.currency (
    currency_id integer PRIMARY KEY,
    currency_code character varying(3),
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE mirror.department (
    department_id integer PRIMARY KEY,
    department_name text,
    location text,
    manager text,
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE mirror.design (
    design_id integer PRIMARY KEY,
    created_at timestamp(3) without time zone,
    design_name text,
    file_location text,
    file_name text,
    last_updated timestamp(3) without time zone,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE mirror.payment (
    payment_id integer PRIMARY KEY,
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    transaction_id integer,
    counterparty_id integer,
    payment_amount numeric(10,2),
    currency_id integer,
    payment_type_id integer,
    paid boolean,
    payment_date text,
    company_ac_number integer,
    counterparty_ac_number integer,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE mirror.payment_type (
    payment_type_id integer PRIMARY KEY,
    payment_type_name text,
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE mirror.purchase_order (
    purchase_order_id integer PRIMARY KEY,
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    staff_id integer,
    counterparty_id integer,
    item_code text,
    item_quantity integer,
    item_unit_price numeric(10,2),
    currency_id integer,
    agreed_delivery_date text,
    agreed_payment_date text,
    agreed_delivery_location_id integer,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE mirror.sales_order (
    sales_order_id integer PRIMARY KEY,
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    design_id integer,
    staff_id integer,
    counterparty_id integer,
    units_sold integer,
    unit_price numeric(10,2),
    currency_id integer,
    agreed_delivery_date text,
    agreed_payment_date text,
    agreed_delivery_location_id integer,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);

CREATE TABLE mirror.staff (
    staff_id integer PRIMARY KEY,
    first_name text,
    last_name text,
    department_id integer,
    email_address text,
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);
CREATE INDEX ON mirror.staff (department_id);

CREATE TABLE mirror.transaction (
    transaction_id integer PRIMARY KEY,
    transaction_type text,
    sales_order_id integer,
    purchase_order_id integer,
    created_at timestamp(3) without time zone,
    last_updated timestamp(3) without time zone,
    source_lsn bigint NOT NULL,
    source_seq bigint NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false
);
