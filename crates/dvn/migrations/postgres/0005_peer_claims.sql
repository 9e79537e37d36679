-- Other regions' pending transactions and the packets they carry (peer claims): while the
-- sender's nonce is unused on the destination, this node does not submit those packets.
CREATE TABLE peer_claims (
    tx_hash         BYTEA NOT NULL,
    guid            BYTEA NOT NULL,
    region          TEXT NOT NULL,
    dst_eid         BIGINT NOT NULL,
    sender          BYTEA NOT NULL,
    account_nonce   BIGINT NOT NULL,
    received_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (tx_hash, guid)
);
CREATE INDEX peer_claims_dst ON peer_claims (dst_eid);
