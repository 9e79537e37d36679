//! One store test suite, run against both backends: embedded SQLite and PostgreSQL.

use alloy::primitives::{Address, B256};
use dvn::store::{NewPacket, Observed, PacketState, PathKey, SignatureWrite, Store, SubmissionRow};

fn packet(nonce: u64, payload: u8) -> NewPacket {
    NewPacket {
        guid: B256::repeat_byte(nonce as u8),
        src_eid: 30101,
        dst_eid: 30212,
        sender: B256::left_padding_from(&[1; 20]),
        receiver: B256::left_padding_from(&[2; 20]),
        nonce,
        header: vec![1; 81],
        payload_hash: B256::repeat_byte(payload),
        tx_hash: B256::repeat_byte(0xee),
        block_number: 10 + nonce,
        block_hash: B256::repeat_byte(0xbb),
        log_index: 2,
        block_timestamp: 1_700_000_000,
    }
}

async fn observation_is_idempotent_and_moves_the_cursor(store: Store) {
    assert_eq!(store.cursor(30101).await.unwrap(), None);
    let p = packet(1, 0xa1);
    let out = store
        .record_scan(
            30101,
            std::slice::from_ref(&p),
            &[],
            (11, B256::repeat_byte(1)),
        )
        .await
        .unwrap();
    assert_eq!(out, vec![Observed::New]);
    let out = store
        .record_scan(
            30101,
            std::slice::from_ref(&p),
            &[],
            (12, B256::repeat_byte(2)),
        )
        .await
        .unwrap();
    assert_eq!(out, vec![Observed::Known]);
    assert_eq!(
        store.cursor(30101).await.unwrap(),
        Some((12, B256::repeat_byte(2)))
    );
    let rows = store
        .packets(PacketState::Observed, None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].packet, p);
    assert_eq!(
        store
            .packets(PacketState::Observed, Some(30101), 10)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        store
            .packets(PacketState::Observed, Some(30212), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    store
        .rewind_cursor(30101, (5, B256::repeat_byte(5)))
        .await
        .unwrap();
    assert_eq!(
        store.cursor(30101).await.unwrap(),
        Some((5, B256::repeat_byte(5)))
    );
}

async fn a_new_payload_replaces_before_signing_and_conflicts_after(store: Store) {
    let first = packet(1, 0xa1);
    store
        .record_scan(30101, std::slice::from_ref(&first), &[], (1, B256::ZERO))
        .await
        .unwrap();
    let replaced = packet(1, 0xa2);
    let out = store
        .record_scan(30101, std::slice::from_ref(&replaced), &[], (2, B256::ZERO))
        .await
        .unwrap();
    assert_eq!(out, vec![Observed::Replaced]);
    assert_eq!(
        store
            .packet(first.guid)
            .await
            .unwrap()
            .unwrap()
            .packet
            .payload_hash,
        replaced.payload_hash
    );

    let signer = Address::repeat_byte(9);
    let row = store.packet(first.guid).await.unwrap().unwrap();
    store
        .record_own_signature(
            row.expect(),
            5,
            9_999,
            B256::repeat_byte(0xcc),
            signer,
            &[7; 65],
        )
        .await
        .unwrap();
    let third = packet(1, 0xa3);
    let out = store
        .record_scan(30101, std::slice::from_ref(&third), &[], (3, B256::ZERO))
        .await
        .unwrap();
    assert_eq!(out, vec![Observed::Conflict]);
    let row = store.packet(first.guid).await.unwrap().unwrap();
    assert_eq!(row.state, PacketState::Conflict);
    assert_eq!(
        row.packet.payload_hash, replaced.payload_hash,
        "the signed payload is kept"
    );
    assert!(row.last_error.unwrap().contains("equivocation"));
}

async fn signatures_and_submissions_round_trip(store: Store) {
    let p = packet(3, 0xa1);
    store
        .record_scan(30101, std::slice::from_ref(&p), &[], (1, B256::ZERO))
        .await
        .unwrap();
    let call_hash = B256::repeat_byte(0xcc);
    let me = Address::repeat_byte(1);
    let row = store.packet(p.guid).await.unwrap().unwrap();
    assert!(store
        .record_own_signature(row.expect(), 5, 4_600, call_hash, me, &[7; 65])
        .await
        .unwrap());
    let row = store.packet(p.guid).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.confirmations, row.expiration, row.call_hash),
        (PacketState::Signed, Some(5), Some(4_600), Some(call_hash))
    );
    assert_eq!(
        store
            .packet_by_call_hash(call_hash)
            .await
            .unwrap()
            .unwrap()
            .packet
            .guid,
        p.guid
    );
    assert!(store
        .insert_signature(call_hash, Address::repeat_byte(2), &[8; 65], "peer")
        .await
        .unwrap());
    assert!(
        !store
            .insert_signature(call_hash, Address::repeat_byte(2), &[9; 65], "peer")
            .await
            .unwrap(),
        "repeat is a no-op"
    );
    let mut sigs = store.signatures(call_hash).await.unwrap();
    sigs.sort();
    assert_eq!(
        sigs,
        vec![(me, vec![7; 65]), (Address::repeat_byte(2), vec![8; 65])]
    );

    store.mark_ready(p.guid, 1_000).await.unwrap();
    store.mark_ready(p.guid, 2_000).await.unwrap();
    assert_eq!(
        store.packet(p.guid).await.unwrap().unwrap().ready_at_ms,
        Some(1_000),
        "first quorum time kept"
    );

    let sub = SubmissionRow {
        tx_hash: B256::repeat_byte(0x51),
        dst_eid: 30212,
        account_nonce: 4,
        raw_tx: vec![1, 2, 3],
        created_at_ms: 0,
    };
    let row = store.packet(p.guid).await.unwrap().unwrap();
    assert!(store
        .record_submission(&sub, &[row.expect()])
        .await
        .unwrap());
    let pending = store.pending_submissions(30212).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].tx_hash,
            pending[0].account_nonce,
            pending[0].raw_tx.clone()
        ),
        (sub.tx_hash, 4, vec![1, 2, 3])
    );
    assert_eq!(
        store
            .packets_of_submission(sub.tx_hash)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.packet(p.guid).await.unwrap().unwrap().state,
        PacketState::Submitted
    );

    let row = store.packet(p.guid).await.unwrap().unwrap();
    assert!(store
        .retry(row.expect(), PacketState::Signed, "skipped")
        .await
        .unwrap());
    let row = store.packet(p.guid).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.attempts, row.submission, row.ready_at_ms),
        (PacketState::Signed, 1, None, None)
    );
    store.finish_submission(sub.tx_hash, "mined").await.unwrap();
    assert!(store.pending_submissions(30212).await.unwrap().is_empty());
    let counts = store.count_by_state().await.unwrap();
    assert_eq!(counts, vec![("signed".to_string(), 1)]);
}

