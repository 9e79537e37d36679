//! One store test suite, run against both backends: embedded SQLite and PostgreSQL.

use alloy::primitives::{Address, B256};
use dvn::store::{NewPacket, Observed, PacketState, PathKey, Store, SubmissionRow};

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
    store
        .record_own_signature(
            first.guid,
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
    store
        .record_own_signature(p.guid, 5, 4_600, call_hash, me, &[7; 65])
        .await
        .unwrap();
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
    store.record_submission(&sub, &[p.guid]).await.unwrap();
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

    store
        .retry(p.guid, PacketState::Signed, "skipped")
        .await
        .unwrap();
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
        .record_scan(30101, &[], &[(path, 5)], (1, B256::ZERO))
        .await
        .unwrap();
    store
        .record_scan(30101, &[], &[(path, 3)], (2, B256::ZERO))
        .await
        .unwrap();
    assert_eq!(
        store.path_max_nonce(&path).await.unwrap(),
        Some(5),
        "a rescan never lowers it"
    );
    store
        .record_scan(30101, &[], &[(path, 6)], (3, B256::ZERO))
        .await
        .unwrap();
    assert_eq!(store.path_max_nonce(&path).await.unwrap(), Some(6));
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

#[test]
fn unsupported_urls_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(Store::connect("mysql://x")).unwrap_err();
    assert!(err.to_string().contains("unsupported"));
}
