//! The governor: which paths this node signs for, and how fast.
//!
//! - `governor.deny` / `governor.allow`: path rules (any of source chain, destination chain,
//!   sending OApp, receiving OApp; a missing field matches anything). A packet on a denied
//!   path, or — when an allowlist is set — on a path no allow rule matches, is never signed:
//!   it ends `invalid` with the rule that refused it (`dvn retry` after the configuration
//!   changed).
//! - `governor.max_packets_per_minute`: per path, at most this many signatures in any 60 s;
//!   the excess stays `observed` and is signed as the window moves on (it waits, it is never
//!   dropped). The window is in memory: a restart starts it afresh.
//!
//! The rules can change without a restart (`POST /admin/v1/reload`): the stage picks up the
//! rules in force at its next step.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use alloy::primitives::B256;

use crate::config::{Config, GovernorConfig, PathRule};
use crate::store::PathKey;

const WINDOW: Duration = Duration::from_secs(60);

/// A rule with chain names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    src_eid: Option<u32>,
    dst_eid: Option<u32>,
    sender: Option<B256>,
    receiver: Option<B256>,
}

impl Pattern {
    fn new(config: &Config, rule: &PathRule) -> Self {
        let eid = |chain: &Option<String>| {
            chain.as_ref().and_then(|c| {
                config
                    .chains
                    .iter()
                    .find(|k| k.name == *c || k.eid.to_string() == *c)
                    .map(|k| k.eid)
            })
        };
        Self {
            src_eid: eid(&rule.src),
            dst_eid: eid(&rule.dst),
            sender: rule.sender.map(|a| a.into_word()),
            receiver: rule.receiver.map(|a| a.into_word()),
        }
    }

    fn matches(&self, path: &PathKey) -> bool {
        self.src_eid.is_none_or(|e| e == path.src_eid)
            && self.dst_eid.is_none_or(|e| e == path.dst_eid)
            && self.sender.is_none_or(|s| s == path.sender)
            && self.receiver.is_none_or(|r| r == path.receiver)
    }
}

/// The sign stage's governor.
#[derive(Debug)]
pub struct Governor {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
    per_minute: usize,
    signed: HashMap<PathKey, VecDeque<Instant>>,
}

impl Governor {
    pub fn new(config: &Config, rules: &GovernorConfig) -> Self {
        let mut governor = Self {
            allow: Vec::new(),
            deny: Vec::new(),
            per_minute: 0,
            signed: HashMap::new(),
        };
        governor.update(config, rules);
        governor
    }

    /// Takes new rules (a configuration reload); the rate windows go on.
    pub fn update(&mut self, config: &Config, rules: &GovernorConfig) {
        self.allow = rules
            .allow
            .iter()
            .map(|r| Pattern::new(config, r))
            .collect();
        self.deny = rules.deny.iter().map(|r| Pattern::new(config, r)).collect();
        self.per_minute = rules.max_packets_per_minute as usize;
    }

    /// Why `path` may never be signed by this node, if it may not.
    pub fn refuses(&self, path: &PathKey) -> Option<String> {
        if let Some(i) = self.deny.iter().position(|p| p.matches(path)) {
            return Some(format!("governor: path matches governor.deny[{i}]"));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| p.matches(path)) {
            return Some("governor: path matches no governor.allow rule".into());
        }
        None
    }

    /// How many more signatures `path` may have now: its share of the window less what the
    /// last minute already took (`usize::MAX` with no cap).
    pub fn room(&mut self, path: &PathKey, now: Instant) -> usize {
        if self.per_minute == 0 {
            return usize::MAX;
        }
        let Some(times) = self.signed.get_mut(path) else {
            return self.per_minute;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        self.per_minute.saturating_sub(times.len())
    }

    /// Counts a signature on `path`.
    pub fn record(&mut self, path: PathKey, now: Instant) {
        if self.per_minute == 0 {
            return;
        }
        self.signed.entry(path).or_default().push_back(now);
        // Paths idle for a whole window are forgotten.
        self.signed.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.duration_since(*t) < WINDOW)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(src: u32, sender: u8) -> PathKey {
        PathKey {
            src_eid: src,
            sender: B256::left_padding_from(&[sender; 20]),
            dst_eid: 2,
            receiver: B256::left_padding_from(&[9; 20]),
        }
    }

    fn governor(allow: Vec<Pattern>, deny: Vec<Pattern>, per_minute: usize) -> Governor {
        Governor {
            allow,
            deny,
            per_minute,
            signed: HashMap::new(),
        }
    }

    fn by_sender(sender: u8) -> Pattern {
        Pattern {
            src_eid: None,
            dst_eid: None,
            sender: Some(B256::left_padding_from(&[sender; 20])),
            receiver: None,
        }
    }

    #[test]
    fn deny_wins_and_an_allowlist_refuses_the_rest() {
        let open = governor(vec![], vec![], 0);
        assert_eq!(open.refuses(&path(1, 1)), None);
        let g = governor(vec![by_sender(1), by_sender(2)], vec![by_sender(2)], 0);
        assert_eq!(g.refuses(&path(1, 1)), None);
        assert!(g.refuses(&path(1, 2)).unwrap().contains("deny[0]"));
        assert!(g
            .refuses(&path(1, 3))
            .unwrap()
            .contains("no governor.allow"));
    }

    #[test]
    fn the_rate_cap_delays_per_path_and_frees_as_the_window_moves() {
        let mut g = governor(vec![], vec![], 2);
        let t0 = Instant::now();
        let (busy, quiet) = (path(1, 1), path(1, 2));
        for left in [2, 1] {
            assert_eq!(g.room(&busy, t0), left);
            g.record(busy, t0);
        }
        assert_eq!(g.room(&busy, t0 + Duration::from_secs(59)), 0);
        assert_eq!(g.room(&quiet, t0), 2, "one busy path does not hold another");
        assert_eq!(g.room(&busy, t0 + WINDOW), 2);
        let mut uncapped = governor(vec![], vec![], 0);
        uncapped.record(busy, t0);
        assert_eq!(uncapped.room(&busy, t0), usize::MAX);
    }
}
