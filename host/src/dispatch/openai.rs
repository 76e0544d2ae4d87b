//! OpenAI-compatible wire format: request payloads, streamed chunks, unary
//! bodies and the error shapes servers really send.
//!
//! Dynamo's HTTP errors are `{"message","type","code"}` while in-stream errors
//! and OpenAI use `{"error":{...}}`; both are accepted everywhere.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::plan::{Generation, Prompt};

/// Token accounting reported by the server.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    #[serde(default)]
    pub completion_tokens: Option<u32>,
    #[serde(default)]
    pub total_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct RawUsage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    total_tokens: Option<u32>,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u32>,
}

impl From<RawUsage> for Usage {
    fn from(r: RawUsage) -> Self {
        Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.total_tokens,
            cached_tokens: r.prompt_tokens_details.and_then(|d| d.cached_tokens),
        }
    }
}

/// Builds the JSON body of a request.
pub fn payload(model: &str, prompt: &Prompt, g: &Generation, stream: bool, usage: bool) -> Value {
    let mut m = Map::new();
    m.insert("model".into(), model.into());
    match prompt {
        Prompt::Text(t) => {
            m.insert("prompt".into(), t.as_str().into());
        }
        Prompt::Chat(msgs) => {
            m.insert(
                "messages".into(),
                serde_json::to_value(msgs).unwrap_or(Value::Null),
            );
        }
    }
    m.insert("max_tokens".into(), g.max_tokens.into());
    if let Some(t) = g.temperature {
        m.insert("temperature".into(), round_f32(t));
    }
    if let Some(p) = g.top_p {
        m.insert("top_p".into(), round_f32(p));
    }
    if !g.stop.is_empty() {
        m.insert("stop".into(), g.stop.clone().into());
    }
    if let Some(s) = g.seed {
        m.insert("seed".into(), s.into());
    }
    if g.ignore_eos {
        m.insert("ignore_eos".into(), true.into());
    }
    m.insert("stream".into(), stream.into());
    if stream && usage {
        m.insert(
            "stream_options".into(),
            serde_json::json!({ "include_usage": true }),
        );
    }
    Value::Object(m)
}

/// f32 → JSON without binary noise (0.7f32 would otherwise print as 0.699999988079071).
fn round_f32(v: f32) -> Value {
    let s = format!("{v}");
    s.parse::<f64>().map(Value::from).unwrap_or(Value::Null)
}

/// One parsed streamed chunk; text is borrowed from the event where possible.
#[derive(Debug, Default)]
pub struct ChunkInfo<'a> {
    pub text: Cow<'a, str>,
    pub usage: Option<Usage>,
    pub error: Option<ServerError>,
    pub finish_reason: Option<String>,
    pub id: Option<String>,
}

/// An error reported by the server, in any of the shapes seen in the wild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerError {
    pub message: String,
    pub kind: Option<String>,
    pub code: Option<String>,
}

#[derive(Deserialize)]
struct RawChunk<'a> {
    #[serde(borrow, default)]
    choices: Vec<RawChoice<'a>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    id: Option<String>,
    // Dynamo-style top-level error fields.
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<Value>,
    #[serde(default)]
    code: Option<Value>,
}

/// A string that borrows from the input unless it contains escapes
/// (serde's own `Cow<str>` always allocates inside an `Option`).
struct BStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = BStr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(BStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawChoice<'a> {
    #[serde(borrow, default)]
    text: Option<BStr<'a>>,
    #[serde(borrow, default)]
    delta: Option<RawDelta<'a>>,
    #[serde(borrow, default)]
    message: Option<RawDelta<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct RawDelta<'a> {
    #[serde(borrow, default)]
    content: Option<BStr<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<BStr<'a>>,
}

fn value_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn error_from_value(v: &Value) -> ServerError {
    match v {
        Value::Object(o) => ServerError {
            message: o.get("message").map(value_to_string).unwrap_or_default(),
            kind: o.get("type").map(value_to_string),
            code: o.get("code").map(value_to_string),
        },
        other => ServerError {
            message: value_to_string(other),
            kind: None,
            code: None,
        },
    }
}

/// Parses one `data:` payload (a chunk of a stream or a whole unary body).
pub fn parse_chunk(data: &[u8]) -> Result<ChunkInfo<'_>, serde_json::Error> {
    let raw: RawChunk<'_> = serde_json::from_slice(data)?;
    let has_usage = raw.usage.is_some();
    let mut info = ChunkInfo {
        usage: raw.usage.map(Usage::from),
        id: raw.id,
        ..Default::default()
    };
    if let Some(e) = &raw.error {
        info.error = Some(error_from_value(e));
    } else if raw.choices.is_empty()
        && !has_usage
        && let Some(message) = raw.message
    {
        info.error = Some(ServerError {
            message,
            kind: raw.kind.as_ref().map(value_to_string),
            code: raw.code.as_ref().map(value_to_string),
        });
    }
    if let Some(choice) = raw.choices.into_iter().next() {
        info.finish_reason = choice.finish_reason;
        let delta = choice.delta.or(choice.message);
        info.text = match (choice.text, delta) {
            (Some(t), _) => t.0,
            (None, Some(d)) => match (d.content, d.reasoning_content) {
                (Some(c), _) if !c.0.is_empty() => c.0,
                (_, Some(r)) => r.0,
                (c, None) => c.map(|c| c.0).unwrap_or_default(),
            },
            (None, None) => Cow::Borrowed(""),
        };
    }
    Ok(info)
}

