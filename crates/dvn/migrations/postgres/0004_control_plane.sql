-- Operator pauses: 'node', 'chain:<eid>' (every path from or to the chain) or
-- 'path:<src eid>:<sender>:<dst eid>:<receiver>'. Packets of a paused scope are still observed
-- (nothing is lost) but neither signed nor submitted until the pause is lifted.
CREATE TABLE pauses (
    scope         TEXT PRIMARY KEY,
    reason        TEXT NOT NULL,
    paused_by     TEXT NOT NULL,
    paused_at_ms  BIGINT NOT NULL
);

-- Admin API tokens: only the SHA-256 of the secret part is kept; the token is shown once.
CREATE TABLE admin_tokens (
    id             TEXT PRIMARY KEY,
    operator       TEXT NOT NULL,
    role           TEXT NOT NULL,
    token_hash     BYTEA NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    revoked_at_ms  BIGINT
);

-- The audit log: append-only and hash-chained (each record's hash covers its fields and the
-- previous record's hash), so an edited, deleted or reordered row breaks the chain. Under
-- PostgreSQL the node's role gets INSERT and SELECT only (see the README's grants).
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    operator   TEXT NOT NULL,
    role       TEXT NOT NULL,
    operation  TEXT NOT NULL,
    target     TEXT NOT NULL,
    params     TEXT NOT NULL,
    result     TEXT NOT NULL,
    source_ip  TEXT NOT NULL,
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);
