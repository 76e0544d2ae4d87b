//! The floor under the cost figure: the least CPU that any client timing every
//! chunk can spend on this machine, measured rather than argued.
//!
//! Per-chunk timing needs one read per chunk (a read's kernel stamp is that of
//! its last segment), and on Linux every read that drains a small segment
//! sends an ACK; over loopback the server socket's processing of that ACK runs
//! in the reader's system call. This receiver does only that: one
//! current-thread runtime, `streams` keep-alive connections, a readiness wait
//! and one stamped `recvmsg` per arrival, HTTP chunk framing by `httparse`,
//! and a count of the tokens so a short response cannot pass for a cheap one.
//! No SSE or JSON parsing, no recording, no scheduling. Its CPU per 1,000
//! tokens is the bound below which no per-chunk client on this machine can go;
//! sparkhost's own figure is read against it.

use std::os::fd::AsRawFd;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::dispatch::stamp::{enable_rx_timestamps, poll_recv_stamped_init};

/// What the floor receiver did and what it cost.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// CPU time of the receiver's thread, user + system, runtime start and
    /// connects included.
    pub cpu_s: f64,
    pub tokens: u64,
    pub reads: u64,
    pub stamped_reads: u64,
    pub wall_s: f64,
}

/// Streams `streams × rounds` responses of `tokens` tokens from the truth
/// server at `endpoint` (`http://host:port`) and measures the thread's CPU.
pub fn measure(endpoint: &str, streams: u32, rounds: u64, tokens: u32) -> anyhow::Result<Floor> {
    let authority = endpoint
        .strip_prefix("http://")
        .with_context(|| format!("floor: endpoint {endpoint} is not http://host:port"))?
        .trim_end_matches('/')
        .to_owned();
    std::thread::spawn(move || -> anyhow::Result<Floor> {
        let cpu0 = thread_cpu_s();
        let t0 = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("floor: starting a current-thread runtime")?;
        let (tokens_got, reads, stamped) = rt.block_on(async {
            let tasks: Vec<_> = (0..streams)
                .map(|_| tokio::spawn(stream(authority.clone(), rounds, tokens)))
                .collect();
            let mut sum = (0, 0, 0);
            for t in tasks {
                let (a, b, c) = t.await.context("floor: a stream panicked")??;
                sum = (sum.0 + a, sum.1 + b, sum.2 + c);
            }
            anyhow::Ok(sum)
        })?;
        drop(rt);
        let want = u64::from(streams) * rounds * u64::from(tokens);
        if tokens_got != want {
            bail!("floor: received {tokens_got} tokens, expected {want}");
        }
        Ok(Floor {
            cpu_s: thread_cpu_s() - cpu0,
            tokens: tokens_got,
            reads,
            stamped_reads: stamped,
            wall_s: t0.elapsed().as_secs_f64(),
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("floor: the receiver thread panicked"))?
}

/// This thread's user + system CPU at ns resolution (procfs's ticks are
/// 10 ms, coarser than a short floor run); the same kernel accounting that
/// `summary.json`'s per-process figures are read from.
fn thread_cpu_s() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// One keep-alive connection: `rounds` requests, one after the other.
/// Returns tokens, reads and stamped reads.
async fn stream(authority: String, rounds: u64, tokens: u32) -> anyhow::Result<(u64, u64, u64)> {
    let mut sock = TcpStream::connect(&authority)
        .await
        .with_context(|| format!("floor: connecting to {authority}"))?;
    sock.set_nodelay(true)?;
    enable_rx_timestamps(sock.as_raw_fd()).context("floor: SO_TIMESTAMPNS")?;
    let body = format!(
        r#"{{"model":"truth","prompt":"one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen","max_tokens":{tokens},"stream":true,"ignore_eos":true}}"#
    );
    let request = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::with_capacity(4096);
    let (mut got, mut reads, mut stamped) = (0, 0, 0);
    for _ in 0..rounds {
        sock.write_all(request.as_bytes()).await?;
        let mut body = Body::Head;
        loop {
            let (n, at) =
                std::future::poll_fn(|cx| poll_recv_stamped_init(&sock, cx, &mut buf)).await?;
            if n == 0 {
                bail!("floor: the server closed the connection mid-response");
            }
            reads += 1;
            stamped += u64::from(at.is_some());
            pending.extend_from_slice(&buf[..n]);
            let (used, tokens, done) = body.advance(&pending)?;
            got += tokens;
            pending.drain(..used);
            if done {
                break;
            }
        }
    }
    Ok((got, reads, stamped))
}

/// Where the reader is in one response.
enum Body {
    Head,
    Chunks,
}

impl Body {
    /// Consumes what it can of `buf`: bytes used, tokens seen, response done.
    fn advance(&mut self, buf: &[u8]) -> anyhow::Result<(usize, u64, bool)> {
        let mut at = 0;
        let mut tokens = 0;
        if let Body::Head = self {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(buf).context("floor: bad response head")? {
                httparse::Status::Partial => return Ok((0, 0, false)),
                httparse::Status::Complete(n) => {
                    if res.code != Some(200) {
                        bail!("floor: the truth server answered {:?}", res.code);
                    }
                    let chunked = res.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            && h.value.eq_ignore_ascii_case(b"chunked")
                    });
                    if !chunked {
                        bail!("floor: the truth server's response is not chunked");
                    }
                    at = n;
                    *self = Body::Chunks;
                }
            }
        }
        loop {
            let rest = &buf[at..];
            let (head, size) = match httparse::parse_chunk_size(rest)
                .map_err(|_| anyhow::anyhow!("floor: bad chunk size line"))?
            {
                httparse::Status::Partial => return Ok((at, tokens, false)),
                httparse::Status::Complete(v) => v,
            };
            let size = usize::try_from(size)?;
            // The chunk, then its CRLF.
            if rest.len() < head + size + 2 {
                return Ok((at, tokens, false));
            }
            let data = &rest[head..head + size];
            tokens += count(data, br#""text":"#);
            at += head + size + 2;
            if size == 0 {
                *self = Body::Head;
                return Ok((at, tokens, true));
            }
        }
    }
}

fn count(hay: &[u8], needle: &[u8]) -> u64 {
    hay.windows(needle.len()).filter(|w| *w == needle).count() as u64
}