async fn path_nonces_only_move_up(store: Store) {
    let path = PathKey {
        src_eid: 30101,
        sender: B256::repeat_byte(1),
        dst_eid: 30212,
        receiver: B256::repeat_byte(2),
    };
    assert_eq!(store.path_max_nonce(&path).await.unwrap(), None);
    store
        .record_scan(30101, &[], &[(path, 5, 10 + 5)], (1, B256::ZERO))
        .await
        .unwrap();
    store
        .record_scan(30101, &[], &[(path, 3, 10 + 3)], (2, B256::ZERO))
        .await
        .unwrap();
    assert_eq!(
        store.path_max_nonce(&path).await.unwrap(),
        Some((5, Some(15))),
        "a rescan never lowers it"
    );
    store
        .record_scan(30101, &[], &[(path, 6, 10 + 6)], (3, B256::ZERO))
        .await
        .unwrap();
    assert_eq!(
        store.path_max_nonce(&path).await.unwrap(),
        Some((6, Some(16))),
        "the block of the highest nonce goes with it"
    );
    let other = PathKey {
        dst_eid: 30110,
        ..path
    };
    assert_eq!(
        store.path_max_nonce(&other).await.unwrap(),
        None,
        "paths are independent"
    );
}

/// Two stages decide on the same snapshot: the first move wins, the second changes nothing
/// and is told so — in either order.
async fn two_writers_on_one_row_the_first_wins(store: Store) {
    for signer_first in [true, false] {
        let p = packet(if signer_first { 20 } else { 21 }, 0xa1);
        store
            .record_scan(30101, std::slice::from_ref(&p), &[], (1, B256::ZERO))
            .await
            .unwrap();
        let snapshot = store.packet(p.guid).await.unwrap().unwrap();
        let call_hash = B256::repeat_byte(if signer_first { 0xcd } else { 0xce });
        let sign = || {
            store.record_own_signature(
                snapshot.expect(),
                1,
                9_999,
                call_hash,
                Address::repeat_byte(1),
                &[7; 65],
            )
        };
        let orphan = || store.transition(snapshot.expect(), PacketState::Orphaned, Some("gone"));
        let (first, second, winner) = if signer_first {
            (
                sign().await.unwrap(),
                orphan().await.unwrap(),
                PacketState::Signed,
            )
        } else {
            (
                orphan().await.unwrap(),
                sign().await.unwrap(),
                PacketState::Orphaned,
            )
        };
        assert!(
            first && !second,
            "first wins, second loses (signer first: {signer_first})"
        );
        let row = store.packet(p.guid).await.unwrap().unwrap();
        assert_eq!(row.state, winner);
        assert_eq!(row.version, snapshot.version + 1, "one move applied");
        let own = store.signatures(call_hash).await.unwrap();
        assert_eq!(
            own.len(),
            usize::from(signer_first),
            "a signature whose move lost is not stored"
        );
    }
}

