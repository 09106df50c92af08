//! Reads the proxy's own OpenMetrics text (what `/metrics` serves) back into
//! labelled values: prometheus-client keeps histogram buckets private, and
//! its text is the one complete, consistent view of every route's counters.

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, PartialEq)]
pub struct MetricLine<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl MetricLine<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one line; `None` for comments, blank lines and anything that is
/// not a sample.
pub fn parse_line(line: &str) -> Option<MetricLine<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let label = &rest[..eq];
            let (value, after) = quoted(rest[eq + 1..].strip_prefix('"')?)?;
            labels.push((label, value));
            rest = after;
        }
    }
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(MetricLine {
        name,
        labels,
        value,
    })
}

/// A label value up to its closing quote, unescaped, and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let l = parse_line(
            r#"serin_requests_total{route="a>b",service="b",version="v1",code="200"} 12"#,
        )
        .unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(l.name, "serin_requests_total");
        assert_eq!(l.label("route"), Some("a>b"));
        assert_eq!(l.label("code"), Some("200"));
        assert_eq!(l.value, 12.0);
        let l = parse_line(r#"x_bucket{le="+Inf",p="q\"\\z"} 3"#)
            .unwrap_or_else(|| panic!("not parsed"));
        assert_eq!(l.label("le"), Some("+Inf"));
        assert_eq!(l.label("p"), Some("q\"\\z"));
        let l = parse_line("up 1.5 1700000000").unwrap_or_else(|| panic!("not parsed"));
        assert_eq!((l.name, l.value), ("up", 1.5));
        assert!(parse_line("# TYPE up gauge").is_none());
        assert!(parse_line("# EOF").is_none());
        assert!(parse_line(r#"x{a="unterminated} 1"#).is_none());
    }
}
