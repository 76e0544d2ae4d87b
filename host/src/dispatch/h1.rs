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
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Instant;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::stamp::{enable_rx_timestamps, poll_recv_stamped_init};

/// Room for one read; a response head must fit in [`MAX_HEAD`].
const READ_SIZE: usize = 8 * 1024;
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("endpoint {0:?} is not http://host:port[/path] (sparkhost speaks plain HTTP/1.1)")]
    Endpoint(String),
    #[error("connecting to {authority}: {source}")]
    Connect {
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
    #[error("timed out")]
    Timeout,
}

impl Error {
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused)
    }
}

/// Where requests go: `host:port` and a path prefix.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub authority: String,
    pub prefix: String,
}

impl Endpoint {
    pub fn parse(base: &str) -> Result<Self, Error> {
        let bad = || Error::Endpoint(base.to_owned());
        let uri: http::Uri = base.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") || uri.query().is_some() {
            return Err(bad());
        }
        let auth = uri.authority().ok_or_else(bad)?;
        if auth.as_str().contains('@') {
            return Err(bad());
        }
        let authority = match auth.port_u16() {
            Some(_) => auth.as_str().to_owned(),
            None => format!("{}:80", auth.host()),
        };
        Ok(Endpoint {
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The request head and body as one buffer, so a request is one `write`.
    pub fn request(&self, method: &str, path: &str, accept_sse: bool, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + body.len());
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
                "{method} {}{path} HTTP/1.1\r\nhost: {}\r\n{typ}{accept}content-length: {}\r\n\r\n",
                self.prefix,
                self.authority,
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
        Conn::connect(&self.endpoint.authority, expiry)
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

/// A connection with its read buffer: `buf[start..end]` is received, not yet
/// consumed.
#[derive(Debug)]
pub struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    reads: u64,
}

impl Conn {
    async fn connect(authority: &str, expiry: Pin<&mut Sleep>) -> Result<Conn, Error> {
        let err = |source| Error::Connect {
            authority: authority.to_owned(),
            source,
        };
        let sock = tokio::select! {
            biased;
            s = TcpStream::connect(authority) => s.map_err(err)?,
            _ = expiry => return Err(Error::Timeout),
        };
        sock.set_nodelay(true).map_err(err)?;
        // Stamps are asked for whichever clock is reported: with the
        // application clock they still measure its read-path delay.
        if let Err(e) = enable_rx_timestamps(sock.as_raw_fd()) {
            tracing::warn!("receive timestamps unavailable ({e}); arrivals are read times");
        }
        Ok(Conn {
            sock,
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

    /// Writes the whole request; returns when its first byte went to `write`.
    pub async fn send(
        &mut self,
        request: &[u8],
        expiry: Pin<&mut Sleep>,
    ) -> Result<Instant, Error> {
        let at = Instant::now();
        tokio::select! {
            biased;
            r = self.sock.write_all(request) => r.map_err(Error::Write)?,
            _ = expiry => return Err(Error::Timeout),
        }
        Ok(at)
    }

    /// One read into the buffer, or `Timeout` once `expiry` fires.
    async fn read(&mut self, mut expiry: Pin<&mut Sleep>) -> Result<Option<Read>, Error> {
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

    /// Reads until a final (non-1xx) response head is complete.
    pub async fn read_head(mut self, mut expiry: Pin<&mut Sleep>) -> Result<Response, Error> {
        let mut last: Option<Read> = None;
        loop {
            if self.end > self.start {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut res = httparse::Response::new(&mut headers);
                match res.parse(&self.buf[self.start..self.end]) {
                    Err(e) => return Err(Error::Malformed(format!("response head: {e}"))),
                    Ok(httparse::Status::Partial) => {
                        if self.end - self.start > MAX_HEAD {
                            return Err(Error::Malformed(format!(
                                "response head longer than {MAX_HEAD} bytes"
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
        }
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
        self.decode()?;
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
                        Ok(httparse::Status::Partial) => return Ok(()),
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
                    Chunk::Trailers => {
                        let Some(eol) = avail.windows(2).position(|w| w == b"\r\n") else {
                            return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn endpoints_parse_to_authority_and_prefix() {
        let e = Endpoint::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("127.0.0.1:8000", "")
        );
        let e = Endpoint::parse("http://localhost/api/").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("localhost:80", "/api")
        );
        for bad in [
            "https://x:1",
            "127.0.0.1:8000",
            "http://u@x:1",
            "http://x:1/?a=b",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let req = Endpoint::parse("http://h:1/p")
            .unwrap()
            .request("POST", "/v1/x", true, b"{}");
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "POST /p/v1/x HTTP/1.1\r\nhost: h:1\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: 2\r\n\r\n{}"
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
}
