//! `/status` on the operations listener: one HTML page an operator reads at a glance —
//! this region and its peers, the chains, the paths, the latest packets, the keys and their
//! latency. Server-rendered from the health snapshot, the store and the node's own metrics;
//! no script, no external asset; it reloads itself every 10 s.
//!
//! Written out by hand rather than with a template engine: one page of tables, and every
//! value that is not ours goes through [`escape`].

use std::fmt::Write as _;

use crate::health::Snapshot;
use crate::ops::prom;
use crate::pipeline::Context;
use crate::store::PacketRow;

/// How many recently changed packets the page lists.
pub const RECENT_PACKETS: u64 = 25;

/// HTML-escapes text for element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn yes_no(up: bool) -> (&'static str, &'static str) {
    if up {
        ("up", "ok")
    } else {
        ("down", "bad")
    }
}

fn seconds(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3} s"))
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse;margin-bottom:.5em;max-width:100%}\
th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left;overflow-wrap:anywhere}\
th{background:#f4f4f4}.ok{color:#176f2c;font-weight:600}.bad{color:#b00020;font-weight:600}\
.warn{color:#a15c00;font-weight:600}code{font-size:.95em}.muted{color:#777}";

/// The page, from the latest snapshot (None while the first one is being taken), the most
/// recently changed packets and the node's metrics text.
pub fn render(
    ctx: &Context,
    snapshot: Option<&Snapshot>,
    recent: &[PacketRow],
    metrics: &str,
) -> String {
    let node = escape(&ctx.config.node.name);
    let samples = prom::parse(metrics);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>dvn {node}</title>\
         <style>{STYLE}</style></head><body>"
    );
    let Some(s) = snapshot else {
        let _ = write!(
            html,
            "<h1>dvn {node}</h1><p class=\"warn\" id=\"starting\">starting: the first health snapshot is being taken</p></body></html>"
        );
        return html;
    };
    let (ready_text, ready_class) = if s.ready {
        ("ready", "ok")
    } else {
        ("not ready", "bad")
    };
    let _ = write!(
        html,
        "<h1>dvn {node} <span id=\"ready\" class=\"{ready_class}\" data-ready=\"{}\">{ready_text}</span></h1>\
         <p class=\"muted\">version {} · snapshot {} ms old · store <span class=\"{}\">{}</span></p>",
        s.ready,
        env!("CARGO_PKG_VERSION"),
        crate::store::now_ms().saturating_sub(s.taken_at_ms),
        yes_no(s.store).1,
        yes_no(s.store).0,
    );

    // Regions: this one and each peer as this node last reached it.
    html.push_str("<h2>Regions</h2><table id=\"regions\"><tr><th>region</th><th>state</th></tr>");
    let _ = write!(
        html,
        "<tr data-region=\"{node}\" data-up=\"true\"><td>{node} (this node)</td><td class=\"{ready_class}\">{ready_text}</td></tr>"
    );
    for (peer, up) in &s.peers {
        let (text, class) = yes_no(*up);
        let _ = write!(
            html,
            "<tr data-region=\"{0}\" data-up=\"{up}\"><td>{0}</td><td class=\"{class}\">{text}</td></tr>",
            escape(peer)
        );
    }
    let _ = write!(
        html,
        "</table><p class=\"muted\">{} of {} peers needed for a quorum</p>",
        s.peers_needed,
        s.peers.len()
    );

    // Chains: head, scan cursor, lag.
    html.push_str("<h2>Chains</h2><table id=\"chains\"><tr><th>chain</th><th>RPC</th><th>head</th><th>cursor</th><th>lag</th><th>submitter balance</th></tr>");
    for (name, chain) in &s.chains {
        let cursor = chain_cursor(&samples, name);
        let lag = chain.head.zip(cursor).map(|(h, c)| h.saturating_sub(c));
        let (text, class) = yes_no(chain.up);
        let _ = write!(
            html,
            "<tr data-chain=\"{0}\"><td>{0}</td><td class=\"{class}\">{text}</td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td></tr>",
            escape(name),
            chain.head.map_or("–".into(), |h| h.to_string()),
            cursor.map_or("–".into(), |c| c.to_string()),
            lag.map_or("–".into(), |l| l.to_string()),
            chain
                .submitter_balance_eth
                .map_or("–".into(), |b| format!("{b:.4} ETH")),
        );
    }
    html.push_str("</table>");

    // Paths: backlog and halts.
    html.push_str("<h2>Paths</h2>");
    if s.backlog.is_empty() {
        html.push_str("<p id=\"paths\" class=\"ok\">no packet waiting on any path</p>");
    } else {
        html.push_str(
            "<table id=\"paths\"><tr><th>path</th><th>backlog</th><th>oldest waiting</th></tr>",
        );
    }
    for path in &s.backlog {
        let class = if path.packets >= 10 { "warn" } else { "" };
        let _ = write!(
            html,
            "<tr data-path=\"{0} -&gt; {1}\"><td>{0} → {1}</td><td class=\"{class}\">{2}</td><td>{3} s</td></tr>",
            escape(&path.src),
            escape(&path.dst),
            path.packets,
            path.oldest_age_secs
        );
    }
    if !s.backlog.is_empty() {
        html.push_str("</table>");
    }
    if s.halted_paths.is_empty() {
        html.push_str("<p id=\"halted\" data-halted=\"0\" class=\"ok\">no path halted</p>");
    } else {
        let _ = write!(
            html,
            "<table id=\"halted\" data-halted=\"{}\"><tr><th>halted path</th><th>sender → receiver</th><th>nonce</th><th>why</th></tr>",
            s.halted_paths.len()
        );
        for h in &s.halted_paths {
            let text = |k: &str| escape(h[k].as_str().unwrap_or_default());
            // An EVM OApp's 32-byte word is a left-padded address: show the address.
            let oapp = |k: &str| {
                let word = h[k].as_str().unwrap_or_default();
                match word.strip_prefix("0x000000000000000000000000") {
                    Some(address) if word.len() == 66 => escape(&format!("0x{address}")),
                    _ => escape(word),
                }
            };
            let _ = write!(
                html,
                "<tr class=\"bad\"><td>{}</td><td><code>{}</code> → <code>{}</code></td><td>{}</td><td>{}</td></tr>",
                text("path"),
                oapp("sender"),
                oapp("receiver"),
                h["nonce"].as_u64().unwrap_or_default(),
                text("reason"),
            );
        }
        html.push_str("</table><p class=\"muted\">nothing on a halted path is signed until <code>dvn path resume</code></p>");
    }

    // Packets, newest change first; each links to its `why` (admin API, with a token), which
    // also gives the last error: error texts stay on the admin side, as on `/ready`.
    html.push_str("<h2>Latest packets</h2><table id=\"packets\"><tr><th>packet</th><th>path</th><th>nonce</th><th>state</th><th>attempts</th></tr>");
    for row in recent {
        let p = &row.packet;
        let guid = p.guid.to_string();
        let state = row.state.as_str();
        let class = match state {
            "verified" | "skipped" => "ok",
            "invalid" | "conflict" => "bad",
            _ => "",
        };
        // `skipped`: the destination already had our DVN's verification (another region
        // submitted it, or the packet was committed or delivered) — done, not dropped.
        let shown = if state == "skipped" {
            "verified elsewhere"
        } else {
            state
        };
        let _ = write!(
            html,
            "<tr data-guid=\"{guid}\" data-state=\"{state}\"><td><a href=\"/admin/v1/packets/{guid}\" title=\"dvn why {guid}\"><code>{}…</code></a></td>\
             <td>{} → {}</td><td>{}</td><td class=\"{class}\">{shown}</td><td>{}</td></tr>",
            &guid[..12],
            escape(&chain_name(ctx, p.src_eid)),
            escape(&chain_name(ctx, p.dst_eid)),
            p.nonce,
            row.attempts,
        );
    }
    html.push_str("</table>");

    // Keys and latency.
    html.push_str("<h2>Keys</h2><table id=\"keys\"><tr><th>key</th><th>backend</th><th>address</th><th>state</th></tr>");
    for (role, key) in [("signer", &s.signer), ("submitter", &s.submitter)] {
        let (text, class) = yes_no(key.up);
        let _ = write!(
            html,
            "<tr data-key=\"{role}\"><td>{role}</td><td>{}</td><td><code>{}</code></td><td class=\"{class}\">{text}</td></tr>",
            key.backend,
            escape(&key.address),
        );
    }
    let _ = write!(
        html,
        "</table><p id=\"latency\">signing p99 {} (SLO &lt; 5 s) · source block to verified p99 {} <span class=\"muted\">(since start)</span></p>",
        seconds(prom::p99(&samples, "dvn_signing_seconds")),
        seconds(prom::p99(&samples, "dvn_verification_latency_seconds")),
    );
    html.push_str("</body></html>");
    html
}

fn chain_name(ctx: &Context, eid: u32) -> String {
    ctx.chains
        .get(&eid)
        .map_or_else(|| eid.to_string(), |c| c.name().to_string())
}

/// The scan cursor of `chain`, from the node's `dvn_chain_cursor` gauge.
fn chain_cursor(samples: &[prom::Sample], chain: &str) -> Option<u64> {
    prom::select(samples, "dvn_chain_cursor", &[("chain", chain)])
        .next()
        .map(|s| s.value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_cannot_become_markup() {
        assert_eq!(
            escape("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}