/// The race the issue names: the sign stage finds the packet's receipt moved (reorg) and
/// decides "orphaned", while the watcher has just re-observed it in its new block. The
/// re-observation wins; the stale orphan mark is a no-op. And the other order: an orphan mark
/// first, then the re-observation brings the packet back.
async fn a_reobservation_beats_a_stale_orphan_mark(store: Store) {
    let p = packet(30, 0xa1);
    store
        .record_scan(30101, std::slice::from_ref(&p), &[], (1, B256::ZERO))
        .await
        .unwrap();
    let stale = store.packet(p.guid).await.unwrap().unwrap();
    let moved = NewPacket {
        block_number: p.block_number + 3,
        block_hash: B256::repeat_byte(0x77),
        ..p.clone()
    };
    let out = store
        .record_scan(30101, std::slice::from_ref(&moved), &[], (2, B256::ZERO))
        .await
        .unwrap();
    assert_eq!(out, vec![Observed::Known]);
    assert!(!store
        .transition(stale.expect(), PacketState::Orphaned, Some("moved"))
        .await
        .unwrap());
    let row = store.packet(p.guid).await.unwrap().unwrap();
    assert_eq!(row.state, PacketState::Observed);
    assert_eq!(
        row.packet.block_hash, moved.block_hash,
        "the new location is kept"
    );

    // Orphaned first, re-observed after: back to observed at the new place.
    assert!(store
        .transition(row.expect(), PacketState::Orphaned, Some("gone"))
        .await
        .unwrap());
    let again = NewPacket {
        block_hash: B256::repeat_byte(0x78),
        ..moved
    };
    store
        .record_scan(30101, std::slice::from_ref(&again), &[], (3, B256::ZERO))
        .await
        .unwrap();
    let row = store.packet(p.guid).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.packet.block_hash),
        (PacketState::Observed, again.block_hash)
    );
}

/// Truly concurrent writers on one row (PostgreSQL has a real pool; SQLite serialises): of
/// many moves decided on one snapshot, exactly one is applied.
async fn concurrent_moves_on_one_snapshot_apply_once(store: Store) {
    let p = packet(40, 0xa1);
    store
        .record_scan(30101, std::slice::from_ref(&p), &[], (1, B256::ZERO))
        .await
        .unwrap();
    let snapshot = store.packet(p.guid).await.unwrap().unwrap();
    let moves = [
        PacketState::Signed,
        PacketState::Orphaned,
        PacketState::Skipped,
        PacketState::Invalid,
    ];
    let results = futures::future::join_all(
        moves
            .iter()
            .map(|to| store.transition(snapshot.expect(), *to, None)),
    )
    .await;
    let won: Vec<PacketState> = moves
        .iter()
        .zip(&results)
        .filter(|(_, r)| *r.as_ref().unwrap())
        .map(|(to, _)| *to)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert_eq!(store.packet(p.guid).await.unwrap().unwrap().state, won[0]);
}

