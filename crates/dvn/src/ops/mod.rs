//! Operator tools that talk to a running node (and to the chains and the store directly):
//! `dvn status` (one screen), `dvn doctor` (the manual's daily checklist and troubleshooting
//! tree), `dvn why <guid>` (where one packet is and what it waits for), and the levers on
//! stuck packets and halted paths (`dvn path …`, `dvn retry`); and the `/status` page.

pub mod admin;
pub mod doctor;
pub mod page;
pub mod prom;
pub mod recover;
pub mod status;
pub mod upgrade;
pub mod why;

use std::time::Duration;

use crate::config::Config;

/// The node's HTTP base URL from its config: its listen port on 127.0.0.1 when it listens on
/// every interface.
pub fn node_url(config: &Config) -> String {
    base_url("http", config.node.listen)
}

/// `scheme://host:port` for a listen address (127.0.0.1 when it is unspecified).
pub fn base_url(scheme: &str, listen: std::net::SocketAddr) -> String {
    let mut reach = listen;
    if listen.ip().is_unspecified() {
        reach.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    // SocketAddr's Display brackets an IPv6 address.
    format!("{scheme}://{reach}")
}

/// A short-timeout HTTP client for the tools.
pub fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// GET `url` as text; None when unreachable or not 2xx/503.
pub async fn get_text(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = http.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The node's readiness JSON for the tools: with `DVN_ADMIN_TOKEN` set, from the admin API
/// (which includes the keys' backend error texts), else from the public `/ready`.
pub async fn get_ready(http: &reqwest::Client, base: &str) -> Option<(u16, String)> {
    if let Ok(token) = std::env::var("DVN_ADMIN_TOKEN") {
        let response = http
            .get(format!("{base}/admin/v1/ready"))
            .bearer_auth(token.trim())
            .send()
            .await
            .ok()?;
        if response.status().is_success() {
            let body = response.text().await.ok()?;
            let ready = serde_json::from_str::<serde_json::Value>(&body).ok()?["ready"] == true;
            return Some((if ready { 200 } else { 503 }, body));
        }
    }
    get_text(http, &format!("{base}/ready")).await
}
