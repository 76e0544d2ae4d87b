//! Sends one request and timestamps everything that happens to it.
//!
//! Arrival times are the kernel's receive stamps of the reads that brought the
//! bytes, and the send time is when the request's first byte went to `write`
//! (both from [`super::stamp`]); the parser's own lateness is kept per chunk
//! as the read-path delay. Parsing borrows from the read buffer, and the only
//! lock taken is the connection's own stamp cell. Every failure ends as data
//! in the [`Outcome`], never as an error.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client as HyperClient, connect::HttpConnector};

use super::stamp::{RxClock, StampingConnector, Stamps};
use hyper_util::rt::TokioExecutor;
use tokio::time::timeout_at;

use super::openai::{self, ServerError, Usage};
use super::sse::{SseEvent, SseParser};
use super::{ErrorKind, Prepared};

/// A content-bearing chunk: when it arrived and where its text ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMark {
    /// Arrival at the socket (kernel stamp) or, without stamps, the read time.
    pub at: Instant,
    /// Byte offset in [`Outcome::text`] just past this chunk's text.
    pub text_end: u32,
    /// How long after its kernel arrival the parser saw it, µs; `None` when
    /// the read that brought it had no stamp.
    pub read_delay_us: Option<u32>,
    /// It arrived in the same read as the chunk before it, so its kernel stamp
    /// is that of the read's last segment.
    pub shared_read: bool,
}

/// A request's failure, recorded next to its timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Everything measured for one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub intended: Instant,
    /// When the request's first byte went to the socket (or, if the
    /// connection never wrote, when it was handed to the HTTP client).
    pub sent: Instant,
    /// Which clock the reported arrival times come from.
    pub clock: RxClock,
    pub headers: Option<Instant>,
    pub first_byte: Option<Instant>,
    /// First SSE event carrying data (TTFC).
    pub first_chunk: Option<Instant>,
    /// First chunk with generated text (TTFT).
    pub first_token: Option<Instant>,
    pub end: Instant,
    pub status: u16,
    pub error: Option<RequestError>,
    pub text: String,
    pub chunks: Vec<ChunkMark>,
    pub usage: Option<Usage>,
    pub response_id: Option<String>,
    pub server_request_id: Option<String>,
    pub finish_reason: Option<String>,
    pub done_seen: bool,
    pub streamed: bool,
}

impl Outcome {
    fn new(intended: Instant, sent: Instant, streamed: bool) -> Self {
        Outcome {
            intended,
            sent,
            clock: RxClock::Application,
            headers: None,
            first_byte: None,
            first_chunk: None,
            first_token: None,
            end: sent,
            status: 0,
            error: None,
            text: String::new(),
            chunks: Vec::new(),
            usage: None,
            response_id: None,
            server_request_id: None,
            finish_reason: None,
            done_seen: false,
            streamed,
        }
    }

    /// Keeps the first failure: later ones are usually consequences of it.
    fn fail(&mut self, kind: ErrorKind, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(RequestError {
                kind,
                message: message.into(),
            });
        }
    }

    fn fail_server(&mut self, default: ErrorKind, e: &ServerError) {
        let kind = if mentions_prompt_limit(&e.message) {
            ErrorKind::PromptLimit
        } else {
            default
        };
        let mut msg = e.message.clone();
        if let Some(k) = &e.kind {
            msg.push_str(&format!(" (type {k}"));
            if let Some(c) = &e.code {
                msg.push_str(&format!(", code {c}"));
            }
            msg.push(')');
        }
        self.fail(kind, msg);
    }
}

/// The seed harness's engine-limit detector, kept so its runs compare.
fn mentions_prompt_limit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("max_num_tokens") || m.contains("maximum context length")
}

/// HTTP/1.1 keep-alive client for one endpoint.
#[derive(Clone)]
pub struct Client {
    http: HyperClient<StampingConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
    clock: RxClock,
}