async fn illegal_moves_are_refused_and_halted_paths_round_trip(store: Store) {
    let p = packet(50, 0xa1);
    store
        .record_scan(30101, std::slice::from_ref(&p), &[], (1, B256::ZERO))
        .await
        .unwrap();
    let row = store.packet(p.guid).await.unwrap().unwrap();
    let err = store
        .transition(row.expect(), PacketState::Submitted, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("illegal"), "{err}");
    assert!(store
        .record_own_signature(
            row.expect(),
            1,
            9_999,
            B256::repeat_byte(0x50),
            Address::repeat_byte(1),
            &[7; 65]
        )
        .await
        .unwrap());
    // A different payload for the signed nonce: conflict, and the path is halted with it.
    let out = store
        .record_scan(30101, &[packet(50, 0xa2)], &[], (2, B256::ZERO))
        .await
        .unwrap();
    assert_eq!(out, vec![Observed::Conflict]);
    let halted = store.halted_paths().await.unwrap();
    assert_eq!(halted.len(), 1);
    assert_eq!((halted[0].path, halted[0].nonce), (p.path(), 50));
    assert!(halted[0].reason.contains("equivocation"));
    assert!(store.resume_path(&p.path()).await.unwrap());
    assert!(!store.resume_path(&p.path()).await.unwrap(), "once");
    assert!(store.halted_paths().await.unwrap().is_empty());
    assert_eq!(
        store.packet(p.guid).await.unwrap().unwrap().state,
        PacketState::Conflict,
        "the conflicting packet itself stays halted"
    );
}

/// A packet whose checks failed backs off alone; the page moves on to the next, and paths
/// share a page fairly.
async fn deferred_packets_leave_the_page_and_paths_share_it(store: Store) {
    let busy: Vec<NewPacket> = (1..=5).map(|n| packet(100 + n, 0xa1)).collect();
    let quiet = NewPacket {
        guid: B256::repeat_byte(0xf0),
        receiver: B256::left_padding_from(&[3; 20]),
        ..packet(1, 0xa1)
    };
    let mut all = busy.clone();
    all.push(quiet.clone());
    store
        .record_scan(30101, &all, &[], (1, B256::ZERO))
        .await
        .unwrap();
    let page = store.packets(PacketState::Observed, None, 2).await.unwrap();
    let guids: Vec<B256> = page.iter().map(|r| r.packet.guid).collect();
    assert!(
        guids.contains(&quiet.guid),
        "the quiet path is not starved: {guids:?}"
    );
    assert!(
        guids.contains(&busy[0].guid),
        "each path's lowest nonce first"
    );
    let first = store.packet(busy[0].guid).await.unwrap().unwrap();
    assert!(store
        .defer(first.expect(), dvn::store::now_ms() + 60_000, "rpc down")
        .await
        .unwrap());
    let page = store
        .packets(PacketState::Observed, None, 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 5, "the deferred packet is not due");
    assert!(page.iter().all(|r| r.packet.guid != busy[0].guid));
    let row = store.packet(busy[0].guid).await.unwrap().unwrap();
    assert_eq!(
        (row.deferrals, row.last_error.as_deref()),
        (1, Some("rpc down"))
    );
    // Any move clears the backoff.
    assert!(store
        .transition(row.expect(), PacketState::Invalid, None)
        .await
        .unwrap());
    let row = store.packet(busy[0].guid).await.unwrap().unwrap();
    assert!(store
        .transition(row.expect(), PacketState::Observed, None)
        .await
        .unwrap());
    let page = store
        .packets(PacketState::Observed, None, 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 6);
}

