-- Rules plugins. Each install is a new version of a platform's plugin (1, 2, 3 …) holding the
-- component's bytes, its sha256, the platform's configuration text and optional limits.
-- Activations are a history; the newest one of a platform is in force (version NULL: the
-- built-in rules). Compiled artifacts are kept per engine build so restarts do not recompile.

CREATE TABLE plugin_versions (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform_id       BIGINT NOT NULL REFERENCES platforms (id),
    version           BIGINT NOT NULL,
    sha256            TEXT    NOT NULL,
    wasm              BYTEA   NOT NULL,
    config            TEXT    NOT NULL,
    fuel              BIGINT,
    memory_bytes      BIGINT,
    deadline_ms       BIGINT,
    uploaded_at_ms    BIGINT NOT NULL,
    UNIQUE (platform_id, version)
);

CREATE TABLE plugin_activations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform_id     BIGINT NOT NULL REFERENCES platforms (id),
    version         BIGINT,
    activated_at_ms BIGINT NOT NULL
);
CREATE INDEX plugin_activations_by_platform ON plugin_activations (platform_id, id);

CREATE TABLE plugin_artifacts (
    sha256          TEXT    NOT NULL,
    engine_hash     TEXT    NOT NULL,
    artifact        BYTEA   NOT NULL,
    artifact_sha256 TEXT    NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (sha256, engine_hash)
);
