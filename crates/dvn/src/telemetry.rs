//! Every metric the node exports, described once (Prometheus `# HELP` text). Labels are bounded:
//! chain and peer names from the config, endpoint indexes (never URLs), fixed reason words.

/// (name, kind, help) for every `dvn_` metric. The alert rules and the dashboard may only name
/// metrics listed here (a test checks).
pub const METRICS: &[(&str, &str, &str)] = &[
    ("dvn_ready", "gauge", "1 when the node is ready: store, every chain's RPC quorum, both keys and enough peers answer"),
    ("dvn_component_up", "gauge", "1 when a component (store, signer, submitter, peers) is usable"),
    ("dvn_chain_rpc_up", "gauge", "1 when a chain's RPC endpoints answer with the configured agreement"),
    ("dvn_chain_head", "gauge", "Latest block of a chain as read with the configured agreement"),
    ("dvn_chain_cursor", "gauge", "Last block of a chain scanned for packets"),
    ("dvn_confirm_head", "gauge", "Head used for confirmation counting per chain"),
    ("dvn_backlog_packets", "gauge", "Packets observed on a path and not yet verified"),
    ("dvn_backlog_oldest_age_seconds", "gauge", "Age of the oldest unverified packet on a path, from its source block time"),
    ("dvn_submitter_balance_eth", "gauge", "Native balance of the submitter account on a chain, in ether"),
    ("dvn_signer_up", "gauge", "1 when the key's HSM/KMS answered its last signature or probe"),
    ("dvn_signing_seconds", "histogram", "Time of one HSM/KMS signing call, per backend and role"),
    ("dvn_signing_errors_total", "counter", "Failed signing calls by backend, role and kind (timeout, unavailable, refused)"),
    ("dvn_verification_latency_seconds", "histogram", "From the source block to our PayloadVerified on the destination"),
    ("dvn_stage_seconds", "histogram", "Time a packet took to reach a pipeline stage from the one before, by stage: observe (source block time to seen), sign (seen to signed, confirmations included), quorum (signed to a quorum of signatures here), send (quorum to our execute broadcast), mine (broadcast to its PayloadVerified settled)"),
    ("dvn_packets", "gauge", "Packets in the store by state (observed, signed, submitted, verified, skipped, orphaned, invalid, conflict)"),
    ("dvn_packets_observed_total", "counter", "Packets assigned to our DVN seen on a source chain"),
    ("dvn_packets_signed_total", "counter", "Packets this node signed"),
    ("dvn_packets_verified_total", "counter", "Packets whose verification by our DVN landed on the destination"),
    ("dvn_chain_head_stream_up", "gauge", "1 while the chain's new-heads stream (chains[].ws) is subscribed; 0 while it reconnects (the watcher then only polls)"),
    ("dvn_chain_heads_announced_total", "counter", "New blocks the chain's new-heads stream announced (hints that wake the watcher; never trusted)"),
    ("dvn_rpc_requests_total", "counter", "RPC requests per chain, endpoint index and outcome"),
    ("dvn_rpc_calls_total", "counter", "eth_call requests per chain and contract function read (hashLookup, inboundPayloadHash, getUlnConfig, ...), one per endpoint asked"),
    ("dvn_rpc_quorum_failures_total", "counter", "Reads where the RPC endpoints did not agree or answer"),
    ("dvn_nonce_gaps_total", "counter", "Gaps in a path's nonces: a PacketSent log missing from an endpoint"),
    ("dvn_reorgs_detected_total", "counter", "Reorgs detected behind the scan cursor"),
    ("dvn_forgery_refused_total", "counter", "Packets refused because the source endpoint never sent them"),
    ("dvn_equivocation_refused_total", "counter", "A different payload for a nonce we signed: the path is halted"),
    ("dvn_bad_events_total", "counter", "Events that failed to decode"),
    ("dvn_peer_up", "gauge", "1 when a peer answered its last health check or signature pull"),
    ("dvn_peer_push_total", "counter", "Signature pushes to peers by outcome"),
    ("dvn_peer_pulls_total", "counter", "Signature pull requests sent to each peer"),
    ("dvn_execute_gas_estimates_reused_total", "counter", "DVN.execute calls sent with a gas estimate learned from our mined calls, or interpolated between two learned ones, instead of eth_estimateGas"),
    ("dvn_submit_batch_seconds", "histogram", "From a batch closing to its DVN.execute broadcast (checks, gas estimate, signing, persisting): the lead a batch closes with before the next block is sized from it (up to submitter.block_lead_ms)"),
    ("dvn_submit_batches_landed_total", "counter", "Partial batches mined, by whether they made the destination block they closed for (block=made) or a later one (block=missed: the lead was too short; it widens by itself)"),
    ("dvn_submit_lead_seconds", "gauge", "How long before the destination's next block is due a partial batch closes now (longest recent closing to broadcast plus submitter.block_lead_margin_ms, up to submitter.block_lead_ms)"),
    ("dvn_stage_step_seconds", "histogram", "How long one step of a pipeline stage took (watch, sign, submit; every chain's together): steps of seconds mean an overloaded node or a slow dependency"),
    ("dvn_peer_signatures_rejected_total", "counter", "Peer signatures rejected by reason"),
    ("dvn_submissions_total", "counter", "DVN.execute transactions broadcast"),
    ("dvn_submission_replacements_total", "counter", "Fee-bumped replacements of stuck transactions"),
    ("dvn_submission_gas_used_total", "counter", "Gas used by mined DVN.execute transactions"),
    ("dvn_submission_cancels_total", "counter", "Pending DVN.execute transactions withdrawn with a same-nonce self-transfer, by reason (turn_handed_on, overtaken, path_halted)"),
    ("dvn_claim_deferrals_total", "counter", "Times a packet due for submission here was held back by another region's claim (its pending transaction carries the packet; waits until the chain shows that nonce used)"),
    ("dvn_unknown_pending_waits_total", "counter", "Times the submitter found a pending transaction of its own account that its store did not send (another replica's, or sent by hand) and waited for it to be mined"),
    ("dvn_peer_claims_sent_total", "counter", "Announcements of our pending transactions to peers, by outcome"),
    ("dvn_peer_claims_received_total", "counter", "Pending-transaction claims accepted from each peer"),
    ("dvn_peer_claims_rejected_total", "counter", "Peer claims refused by reason (malformed, too many packets, unknown chain)"),
    ("dvn_submitter_lease_held", "gauge", "1 while this replica holds the region's submitter lease"),
    ("dvn_stage_errors_total", "counter", "Errors per pipeline stage (each retried with backoff)"),
    ("dvn_peer_tls_refused_total", "counter", "Peer connections or requests refused by reason (no_certificate, unknown_ca, expired, not_a_peer, not_tls, connections, rate, busy, ...)"),
    ("dvn_admin_tls_refused_total", "counter", "Connections or requests to the admin listener (admin.listen) refused by reason, as for the peer listener"),
    ("dvn_state_races_total", "counter", "Packet state moves not applied because another stage changed the row first (from, to)"),
    ("dvn_rpc_disagreements_total", "counter", "Answers of an RPC endpoint (by index) that differed from the agreed answer, per method"),
    ("dvn_nonce_gap_seconds", "gauge", "How long the current nonce gap on a chain has persisted (0: none); recovery scans back by itself"),
    ("dvn_reorg_too_deep", "gauge", "1 while a chain's scan is halted by a reorg deeper than its max_reorg_depth"),
    ("dvn_clock_offset_seconds", "gauge", "This machine's clock minus the destination chain's latest block time (submitter turns follow block time; a large offset means broken NTP)"),
    ("dvn_sole_verifier_packets_total", "counter", "Packets signed for an OApp whose receive config requires only our DVN (1-of-1, the KelpDAO configuration)"),
    ("dvn_signer_in_set", "gauge", "1 while our signer is in the DVN's on-chain signer set on a chain (re-read every 30 s)"),
    ("dvn_rotations_received_total", "counter", "Signer-rotation proposals received from a peer and recorded for approval"),
    ("dvn_rotations_rejected_total", "counter", "Signer-rotation proposals from peers refused by reason (check_failed: not the proposer's own signer, key already a signer, bad expiration)"),
    ("dvn_rotations_executed_total", "counter", "Signer rotations seen executed on chain (both setSigner params used)"),
    ("dvn_submitter_is_admin", "gauge", "1 while our submitter holds ADMIN_ROLE on the DVN of a chain (followed by the DVN's role events, re-read every 30 s and after a reverted execute); 0: this region submits nothing there"),
    ("dvn_held_packets", "gauge", "Observed packets the sign stage holds back because their node, chain or path is paused or halted (kept, signed once lifted)"),
    ("dvn_rate_limited_packets", "gauge", "Observed packets waiting because their path reached governor.max_packets_per_minute (signed as the window moves on)"),
    ("dvn_pauses", "gauge", "Operator pauses in force (node, chain or path; `dvn admin status` lists them)"),
    ("dvn_admin_requests_total", "counter", "Admin API calls by operation and result (ok, error, denied, unauthenticated)"),
    ("dvn_store_disk_free_bytes", "gauge", "SQLite: free space on the store's filesystem (below store.min_free_mb the store counts as down on /ready)"),
    ("dvn_halted_paths", "gauge", "Paths halted by the equivocation guard; only an operator's `dvn path resume` lets them go on"),
];

