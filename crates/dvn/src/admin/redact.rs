//! Secrets never reach the audit log, a log line or an API response: parameters are passed
//! through [`params`] before they are recorded.

use serde_json::Value;

/// Keys whose values are replaced wholesale.
const SECRET_KEYS: [&str; 8] = [
    "token",
    "password",
    "pin",
    "secret",
    "private_key",
    "authorization",
    "api_key",
    "access_key",
];

/// Redacts secret-looking values: by key name, and any string that carries credentials in a
/// URL (`user:pass@`, `?key=`/`apikey=`/`token=` query parameters).
pub fn params(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = SECRET_KEYS.iter().any(|s| lower.contains(s));
                    let v = if secret {
                        Value::String("[redacted]".into())
                    } else {
                        params(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(params).collect()),
        Value::String(s) if looks_like_a_credential_url(s) => {
            Value::String("[redacted url]".into())
        }
        other => other.clone(),
    }
}

fn looks_like_a_credential_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let Some((_, rest)) = lower.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    // `user:password@host` (a user name alone is no secret).
    let password = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    password
        || ["key=", "apikey=", "token=", "secret="]
            .iter()
            .any(|p| lower.contains(p))
        || lower.contains("/v3/") // Infura-style key in the path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_by_name_and_in_urls_are_redacted() {
        let out = params(&json!({
            "reason": "maintenance",
            "Authorization": "Bearer dvn_x",
            "hsm_pin": "1234",
            "nested": [{ "rpc": "https://mainnet.infura.io/v3/abcdef" }],
            "store": "postgres://dvn:hunter2@db/dvn",
            "plain": "postgres://postgres@127.0.0.1:5432/dvn",
            "chain": "ethereum",
        }));
        let text = out.to_string();
        for secret in ["dvn_x", "1234", "abcdef", "hunter2"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(out["reason"], "maintenance");
        assert_eq!(out["chain"], "ethereum");
        assert_eq!(out["plain"], "postgres://postgres@127.0.0.1:5432/dvn");
    }
}
