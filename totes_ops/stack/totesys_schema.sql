-- The totesys source schema, as the real (Prisma-managed) database defines it: 11 tables, two
-- enum types with quoted mixed-case names, serial keys, unique indexes and foreign keys
-- (ON UPDATE CASCADE ON DELETE RESTRICT; transaction -> orders ON DELETE SET NULL).
-- The local stack and the tests create it; the real rows are read from outside the repository.

CREATE TYPE public."PaymentTypeName" AS ENUM ('SALES_RECEIPT', 'SALES_REFUND', 'PURCHASE_PAYMENT', 'PURCHASE_REFUND');
CREATE TYPE public."TransactionType" AS ENUM ('SALE', 'PURCHASE');

CREATE TABLE public.address (
    address_id serial PRIMARY KEY,
    address_line_1 text NOT NULL,
    address_line_2 text,
    district text,
    city text NOT NULL,
    postal_code text NOT NULL,
    country text NOT NULL,
    phone text NOT NULL,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL
);

CREATE TABLE public.counterparty (
    counterparty_id serial PRIMARY KEY,
    counterparty_legal_name text NOT NULL,
    legal_address_id integer NOT NULL REFERENCES public.address ON UPDATE CASCADE ON DELETE RESTRICT,
    commercial_contact text,
    delivery_contact text,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL
);

CREATE TABLE public.currency (
    currency_id serial PRIMARY KEY,
    currency_code character varying(3) NOT NULL,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL
);

CREATE TABLE public.department (
    department_id serial PRIMARY KEY,
    department_name text NOT NULL,
    location text,
    manager text,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL
);

CREATE TABLE public.design (
    design_id serial PRIMARY KEY,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    design_name text NOT NULL,
    file_location text NOT NULL,
    file_name text NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL
);

CREATE TABLE public.payment_type (
    payment_type_id serial PRIMARY KEY,
    payment_type_name public."PaymentTypeName" NOT NULL,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL
);

CREATE TABLE public.staff (
    staff_id serial PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    department_id integer NOT NULL REFERENCES public.department ON UPDATE CASCADE ON DELETE RESTRICT,
    email_address text NOT NULL,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL
);

CREATE TABLE public.sales_order (
    sales_order_id serial PRIMARY KEY,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL,
    design_id integer NOT NULL REFERENCES public.design ON UPDATE CASCADE ON DELETE RESTRICT,
    staff_id integer NOT NULL REFERENCES public.staff ON UPDATE CASCADE ON DELETE RESTRICT,
    counterparty_id integer NOT NULL REFERENCES public.counterparty ON UPDATE CASCADE ON DELETE RESTRICT,
    units_sold integer NOT NULL,
    unit_price numeric(10,2) NOT NULL,
    currency_id integer NOT NULL REFERENCES public.currency ON UPDATE CASCADE ON DELETE RESTRICT,
    agreed_delivery_date text NOT NULL,
    agreed_payment_date text NOT NULL,
    agreed_delivery_location_id integer NOT NULL REFERENCES public.address ON UPDATE CASCADE ON DELETE RESTRICT
);

CREATE TABLE public.purchase_order (
    purchase_order_id serial PRIMARY KEY,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL,
    staff_id integer NOT NULL REFERENCES public.staff ON UPDATE CASCADE ON DELETE RESTRICT,
    counterparty_id integer NOT NULL REFERENCES public.counterparty ON UPDATE CASCADE ON DELETE RESTRICT,
    item_code text NOT NULL,
    item_quantity integer NOT NULL,
    item_unit_price numeric(10,2) NOT NULL,
    currency_id integer NOT NULL REFERENCES public.currency ON UPDATE CASCADE ON DELETE RESTRICT,
    agreed_delivery_date text NOT NULL,
    agreed_payment_date text NOT NULL,
    agreed_delivery_location_id integer NOT NULL REFERENCES public.address ON UPDATE CASCADE ON DELETE RESTRICT
);

CREATE TABLE public.transaction (
    transaction_id serial PRIMARY KEY,
    transaction_type public."TransactionType" NOT NULL,
    sales_order_id integer UNIQUE REFERENCES public.sales_order ON UPDATE CASCADE ON DELETE SET NULL,
    purchase_order_id integer UNIQUE REFERENCES public.purchase_order ON UPDATE CASCADE ON DELETE SET NULL,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL
);

CREATE TABLE public.payment (
    payment_id serial PRIMARY KEY,
    created_at timestamp(3) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_updated timestamp(3) without time zone NOT NULL,
    transaction_id integer NOT NULL UNIQUE REFERENCES public.transaction ON UPDATE CASCADE ON DELETE RESTRICT,
    counterparty_id integer NOT NULL REFERENCES public.counterparty ON UPDATE CASCADE ON DELETE RESTRICT,
    payment_amount numeric(10,2) NOT NULL,
    currency_id integer NOT NULL REFERENCES public.currency ON UPDATE CASCADE ON DELETE RESTRICT,
    payment_type_id integer NOT NULL REFERENCES public.payment_type ON UPDATE CASCADE ON DELETE RESTRICT,
    paid boolean NOT NULL,
    payment_date text NOT NULL,
    company_ac_number integer NOT NULL,
    counterparty_ac_number integer NOT NULL
);
