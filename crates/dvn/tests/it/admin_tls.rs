//! Issue 11 §2, optional mutual TLS on the admin side: with `admin.listen` the admin API leaves
//! the operations listener and is served over mutual TLS. A caller needs a client certificate
//! from the admin CA naming one of `admin.clients` *and* a token; anything else is refused
//! before any HTTP and counted by reason. `dvn admin` reaches it with `--tls-*`, every call is
//! audited with the certificate's name, and the node goes on verifying.

use std::path::Path;
use std::time::Duration;

use dvn::store::Store;
use dvn_devnet::nodes::{DvnNode, NodeOptions};
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use serde_json::json;

use crate::common::{dvn_cli, dvn_run, labelled_metric, new_token, Stand};
use crate::e2e::TIMEOUT;
use crate::peer_tls::client;

/// `GET /admin/v1/status` with `token` through `http` is refused at the TLS layer and counted
/// under `reason`.
async fn refused(node: &DvnNode, http: &reqwest::Client, base: &str, token: &str, reason: &str) {
    let label = format!("reason=\"{reason}\"");
    let before = labelled_metric(node, "dvn_admin_tls_refused_total", &[&label]).await;
    let answer = http
        .get(format!("{base}/admin/v1/status"))
        .bearer_auth(token)
        .send()
        .await;
    assert!(
        !matches!(&answer, Ok(r) if r.status().is_success()),
        "{reason}: answered {answer:?}"
    );
    let counted = eventually(TIMEOUT, Duration::from_millis(50), || async {
        let now = labelled_metric(node, "dvn_admin_tls_refused_total", &[&label]).await;
        (now > before).then_some(())
    })
    .await;
    assert!(counted.is_some(), "not counted as {reason}");
}