/// Bucket bounds of the latency histograms: exported as buckets (not per-node quantiles) so a
/// fleet-wide p99 is `histogram_quantile(0.99, sum by (le) (rate(NAME_bucket[5m])))`.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    // One HSM/KMS call: milliseconds for a local HSM, up to the SLO (5 s) and the timeout.
    (
        "dvn_signing_seconds",
        &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ],
    ),
    // Source block to verified: confirmations of seconds (Conflux) to minutes (Ethereum).
    (
        "dvn_verification_latency_seconds",
        &[
            1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        ],
    ),
    // One step of a stage's loop: milliseconds when idle, seconds under a backlog.
    (
        "dvn_stage_step_seconds",
        &[
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ],
    ),
    // Closing a batch to broadcasting it: tens of milliseconds, up to the block lead and past.
    (
        "dvn_submit_batch_seconds",
        &[
            0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
        ],
    ),
    // One stage of one packet: sub-second steps to a block or two, minutes when confirmations
    // or a turn are waited for.
    (
        "dvn_stage_seconds",
        &[
            0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0,
        ],
    ),
];

/// A packet's pipeline stages, as `dvn_stage_seconds` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketStage {
    /// Source block time → the watcher stored it.
    Observe,
    /// Stored → our signature stored (waiting for confirmations included).
    Sign,
    /// Signed → a quorum of valid signatures counted here.
    Quorum,
    /// Quorum → in one of our `execute` transactions, broadcast.
    Send,
    /// Broadcast → its `PayloadVerified` settled from the receipt.
    Mine,
}

