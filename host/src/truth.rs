//! A ground-truth OpenAI-compatible server for measuring sparkhost itself.
//!
//! It streams every response on an exact schedule — first token `ttft` after
//! the request arrived, then one token every `itl`, `max_tokens` tokens — and
//! records when each chunk was really handed to the socket. Arrival is the
//! kernel's receive timestamp of the request's last segment, so the truth
//! does not depend on how fast this server's own task was scheduled. `GET /truth`
//! returns those records, so a benchmark can subtract the server's truth from
//! what the client reported. HTTP/1.1 is spoken by hand on purpose: a framework
//! would hide when bytes actually leave.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};

use crate::dispatch::stamp::{enable_rx_timestamps, poll_recv_stamped};

#[derive(Debug, Clone, Copy)]
pub struct TruthConfig {
    pub ttft: Duration,
    pub itl: Duration,
}

/// What the server really did for one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TruthRecord {
    /// The `id` of every chunk; sparkhost records it as `response_id`.
    pub id: String,
    pub stream: bool,
    /// When the request's last segment reached the socket (kernel receive
    /// timestamp), ns since server start.
    pub received_ns: u64,
    /// When each token's chunk was handed to the socket, ns since server start.
    pub token_writes_ns: Vec<u64>,
    /// How late each write was against its schedule, ns.
    pub lateness_ns: Vec<u64>,
    /// The longest chunk write of the response, from hand-over to return:
    /// a bound on how uncertain the write times themselves are.
    #[serde(default)]
    pub write_ns_max: u64,
}

#[derive(Default)]
struct Shared {
    records: Vec<TruthRecord>,
    next_id: u64,
}

pub struct TruthServer {
    cfg: TruthConfig,
    start: Instant,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<u32>,
}

impl TruthServer {
    pub fn new(cfg: TruthConfig) -> Arc<Self> {
        Arc::new(TruthServer {
            cfg,
            start: Instant::now(),
            shared: Arc::default(),
        })
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// Serves until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.connection(sock).await {
                    tracing::debug!("truth connection ended: {e}");
                }
            });
        }
    }

    async fn connection(&self, sock: TcpStream) -> std::io::Result<()> {
        let stamped = enable_rx_timestamps(sock.as_raw_fd()).is_ok();
        let (r, mut w) = sock.into_split();
        let mut r = BufReader::new(StampedRead {
            inner: r,
            last_arrival: None,
        });
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_owned();
            let path = parts.next().unwrap_or("").to_owned();
            let mut len = 0usize;
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).await?;
            let received = match r.get_ref().last_arrival {
                Some(at) if stamped => at,
                _ => Instant::now(),
            };
            match (method.as_str(), path.as_str()) {
                ("GET", "/v1/models") => {
                    json_response(
                        &mut w,
                        200,
                        br#"{"object":"list","data":[{"id":"truth","object":"model"}]}"#,
                    )
                    .await?
                }
                ("GET", "/truth") => {
                    let bytes = {
                        let s = self.shared.lock().expect("truth lock");
                        serde_json::to_vec(&s.records).unwrap_or_default()
                    };
                    json_response(&mut w, 200, &bytes).await?
                }
                ("POST", "/truth/reset") => {
                    self.shared.lock().expect("truth lock").records.clear();
                    json_response(&mut w, 200, b"{}").await?
                }
                ("POST", "/v1/completions" | "/v1/chat/completions") => {
                    let chat = path.contains("chat");
                    match serde_json::from_slice::<Body>(&body) {
                        Ok(b) => self.generate(&mut w, received, b, chat).await?,
                        Err(e) => {
                            let msg = serde_json::json!({"error": {"message": e.to_string(), "type": "BadRequestError", "code": 400}});
                            json_response(&mut w, 400, msg.to_string().as_bytes()).await?
                        }
                    }
                }
                _ => {
                    json_response(
                        &mut w,
                        404,
                        br#"{"message":"Not Found","type":"Not Found","code":404}"#,
                    )
                    .await?
                }
            }
        }
    }

    async fn generate(
        &self,
        w: &mut tokio::net::tcp::OwnedWriteHalf,
        received: Instant,
        b: Body,
        chat: bool,
    ) -> std::io::Result<()> {
        let n = b.max_tokens.unwrap_or(16).max(1);
        let id = {
            let mut s = self.shared.lock().expect("truth lock");
            s.next_id += 1;
            format!("truth-{}", s.next_id)
        };
        let mut rec = TruthRecord {
            id: id.clone(),
            stream: b.stream,
            received_ns: self.ns(received),
            token_writes_ns: Vec::with_capacity(n as usize),
            lateness_ns: Vec::with_capacity(n as usize),
            write_ns_max: 0,
        };
        let due = |k: u32| received + self.cfg.ttft + self.cfg.itl * k;
        if !b.stream {
            tokio::time::sleep_until(due(n - 1).into()).await;
            let text = " tok".repeat(n as usize);
            let body = if chat {
                serde_json::json!({"id": id, "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}], "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}})
            } else {
                serde_json::json!({"id": id, "object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": "length"}], "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}})
            };
            json_response(w, 200, body.to_string().as_bytes()).await?;
            let t = Instant::now();
            rec.token_writes_ns.push(self.ns(t));
            rec.lateness_ns
                .push(t.saturating_duration_since(due(n - 1)).as_nanos() as u64);
            self.shared.lock().expect("truth lock").records.push(rec);
            return Ok(());
        }
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await?;
        let event = if chat {
            format!(
                "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok\"}}}}]}}\n\n"
            )
        } else {
            format!(
                "data: {{\"id\":\"{id}\",\"object\":\"text_completion\",\"choices\":[{{\"index\":0,\"text\":\" tok\"}}]}}\n\n"
            )
        };
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        for k in 0..n {
            tokio::time::sleep_until(due(k).into()).await;
            // Stamped as the chunk is handed over: the kernel queues it to the
            // peer inside this write, and this task may lose its CPU after.
            let t = Instant::now();
            w.write_all(chunk.as_bytes()).await?;
            let took = t.elapsed().as_nanos() as u64;
            rec.write_ns_max = rec.write_ns_max.max(took);
            rec.token_writes_ns.push(self.ns(t));
            rec.lateness_ns
                .push(t.saturating_duration_since(due(k)).as_nanos() as u64);
        }
        let tail = format!(
            "data: {{\"id\":\"{id}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
            n + 1
        );
        let end = format!("{:x}\r\n{tail}\r\n0\r\n\r\n", tail.len());
        w.write_all(end.as_bytes()).await?;
        self.shared.lock().expect("truth lock").records.push(rec);
        Ok(())
    }
}

/// The read half, through `recvmsg`, remembering the newest arrival stamp.
struct StampedRead {
    inner: OwnedReadHalf,
    last_arrival: Option<Instant>,
}

impl AsyncRead for StampedRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        // SAFETY: recv writes only initialised bytes, and exactly `n` are
        // marked filled below.
        #[allow(unsafe_code)]
        let unfilled = unsafe { buf.unfilled_mut() };
        let (n, arrival) = ready!(poll_recv_stamped(me.inner.as_ref(), cx, unfilled))?;
        if n > 0 {
            // An unstamped read must not inherit an older read's stamp.
            me.last_arrival = arrival;
        }
        #[allow(unsafe_code)]
        unsafe {
            buf.assume_init(n)
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

async fn json_response(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    status: u16,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Not Found",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await
}
