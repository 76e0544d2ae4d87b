//! Serving benchmark for issue 12 item 9 ("it is never the bottleneck").
//!
//! The simulator runs in this process on a current-thread tokio runtime; its
//! server thread (and so the engine thread it spawns, which inherits the
//! mask) is pinned to CPU 0, the load client to CPU 1, so "one core" is the
//! server's whole budget. The client speaks HTTP/1.1 by hand over keep-alive
//! loopback connections and timestamps each streamed chunk when `read`
//! returns it, on the simulator's own clock ([`SimHandle::epoch`]), so it can
//! be compared with the engine's schedule record token by token.
//!
//! `cargo bench -p sparkhost-kvbm --bench serve [-- --secs N --json PATH]`
//!
//! This is a benchmark, not a test: it asserts nothing about time. It prints
//! the machine's load and the number of running rustc processes next to the
//! figures because numbers taken on a loaded machine mean little.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sparkhost_kvbm::{Profile, ScheduleRecord, SimConfig, Simulator, TierMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Pins the calling thread; threads it creates later inherit the mask.
#[allow(unsafe_code)]
fn pin(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays in bounds for cpu <
    // CPU_SETSIZE, and sched_setaffinity only reads the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

fn rustc_running() -> usize {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "rustc")
        })
        .count()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default()
}

/// One response as the client saw it.
#[derive(Default)]
struct Reply {
    id: String,
    /// Receive time of each streamed token chunk (ns on the simulator's clock).
    recv_ns: Vec<u64>,
    tokens: u64,
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    epoch: Instant,
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn between<'a>(h: &'a [u8], start: &[u8], end: u8) -> Option<&'a [u8]> {
    let i = find(h, start)? + start.len();
    let j = h[i..].iter().position(|&b| b == end)?;
    Some(&h[i..i + j])
}

/// Tokens and requests received so far, across connections: throughput is
/// the growth of these over the measured window, so requests still under
/// way when it closes (or started in the ramp-up) count for what arrived
/// inside it.
static TOKENS: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);

impl Conn {
    async fn open(addr: std::net::SocketAddr, epoch: Instant) -> io::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            s,
            buf: Vec::with_capacity(1 << 16),
            epoch,
        })
    }

    async fn fill(&mut self) -> io::Result<u64> {
        self.buf.reserve(1 << 15);
        if self.s.read_buf(&mut self.buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(self.epoch.elapsed().as_nanos() as u64)
    }

    async fn request(&mut self, body: &str, stream: bool) -> io::Result<Reply> {
        let req = format!(
            "POST /v1/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.s.write_all(req.as_bytes()).await?;
        let bad = |m: &str| io::Error::other(m.to_owned());
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        if !self.buf.starts_with(b"HTTP/1.1 200") {
            return Err(bad(&String::from_utf8_lossy(&self.buf[..head_end])));
        }
        let mut r = Reply::default();
        if !stream {
            let len: usize = between(&self.buf[..head_end], b"content-length: ", b'\r')
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .ok_or_else(|| bad("no content-length"))?;
            while self.buf.len() < head_end + len {
                self.fill().await?;
            }
            let body = &self.buf[head_end..head_end + len];
            r.id = String::from_utf8_lossy(between(body, b"\"id\":\"", b'"').unwrap_or_default())
                .into_owned();
            r.tokens = between(body, b"\"completion_tokens\":", b',')
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            self.buf.drain(..head_end + len);
            TOKENS.fetch_add(r.tokens, Ordering::Relaxed);
            REQUESTS.fetch_add(1, Ordering::Relaxed);
            return Ok(r);
        }
        // Events are SSE "data: …\n\n" inside HTTP chunks; every event that
        // completes in one read gets that read's time. Parsed bytes are
        // dropped as they go, so a long stream costs linear time.
        self.buf.drain(..head_end);
        let mut counted = 0;
        let mut now = self.epoch.elapsed().as_nanos() as u64;
        let mut finished = false;
        loop {
            let mut at = 0;
            while !finished && let Some(k) = find_blank_line(&self.buf[at..]) {
                let ev = &self.buf[at..at + k];
                at += k + 2;
                let Some(d) = find(&ev[..ev.len().min(16)], b"data: ") else {
                    continue;
                };
                let ev = &ev[d + 6..];
                if ev.starts_with(b"[DONE]") {
                    finished = true;
                    break;
                }
                // A token's text starts with a space; the final event's is "".
                let head = &ev[..ev.len().min(96)];
                let is_token = between(head, b"\"text\":\"", b'"').is_some_and(|t| !t.is_empty())
                    || find(head, b"\"content\":\" ").is_some();
                if is_token {
                    if r.id.is_empty() {
                        r.id = String::from_utf8_lossy(
                            between(head, b"\"id\":\"", b'"').unwrap_or_default(),
                        )
                        .into_owned();
                    }
                    r.recv_ns.push(now);
                    r.tokens += 1;
                }
            }
            self.buf.drain(..at);
            TOKENS.fetch_add(r.tokens - counted, Ordering::Relaxed);
            counted = r.tokens;
            // After [DONE]: the chunk's CRLF and the last chunk, "0\r\n\r\n".
            if finished && self.buf.len() >= 7 {
                self.buf.drain(..7);
                REQUESTS.fetch_add(1, Ordering::Relaxed);
                return Ok(r);
            }
            now = self.fill().await?;
        }
    }
}

fn find_blank_line(h: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = h[i..].iter().position(|&b| b == b'\n') {
        let k = i + p;
        if h.get(k + 1) == Some(&b'\n') {
            return Some(k);
        }
        i = k + 1;
    }
    None
}

struct Server {
    addr: std::net::SocketAddr,
    epoch: Instant,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Vec<ScheduleRecord>>,
}

fn start_server(toml: &str) -> Server {
    let profile = Profile::builtin("tiny")
        .and_then(|p| p.with_toml(toml))
        .expect("profile");
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("sim-server".into())
        .spawn(move || {
            if !pin(0) {
                eprintln!("warning: could not pin the server to CPU 0");
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let cfg = SimConfig::new(profile, TierMode::B0);
                let sim = Simulator::start(cfg).await.expect("simulator");
                let _ = tx.send((sim.addr(), sim.epoch()));
                let _ = stop_rx.await;
                let s = sim.schedule();
                sim.shutdown().await;
                s
            })
        })
        .expect("server thread");
    let (addr, epoch) = rx.recv().expect("server start");
    Server {
        addr,
        epoch,
        stop,
        thread,
    }
}