impl Client {
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self::with_clock(base, timeout, RxClock::Kernel)
    }

    pub fn with_clock(base: &str, timeout: Duration, clock: RxClock) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(30))));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(StampingConnector(http));
        Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            clock,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A plain GET returning status and body (for `/v1/models`, `/health`).
    pub async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let req = Request::get(format!("{}{}", self.base, path))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + self.timeout.min(Duration::from_secs(30));
        let resp = timeout_at(deadline, self.http.request(req))
            .await
            .map_err(|_| format!("GET {path}: timed out"))?
            .map_err(|e| format!("GET {}{path}: {}", self.base, describe_client_error(&e)))?;
        let status = resp.status();
        let body = timeout_at(deadline, resp.into_body().collect())
            .await
            .map_err(|_| format!("GET {path}: body timed out"))?
            .map_err(|e| format!("GET {path}: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// Opens up to `n` keep-alive connections before a run, by sending `n`
    /// concurrent `GET /v1/models`: otherwise the first request on every slot
    /// pays a TCP handshake that the server never sees, and TTFT looks worse
    /// than the server made it. Returns how many succeeded.
    pub async fn prewarm(&self, n: usize) -> usize {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let c = self.clone();
                tokio::spawn(async move { c.get("/v1/models").await.is_ok() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            if matches!(t.await, Ok(true)) {
                ok += 1;
            }
        }
        ok
    }

    /// Sends `p` now; `intended` is when the schedule wanted it sent.
    pub async fn execute(&self, p: &Prepared, intended: Instant) -> Outcome {
        let uri = format!("{}{}", self.base, p.api.path());
        let mut builder = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        if p.stream {
            builder = builder.header(header::ACCEPT, "text/event-stream");
        }
        let req = match builder.body(Full::new(p.body.clone())) {
            Ok(r) => r,
            Err(e) => {
                let now = Instant::now();
                let mut o = Outcome::new(intended, now, p.stream);
                o.fail(ErrorKind::Malformed, format!("cannot build request: {e}"));
                return o;
            }
        };
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent + self.timeout);
        let mut o = Outcome::new(intended, sent, p.stream);
        self.exchange(req, deadline, &mut o).await;
        o.end = Instant::now();
        o
    }

    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
        deadline: tokio::time::Instant,
        o: &mut Outcome,
    ) {
        let resp = match timeout_at(deadline, self.http.request(req)).await {
            Err(_) => {
                return o.fail(
                    ErrorKind::Timeout,
                    "no response headers before the request timeout",
                );
            }
            Ok(Err(e)) => {
                let kind = if is_refused(&e) {
                    ErrorKind::ConnectRefused
                } else if e.is_connect() {
                    ErrorKind::Connect
                } else {
                    ErrorKind::ConnectionReset
                };
                return o.fail(kind, describe_client_error(&e));
            }
            Ok(Ok(r)) => r,
        };
        let mut rx = Rx::new(self.clock, resp.extensions().get::<Stamps>().cloned());
        if let Some(w) = rx.stamps.as_ref().and_then(Stamps::request_written)
            && w >= o.sent
        {
            o.sent = w;
        }
        o.headers = Some(rx.arrival().0);
        o.status = resp.status().as_u16();
        o.server_request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let status = resp.status();
        let mut body = resp.into_body();

        if !status.is_success() {
            let bytes = read_all(&mut body, deadline, o, &mut rx).await;
            let kind = match status.as_u16() {
                429 => ErrorKind::Http429,
                400..=499 => ErrorKind::Http4xx,
                _ => ErrorKind::Http5xx,
            };
            match openai::parse_error_body(&bytes) {
                Some(e) => o.fail_server(kind, &e),
                None => o.fail(
                    kind,
                    format!(
                        "HTTP {}: {}",
                        status.as_u16(),
                        String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                    ),
                ),
            }
            return;
        }

        if o.streamed && is_sse {
            read_stream(&mut body, deadline, o, &mut rx).await;
        } else {
            // A server may answer a streamed request with one JSON body; measure it as unary.
            o.streamed = false;
            let bytes = read_all(&mut body, deadline, o, &mut rx).await;
            if o.error.is_some() {
                return;
            }
            match openai::parse_chunk(&bytes) {
                Ok(info) => {
                    if let Some(e) = &info.error {
                        o.fail_server(ErrorKind::StreamError, e);
                    }
                    o.usage = info.usage;
                    o.response_id = info.id;
                    o.finish_reason = info.finish_reason;
                    o.text.push_str(&info.text);
                }
                Err(e) => o.fail(
                    ErrorKind::Malformed,
                    format!("response body is not an OpenAI JSON object: {e}"),
                ),
            }
        }
    }
}

/// Where the parser gets arrival times from for one response.
struct Rx {
    clock: RxClock,
    stamps: Option<Stamps>,
    /// The read that carried the previous content chunk.
    last_content_read: Option<u64>,
}

impl Rx {
    fn new(clock: RxClock, stamps: Option<Stamps>) -> Self {
        Rx {
            clock,
            stamps,
            last_content_read: None,
        }
    }

    /// The time to report for bytes just handed over, the kernel read they
    /// came from, and how much later than their arrival the parser sees them.
    /// The delay is measured whichever clock is reported: with the
    /// application clock it is the error the reported times carry.
    fn arrival(&self) -> (Instant, Option<u64>, Duration) {
        let now = Instant::now();
        match self.stamps.as_ref().and_then(Stamps::last_arrival) {
            Some(a) if a.at <= now => {
                let at = match self.clock {
                    RxClock::Kernel => a.at,
                    RxClock::Application => now,
                };
                (at, Some(a.read), now - a.at)
            }
            _ => (now, None, Duration::ZERO),
        }
    }
}

type Frame = Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>;

