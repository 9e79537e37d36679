//! The PKCS#11 backend against a real SoftHSM2 token created by the test (temporary
//! `SOFTHSM2_CONF`, non-extractable key generated inside the token).

use std::path::Path;

use alloy::primitives::{keccak256, B256};
use dvn::config::{KeyConfig, SigningConfig};
use dvn::signer::pkcs11::{HsmError, Pkcs11Signer};
use dvn::signer::KeyHandle;

pub use dvn_devnet::softhsm::{SoftHsm, MODULE, PIN, TOKEN};

fn module() -> &'static Path {
    Path::new(MODULE)
}

#[tokio::test]
async fn a_generated_token_key_signs_100_digests_that_all_recover() {
    let _hsm = SoftHsm::create().unwrap();
    let address = Pkcs11Signer::generate(module(), TOKEN, "dvn-signer", PIN).unwrap();
    assert!(matches!(
        Pkcs11Signer::generate(module(), TOKEN, "dvn-signer", PIN),
        Err(HsmError::KeyExists(_))
    ));
    assert_eq!(
        Pkcs11Signer::list(module(), TOKEN, PIN).unwrap(),
        vec![("dvn-signer".to_string(), address)]
    );

    let signer = Pkcs11Signer::open(module(), TOKEN, "dvn-signer", PIN).unwrap();
    assert_eq!(signer.address(), address);
    for i in 0..100u32 {
        let digest: B256 = keccak256(i.to_be_bytes());
        let signature = signer.sign_digest(digest).await.unwrap();
        assert_eq!(
            signature.recover_address_from_prehash(&digest).unwrap(),
            address,
            "signature {i}"
        );
        assert_eq!(signature.normalize_s(), None, "signature {i} is low-s");
        let v = signature.as_bytes()[64];
        assert!(v == 27 || v == 28);
    }

    // Through the node's key interface, as configured.
    std::env::set_var("DVN_TEST_HSM_PIN", PIN);
    let config = KeyConfig::Pkcs11 {
        module: module().into(),
        token_label: TOKEN.into(),
        key_label: "dvn-signer".into(),
        pin_env: Some("DVN_TEST_HSM_PIN".into()),
        pin_file: None,
    };
    let handle = KeyHandle::load(&config, "signer", &SigningConfig::default())
        .await
        .unwrap();
    assert_eq!(handle.address(), address);
    assert_eq!(handle.backend(), "pkcs11");
    let digest = B256::repeat_byte(7);
    assert_eq!(
        handle
            .sign_digest(digest)
            .await
            .unwrap()
            .recover_address_from_prehash(&digest)
            .unwrap(),
        address
    );
}

#[tokio::test]
async fn wrong_pin_missing_token_and_wrong_label_name_the_cause_but_never_the_pin() {
    let _hsm = SoftHsm::create().unwrap();
    Pkcs11Signer::generate(module(), TOKEN, "dvn-signer", PIN).unwrap();

    let wrong_pin = "0000-wrong-pin";
    let err = Pkcs11Signer::open(module(), TOKEN, "dvn-signer", wrong_pin)
        .unwrap_err()
        .to_string();
    assert!(err.contains("login") && err.contains(TOKEN), "{err}");
    assert!(
        !err.contains(wrong_pin) && !err.contains(PIN),
        "the PIN leaked: {err}"
    );

    let err = Pkcs11Signer::open(module(), "no-such-token", "dvn-signer", PIN).unwrap_err();
    assert!(matches!(err, HsmError::NoToken(_)), "{err}");

    let err = Pkcs11Signer::open(module(), TOKEN, "no-such-key", PIN).unwrap_err();
    assert!(matches!(err, HsmError::NoKey { .. }), "{err}");
    assert!(err.to_string().contains("no-such-key"));

    let err = Pkcs11Signer::open(
        Path::new("/nonexistent/libpkcs11.so"),
        TOKEN,
        "dvn-signer",
        PIN,
    )
    .unwrap_err();
    assert!(matches!(err, HsmError::Module { .. }), "{err}");
}

