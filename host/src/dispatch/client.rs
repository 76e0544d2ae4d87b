//! Sends one request and timestamps everything that happens to it.
//!
//! Arrival times are the kernel's receive stamps of the reads that brought the
//! bytes ([`super::stamp`]), and the send time is when the request's first
//! byte went to `write`; the parser's own lateness is kept per chunk as the
//! read-path delay. The connection is read by this task itself
//! ([`super::h1`]), so each read's stamp comes with its bytes; parsing
//! borrows from the read buffer. Every failure ends as data in the
//! [`Outcome`], never as an error.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use tokio::time::Sleep;

use super::Prepared;
use super::access::Access;
use super::h1::{self, Pool};
use super::openai::{self, ServerError, Usage};
use super::sse::{SseEvent, SseParser};
use super::stamp::RxClock;
use super::untimed::{Untimed, UntimedError};
use crate::limits::{
    MAX_ERROR_BODY_BYTES, MAX_RESPONSE_BYTES, MAX_RESPONSE_CHUNKS, MAX_UNTIMED_BODY,
    UNTIMED_TIMEOUT,
};
use crate::plan::ErrorKind;

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

/// The answer to [`Client::plain`].
#[derive(Debug, Clone)]
pub struct Plain {
    pub status: StatusCode,
    /// The `Server` header.
    pub server: Option<String>,
    pub body: Bytes,
}

/// HTTP/1.1 keep-alive client for one endpoint, with its untimed sibling
/// for discovery and probes.
#[derive(Clone)]
pub struct Client {
    pool: Arc<Pool>,
    untimed: Untimed,
    base: String,
    timeout: Duration,
    clock: RxClock,
    max_response_bytes: u64,
}

/// Why a client could not be made for an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Endpoint(#[from] h1::Error),
    #[error(transparent)]
    Untimed(#[from] UntimedError),
}

impl Client {
    pub fn new(base: &str, timeout: Duration) -> Result<Self, ClientError> {
        Self::with_clock(base, timeout, RxClock::Kernel)
    }

    pub fn with_clock(base: &str, timeout: Duration, clock: RxClock) -> Result<Self, ClientError> {
        Self::with_access(base, timeout, clock, &Access::default())
    }

    /// A client whose every request, timed or not, carries `access`'s
    /// headers and trusts servers as it says.
    pub fn with_access(
        base: &str,
        timeout: Duration,
        clock: RxClock,
        access: &Access,
    ) -> Result<Self, ClientError> {
        let endpoint = h1::Endpoint::with_access(base, access)?;
        let untimed = Untimed::new(&endpoint, access, timeout.min(UNTIMED_TIMEOUT))?;
        Ok(Client {
            base: endpoint.root(),
            pool: Arc::new(Pool::new(endpoint)),
            untimed,
            timeout,
            clock,
            max_response_bytes: MAX_RESPONSE_BYTES,
        })
    }

    /// Caps each timed response's body bytes (`--max-response-bytes`).
    pub fn with_max_response_bytes(mut self, bytes: u64) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The API root (the base URL less a trailing `/v1`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The client for requests that are not timed.
    pub fn untimed(&self) -> &Untimed {
        &self.untimed
    }

    /// A plain GET on the timed path's connections, returning status and
    /// body: prewarming opens connections this way, and the benchmarks fetch
    /// the ground truth over the connections they measure.
    pub async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), String> {
        self.plain("GET", path, b"", self.timeout.min(UNTIMED_TIMEOUT))
            .await
            .map(|r| (r.status, r.body))
    }

