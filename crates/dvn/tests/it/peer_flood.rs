//! Issue 10 §2: floods against one node's peer listener — idle connections that never start
//! TLS (slowloris), an oversized body, an endless body and a request storm from a valid peer —
//! while messages keep being verified; the flooded node's memory stays bounded.

use std::time::Duration;

use dvn_devnet::nodes::NodeOptions;
use dvn_devnet::wait::eventually;
use dvn_devnet::{DevnetConfig, Direction};

use crate::common::{labelled_metric, peer_http, Stand};
use crate::e2e::TIMEOUT;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// POSTs a chunked body that never ends (bounded here at 8 MiB) as aliyun; returns what the
/// server answered ("" if it just closed).
async fn endless_body(node: &dvn_devnet::nodes::DvnNode) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let files = dvn::config::TlsConfig {
        ca: node.tls_dir.join("ca.pem"),
        cert: node.tls_dir.join("aliyun.pem"),
        key: node.tls_dir.join("aliyun.key"),
    };
    let config = dvn::tls::client_config(&files, "aws").unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", node.peer_port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("aws").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let head = "POST /v1/signatures HTTP/1.1\r\nhost: aws\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("1000\r\n{}\r\n", " ".repeat(4096));
    for _ in 0..2048 {
        if tls.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        if tls.flush().await.is_err() {
            break;
        }
    }
    let mut answer = vec![0; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut answer))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_on_one_peer_port_are_refused_and_verification_goes_on() {
    let mut stand = Stand::new(DevnetConfig::default(), NodeOptions::default()).await;
    stand.nodes.start(&[0, 1, 2]).await.unwrap();
    let warm = stand
        .devnet
        .send_messages(Direction::AToB, 2)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &warm, TIMEOUT).await;
    let aws = &stand.nodes.nodes[0];
    let pid = aws.pid().unwrap();
    let rss_before = rss_kib(pid);

    // Slowloris: 300 connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", aws.peer_port)).await {
            idle.push(s);
        }
    }
    let capped = eventually(TIMEOUT, Duration::from_millis(100), || async {
        (labelled_metric(
            aws,
            "dvn_peer_tls_refused_total",
            &["reason=\"connections\""],
        )
        .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert!(capped.is_some(), "connections over the cap are refused");

    // While they are held, the other two regions keep verifying (gcp reaches aliyun).
    let during = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &during, TIMEOUT).await;
    // The idle ones are dropped at the handshake deadline.
    let timed_out = eventually(TIMEOUT, Duration::from_millis(200), || async {
        (labelled_metric(
            aws,
            "dvn_peer_tls_refused_total",
            &["reason=\"handshake_timeout\""],
        )
        .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert!(
        timed_out.is_some(),
        "idle connections are cut at the handshake deadline"
    );
    drop(idle);

    // A valid peer (aliyun's certificate) misbehaving.
    let http = peer_http(aws, "aliyun", "aws");
    let url = format!("{}/v1/signatures", aws.peer_url());
    let oversized = http
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b'x'; 1 << 20])
        .send()
        .await;
    assert!(
        matches!(&oversized, Ok(r) if r.status().as_u16() == 413) || oversized.is_err(),
        "oversized body: {oversized:?}"
    );
    let answer = endless_body(aws).await;
    assert!(
        answer.starts_with("HTTP/1.1 413") || answer.is_empty(),
        "endless body: {answer:?}"
    );
    let mut limited = 0;
    for _ in 0..600 {
        let r = http
            .get(format!("{}/v1/health", aws.peer_url()))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "a request storm from one peer is rate limited");

    // Afterwards everything still verifies, and aws's memory did not balloon.
    let after = stand
        .devnet
        .send_messages(Direction::AToB, 3)
        .await
        .unwrap();
    stand.deliver(Direction::AToB, &after, TIMEOUT).await;
    let all: Vec<_> = warm.into_iter().chain(during).chain(after).collect();
    stand.assert_invariants(Direction::AToB, &all).await;
    let rss_after = rss_kib(pid);
    eprintln!("aws RSS before the floods {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory bounded: {rss_before} KiB → {rss_after} KiB"
    );
}