impl Server {
    fn finish(self) -> Vec<ScheduleRecord> {
        let _ = self.stop.send(());
        self.thread.join().expect("server thread")
    }
}

fn prompt(k: usize, words: usize) -> String {
    (0..words)
        .map(|i| format!("w{k}x{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn client_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

struct Load {
    conns: usize,
    secs: f64,
    /// (max_tokens, stream) cycled per request.
    mix: Vec<(u32, bool)>,
    prompt_words: usize,
    /// Stop each connection after this many requests (0: run for `secs`).
    per_conn: usize,
}

struct LoadResult {
    wall_s: f64,
    requests: u64,
    tokens: u64,
    errors: u64,
    replies: Vec<Reply>,
}

fn drive(srv: &Server, load: &Load, keep_replies: bool) -> LoadResult {
    let rt = client_rt();
    let (addr, epoch) = (srv.addr, srv.epoch);
    rt.block_on(async {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(load.secs);
        let mut tasks = Vec::new();
        for c in 0..load.conns {
            let mix = load.mix.clone();
            let (words, per_conn) = (load.prompt_words, load.per_conn);
            tasks.push(tokio::spawn(async move {
                let mut out = (0u64, 0u64, 0u64, Vec::new());
                let Ok(mut conn) = Conn::open(addr, epoch).await else {
                    out.2 += 1;
                    return out;
                };
                let mut n = 0usize;
                loop {
                    if (per_conn > 0 && n >= per_conn)
                        || (per_conn == 0 && Instant::now() >= deadline)
                    {
                        break;
                    }
                    let (mt, stream) = mix[n % mix.len()];
                    let body = format!(
                        r#"{{"prompt":"{}","max_tokens":{mt},"ignore_eos":true,"stream":{stream}}}"#,
                        prompt(c * 7919 + n, words)
                    );
                    n += 1;
                    match conn.request(&body, stream).await {
                        Ok(r) => {
                            out.0 += 1;
                            out.1 += r.tokens;
                            if keep_replies {
                                out.3.push(r);
                            }
                        }
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            out.2 += 1;
                            break;
                        }
                    }
                }
                out
            }));
        }
        let mut res = LoadResult {
            wall_s: 0.0,
            requests: 0,
            tokens: 0,
            errors: 0,
            replies: Vec::new(),
        };
        if load.per_conn == 0 {
            // Skip the ramp-up (every connection's first prefill at once).
            let warm = Duration::from_secs_f64((load.secs * 0.2).min(1.0));
            tokio::time::sleep(warm).await;
            let (t1, r1, k1) = (Instant::now(), REQUESTS.load(Ordering::Relaxed), TOKENS.load(Ordering::Relaxed));
            tokio::time::sleep_until(deadline.into()).await;
            res.wall_s = t1.elapsed().as_secs_f64();
            res.requests = REQUESTS.load(Ordering::Relaxed) - r1;
            res.tokens = TOKENS.load(Ordering::Relaxed) - k1;
        }
        for t in tasks {
            if let Ok((r, tk, e, reps)) = t.await {
                if load.per_conn > 0 {
                    res.requests += r;
                    res.tokens += tk;
                }
                res.errors += e;
                res.replies.extend(reps);
            }
        }
        if load.per_conn > 0 {
            res.wall_s = t0.elapsed().as_secs_f64();
        }
        res
    })
}

#[derive(serde::Serialize, Default, Clone, Copy)]
struct Pct {
    n: usize,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    /// Samples earlier than scheduled (must be 0 for "written vs scheduled").
    early: usize,
}

fn pct(mut v: Vec<i64>) -> Pct {
    if v.is_empty() {
        return Pct::default();
    }
    v.sort_unstable();
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize] as f64 / 1000.0;
    Pct {
        n: v.len(),
        p50_us: q(0.5),
        p99_us: q(0.99),
        max_us: q(1.0),
        early: v.iter().filter(|&&x| x < 0).count(),
    }
}

#[derive(serde::Serialize)]
struct Lateness {
    streams: usize,
    max_tokens: u32,
    profile_overrides: String,
    wall_s: f64,
    tokens: u64,
    tokens_per_s: f64,
    errors: u64,
    /// Chunk handed to the socket vs the engine's scheduled time.
    written_vs_scheduled: Pct,
    /// Chunk returned by the client's read vs the scheduled time.
    received_vs_scheduled: Pct,
}

fn lateness(streams: usize, max_tokens: u32, toml: &str) -> Lateness {
    let srv = start_server(toml);
    let load = Load {
        conns: streams,
        secs: 0.0,
        mix: vec![(max_tokens, true)],
        prompt_words: 20,
        per_conn: 1,
    };
    let res = drive(&srv, &load, true);
    let sched = srv.finish();
    let by_id: HashMap<&str, &ScheduleRecord> = sched.iter().map(|r| (r.id.as_str(), r)).collect();
    let (mut wr, mut rc) = (Vec::new(), Vec::new());
    for rep in &res.replies {
        let Some(rec) = by_id.get(rep.id.as_str()) else {
            continue;
        };
        for (i, s) in rec.scheduled_ns.iter().enumerate() {
            if let Some(w) = rec.written_ns.get(i) {
                wr.push(*w as i64 - *s as i64);
            }
            if let Some(r) = rep.recv_ns.get(i) {
                rc.push(*r as i64 - *s as i64);
            }
        }
    }
    Lateness {
        streams,
        max_tokens,
        profile_overrides: toml.replace('\n', "; "),
        wall_s: res.wall_s,
        tokens: res.tokens,
        tokens_per_s: res.tokens as f64 / res.wall_s,
        errors: res.errors,
        written_vs_scheduled: pct(wr),
        received_vs_scheduled: pct(rc),
    }
}

#[derive(serde::Serialize)]
struct Throughput {
    what: &'static str,
    conns: usize,
    profile_overrides: String,
    wall_s: f64,
    requests: u64,
    requests_per_s: f64,
    tokens: u64,
    tokens_per_s: f64,
    errors: u64,
}

fn throughput(what: &'static str, toml: &str, load: Load) -> Throughput {
    let srv = start_server(toml);
    let res = drive(&srv, &load, false);
    srv.finish();
    Throughput {
        what,
        conns: load.conns,
        profile_overrides: toml.replace('\n', "; "),
        wall_s: res.wall_s,
        requests: res.requests,
        requests_per_s: res.requests as f64 / res.wall_s,
        tokens: res.tokens,
        tokens_per_s: res.tokens as f64 / res.wall_s,
        errors: res.errors,
    }
}

/// 256 sequences decoding together: tiny's timing, with room for them
/// (tiny's own 64 seqs × 64 G1 blocks fits only ~10 such streams).
const WIDE: &str = "max_num_seqs = 256\ngpu_num_blocks = 8192";
/// Capacity: a schedule far faster than any server could keep, so the
/// figure is the server's ceiling, not the model's.
const FAST: &str = "max_num_seqs = 256\ngpu_num_blocks = 8192\nstep_overhead_us = 1\ndecode_base_us = 1\ndecode_us_per_seq = 0.01\ndecode_ns_per_ctx_token = 0\nprefill_us_per_token = 0.01\nprefill_ns_per_token_ctx = 0";

fn main() {
    let mut secs = 3.0;
    let mut json_path: Option<String> = None;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            "--json" => json_path = args.next(),
            "--only" => only = args.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    let (load_before, rustc_before) = (load1(), rustc_running());
    // Spawned server threads pin themselves to CPU 0; the client is this thread.
    if !pin(1) {
        eprintln!("warning: could not pin the client to CPU 1");
    }
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let short_mix: Vec<(u32, bool)> = (1..=4).flat_map(|m| [(m, false), (m, true)]).collect();
    let short = |conns| Load {
        conns,
        secs,
        mix: short_mix.clone(),
        prompt_words: 8,
        per_conn: 0,
    };
    let long = |conns| Load {
        conns,
        secs,
        mix: vec![(480, true)],
        prompt_words: 8,
        per_conn: 0,
    };
    let mut tput = Vec::new();
    if want("rps") {
        tput.push(throughput(
            "rps: short requests (max_tokens 1-4, unary+stream), tiny",
            "",
            short(64),
        ));
    }
    if want("rps_fast") {
        tput.push(throughput(
            "rps_fast: the same, fast schedule",
            FAST,
            short(64),
        ));
    }
    if want("tps") {
        tput.push(throughput(
            "tps: 256 streams x 480 tokens, tiny with 256 seqs",
            WIDE,
            long(256),
        ));
    }
    if want("tps_fast") {
        tput.push(throughput(
            "tps_fast: 256 streams x 480 tokens, fast schedule",
            FAST,
            long(256),
        ));
    }
    let mut late = Vec::new();
    if want("late") {
        late.push(("late: tiny", lateness(256, 64, "")));
    }
    if want("late_wide") {
        late.push(("late_wide: tiny, 256 seqs", lateness(256, 64, WIDE)));
    }
    let (load_after, rustc_after) = (load1(), rustc_running());
    let out = serde_json::json!({
        "machine": {
            "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": cpu_model(),
            "load_1m_before": load_before,
            "rustc_before": rustc_before,
            "load_1m_after": load_after,
            "rustc_after": rustc_after,
            "server_cpu": 0,
            "client_cpu": 1,
            "secs": secs,
        },
        "throughput": tput,
        "lateness": late.iter().map(|(n, l)| serde_json::json!({"name": n, "result": l})).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&out).unwrap_or_default();
    println!("{text}");
    if let Some(p) = json_path
        && let Err(e) = std::fs::write(&p, &text)
    {
        eprintln!("cannot write {p}: {e}");
    }
    println!(
        "\nload 1m {load_before:.2} -> {load_after:.2}, rustc running {rustc_before} -> {rustc_after}"
    );
    println!(
        "{:<58} {:>10} {:>12} {:>6}",
        "throughput", "req/s", "tokens/s", "errors"
    );
    for t in &tput {
        println!(
            "{:<58} {:>10.0} {:>12.0} {:>6}",
            t.what, t.requests_per_s, t.tokens_per_s, t.errors
        );
    }
    println!(
        "\n{:<30} {:>8} {:>29} {:>29}",
        "lateness (us), 256 streams",
        "tokens",
        "written p50/p99/max (early)",
        "received p50/p99/max"
    );
    for (name, l) in &late {
        let (w, r) = (l.written_vs_scheduled, l.received_vs_scheduled);
        println!(
            "{:<30} {:>8} {:>8.0}/{:>6.0}/{:>6.0} ({:>4}) {:>10.0}/{:>6.0}/{:>8.0}",
            name, l.tokens, w.p50_us, w.p99_us, w.max_us, w.early, r.p50_us, r.p99_us, r.max_us
        );
    }
}
