//! WEKA KV-cache-tester traces: one JSON document per session.
//!
//! ```text
//! {"id": "session-1", "models": ["m"], "block_size": 64, "hash_id_scope": "local",
//!  "requests": [
//!    {"t": 0.0, "type": "n", "model": "m", "in": 128, "out": 12, "hash_ids": [1, 2]},
//!    {"t": 2.5, "type": "subagent", "agent_id": "agent_001", "subagent_type": "Explore", "status": "completed",
//!     "models": ["m"], "requests": [{"t": 2.6, "type": "s", "model": "m", "in": 64, "out": 4, "hash_ids": [1]}]}]}
//! ```
//!
//! Field names follow the format as AIPerf's `weka_trace` reader takes it
//! (ai-dynamo/aiperf `dataset/graph/adapters/weka/trace_models.py`):
//! `t` is seconds from the conversation's start, `in`/`out` token counts,
//! `type` `n` (normal) or `s` (streaming), and `subagent` entries hold their
//! own `requests`, nested to any depth up to [`MAX_DEPTH`], replayed as
//! sessions named by `agent_id`. One file is one trace, so a `local` and a
//! `global` `hash_id_scope` mean the same here. Other fields are ignored.

use serde_json::{Map, Value};

use super::{
    Fields, Format, MAX_BLOCK_SIZE, MAX_INPUT_TOKENS, MAX_TRACE_BYTES, Record, Trace, invalid, push,
};
use sparkhost_workload::Result;

/// Deepest nesting of subagents.
pub const MAX_DEPTH: usize = 16;

pub fn parse(text: &str) -> Result<Trace> {
    debug_assert!(text.len() as u64 <= MAX_TRACE_BYTES);
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| invalid(format!("trace: not a valid WEKA JSON document ({e})")))?;
    let Value::Object(obj) = doc else {
        return Err(invalid(
            "trace: a WEKA trace is one JSON object".to_string(),
        ));
    };
    let top = Fields {
        at: "document",
        obj: &obj,
    };
    let block_size = top.whole("block_size", 1, MAX_BLOCK_SIZE)?;
    if let Some(scope) = obj.get("hash_id_scope")
        && !matches!(scope.as_str(), Some("local" | "global"))
    {
        return Err(invalid(format!(
            "trace document: `hash_id_scope` is {scope}; expected \"local\" or \"global\""
        )));
    }
    let id = top.opt_str("id")?;
    let mut records = Vec::new();
    walk(&obj, "requests", id.as_deref(), 0, &mut records)?;
    Ok(Trace {
        format: Format::Weka,
        block_size: Some(block_size),
        records,
        skipped: 0,
    })
}

fn walk(
    parent: &Map<String, Value>,
    path: &str,
    session: Option<&str>,
    depth: usize,
    out: &mut Vec<Record>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(invalid(format!(
            "trace {path}: subagents nested more than {MAX_DEPTH} deep"
        )));
    }
    let list = parent
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("trace {path}: `requests` must be an array")))?;
    for (i, item) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let obj = item
            .as_object()
            .ok_or_else(|| invalid(format!("trace {at}: expected a JSON object")))?;
        let f = Fields { at: &at, obj };
        match f.get("type")?.as_str() {
            Some("n" | "s") => {
                let arrival_ms = f.time("t", "seconds")? * 1000.0;
                let input_length = f.whole("in", 1, MAX_INPUT_TOKENS)?;
                let output_length = f.whole("out", 0, u32::MAX)?;
                let hash_ids = if obj.contains_key("hash_ids") {
                    f.hash_ids("hash_ids")?
                } else {
                    Vec::new()
                };
                push(
                    out,
                    Record {
                        source: at,
                        session: session.map(str::to_string),
                        arrival_ms,
                        input_length,
                        output_length,
                        hash_ids,
                    },
                )?;
            }
            Some("subagent") => {
                let agent = f.opt_str("agent_id")?;
                walk(
                    obj,
                    &format!("{at}.requests"),
                    agent.as_deref().or(session),
                    depth + 1,
                    out,
                )?;
            }
            _ => {
                return Err(invalid(format!(
                    "trace {at}: `type` must be \"n\", \"s\" or \"subagent\""
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> String {
        crate::tests::invalid_config(parse(text))
    }

    #[test]
    fn the_fixture_flattens_subagents_into_sessions() {
        let t = parse(&crate::tests::fixture("weka.json")).unwrap();
        assert_eq!(t.block_size, Some(32));
        let sessions: Vec<_> = t.records.iter().map(|r| r.session.clone()).collect();
        assert!(
            sessions.contains(&Some("agent_001".to_string())),
            "{sessions:?}"
        );
        assert!(sessions.contains(&Some("weka-session-1".to_string())));
        assert!(t.records.iter().any(|r| r.source.contains(".requests[")));
    }

    #[test]
    fn bad_documents_name_the_field() {
        let m = message(r#"{"requests": []}"#);
        assert!(m.contains("`block_size` is missing"), "{m}");
        let m = message(r#"{"block_size": 16, "hash_id_scope": "galaxy", "requests": []}"#);
        assert!(m.contains("`hash_id_scope`"), "{m}");
        let m = message(
            r#"{"block_size": 16, "requests": [{"t": 0, "type": "n", "in": 0, "out": 1}]}"#,
        );
        assert!(
            m.contains("requests[0]: `in` must be a whole number from 1"),
            "{m}"
        );
        let m = message(r#"{"block_size": 16, "requests": [{"t": 0, "type": "x"}]}"#);
        assert!(m.contains("`type` must be"), "{m}");
        let mut deep = String::from(r#"{"t": 0, "type": "n", "in": 1, "out": 1}"#);
        for _ in 0..=MAX_DEPTH {
            deep = format!(r#"{{"t": 0, "type": "subagent", "requests": [{deep}]}}"#);
        }
        let m = message(&format!(r#"{{"block_size": 16, "requests": [{deep}]}}"#));
        assert!(m.contains("nested more than 16 deep"), "{m}");
    }
}
