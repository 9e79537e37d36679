-- Packets assigned to our DVN, one row per GUID (= path + nonce).
CREATE TABLE packets (
    guid            BLOB PRIMARY KEY,
    src_eid         BIGINT NOT NULL,
    dst_eid         BIGINT NOT NULL,
    sender          BLOB NOT NULL,
    receiver        BLOB NOT NULL,
    nonce           BIGINT NOT NULL,
    header          BLOB NOT NULL,
    payload_hash    BLOB NOT NULL,
    tx_hash         BLOB NOT NULL,
    block_number    BIGINT NOT NULL,
    block_hash      BLOB NOT NULL,
    log_index       BIGINT NOT NULL,
    block_timestamp BIGINT NOT NULL,
    state           TEXT NOT NULL,
    confirmations   BIGINT,
    expiration      BIGINT,
    call_hash       BLOB,
    submission      BLOB,
    ready_at_ms     BIGINT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    updated_at_ms   BIGINT NOT NULL
);
CREATE INDEX packets_state ON packets (state, dst_eid);
CREATE INDEX packets_call_hash ON packets (call_hash);

-- Signatures over a param hash, ours and our peers'. A row only counts once it recovers to an
-- on-chain signer over the hash we built ourselves.
CREATE TABLE signatures (
    call_hash   BLOB NOT NULL,
    signer      BLOB NOT NULL,
    signature   BLOB NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (call_hash, signer)
);

-- Where each source chain's scan stands (number + hash, to notice reorgs).
CREATE TABLE cursors (
    eid          BIGINT PRIMARY KEY,
    block_number BIGINT NOT NULL,
    block_hash   BLOB NOT NULL
);

-- Every DVN.execute this node signed, persisted before broadcast.
CREATE TABLE submissions (
    tx_hash       BLOB PRIMARY KEY,
    dst_eid       BIGINT NOT NULL,
    account_nonce BIGINT NOT NULL,
    raw_tx        BLOB NOT NULL,
    state         TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX submissions_state ON submissions (state);