    /// A plain request (JSON body, may be empty) and its whole answer within
    /// `limit`, for requests off the timing path: `/version`, a KV reset.
    pub async fn plain(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        limit: Duration,
    ) -> Result<Plain, String> {
        let request = self.pool.endpoint.request(method, path, false, body);
        let url = format!("{}{path}", self.base);
        let expiry = tokio::time::sleep(limit);
        tokio::pin!(expiry);
        let (mut resp, _) = self
            .start(&request, expiry.as_mut())
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let mut body = Vec::new();
        loop {
            match resp.next(expiry.as_mut()).await {
                Ok(Some(_)) if body.len() + resp.data().len() > MAX_UNTIMED_BODY => {
                    return Err(format!(
                        "{method} {url}: the body is longer than {MAX_UNTIMED_BODY} bytes"
                    ));
                }
                Ok(Some(_)) => body.extend_from_slice(resp.data()),
                Ok(None) => break,
                Err(e) => return Err(format!("{method} {url}: body: {e}")),
            }
        }
        let status = StatusCode::from_u16(resp.head.status)
            .map_err(|_| format!("{method} {url}: bad status {}", resp.head.status))?;
        let server = resp.head.server.clone();
        resp.finish(&self.pool);
        Ok(Plain {
            status,
            server,
            body: body.into(),
        })
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

    /// Sends `request` on a pooled connection and reads the response head;
    /// returns the response and when the request's first byte was written.
    /// A reused connection that the server had closed while idle gives no
    /// response at all: the request then goes out again on another one.
    async fn start(
        &self,
        request: &[u8],
        mut expiry: Pin<&mut Sleep>,
    ) -> Result<(h1::Response, Instant), h1::Error> {
        loop {
            let (mut conn, reused) = self.pool.checkout(expiry.as_mut()).await?;
            let sent = match conn.send(request, expiry.as_mut()).await {
                Err(h1::Error::Write(_)) if reused => continue,
                r => r?,
            };
            match conn.read_head(expiry.as_mut()).await {
                Err(h1::Error::ClosedBeforeResponse) if reused => continue,
                r => return r.map(|resp| (resp, sent)),
            }
        }
    }

    /// Sends `p` now; `intended` is when the schedule wanted it sent.
    pub async fn execute(&self, p: &Prepared, intended: Instant) -> Outcome {
        let request = self
            .pool
            .endpoint
            .request("POST", p.api.path(), p.stream, &p.body);
        let mut outcome = Outcome::new(intended, Instant::now(), p.stream);
        let expiry = tokio::time::sleep(self.timeout);
        tokio::pin!(expiry);
        self.exchange(&request, expiry.as_mut(), &mut outcome).await;
        outcome.end = Instant::now();
        outcome
    }

    async fn exchange(&self, request: &[u8], mut expiry: Pin<&mut Sleep>, outcome: &mut Outcome) {
        let mut resp = match self.start(request, expiry.as_mut()).await {
            Ok((resp, sent)) => {
                outcome.sent = sent;
                resp
            }
            Err(e) => {
                let (kind, message) = classify(&e, Stage::Head);
                return outcome.fail(kind, message);
            }
        };
        resp.limit_body(self.max_response_bytes);
        let mut rx = Rx::new(self.clock);
        outcome.headers = Some(rx.arrival(&resp.head.read).0);
        outcome.status = resp.head.status;
        outcome.server_request_id = resp.head.request_id.clone();
        if let Some(enc) = resp.head.content_encoding.as_deref()
            && !enc.eq_ignore_ascii_case("identity")
        {
            // Not decoded: what would be timed is the decompressor's output,
            // and the connection is not reused (the body is left unread).
            return outcome.fail(
                ErrorKind::UnsupportedContentEncoding,
                format!(
                    "the server compressed the body (Content-Encoding: {}) although the request \
                     asked for identity; arrivals of a compressed stream are not token arrivals, \
                     so it is not decoded (turn compression off on the server or its proxy)",
                    enc.chars().take(64).collect::<String>()
                ),
            );
        }
        let is_sse = resp
            .head
            .content_type
            .as_deref()
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let status = resp.head.status;

        if !(200..300).contains(&status) {
            // Only the start of an error body is read: it names the error,
            // and the rest may be endless.
            let bytes = read_all(&mut resp, expiry, outcome, &mut rx, MAX_ERROR_BODY_BYTES).await;
            let kind = match status {
                300..=399 => ErrorKind::Http3xx,
                429 => ErrorKind::Http429,
                400..=499 => ErrorKind::Http4xx,
                500..=599 => ErrorKind::Http5xx,
                // 1xx after the head, or a status outside HTTP's range.
                _ => ErrorKind::Malformed,
            };
            match openai::parse_error_body(&bytes) {
                Some(e) => outcome.fail_server(kind, &e),
                None => outcome.fail(
                    kind,
                    format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                    ),
                ),
            }
        } else if outcome.streamed && is_sse {
            read_stream(&mut resp, expiry, outcome, &mut rx).await;
        } else {
            // A server may answer a streamed request with one JSON body; measure it as unary.
            outcome.streamed = false;
            let bytes = read_all(&mut resp, expiry, outcome, &mut rx, usize::MAX).await;
            if outcome.error.is_none() {
                match openai::parse_chunk(&bytes) {
                    Ok(info) => {
                        if let Some(e) = &info.error {
                            outcome.fail_server(ErrorKind::StreamError, e);
                        }
                        outcome.usage = info.usage;
                        outcome.response_id = info.id;
                        outcome.finish_reason = info.finish_reason;
                        outcome.text.push_str(&info.text);
                    }
                    Err(e) => outcome.fail(
                        ErrorKind::Malformed,
                        format!("response body is not an OpenAI JSON object: {e}"),
                    ),
                }
            }
        }
        resp.finish(&self.pool);
    }
}

