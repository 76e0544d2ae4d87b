//! HTTP/1.1 exchanges read by the request's own task.
//!
//! hyper's client reads every connection in a task of its own and passes each
//! body chunk to the request through a channel: per streamed token that is a
//! second task poll, a cross-task wake and a buffer split; removing them cut
//! the client's CPU at 512 streams by a fifth (BENCHMARKS.md). Here the task
//! that times a request owns its socket for the whole exchange, so each
//! read's kernel stamp reaches the parser with the bytes it brought, and
//! nothing else runs per token. Parsing is `httparse`'s (the parser inside hyper); this module
//! only frames: the response head, then a chunked, sized or close-delimited
//! body. Connections are kept alive in a [`Pool`] and checked before reuse.

use std::future::poll_fn;
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::access::{Access, AccessError};
use super::stamp::{enable_rx_timestamps, poll_recv_stamped_init};

use crate::limits::{
    MAX_CHUNK_LINE_BYTES, MAX_RESPONSE_BYTES, MAX_RESPONSE_HEAD_BYTES, MAX_RESPONSE_HEADERS,
};

/// Room for one read; a response head must fit in [`MAX_RESPONSE_HEAD_BYTES`].
const READ_SIZE: usize = 8 * 1024;
/// Room for one TCP read over TLS: a whole maximal record and its overhead,
/// so a read is never split for want of space.
const TLS_READ_SIZE: usize = 16 * 1024 + 512;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("endpoint {0:?} is not http[s]://host[:port][/path] (no user@, query or fragment)")]
    Endpoint(String),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("connecting to {authority}: {source}")]
    Connect {
        authority: String,
        source: io::Error,
    },
    #[error("TLS handshake with {authority}: {source}")]
    Tls {
        authority: String,
        source: io::Error,
    },
    #[error("writing the request: {0}")]
    Write(io::Error),
    #[error("reading the response: {0}")]
    Read(io::Error),
    /// Not one byte of a response came back: on a reused connection this is
    /// a server that closed it while idle, and the request is sent again.
    #[error("the server closed the connection without responding")]
    ClosedBeforeResponse,
    #[error("the connection closed {0}")]
    Closed(&'static str),
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// Past a cap on what a server may send (`limits`); the text says which.
    #[error("{0}")]
    TooLarge(String),
    #[error("timed out")]
    Timeout,
}

impl Error {
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused)
    }
}

/// Where requests go: `host:port`, a path prefix, the extra header lines and,
/// for https://, the TLS configuration and the name the server must prove.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` as connected to and sent in `Host` (IPv6 in brackets).
    pub authority: String,
    /// The API root's path: the base URL's, less a trailing `/v1`.
    pub prefix: String,
    https: bool,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    header_lines: String,
}

impl Endpoint {
    /// A plain endpoint: no extra headers, https:// trusted by the system's roots.
    pub fn parse(base: &str) -> Result<Self, Error> {
        Self::with_access(base, &Access::default())
    }

    /// Parses `base` as an OpenAI base URL: `http://h:p`, `http://h:p/v1` and
    /// `http://h:p/prefix/v1` all name the API root whose `/v1/models` is
    /// requested, since clients are configured with the `/v1` URL and servers
    /// are documented without it.
    pub fn with_access(base: &str, access: &Access) -> Result<Self, Error> {
        let bad = || Error::Endpoint(base.to_owned());
        let uri: http::Uri = base.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        if uri.query().is_some() || base.contains('#') {
            return Err(bad());
        }
        let auth = uri.authority().ok_or_else(bad)?;
        if auth.as_str().contains('@') || auth.host().is_empty() {
            return Err(bad());
        }
        let authority = match auth.port_u16() {
            Some(_) => auth.as_str().to_owned(),
            None => format!("{}:{}", auth.host(), if https { 443 } else { 80 }),
        };
        let mut prefix = uri.path().trim_end_matches('/');
        if let Some(p) = prefix.strip_suffix("/v1") {
            prefix = p;
        }
        let tls = if https {
            let host = auth.host().trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned()).map_err(|_| bad())?;
            Some((access.tls_config()?, name))
        } else {
            None
        };
        Ok(Endpoint {
            authority,
            prefix: prefix.to_owned(),
            https,
            tls,
            header_lines: access.head_lines(),
        })
    }

    /// The API root as a URL; request paths (`/v1/...`) follow it.
    pub fn root(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.prefix)
    }

    /// The TLS configuration, for https:// endpoints.
    pub fn tls_config(&self) -> Option<&Arc<ClientConfig>> {
        self.tls.as_ref().map(|(c, _)| c)
    }

    /// The request head and body as one buffer, so a request is one `write`.
    /// It asks for an uncompressed body: arrivals are timed per read, and
    /// a compressed stream's reads are not its tokens.
    pub fn request(&self, method: &str, path: &str, accept_sse: bool, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.header_lines.len() + body.len());
        let accept = if accept_sse {
            "accept: text/event-stream\r\n"
        } else {
            ""
        };
        let typ = if body.is_empty() {
            ""
        } else {
            "content-type: application/json\r\n"
        };
        out.extend_from_slice(
            format!(
                "{method} {}{path} HTTP/1.1\r\nhost: {}\r\n{}{typ}{accept}accept-encoding: identity\r\ncontent-length: {}\r\n\r\n",
                self.prefix,
                self.authority,
                self.header_lines,
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
        out
    }
}

