-- The operator views (`/status`, `dvn admin packets`) list the most recently changed packets:
-- newest first by updated_at_ms, read backwards through this index instead of sorting every
-- packet ever stored (the state-filtered list uses packets_state_updated).
CREATE INDEX packets_updated ON packets (updated_at_ms);