/// How far a response had got when its connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Connecting, sending, or waiting for the response head.
    Head,
    /// Reading a whole (non-streamed) body.
    Body,
    /// Reading an SSE stream.
    Stream,
}

/// The one mapping of connection failures to error kinds and messages.
fn classify(e: &h1::Error, stage: Stage) -> (ErrorKind, String) {
    let kind = match e {
        h1::Error::Timeout => {
            let what = match stage {
                Stage::Head => "no response headers",
                Stage::Body => "body not complete",
                Stage::Stream => "stream not finished",
            };
            return (
                ErrorKind::Timeout,
                format!("{what} before the request timeout"),
            );
        }
        h1::Error::Malformed(_) => ErrorKind::Malformed,
        h1::Error::TooLarge(_) => ErrorKind::ResponseTooLarge,
        // Only the head stage connects; after it, any failure is a reset.
        _ if stage != Stage::Head => ErrorKind::ConnectionReset,
        e if e.is_refused() => ErrorKind::ConnectRefused,
        h1::Error::Connect { source, .. } if is_client_resource_error(source) => {
            ErrorKind::ClientResources
        }
        h1::Error::Connect { .. }
        | h1::Error::Tls { .. }
        | h1::Error::Endpoint(_)
        | h1::Error::Access(_) => ErrorKind::Connect,
        _ => ErrorKind::ConnectionReset,
    };
    let message = match (kind, stage) {
        (ErrorKind::ConnectionReset, Stage::Body) => format!("reading body: {e}"),
        (ErrorKind::ConnectionReset, Stage::Stream) => format!("stream broken: {e}"),
        _ => e.to_string(),
    };
    (kind, message)
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: this machine's limits, not the server.
fn is_client_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Where the parser gets arrival times from for one response.
struct Rx {
    clock: RxClock,
    /// The read that carried the previous content chunk.
    last_content_read: Option<u64>,
}

impl Rx {
    fn new(clock: RxClock) -> Self {
        Rx {
            clock,
            last_content_read: None,
        }
    }

    /// The time to report for the bytes of `read`, its number when the
    /// kernel stamped it, and how much later than their arrival the parser
    /// got them. The delay is measured whichever clock is reported: with the
    /// application clock it is the error the reported times carry.
    fn arrival(&self, read: &h1::Read) -> (Instant, Option<u64>, Duration) {
        match read.kernel {
            Some(k) if k <= read.seen => {
                let at = match self.clock {
                    RxClock::Kernel => k,
                    RxClock::Application => read.seen,
                };
                (at, Some(read.number), read.seen - k)
            }
            _ => (read.seen, None, Duration::ZERO),
        }
    }
}

/// The whole body, or its first `keep` bytes (bounded by the request's
/// expiry and the body cap).
async fn read_all(
    resp: &mut h1::Response,
    mut expiry: Pin<&mut Sleep>,
    outcome: &mut Outcome,
    rx: &mut Rx,
    keep: usize,
) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < keep {
        match resp.next(expiry.as_mut()).await {
            Err(e) => {
                let (kind, message) = classify(&e, Stage::Body);
                outcome.fail(kind, message);
                break;
            }
            Ok(None) => break,
            Ok(Some(read)) => {
                let data = resp.data();
                if outcome.first_byte.is_none() && !data.is_empty() {
                    outcome.first_byte = Some(rx.arrival(&read).0);
                }
                buf.extend_from_slice(&data[..data.len().min(keep - buf.len())]);
            }
        }
    }
    buf
}