/// The next body frame, or `Err(())` once `expiry` fires. One timer serves
/// the whole body: a fresh timeout per frame cost a timer-wheel insert and
/// removal for every streamed token.
async fn next_frame(
    body: &mut hyper::body::Incoming,
    mut expiry: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<Frame, ()> {
    tokio::select! {
        biased;
        f = body.frame() => Ok(f),
        _ = expiry.as_mut() => Err(()),
    }
}

async fn read_all(
    body: &mut hyper::body::Incoming,
    deadline: tokio::time::Instant,
    o: &mut Outcome,
    rx: &mut Rx,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(expiry);
    loop {
        match next_frame(body, expiry.as_mut()).await {
            Err(_) => {
                o.fail(
                    ErrorKind::Timeout,
                    "body not complete before the request timeout",
                );
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                o.fail(ErrorKind::ConnectionReset, format!("reading body: {e}"));
                break;
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if o.first_byte.is_none() && !data.is_empty() {
                        o.first_byte = Some(rx.arrival().0);
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    buf
}

async fn read_stream(
    body: &mut hyper::body::Incoming,
    deadline: tokio::time::Instant,
    o: &mut Outcome,
    rx: &mut Rx,
) {
    let mut parser = SseParser::new();
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(expiry);
    loop {
        let frame = match next_frame(body, expiry.as_mut()).await {
            Err(_) => {
                o.fail(
                    ErrorKind::Timeout,
                    "stream not finished before the request timeout",
                );
                return;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                o.fail(ErrorKind::ConnectionReset, format!("stream broken: {e}"));
                return;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // One timestamp per frame: every event in it arrived together.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let (at, read, late) = rx.arrival();
        // A request counts as kernel-timed once any of its reads was stamped.
        if read.is_some() {
            o.clock = rx.clock;
        }
        let mark = Seen {
            at,
            read_delay_us: read.map(|_| late.as_micros().min(u128::from(u32::MAX)) as u32),
            read,
        };
        if o.first_byte.is_none() && !data.is_empty() {
            o.first_byte = Some(at);
        }
        parser.push(&data, |ev| on_event(ev, mark, &mut rx.last_content_read, o));
    }
    if parser.has_partial() {
        o.fail(ErrorKind::Malformed, "stream ended inside an SSE event");
    } else if !o.done_seen && o.error.is_none() {
        o.fail(
            ErrorKind::Incomplete,
            "stream ended without the [DONE] sentinel",
        );
    }
    if parser.invalid_lines() > 0 {
        o.fail(
            ErrorKind::Malformed,
            format!(
                "{} lines did not follow the SSE format",
                parser.invalid_lines()
            ),
        );
    }
}

/// When a frame's events arrived, as [`Rx::arrival`] saw it.
#[derive(Clone, Copy)]
struct Seen {
    at: Instant,
    read_delay_us: Option<u32>,
    read: Option<u64>,
}

fn on_event(ev: SseEvent<'_>, seen: Seen, last_read: &mut Option<u64>, o: &mut Outcome) {
    let at = seen.at;
    match ev {
        SseEvent::Done => o.done_seen = true,
        SseEvent::Data { event, data } => {
            if o.first_chunk.is_none() {
                o.first_chunk = Some(at);
            }
            match openai::parse_chunk(data) {
                Err(e) => o.fail(
                    ErrorKind::Malformed,
                    format!(
                        "SSE data is not JSON ({e}): {}",
                        String::from_utf8_lossy(&data[..data.len().min(200)])
                    ),
                ),
                Ok(info) => {
                    if let Some(e) = &info.error {
                        o.fail_server(ErrorKind::StreamError, e);
                    } else if event == Some("error") {
                        o.fail(
                            ErrorKind::StreamError,
                            String::from_utf8_lossy(data).into_owned(),
                        );
                    }
                    if !info.text.is_empty() {
                        if o.first_token.is_none() {
                            o.first_token = Some(at);
                        }
                        o.text.push_str(&info.text);
                        let shared_read = seen.read.is_some() && seen.read == *last_read;
                        *last_read = seen.read;
                        o.chunks.push(ChunkMark {
                            at,
                            text_end: o.text.len() as u32,
                            read_delay_us: seen.read_delay_us,
                            shared_read,
                        });
                    }
                    if info.usage.is_some() {
                        o.usage = info.usage;
                    }
                    if o.response_id.is_none() {
                        o.response_id = info.id;
                    }
                    if info.finish_reason.is_some() {
                        o.finish_reason = info.finish_reason;
                    }
                }
            }
        }
    }
}

fn is_refused(e: &hyper_util::client::legacy::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        src = s.source();
    }
    false
}

/// The whole cause chain: hyper's top-level message alone ("client error (Connect)") hides the reason.
fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_limit_messages_are_recognised() {
        assert!(mentions_prompt_limit(
            "Prompt length should not exceed max_num_tokens"
        ));
        assert!(mentions_prompt_limit(
            "This model's maximum context length is 4096 tokens"
        ));
        assert!(!mentions_prompt_limit("Internal server error"));
    }

    #[test]
    fn first_failure_wins() {
        let now = Instant::now();
        let mut o = Outcome::new(now, now, true);
        o.fail(ErrorKind::StreamError, "first");
        o.fail(ErrorKind::Incomplete, "second");
        assert_eq!(o.error.unwrap().kind, ErrorKind::StreamError);
    }
}
