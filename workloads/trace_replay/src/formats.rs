//! Trace formats: what each file looks like, how it is recognised, and the
//! one [`Trace`] every format is read into.
//!
//! - [`mooncake`]: Mooncake's JSONL (`timestamp`, `input_length`,
//!   `output_length`, `hash_ids`); the block size is not in the file.
//! - [`dynamo`]: Dynamo's captured request traces (`dynamo.request.trace.v1`
//!   JSONL, as its `file` sink writes them, plain or gzip), whose
//!   `request.replay` carries `trace_block_size`, `input_length` and
//!   `input_sequence_hashes`.
//! - [`weka`]: a WEKA KV-cache-tester trace: one JSON document per session
//!   with `block_size` and nested `requests` (`t`, `in`, `out`, `hash_ids`),
//!   subagent markers holding their own requests.
//!
//! Every input is bounded here, before anything is planned: the file's
//! bytes (compressed and not), one line, the record count, one record's
//! tokens and hash ids.

pub mod dynamo;
pub mod mooncake;
pub mod weka;

use serde_json::{Map, Value};
use sparkhost_workload::{Result, WorkloadError};

/// Largest trace file, and largest trace once decompressed.
pub const MAX_TRACE_BYTES: u64 = 256 << 20;
/// Longest line of a JSONL trace.
pub const MAX_LINE_BYTES: usize = 4 << 20;
/// Most requests one trace may hold.
pub const MAX_RECORDS: usize = 1_000_000;
/// Most prompt tokens one request may ask for.
pub const MAX_INPUT_TOKENS: u32 = 1 << 21;
/// Most hash ids one request may carry.
pub const MAX_HASH_IDS: usize = 1 << 16;
/// Largest recorded block size.
pub const MAX_BLOCK_SIZE: u32 = 1 << 16;

/// Which format a trace is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mooncake,
    Dynamo,
    Weka,
}

impl Format {
    pub const NAMES: [&'static str; 3] = ["mooncake", "dynamo", "weka"];

    pub fn name(self) -> &'static str {
        match self {
            Format::Mooncake => "mooncake",
            Format::Dynamo => "dynamo",
            Format::Weka => "weka",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "mooncake" => Some(Format::Mooncake),
            "dynamo" => Some(Format::Dynamo),
            "weka" => Some(Format::Weka),
            _ => None,
        }
    }
}

/// One request of a trace, whatever its format.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Where it is in the file, for messages and the manifest: `line 3`,
    /// `requests[2].requests[0]`.
    pub source: String,
    /// Session (Dynamo `agent_context.session_id`, WEKA trace or subagent id).
    pub session: Option<String>,
    /// Recorded arrival in ms on the trace's own clock.
    pub arrival_ms: f64,
    pub input_length: u32,
    /// Recorded output tokens (0 is possible in WEKA traces).
    pub output_length: u32,
    /// Hash ids of the prompt's blocks, exactly as recorded (64-bit).
    pub hash_ids: Vec<u64>,
}

/// A whole trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub format: Format,
    /// The block size the file records (Mooncake records none).
    pub block_size: Option<u32>,
    pub records: Vec<Record>,
    /// Records of other kinds the file holds and replay skips (Dynamo tool
    /// events, requests captured without replay hashes).
    pub skipped: usize,
}

pub(crate) fn invalid(what: String) -> WorkloadError {
    WorkloadError::InvalidConfig(what)
}

/// Decompresses a gzip file (several members, as Dynamo's rolling sink
/// writes them), refusing more than [`MAX_TRACE_BYTES`]; other bytes are
/// returned as they are.
pub fn decode(bytes: Vec<u8>) -> Result<Vec<u8>> {
    use std::io::Read;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .take(MAX_TRACE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| invalid(format!("trace: the gzip data is corrupt ({e})")))?;
    if out.len() as u64 > MAX_TRACE_BYTES {
        return Err(invalid(format!(
            "trace: decompresses to more than {MAX_TRACE_BYTES} bytes, the most allowed"
        )));
    }
    Ok(out)
}