async fn read_stream(
    resp: &mut h1::Response,
    mut expiry: Pin<&mut Sleep>,
    outcome: &mut Outcome,
    rx: &mut Rx,
) {
    let mut parser = SseParser::new();
    loop {
        let read = match resp.next(expiry.as_mut()).await {
            Err(e) => {
                let (kind, message) = classify(&e, Stage::Stream);
                return outcome.fail(kind, message);
            }
            Ok(None) => break,
            Ok(Some(read)) => read,
        };
        let data = resp.data();
        if data.is_empty() {
            continue;
        }
        // One timestamp per read: every event in it arrived together.
        let (at, number, late) = rx.arrival(&read);
        // A request counts as kernel-timed once any of its reads was stamped.
        if number.is_some() {
            outcome.clock = rx.clock;
        }
        let mark = Seen {
            at,
            read_delay_us: number.map(|_| late.as_micros().min(u128::from(u32::MAX)) as u32),
            read: number,
        };
        if outcome.first_byte.is_none() {
            outcome.first_byte = Some(at);
        }
        parser.push(data, |ev| {
            on_event(ev, mark, &mut rx.last_content_read, outcome)
        });
        if let Some(max) = parser.too_large() {
            return outcome.fail(
                ErrorKind::ResponseTooLarge,
                format!("an SSE event or line longer than {max} bytes"),
            );
        }
        if outcome
            .error
            .as_ref()
            .is_some_and(|e| e.kind == ErrorKind::ResponseTooLarge)
        {
            return;
        }
    }
    if parser.has_partial() {
        outcome.fail(ErrorKind::Malformed, "stream ended inside an SSE event");
    } else if !outcome.done_seen && outcome.error.is_none() {
        outcome.fail(
            ErrorKind::Incomplete,
            "stream ended without the [DONE] sentinel",
        );
    }
    if parser.invalid_lines() > 0 {
        outcome.fail(
            ErrorKind::Malformed,
            format!(
                "{} lines did not follow the SSE format",
                parser.invalid_lines()
            ),
        );
    }
}

/// When a read's events arrived, as [`Rx::arrival`] saw it.
#[derive(Clone, Copy)]
struct Seen {
    at: Instant,
    read_delay_us: Option<u32>,
    read: Option<u64>,
}

fn on_event(ev: SseEvent<'_>, seen: Seen, last_read: &mut Option<u64>, outcome: &mut Outcome) {
    let at = seen.at;
    match ev {
        SseEvent::Done => outcome.done_seen = true,
        SseEvent::Data { event, data } => {
            if outcome.first_chunk.is_none() {
                outcome.first_chunk = Some(at);
            }
            match openai::parse_chunk(data) {
                Err(e) => outcome.fail(
                    ErrorKind::Malformed,
                    format!(
                        "SSE data is not JSON ({e}): {}",
                        String::from_utf8_lossy(&data[..data.len().min(200)])
                    ),
                ),
                Ok(info) => {
                    if let Some(e) = &info.error {
                        outcome.fail_server(ErrorKind::StreamError, e);
                    } else if event == Some("error") {
                        outcome.fail(
                            ErrorKind::StreamError,
                            String::from_utf8_lossy(data).into_owned(),
                        );
                    }
                    // Past the cap nothing more is kept, and the read loop
                    // ends the response.
                    if !info.text.is_empty() && outcome.chunks.len() >= MAX_RESPONSE_CHUNKS {
                        outcome.fail(
                            ErrorKind::ResponseTooLarge,
                            format!(
                                "more than {MAX_RESPONSE_CHUNKS} content chunks in one response"
                            ),
                        );
                    } else if !info.text.is_empty() {
                        if outcome.first_token.is_none() {
                            outcome.first_token = Some(at);
                        }
                        outcome.text.push_str(&info.text);
                        let shared_read = seen.read.is_some() && seen.read == *last_read;
                        *last_read = seen.read;
                        outcome.chunks.push(ChunkMark {
                            at,
                            text_end: outcome.text.len() as u32,
                            read_delay_us: seen.read_delay_us,
                            shared_read,
                        });
                    }
                    if info.usage.is_some() {
                        outcome.usage = info.usage;
                    }
                    if outcome.response_id.is_none() {
                        outcome.response_id = info.id;
                    }
                    if info.finish_reason.is_some() {
                        outcome.finish_reason = info.finish_reason;
                    }
                }
            }
        }
    }
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
    fn connection_failures_map_to_one_kind_each_by_stage() {
        let refused = || h1::Error::Connect {
            authority: "x:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let reset = || h1::Error::Read(std::io::ErrorKind::ConnectionReset.into());
        let kind = |e: h1::Error, stage| classify(&e, stage).0;
        assert_eq!(kind(refused(), Stage::Head), ErrorKind::ConnectRefused);
        assert_eq!(
            kind(h1::Error::Endpoint("x".into()), Stage::Head),
            ErrorKind::Connect
        );
        assert_eq!(kind(reset(), Stage::Head), ErrorKind::ConnectionReset);
        assert_eq!(
            kind(h1::Error::Malformed("x".into()), Stage::Stream),
            ErrorKind::Malformed
        );
        assert_eq!(kind(refused(), Stage::Body), ErrorKind::ConnectionReset);
        assert_eq!(
            classify(&h1::Error::Timeout, Stage::Body),
            (
                ErrorKind::Timeout,
                "body not complete before the request timeout".into()
            )
        );
        assert_eq!(
            classify(&reset(), Stage::Stream).1,
            format!("stream broken: {}", reset())
        );
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
