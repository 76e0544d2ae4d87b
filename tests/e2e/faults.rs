//! Fault-injection tests: an in-test OpenAI-compatible server that misbehaves
//! on purpose, one scripted behaviour per completion request, driven through
//! the real `sparkhost run`.
//!
//! Runs use `--concurrency 1`, so the server sees completions in planning
//! order and the n-th behaviour of the script lands on prompt `main-{n:05}`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{read_json, read_jsonl, sparkhost, synthetic, text};

/// What the server does with one `POST /v1/completions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// A complete answer: SSE when the request streams, one JSON body otherwise.
    Normal,
    /// HTTP 500 with Dynamo's top-level error body.
    Http500,
    /// HTTP 429 with an OpenAI-style error body.
    Http429,
    /// Headers and one chunk, then the socket closes inside the chunked body.
    ResetMidStream,
    /// A `data:` event that is not JSON, then `[DONE]`.
    Malformed,
    /// Headers and one chunk, then silence for [`FakeConfig::stall_for`].
    Stall,
    /// One chunk, then an in-stream `{"error":{...}}` event.
    ErrorEvent,
    /// A whole, well-framed stream that lacks the `[DONE]` sentinel.
    NoDone,
    /// HTTP 301, as a proxy in front of the wrong base URL answers.
    Redirect301,
    /// A stream of small text chunks that never ends (until the client
    /// goes away or the server stops).
    EndlessSse,
    /// One SSE event whose `data:` line never ends.
    GiantEvent,
    /// A 200 JSON answer whose `Content-Length` says 1 GiB, sent as fast
    /// as it is read.
    GiantUnary,
    /// The status line, then header bytes one every 20 ms, never the
    /// blank line.
    SlowHeaders,
    /// Header lines as fast as they are read, never the blank line.
    EndlessHeaders,
    /// A normal stream's head, then one body byte every 20 ms.
    SlowBody,
    /// A normal answer, gzip-compressed (`Content-Encoding: gzip`).
    Gzip,
    /// One JSON body (`application/json`), even when the request streams.
    Unary,
}

pub(crate) const MODEL: &str = "tiny";
pub(crate) const DYNAMO_500_BODY: &str =
    r#"{"message":"Internal server error","type":"Internal Server Error","code":500}"#;
const RATE_LIMIT_MESSAGE: &str = "Too many requests: the queue is full";
const STREAM_ERROR_MESSAGE: &str = "Engine exploded while decoding";
/// Content chunks of a normal stream when the request has no `max_tokens`.
const DEFAULT_CHUNKS: usize = 4;

pub(crate) struct FakeConfig {
    pub models: Vec<String>,
    /// `/v1/models` answers listing `models`; later answers list nothing.
    pub models_listed_for: Option<usize>,
    /// The listener closes as the n-th `/v1/models` answer goes out, so
    /// every later connection is refused.
    pub close_after_models: Option<usize>,
    /// Behaviours of the first completions, in order.
    pub script: Vec<Behaviour>,
    /// For every completion after the script.
    pub then: Behaviour,
    /// Held before answering 429/500, so a run cannot race through them.
    pub error_delay: Duration,
    pub stall_for: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            models: vec![MODEL.to_owned()],
            models_listed_for: None,
            close_after_models: None,
            script: Vec::new(),
            then: Behaviour::Normal,
            error_delay: Duration::ZERO,
            stall_for: Duration::from_secs(4),
        }
    }
}

/// A completion as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub behaviour: Behaviour,
    pub body: Value,
}

struct Shared {
    cfg: FakeConfig,
    stop: AtomicBool,
    /// `None` once closed on purpose (see [`FakeConfig::close_after_models`]).
    listener: Mutex<Option<TcpListener>>,
    models_served: AtomicUsize,
    completions: Mutex<Vec<Seen>>,
    /// Bytes written for completions: proof that a flood was sent.
    completion_bytes: std::sync::atomic::AtomicU64,
}

