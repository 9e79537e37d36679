//! Reads samples out of Prometheus text exposition (the node's own `/metrics`). Only what the
//! tools need: name, labels, value. (A full parser crate would add a dependency for ~40 lines.)

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample in `text`; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let mut map = BTreeMap::new();
    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once("=\"")?;
        map.insert(k.to_string(), v.trim_end_matches('"').to_string());
    }
    Some(Sample {
        name: name.to_string(),
        labels: map,
        value,
    })
}

/// Samples named `name` whose labels include every `(key, value)` in `with`.
pub fn select<'a>(
    samples: &'a [Sample],
    name: &'a str,
    with: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |s| {
        s.name == name
            && with
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// The highest p99 over the series of histogram `name` (one per label set but `le`), since
/// the node started, estimated from its cumulative buckets the way Prometheus'
/// `histogram_quantile` does (linear within the bucket; the highest finite bound when the rank
/// falls in `+Inf`). None before any observation.
pub fn p99(samples: &[Sample], name: &str) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    // Per label set (without `le`): its (upper bound, cumulative count) buckets.
    type Buckets = Vec<(f64, f64)>;
    let mut series: BTreeMap<Vec<(String, String)>, Buckets> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == bucket) {
        let Some(le) = s.labels.get("le").and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let key = s
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.entry(key).or_default().push((le, s.value));
    }
    series
        .into_values()
        .filter_map(|buckets| quantile(0.99, buckets))
        .reduce(f64::max)
}

fn quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> Option<f64> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().filter(|(le, _)| le.is_infinite())?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in &buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let width = count - below;
            return Some(if width > 0.0 {
                lower + (le - lower) * (rank - below) / width
            } else {
                *le
            });
        }
        (lower, below) = (*le, *count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values() {
        let text = "# HELP x y\n# TYPE dvn_signing_seconds summary\ndvn_signing_seconds{backend=\"pkcs11\",role=\"signer\",quantile=\"0.99\"} 0.0123\ndvn_ready 1\nbad line\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 2);
        let p99: Vec<_> =
            select(&samples, "dvn_signing_seconds", &[("quantile", "0.99")]).collect();
        assert_eq!(p99.len(), 1);
        assert_eq!(p99[0].labels["backend"], "pkcs11");
        assert!((p99[0].value - 0.0123).abs() < 1e-9);
        assert_eq!(
            select(&samples, "dvn_ready", &[]).next().unwrap().value,
            1.0
        );
    }

    #[test]
    fn p99_from_buckets_as_prometheus_computes_it() {
        let text = "\
dvn_signing_seconds_bucket{backend=\"pkcs11\",le=\"0.1\"} 0
dvn_signing_seconds_bucket{backend=\"pkcs11\",le=\"5\"} 0
dvn_signing_seconds_bucket{backend=\"pkcs11\",le=\"10\"} 100
dvn_signing_seconds_bucket{backend=\"pkcs11\",le=\"+Inf\"} 100
dvn_signing_seconds_bucket{backend=\"keystore\",le=\"0.1\"} 50
dvn_signing_seconds_bucket{backend=\"keystore\",le=\"+Inf\"} 50
dvn_signing_seconds_count{backend=\"keystore\"} 50
";
        let samples = parse(text);
        // The slowest series wins: 5 + 5 × 99/100.
        let p = p99(&samples, "dvn_signing_seconds").unwrap();
        assert!((p - 9.95).abs() < 1e-9, "{p}");
        // All in +Inf: the highest finite bound.
        let over = parse("x_bucket{le=\"1\"} 0\nx_bucket{le=\"+Inf\"} 3\n");
        assert_eq!(p99(&over, "x"), Some(1.0));
        assert_eq!(p99(&parse("x_bucket{le=\"+Inf\"} 0\n"), "x"), None);
        assert_eq!(p99(&samples, "dvn_verification_latency_seconds"), None);
    }
}
