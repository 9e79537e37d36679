-- Every state change is a compare-and-set on (state, version): a stage acting on a stale
-- snapshot loses instead of overwriting a newer decision.
ALTER TABLE packets ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
-- Per-packet backoff: a packet whose checks failed is not looked at again before this time, so
-- it never holds up the packets behind it.
ALTER TABLE packets ADD COLUMN retry_at_ms BIGINT;
ALTER TABLE packets ADD COLUMN deferrals BIGINT NOT NULL DEFAULT 0;
CREATE INDEX packets_path_nonce ON packets (src_eid, sender, dst_eid, receiver, nonce);

-- Paths halted by the equivocation guard: no later nonce on them is signed until an operator
-- resumes the path.
CREATE TABLE halted_paths (
    src_eid       BIGINT NOT NULL,
    sender        BLOB NOT NULL,
    dst_eid       BIGINT NOT NULL,
    receiver      BLOB NOT NULL,
    nonce         BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    halted_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (src_eid, sender, dst_eid, receiver)
);

-- The block hash at the end of each scan step: after a reorg the watcher walks back through
-- these to the newest one still canonical (the common ancestor), bounded by max_reorg_depth.
CREATE TABLE scan_checkpoints (
    eid          BIGINT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash   BLOB NOT NULL,
    PRIMARY KEY (eid, block_number)
);

-- The block of each path's highest nonce: a gap found later (a provider dropped the last log
-- of an earlier scan) is recovered by scanning again from there.
ALTER TABLE path_nonces ADD COLUMN max_nonce_block BIGINT;

-- The health snapshot's last-verified read and the retention prune.
CREATE INDEX packets_state_updated ON packets (state, updated_at_ms);
