//! Prometheus text exposition (format 0.0.4, plus the OpenMetrics forms that
//! show up in the same scrapes): a parser that keeps every label, structured
//! histogram and summary views, explicit aggregation, and deltas.
//!
//! What the parser accepts:
//! - `# HELP name text` (escapes `\\` and `\n`) and `# TYPE name type`; other
//!   comments, `# UNIT` and `# EOF` are ignored;
//! - metric names `[a-zA-Z_:][a-zA-Z0-9_:]*` (the worker's `vllm:` names), and
//!   quoted UTF-8 names inside the braces (`{"a.b", x="y"}`);
//! - label values with `\\`, `\"` and `\n` escapes; a trailing comma;
//! - values `NaN`, `+Inf`, `-Inf`, exponents; an optional integer timestamp in
//!   milliseconds (or OpenMetrics float seconds); OpenMetrics exemplars are
//!   dropped;
//! - histogram (`_bucket{le=…}`, `_sum`, `_count`), summary (`{quantile=…}`,
//!   `_sum`, `_count`), counter, gauge and untyped families; samples without a
//!   `# TYPE` line form untyped families of their own.
//!
//! Nothing is summed implicitly: series keep their labels, and the helpers in
//! [`agg`] say in their names what they add up.

pub mod agg;
pub mod delta;
pub mod endpoint;
pub mod http;

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
    GaugeHistogram,
    Info,
    StateSet,
}

impl MetricType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" | "unknown" => MetricType::Untyped,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            _ => return None,
        })
    }

    /// Sample-name suffixes that belong to a family of this type.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            MetricType::Summary => &["_sum", "_count", "_created"],
            MetricType::Counter => &["_total", "_created"],
            MetricType::Info => &["_info"],
            _ => &[],
        }
    }
}

/// Label pairs in exposition order. Identity comparisons use [`Labels::key`],
/// which is order-independent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels(pub Vec<(String, String)>);

impl Labels {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Canonical identity: sorted `k="v"` pairs, optionally without some names
    /// (`le` for buckets, `quantile` for summaries).
    pub fn key_without(&self, drop: &[&str]) -> String {
        let mut v: Vec<&(String, String)> = self
            .0
            .iter()
            .filter(|(k, _)| !drop.contains(&k.as_str()))
            .collect();
        v.sort();
        let mut s = String::new();
        for (i, (k, val)) in v.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(k);
            s.push_str("=\"");
            s.push_str(&escape_label(val));
            s.push('"');
        }
        s
    }

    pub fn key(&self) -> String {
        self.key_without(&[])
    }

    pub fn without(&self, drop: &[&str]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| !drop.contains(&k.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// True when every `(name, value)` in `want` is present.
    pub fn matches(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.get(k) == Some(*v))
    }
}

pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One series value. Non-finite values serialize as the strings Prometheus uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    #[serde(serialize_with = "ser_f64")]
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
}

pub fn ser_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_str(&format_value(*v))
    }
}

pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Family {
    pub name: String,
    pub help: Option<String>,
    #[serde(rename = "type")]
    pub kind: MetricType,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// A parsed scrape: families in first-seen order. Serialize-only: the name
/// index is rebuilt only by the parser.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Exposition {
    pub families: Vec<Family>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl Exposition {
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.index.get(name).map(|&i| &self.families[i])
    }

    /// Every sample of every family.
    pub fn samples(&self) -> impl Iterator<Item = (&Family, &Sample)> {
        self.families
            .iter()
            .flat_map(|f| f.samples.iter().map(move |s| (f, s)))
    }

    /// Samples with exactly this sample name (e.g. `x_count`, not family `x`).
    pub fn series<'a>(&'a self, sample_name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples()
            .map(|(_, s)| s)
            .filter(move |s| s.name == sample_name)
    }

    pub fn len(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Histograms of a family, one per label set (without `le`), buckets sorted.
    pub fn histograms(&self, family: &str) -> Vec<Histogram> {
        let Some(f) = self.family(family) else {
            return Vec::new();
        };
        let mut order: Vec<String> = Vec::new();
        let mut map: HashMap<String, Histogram> = HashMap::new();
        let bucket = format!("{family}_bucket");
        let sum = format!("{family}_sum");
        let count = format!("{family}_count");
        for s in &f.samples {
            let key = s.labels.key_without(&["le"]);
            let h = map.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                Histogram {
                    name: family.to_string(),
                    labels: s.labels.without(&["le"]),
                    ..Default::default()
                }
            });
            if s.name == bucket {
                if let Some(le) = s.labels.get("le").and_then(parse_value) {
                    h.buckets.push((le, s.value));
                }
            } else if s.name == sum {
                h.sum = Some(s.value);
            } else if s.name == count {
                h.count = Some(s.value);
            }
        }
        order
            .into_iter()
            .filter_map(|k| map.remove(&k))
            .map(|mut h| {
                h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                h
            })
            .collect()
    }

    /// Summaries of a family, one per label set (without `quantile`).
    pub fn summaries(&self, family: &str) -> Vec<Summary> {
        let Some(f) = self.family(family) else {
            return Vec::new();
        };
        let mut order: Vec<String> = Vec::new();
        let mut map: HashMap<String, Summary> = HashMap::new();
        let sum = format!("{family}_sum");
        let count = format!("{family}_count");
        for s in &f.samples {
            let key = s.labels.key_without(&["quantile"]);
            let e = map.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                Summary {
                    name: family.to_string(),
                    labels: s.labels.without(&["quantile"]),
                    ..Default::default()
                }
            });
            if s.name == family {
                if let Some(q) = s.labels.get("quantile").and_then(parse_value) {
                    e.quantiles.push((q, s.value));
                }
            } else if s.name == sum {
                e.sum = Some(s.value);
            } else if s.name == count {
                e.count = Some(s.value);
            }
        }
        order.into_iter().filter_map(|k| map.remove(&k)).collect()
    }

    /// Writes the exposition back out in text format (for raw captures and tests).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            if let Some(h) = &f.help {
                out.push_str(&format!(
                    "# HELP {} {}\n",
                    f.name,
                    h.replace('\\', "\\\\").replace('\n', "\\n")
                ));
            }
            let t = serde_json::to_value(f.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push_str(&format!("# TYPE {} {t}\n", f.name));
            for s in &f.samples {
                out.push_str(&s.name);
                if !s.labels.0.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in s.labels.0.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&format!("{k}=\"{}\"", escape_label(v)));
                    }
                    out.push('}');
                }
                out.push(' ');
                out.push_str(&format_value(s.value));
                if let Some(ts) = s.timestamp_ms {
                    out.push_str(&format!(" {ts}"));
                }
                out.push('\n');
            }
        }
        out
    }
}

