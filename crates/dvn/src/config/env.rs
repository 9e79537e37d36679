//! Environment overrides, applied in this one place, after the file and before validation.
//!
//! | variable | overrides |
//! |---|---|
//! | `DVN_NODE_NAME` | `node.name` |
//! | `DVN_LISTEN` | `node.listen` |
//! | `DVN_STORE_URL` | `store.url` |
//! | `REDIS_URL`, or `REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD` | `redis.url` (enables the submitter lease) |
//! | `POSTGRES_HOST`, `POSTGRES_PORT`, `POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB` | `store.url` becomes `postgres://…` (the manual's compose file sets these); ignored when `DVN_STORE_URL` is set |
//!
//! A value that does not parse is returned as a [`Problem`] naming the variable, never
//! silently dropped.

use std::collections::HashMap;

use super::validate::Problem;
use super::Config;

/// Every variable [`apply`] reads (deployment files are checked against this list).
pub const OVERRIDES: &[&str] = &[
    "DVN_NODE_NAME",
    "DVN_LISTEN",
    "DVN_STORE_URL",
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
];

/// The process environment as a map (a parameter, so tests need not mutate the real one).
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// Applies every override present in `vars` to `config`; returns the ones that do not parse.
pub fn apply(config: &mut Config, vars: &HashMap<String, String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(name) = vars.get("DVN_NODE_NAME") {
        config.node.name = name.clone();
    }
    if let Some(listen) = vars.get("DVN_LISTEN") {
        match listen.parse() {
            Ok(addr) => config.node.listen = addr,
            Err(_) => problems.push(Problem::new(
                "DVN_LISTEN",
                "not a socket address (host:port)",
            )),
        }
    }
    if let Some(url) = vars.get("DVN_STORE_URL") {
        config.store.url = url.clone();
    } else if let Some(host) = vars.get("POSTGRES_HOST") {
        let user = vars.get("POSTGRES_USER").map_or("postgres", String::as_str);
        let port = vars.get("POSTGRES_PORT").map_or("5432", String::as_str);
        let db = vars.get("POSTGRES_DB").map_or("dvn", String::as_str);
        let auth = match vars.get("POSTGRES_PASSWORD") {
            Some(password) => format!("{user}:{}", percent_encode(password)),
            None => user.to_string(),
        };
        config.store.url = format!("postgres://{auth}@{host}:{port}/{db}");
    }
    let redis_url = vars.get("REDIS_URL").cloned().or_else(|| {
        let host = vars.get("REDIS_HOST")?;
        let port = vars.get("REDIS_PORT").map_or("6379", String::as_str);
        let auth = vars
            .get("REDIS_PASSWORD")
            .map(|p| format!(":{}@", percent_encode(p)))
            .unwrap_or_default();
        Some(format!("redis://{auth}{host}:{port}"))
    });
    if let Some(url) = redis_url {
        match &mut config.redis {
            Some(redis) => redis.url = url,
            None => {
                config.redis = Some(super::RedisConfig {
                    url,
                    lease_ttl_ms: 10_000,
                })
            }
        }
    }
    problems
}

/// Percent-encodes a URL userinfo component (passwords may hold `@`, `:` or `/`).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::sample_config;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn postgres_variables_build_the_store_url_with_an_encoded_password() {
        let mut config = sample_config();
        let _ = apply(
            &mut config,
            &vars(&[
                ("POSTGRES_HOST", "db"),
                ("POSTGRES_USER", "dvn"),
                ("POSTGRES_PASSWORD", "p@ss:w/rd"),
                ("POSTGRES_DB", "dvn_aws"),
            ]),
        );
        assert_eq!(
            config.store.url,
            "postgres://dvn:p%40ss%3Aw%2Frd@db:5432/dvn_aws"
        );
    }

    #[test]
    fn dvn_store_url_wins_over_postgres_variables() {
        let mut config = sample_config();
        let _ = apply(
            &mut config,
            &vars(&[("DVN_STORE_URL", "sqlite://x.db"), ("POSTGRES_HOST", "db")]),
        );
        assert_eq!(config.store.url, "sqlite://x.db");
    }

    #[test]
    fn listen_and_name_overrides() {
        let mut config = sample_config();
        let problems = apply(
            &mut config,
            &vars(&[("DVN_LISTEN", "127.0.0.1:9000"), ("DVN_NODE_NAME", "gcp")]),
        );
        assert!(problems.is_empty());
        assert_eq!(config.node.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.node.name, "gcp");
        let problems = apply(&mut config, &vars(&[("DVN_LISTEN", "nonsense")]));
        assert_eq!(problems[0].path, "DVN_LISTEN");
    }
}
