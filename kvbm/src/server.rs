//! The OpenAI-compatible endpoint and the KVBM metrics port.
//!
//! HTTP/1.1 is spoken by hand over tokio, as `host/src/truth.rs` does: each
//! token must leave when the engine's schedule says, and the record of when
//! it was handed to the socket is only honest if nothing buffers between
//! this code and the write. A framework (hyper) would also be the crate's
//! heaviest dependency; `httparse` does the parsing.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::driver::{ChunkFormat, Cmd, Done, EngineSink, ScheduleRecord, Shared, Sink};
use crate::engine::Request;
use crate::metrics::{Frontend, Lies, ModelInfo, Naming, render_frontend, render_kvbm};
use crate::profile::Profile;
use crate::tokens::{Tokenize, filler_text};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

pub(crate) struct State {
    pub profile: Profile,
    pub tokenizer: Box<dyn Tokenize>,
    pub cmd: Mutex<std::sync::mpsc::Sender<Cmd>>,
    pub shared: Arc<Shared>,
    pub frontend: Mutex<Frontend>,
    pub model_info: ModelInfo,
    pub next_id: AtomicU64,
    pub naming: Naming,
    pub lies: Lies,
    pub staged: bool,
    pub max_body: usize,
    pub created: u64,
    pub info_json: String,
}