/// The format of `text`: from its first record's fields, else from the
/// whole document's (a WEKA trace may be pretty-printed over many lines).
pub fn detect(text: &str) -> Result<Format> {
    if let Some(first) = text.lines().find(|l| !l.trim().is_empty())
        && first.len() <= MAX_LINE_BYTES
        && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(first)
        && let Some(f) = detect_object(&o)
    {
        return Ok(f);
    }
    if text.trim_start().starts_with('{')
        && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text)
        && detect_object(&o) == Some(Format::Weka)
    {
        return Ok(Format::Weka);
    }
    Err(invalid(
        "trace: cannot tell its format (a Mooncake line has `hash_ids` and `input_length`, a \
         Dynamo record has `schema` \"dynamo.request.trace.v1\", a WEKA trace has \
         `block_size` and `requests`); name it with `format=mooncake|dynamo|weka`"
            .to_string(),
    ))
}

fn detect_object(o: &Map<String, Value>) -> Option<Format> {
    if o.get("schema")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with("dynamo.request.trace"))
    {
        Some(Format::Dynamo)
    } else if o.contains_key("hash_ids") && o.contains_key("input_length") {
        Some(Format::Mooncake)
    } else if o.contains_key("block_size") && o.contains_key("requests") {
        Some(Format::Weka)
    } else {
        None
    }
}

/// Reads `text` as `format`.
pub fn parse(text: &str, format: Format) -> Result<Trace> {
    let trace = match format {
        Format::Mooncake => mooncake::parse(text)?,
        Format::Dynamo => dynamo::parse(text)?,
        Format::Weka => weka::parse(text)?,
    };
    if trace.records.is_empty() {
        return Err(invalid(format!(
            "trace: no requests to replay in this {} trace{}",
            format.name(),
            if trace.skipped > 0 {
                format!(" ({} records skipped)", trace.skipped)
            } else {
                String::new()
            }
        )));
    }
    Ok(trace)
}

/// The non-blank lines of a JSONL text, each parsed as an object, with its
/// 1-based line number; lines over [`MAX_LINE_BYTES`] are refused.
pub(crate) fn jsonl_objects(
    text: &str,
) -> impl Iterator<Item = Result<(usize, Map<String, Value>)>> + '_ {
    text.lines()
        .enumerate()
        .filter(|(_, raw)| !raw.trim().is_empty())
        .map(|(i, raw)| {
            let line = i + 1;
            if raw.len() > MAX_LINE_BYTES {
                return Err(invalid(format!(
                    "trace line {line}: {} bytes long; at most {MAX_LINE_BYTES} are allowed",
                    raw.len()
                )));
            }
            match serde_json::from_str::<Value>(raw) {
                Ok(Value::Object(o)) => Ok((line, o)),
                Ok(_) => Err(invalid(format!(
                    "trace line {line}: expected a JSON object"
                ))),
                Err(e) => Err(invalid(format!("trace line {line}: not valid JSON ({e})"))),
            }
        })
}

/// Field readers whose errors name the record and the field.
pub(crate) struct Fields<'a> {
    pub at: &'a str,
    pub obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, what: String) -> WorkloadError {
        invalid(format!("trace {}: {what}", self.at))
    }

    pub fn get(&self, name: &str) -> Result<&Value> {
        self.obj
            .get(name)
            .ok_or_else(|| self.err(format!("`{name}` is missing")))
    }

    /// A non-negative, finite number.
    pub fn time(&self, name: &str, unit: &str) -> Result<f64> {
        self.get(name)?
            .as_f64()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .ok_or_else(|| self.err(format!("`{name}` must be a number of {unit}, 0 or more")))
    }

    /// A whole number in `lo..=hi`.
    pub fn whole(&self, name: &str, lo: u32, hi: u32) -> Result<u32> {
        whole_value(self.get(name)?, lo, hi)
            .ok_or_else(|| self.err(format!("`{name}` must be a whole number from {lo} to {hi}")))
    }

    /// An array of 64-bit hash ids, kept exactly; at most [`MAX_HASH_IDS`].
    pub fn hash_ids(&self, name: &str) -> Result<Vec<u64>> {
        let ids = self
            .get(name)?
            .as_array()
            .ok_or_else(|| self.err(format!("`{name}` must be an array of hash ids")))?;
        if ids.len() > MAX_HASH_IDS {
            return Err(self.err(format!(
                "`{name}` has {} hash ids; at most {MAX_HASH_IDS} are allowed",
                ids.len()
            )));
        }
        ids.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_u64().ok_or_else(|| {
                    self.err(format!(
                        "`{name}[{i}]` is {v}; a hash id is a whole number from 0 to {}",
                        u64::MAX
                    ))
                })
            })
            .collect()
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<String>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= 256 => Ok(Some(s.clone())),
            Some(_) => Err(self.err(format!("`{name}` must be a string of at most 256 bytes"))),
        }
    }
}