/// The fake server; dropping it stops and joins every thread it started.
pub(crate) struct FakeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(cfg: FakeConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        // Polled accept: a stop flag is then enough to end the thread.
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Arc::new(Shared {
            cfg,
            stop: AtomicBool::new(false),
            listener: Mutex::new(Some(listener)),
            models_served: AtomicUsize::new(0),
            completions: Mutex::new(Vec::new()),
            completion_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name("fake-openai-accept".into())
            .spawn(move || accept_loop(&s))
            .expect("spawn accept thread");
        FakeServer {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn completions(&self) -> Vec<Seen> {
        self.shared.completions.lock().unwrap().clone()
    }

    pub fn models_served(&self) -> usize {
        self.shared.models_served.load(Ordering::SeqCst)
    }

    /// Bytes the server wrote in answers to completions.
    pub fn completion_bytes(&self) -> u64 {
        self.shared.completion_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>) {
    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = match shared.listener.lock().unwrap().as_ref() {
            Some(l) => l.accept().ok(),
            None => None,
        };
        match accepted {
            Some((stream, _)) => {
                let s = shared.clone();
                handlers.push(
                    thread::Builder::new()
                        .name("fake-openai-conn".into())
                        .spawn(move || handle(stream, &s))
                        .expect("spawn connection thread"),
                );
            }
            None => thread::sleep(Duration::from_millis(2)),
        }
        handlers.retain(|h| !h.is_finished());
    }
    shared.listener.lock().unwrap().take();
    for h in handlers {
        let _ = h.join();
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request { method, path, body })
}

fn handle(stream: TcpStream, shared: &Shared) {
    // Accepted sockets must block; a read timeout keeps a silent client from
    // pinning this thread past the test.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    // A flood the client stopped reading must not pin the thread either.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_nodelay(true);
    let Some(req) = read_request(&stream) else {
        return;
    };
    let mut w = Conn(stream, 0);
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v1/models") => {
            let n = shared.models_served.fetch_add(1, Ordering::SeqCst) + 1;
            let listed = shared.cfg.models_listed_for.is_none_or(|k| n <= k);
            let data: Vec<Value> = if listed {
                shared
                    .cfg
                    .models
                    .iter()
                    .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "fake"}))
                    .collect()
            } else {
                Vec::new()
            };
            // Closed before answering: once the client has the list, nothing
            // may still be listening, not even a backlog that accepts connects.
            if shared.cfg.close_after_models.is_some_and(|k| n >= k) {
                shared.listener.lock().unwrap().take();
            }
            w.full(
                "200 OK",
                "application/json",
                json!({"object": "list", "data": data})
                    .to_string()
                    .as_bytes(),
            );
        }
        ("POST", "/v1/completions") => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let behaviour = {
                let mut seen = shared.completions.lock().unwrap();
                let b = shared
                    .cfg
                    .script
                    .get(seen.len())
                    .copied()
                    .unwrap_or(shared.cfg.then);
                seen.push(Seen {
                    behaviour: b,
                    body: body.clone(),
                });
                b
            };
            complete(&mut w, shared, behaviour, &body);
            shared.completion_bytes.fetch_add(w.1, Ordering::SeqCst);
        }
        _ => w.full(
            "404 Not Found",
            "application/json",
            br#"{"message":"no such route","type":"Not Found","code":404}"#,
        ),
    }
}