/// A region's own share of a backlog: only packets whose source block falls in a rotation
/// slot of its designation, lowest nonces first, whatever lies below them.
async fn a_designated_page_holds_only_that_designations_packets(store: Store) {
    // Nonces 1..=12, source blocks a minute apart: slots 0, 1, 2, 0, 1, 2, … of 3 regions.
    let packets: Vec<NewPacket> = (1..=12u64)
        .map(|n| NewPacket {
            block_timestamp: 1_700_000_040 + 60 * (n - 1),
            ..packet(n, 0xa1)
        })
        .collect();
    store
        .record_scan(30101, &packets, &[], (1, B256::ZERO))
        .await
        .unwrap();
    let slot = |n: u64| (1_700_000_040 + 60 * (n - 1)) / 60 % 3;
    for index in 0..3u64 {
        let designation = dvn::store::Designation {
            slot_secs: 60,
            regions: 3,
            index,
        };
        let page = store
            .packets_designated(PacketState::Observed, 30212, designation, 3)
            .await
            .unwrap();
        let nonces: Vec<u64> = page.iter().map(|r| r.packet.nonce).collect();
        let expected: Vec<u64> = (1..=12).filter(|n| slot(*n) == index).take(3).collect();
        assert_eq!(nonces, expected, "designation {index}");
    }
    // Another destination has none; the plain page still sees everything.
    let designation = dvn::store::Designation {
        slot_secs: 60,
        regions: 3,
        index: 0,
    };
    assert!(store
        .packets_designated(PacketState::Observed, 30101, designation, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .packets(PacketState::Observed, None, 20)
            .await
            .unwrap()
            .len(),
        12
    );
}

/// Retention: finished packets older than the cut are deleted with their signatures; open
/// ones, recent ones and those waiting for an operator stay; a reader handle sees the same data.
async fn prune_keeps_what_is_open_recent_or_waiting(store: Store) {
    let packets: Vec<NewPacket> = (60..64).map(|n| packet(n, 0xa1)).collect();
    store
        .record_scan(30101, &packets, &[], (1, B256::ZERO))
        .await
        .unwrap();
    let sign = |guid: B256, n: u8| {
        let store = store.clone();
        async move {
            let row = store.packet(guid).await.unwrap().unwrap();
            assert!(store
                .record_own_signature(
                    row.expect(),
                    1,
                    9_999,
                    B256::repeat_byte(n),
                    Address::repeat_byte(1),
                    &[7; 65]
                )
                .await
                .unwrap());
            store.packet(guid).await.unwrap().unwrap()
        }
    };
    // 60: verified; 61: invalid (waits for an operator); 62: still signed; 63: observed.
    let row = sign(packets[0].guid, 0x60).await;
    assert!(store
        .transition(row.expect(), PacketState::Verified, None)
        .await
        .unwrap());
    let row = store.packet(packets[1].guid).await.unwrap().unwrap();
    assert!(store
        .transition(row.expect(), PacketState::Invalid, None)
        .await
        .unwrap());
    sign(packets[2].guid, 0x62).await;
    // Nothing is old enough yet.
    assert_eq!(store.prune(dvn::store::now_ms() - 60_000).await.unwrap(), 0);
    // Everything finished before "now + 1 s" goes.
    assert_eq!(store.prune(dvn::store::now_ms() + 1_000).await.unwrap(), 1);
    assert!(store.packet(packets[0].guid).await.unwrap().is_none());
    assert!(store
        .signatures(B256::repeat_byte(0x60))
        .await
        .unwrap()
        .is_empty());
    for kept in &packets[1..] {
        assert!(store.packet(kept.guid).await.unwrap().is_some());
    }
    assert_eq!(
        store
            .signatures(B256::repeat_byte(0x62))
            .await
            .unwrap()
            .len(),
        1
    );
    let reader = store.reader().await.unwrap();
    assert_eq!(reader.count_by_state().await.unwrap().len(), 3);
}

/// What the rows say, state by state (listed through the operator view, not the counts).
async fn counted_by_listing(store: &Store) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for state in PacketState::ALL {
        let n = store
            .recent_packets(Some(state), 10_000)
            .await
            .unwrap()
            .len();
        if n > 0 {
            out.push((state.as_str().to_string(), i64::try_from(n).unwrap()));
        }
    }
    out.sort();
    out
}

