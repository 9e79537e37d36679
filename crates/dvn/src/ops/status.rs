//! `dvn status`: one screen from the node's `/ready` and `/metrics` — chains (head, lag,
//! syncing), backlog, latency p99, keys, peers, submitter balance, last verified packet.

use serde_json::{json, Value};

use super::prom;

/// Collects the status as JSON (`--json` prints it as is).
pub async fn collect(node_url: &str) -> anyhow::Result<Value> {
    let http = super::http()?;
    let base = node_url.trim_end_matches('/');
    let Some((_, body)) = super::get_ready(&http, base).await else {
        anyhow::bail!("{base} does not answer: is the node running? (dvn doctor walks the checks)");
    };
    let ready: Value = serde_json::from_str(&body)?;
    let samples = match super::get_text(&http, &format!("{base}/metrics")).await {
        Some((200, text)) => prom::parse(&text),
        _ => Vec::new(),
    };
    let gauge = |name: &str, label: (&str, &str)| {
        prom::select(&samples, name, &[label])
            .map(|s| s.value)
            .next()
    };
    let mut chains = serde_json::Map::new();
    if let Some(map) = ready["components"]["chains"].as_object() {
        for (name, chain) in map {
            let head = gauge("dvn_chain_head", ("chain", name));
            let cursor = gauge("dvn_chain_cursor", ("chain", name));
            chains.insert(
                name.clone(),
                json!({
                    "rpc_up": chain["up"],
                    "head": head,
                    "cursor": cursor,
                    "lag": head.zip(cursor).map(|(h, c)| (h - c).max(0.0)),
                    "submitter_balance_eth": chain["submitter_balance_eth"],
                }),
            );
        }
    }
    let p99 = |name: &str| prom::p99(&samples, name);
    Ok(json!({
        "node": base,
        "ready": ready["ready"],
        "chains": chains,
        "backlog": ready["backlog"],
        "signing_p99_seconds": p99("dvn_signing_seconds"),
        "verification_p99_seconds": p99("dvn_verification_latency_seconds"),
        "signer": ready["components"]["signer"],
        "submitter": ready["components"]["submitter"],
        "peers": ready["components"]["peers"],
        "last_verified": ready["last_verified"],
        "packets_verified": prom::select(&samples, "dvn_packets_verified_total", &[]).map(|s| s.value).sum::<f64>(),
    }))
}

/// The one-screen text form.
pub fn render(s: &Value) -> String {
    let mut out = format!(
        "node {}  ready: {}\n",
        s["node"].as_str().unwrap_or("?"),
        s["ready"]
    );
    out.push_str("chains:\n");
    if let Some(chains) = s["chains"].as_object() {
        for (name, c) in chains {
            out.push_str(&format!(
                "  {name:<18} rpc {}  head {}  cursor {}  lag {}  submitter balance {}\n",
                if c["rpc_up"] == true { "up" } else { "DOWN" },
                c["head"],
                c["cursor"],
                c["lag"],
                c["submitter_balance_eth"]
            ));
        }
    }
    out.push_str("backlog:\n");
    match s["backlog"].as_array() {
        Some(rows) if !rows.is_empty() => {
            for b in rows {
                out.push_str(&format!(
                    "  {} -> {}: {} packets, oldest {} s\n",
                    b["src"].as_str().unwrap_or("?"),
                    b["dst"].as_str().unwrap_or("?"),
                    b["packets"],
                    b["oldest_age_secs"]
                ));
            }
        }
        _ => out.push_str("  none\n"),
    }
    out.push_str(&format!(
        "latency p99: signing {} s, verification {} s\n",
        s["signing_p99_seconds"], s["verification_p99_seconds"]
    ));
    for role in ["signer", "submitter"] {
        let k = &s[role];
        out.push_str(&format!(
            "{role:<9} {} {} {}{}\n",
            k["backend"].as_str().unwrap_or("?"),
            k["address"].as_str().unwrap_or("?"),
            if k["up"] == true { "up" } else { "DOWN" },
            k["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "peers     {} (needed {})\n",
        s["peers"]["up"], s["peers"]["needed"]
    ));
    out.push_str(&format!(
        "verified  {} packets; last {}\n",
        s["packets_verified"], s["last_verified"]
    ));
    out
}