fn identity(dir: &Path, name: &str) -> reqwest::Client {
    client(Some((
        &dir.join(format!("{name}.pem")),
        &dir.join(format!("{name}.key")),
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_on_its_own_listener_needs_an_operator_certificate_and_a_token() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    // The admin CA: the listener's certificate (named after the region) and two operators'.
    let admin = tempfile::tempdir().unwrap();
    let dir = admin.path();
    dvn_cli(&[
        "certs",
        "new",
        "--dir",
        dir.to_str().unwrap(),
        "--names",
        "aws,alice,mallory",
    ]);
    let other_ca = tempfile::tempdir().unwrap();
    dvn_cli(&[
        "certs",
        "new",
        "--dir",
        other_ca.path().to_str().unwrap(),
        "--names",
        "alice",
    ]);
    let issuer = dvn::tls::issue::load_issuer(dir).unwrap();
    let expired = tempfile::tempdir().unwrap();
    dvn::tls::issue::issue_one(expired.path(), &issuer, "alice", &[], 30, -400).unwrap();

    let port = dvn_devnet::nodes::free_port().unwrap();
    let ca = dir.join("ca.pem");
    stand.nodes.nodes[0]
        .edit_config(|c| {
            c["admin"] = json!({
                "listen": format!("127.0.0.1:{port}"),
                "tls": {
                    "ca": ca.to_str().unwrap(),
                    "cert": dir.join("aws.pem").to_str().unwrap(),
                    "key": dir.join("aws.key").to_str().unwrap(),
                },
                "clients": ["alice"],
            });
        })
        .unwrap();
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let aws = &stand.nodes.nodes[0];
    let cfg = aws.config_path.to_str().unwrap().to_string();
    let token = new_token(&cfg, "alice-op", "operator");
    let base = format!("https://127.0.0.1:{port}");

    // Not on the operations listener any more, and it says where it went.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ops = plain
        .get(format!("{}/admin/v1/status", aws.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ops.status().as_u16(), 404);
    assert!(ops.text().await.unwrap().contains("admin.listen"));

    refused(aws, &client(None), &base, &token, "no_certificate").await;
    refused(
        aws,
        &identity(other_ca.path(), "alice"),
        &base,
        &token,
        "unknown_ca",
    )
    .await;
    refused(aws, &identity(dir, "mallory"), &base, &token, "not_a_peer").await;
    refused(
        aws,
        &identity(expired.path(), "alice"),
        &base,
        &token,
        "expired",
    )
    .await;
    let before = labelled_metric(aws, "dvn_admin_tls_refused_total", &["reason=\"not_tls\""]).await;
    let answer = plain
        .get(format!("http://127.0.0.1:{port}/admin/v1/status"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(!matches!(&answer, Ok(r) if r.status().is_success()));
    let counted = eventually(TIMEOUT, Duration::from_millis(50), || async {
        (labelled_metric(aws, "dvn_admin_tls_refused_total", &["reason=\"not_tls\""]).await
            > before)
            .then_some(())
    })
    .await;
    assert!(counted.is_some(), "plain HTTP counted as not_tls");

    // The right certificate is not enough: a token is still needed.
    let alice = identity(dir, "alice");
    let no_token = alice
        .get(format!("{base}/admin/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status().as_u16(), 401);
    let ok = alice
        .get(format!("{base}/admin/v1/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);

    // `dvn admin` over mutual TLS, the listener's certificate checked against node.name.
    let env = [("DVN_ADMIN_TOKEN", token.as_str())];
    let (alice_cert, alice_key) = (dir.join("alice.pem"), dir.join("alice.key"));
    let tls_args = [
        "--tls-ca",
        ca.to_str().unwrap(),
        "--tls-cert",
        alice_cert.to_str().unwrap(),
        "--tls-key",
        alice_key.to_str().unwrap(),
    ];
    let (code, text) = dvn_run(
        &[&["admin", "status", "-c", &cfg][..], &tls_args].concat(),
        &env,
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("packets"), "{text}");
    let chain = dvn::config::Config::load(&aws.config_path).unwrap().chains[0]
        .name
        .clone();
    let pause = [
        "admin",
        "pause",
        "-c",
        &cfg,
        "--chain",
        &chain,
        "--reason",
        "mtls drill",
    ];
    let (code, text) = dvn_run(&[&pause[..], &tls_args].concat(), &env);
    assert_eq!(code, 0, "{text}");
    let resume = ["admin", "resume", "-c", &cfg, "--chain", &chain];
    let (code, text) = dvn_run(&[&resume[..], &tls_args].concat(), &env);
    assert_eq!(code, 0, "{text}");
    // Without a client certificate the CLI cannot get in.
    let (code, text) = dvn_run(&["admin", "status", "-c", &cfg], &env);
    assert_ne!(code, 0, "{text}");
    // A listener whose certificate names another region is not trusted by the CLI.
    let (code, text) = dvn_run(
        &[
            &["admin", "status", "-c", &cfg, "--tls-server-name", "gcp"][..],
            &tls_args,
        ]
        .concat(),
        &env,
    );
    assert_ne!(code, 0, "{text}");

    // Every call that reached HTTP is audited with the certificate's name and the address.
    let config = dvn::config::Config::load(&aws.config_path).unwrap();
    let store = Store::connect(&config.store.url).await.unwrap();
    let records = store.audit_all().await.unwrap();
    let by_alice: Vec<_> = records
        .iter()
        .filter(|r| r.entry.params["tls_client"] == "alice")
        .collect();
    let seen: Vec<(&str, &str)> = by_alice
        .iter()
        .map(|r| (r.entry.operation.as_str(), r.entry.result.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("status", "unauthenticated: no bearer token"),
            ("status", "ok"),
            ("status", "ok"),
            ("pause", "begun"),
            ("pause", "ok"),
            ("resume", "begun"),
            ("resume", "ok"),
        ],
        "{by_alice:#?}"
    );
    assert!(by_alice.iter().all(|r| r.entry.source_ip == "127.0.0.1"));
    assert!(by_alice[1..].iter().all(|r| r.entry.operator == "alice-op"));
    assert!(
        records
            .iter()
            .all(|r| r.entry.params["tls_client"] != "mallory"),
        "refused at TLS: never reached the API"
    );

    // The node went on verifying throughout.
    let sent = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &sent, TIMEOUT).await;
    stand.assert_invariants(Direction::AToB, &sent).await;
}