impl PacketStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observe => "observe",
            Self::Sign => "sign",
            Self::Quorum => "quorum",
            Self::Send => "send",
            Self::Mine => "mine",
        }
    }

    /// Records that one packet reached this stage now, having entered the one before at
    /// `since_ms` (Unix milliseconds; a clock that ran backwards counts as zero).
    pub fn reached(self, since_ms: i64) {
        let seconds = crate::store::now_ms().saturating_sub(since_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("dvn_stage_seconds", "stage" => self.as_str()).record(seconds);
    }
}

/// `builder` with [`HISTOGRAM_BUCKETS`] set.
pub fn with_buckets(
    mut builder: metrics_exporter_prometheus::PrometheusBuilder,
) -> anyhow::Result<metrics_exporter_prometheus::PrometheusBuilder> {
    for (name, buckets) in HISTOGRAM_BUCKETS {
        builder = builder.set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full((*name).to_string()),
            buckets,
        )?;
    }
    Ok(builder)
}

/// Whether a series name (as a rule or panel queries it) is one this node exports: a listed
/// metric, or a histogram's `_bucket` / `_sum` / `_count`.
pub fn exports(series: &str) -> bool {
    METRICS.iter().any(|(name, kind, _)| {
        *name == series
            || (*kind == "histogram"
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| series.strip_suffix(suffix) == Some(*name)))
    })
}

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    for (name, kind, help) in METRICS {
        match *kind {
            "counter" => metrics::describe_counter!(*name, *help),
            "gauge" => metrics::describe_gauge!(*name, *help),
            _ => metrics::describe_histogram!(*name, *help),
        }
    }
}