async fn counts_follow_every_insert_move_and_delete(store: Store) {
    let packets: Vec<NewPacket> = (100..160).map(|n| packet(n, 0xa1)).collect();
    store
        .record_scan(30101, &packets, &[], (1, B256::ZERO))
        .await
        .unwrap();
    assert_eq!(
        store.count_by_state().await.unwrap(),
        vec![("observed".to_string(), 60)]
    );
    // Two moves race on every snapshot (one wins each), all packets at once.
    let mut rows = Vec::new();
    for p in &packets {
        rows.push(store.packet(p.guid).await.unwrap().unwrap());
    }
    let targets = [
        PacketState::Signed,
        PacketState::Orphaned,
        PacketState::Skipped,
        PacketState::Invalid,
    ];
    let moves = rows.iter().enumerate().flat_map(|(i, row)| {
        [targets[i % 4], targets[(i + 1) % 4]].map(|to| store.transition(row.expect(), to, None))
    });
    let results = futures::future::join_all(moves).await;
    assert_eq!(results.iter().filter(|r| *r.as_ref().unwrap()).count(), 60);
    assert_eq!(
        store.count_by_state().await.unwrap(),
        counted_by_listing(&store).await
    );
    // Finished packets go with the retention period; the counts follow the deletes.
    assert!(store.prune(dvn::store::now_ms() + 1).await.unwrap() > 0);
    let after = store.count_by_state().await.unwrap();
    assert_eq!(after, counted_by_listing(&store).await);
    assert!(after
        .iter()
        .all(|(state, _)| state == "signed" || state == "invalid"));
}

async fn signatures_and_readiness_are_read_and_marked_for_many_packets_at_once(store: Store) {
    // More hashes than one IN list takes: the reads are chunked.
    let hashes: Vec<B256> = (0u64..620)
        .map(|i| B256::left_padding_from(&i.to_be_bytes()))
        .collect();
    for (i, hash) in hashes.iter().enumerate().filter(|(i, _)| i % 3 != 2) {
        let signer = Address::repeat_byte(1 + (i % 2) as u8);
        store
            .insert_signature(*hash, signer, &[i as u8; 65], "peer")
            .await
            .unwrap();
        if i % 3 == 0 {
            store
                .insert_signature(*hash, Address::repeat_byte(9), &[7; 65], "peer")
                .await
                .unwrap();
        }
    }
    let unknown = B256::repeat_byte(0xfe);
    let mut asked = hashes.clone();
    asked.push(unknown);
    let found = store.signatures_of(&asked).await.unwrap();
    for (i, hash) in hashes.iter().enumerate() {
        let mut got = found.get(hash).cloned().unwrap_or_default();
        got.sort();
        let mut want = store.signatures(*hash).await.unwrap();
        want.sort();
        assert_eq!(got, want, "hash {i}");
        assert_eq!(got.len(), [2, 1, 0][i % 3], "hash {i}");
    }
    assert!(!found.contains_key(&unknown));
    assert!(store.signatures_of(&[]).await.unwrap().is_empty());

    let packets: Vec<NewPacket> = (200..210).map(|n| packet(n, 0xa1)).collect();
    store
        .record_scan(30101, &packets, &[], (1, B256::ZERO))
        .await
        .unwrap();
    let guids: Vec<B256> = packets.iter().map(|p| p.guid).collect();
    store.mark_ready_all(&guids[..4], 1_000).await.unwrap();
    // A second mark never moves the first: the takeover clock starts once.
    store.mark_ready_all(&guids[..8], 2_000).await.unwrap();
    let mut ready = Vec::new();
    for guid in &guids {
        ready.push(store.packet(*guid).await.unwrap().unwrap().ready_at_ms);
    }
    assert_eq!(
        ready,
        [[Some(1_000); 4].as_slice(), &[Some(2_000); 4], &[None; 2]].concat()
    );
}

