-- Migration 0008 kept one counts row per state, updated by every statement that inserts, moves
-- or deletes packets and locked until its transaction commits. Concurrent transactions then
-- queue on those few rows, and two that move packets between the same states in opposite
-- orders deadlock ("deadlock detected" while rechecking a packet_counts row, seen under the
-- store test's racing moves). Now each statement appends its net change per state as new rows
-- — inserts never wait on one another — and readers sum the rows of a state; the health
-- snapshot folds them back into one row per state as it reads (see `Store::count_by_state`).
ALTER TABLE packet_counts DROP CONSTRAINT packet_counts_pkey;

CREATE OR REPLACE FUNCTION packet_counts_apply(changes BIGINT[], states TEXT[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO packet_counts (state, n)
    SELECT s, SUM(x) FROM unnest(states, changes) AS u(s, x)
     GROUP BY s HAVING SUM(x) <> 0;
$$;