/// `dvn keys …` through the binary against SoftHSM, each recorded in the node's audit log
/// (issue 11 §3): a generation is `begun` before the key exists and refused when that record
/// cannot be written; uses record their outcome; the PIN appears nowhere.
#[test]
fn keys_commands_generate_list_and_test_sign_through_the_binary_and_are_audited() {
    let hsm = SoftHsm::create().unwrap();
    let conf = hsm.conf.to_str().unwrap().to_string();
    let dvn = |args: &[&str]| {
        let (code, text) =
            crate::common::dvn_run(args, &[("SOFTHSM2_CONF", &conf), ("HSM_PIN", PIN)]);
        assert!(!text.contains(PIN), "the PIN was printed: {text}");
        (code == 0, text)
    };
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/config.yaml"
    ))
    .unwrap();
    let keystore_signer = "signer:                          # this region's DVN multisig key\n  kind: keystore\n  path: /run/secrets/dvn-signer.json\n  password_file: /run/secrets/dvn-signer.password\n";
    assert!(
        example.contains(keystore_signer),
        "the example's signer block changed"
    );
    let example_store = "url: sqlite:///var/lib/dvn/dvn.db";
    assert!(
        example.contains(example_store),
        "the example's store changed"
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dvn.db");
    let config = example
        .replace(
            keystore_signer,
            &format!("signer:\n  kind: pkcs11\n  module: {MODULE}\n  token_label: {TOKEN}\n  key_label: aws-signer\n  pin_env: HSM_PIN\n"),
        )
        .replace(example_store, &format!("url: sqlite://{}", db.display()));
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &config).unwrap();
    let cfg = path.to_str().unwrap();
    // A node whose store cannot be opened: its audit log cannot be written.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        config.replace(
            &format!("url: sqlite://{}", db.display()),
            "url: sqlite:///proc/no-such-dir/dvn.db",
        ),
    )
    .unwrap();

    let token = ["--module", MODULE, "--token-label", TOKEN];
    let (ok, refused) = dvn(&[
        &["keys", "generate"][..],
        &token,
        &["--key-label", "unrecorded", "-c", broken.to_str().unwrap()],
    ]
    .concat());
    assert!(
        !ok && refused.contains("audit log cannot be written"),
        "{refused}"
    );
    let (ok, generated) = dvn(&[
        &["keys", "generate"][..],
        &token,
        &["--key-label", "aws-signer", "-c", cfg],
    ]
    .concat());
    assert!(ok, "{generated}");
    let address = generated.trim().to_string();
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{address}"
    );
    let (ok, listed) = dvn(&[&["keys", "list"][..], &token, &["-c", cfg]].concat());
    assert!(
        ok && listed.contains("aws-signer") && listed.contains(&address),
        "{listed}"
    );
    assert!(
        !listed.contains("unrecorded"),
        "a generation whose audit record failed made a key anyway: {listed}"
    );
    let (ok, signed) = dvn(&["keys", "test-sign", "--config", cfg]);
    assert!(ok, "{signed}");
    assert!(
        signed.contains(&address) && signed.contains("pkcs11") && signed.contains("recovers"),
        "{signed}"
    );
    // Without -c a generation still works (a new host has no node yet) and says it is not recorded.
    let (ok, unrecorded) =
        dvn(&[&["keys", "generate"][..], &token, &["--key-label", "spare"]].concat());
    assert!(ok && unrecorded.contains("not recorded"), "{unrecorded}");

    let (ok, export) = dvn(&["audit", "export", "-c", cfg, "--since", "0"]);
    assert!(ok, "{export}");
    assert!(!export.contains(PIN), "the PIN is in the audit log");
    let records: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (field("operation"), field("target"), field("result"))
        })
        .collect();
    let generate_target = format!("pkcs11:{TOKEN}/aws-signer");
    let expected = [
        ("keys.generate", generate_target.as_str(), "begun"),
        ("keys.generate", generate_target.as_str(), "ok"),
        ("keys.list", &*format!("pkcs11:{TOKEN}"), "ok"),
        ("keys.test_sign", "signer", "ok"),
    ];
    let seen_ref: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|(o, t, r)| (o.as_str(), t.as_str(), r.as_str()))
        .collect();
    assert_eq!(seen_ref, expected, "the audit log of the key commands");
    let generated_ok = &records[1];
    assert_eq!(generated_ok["params"]["address"], address.as_str());
    assert!(generated_ok["operator"]
        .as_str()
        .unwrap()
        .starts_with("local:"));
    let (ok, verified) = dvn(&["audit", "verify", "-c", cfg]);
    assert!(ok && verified.contains("intact"), "{verified}");
}

/// The HSM failing mid-run: its token store made unreachable. Signing fails and the key shows
/// down (never a wrong signature); once the store is back, the key re-opens its session and
/// signs again without a restart.
#[tokio::test]
async fn an_hsm_lost_mid_run_reports_down_and_resumes_when_back() {
    let hsm = SoftHsm::create().unwrap();
    let address = Pkcs11Signer::generate(module(), TOKEN, "dvn-signer", PIN).unwrap();
    std::env::set_var("DVN_TEST_HSM_PIN", PIN);
    let config = KeyConfig::Pkcs11 {
        module: module().into(),
        token_label: TOKEN.into(),
        key_label: "dvn-signer".into(),
        pin_env: Some("DVN_TEST_HSM_PIN".into()),
        pin_file: None,
    };
    let policy = SigningConfig {
        timeout_ms: 2_000,
        attempts: 2,
        probe_interval_secs: 1,
    };
    let handle = KeyHandle::load(&config, "signer", &policy).await.unwrap();
    assert_eq!(handle.address(), address);
    handle.sign_digest(B256::repeat_byte(1)).await.unwrap();

    hsm.disconnect().unwrap();
    let err = handle
        .sign_digest(B256::repeat_byte(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(!handle.health().up(), "down after: {err}");
    assert!(!err.contains(PIN));

    hsm.reconnect().unwrap();
    assert!(
        handle.probe(std::time::Duration::from_secs(1)).await,
        "{:?}",
        handle.health().last_error()
    );
    assert!(handle.health().up());
    let digest = B256::repeat_byte(3);
    let signature = handle.sign_digest(digest).await.unwrap();
    assert_eq!(
        signature.recover_address_from_prehash(&digest).unwrap(),
        address
    );
}