async fn many_moves_and_signatures_commit_together_each_with_its_own_outcome(store: Store) {
    // More packets than one IN list takes: the read is chunked.
    let packets: Vec<NewPacket> = (1_000..1_510)
        .map(|n| NewPacket {
            guid: B256::left_padding_from(&u64::to_be_bytes(n)),
            ..packet(n, 0xa1)
        })
        .collect();
    store
        .record_scan(30101, &packets, &[], (1, B256::ZERO))
        .await
        .unwrap();
    let mut asked: Vec<B256> = packets.iter().map(|p| p.guid).collect();
    asked.push(B256::repeat_byte(0xfe));
    let mut found: Vec<B256> = store
        .packets_by_guid(&asked)
        .await
        .unwrap()
        .iter()
        .map(|r| r.packet.guid)
        .collect();
    found.sort();
    let mut want: Vec<B256> = packets.iter().map(|p| p.guid).collect();
    want.sort();
    assert_eq!(
        found, want,
        "every stored packet once, the unknown GUID absent"
    );

    let (a, b, c) = (packets[0].guid, packets[1].guid, packets[2].guid);
    let row_a = store.packet(a).await.unwrap().unwrap();
    let stale_b = store.packet(b).await.unwrap().unwrap().expect();
    // B moves after its snapshot was taken: its writes below must not apply.
    store
        .transition(stale_b, PacketState::Observed, Some("re-observed"))
        .await
        .unwrap();
    let (me, peer) = (Address::repeat_byte(1), Address::repeat_byte(2));
    let (hash_a, hash_b) = (B256::repeat_byte(0xa0), B256::repeat_byte(0xb0));
    let own = |expect, call_hash| SignatureWrite::Own {
        expect,
        confirmations: 5,
        expiration: 4_600,
        call_hash,
        signer: me,
        signature: vec![7; 65],
    };
    let peers = |call_hash| SignatureWrite::Peer {
        call_hash,
        signer: peer,
        signature: vec![8; 65],
        source: "peer".into(),
    };
    let stored = store
        .write_signatures(&[
            peers(hash_a),
            own(row_a.expect(), hash_a),
            own(stale_b, hash_b),
            peers(hash_a),
        ])
        .await
        .unwrap();
    assert_eq!(stored, [true, true, false, false]);
    let mut signers: Vec<Address> = store
        .signatures(hash_a)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    signers.sort();
    assert_eq!(signers, [me, peer]);
    assert!(
        store.signatures(hash_b).await.unwrap().is_empty(),
        "a stale snapshot's signature is not stored"
    );
    let row_b = store.packet(b).await.unwrap().unwrap();
    assert_eq!(
        (row_b.state, row_b.call_hash),
        (PacketState::Observed, None)
    );

    let row_a = store.packet(a).await.unwrap().unwrap();
    assert_eq!(row_a.state, PacketState::Signed);
    let row_c = store.packet(c).await.unwrap().unwrap();
    let applied = store
        .transition_all(&[
            (row_a.expect(), PacketState::Verified, Some("by a receipt")),
            (stale_b, PacketState::Skipped, None),
            (row_c.expect(), PacketState::Skipped, None),
        ])
        .await
        .unwrap();
    assert_eq!(applied, [true, false, true]);
    let states: Vec<PacketState> = futures::future::join_all([a, b, c].map(|g| store.packet(g)))
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().state)
        .collect();
    assert_eq!(
        states,
        [
            PacketState::Verified,
            PacketState::Observed,
            PacketState::Skipped
        ]
    );
    assert!(store.transition_all(&[]).await.unwrap().is_empty());
    // An illegal move fails the whole commit: nothing of it is applied.
    let row_c = store.packet(c).await.unwrap().unwrap();
    let row_d = store.packet(packets[3].guid).await.unwrap().unwrap();
    assert!(store
        .transition_all(&[
            (row_d.expect(), PacketState::Skipped, None),
            (row_c.expect(), PacketState::Signed, None),
        ])
        .await
        .is_err());
    assert_eq!(
        store.packet(packets[3].guid).await.unwrap().unwrap().state,
        PacketState::Observed
    );
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("dvn.db").display());
                    super::$name(dvn::store::Store::connect(&url).await.unwrap()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::pg::PgDatabases::create(&["store"]);
                    super::$name(dvn::store::Store::connect(&db.url("store")).await.unwrap()).await;
                }
            )*
        }
    };
}