fn complete(w: &mut Conn, shared: &Shared, behaviour: Behaviour, body: &Value) {
    let streamed = body["stream"].as_bool().unwrap_or(false);
    let n_chunks = body["max_tokens"]
        .as_u64()
        .map_or(DEFAULT_CHUNKS, |n| n.clamp(1, 64) as usize);
    let prompt_tokens = body["prompt"]
        .as_str()
        .map_or(0, |p| p.split_whitespace().count());
    match behaviour {
        Behaviour::Http500 => {
            sleep_unless_stopped(shared, shared.cfg.error_delay);
            w.full(
                "500 Internal Server Error",
                "application/json",
                DYNAMO_500_BODY.as_bytes(),
            );
        }
        Behaviour::Redirect301 => {
            w.full(
                "301 Moved Permanently",
                "text/html",
                b"<a href=\"/elsewhere\">moved</a>",
            );
        }
        Behaviour::Http429 => {
            sleep_unless_stopped(shared, shared.cfg.error_delay);
            let b = json!({"error": {"message": RATE_LIMIT_MESSAGE, "type": "rate_limit_exceeded", "code": 429}});
            w.full(
                "429 Too Many Requests",
                "application/json",
                b.to_string().as_bytes(),
            );
        }
        Behaviour::Normal if !streamed => {
            let text: String = (0..n_chunks).map(|i| format!(" t{i}")).collect();
            let b = json!({
                "id": "cmpl-fake",
                "object": "text_completion",
                "model": MODEL,
                "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                "usage": usage(prompt_tokens, n_chunks),
            });
            w.full("200 OK", "application/json", b.to_string().as_bytes());
        }
        Behaviour::Normal | Behaviour::NoDone => {
            w.sse_head();
            for i in 0..n_chunks {
                w.event(&text_chunk(i, i + 1 == n_chunks));
            }
            w.event(
                &json!({"id": "cmpl-fake", "choices": [], "usage": usage(prompt_tokens, n_chunks)})
                    .to_string(),
            );
            if behaviour == Behaviour::Normal {
                w.event("[DONE]");
            }
            w.end_chunked();
        }
        Behaviour::ResetMidStream => {
            w.sse_head();
            w.event(&text_chunk(0, false));
            // std has no stable SO_LINGER, so no RST: the peer sees EOF
            // inside a chunked body, which is just as broken.
            w.close();
        }
        Behaviour::Malformed => {
            w.sse_head();
            w.event("{not json");
            w.event("[DONE]");
            w.end_chunked();
        }
        Behaviour::Stall => {
            w.sse_head();
            w.event(&text_chunk(0, false));
            sleep_unless_stopped(shared, shared.cfg.stall_for);
            w.close();
        }
        Behaviour::EndlessSse => {
            w.sse_head();
            // 256 events per write, so the flood outruns any client timeout.
            let burst: String = (0..256)
                .map(|i| {
                    let payload = format!("data: {}\n\n", text_chunk(i, false));
                    format!("{:x}\r\n{payload}\r\n", payload.len())
                })
                .collect();
            while w.write(burst.as_bytes()) && !shared.stop.load(Ordering::SeqCst) {}
            w.close();
        }
        Behaviour::GiantEvent => {
            w.sse_head();
            w.event(&text_chunk(0, false));
            // One HTTP chunk per piece, all of them one `data:` line.
            let piece = "a".repeat(64 << 10);
            let mut first = true;
            loop {
                let p = if first {
                    format!("data: {piece}")
                } else {
                    piece.clone()
                };
                first = false;
                let ok = w.write(format!("{:x}\r\n{p}\r\n", p.len()).as_bytes());
                if !ok || shared.stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            w.close();
        }
        Behaviour::GiantUnary => {
            w.write(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{\"id\":\"cmpl-fake\",\"choices\":[{{\"text\":\"",
                    1u64 << 30
                )
                .as_bytes(),
            );
            let piece = "a".repeat(64 << 10);
            while w.write(piece.as_bytes()) && !shared.stop.load(Ordering::SeqCst) {}
            w.close();
        }
        Behaviour::SlowHeaders => {
            w.write(b"HTTP/1.1 200 OK\r\nx-slow: ");
            while w.write(b"a") && !shared.stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
            w.close();
        }
        Behaviour::EndlessHeaders => {
            w.write(b"HTTP/1.1 200 OK\r\n");
            let mut i = 0u64;
            while w.write(format!("x-h{i}: v\r\n").as_bytes())
                && !shared.stop.load(Ordering::SeqCst)
            {
                i += 1;
            }
            w.close();
        }
        Behaviour::SlowBody => {
            w.sse_head();
            let payload = format!("data: {}\n\n", text_chunk(0, false));
            w.write(format!("{:x}\r\n", payload.len() + (1 << 20)).as_bytes());
            while w.write(b":") && !shared.stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
            w.close();
        }
        Behaviour::Gzip => {
            // Any bytes would do: the client must not try to read them.
            let body = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03";
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                if streamed {
                    "text/event-stream"
                } else {
                    "application/json"
                },
                body.len()
            );
            w.write(head.as_bytes());
            w.write(body);
            w.close();
        }
        Behaviour::Unary => {
            let text: String = (0..n_chunks).map(|i| format!(" t{i}")).collect();
            let b = json!({
                "id": "cmpl-fake",
                "object": "text_completion",
                "model": MODEL,
                "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                "usage": usage(prompt_tokens, n_chunks),
            });
            w.full("200 OK", "application/json", b.to_string().as_bytes());
        }
        Behaviour::ErrorEvent => {
            w.sse_head();
            w.event(&text_chunk(0, false));
            w.event(
                &json!({"error": {"message": STREAM_ERROR_MESSAGE, "type": "internal_server_error", "code": 500}})
                    .to_string(),
            );
            w.event("[DONE]");
            w.end_chunked();
        }
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn text_chunk(i: usize, last: bool) -> String {
    json!({
        "id": "cmpl-fake",
        "object": "text_completion",
        "model": MODEL,
        "choices": [{"index": 0, "text": format!(" t{i}"), "finish_reason": if last { Some("length") } else { None }}],
        "usage": null,
    })
    .to_string()
}

fn sleep_unless_stopped(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(10));
    }
}

