//! Reading a node's `/metrics` (Prometheus text) in benches and tests.

/// One sample line: the metric's name, its labels (`key="value"` pairs,
/// comma-separated, without the braces) and its value. Comments and lines
/// that do not parse are skipped.
pub fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            Some((name, labels, value.trim().parse().ok()?))
        })
}

/// The value of label `key` in `labels`, as [`samples`] gives them.
pub fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

/// The sum of every sample of metric `name` (all labels).
pub fn sum(text: &str, name: &str) -> f64 {
    samples(text)
        .filter(|(n, _, _)| *n == name)
        .map(|(_, _, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x a counter\n\
        # TYPE x counter\n\
        x_total{hash=\"a\",role=\"dialer\"} 3\n\
        x_total{hash=\"b\"} 4.5\n\
        y 7\n\
        broken{ 1\n";

    #[test]
    fn samples_labels_and_sums() {
        let all: Vec<_> = samples(TEXT).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], ("x_total", "hash=\"a\",role=\"dialer\"", 3.0));
        assert_eq!(label(all[0].1, "role"), Some("dialer"));
        assert_eq!(label(all[0].1, "hash"), Some("a"));
        assert_eq!(label(all[2].1, "hash"), None);
        assert_eq!(sum(TEXT, "x_total"), 7.5);
        assert_eq!(sum(TEXT, "y"), 7.0);
        assert_eq!(sum(TEXT, "z"), 0.0);
    }
}
