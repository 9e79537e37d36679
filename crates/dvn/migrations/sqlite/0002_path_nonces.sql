-- Highest nonce seen per path among *all* PacketSent logs (ours or not): a jump means a
-- missed or dropped log, and the watcher stops before it.
CREATE TABLE path_nonces (
    src_eid   BIGINT NOT NULL,
    sender    BLOB NOT NULL,
    dst_eid   BIGINT NOT NULL,
    receiver  BLOB NOT NULL,
    max_nonce BIGINT NOT NULL,
    PRIMARY KEY (src_eid, sender, dst_eid, receiver)
);