/// A histogram series with cumulative bucket counts `(le, count)`, `+Inf` last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub name: String,
    pub labels: Labels,
    pub buckets: Vec<(f64, f64)>,
    pub sum: Option<f64>,
    pub count: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub labels: Labels,
    /// `(quantile, value)` as exposed; values are over the server's own window.
    pub quantiles: Vec<(f64, f64)>,
    pub sum: Option<f64>,
    pub count: Option<f64>,
}

/// Parses a value the way Prometheus does: Go float syntax plus `±Inf`/`NaN`.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    s.parse::<f64>().ok()
}

/// Strict parse: the first malformed line is an error.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let (expo, errors) = parse_lenient(text);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(expo),
    }
}

/// Lenient parse: malformed lines are skipped and returned, so that one bad
/// series from an exporter does not blank a whole scrape.
pub fn parse_lenient(text: &str) -> (Exposition, Vec<ParseError>) {
    let mut p = Builder::default();
    let mut errors = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Err(message) = p.line(line) {
            errors.push(ParseError {
                line: i + 1,
                message,
            });
        }
    }
    (p.expo, errors)
}

#[derive(Default)]
struct Builder {
    expo: Exposition,
}

impl Builder {
    fn family_mut(&mut self, name: &str) -> &mut Family {
        let idx = match self.expo.index.get(name) {
            Some(&i) => i,
            None => {
                self.expo.families.push(Family {
                    name: name.to_string(),
                    help: None,
                    kind: MetricType::Untyped,
                    samples: Vec::new(),
                });
                let i = self.expo.families.len() - 1;
                self.expo.index.insert(name.to_string(), i);
                i
            }
        };
        &mut self.expo.families[idx]
    }

    /// The family a sample belongs to: its own name, or a typed family whose
    /// suffix it carries (`x_bucket` → histogram `x`).
    fn family_for(&self, sample: &str) -> Option<usize> {
        if let Some(&i) = self.expo.index.get(sample) {
            let f = &self.expo.families[i];
            // A counter declared as `x_total` owns `x_total`; a histogram `x`
            // owns `x` only for summaries (quantile samples).
            if !matches!(f.kind, MetricType::Histogram | MetricType::GaugeHistogram) {
                return Some(i);
            }
        }
        for (pos, _) in sample.match_indices('_') {
            let (base, suffix) = sample.split_at(pos);
            if let Some(&i) = self.expo.index.get(base)
                && self.expo.families[i].kind.suffixes().contains(&suffix)
            {
                return Some(i);
            }
        }
        None
    }