fn whole_value(v: &Value, lo: u32, hi: u32) -> Option<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (lo..=hi).contains(n))
}

/// Checks the record count as records are added.
pub(crate) fn push(records: &mut Vec<Record>, r: Record) -> Result<()> {
    if records.len() >= MAX_RECORDS {
        return Err(invalid(format!(
            "trace: more than {MAX_RECORDS} requests; at most {MAX_RECORDS} are allowed (cut the \
             file, or use `max-requests` after cutting it)"
        )));
    }
    records.push(r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(WorkloadError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn detects_each_format() {
        let fx = crate::tests::fixture;
        assert_eq!(detect(&fx("mooncake.jsonl")).unwrap(), Format::Mooncake);
        assert_eq!(detect(&fx("dynamo.jsonl")).unwrap(), Format::Dynamo);
        assert_eq!(detect(&fx("weka.json")).unwrap(), Format::Weka);
        let m = message(detect("{\"a\": 1}\n"));
        assert!(m.contains("format=mooncake|dynamo|weka"), "{m}");
    }

    #[test]
    fn gzip_is_decoded_and_bounded() {
        let plain = crate::tests::fixture("dynamo.jsonl");
        let gz = std::fs::read(crate::tests::fixture_path("dynamo.jsonl.gz")).unwrap();
        assert_eq!(decode(gz).unwrap(), plain.as_bytes());
        assert_eq!(decode(b"abc".to_vec()).unwrap(), b"abc");
        let m = message(decode(vec![0x1f, 0x8b, 8, 0, 1, 2, 3]));
        assert!(m.contains("gzip data is corrupt"), "{m}");
    }

    #[test]
    fn long_lines_and_bad_hash_ids_are_named() {
        let long = format!("{{\"x\": \"{}\"}}\n", "a".repeat(MAX_LINE_BYTES));
        let m = message(jsonl_objects(&long).next().unwrap());
        assert!(m.contains("trace line 1") && m.contains("at most"), "{m}");
        let obj: Map<String, Value> =
            serde_json::from_str(r#"{"h": [1, 18446744073709551616]}"#).unwrap();
        let f = Fields {
            at: "line 9",
            obj: &obj,
        };
        let m = message(f.hash_ids("h"));
        assert!(
            m.contains("trace line 9: `h[1]`") && m.contains("18446744073709551615"),
            "{m}"
        );
        let obj: Map<String, Value> = serde_json::from_str(r#"{"h": [-1]}"#).unwrap();
        let m = message(
            Fields {
                at: "line 2",
                obj: &obj,
            }
            .hash_ids("h"),
        );
        assert!(m.contains("`h[0]` is -1"), "{m}");
        let many = format!("{{\"h\": [{}]}}", vec!["1"; MAX_HASH_IDS + 1].join(","));
        let obj: Map<String, Value> = serde_json::from_str(&many).unwrap();
        let m = message(
            Fields {
                at: "line 3",
                obj: &obj,
            }
            .hash_ids("h"),
        );
        assert!(m.contains("at most 65536"), "{m}");
    }
}
