//! The simulator over real HTTP on 127.0.0.1, with a hand-written HTTP/1.1
//! client (the workspace has no HTTP client crate to spare).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sparkhost_kvbm::{
    DiskTiming, IoMode, Lies, Naming, Profile, SimConfig, SimHandle, Simulator, TierMode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Resp {
    status: u16,
    body: String,
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n..];
        s = s.strip_prefix("\r\n").unwrap_or(s);
    }
    out
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Resp { status, body }
}

/// A prompt of `n` distinct heuristic tokens, unique to `seed`.
fn prompt(seed: u32, n: u32) -> String {
    (0..n)
        .map(|i| format!("w{seed}_{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn complete(sim: &SimHandle, text: &str, max_tokens: u32) -> Value {
    let body = serde_json::json!({"model": "sim-tiny", "prompt": text, "max_tokens": max_tokens, "ignore_eos": true});
    let r = http(sim.addr(), "POST", "/v1/completions", &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn cached(v: &Value) -> u64 {
    v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap()
}

async fn kvbm(sim: &SimHandle) -> String {
    let r = http(sim.metrics_addr().unwrap(), "GET", "/metrics", "").await;
    assert_eq!(r.status, 200);
    r.body
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn tempdir() -> tempfile::TempDir {
    // On the real disk (target/), not tmpfs: O_DIRECT must work there.
    tempfile::Builder::new()
        .prefix("kvbm-sim-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn cfg(mode: TierMode, toml: &str, dir: Option<&Path>) -> SimConfig {
    let p = Profile::builtin("tiny").unwrap().with_toml(toml).unwrap();
    let mut c = SimConfig::new(p, mode);
    c.cache_dir = dir.map(Path::to_owned);
    c
}

/// A once (or twice), eight other prompts that overflow the 64-block GPU
/// pool, then A again: returns A's replay `cached_tokens`.
async fn overflow_replay(sim: &SimHandle, warm: u32) -> u64 {
    for _ in 0..warm {
        complete(sim, &prompt(1, 200), 2).await;
    }
    for k in 2..10 {
        complete(sim, &prompt(k, 200), 2).await;
    }
    // Offloads are modelled with bandwidth: let them land.
    tokio::time::sleep(Duration::from_millis(20)).await;
    cached(&complete(sim, &prompt(1, 200), 2).await)
}

#[derive(Debug, Default, Clone, Copy)]
struct ProcIo {
    read: u64,
    write: u64,
}

fn proc_io() -> ProcIo {
    let t = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |k: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    ProcIo {
        read: get("read_bytes:"),
        write: get("write_bytes:"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_prompt_reports_cached_tokens_streamed_and_unary() {
    let sim = Simulator::start(cfg(TierMode::B0, "", None)).await.unwrap();
    let text = prompt(7, 100);
    let first = complete(&sim, &text, 4).await;
    assert_eq!(cached(&first), 0);
    assert_eq!(first["choices"][0]["finish_reason"], "length");
    assert_eq!(first["usage"]["completion_tokens"], 4);
    let body = serde_json::json!({"prompt": text, "max_tokens": 3, "stream": true, "stream_options": {"include_usage": true}});
    let r = http(sim.addr(), "POST", "/v1/completions", &body.to_string()).await;
    assert_eq!(r.status, 200);
    let events: Vec<&str> = r.body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let usage: Value =
        serde_json::from_str(events[events.len() - 2].trim_start_matches("data: ")).unwrap();
    assert!(cached(&usage) > 0, "{usage}");
    assert_eq!(usage["usage"]["prompt_tokens"], 100);
    let fin: Value =
        serde_json::from_str(events[events.len() - 3].trim_start_matches("data: ")).unwrap();
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    // 3 tokens + finish + usage + DONE.
    assert_eq!(events.len(), 6, "{}", r.body);

    let chat = serde_json::json!({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 2, "stream": true});
    let r = http(
        sim.addr(),
        "POST",
        "/v1/chat/completions",
        &chat.to_string(),
    )
    .await;
    assert!(r.body.contains("chat.completion.chunk") && r.body.contains("\"role\":\"assistant\""));
    assert!(
        !r.body.contains("\"usage\""),
        "no usage without include_usage"
    );
    let chat = serde_json::json!({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 2});
    let r = http(
        sim.addr(),
        "POST",
        "/v1/chat/completions",
        &chat.to_string(),
    )
    .await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["object"], "chat.completion");

    // The frontend metrics saw the cached tokens.
    let m = http(sim.addr(), "GET", "/metrics", "").await.body;
    assert!(metric(&m, "dynamo_frontend_cached_tokens_sum{model=\"sim-tiny\"}") > 0.0);
    assert_eq!(
        metric(
            &m,
            "dynamo_frontend_input_sequence_tokens_count{model=\"sim-tiny\"}"
        ),
        4.0
    );
    assert!(m.contains("dynamo_frontend_requests_total{endpoint=\"completions\",error_type=\"\",model=\"sim-tiny\",request_type=\"stream\",status=\"success\"} 1"), "{m}");
    assert!(m.contains("dynamo_frontend_time_to_first_token_seconds_bucket"));
    assert!(m.contains("sparkhost_sim_info{"));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b0_gpu_overflow_makes_the_replay_miss() {
    let sim = Simulator::start(cfg(TierMode::B0, "", None)).await.unwrap();
    assert_eq!(overflow_replay(&sim, 1).await, 0);
    let k = kvbm(&sim).await;
    assert_eq!(metric(&k, "kvbm_offload_blocks_d2h"), 0.0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_serves_the_replay_from_host() {
    let sim = Simulator::start(cfg(TierMode::B1, "", None)).await.unwrap();
    assert_eq!(overflow_replay(&sim, 1).await, 192);
    let k = kvbm(&sim).await;
    assert_eq!(metric(&k, "kvbm_onboard_blocks_h2d"), 12.0);
    assert_eq!(metric(&k, "kvbm_onboard_blocks_d2d"), 0.0);
    assert_eq!(metric(&k, "kvbm_matched_tokens"), 192.0);
    assert!(metric(&k, "kvbm_host_cache_hit_rate") > 0.0);
    // KVBM v1 counters carry no `_total`.
    assert!(
        k.lines()
            .filter(|l| l.starts_with("kvbm_"))
            .all(|l| !l.contains("_total")),
        "{k}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_serves_the_replay_from_disk_with_real_io() {
    let dir = tempdir();
    let sim = Simulator::start(cfg(TierMode::B2, "cpu_num_blocks = 16", Some(dir.path())))
        .await
        .unwrap();
    assert_eq!(sim.info().disk_io, Some(IoMode::Direct));
    let before = proc_io();
    assert_eq!(overflow_replay(&sim, 2).await, 192);
    let after = proc_io();
    let k = kvbm(&sim).await;
    assert_eq!(metric(&k, "kvbm_onboard_blocks_d2d"), 12.0);
    assert!(metric(&k, "kvbm_offload_blocks_h2d") >= 12.0);
    assert!(metric(&k, "kvbm_disk_cache_hit_rate") > 0.0);
    let st = sim.disk_stats().unwrap();
    let slot = sim.info().disk_slot_bytes;
    assert_eq!(st.bytes_read, 12 * slot);
    assert!(st.bytes_written >= 12 * slot);
    // The cache file really holds the written blocks (it is sparse).
    let file = sim.info().disk_cache_file.clone().unwrap();
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&file).unwrap().blocks() * 512;
    assert!(
        allocated >= st.bytes_written,
        "{allocated} < {}",
        st.bytes_written
    );
    // O_DIRECT bytes are charged to this process by the block layer.
    assert!(
        after.write - before.write >= st.bytes_written,
        "{before:?} {after:?} {st:?}"
    );
    assert!(
        after.read - before.read >= st.bytes_read,
        "{before:?} {after:?} {st:?}"
    );
    sim.shutdown().await;
    assert!(!file.exists(), "the cache file is removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_v2_names_stage_disk_onboarding_through_host() {
    let dir = tempdir();
    let mut c = cfg(TierMode::B2, "cpu_num_blocks = 16", Some(dir.path()));
    c.naming = Naming::V2;
    c.disk_timing = DiskTiming::Measured;
    let sim = Simulator::start(c).await.unwrap();
    assert_eq!(overflow_replay(&sim, 2).await, 192);
    let k = kvbm(&sim).await;
    assert_eq!(metric(&k, "kvbm_onboard_blocks_d2h"), 12.0);
    assert_eq!(metric(&k, "kvbm_onboard_blocks_h2d"), 12.0);
    assert_eq!(metric(&k, "kvbm_onboard_blocks_d2d"), 0.0);
    assert_eq!(metric(&k, "kvbm_cache_blocks_hit_total{tier=\"g3\"}"), 12.0);
    assert!(k.contains("kvbm_transfer_duration_seconds_count{operation=\"onboard\",outcome=\"success\",route=\"g3_to_g2\"} 1"), "{k}");
    assert!(k.contains("# TYPE kvbm_transfer_duration_seconds histogram"));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_dynamo_shaped_and_bounded() {
    let mut c = cfg(TierMode::B0, "", None);
    c.max_body_bytes = 64 * 1024;
    let sim = Simulator::start(c).await.unwrap();
    let long = serde_json::json!({"prompt": prompt(1, 600), "max_tokens": 1});
    let r = http(sim.addr(), "POST", "/v1/completions", &long.to_string()).await;
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["type"], "Bad Request");
    assert_eq!(v["code"], 400);
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("maximum context length is 512 tokens") && msg.contains("600 input tokens"),
        "{msg}"
    );
    let over = serde_json::json!({"prompt": prompt(1, 500), "max_tokens": 100});
    let r = http(sim.addr(), "POST", "/v1/completions", &over.to_string()).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("'max_tokens' is too large"), "{}", r.body);
    let r = http(sim.addr(), "POST", "/v1/completions", "{\"prompt\": ").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Failed to deserialize"));
    let r = http(
        sim.addr(),
        "POST",
        "/v1/completions",
        "{\"model\":\"other\",\"prompt\":\"x\"}",
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("Model not found"));
    let big = "x".repeat(70 * 1024);
    let r = http(sim.addr(), "POST", "/v1/completions", &big).await;
    assert_eq!(r.status, 413);
    let r = http(sim.addr(), "GET", "/nope", "").await;
    assert_eq!(r.status, 404);
    let r = http(sim.addr(), "GET", "/v1/models", "").await;
    assert!(r.body.contains("\"id\":\"sim-tiny\""));
    let r = http(sim.addr(), "GET", "/health", "").await;
    assert_eq!(r.status, 200);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_empties_the_tiers() {
    let dir = tempdir();
    let sim = Simulator::start(cfg(
        TierMode::B2,
        "disable_disk_offload_filter = true",
        Some(dir.path()),
    ))
    .await
    .unwrap();
    complete(&sim, &prompt(1, 200), 2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    complete(&sim, &prompt(2, 20), 2).await;
    let o = sim.occupancy();
    assert!(o.host_used > 0 && o.disk_used > 0, "{o:?}");
    let r = http(sim.addr(), "POST", "/reset", "").await;
    assert_eq!(r.status, 200);
    let o = sim.occupancy();
    assert_eq!(
        (o.gpu_registered, o.host_used, o.disk_used),
        (0, 0, 0),
        "{o:?}"
    );
    assert_eq!(cached(&complete(&sim, &prompt(1, 200), 2).await), 0);
    let s: Value =
        serde_json::from_str(&http(sim.addr(), "GET", "/sim/state", "").await.body).unwrap();
    assert_eq!(s["simulated"], true);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_record_matches_what_was_streamed() {
    let sim = Simulator::start(cfg(TierMode::B0, "", None)).await.unwrap();
    let body = serde_json::json!({"prompt": prompt(3, 50), "max_tokens": 5, "stream": true});
    http(sim.addr(), "POST", "/v1/completions", &body.to_string()).await;
    let recs = sim.schedule();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.scheduled_ns.len(), 5);
    assert_eq!(r.written_ns.len(), 5);
    assert!(r.scheduled_ns[0] > r.arrival_ns);
    let p = Profile::builtin("tiny").unwrap();
    for (i, (s, w)) in r.scheduled_ns.iter().zip(&r.written_ns).enumerate() {
        assert!(w >= s, "token {i} written before its time");
        if i > 0 {
            // Each decode step takes at least its base cost.
            assert!(s - r.scheduled_ns[i - 1] >= (p.decode_base_us * 1000.0) as u64);
        }
    }
    let j = http(sim.addr(), "GET", "/sim/schedule", "").await.body;
    let v: Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v[0]["id"], r.id.as_str());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lie_metrics_without_io() {
    let dir = tempdir();
    let mut c = cfg(TierMode::B2, "cpu_num_blocks = 16", Some(dir.path()));
    c.lies = Lies {
        metrics_without_io: true,
        ..Lies::default()
    };
    let sim = Simulator::start(c).await.unwrap();
    assert_eq!(overflow_replay(&sim, 2).await, 192);
    assert_eq!(metric(&kvbm(&sim).await, "kvbm_onboard_blocks_d2d"), 12.0);
    assert!(sim.disk_stats().is_none() && sim.info().disk_io.is_none());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no cache file at all"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lie_io_without_metrics() {
    let dir = tempdir();
    let mut c = cfg(TierMode::B2, "cpu_num_blocks = 16", Some(dir.path()));
    c.lies = Lies {
        io_without_metrics: true,
        ..Lies::default()
    };
    let sim = Simulator::start(c).await.unwrap();
    assert_eq!(overflow_replay(&sim, 2).await, 192);
    let k = kvbm(&sim).await;
    for n in [
        "kvbm_onboard_blocks_d2d",
        "kvbm_offload_blocks_h2d",
        "kvbm_offload_blocks_d2h",
        "kvbm_matched_tokens",
    ] {
        assert_eq!(metric(&k, n), 0.0, "{n}");
    }
    assert!(sim.disk_stats().unwrap().bytes_read > 0);
    assert_eq!(
        sim.kvbm_view().counters.onboard_disk_to_gpu,
        12,
        "the truth is still kept"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lie_stale_gauges() {
    let dir = tempdir();
    let mut c = cfg(TierMode::B2, "cpu_num_blocks = 16", Some(dir.path()));
    c.lies = Lies {
        stale_gauges: true,
        ..Lies::default()
    };
    let sim = Simulator::start(c).await.unwrap();
    assert_eq!(overflow_replay(&sim, 2).await, 192);
    let k = kvbm(&sim).await;
    assert_eq!(metric(&k, "kvbm_onboard_blocks_d2d"), 12.0);
    assert_eq!(metric(&k, "kvbm_disk_cache_hit_rate"), 0.0);
    assert_eq!(metric(&k, "kvbm_host_cache_hit_rate"), 0.0);
    assert!(sim.kvbm_view().disk_rate > 0.0);
    sim.shutdown().await;
}

#[test]
fn the_blocking_variant_runs_its_own_runtime() {
    let sim = Simulator::start_blocking(cfg(TierMode::B1, "", None)).unwrap();
    let addr = sim.addr().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(http(addr, "GET", "/health", ""));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("\"simulated\":true"));
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_without_a_cache_dir_or_on_tmpfs_fails_clearly() {
    let e = Simulator::start(cfg(TierMode::B2, "", None))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("cache dir"), "{e}");
    // /dev/shm is tmpfs on Linux: O_DIRECT is refused there.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let d = tempfile::Builder::new()
            .prefix("kvbm-sim-")
            .tempdir_in(shm)
            .unwrap();
        match Simulator::start(cfg(TierMode::B2, "", Some(d.path()))).await {
            Err(e) => assert!(e.to_string().contains("O_DIRECT"), "{e}"),
            // Some kernels let tmpfs accept O_DIRECT.
            Ok(s) => s.shutdown().await,
        }
        let mut c = cfg(TierMode::B2, "", Some(d.path()));
        c.allow_buffered_disk = true;
        let s = Simulator::start(c).await.unwrap();
        assert!(s.info().disk_io.is_some());
        s.shutdown().await;
    }
}

/// How late chunks leave against the engine's schedule, at 64 streams.
/// Ignored by default: timing on a shared CI core is not a pass/fail matter.
/// Run with `cargo test -p sparkhost-kvbm --test server -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn lateness_against_the_schedule() {
    let sim = Simulator::start(cfg(TierMode::B0, "max_num_seqs = 64", None))
        .await
        .unwrap();
    let addr = sim.addr();
    let mut tasks = Vec::new();
    for k in 0..64 {
        tasks.push(tokio::spawn(async move {
            let body =
                serde_json::json!({"prompt": prompt(k, 20), "max_tokens": 64, "stream": true});
            http(addr, "POST", "/v1/completions", &body.to_string())
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let mut late: Vec<u64> = sim
        .schedule()
        .iter()
        .flat_map(|r| {
            r.scheduled_ns
                .iter()
                .zip(&r.written_ns)
                .map(|(s, w)| w - s)
                .collect::<Vec<_>>()
        })
        .collect();
    late.sort_unstable();
    let q = |f: f64| late[((late.len() - 1) as f64 * f) as usize];
    println!(
        "tokens {} lateness p50 {} µs p99 {} µs max {} µs",
        late.len(),
        q(0.5) / 1000,
        q(0.99) / 1000,
        q(1.0) / 1000
    );
    sim.shutdown().await;
}

/// A client that stops reading fills its socket: the engine must hand the
/// rest to the connection task, which writes it in order, with write times
/// no earlier than the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_chunk_in_order() {
    // Fast steps and long answers: ~10 MB streamed in well under a second.
    let toml =
        "max_model_len = 65536\ngpu_num_blocks = 8192\nstep_overhead_us = 1\ndecode_base_us = 1";
    let sim = Simulator::start(cfg(TierMode::B0, toml, None))
        .await
        .unwrap();
    for chat in [false, true] {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(sim.addr()).await.unwrap();
        let (path, body) = if chat {
            (
                "/v1/chat/completions",
                serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 60000, "stream": true, "ignore_eos": true}),
            )
        } else {
            (
                "/v1/completions",
                serde_json::json!({"prompt": "hi", "max_tokens": 60000, "stream": true, "ignore_eos": true}),
            )
        };
        let body = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: sim\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (_, rest) = raw.split_once("\r\n\r\n").unwrap();
        let text: String = dechunk(rest)
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|e| *e != "[DONE]")
            .filter_map(|e| {
                let v: Value = serde_json::from_str(e).unwrap();
                let c = &v["choices"][0];
                let t = if chat {
                    &c["delta"]["content"]
                } else {
                    &c["text"]
                };
                t.as_str().map(str::to_owned)
            })
            .collect();
        let want: String = (0..60000)
            .map(sparkhost_kvbm::tokens::filler_text)
            .collect();
        assert!(text == want, "chat={chat}: streamed text differs");
    }
    let recs = sim.schedule();
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r.written_ns.len(), 60000);
        assert!(r.written_ns.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            r.scheduled_ns
                .iter()
                .zip(&r.written_ns)
                .all(|(s, w)| w >= s)
        );
    }
    sim.shutdown().await;
}
