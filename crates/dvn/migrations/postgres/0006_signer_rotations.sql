-- Signer rotations: a region proposes replacing its own signer on one destination DVN with a
-- new key (DVN.setSigner(add, true) then setSigner(remove, false), one execute). Each region
-- rebuilds both params from these fields itself; nothing proposed is signed as sent.
CREATE TABLE signer_rotations (
    id             BYTEA PRIMARY KEY,
    dst_eid        BIGINT NOT NULL,
    add_signer     BYTEA NOT NULL,
    remove_signer  BYTEA NOT NULL,
    expiration     BIGINT NOT NULL,
    add_hash       BYTEA NOT NULL,
    remove_hash    BYTEA NOT NULL,
    proposer       TEXT NOT NULL,
    state          TEXT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
CREATE INDEX signer_rotations_add_hash ON signer_rotations (add_hash);
CREATE INDEX signer_rotations_remove_hash ON signer_rotations (remove_hash);
