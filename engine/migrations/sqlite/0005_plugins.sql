-- Rules plugins. Each install is a new version of a platform's plugin (1, 2, 3 …) holding the
-- component's bytes, its sha256, the platform's configuration text and optional limits.
-- Activations are a history; the newest one of a platform is in force (version NULL: the
-- built-in rules). Compiled artifacts are kept per engine build so restarts do not recompile.

CREATE TABLE plugin_versions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    platform_id       INTEGER NOT NULL REFERENCES platforms (id),
    version           INTEGER NOT NULL,
    sha256            TEXT    NOT NULL,
    wasm              BLOB    NOT NULL,
    config            TEXT    NOT NULL,
    fuel              INTEGER,
    memory_bytes      INTEGER,
    deadline_ms       INTEGER,
    uploaded_at_ms    INTEGER NOT NULL,
    UNIQUE (platform_id, version)
);

CREATE TABLE plugin_activations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    platform_id     INTEGER NOT NULL REFERENCES platforms (id),
    version         INTEGER,
    activated_at_ms INTEGER NOT NULL
);
CREATE INDEX plugin_activations_by_platform ON plugin_activations (platform_id, id);

CREATE TABLE plugin_artifacts (
    sha256          TEXT    NOT NULL,
    engine_hash     TEXT    NOT NULL,
    artifact        BLOB    NOT NULL,
    artifact_sha256 TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (sha256, engine_hash)
);