    fn line(&mut self, line: &str) -> Result<(), String> {
        let t = line.trim_start_matches([' ', '\t']);
        if t.trim().is_empty() {
            return Ok(());
        }
        if let Some(rest) = t.strip_prefix('#') {
            return self.comment(rest);
        }
        let (name, labels, rest) = sample_head(t)?;
        // OpenMetrics exemplars follow ` # `; labels are already parsed, so the
        // first '#' in the rest can only start one.
        let rest = rest.split('#').next().unwrap_or("");
        let mut fields = rest.split([' ', '\t']).filter(|s| !s.is_empty());
        let v = fields.next().ok_or("missing value")?;
        let value = parse_value(v).ok_or_else(|| format!("bad value {v:?}"))?;
        let timestamp_ms = fields.next().map(parse_timestamp).transpose()?;
        if let Some(extra) = fields.next() {
            return Err(format!("unexpected text after timestamp: {extra:?}"));
        }
        let sample = Sample {
            name: name.clone(),
            labels,
            value,
            timestamp_ms,
        };
        match self.family_for(&name) {
            Some(i) => self.expo.families[i].samples.push(sample),
            None => self.family_mut(&name).samples.push(sample),
        }
        Ok(())
    }

    fn comment(&mut self, rest: &str) -> Result<(), String> {
        let rest = rest.trim_start_matches([' ', '\t']);
        let (kw, tail) = split_word(rest);
        match kw {
            "HELP" => {
                let (name, text) = split_word(tail);
                if !valid_name(name) {
                    return Err(format!("HELP for invalid metric name {name:?}"));
                }
                let help = unescape_help(text);
                self.family_mut(name).help = Some(help);
            }
            "TYPE" => {
                let (name, ty) = split_word(tail);
                if !valid_name(name) {
                    return Err(format!("TYPE for invalid metric name {name:?}"));
                }
                let kind = MetricType::parse(ty.trim())
                    .ok_or_else(|| format!("unknown type {:?}", ty.trim()))?;
                self.family_mut(name).kind = kind;
            }
            _ => {}
        }
        Ok(())
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', '\t']);
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i + 1..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_timestamp(ts: &str) -> Result<i64, String> {
    if let Ok(ms) = ts.parse::<i64>() {
        return Ok(ms);
    }
    // OpenMetrics writes seconds as a float.
    match ts.parse::<f64>() {
        Ok(s) if s.is_finite() => Ok((s * 1000.0).round() as i64),
        _ => Err(format!("bad timestamp {ts:?}")),
    }
}

/// Parses `name{labels}` (or `{"name", labels}`); returns the rest of the line.
fn sample_head(line: &str) -> Result<(String, Labels, &str), String> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len()
        && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
    {
        i += 1;
    }
    let mut name = line[..i].to_string();
    if !name.is_empty() && !valid_name(&name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut labels = Vec::new();
    let mut rest = &line[i..];
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (quoted_name, l, r) = parse_labels(after_brace)?;
        if let Some(q) = quoted_name {
            if !name.is_empty() {
                return Err("metric name given twice".into());
            }
            name = q;
        }
        labels = l;
        rest = r;
    }
    if name.is_empty() {
        return Err(format!("expected a metric name at {:?}", truncate(line)));
    }
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(format!(
            "expected whitespace before value at {:?}",
            truncate(rest)
        ));
    }
    Ok((name, Labels(labels), rest))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

type LabelParse<'a> = (Option<String>, Vec<(String, String)>, &'a str);

/// Parses label pairs after `{` up to and including `}`.
fn parse_labels(s: &str) -> Result<LabelParse<'_>, String> {
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut quoted_name = None;
    let mut rest = s;
    let mut first = true;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((quoted_name, labels, r));
        }
        let (key, r) = if let Some(r) = rest.strip_prefix('"') {
            let (k, r) = quoted(r)?;
            let r2 = r.trim_start_matches([' ', '\t']);
            if first && (r2.starts_with(',') || r2.starts_with('}')) {
                // `{"metric.name", …}`: a quoted metric name, not a label.
                quoted_name = Some(k);
                first = false;
                rest = r2.strip_prefix(',').unwrap_or(r2);
                continue;
            }
            (k, r)
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let k = &rest[..end];
            if k.is_empty() || k.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!("bad label name at {:?}", truncate(rest)));
            }
            (k.to_string(), &rest[end..])
        };
        first = false;
        let r = r.trim_start_matches([' ', '\t']);
        let r = r
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after label {key:?}"))?;
        let r = r.trim_start_matches([' ', '\t']);
        let r = r
            .strip_prefix('"')
            .ok_or_else(|| format!("expected '\"' to open the value of label {key:?}"))?;
        let (val, r) = quoted(r)?;
        if labels.iter().any(|(k, _)| *k == key) {
            return Err(format!("duplicate label {key:?}"));
        }
        labels.push((key, val));
        let r = r.trim_start_matches([' ', '\t']);
        if let Some(r) = r.strip_prefix(',') {
            rest = r;
        } else if r.starts_with('}') {
            rest = r;
        } else {
            return Err(format!("expected ',' or '}}' at {:?}", truncate(r)));
        }
    }
}

/// Reads a quoted string body (after the opening quote), unescaping `\\ \" \n`.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, o)) => {
                    out.push('\\');
                    out.push(o);
                }
                None => break,
            },
            '\n' => return Err("newline inside a quoted string".into()),
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

#[cfg(test)]
mod tests;
