//! Issue 10 §1: the peer API on its own listener with mutual TLS. Only a certificate from the
//! operators' CA, valid now, naming a configured peer gets an answer; everything else is
//! refused before any HTTP and counted by reason. The regions verify both ways over it, and a
//! renewed certificate is picked up without a restart.

use std::sync::Arc;
use std::time::Duration;

use dvn_devnet::nodes::{DvnNode, NodeOptions};
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::common::log_until;
use crate::common::{dvn_cli, labelled_metric, peer_http, Stand};
use crate::e2e::TIMEOUT;

/// A client that accepts any server certificate: these tests are about what the *server*
/// accepts.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client presenting `identity` (cert and key PEM files), or none.
pub(crate) fn client(identity: Option<(&std::path::Path, &std::path::Path)>) -> reqwest::Client {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer));
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                dvn::tls::load_certs(cert).unwrap(),
                dvn::tls::load_key(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn refused(node: &DvnNode, http: &reqwest::Client, reason: &str, what: &str) {
    let label = format!("reason=\"{reason}\"");
    let before = labelled_metric(node, "dvn_peer_tls_refused_total", &[&label]).await;
    let answer = http
        .get(format!("{}/v1/health", node.peer_url()))
        .send()
        .await;
    assert!(
        !matches!(&answer, Ok(r) if r.status().is_success()),
        "{what}: answered {answer:?}"
    );
    let counted = eventually(TIMEOUT, Duration::from_millis(50), || async {
        let now = labelled_metric(node, "dvn_peer_tls_refused_total", &[&label]).await;
        (now > before).then_some(())
    })
    .await;
    if counted.is_none() {
        let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
        let seen: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
        panic!("{what}: not counted as {reason}; the node logged {seen:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_answers_only_configured_peers_with_the_operators_ca() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let aws = &stand.nodes.nodes[0];
    let tls = aws.tls_dir.clone();

    // A configured peer (aliyun) is answered.
    let ok = peer_http(aws, "aliyun", "aws")
        .get(format!("{}/v1/health", aws.peer_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);

    refused(
        aws,
        &client(None),
        "no_certificate",
        "no client certificate",
    )
    .await;

    let other_ca = tempfile::tempdir().unwrap();
    dvn_cli(&[
        "certs",
        "new",
        "--names",
        "aliyun",
        "--dir",
        other_ca.path().to_str().unwrap(),
    ]);
    let other = client(Some((
        &other_ca.path().join("aliyun.pem"),
        &other_ca.path().join("aliyun.key"),
    )));
    refused(aws, &other, "unknown_ca", "aliyun's name, another CA").await;

    // Our CA, but not a peer of aws: its own name, and a stranger's.
    let own = client(Some((&tls.join("aws.pem"), &tls.join("aws.key"))));
    refused(aws, &own, "not_a_peer", "aws's own certificate").await;
    let issuer = dvn::tls::issue::load_issuer(&tls).unwrap();
    let extra = tempfile::tempdir().unwrap();
    dvn::tls::issue::issue_one(extra.path(), &issuer, "mallory", &[], 30, 0).unwrap();
    dvn::tls::issue::issue_one(extra.path(), &issuer, "gcp", &[], 30, -400).unwrap();
    let mallory = client(Some((
        &extra.path().join("mallory.pem"),
        &extra.path().join("mallory.key"),
    )));
    refused(aws, &mallory, "not_a_peer", "a certificate naming no peer").await;
    let expired = client(Some((
        &extra.path().join("gcp.pem"),
        &extra.path().join("gcp.key"),
    )));
    refused(aws, &expired, "expired", "gcp's name, expired").await;

    // Plain HTTP to the peer port.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let answer = plain
        .get(format!("http://127.0.0.1:{}/v1/health", aws.peer_port))
        .send()
        .await;
    assert!(answer.is_err() || !answer.unwrap().status().is_success());
    let counted = eventually(TIMEOUT, Duration::from_millis(50), || async {
        (labelled_metric(aws, "dvn_peer_tls_refused_total", &["reason=\"not_tls\""]).await >= 1.0)
            .then_some(())
    })
    .await;
    assert!(counted.is_some(), "plain HTTP counted as not_tls");

    // And the peer API is not on the operations port.
    let ops = plain
        .get(format!("{}/v1/signatures/0x{}", aws.url(), "00".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(ops.status().as_u16(), 404);

    // The regions verify both ways over mutual TLS — also after aliyun's certificate is
    // renewed under the running nodes.
    let (a_to_b, b_to_a) = stand.round_trip_both_ways(3).await;
    dvn_cli(&[
        "certs",
        "renew",
        "--dir",
        tls.to_str().unwrap(),
        "--name",
        "aliyun",
        "--hosts",
        "127.0.0.1,localhost",
    ]);
    for (direction, before) in [(Direction::AToB, a_to_b), (Direction::BToA, b_to_a)] {
        let more = stand.devnet.send_messages(direction, 3).await.unwrap();
        stand.deliver(direction, &more, TIMEOUT).await;
        let all: Vec<_> = before.into_iter().chain(more).collect();
        stand.assert_invariants(direction, &all).await;
    }
    let aliyun = &stand.nodes.nodes[1];
    let reloaded = log_until(aliyun, |log| log.contains("certificates reloaded")).await;
    assert!(
        reloaded,
        "aliyun picked up its renewed certificate without a restart"
    );
}
