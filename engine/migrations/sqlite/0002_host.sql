-- What the HTTP host keeps so that several instances share it: the server's RSA key pair,
-- access tokens (hashed), recent request ids (replay protection) and license agreements.

CREATE TABLE server_keys (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    private_key_pem TEXT    NOT NULL,
    public_key_pem  TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL
);

CREATE TABLE access_tokens (
    token_sha256  TEXT    PRIMARY KEY,
    platform_id   INTEGER NOT NULL REFERENCES platforms (id),
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_at_ms);

CREATE TABLE request_ids (
    request_id    TEXT    PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX request_ids_by_expiry ON request_ids (expires_at_ms);

CREATE TABLE licenses (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    download_url  TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);
