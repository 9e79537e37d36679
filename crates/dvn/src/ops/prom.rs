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
}