/// One socket read: its number on the connection, the kernel's receive stamp
/// of its last segment (when the socket stamps), and when the reader got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub number: u64,
    pub kernel: Option<Instant>,
    pub seen: Instant,
}

/// Idle keep-alive connections to one endpoint, newest last.
#[derive(Debug)]
pub struct Pool {
    pub endpoint: Endpoint,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub fn new(endpoint: Endpoint) -> Self {
        Pool {
            endpoint,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection that has not been closed, else a new one.
    /// The flag says whether it was reused.
    pub async fn checkout(&self, expiry: Pin<&mut Sleep>) -> Result<(Conn, bool), Error> {
        loop {
            let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match conn {
                Some(c) if c.still_open() => return Ok((c, true)),
                Some(_) => continue,
                None => break,
            }
        }
        Conn::connect(&self.endpoint, expiry)
            .await
            .map(|c| (c, false))
    }

    fn put(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }
}

/// A connection with its read buffer: `buf[start..end]` is received (and,
/// over TLS, decrypted), not yet consumed.
#[derive(Debug)]
pub struct Conn {
    sock: TcpStream,
    tls: Option<Box<Tls>>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    reads: u64,
}

/// A TLS session over [`Conn::sock`]. The socket is read here, not by
/// tokio-rustls, so each TCP read keeps its kernel stamp: plaintext carries
/// the stamp of the read that completed its record, and the read-path delay
/// then includes decryption.
#[derive(Debug)]
struct Tls {
    session: rustls::ClientConnection,
    /// Ciphertext of one TCP read.
    raw: Vec<u8>,
    /// The number and kernel stamp of the last TCP read fed to `session`.
    last: (u64, Option<Instant>),
}

impl Conn {
    async fn connect(endpoint: &Endpoint, mut expiry: Pin<&mut Sleep>) -> Result<Conn, Error> {
        let authority = endpoint.authority.as_str();
        let err = |source| Error::Connect {
            authority: authority.to_owned(),
            source,
        };
        let sock = tokio::select! {
            biased;
            s = TcpStream::connect(authority) => s.map_err(err)?,
            _ = expiry.as_mut() => return Err(Error::Timeout),
        };
        sock.set_nodelay(true).map_err(err)?;
        // Stamps are asked for whichever clock is reported: with the
        // application clock they still measure its read-path delay.
        if let Err(e) = enable_rx_timestamps(sock.as_raw_fd()) {
            tracing::warn!("receive timestamps unavailable ({e}); arrivals are read times");
        }
        let (sock, tls) = match &endpoint.tls {
            None => (sock, None),
            Some((config, name)) => {
                // The handshake is untimed: tokio-rustls does it, then hands
                // back the socket and the session for stamped reads.
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let stream = tokio::select! {
                    biased;
                    s = connector.connect(name.clone(), sock) => s.map_err(|source| Error::Tls {
                        authority: authority.to_owned(),
                        source,
                    })?,
                    _ = expiry => return Err(Error::Timeout),
                };
                let (sock, session) = stream.into_inner();
                let tls = Tls {
                    session,
                    raw: vec![0; TLS_READ_SIZE],
                    last: (0, None),
                };
                (sock, Some(Box::new(tls)))
            }
        };
        Ok(Conn {
            sock,
            tls,
            buf: vec![0; READ_SIZE],
            start: 0,
            end: 0,
            reads: 0,
        })
    }

    /// An idle connection is fit for reuse if nothing arrived on it: neither
    /// the server's close nor stray bytes. Costs no system call unless the
    /// socket became readable.
    fn still_open(&self) -> bool {
        let peek = self.sock.try_io(Interest::READABLE, || {
            let mut b = [std::mem::MaybeUninit::uninit(); 1];
            socket2::SockRef::from(&self.sock).peek(&mut b)
        });
        matches!(peek, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes the whole request; returns when its first byte went to `write`
    /// (over TLS: its first record, encrypted before that moment).
    pub async fn send(
        &mut self,
        request: &[u8],
        expiry: Pin<&mut Sleep>,
    ) -> Result<Instant, Error> {
        let sealed;
        let bytes = match &mut self.tls {
            None => request,
            Some(t) => {
                t.session
                    .writer()
                    .write_all(request)
                    .map_err(Error::Write)?;
                let mut out = Vec::with_capacity(request.len() + 256);
                while t.session.wants_write() {
                    t.session.write_tls(&mut out).map_err(Error::Write)?;
                }
                sealed = out;
                sealed.as_slice()
            }
        };
        let at = Instant::now();
        tokio::select! {
            biased;
            r = self.sock.write_all(bytes) => r.map_err(Error::Write)?,
            _ = expiry => return Err(Error::Timeout),
        }
        Ok(at)
    }

    /// One read into the buffer, or `Timeout` once `expiry` fires.
    async fn read(&mut self, mut expiry: Pin<&mut Sleep>) -> Result<Option<Read>, Error> {
        // The timer is only polled when the socket has nothing: a server
        // that keeps it always readable would otherwise outrun the deadline.
        if tokio::time::Instant::now() >= expiry.deadline() {
            return Err(Error::Timeout);
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < READ_SIZE / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < READ_SIZE / 2 {
                self.buf.resize(self.buf.len() + READ_SIZE, 0);
            }
        }
        if self.tls.is_some() {
            return self.read_tls(expiry).await;
        }
        let (sock, buf) = (&self.sock, &mut self.buf[self.end..]);
        let (n, kernel) = poll_fn(|cx| {
            if let Poll::Ready(r) = poll_recv_stamped_init(sock, cx, buf) {
                return Poll::Ready(r.map_err(Error::Read));
            }
            if expiry.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Error::Timeout));
            }
            Poll::Pending
        })
        .await?;
        if n == 0 {
            return Ok(None);
        }
        self.end += n;
        self.reads += 1;
        Ok(Some(Read {
            number: self.reads,
            kernel,
            seen: Instant::now(),
        }))
    }

    /// [`Conn::read`] over TLS: plaintext already decrypted, else TCP reads
    /// fed to the session until a record completes.
    async fn read_tls(&mut self, mut expiry: Pin<&mut Sleep>) -> Result<Option<Read>, Error> {
        let Some(t) = self.tls.as_deref_mut() else {
            return Ok(None);
        };
        let (sock, out) = (&self.sock, &mut self.buf[self.end..]);
        loop {
            match t.session.reader().read(out) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    self.end += n;
                    return Ok(Some(Read {
                        number: t.last.0,
                        kernel: t.last.1,
                        seen: Instant::now(),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A server that closes TCP without close_notify: a close,
                // as over plain HTTP, and framing tells whether it was early.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(Error::Read(e)),
            }
            let raw = &mut t.raw;
            let (n, kernel) = poll_fn(|cx| {
                if let Poll::Ready(r) = poll_recv_stamped_init(sock, cx, raw) {
                    return Poll::Ready(r.map_err(Error::Read));
                }
                if expiry.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Error::Timeout));
                }
                Poll::Pending
            })
            .await?;
            self.reads += 1;
            t.last = (self.reads, kernel);
            let mut cipher = &t.raw[..n];
            loop {
                // An empty slice tells the session the peer closed.
                t.session.read_tls(&mut cipher).map_err(Error::Read)?;
                t.session
                    .process_new_packets()
                    .map_err(|e| Error::Read(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                if cipher.is_empty() {
                    break;
                }
            }
            // Alerts or key-update answers the session wants sent; best
            // effort, since the next write would carry them anyway.
            if t.session.wants_write() {
                let mut pending = Vec::new();
                while t.session.wants_write() {
                    if t.session.write_tls(&mut pending).is_err() {
                        break;
                    }
                }
                let _ = sock.try_write(&pending);
            }
        }
    }

    /// Reads until a final (non-1xx) response head is complete.
    pub async fn read_head(mut self, mut expiry: Pin<&mut Sleep>) -> Result<Response, Error> {
        let mut last: Option<Read> = None;
        loop {
            if self.end > self.start {
                let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
                let mut res = httparse::Response::new(&mut headers);
                match res.parse(&self.buf[self.start..self.end]) {
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(Error::TooLarge(format!(
                            "response head has more than {MAX_RESPONSE_HEADERS} headers"
                        )));
                    }
                    Err(e) => return Err(Error::Malformed(format!("response head: {e}"))),
                    Ok(httparse::Status::Partial) => {
                        if self.end - self.start > MAX_RESPONSE_HEAD_BYTES {
                            return Err(Error::TooLarge(format!(
                                "response head longer than {MAX_RESPONSE_HEAD_BYTES} bytes"
                            )));
                        }
                    }
                    Ok(httparse::Status::Complete(n)) => {
                        let code = res.code.unwrap_or(0);
                        if (100..200).contains(&code) && code != 101 {
                            self.start += n;
                            continue;
                        }
                        let (head, framing) =
                            Head::from_parsed(&res, last.expect("bytes came from a read"))?;
                        self.start += n;
                        return Ok(Response::new(self, head, framing));
                    }
                }
            }
            match self.read(expiry.as_mut()).await {
                Ok(Some(r)) => last = Some(r),
                Ok(None) if last.is_some() => {
                    return Err(Error::Closed("inside the response head"));
                }
                Ok(None) => return Err(Error::ClosedBeforeResponse),
                // A reset before any byte is a close too (a server may drop
                // idle connections with RST).
                Err(Error::Read(e)) if last.is_none() && is_reset(&e) => {
                    return Err(Error::ClosedBeforeResponse);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// What the client needs from a response head.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub content_type: Option<String>,
    pub request_id: Option<String>,
    /// The `Server` header: what the server says it is (manifest.json).
    pub server: Option<String>,
    /// `Content-Encoding`, when the server sent one.
    pub content_encoding: Option<String>,
    /// The read that completed the head.
    pub read: Read,
    keep_alive: bool,
}

impl Head {
    /// The head, and how its body is framed.
    fn from_parsed(res: &httparse::Response<'_, '_>, read: Read) -> Result<(Head, Framing), Error> {
        let status = res.code.unwrap_or(0);
        let text = |name: &str| {
            res.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|v| v.trim().to_owned())
        };
        let has_token = |name: &str, token: &str| {
            res.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .filter_map(|h| std::str::from_utf8(h.value).ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        let framing = if status == 204 || status == 304 {
            Framing::Length(0)
        } else if has_token("transfer-encoding", "chunked") {
            Framing::Chunked(Chunk::Size)
        } else if let Some(v) = text("content-length") {
            let n = v
                .parse::<u64>()
                .map_err(|_| Error::Malformed(format!("content-length {v:?}")))?;
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        let keep_alive = res.version == Some(1)
            && !has_token("connection", "close")
            && !matches!(framing, Framing::UntilClose);
        let head = Head {
            status,
            content_type: text("content-type"),
            request_id: text("x-request-id"),
            server: text("server"),
            content_encoding: text("content-encoding"),
            read,
            keep_alive,
        };
        Ok((head, framing))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked(Chunk),
    Length(u64),
    UntilClose,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// A response whose body is being read; gives the connection back to its
/// pool when the body was read to its end and the server keeps it open.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    conn: Conn,
    framing: Framing,
    done: bool,
    /// The body bytes decoded from the last read.
    data: Vec<u8>,
    /// Bytes that came with the head wait to be decoded as its read's.
    buffered: Option<Read>,
    /// Body bytes taken off the connection so far (framing included), and
    /// the most that may be (`--max-response-bytes`).
    received: u64,
    limit: u64,
}

impl Response {
    fn new(conn: Conn, head: Head, framing: Framing) -> Self {
        let buffered = (conn.end > conn.start).then_some(head.read);
        Response {
            done: framing == Framing::Length(0),
            head,
            conn,
            framing,
            data: Vec::new(),
            buffered,
            received: 0,
            limit: MAX_RESPONSE_BYTES,
        }
    }

    /// Caps the body's bytes (framing included); past it the response
    /// fails as [`Error::TooLarge`].
    pub fn limit_body(&mut self, bytes: u64) {
        self.limit = bytes;
    }

    /// Body bytes decoded from the read [`Response::next`] last returned.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Reads once and decodes what came: the read, or `None` at the body's
    /// end. The decoded bytes (maybe none) are then in [`Response::data`].
    pub async fn next(&mut self, mut expiry: Pin<&mut Sleep>) -> Result<Option<Read>, Error> {
        self.data.clear();
        if self.done {
            return Ok(None);
        }
        let read = match self.buffered.take() {
            Some(r) => r,
            None => match self.conn.read(expiry.as_mut()).await? {
                Some(r) => r,
                None if self.framing == Framing::UntilClose => {
                    self.done = true;
                    return Ok(None);
                }
                None => return Err(Error::Closed("inside the response body")),
            },
        };
        let before = self.conn.start;
        self.decode()?;
        self.received += (self.conn.start - before) as u64;
        if self.received > self.limit {
            self.done = false;
            return Err(Error::TooLarge(format!(
                "response body longer than {} bytes (--max-response-bytes)",
                self.limit
            )));
        }
        Ok(Some(read))
    }

    fn decode(&mut self) -> Result<(), Error> {
        let c = &mut self.conn;
        loop {
            let avail = &c.buf[c.start..c.end];
            match &mut self.framing {
                Framing::UntilClose => {
                    self.data.extend_from_slice(avail);
                    c.start = c.end;
                    return Ok(());
                }
                Framing::Length(left) => {
                    let take = avail
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    self.data.extend_from_slice(&avail[..take]);
                    c.start += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.done = true;
                    }
                    return Ok(());
                }
                Framing::Chunked(state) => match *state {
                    Chunk::Size => match httparse::parse_chunk_size(avail) {
                        Err(_) => {
                            return Err(Error::Malformed("bad chunk size line".into()));
                        }
                        Ok(httparse::Status::Partial) => {
                            return line_fits(avail, "chunk-size line");
                        }
                        Ok(httparse::Status::Complete((n, 0))) => {
                            c.start += n;
                            *state = Chunk::Trailers;
                        }
                        Ok(httparse::Status::Complete((n, size))) => {
                            c.start += n;
                            *state = Chunk::Data(size);
                        }
                    },
                    Chunk::Data(left) => {
                        if avail.is_empty() {
                            return Ok(());
                        }
                        let take = avail.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        self.data.extend_from_slice(&avail[..take]);
                        c.start += take;
                        *state = if take as u64 == left {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - take as u64)
                        };
                    }
                    Chunk::DataEnd => {
                        if avail.len() < 2 {
                            return Ok(());
                        }
                        if &avail[..2] != b"\r\n" {
                            return Err(Error::Malformed("chunk not followed by CRLF".into()));
                        }
                        c.start += 2;
                        *state = Chunk::Size;
                    }
                    // Complete trailer lines count as body bytes, so endless
                    // trailers end at the body cap, one endless line here.
                    Chunk::Trailers => {
                        let Some(eol) = avail.windows(2).position(|w| w == b"\r\n") else {
                            return line_fits(avail, "trailer line");
                        };
                        c.start += eol + 2;
                        if eol == 0 {
                            self.done = true;
                            return Ok(());
                        }
                    }
                },
            }
        }
    }

    /// Hands the connection back if the body was read to its end, nothing
    /// followed it, and the server did not ask to close.
    pub fn finish(self, pool: &Pool) {
        if self.done && self.head.keep_alive && self.conn.start == self.conn.end {
            pool.put(self.conn);
        }
    }
}

/// An unfinished framing line may wait for more bytes only while it is short.
fn line_fits(partial: &[u8], what: &str) -> Result<(), Error> {
    if partial.len() > MAX_CHUNK_LINE_BYTES {
        return Err(Error::TooLarge(format!(
            "{what} longer than {MAX_CHUNK_LINE_BYTES} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn endpoints_parse_to_authority_and_api_root() {
        let root = |base: &str| {
            let e = Endpoint::parse(base).unwrap();
            (e.authority.clone(), e.prefix.clone(), e.root())
        };
        let own = |a: &str, p: &str, r: &str| (a.to_owned(), p.to_owned(), r.to_owned());
        assert_eq!(
            root("http://127.0.0.1:8000/"),
            own("127.0.0.1:8000", "", "http://127.0.0.1:8000")
        );
        assert_eq!(
            root("http://localhost/api/"),
            own("localhost:80", "/api", "http://localhost:80/api")
        );
        // A trailing /v1 is the OpenAI base-URL convention for the API root.
        assert_eq!(root("http://h:1/v1"), own("h:1", "", "http://h:1"));
        assert_eq!(root("http://h:1/v1/"), own("h:1", "", "http://h:1"));
        assert_eq!(root("http://h:1/gw/v1"), own("h:1", "/gw", "http://h:1/gw"));
        assert_eq!(root("http://h:1/v1x"), own("h:1", "/v1x", "http://h:1/v1x"));
        assert_eq!(
            root("http://[::1]:9/v1"),
            own("[::1]:9", "", "http://[::1]:9")
        );
        let e = Endpoint::parse("https://[::1]/v1").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.root().as_str()),
            ("[::1]:443", "https://[::1]:443")
        );
        assert!(e.tls_config().is_some());
        assert!(
            Endpoint::parse("http://h:1")
                .unwrap()
                .tls_config()
                .is_none()
        );
        for bad in [
            "ftp://x:1",
            "127.0.0.1:8000",
            "http://u@x:1",
            "http://x:1/?a=b",
            "http://x:1/#f",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let req = Endpoint::parse("http://h:1/p/v1")
            .unwrap()
            .request("POST", "/v1/x", true, b"{}");
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "POST /p/v1/x HTTP/1.1\r\nhost: h:1\r\ncontent-type: application/json\r\naccept: text/event-stream\r\naccept-encoding: identity\r\ncontent-length: 2\r\n\r\n{}"
        );
        let access = Access::new(Some("k"), &["X-A: b".into()], Default::default()).unwrap();
        let req = Endpoint::with_access("http://h:1", &access)
            .unwrap()
            .request("GET", "/v1/models", false, b"");
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "GET /v1/models HTTP/1.1\r\nhost: h:1\r\nx-a: b\r\nauthorization: Bearer k\r\naccept-encoding: identity\r\ncontent-length: 0\r\n\r\n"
        );
    }

    /// A one-connection server: for each request (head read to its blank
    /// line), writes `pieces` one by one with a pause between them, so the
    /// client sees them as separate reads. Closes after `requests`.
    async fn serve(
        pieces: Vec<&'static [u8]>,
        requests: usize,
    ) -> (Pool, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            for _ in 0..requests {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap() == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                for p in &pieces {
                    s.write_all(p).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
        });
        let pool = Pool::new(Endpoint::parse(&format!("http://{addr}")).unwrap());
        (pool, task)
    }

    fn expiry() -> Pin<Box<Sleep>> {
        Box::pin(tokio::time::sleep(Duration::from_secs(10)))
    }

    /// Sends a GET on a pooled connection and reads the whole response.
    async fn get(pool: &Pool) -> Result<(Head, Vec<u8>, usize, bool), Error> {
        let mut exp = expiry();
        let (mut conn, reused) = pool.checkout(exp.as_mut()).await?;
        conn.send(&pool.endpoint.request("GET", "/", false, b""), exp.as_mut())
            .await?;
        let mut resp = conn.read_head(exp.as_mut()).await?;
        let mut body = Vec::new();
        let mut reads = 0;
        while resp.next(exp.as_mut()).await?.is_some() {
            reads += 1;
            body.extend_from_slice(resp.data());
        }
        let head = resp.head.clone();
        resp.finish(pool);
        Ok((head, body, reads, reused))
    }

    /// One GET against a server that answers it with `pieces`, then stops.
    async fn answer(pieces: Vec<&'static [u8]>) -> Result<(Head, Vec<u8>, usize, bool), Error> {
        let (pool, server) = serve(pieces, 1).await;
        let got = get(&pool).await;
        server.await.unwrap();
        got
    }

    #[tokio::test]
    async fn chunked_bodies_split_anywhere_decode_and_keep_the_connection() {
        let pieces: Vec<&[u8]> = vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-request-id: r1\r\n\r\n5\r\nhe",
            b"llo\r",
            b"\n1",
            b"0;ext=1\r\n, world! 0123",
            b"456\r\n0\r\ntrailer: x\r\n",
            b"\r\n",
        ];
        let (pool, server) = serve(pieces, 2).await;
        let (head, body, reads, reused) = get(&pool).await.unwrap();
        assert_eq!((head.status, head.request_id.as_deref()), (200, Some("r1")));
        assert_eq!(String::from_utf8(body).unwrap(), "hello, world! 0123456");
        // The head's read carries "he"; each later piece is a read of its own.
        assert_eq!((reads, reused), (6, false));
        // The connection went back to the pool and serves the next request.
        let (_, body, _, reused) = get(&pool).await.unwrap();
        assert_eq!((body.len(), reused), (21, true));
        server.await.unwrap();
    }

    /// Over TLS each piece is its own record and TCP read: the body decodes
    /// as over plain HTTP, and every read the parser sees has a kernel stamp.
    #[tokio::test]
    async fn tls_reads_decode_and_keep_kernel_stamps() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let server_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut s = acceptor.accept(s).await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                assert_eq!(s.read(&mut b).await.unwrap(), 1);
                head.push(b[0]);
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.contains("\r\nauthorization: Bearer k\r\n"), "{head}");
            for p in [
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
                b"5\r\nhello\r\n",
                b"6\r\n world\r\n",
                b"0\r\n\r\n",
            ] {
                s.write_all(p).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        let access = Access::new(
            Some("k"),
            &[],
            super::super::access::TlsTrust {
                ca_cert: None,
                insecure: true,
            },
        )
        .unwrap();
        let endpoint =
            Endpoint::with_access(&format!("https://localhost:{port}"), &access).unwrap();
        let pool = Pool::new(endpoint);
        let mut exp = expiry();
        let (mut conn, _) = pool.checkout(exp.as_mut()).await.unwrap();
        conn.send(&pool.endpoint.request("GET", "/", false, b""), exp.as_mut())
            .await
            .unwrap();
        let mut resp = conn.read_head(exp.as_mut()).await.unwrap();
        assert_eq!(resp.head.status, 200);
        let mut reads = vec![resp.head.read];
        let mut body = Vec::new();
        while let Some(r) = resp.next(exp.as_mut()).await.unwrap() {
            reads.push(r);
            body.extend_from_slice(resp.data());
        }
        assert_eq!(body, b"hello world");
        assert!(reads.len() >= 4, "{reads:?}");
        for r in &reads {
            let k = r.kernel.expect("a kernel stamp on every TLS read");
            assert!(k <= r.seen, "{r:?}");
        }
        assert!(
            reads.windows(2).all(|w| w[0].number < w[1].number),
            "{reads:?}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn sized_and_close_delimited_bodies() {
        let (head, body, _, _) = answer(vec![
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 7\r\n\r\nnot",
            b" here",
        ])
        .await
        .unwrap();
        assert_eq!((head.status, body.as_slice()), (404, &b"not her"[..]));

        let (pool, server) = serve(vec![b"HTTP/1.0 200 OK\r\n\r\nuntil", b" close"], 1).await;
        let (_, body, _, _) = get(&pool).await.unwrap();
        assert_eq!(body, b"until close");
        server.await.unwrap();
        assert!(
            pool.idle.lock().unwrap().is_empty(),
            "a close-delimited connection is not reused"
        );
    }

    #[tokio::test]
    async fn broken_responses_are_told_apart() {
        assert!(matches!(
            answer(vec![]).await,
            Err(Error::ClosedBeforeResponse)
        ));
        assert!(matches!(
            answer(vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\npart"
            ])
            .await,
            Err(Error::Closed(_))
        ));
        assert!(matches!(
            answer(vec![b"HTTQ/1.1 200 OK\r\n\r\n"]).await,
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            answer(vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
            ])
            .await,
            Err(Error::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_reset_before_any_byte_counts_as_closed_before_responding() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 256];
            let _ = s.read(&mut b).await.unwrap();
            // Linger 0: close with RST instead of FIN.
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        });
        let pool = Pool::new(Endpoint::parse(&format!("http://{addr}")).unwrap());
        assert!(matches!(get(&pool).await, Err(Error::ClosedBeforeResponse)));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_not_reused() {
        let (pool, server) = serve(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], 1).await;
        let (_, _, _, reused) = get(&pool).await.unwrap();
        assert!(!reused);
        // The server task ends and drops its side: the pooled socket sees EOF.
        server.await.unwrap();
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut exp = expiry();
        // Nothing listens any more, so only a reused connection could succeed.
        let got = pool.checkout(exp.as_mut()).await;
        assert!(got.is_err(), "the closed connection was handed out");
        assert!(pool.idle.lock().unwrap().is_empty());
    }

    mod props {
        //! Property tests (FUZZING.md): response framing over a real
        //! loopback socket, bytes split into arbitrary reads.
        use super::*;
        use proptest::prelude::*;

        fn leak(v: Vec<u8>) -> &'static [u8] {
            Box::leak(v.into_boxed_slice())
        }

        /// `bytes` cut at `cuts`, each piece a write of its own.
        fn pieces(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<&'static [u8]> {
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut out = Vec::new();
            let mut prev = 0;
            for a in at {
                out.push(leak(bytes[prev..a].to_vec()));
                prev = a;
            }
            out.push(leak(bytes[prev..].to_vec()));
            out
        }

        /// [`answer`], with a server that does not mind a client that left
        /// early (a malformed head ends the exchange on the client's side).
        async fn answer_any(
            pieces: Vec<&'static [u8]>,
        ) -> Result<(Head, Vec<u8>, usize, bool), Error> {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                for p in &pieces {
                    if s.write_all(p).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            let pool = Pool::new(Endpoint::parse(&format!("http://{addr}")).unwrap());
            let got = get(&pool).await;
            server.await.unwrap();
            got
        }

        fn block_on<F: std::future::Future>(f: F) -> F::Output {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        }

        fn config() -> ProptestConfig {
            // Each case is a socket and a few 1 ms pauses: 48 unless
            // PROPTEST_CASES asks for a longer run.
            let env = std::env::var_os("PROPTEST_CASES").is_some();
            let d = ProptestConfig::default();
            ProptestConfig {
                cases: if env { d.cases } else { 48 },
                ..d
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn chunked_bodies_decode_whole_however_cut(
                body in proptest::collection::vec(any::<u8>(), 0..600),
                sizes in proptest::collection::vec(1usize..80, 1..12),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
            ) {
                let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                let mut rest = &body[..];
                for s in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (c, r) = rest.split_at((*s).min(rest.len()));
                    wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    wire.extend_from_slice(c);
                    wire.extend_from_slice(b"\r\n");
                    rest = r;
                }
                wire.extend_from_slice(b"0\r\n\r\n");
                let got = block_on(answer_any(pieces(&wire, &cuts)));
                let (head, decoded, _, _) = got.unwrap();
                prop_assert_eq!(head.status, 200);
                prop_assert_eq!(decoded, body);
            }

            #[test]
            fn any_bytes_frame_or_fail_cleanly(
                head in prop_oneof![
                    Just(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()),
                    Just(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec()),
                    Just(b"HTTP/1.0 200 OK\r\n\r\n".to_vec()),
                    Just(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..64),
                ],
                tail in proptest::collection::vec(
                    prop_oneof![
                        Just(b"\r\n".to_vec()),
                        Just(b"0\r\n".to_vec()),
                        Just(b"ffffffffffffffffff\r\n".to_vec()),
                        Just(b"5;ext\r\n".to_vec()),
                        proptest::collection::vec(any::<u8>(), 1..16),
                    ],
                    0..12,
                ),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            ) {
                let mut wire = head;
                wire.extend(tail.concat());
                // Whatever comes back, it is a value: never a panic or a hang,
                // and never more body than was sent.
                if let Ok((_, body, _, _)) = block_on(answer_any(pieces(&wire, &cuts))) {
                    prop_assert!(body.len() <= wire.len());
                }
            }
        }
    }
}