/// One connection, and the bytes written to it; every answer is
/// `Connection: close`, so the client never reuses a socket whose fate a
/// behaviour decided.
struct Conn(TcpStream, u64);

impl Conn {
    /// False once the client went away (stall, timeout, a cap): not our failure.
    fn write(&mut self, bytes: &[u8]) -> bool {
        let ok = self
            .0
            .write_all(bytes)
            .and_then(|()| self.0.flush())
            .is_ok();
        if ok {
            self.1 += bytes.len() as u64;
        }
        ok
    }

    fn full(&mut self, status: &str, content_type: &str, body: &[u8]) {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        self.write(head.as_bytes());
        self.write(body);
        self.close();
    }

    fn sse_head(&mut self) {
        self.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
    }

    /// One SSE event as one HTTP chunk.
    fn event(&mut self, data: &str) -> bool {
        let payload = format!("data: {data}\n\n");
        self.write(format!("{:x}\r\n{payload}\r\n", payload.len()).as_bytes())
    }

    fn end_chunked(&mut self) {
        self.write(b"0\r\n\r\n");
        self.close();
    }

    fn close(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}

/// A loopback port with nothing listening (bound, then released).
pub(crate) fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

pub(crate) struct Dirs {
    pub root: tempfile::TempDir,
    pub cache: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Self {
        Dirs {
            root: tempfile::tempdir().expect("tempdir"),
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.path().join("r1")
    }
}

/// `sparkhost run` of the synthetic workload with small prompts and a short
/// timeout, writing run `r1`.
pub(crate) fn run_synthetic(
    endpoint: &str,
    dirs: &Dirs,
    requests: u32,
    resolve_timeout: &str,
    extra: &[&str],
) -> Output {
    let wasm = synthetic();
    let requests = requests.to_string();
    let root = dirs.root.path().display().to_string();
    let mut args = vec![
        "run",
        wasm.to_str().expect("utf-8 path"),
        "--endpoint",
        endpoint,
        "--concurrency",
        "1",
        "--requests",
        &requests,
        "--warmup",
        "0",
        "--max-tokens",
        "8",
        "--timeout",
        "2s",
        "--results-root",
        &root,
        "--run-id",
        "r1",
        "--param",
        "set=short",
        "--param",
        "short-range=20:40",
        "--model-resolve-timeout",
        resolve_timeout,
        "--model-resolve-poll",
        "200ms",
        // These tests are about per-request failures, not KVBM or the error-rate gate.
        "--kv-mode",
        "off",
        "--max-error-rate",
        "1",
    ];
    args.extend_from_slice(extra);
    sparkhost(&args, dirs.cache.path())
}

pub(crate) fn rows_of(run_dir: &Path) -> Vec<Value> {
    read_jsonl(&run_dir.join("requests.jsonl"))
}

/// Peak RSS a run of the fault tests' small requests may reach. Unbounded,
/// one endless stream of 2 s took the client past 360 MB and a giant body
/// past its size (`bounded.rs`).
pub const PEAK_RSS_BOUND: u64 = 150 << 20;

/// The run's peak RSS: its own `VmHWM`, read as it writes `summary.json`
/// after every request ended. (A child's `ru_maxrss` is no use here: it
/// starts from the test process's own peak, inherited through vfork.)
pub fn peak_rss(dir: &Path) -> u64 {
    let s = read_json(&dir.join("summary.json"));
    s["harness"]["peak_rss_kib"]
        .as_u64()
        .unwrap_or_else(|| panic!("no peak RSS in {:#}", s["harness"]))
        << 10
}

fn main_phase(summary: &Value) -> &Value {
    summary["phase_summaries"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["phase"] == "main"))
        .unwrap_or_else(|| panic!("no main phase in {summary:#}"))
}

pub(crate) fn expected_kind(b: Behaviour) -> Option<&'static str> {
    match b {
        Behaviour::Normal => None,
        Behaviour::Http500 => Some("http_5xx"),
        Behaviour::Http429 => Some("http_429"),
        // The socket closes inside a chunked body: a broken connection, not
        // a short stream.
        Behaviour::ResetMidStream => Some("connection_reset"),
        Behaviour::Malformed => Some("malformed_response"),
        Behaviour::Stall => Some("timeout"),
        Behaviour::ErrorEvent => Some("stream_error"),
        Behaviour::NoDone => Some("incomplete_stream"),
        // A redirect is neither followed nor blamed on the server.
        Behaviour::Redirect301 => Some("http_3xx"),
        Behaviour::EndlessSse
        | Behaviour::GiantEvent
        | Behaviour::GiantUnary
        | Behaviour::EndlessHeaders => Some("response_too_large"),
        Behaviour::SlowHeaders | Behaviour::SlowBody => Some("timeout"),
        Behaviour::Gzip => Some("unsupported_content_encoding"),
        Behaviour::Unary => None,
    }
}

