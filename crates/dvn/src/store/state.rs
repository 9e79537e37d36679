//! The packet state machine: the one table of legal moves, and the compare-and-set that
//! applies a move.
//!
//! Every stage decides from a snapshot of a row that may be seconds or minutes old (a sign
//! step reads 500 rows, then does RPC reads for each). A move therefore names the state *and*
//! the version it was decided on; the row changes only if both still hold. A stage that lost
//! the race (the watcher re-observed the packet in its new block meanwhile, another stage moved
//! it) changes nothing, learns so from the return value, and the loss is counted in
//! `dvn_state_races_total{from,to}`. Each successful move bumps the version.

use alloy::primitives::B256;
use sqlx::AnyConnection;

use super::rows::{NewPacket, PacketRow, PacketState};
use super::{int, now_ms, StoreError};

/// Is `from → to` a move the pipeline may make?
///
/// ```text
/// observed ─► signed ─► submitted ─► verified
///    │ ▲        │  ▲       │ │ ▲
///    │ └────────┴──┼───────┘ └─┘ (retry: re-sign, re-aggregate; fee-bump replacement)
///    ├─► skipped / verified (the destination no longer needs us)
///    ├─► orphaned ─► observed (re-included after a reorg; also signed ─► orphaned when the
///    │                source receipt is gone before submission)
///    └─► invalid ─► observed (operator retry)
/// signed / submitted / verified / skipped / invalid ─► conflict (equivocation: terminal)
/// ```
pub fn is_legal(from: PacketState, to: PacketState) -> bool {
    use PacketState::*;
    matches!(
        (from, to),
        (
            Observed,
            Observed | Signed | Verified | Skipped | Orphaned | Invalid
        ) | (Orphaned, Observed)
            | (Invalid, Observed)
            | (
                Signed,
                Observed | Submitted | Verified | Skipped | Invalid | Orphaned
            )
            | (
                Submitted,
                Observed | Signed | Submitted | Verified | Skipped | Invalid
            )
            | (Signed | Submitted | Verified | Skipped | Invalid, Conflict)
    )
}

/// What a move expects to find: the row's state and version as the caller last read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub guid: B256,
    pub state: PacketState,
    pub version: u64,
}

impl PacketRow {
    /// The precondition of a move decided on this snapshot.
    pub fn expect(&self) -> Expect {
        Expect {
            guid: self.packet.guid,
            state: self.state,
            version: self.version,
        }
    }
}

/// The columns a move writes besides `state` and `version`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change<'a> {
    /// Only the state, with a reason (or none).
    Note(Option<&'a str>),
    /// A retry: count the attempt, detach from any submission and quorum clock.
    Retry(&'a str),
    /// Our signature is stored for this param.
    Signed {
        confirmations: u64,
        expiration: u64,
        call_hash: B256,
    },
    /// Attached to an `execute` transaction.
    Submitted(B256),
    /// Seen again on the source chain, possibly in another block or with another payload.
    Reobserved(&'a NewPacket),
}

/// Applies `expect.state → to` if the row still has `expect`'s state and version. Returns
/// false (and counts the race) when it did not; an illegal move is a bug and an error.
pub(super) async fn apply(
    conn: &mut AnyConnection,
    expect: Expect,
    to: PacketState,
    change: Change<'_>,
) -> Result<bool, StoreError> {
    if !is_legal(expect.state, to) {
        return Err(StoreError::IllegalTransition {
            from: expect.state.as_str(),
            to: to.as_str(),
        });
    }
    // $1 guid, $2 expected state, $3 expected version, $4 new state, $5 now; then the change's.
    macro_rules! update {
        ($set:literal) => {
            concat!(
                "UPDATE packets SET state = $4, version = version + 1, updated_at_ms = $5, ",
                "retry_at_ms = NULL, deferrals = 0",
                $set,
                " WHERE guid = $1 AND state = $2 AND version = $3"
            )
        };
    }
    let sql: &'static str = match change {
        Change::Note(_) => update!(", last_error = $6"),
        Change::Retry(_) => update!(
            ", last_error = $6, attempts = attempts + 1, submission = NULL, ready_at_ms = NULL"
        ),
        Change::Signed { .. } => update!(
            ", confirmations = $6, expiration = $7, call_hash = $8, ready_at_ms = NULL, last_error = NULL"
        ),
        Change::Submitted(_) => update!(", submission = $6"),
        Change::Reobserved(_) => update!(
            ", header = $6, payload_hash = $7, tx_hash = $8, block_number = $9, block_hash = $10, \
             log_index = $11, block_timestamp = $12"
        ),
    };
    let query = sqlx::query(sql)
        .bind(expect.guid.to_vec())
        .bind(expect.state.as_str())
        .bind(int(expect.version))
        .bind(to.as_str())
        .bind(now_ms());
    let query = match change {
        Change::Note(error) => query.bind(error.map(str::to_string)),
        Change::Retry(error) => query.bind(error.to_string()),
        Change::Signed {
            confirmations,
            expiration,
            call_hash,
        } => query
            .bind(int(confirmations))
            .bind(int(expiration))
            .bind(call_hash.to_vec()),
        Change::Submitted(tx) => query.bind(tx.to_vec()),
        Change::Reobserved(p) => query
            .bind(p.header.clone())
            .bind(p.payload_hash.to_vec())
            .bind(p.tx_hash.to_vec())
            .bind(int(p.block_number))
            .bind(p.block_hash.to_vec())
            .bind(int(p.log_index))
            .bind(int(p.block_timestamp)),
    };
    let moved = query.execute(&mut *conn).await?.rows_affected() == 1;
    if !moved {
        metrics::counter!("dvn_state_races_total", "from" => expect.state.as_str(), "to" => to.as_str())
            .increment(1);
        tracing::debug!(guid = %expect.guid, from = expect.state.as_str(), to = to.as_str(), "state changed under us: move not applied");
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PacketState::*;

    #[test]
    fn the_happy_path_and_every_retry_are_legal() {
        for (from, to) in [
            (Observed, Signed),
            (Signed, Submitted),
            (Submitted, Verified),
            (Submitted, Signed),
            (Submitted, Observed),
            (Submitted, Submitted),
            (Orphaned, Observed),
            (Invalid, Observed),
            (Verified, Conflict),
        ] {
            assert!(is_legal(from, to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn nothing_leaves_conflict_and_nothing_is_signed_twice_without_a_retry() {
        for to in PacketState::ALL {
            assert!(!is_legal(Conflict, to), "conflict -> {to:?}");
        }
        for from in [Verified, Skipped, Orphaned, Conflict] {
            assert!(!is_legal(from, Signed), "{from:?} -> signed");
            assert!(!is_legal(from, Submitted), "{from:?} -> submitted");
        }
        assert!(!is_legal(Observed, Submitted), "never submitted unsigned");
        assert!(
            !is_legal(Observed, Conflict),
            "unsigned payloads are replaced"
        );
    }
}
