//! Numbers as both reports print them.
//!
//! Values taken from `summary.json` are printed exactly as JSON wrote them
//! (`92.159`), so a reader — or a test — can match a report cell to the
//! document it came from; computed values get a fixed number of decimals.

use serde_json::Value;

pub const DASH: &str = "–";

/// A JSON number as written; anything else as a dash.
pub fn json_num(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        _ => DASH.to_owned(),
    }
}

/// A computed number with `dp` decimals, trailing zeros dropped.
pub fn fixed(x: f64, dp: usize) -> String {
    if !x.is_finite() {
        return DASH.to_owned();
    }
    let s = format!("{x:.dp$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    if s == "-0" { "0".to_owned() } else { s }
}

pub fn opt(x: Option<f64>, dp: usize) -> String {
    x.map(|v| fixed(v, dp)).unwrap_or_else(|| DASH.to_owned())
}

/// A fraction as a percentage with `dp` decimals.
pub fn pct(x: f64, dp: usize) -> String {
    format!("{}%", fixed(x * 100.0, dp))
}

pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// A JSON scalar as plain text (strings unquoted).
pub fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => DASH.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Escapes `|` so a value cannot break a Markdown table row.
pub fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_as_written() {
        assert_eq!(json_num(Some(&json!(92.159))), "92.159");
        assert_eq!(json_num(Some(&json!(32))), "32");
        assert_eq!(json_num(Some(&json!(0.0))), "0.0");
        assert_eq!(json_num(None), DASH);
        assert_eq!(fixed(1.2300, 3), "1.23");
        assert_eq!(fixed(-0.0001, 2), "0");
        assert_eq!(pct(0.1234, 1), "12.3%");
    }
}
