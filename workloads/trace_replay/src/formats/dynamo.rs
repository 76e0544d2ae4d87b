//! Dynamo's captured request traces: the JSONL its request-trace `file`
//! sink writes (`DYN_REQUEST_TRACE_SINKS=file`, plain `.jsonl` or rolling
//! `.jsonl.gz` segments; decompression is [`super::decode`]'s), one record
//! per line:
//!
//! ```text
//! {"schema": "dynamo.request.trace.v1", "event_type": "request_end", "event_time_unix_ms": 1000250,
//!  "agent_context": {"session_id": "s1"},
//!  "request": {"request_id": "r1", "input_tokens": 48, "output_tokens": 6, "request_received_ms": 1000000,
//!              "replay": {"trace_block_size": 16, "input_length": 48, "input_sequence_hashes": [11, 22, 33]}}}
//! ```
//!
//! Field names follow ai-dynamo/dynamo's `RequestTraceRecord` and
//! `RequestReplayMetrics`. Only `request_end` records with
//! `request.replay` are replayed; the rest (tool events, requests captured
//! without replay hashes) are counted as skipped. The arrival is
//! `request_received_ms` (else `event_time_unix_ms`), the output length
//! `output_tokens`, the session `agent_context.session_id`. Every replayed
//! record must carry the same `trace_block_size`.

use serde_json::{Map, Value};

use super::{
    Fields, Format, MAX_BLOCK_SIZE, MAX_INPUT_TOKENS, Record, Trace, invalid, jsonl_objects, push,
};
use sparkhost_workload::Result;

pub const SCHEMA: &str = "dynamo.request.trace.v1";

pub fn parse(text: &str) -> Result<Trace> {
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut block: Option<(u32, String)> = None;
    for item in jsonl_objects(text) {
        let (line, obj) = item?;
        let at = format!("line {line}");
        let top = Fields { at: &at, obj: &obj };
        match top.get("schema")?.as_str() {
            Some(SCHEMA) => {}
            other => {
                return Err(invalid(format!(
                    "trace {at}: `schema` is {}; expected {SCHEMA:?}",
                    other.map_or_else(|| "not a string".to_string(), |s| format!("{s:?}"))
                )));
            }
        }
        let request = obj.get("request").and_then(Value::as_object);
        let replay = request
            .and_then(|r| r.get("replay"))
            .and_then(Value::as_object);
        let (Some("request_end"), Some(request), Some(replay)) = (
            obj.get("event_type").and_then(Value::as_str),
            request,
            replay,
        ) else {
            skipped += 1;
            continue;
        };
        let session = object(&obj, "agent_context")
            .map(|c| Fields { at: &at, obj: c }.opt_str("session_id"))
            .transpose()?
            .flatten();
        let req_at = format!("{at} request");
        let req = Fields {
            at: &req_at,
            obj: request,
        };
        let arrival_ms = if request.contains_key("request_received_ms") {
            req.time("request_received_ms", "ms since the epoch")?
        } else {
            top.time("event_time_unix_ms", "ms since the epoch")?
        };
        let output_length = req.whole("output_tokens", 0, u32::MAX)?;
        let rep_at = format!("{at} request.replay");
        let rep = Fields {
            at: &rep_at,
            obj: replay,
        };
        let size = rep.whole("trace_block_size", 1, MAX_BLOCK_SIZE)?;
        if let Some((b, first)) = &block {
            if *b != size {
                return Err(invalid(format!(
                    "trace {at}: `trace_block_size` is {size}, but {first} recorded {b}; one \
                     trace must have one block size"
                )));
            }
        } else {
            block = Some((size, at.clone()));
        }
        let input_length = rep.whole("input_length", 1, MAX_INPUT_TOKENS)?;
        let hash_ids = rep.hash_ids("input_sequence_hashes")?;
        push(
            &mut records,
            Record {
                source: at,
                session,
                arrival_ms,
                input_length,
                output_length,
                hash_ids,
            },
        )?;
    }
    Ok(Trace {
        format: Format::Dynamo,
        block_size: block.map(|(b, _)| b),
        records,
        skipped,
    })
}

fn object<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Map<String, Value>> {
    obj.get(name).and_then(Value::as_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> String {
        crate::tests::invalid_config(parse(text))
    }

    #[test]
    fn the_fixture_reads_requests_and_skips_the_rest() {
        let t = parse(&crate::tests::fixture("dynamo.jsonl")).unwrap();
        assert_eq!(t.block_size, Some(16));
        assert!(t.skipped >= 2, "a tool event and a request without replay");
        let r = &t.records[0];
        assert_eq!(r.session.as_deref(), Some("session-a"));
        assert_eq!(r.input_length, r.hash_ids.len() as u32 * 16);
        assert!(
            t.records
                .iter()
                .any(|r| r.hash_ids.iter().any(|&h| h > 1 << 40))
        );
    }

    #[test]
    fn bad_records_name_the_line_and_field() {
        let rec = |replay: &str| {
            format!(
                r#"{{"schema": "dynamo.request.trace.v1", "event_type": "request_end", "event_time_unix_ms": 5, "request": {{"request_id": "r", "output_tokens": 3, "replay": {replay}}}}}"#
            )
        };
        let ok =
            rec(r#"{"trace_block_size": 16, "input_length": 16, "input_sequence_hashes": [1]}"#);
        let m = message(&format!(
            "{ok}\n{}\n",
            rec(r#"{"trace_block_size": 32, "input_length": 32, "input_sequence_hashes": [1]}"#)
        ));
        assert!(
            m.contains("line 2: `trace_block_size` is 32, but line 1 recorded 16"),
            "{m}"
        );
        let m = message(&rec(r#"{"trace_block_size": 16, "input_length": 16}"#));
        assert!(
            m.contains("line 1 request.replay: `input_sequence_hashes` is missing"),
            "{m}"
        );
        let m = message(&rec(
            r#"{"trace_block_size": 16, "input_length": 16, "input_sequence_hashes": [1.5]}"#,
        ));
        assert!(m.contains("`input_sequence_hashes[0]` is 1.5"), "{m}");
        let m = message(r#"{"schema": "other.v2"}"#);
        assert!(m.contains("`schema` is \"other.v2\""), "{m}");
    }
}