impl State {
    fn send(&self, c: Cmd) -> bool {
        match self.cmd.lock() {
            Ok(tx) => tx.send(c).is_ok(),
            Err(_) => false,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Port {
    Api,
    Kvbm,
}

pub(crate) async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    port: Port,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let st = state.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(st, sock, port, stop).await {
                            tracing::debug!("sim connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("sim accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

struct Req {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

enum ReadOutcome {
    Req(Req),
    Eof,
    /// Answered with an error; the connection closes.
    Refused,
}

async fn read_request(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut OwnedWriteHalf,
    max_body: usize,
) -> io::Result<ReadOutcome> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let before = head.len();
        let n = (&mut *r)
            .take((MAX_HEAD + 1 - before.min(MAX_HEAD)) as u64)
            .read_until(b'\n', &mut head)
            .await?;
        if n == 0 {
            if head.is_empty() {
                return Ok(ReadOutcome::Eof);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if head.len() > MAX_HEAD {
            error(
                w,
                431,
                "Request Header Fields Too Large",
                "request head over 16 KiB",
            )
            .await?;
            return Ok(ReadOutcome::Refused);
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
        // Tolerate blank lines before a request (RFC 9112 §2.2).
        if head == b"\r\n" || head == b"\n" {
            head.clear();
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut p = httparse::Request::new(&mut headers);
    match p.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            error(w, 400, "Bad Request", "malformed HTTP request").await?;
            return Ok(ReadOutcome::Refused);
        }
    }
    let method = p.method.unwrap_or("").to_owned();
    let path = p.path.unwrap_or("").to_owned();
    let mut len = 0usize;
    let mut close = p.version == Some(0);
    for h in p.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            match v.parse::<usize>() {
                Ok(n) => len = n,
                Err(_) => {
                    error(w, 400, "Bad Request", "invalid content-length").await?;
                    return Ok(ReadOutcome::Refused);
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            error(
                w,
                411,
                "Length Required",
                "chunked request bodies are not supported; send content-length",
            )
            .await?;
            return Ok(ReadOutcome::Refused);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        }
    }
    if len > max_body {
        error(
            w,
            413,
            "Payload Too Large",
            &format!("request body of {len} bytes is over the limit of {max_body} bytes"),
        )
        .await?;
        return Ok(ReadOutcome::Refused);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(ReadOutcome::Req(Req {
        method,
        path,
        body,
        close,
    }))
}

async fn connection(
    st: Arc<State>,
    sock: TcpStream,
    port: Port,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    // The engine thread writes streamed chunks through its own handle on
    // the socket (a dup: safe, and the fd cannot be reused under it).
    let std_sock = sock.into_std()?;
    let engine_sock = Arc::new(std_sock.try_clone()?);
    let (r, mut w) = TcpStream::from_std(std_sock)?.into_split();
    let mut r = BufReader::with_capacity(16 * 1024, r);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let req = match read_request(&mut r, &mut w, st.max_body).await? {
            ReadOutcome::Req(q) => q,
            ReadOutcome::Eof | ReadOutcome::Refused => return Ok(()),
        };
        let arrival = st.shared.now_ns();
        let path = req.path.split('?').next().unwrap_or("");
        match (port, req.method.as_str(), path) {
            (Port::Kvbm, "GET", "/metrics") => {
                let view = st
                    .shared
                    .view
                    .lock()
                    .map(|g| g.0.clone())
                    .unwrap_or_default();
                let t = render_kvbm(
                    &view,
                    st.naming,
                    st.lies,
                    st.staged,
                    &st.model_info.sim_labels,
                );
                respond(&mut w, 200, "text/plain; version=0.0.4", t.as_bytes()).await?
            }
            (Port::Kvbm, _, _) => error(&mut w, 404, "Not Found", "Not Found").await?,
            (Port::Api, "GET", "/metrics") => {
                let queued = st.shared.view.lock().map(|g| g.1.waiting).unwrap_or(0);
                let t = match st.frontend.lock() {
                    Ok(f) => render_frontend(&f, &st.model_info, queued),
                    Err(_) => String::new(),
                };
                respond(&mut w, 200, "text/plain; version=0.0.4", t.as_bytes()).await?
            }
            (Port::Api, "GET", "/health" | "/live") => {
                respond(
                    &mut w,
                    200,
                    "application/json",
                    br#"{"status":"healthy","simulated":true}"#,
                )
                .await?
            }
            (Port::Api, "GET", "/v1/models") => {
                let body = serde_json::json!({"object": "list", "data": [{"id": st.profile.model, "object": "model", "created": st.created, "owned_by": "sparkhost-sim"}]});
                respond(&mut w, 200, "application/json", body.to_string().as_bytes()).await?
            }
            (Port::Api, "GET", "/sim/info") => {
                respond(&mut w, 200, "application/json", st.info_json.as_bytes()).await?
            }
            (Port::Api, "GET", "/sim/state") => {
                let body = match st.shared.view.lock() {
                    Ok(g) => {
                        serde_json::json!({"simulated": true, "counters": g.0.counters, "host_hit_rate": g.0.host_rate, "disk_hit_rate": g.0.disk_rate, "occupancy": g.1})
                    }
                    Err(_) => serde_json::json!({}),
                };
                respond(&mut w, 200, "application/json", body.to_string().as_bytes()).await?
            }
            (Port::Api, "GET", "/sim/schedule") => {
                let recs = st
                    .shared
                    .schedule
                    .lock()
                    .map(|l| l.all())
                    .unwrap_or_default();
                let body = serde_json::to_vec(&recs).unwrap_or_default();
                respond(&mut w, 200, "application/json", &body).await?
            }
            (Port::Api, "POST", "/sim/schedule/reset") => {
                if let Ok(mut l) = st.shared.schedule.lock() {
                    l.clear();
                }
                respond(&mut w, 200, "application/json", br#"{"status":"ok"}"#).await?
            }
            (Port::Api, "POST", "/reset") => {
                let (ack, done) = oneshot::channel();
                if st.send(Cmd::Reset { ack }) && done.await.is_ok() {
                    respond(
                        &mut w,
                        200,
                        "application/json",
                        br#"{"status":"ok","reset":"all kv tiers emptied"}"#,
                    )
                    .await?
                } else {
                    error(&mut w, 503, "Service Unavailable", "engine stopped").await?
                }
            }
            (Port::Api, "POST", "/v1/completions") => {
                generate(&st, &mut w, &engine_sock, &req.body, false, arrival).await?
            }
            (Port::Api, "POST", "/v1/chat/completions") => {
                generate(&st, &mut w, &engine_sock, &req.body, true, arrival).await?
            }
            (Port::Api, _, "/v1/completions" | "/v1/chat/completions" | "/reset") => {
                error(&mut w, 405, "Method Not Allowed", "Method Not Allowed").await?
            }
            _ => error(&mut w, 404, "Not Found", "Not Found").await?,
        }
        if req.close {
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

async fn respond(w: &mut OwnedWriteHalf, status: u16, ctype: &str, body: &[u8]) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    w.write_all(&out).await
}

/// Dynamo's error body: `{"message", "type", "code"}` (see
/// `tests/fixtures/dynamo/error_400_bad.json`).
async fn error(w: &mut OwnedWriteHalf, status: u16, kind: &str, message: &str) -> io::Result<()> {
    let body = serde_json::json!({"message": message, "type": kind, "code": status});
    respond(w, status, "application/json", body.to_string().as_bytes()).await
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<Prompt>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    ignore_eos: bool,
}

/// A validated request, or the error to answer with.
struct Prepared {
    prompt: Vec<u32>,
    max_tokens: u32,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
}

fn prepare(st: &State, body: &[u8], chat: bool) -> Result<Prepared, (u16, &'static str, String)> {
    let bad = |m: String| (400u16, "Bad Request", m);
    let b: Body = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "Failed to deserialize the JSON body into the target type: {e}"
        ))
    })?;
    if let Some(m) = &b.model
        && m != &st.profile.model
    {
        return Err((404, "Not Found", "Model not found".into()));
    }
    let prompt = if chat {
        let msgs = b
            .messages
            .ok_or_else(|| bad("Failed to deserialize the JSON body into the target type: missing field `messages`".into()))?;
        // A plain "role: content" rendering: the simulator has no chat
        // template, and only the token count and prefix identity matter.
        let mut text = String::new();
        for m in &msgs {
            text.push_str(&m.role);
            text.push_str(": ");
            match &m.content {
                Some(Content::Text(t)) => text.push_str(t),
                Some(Content::Parts(ps)) => {
                    for p in ps {
                        if let Some(t) = &p.text {
                            text.push_str(t);
                        }
                    }
                }
                None => {}
            }
            text.push('\n');
        }
        text.push_str("assistant:");
        st.tokenizer.encode(&text)
    } else {
        match b.prompt {
            Some(Prompt::Text(t)) => st.tokenizer.encode(&t),
            Some(Prompt::Ids(ids)) => ids,
            Some(Prompt::Texts(ts)) if ts.len() == 1 => st.tokenizer.encode(&ts[0]),
            Some(Prompt::Texts(_)) => {
                return Err(bad("the simulator serves one prompt per request".into()));
            }
            None => {
                return Err(bad(
                    "Failed to deserialize the JSON body into the target type: missing field `prompt`".into(),
                ));
            }
        }
    };
    let limit = st.profile.max_model_len;
    let n = prompt.len() as u64;
    if n == 0 {
        return Err(bad(
            "The prompt is empty: at least one input token is required".into(),
        ));
    }
    if n > u64::from(limit) {
        return Err(bad(format!(
            "This model's maximum context length is {limit} tokens. However, your request has {n} input tokens. Please reduce the length of the input."
        )));
    }
    let room = u64::from(limit) - n;
    let max_tokens = match b.max_completion_tokens.or(b.max_tokens) {
        None => u64::from(st.profile.default_max_tokens).min(room),
        Some(m) if m < 1 => return Err(bad(format!("max_tokens must be at least 1, got {m}"))),
        Some(m) if m as u64 > room => {
            return Err(bad(format!(
                "'max_tokens' is too large: {m}. This model's maximum context length is {limit} tokens and your request has {n} input tokens ({m} > {limit} - {n})."
            )));
        }
        Some(m) => m as u64,
    };
    if max_tokens == 0 {
        return Err(bad(format!(
            "This model's maximum context length is {limit} tokens. However, your request has {n} input tokens, leaving no room for a completion."
        )));
    }
    Ok(Prepared {
        prompt,
        max_tokens: max_tokens as u32,
        stream: b.stream,
        include_usage: b.stream_options.unwrap_or_default().include_usage,
        ignore_eos: b.ignore_eos,
    })
}

fn count(st: &State, ep: &'static str, rt: &'static str, status: &'static str, et: &'static str) {
    if let Ok(mut f) = st.frontend.lock() {
        *f.requests.entry((ep, rt, status, et)).or_insert(0) += 1;
    }
}

async fn generate(
    st: &Arc<State>,
    w: &mut OwnedWriteHalf,
    sock: &Arc<std::net::TcpStream>,
    body: &[u8],
    chat: bool,
    arrival: u64,
) -> io::Result<()> {
    let ep = if chat {
        "chat_completions"
    } else {
        "completions"
    };
    let p = match prepare(st, body, chat) {
        Ok(p) => p,
        Err((status, kind, msg)) => {
            let et = if status == 404 {
                "not_found"
            } else {
                "validation"
            };
            count(st, ep, "unary", "error", et);
            return error(w, status, kind, &msg).await;
        }
    };
    let rt = if p.stream { "stream" } else { "unary" };
    if let Ok(mut f) = st.frontend.lock() {
        *f.started.entry((ep, rt)).or_insert(0) += 1;
        f.inflight += 1;
    }
    let r = run(st, w, sock, p, chat, arrival).await;
    if let Ok(mut f) = st.frontend.lock() {
        f.inflight = f.inflight.saturating_sub(1);
    }
    match &r {
        Ok(true) => count(st, ep, rt, "success", ""),
        Ok(false) => count(st, ep, rt, "error", "internal"),
        Err(_) => count(st, ep, rt, "error", "disconnected"),
    }
    r.map(|_| ())
}

struct Usage {
    prompt: u32,
    cached: u32,
    completion: u32,
}

impl Usage {
    fn json(&self) -> String {
        format!(
            "{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{}}}}}",
            self.prompt,
            self.completion,
            self.prompt + self.completion,
            self.cached
        )
    }
}

/// Runs one request through the engine and writes its response. Ok(false)
/// when the engine went away.
async fn run(
    st: &Arc<State>,
    w: &mut OwnedWriteHalf,
    sock: &Arc<std::net::TcpStream>,
    p: Prepared,
    chat: bool,
    arrival: u64,
) -> io::Result<bool> {
    let req = st.next_id.fetch_add(1, Ordering::Relaxed);
    let id = if chat {
        format!("chatcmpl-sim-{req}")
    } else {
        format!("cmpl-sim-{req}")
    };
    let prompt_len = p.prompt.len() as u32;
    if let Ok(mut l) = st.shared.schedule.lock() {
        l.open(
            req,
            ScheduleRecord {
                id: id.clone(),
                stream: p.stream,
                arrival_ns: arrival,
                scheduled_ns: Vec::with_capacity(p.max_tokens as usize),
                written_ns: Vec::new(),
                prompt_tokens: prompt_len,
                cached_tokens: 0,
            },
        );
    }
    let model = serde_json::to_string(&st.profile.model).unwrap_or_else(|_| "\"\"".into());
    let created = st.created;
    let sink = Arc::new(Sink::default());
    {
        let mut g = sink.lock();
        g.scheduled.reserve(p.max_tokens as usize);
        if p.stream {
            g.written.reserve(p.max_tokens as usize);
            let (head, tail) = if chat {
                (
                    format!(
                        "data: {{\"id\":\"{id}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\""
                    ),
                    format!(
                        "}},\"finish_reason\":null,\"logprobs\":null}}],\"created\":{created},\"model\":{model},\"object\":\"chat.completion.chunk\"}}\n\n"
                    ),
                )
            } else {
                (
                    format!("data: {{\"id\":\"{id}\",\"choices\":[{{\"text\":\""),
                    format!(
                        ",\"index\":0}}],\"created\":{created},\"model\":{model},\"system_fingerprint\":null,\"object\":\"text_completion\",\"usage\":null}}\n\n"
                    ),
                )
            };
            g.out = Some(ChunkFormat {
                sock: sock.clone(),
                head: head.into_bytes(),
                tail: tail.into_bytes(),
                chat,
            });
            // The head is queued as the task's to write, so no chunk the
            // engine produces can reach the socket before it.
            g.pending.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n");
            g.task_writing = true;
        }
    }
    let stop = st.profile.natural_stop_tokens;
    let sent = st.send(Cmd::Submit {
        req: Request {
            id: req,
            prompt: p.prompt,
            max_tokens: p.max_tokens,
            stop_after: (!p.ignore_eos && stop > 0).then_some(stop),
            arrival,
        },
        sink: EngineSink(sink.clone()),
    });
    if !sent {
        sink.lock().out = None;
        error(w, 503, "Service Unavailable", "engine stopped").await?;
        return Ok(false);
    }
    let r = follow(&st.shared, &sink, w).await;
    let (done, times, written) = {
        let mut g = sink.lock();
        // Whatever happens next, the engine must stop writing to this socket.
        g.out = None;
        (
            g.done,
            std::mem::take(&mut g.scheduled),
            std::mem::take(&mut g.written),
        )
    };
    r?;
    let Some(d) = done else {
        if p.stream {
            let data = "data: {\"error\":{\"message\":\"engine stopped\",\"type\":\"internal_server_error\",\"code\":500}}\n\ndata: [DONE]\n\n";
            let end = format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len());
            w.write_all(end.as_bytes()).await?;
        } else {
            error(w, 503, "Service Unavailable", "engine stopped").await?;
        }
        return Ok(false);
    };
    let mut usage = Usage {
        prompt: d.prompt_tokens,
        cached: d.cached_tokens,
        completion: d.completion_tokens,
    };
    // Recorded before the last byte goes out, as a client that has read the
    // whole response and then scrapes must find this request counted.
    if let Ok(mut f) = st.frontend.lock() {
        let s = |ns: u64| ns as f64 / 1e9;
        if let Some(first) = times.first() {
            f.ttft.observe(s(first.saturating_sub(arrival)));
        }
        for pair in times.windows(2) {
            f.itl.observe(s(pair[1] - pair[0]));
        }
        f.input.observe(usage.prompt.into());
        f.output.observe(usage.completion.into());
        f.cached.observe(usage.cached.into());
        f.duration.observe(s(d.at.saturating_sub(arrival)));
        f.output_tokens += u64::from(usage.completion);
    }
    if st.lies.usage_without_cached_tokens {
        usage.cached = 0;
    }
    let mut written = written;
    let fr = d.finish.as_str();
    if p.stream {
        let mut data = if chat {
            format!(
                "data: {{\"id\":\"{id}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"{fr}\",\"logprobs\":null}}],\"created\":{created},\"model\":{model},\"object\":\"chat.completion.chunk\"}}\n\n"
            )
        } else {
            format!(
                "data: {{\"id\":\"{id}\",\"choices\":[{{\"text\":\"\",\"index\":0,\"finish_reason\":\"{fr}\"}}],\"created\":{created},\"model\":{model},\"system_fingerprint\":null,\"object\":\"text_completion\",\"usage\":null}}\n\n"
            )
        };
        if p.include_usage {
            let u = usage.json();
            let obj = if chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            };
            data.push_str(&format!(
                "data: {{\"id\":\"{id}\",\"choices\":[],\"created\":{created},\"model\":{model},\"object\":\"{obj}\",\"usage\":{u}}}\n\n"
            ));
        }
        data.push_str("data: [DONE]\n\n");
        let end = format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len());
        w.write_all(end.as_bytes()).await?;
    } else {
        let mut text = String::with_capacity(8 * times.len());
        for i in 0..usage.completion {
            text.push_str(filler_text(i));
        }
        let u = usage.json();
        let text = serde_json::to_string(&text).unwrap_or_default();
        let body = if chat {
            format!(
                "{{\"id\":\"{id}\",\"choices\":[{{\"index\":0,\"message\":{{\"content\":{text},\"refusal\":null,\"role\":\"assistant\"}},\"finish_reason\":\"{fr}\",\"logprobs\":null}}],\"created\":{created},\"model\":{model},\"object\":\"chat.completion\",\"usage\":{u}}}"
            )
        } else {
            format!(
                "{{\"id\":\"{id}\",\"choices\":[{{\"text\":{text},\"index\":0,\"finish_reason\":\"{fr}\"}}],\"created\":{created},\"model\":{model},\"system_fingerprint\":null,\"object\":\"text_completion\",\"usage\":{u}}}"
            )
        };
        respond(w, 200, "application/json", body.as_bytes()).await?;
        written.push(st.shared.now_ns());
    }
    if let Ok(mut l) = st.shared.schedule.lock()
        && let Some(r) = l.get_mut(req)
    {
        r.written_ns = written;
    }
    Ok(true)
}

/// Waits for the engine to finish the request, writing whatever it queued
/// (the response head; chunks a full socket buffer held back) in order.
/// Returns once the engine is done with the request or gone.
async fn follow(shared: &Shared, sink: &Sink, w: &mut OwnedWriteHalf) -> io::Result<Option<Done>> {
    let mut out = Vec::new();
    loop {
        let tokens = {
            let mut g = sink.lock();
            if g.pending.is_empty() {
                g.task_writing = false;
                if g.done.is_some() || g.engine_gone {
                    return Ok(g.done);
                }
                None
            } else {
                g.task_writing = true;
                std::mem::swap(&mut g.pending, &mut out);
                Some(std::mem::take(&mut g.pending_tokens))
            }
        };
        match tokens {
            Some(n) => {
                w.write_all(&out).await?;
                out.clear();
                let now = shared.now_ns();
                let mut g = sink.lock();
                g.written.extend(std::iter::repeat_n(now, n));
            }
            None => sink.notify.notified().await,
        }
    }
}
