-- The order service's tables on SQLite, the embedded default (PostgreSQL has the same
-- tables in postgres/0001_init.sql; only the outbox's sequence is spelled differently).
-- Times are epoch milliseconds (BIGINT), amounts integers in each material's unit.

CREATE TABLE stores (
    id                 TEXT PRIMARY KEY,
    lat                DOUBLE PRECISION NOT NULL,
    lon                DOUBLE PRECISION NOT NULL,
    delivery_fee_cents BIGINT NOT NULL
);

CREATE TABLE menu (
    store_id    TEXT NOT NULL REFERENCES stores (id),
    product_id  TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    position    BIGINT NOT NULL,
    PRIMARY KEY (store_id, product_id)
);

CREATE TABLE recipes (
    product_id TEXT NOT NULL,
    material   TEXT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount > 0),
    PRIMARY KEY (product_id, material)
);

-- Never negative: the CHECK is the database's own guard behind the conditional UPDATE
-- that reserves stock.
CREATE TABLE stock (
    store_id       TEXT NOT NULL REFERENCES stores (id),
    material       TEXT NOT NULL,
    unit           TEXT NOT NULL,
    amount         BIGINT NOT NULL CHECK (amount >= 0),
    threshold      BIGINT NOT NULL,
    reorder_amount BIGINT NOT NULL,
    PRIMARY KEY (store_id, material)
);

CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    store_id        TEXT NOT NULL REFERENCES stores (id),
    status          TEXT NOT NULL,
    channel         TEXT NOT NULL,
    delivery_type   TEXT NOT NULL,
    customer_id     TEXT,
    items           TEXT NOT NULL,
    total_cents     BIGINT NOT NULL,
    placed_ms       BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    eta_ms          BIGINT NOT NULL,
    eta_source      TEXT NOT NULL,
    rider_id        TEXT,
    idempotency_key TEXT UNIQUE
);

-- What an order took from stock, so that a cancellation gives back exactly that.
CREATE TABLE reservations (
    order_id TEXT NOT NULL REFERENCES orders (id),
    material TEXT NOT NULL,
    amount   BIGINT NOT NULL,
    PRIMARY KEY (order_id, material)
);

CREATE TABLE purchase_orders (
    id         TEXT PRIMARY KEY,
    store_id   TEXT NOT NULL REFERENCES stores (id),
    material   TEXT NOT NULL,
    amount     BIGINT NOT NULL,
    status     TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    closed_ms  BIGINT
);
-- At most one open purchase order per store and material.
CREATE UNIQUE INDEX purchase_orders_one_open ON purchase_orders (store_id, material)
    WHERE status = 'open';

-- Events written in the same transaction as the change they describe, and sent to the
-- stream by the relay after commit (the transactional outbox).
CREATE TABLE outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT NOT NULL,
    key     TEXT NOT NULL,
    payload TEXT NOT NULL
);
