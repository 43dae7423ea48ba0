-- Pushes to platforms (SPEC §7). Every bill and authorization change gets an outbox row in
-- the transaction that makes it; the dispatcher seals a stream's waiting rows into batches
-- and sends them in order. A stream is one (platform, type) subscription; its lease columns
-- say which instance is working on it (claimed with FOR UPDATE SKIP LOCKED).

ALTER TABLE subscriptions ADD COLUMN claimed_by TEXT;
ALTER TABLE subscriptions ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE subscriptions ADD COLUMN sealed_at_ms INTEGER;

-- One push request's content. status: 0 pending, 1 delivered, 2 dead-lettered.
CREATE TABLE push_batches (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    platform_id        INTEGER NOT NULL REFERENCES platforms (id),
    kind               INTEGER NOT NULL CHECK (kind IN (1, 2)),
    status             INTEGER NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2)),
    row_count          INTEGER NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error         TEXT,
    created_at_ms      INTEGER NOT NULL,
    delivered_at_ms    INTEGER
);
CREATE INDEX push_batches_by_stream ON push_batches (platform_id, kind, status, id);
CREATE INDEX push_batches_by_status ON push_batches (status, id);

-- kind 1: a bill, the order row itself (order_id); kind 2: an authorization change of
-- sub_cid, auth_type 1 (authorized) or -1 (cancelled). batch_id is NULL while the row waits.
CREATE TABLE push_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    platform_id   INTEGER NOT NULL REFERENCES platforms (id),
    kind          INTEGER NOT NULL CHECK (kind IN (1, 2)),
    order_id      INTEGER UNIQUE REFERENCES orders (id),
    sub_cid       TEXT,
    auth_type     INTEGER,
    created_at_ms INTEGER NOT NULL,
    batch_id      INTEGER REFERENCES push_batches (id),
    CHECK ((kind = 1 AND order_id IS NOT NULL) OR (kind = 2 AND sub_cid IS NOT NULL AND auth_type IN (1, -1)))
);
CREATE INDEX push_outbox_waiting ON push_outbox (platform_id, kind, batch_id, id);
CREATE INDEX push_outbox_by_batch ON push_outbox (batch_id, id);

-- Bills settled before pushes existed were never pushed: they wait like new ones.
INSERT INTO push_outbox (platform_id, kind, order_id, created_at_ms)
SELECT platform_id, 1, id, settled_at_ms FROM orders ORDER BY id;
