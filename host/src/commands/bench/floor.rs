//! The floor under the cost figure: the least CPU that any client timing every
//! chunk can spend on this machine, measured rather than argued.
//!
//! Per-chunk timing needs one read per chunk (a read's kernel stamp is that of
//! its last segment), and on Linux every read that drains a small segment
//! sends an ACK; over loopback the server socket's processing of that ACK runs
//! in the reader's system call. This receiver does only that: one
//! current-thread runtime, `streams` keep-alive connections, a readiness wait
//! and one stamped `recvmsg` per arrival with sparkhost's own HTTP framing
//! ([`crate::dispatch::h1`]), and a count of the tokens so a short response
//! cannot pass for a cheap one.
//! No SSE or JSON parsing, no recording, no scheduling. Its CPU per 1,000
//! tokens is the bound below which no per-chunk client on this machine can go;
//! sparkhost's own figure is read against it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::dispatch::h1::{Endpoint, Pool};

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
    let endpoint = Endpoint::parse(endpoint).context("floor")?;
    std::thread::spawn(move || -> anyhow::Result<Floor> {
        let cpu0 = thread_cpu_s();
        let t0 = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("floor: starting a current-thread runtime")?;
        let (tokens_got, reads, stamped) = rt.block_on(async {
            let tasks: Vec<_> = (0..streams)
                .map(|_| tokio::spawn(stream(endpoint.clone(), rounds, tokens)))
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
async fn stream(endpoint: Endpoint, rounds: u64, tokens: u32) -> anyhow::Result<(u64, u64, u64)> {
    let body = format!(
        r#"{{"model":"truth","prompt":"one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen","max_tokens":{tokens},"stream":true,"ignore_eos":true}}"#
    );
    let request = endpoint.request("POST", "/v1/completions", true, body.as_bytes());
    let pool = Pool::new(endpoint);
    let needle: &[u8] = br#""text":"#;
    let (mut got, mut reads, mut stamped) = (0, 0, 0);
    for _ in 0..rounds {
        let expiry = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(expiry);
        let (mut conn, _) = pool.checkout(expiry.as_mut()).await.context("floor")?;
        conn.send(&request, expiry.as_mut())
            .await
            .context("floor")?;
        let mut resp = conn.read_head(expiry.as_mut()).await.context("floor")?;
        if resp.head.status != 200 {
            bail!("floor: the truth server answered {}", resp.head.status);
        }
        let head = resp.head.read;
        let mut last = Some(head.number);
        reads += 1;
        stamped += u64::from(head.kernel.is_some());
        // The tail of the previous read, so a token split across reads counts once.
        let mut seen: Vec<u8> = Vec::with_capacity(256);
        while let Some(read) = resp.next(expiry.as_mut()).await.context("floor")? {
            if last != Some(read.number) {
                last = Some(read.number);
                reads += 1;
                stamped += u64::from(read.kernel.is_some());
            }
            seen.extend_from_slice(resp.data());
            got += seen.windows(needle.len()).filter(|w| *w == needle).count() as u64;
            let keep = seen.len().min(needle.len() - 1);
            seen.drain(..seen.len() - keep);
        }
        resp.finish(&pool);
    }
    Ok((got, reads, stamped))
}
