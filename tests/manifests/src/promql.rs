//! Metric names: the ones a PromQL expression reads, and the ones a `/metrics` text exports.

use std::collections::BTreeSet;

/// PromQL words that are not metric names where an identifier stands alone: binary and set
/// operators, modifiers, and the aggregations (which may be followed by `by (...)` before
/// their parenthesis).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Words whose parenthesized list names labels, not metrics.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` reads: every identifier that is not a function, a keyword, a label
/// (in `{...}` matchers or a `by`/`on` list), a string or a duration.
pub fn names_in_expr(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut braces, mut brackets) = (0, 0usize, 0usize);
    let mut label_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                braces += 1;
                i += 1;
            }
            '}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            '[' => {
                brackets += 1;
                i += 1;
            }
            ']' => {
                brackets = brackets.saturating_sub(1);
                i += 1;
            }
            ')' => {
                label_list = false;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if braces > 0 || brackets > 0 || label_list {
                    continue;
                }
                if LABEL_LISTS.contains(&word.as_str()) {
                    label_list = next == Some(&'(');
                } else if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() => {
                // A number (or a duration): its letters are not names.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The sample names a text exposition (Prometheus or OpenMetrics) exports: those of its
/// samples, and of every family, with or without samples yet, what its `# TYPE` implies (a
/// counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`).
pub fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut parts = decl.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                let full = if s.is_empty() || name.ends_with(s) {
                    name.to_owned()
                } else {
                    format!("{name}{s}")
                };
                names.insert(full);
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            if !name.is_empty() {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn names_skip_functions_labels_strings_and_durations() {
        let expr = r#"histogram_quantile(0.99, sum by (le, path) (rate(a_seconds_bucket{path="warm", x=~"b_c"}[5m])))
            / on (instance) group_left (node) max without (pod) (b_gauge offset 1h) > bool 0
            and c:recorded unless sum(d_total) by (e)"#;
        assert_eq!(
            names_in_expr(expr),
            set(&["a_seconds_bucket", "b_gauge", "c:recorded", "d_total"])
        );
    }

    #[test]
    fn exported_names_follow_the_family_types() {
        let text = "# HELP a Claims.\n# TYPE a counter\na_total{outcome=\"ok\"} 1\n\
                    # TYPE b histogram\n# TYPE c gauge\nc 0\n# TYPE d_total counter\n# EOF\n";
        assert_eq!(
            exported_names(text),
            set(&["a_total", "b_bucket", "b_count", "b_sum", "c", "d_total"])
        );
    }
}