both_backends!(
    observation_is_idempotent_and_moves_the_cursor,
    a_new_payload_replaces_before_signing_and_conflicts_after,
    signatures_and_submissions_round_trip,
    path_nonces_only_move_up,
    two_writers_on_one_row_the_first_wins,
    a_reobservation_beats_a_stale_orphan_mark,
    concurrent_moves_on_one_snapshot_apply_once,
    illegal_moves_are_refused_and_halted_paths_round_trip,
    deferred_packets_leave_the_page_and_paths_share_it,
    a_designated_page_holds_only_that_designations_packets,
    prune_keeps_what_is_open_recent_or_waiting,
    counts_follow_every_insert_move_and_delete,
    signatures_and_readiness_are_read_and_marked_for_many_packets_at_once,
    many_moves_and_signatures_commit_together_each_with_its_own_outcome,
);

#[tokio::test]
async fn sqlite_state_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dvn.db").display());
    let p = packet(1, 0xa1);
    {
        let store = Store::connect(&url).await.unwrap();
        store
            .record_scan(
                30101,
                std::slice::from_ref(&p),
                &[],
                (7, B256::repeat_byte(7)),
            )
            .await
            .unwrap();
    }
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(
        store.cursor(30101).await.unwrap(),
        Some((7, B256::repeat_byte(7)))
    );
    assert!(store.packet(p.guid).await.unwrap().is_some());
}

/// SQLite on a full disk: writes fail (and SQLite may roll a failed transaction back by
/// itself); once space is back, every write the store reports done must be committed — seen
/// by another connection, and still there after a reopen — not held in a transaction left
/// open on the pool's connection.
#[tokio::test]
async fn sqlite_on_a_full_disk_fails_writes_and_leaves_none_uncommitted() {
    let disk = crate::common::SmallDisk::mount(4);
    let url = format!("sqlite://{}", disk.path().join("dvn.db").display());
    let store = Store::connect(&url).await.unwrap();
    let scan = |n: u64| {
        let store = store.clone();
        async move {
            let p = packet(n, n as u8);
            let p = NewPacket {
                guid: B256::left_padding_from(&n.to_be_bytes()),
                header: vec![n as u8; 2_000],
                ..p
            };
            store
                .record_scan(
                    30101,
                    std::slice::from_ref(&p),
                    &[],
                    (n, B256::repeat_byte(n as u8)),
                )
                .await
        }
    };
    for n in 1..=20 {
        scan(n).await.unwrap();
    }
    let filler = disk.fill();
    let mut failed = 0;
    for n in 21..=600 {
        if scan(n).await.is_err() {
            failed += 1;
        }
    }
    assert!(failed > 0, "no write failed on the full disk");
    std::fs::remove_file(filler).unwrap();
    for n in 601..=620 {
        scan(n).await.unwrap();
    }
    let written = store
        .packets(PacketState::Observed, None, 10_000)
        .await
        .unwrap()
        .len();
    let other = Store::connect(&url).await.unwrap();
    assert_eq!(
        other.cursor(30101).await.unwrap(),
        Some((620, B256::repeat_byte(620u64 as u8))),
        "the last write is visible to another connection"
    );
    assert_eq!(
        other
            .packets(PacketState::Observed, None, 10_000)
            .await
            .unwrap()
            .len(),
        written,
        "another connection sees every packet the writer sees"
    );
    drop(store);
    let reopened = Store::connect(&url).await.unwrap();
    assert_eq!(
        reopened
            .packets(PacketState::Observed, None, 10_000)
            .await
            .unwrap()
            .len(),
        written,
        "every packet is still there after a reopen"
    );
}

#[test]
fn unsupported_urls_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(Store::connect("mysql://x")).unwrap_err();
    assert!(err.to_string().contains("unsupported"));
}
