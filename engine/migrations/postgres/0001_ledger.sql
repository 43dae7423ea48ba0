-- The ledger, directory and orders. Applied migrations are never edited; add a new file.

CREATE TABLE platforms (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id        TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE providers (
    equity_cid    TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE provider_links (
    platform_id BIGINT NOT NULL REFERENCES platforms (id),
    equity_cid  TEXT    NOT NULL REFERENCES providers (equity_cid),
    PRIMARY KEY (platform_id, equity_cid)
);

CREATE TABLE cid_mappings (
    platform_id BIGINT NOT NULL REFERENCES platforms (id),
    sub_cid     TEXT    NOT NULL,
    master_cid  TEXT    NOT NULL,
    PRIMARY KEY (platform_id, sub_cid)
);
CREATE INDEX cid_mappings_by_master ON cid_mappings (master_cid, platform_id);

CREATE TABLE authorizations (
    platform_id      BIGINT NOT NULL REFERENCES platforms (id),
    sub_cid          TEXT    NOT NULL,
    master_cid       TEXT    NOT NULL,
    active           BIGINT NOT NULL,
    authorized_at_ms BIGINT NOT NULL,
    cancelled_at_ms  BIGINT,
    PRIMARY KEY (platform_id, sub_cid)
);

-- One row per (account, asset). Person and provider rows never go below zero.
CREATE TABLE balances (
    account TEXT    NOT NULL,
    asset   BIGINT NOT NULL,
    balance BIGINT NOT NULL,
    PRIMARY KEY (account, asset)
);

-- One entry per state change; its postings sum to zero per asset.
CREATE TABLE journal (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          TEXT    NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE postings (
    journal_id BIGINT NOT NULL REFERENCES journal (id),
    account    TEXT    NOT NULL,
    asset      BIGINT NOT NULL,
    amount     BIGINT NOT NULL
);
CREATE INDEX postings_by_journal ON postings (journal_id);
CREATE INDEX postings_by_account ON postings (account, asset);

CREATE TABLE credits (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id   TEXT    NOT NULL UNIQUE,
    master_cid    TEXT    NOT NULL,
    asset         BIGINT NOT NULL,
    amount        BIGINT NOT NULL,
    scene         TEXT,
    methodology   TEXT,
    request_hash  TEXT    NOT NULL,
    journal_id    BIGINT NOT NULL REFERENCES journal (id),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX credits_by_person_scene ON credits (master_cid, asset, scene);

-- Orders are also the bill rows. Amounts are signed hundredths; refunded_* count what
-- refunds have taken back (positive).
CREATE TABLE orders (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform_id           BIGINT NOT NULL REFERENCES platforms (id),
    transaction_id        TEXT    NOT NULL,
    parent_transaction_id TEXT,
    sub_cid               TEXT    NOT NULL,
    master_cid            TEXT    NOT NULL,
    equity_cid            TEXT    NOT NULL,
    point_a               BIGINT NOT NULL,
    point_b               BIGINT NOT NULL,
    refunded_a            BIGINT NOT NULL DEFAULT 0,
    refunded_b            BIGINT NOT NULL DEFAULT 0,
    converted_reduction   BIGINT NOT NULL,
    transaction_time_ms   BIGINT NOT NULL,
    settled_at_ms         BIGINT NOT NULL,
    transaction_type      TEXT    NOT NULL,
    auto_convert          BIGINT NOT NULL,
    items                 TEXT    NOT NULL,
    request_hash          TEXT    NOT NULL,
    rules_version         TEXT,
    journal_id            BIGINT NOT NULL REFERENCES journal (id),
    UNIQUE (platform_id, transaction_id)
);
CREATE INDEX orders_bills ON orders (platform_id, transaction_time_ms DESC, id DESC);
CREATE INDEX orders_bills_by_cid ON orders (platform_id, sub_cid, transaction_time_ms DESC, id DESC);
CREATE INDEX orders_bills_by_provider ON orders (platform_id, equity_cid, transaction_time_ms DESC, id DESC);
CREATE INDEX orders_by_parent ON orders (platform_id, parent_transaction_id);