/// Extracts an error from a non-2xx body, whatever its shape.
pub fn parse_error_body(body: &[u8]) -> Option<ServerError> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match v.get("error") {
        Some(e) => Some(error_from_value(e)),
        None if v.get("message").is_some() => Some(error_from_value(&v)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_chunk_with_text() {
        let c = parse_chunk(br#"{"id":"cmpl-1","choices":[{"index":0,"text":" hi","finish_reason":null}],"usage":null}"#).unwrap();
        assert_eq!(c.text, " hi");
        assert!(matches!(c.text, Cow::Borrowed(_)), "plain text is borrowed");
        assert_eq!(c.id.as_deref(), Some("cmpl-1"));
        assert!(c.error.is_none() && c.usage.is_none());
    }

    #[test]
    fn chat_delta_with_escapes() {
        let c = parse_chunk(br#"{"choices":[{"delta":{"role":"assistant","content":"a\"b\n"}}]}"#)
            .unwrap();
        assert_eq!(c.text, "a\"b\n");
    }

    #[test]
    fn final_usage_chunk_with_cached_tokens() {
        let c = parse_chunk(br#"{"choices":[],"usage":{"prompt_tokens":3200,"completion_tokens":8,"total_tokens":3208,"prompt_tokens_details":{"cached_tokens":3136}}}"#).unwrap();
        let u = c.usage.unwrap();
        assert_eq!(u.prompt_tokens, Some(3200));
        assert_eq!(u.completion_tokens, Some(8));
        assert_eq!(u.cached_tokens, Some(3136));
        assert_eq!(c.text, "");
    }

    #[test]
    fn in_stream_error_envelope() {
        let c = parse_chunk(br#"{"error":{"message":"Internal server error","type":"internal_server_error","code":500}}"#).unwrap();
        let e = c.error.unwrap();
        assert_eq!(e.message, "Internal server error");
        assert_eq!(e.code.as_deref(), Some("500"));
    }

    #[test]
    fn dynamo_top_level_error_bodies() {
        let body = br#"{"message":"Internal server error","type":"Internal Server Error","code":500,"details":{"backend_status":500}}"#;
        let e = parse_error_body(body).unwrap();
        assert_eq!(e.kind.as_deref(), Some("Internal Server Error"));
        assert_eq!(
            parse_chunk(body).unwrap().error.unwrap().message,
            "Internal server error"
        );
        let openai = br#"{"error":{"message":"too long","type":"BadRequestError","code":400}}"#;
        assert_eq!(parse_error_body(openai).unwrap().message, "too long");
        assert!(parse_error_body(b"not json").is_none());
    }

    #[test]
    fn payload_leaves_unset_fields_out() {
        let g = Generation {
            max_tokens: 16,
            temperature: Some(0.7),
            top_p: None,
            stop: vec![],
            seed: None,
            ignore_eos: true,
        };
        let p = payload("m", &Prompt::Text("x".into()), &g, true, true);
        assert_eq!(
            p.to_string(),
            r#"{"ignore_eos":true,"max_tokens":16,"model":"m","prompt":"x","stream":true,"stream_options":{"include_usage":true},"temperature":0.7}"#
        );
    }

    mod props {
        //! Property tests (FUZZING.md): the chunk decoder on any bytes.
        use super::*;
        use proptest::prelude::*;

        fn json_ish() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(br#"{"#.to_vec()),
                Just(br#"}"#.to_vec()),
                Just(br#"["#.to_vec()),
                Just(br#"]"#.to_vec()),
                Just(br#"""#.to_vec()),
                Just(br#":"#.to_vec()),
                Just(br#","#.to_vec()),
                Just(br#""choices""#.to_vec()),
                Just(br#""text""#.to_vec()),
                Just(br#""delta""#.to_vec()),
                Just(br#""content""#.to_vec()),
                Just(br#""usage""#.to_vec()),
                Just(br#""error""#.to_vec()),
                Just(br#""message""#.to_vec()),
                Just(br#""prompt_tokens_details""#.to_vec()),
                Just(br#""cached_tokens""#.to_vec()),
                Just(br#"null"#.to_vec()),
                Just(br#"-1"#.to_vec()),
                Just(br#"4294967296"#.to_vec()),
                Just(br#"1e400"#.to_vec()),
                proptest::collection::vec(any::<u8>(), 1..4),
            ];
            proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
        }

        proptest! {
            #[test]
            fn any_bytes_decode_or_fail_cleanly(bytes in json_ish()) {
                let _ = parse_chunk(&bytes);
                let _ = parse_error_body(&bytes);
            }

            #[test]
            fn completion_and_chat_text_come_back_whole(text in any::<String>()) {
                let completion = serde_json::json!({"choices": [{"index": 0, "text": text}]});
                let completion = completion.to_string();
                let info = parse_chunk(completion.as_bytes()).unwrap();
                prop_assert_eq!(&*info.text, text.as_str());
                let chat = serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]});
                let chat = chat.to_string();
                let info = parse_chunk(chat.as_bytes()).unwrap();
                prop_assert_eq!(&*info.text, text.as_str());
            }
        }
    }
}