#[test]
fn each_fault_gets_its_own_error_kind_and_the_run_stays_valid() {
    use Behaviour::*;
    // Every fault sits between two normal requests, so a fault that took
    // its neighbours' measurements with it would show.
    let script = vec![
        Normal,
        Http500,
        Normal,
        Http429,
        Normal,
        ResetMidStream,
        Normal,
        Malformed,
        Normal,
        Stall,
        Normal,
        ErrorEvent,
        Normal,
        NoDone,
        Normal,
        Redirect301,
        Normal,
    ];
    let n = script.len();
    let server = FakeServer::start(FakeConfig {
        script: script.clone(),
        ..FakeConfig::default()
    });
    let dirs = Dirs::new();
    let out = run_synthetic(&server.endpoint(), &dirs, n as u32, "5s", &["--stream"]);
    // Request-level failures are data, not a reason to distrust the run.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let seen = server.completions();
    assert_eq!(seen.len(), n, "the server saw every request once");
    let served: Vec<Behaviour> = seen.iter().map(|s| s.behaviour).collect();
    assert_eq!(served, script);
    for s in &seen {
        assert_eq!(s.body["stream"], true);
        assert_eq!(s.body["model"], MODEL);
        assert_eq!(s.body["max_tokens"], 8);
    }

    let rows = rows_of(&dirs.run_dir());
    assert_eq!(rows.len(), n, "one row per request:\n{rows:#?}");
    let mut expected_errors: BTreeMap<String, u64> = BTreeMap::new();
    for (i, b) in script.iter().enumerate() {
        let id = format!("main-{i:05}");
        let row = rows
            .iter()
            .find(|r| r["prompt_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no row for {id}"));
        let ctx = format!("{id} ({b:?}): {row:#}");
        assert_eq!(row["error_kind"].as_str(), expected_kind(*b), "{ctx}");
        assert_eq!(row["ok"], expected_kind(*b).is_none(), "{ctx}");
        if let Some(k) = expected_kind(*b) {
            *expected_errors.entry(k.to_owned()).or_default() += 1;
            assert!(
                row["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{ctx}"
            );
        }
        let chunks = row["chunk_offsets_ms"]
            .as_array()
            .expect("chunk offsets")
            .len();
        match b {
            Normal => {
                assert_eq!(row["status_code"], 200, "{ctx}");
                assert_eq!(chunks, 8, "{ctx}");
                assert!(row["ttft_ms"].is_f64(), "{ctx}");
                assert!(row["tpot_ms"].is_f64(), "{ctx}");
                assert_eq!(row["done_seen"], true, "{ctx}");
                assert_eq!(row["finish_reason"], "length", "{ctx}");
                assert_eq!(row["usage"]["completion_tokens"], 8, "{ctx}");
                assert_eq!(row["output_tokens"], 8, "{ctx}");
            }
            Http500 => {
                assert_eq!(row["status_code"], 500, "{ctx}");
                assert_eq!(
                    row["error"], "Internal server error (type Internal Server Error, code 500)",
                    "{ctx}"
                );
            }
            Redirect301 => {
                assert_eq!(row["status_code"], 301, "{ctx}");
                assert!(row["error"].as_str().unwrap().contains("HTTP 301"), "{ctx}");
            }
            Http429 => {
                assert_eq!(row["status_code"], 429, "{ctx}");
                assert!(
                    row["error"].as_str().unwrap().contains(RATE_LIMIT_MESSAGE),
                    "{ctx}"
                );
            }
            // What arrived before the break is kept.
            ResetMidStream | Stall => {
                assert_eq!(row["status_code"], 200, "{ctx}");
                assert_eq!(chunks, 1, "{ctx}");
                assert_eq!(row["done_seen"], false, "{ctx}");
            }
            Malformed => {
                assert!(
                    row["error"].as_str().unwrap().contains("{not json"),
                    "{ctx}"
                );
            }
            ErrorEvent => {
                assert_eq!(row["status_code"], 200, "{ctx}");
                assert_eq!(
                    row["error"],
                    format!("{STREAM_ERROR_MESSAGE} (type internal_server_error, code 500)"),
                    "{ctx}"
                );
                assert_eq!(chunks, 1, "{ctx}");
            }
            NoDone => {
                assert_eq!(chunks, 8, "{ctx}");
                assert_eq!(row["done_seen"], false, "{ctx}");
                assert_eq!(row["usage"]["completion_tokens"], 8, "{ctx}");
            }
            // Not in this script: `bounded.rs` runs them.
            EndlessSse | GiantEvent | GiantUnary | SlowHeaders | EndlessHeaders | SlowBody
            | Gzip | Unary => unreachable!("{b:?} is not scripted here"),
        }
    }

    let summary = read_json(&dirs.run_dir().join("summary.json"));
    assert_eq!(summary["run_valid"], true, "{summary:#}");
    assert_eq!(summary["invalid_reason"], Value::Null);
    assert_eq!(summary["dispatch"]["recorded"], n);
    assert_eq!(summary["dispatch"]["unsent"], 0);
    let main = main_phase(&summary);
    let by_kind: BTreeMap<String, u64> =
        serde_json::from_value(main["errors_by_kind"].clone()).expect("errors_by_kind");
    assert_eq!(by_kind, expected_errors);
    let errors: u64 = expected_errors.values().sum();
    assert_eq!(main["total_requests"], n);
    assert_eq!(main["error_requests"], errors);
    assert_eq!(main["ok_requests"], n as u64 - errors);
    let rss = peak_rss(&dirs.run_dir());
    assert!(rss < PEAK_RSS_BOUND, "peak RSS {} MiB", rss >> 20);
}

#[test]
fn nothing_listening_means_model_unavailable() {
    let dirs = Dirs::new();
    let endpoint = format!("http://127.0.0.1:{}", unused_port());
    let out = run_synthetic(&endpoint, &dirs, 2, "1s", &["--stream"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let summary = read_json(&dirs.run_dir().join("summary.json"));
    assert_eq!(summary["run_valid"], false);
    assert_eq!(
        summary["invalid_reason"], "model_unavailable",
        "{summary:#}"
    );
    let details = summary["invalid_details"].to_string();
    assert!(details.contains(&endpoint), "{details}");
    assert_eq!(summary["overall_summary"]["excluded"], true);
}

#[test]
fn refused_completions_are_recorded_as_connect_refused() {
    let server = FakeServer::start(FakeConfig {
        // The tokenizer probe, then resolution.
        close_after_models: Some(2),
        ..FakeConfig::default()
    });
    let dirs = Dirs::new();
    let out = run_synthetic(
        &server.endpoint(),
        &dirs,
        3,
        "5s",
        &["--stream", "--model", MODEL],
    );
    // A refused connection has no HTTP status, so it never triggers the
    // model check; but a run in which nothing succeeded measured nothing.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(server.models_served(), 2);
    assert!(server.completions().is_empty());
    let rows = rows_of(&dirs.run_dir());
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r["error_kind"], "connect_refused", "{r:#}");
        assert_eq!(r["status_code"], 0, "{r:#}");
        assert_eq!(r["ok"], false, "{r:#}");
    }
    let summary = read_json(&dirs.run_dir().join("summary.json"));
    assert_eq!(summary["model_id"], MODEL);
    assert_eq!(summary["invalid_reason"], "no_successful_requests");
    assert_eq!(main_phase(&summary)["errors_by_kind"]["connect_refused"], 3);
}

/// A run of `planned` requests whose model vanishes after two normal
/// answers; returns the summary, the rows and the manifest's length.
fn run_with_model_drop(planned: u64, extra: &[&str]) -> (Value, Vec<Value>, usize) {
    let server = FakeServer::start(FakeConfig {
        // The tokenizer probe (no --tokenizer: does the model name a local
        // directory?) and resolution see the model; the check after the
        // first 500 does not.
        models_listed_for: Some(2),
        script: vec![Behaviour::Normal, Behaviour::Normal],
        then: Behaviour::Http500,
        // Slow 500s leave the model check time to stop the run long before
        // the plan is used up.
        error_delay: Duration::from_millis(100),
        ..FakeConfig::default()
    });
    let dirs = Dirs::new();
    let mut args = vec!["--stream"];
    args.extend_from_slice(extra);
    let out = run_synthetic(&server.endpoint(), &dirs, planned as u32, "5s", &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let summary = read_json(&dirs.run_dir().join("summary.json"));
    assert_eq!(summary["invalid_reason"], "model_dropped", "{summary:#}");
    assert!(
        summary["invalid_details"].to_string().contains(MODEL),
        "{summary:#}"
    );
    let rows = rows_of(&dirs.run_dir());
    assert_eq!(rows.len(), server.completions().len());
    let manifest = read_jsonl(&dirs.run_dir().join("request_manifest.jsonl")).len();
    (summary, rows, manifest)
}

#[test]
fn a_model_that_disappears_invalidates_the_run_and_keeps_what_was_measured() {
    let planned = 30;
    let (summary, rows, manifest) = run_with_model_drop(planned, &[]);
    assert!(rows.len() >= 3, "{rows:#?}");
    assert!(rows.len() < planned as usize, "the run stopped early");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["prompt_id"], format!("main-{i:05}"));
        let want = if i < 2 { None } else { Some("http_5xx") };
        assert_eq!(r["error_kind"].as_str(), want, "{r:#}");
    }
    let d = &summary["dispatch"];
    let unsent = d["unsent"].as_u64().unwrap();
    assert!(unsent > 0, "{d:#}");
    assert_eq!(d["recorded"], rows.len());
    // The default look-ahead (256) holds the whole plan, so it is all planned.
    assert_eq!(d["planned"], planned);
    assert_eq!(manifest as u64, planned);
    assert_eq!(
        d["recorded"].as_u64().unwrap() + unsent,
        planned,
        "every planned request is either recorded or counted unsent: {d:#}"
    );
    assert_eq!(summary["overall_summary"]["excluded"], true);
}