/// Counters labelled only by chain, created at zero for every configured chain so that rates
/// and alerts see a series before the first event.
const PER_CHAIN_COUNTERS: &[&str] = &[
    "dvn_packets_observed_total",
    "dvn_packets_signed_total",
    "dvn_packets_verified_total",
    "dvn_nonce_gaps_total",
    "dvn_reorgs_detected_total",
    "dvn_forgery_refused_total",
    "dvn_equivocation_refused_total",
    "dvn_bad_events_total",
    "dvn_submissions_total",
    "dvn_submission_replacements_total",
    "dvn_submission_gas_used_total",
    "dvn_claim_deferrals_total",
];

/// Registers every per-chain counter at zero, and every packet state's gauge.
pub fn zero_init<'a>(chains: impl IntoIterator<Item = &'a str>) {
    let chains: Vec<&str> = chains.into_iter().collect();
    for src in &chains {
        for dst in chains.iter().filter(|d| *d != src) {
            metrics::counter!("dvn_sole_verifier_packets_total", "src" => src.to_string(), "dst" => dst.to_string())
                .increment(0);
        }
    }
    for chain in chains {
        metrics::gauge!("dvn_reorg_too_deep", "chain" => chain.to_string()).set(0.0);
        metrics::gauge!("dvn_nonce_gap_seconds", "chain" => chain.to_string()).set(0.0);
        metrics::gauge!("dvn_signer_in_set", "chain" => chain.to_string()).set(1.0);
        metrics::gauge!("dvn_submitter_is_admin", "chain" => chain.to_string()).set(1.0);
        for reason in crate::pipeline::transactions::CancelReason::ALL {
            metrics::counter!("dvn_submission_cancels_total", "chain" => chain.to_string(), "reason" => reason.label())
                .increment(0);
        }
        for name in PER_CHAIN_COUNTERS {
            metrics::counter!(*name, "chain" => chain.to_string()).increment(0);
        }
        for block in ["made", "missed"] {
            metrics::counter!("dvn_submit_batches_landed_total", "chain" => chain.to_string(), "block" => block)
                .increment(0);
        }
    }
    for state in crate::store::PacketState::ALL {
        metrics::gauge!("dvn_packets", "state" => state.as_str()).set(0.0);
    }
    for from in crate::store::PacketState::ALL {
        for to in crate::store::PacketState::ALL {
            if crate::store::is_legal(from, to) {
                metrics::counter!("dvn_state_races_total", "from" => from.as_str(), "to" => to.as_str())
                    .increment(0);
            }
        }
    }
    metrics::gauge!("dvn_halted_paths").set(0.0);
    for reason in crate::peer::listener::REFUSALS {
        metrics::counter!("dvn_peer_tls_refused_total", "reason" => *reason).increment(0);
    }
    for stage in ["watch", "sign", "submit"] {
        metrics::counter!("dvn_stage_errors_total", "stage" => stage).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_zero_initialised_counter_is_described() {
        for name in PER_CHAIN_COUNTERS {
            assert!(
                METRICS
                    .iter()
                    .any(|(m, kind, _)| m == name && *kind == "counter"),
                "{name}"
            );
        }
    }
}
