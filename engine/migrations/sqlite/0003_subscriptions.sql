-- Where each platform wants its pushes: one URL per (platform, type); type 1 = bills,
-- 2 = authorization changes. The same type again overwrites.
CREATE TABLE subscriptions (
    platform_id   INTEGER NOT NULL REFERENCES platforms (id),
    kind          INTEGER NOT NULL,
    notify_url    TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (platform_id, kind)
);