/// With a look-ahead smaller than the plan, requests can sit in the feed
/// channel (and one in the blocked feed thread) when the run stops: they are
/// in the manifest and in `planned`, but `unsent` only counts what the
/// dispatcher had taken in.
#[test]
fn unsent_accounts_for_every_planned_request_with_a_small_lookahead() {
    let (summary, rows, manifest) = run_with_model_drop(30, &["--lookahead", "4"]);
    let d = &summary["dispatch"];
    assert_eq!(d["planned"], manifest);
    assert_eq!(d["recorded"], rows.len());
    assert_eq!(
        d["recorded"].as_u64().unwrap() + d["unsent"].as_u64().unwrap(),
        d["planned"].as_u64().unwrap(),
        "every planned request is either recorded or counted unsent: {d:#}"
    );
}

#[test]
fn unary_http_errors_keep_the_servers_message() {
    let server = FakeServer::start(FakeConfig {
        script: vec![
            Behaviour::Normal,
            Behaviour::Http500,
            Behaviour::Http429,
            Behaviour::Normal,
        ],
        ..FakeConfig::default()
    });
    let dirs = Dirs::new();
    let out = run_synthetic(&server.endpoint(), &dirs, 4, "5s", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        server
            .completions()
            .iter()
            .all(|s| s.body["stream"] == false)
    );
    let rows = rows_of(&dirs.run_dir());
    assert_eq!(rows.len(), 4);
    for i in [0, 3] {
        let r = &rows[i];
        assert_eq!(r["ok"], true, "{r:#}");
        assert_eq!(r["stream"], false, "{r:#}");
        assert_eq!(r["usage"]["completion_tokens"], 8, "{r:#}");
        // Unary answers have no token timing to measure.
        assert_eq!(r["ttft_ms"], Value::Null, "{r:#}");
    }
    assert_eq!(rows[1]["error_kind"], "http_5xx");
    assert_eq!(rows[1]["status_code"], 500);
    assert_eq!(
        rows[1]["error"],
        "Internal server error (type Internal Server Error, code 500)"
    );
    assert_eq!(rows[2]["error_kind"], "http_429");
    assert_eq!(rows[2]["status_code"], 429);
    assert_eq!(
        rows[2]["error"],
        format!("{RATE_LIMIT_MESSAGE} (type rate_limit_exceeded, code 429)")
    );
    let summary = read_json(&dirs.run_dir().join("summary.json"));
    let by_kind = &main_phase(&summary)["errors_by_kind"];
    assert_eq!(by_kind, &json!({"http_5xx": 1, "http_429": 1}));
}

#[test]
fn a_run_directory_is_never_overwritten() {
    let server = FakeServer::start(FakeConfig::default());
    let dirs = Dirs::new();
    let first = run_synthetic(&server.endpoint(), &dirs, 1, "5s", &["--stream"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let summary_path = dirs.run_dir().join("summary.json");
    let before = std::fs::read(&summary_path).expect("first summary");

    let second = run_synthetic(&server.endpoint(), &dirs, 1, "5s", &["--stream"]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("already exists"), "{}", text(&second));
    assert_eq!(std::fs::read(&summary_path).unwrap(), before);
    assert_eq!(
        server.completions().len(),
        1,
        "the refused run sent nothing"
    );
}
