//! `sparkhost bench`: measures sparkhost against a ground-truth server on the
//! same machine — fidelity (reported minus true TTFT/ITL), capacity (open-loop
//! rate sustained), cost (CPU, memory, start-up) and workload planning speed.
//!
//! Server and client run as separate processes of this same binary, so each
//! one's CPU time is its own and the client is measured exactly as shipped.
//!
//! Layout: this file runs the four measurements; `floor` is the bare
//! per-chunk receiver that the cost figure is set against.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

mod floor;

use super::Exit;
use crate::cli::{BenchArgs, BenchKind};
use crate::plan::Planner;
use crate::results::documents::{self, SummaryDoc};
use crate::results::summary::{PhaseSummary, TimingBudget};
use crate::sandbox::{DataGrants, Limits, Sandbox};
use crate::tokenize::TokenCounter;
use crate::truth::TruthRecord;

/// A truth server child process, killed on drop.
struct TruthChild {
    child: Child,
    endpoint: String,
}

impl TruthChild {
    fn start(exe: &Path, ttft: Duration, itl: Duration) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .args([
                "truth-server",
                "--ttft",
                &format!("{}us", ttft.as_micros()),
                "--itl",
                &format!("{}us", itl.as_micros()),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the truth server")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("truth server stdout")?)
            .read_line(&mut line)
            .context("reading the truth server's address")?;
        let endpoint = line
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_owned)
            .with_context(|| format!("unexpected truth server output {line:?}"))?;
        Ok(TruthChild { child, endpoint })
    }

    async fn records(&self) -> anyhow::Result<Vec<TruthRecord>> {
        let client = crate::dispatch::client::Client::new(&self.endpoint, Duration::from_secs(30))?;
        let (status, body) = client.get("/truth").await.map_err(anyhow::Error::msg)?;
        if !status.is_success() {
            bail!("GET /truth answered {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }
}

impl Drop for TruthChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Median, min and max of repeated measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

fn spread(mut v: Vec<f64>) -> Option<Spread> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Spread {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
        runs: v.len(),
    })
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Reported minus true, in ms, per token.
#[derive(Debug, Default)]
struct Errors {
    ttft: Vec<f64>,
    itl: Vec<f64>,
    server_lateness: Vec<f64>,
    /// Longest single chunk write on the server, ms: the truth's own uncertainty.
    server_write_max: f64,
    unmatched: usize,
}

fn compare(rows: &[Value], truth: &[TruthRecord]) -> Errors {
    let by_id: HashMap<&str, &TruthRecord> = truth.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut e = Errors::default();
    for r in rows {
        let Some(t) = r["response_id"].as_str().and_then(|id| by_id.get(id)) else {
            e.unmatched += 1;
            continue;
        };
        let offsets: Vec<f64> = r["chunk_offsets_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let ks: Vec<u64> = r["chunk_tokens"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        // Each token arrives with the chunk that carried it.
        let client: Vec<f64> = offsets
            .iter()
            .zip(&ks)
            .flat_map(|(&o, &k)| std::iter::repeat_n(o, k as usize))
            .collect();
        let server: Vec<f64> = t
            .token_writes_ns
            .iter()
            .map(|&w| (w - t.received_ns) as f64 / 1e6)
            .collect();
        if client.len() != server.len() || client.is_empty() {
            e.unmatched += 1;
            continue;
        }
        e.ttft.push(client[0] - server[0]);
        for j in 1..client.len() {
            e.itl
                .push((client[j] - client[j - 1]) - (server[j] - server[j - 1]));
        }
        e.server_lateness
            .extend(t.lateness_ns.iter().map(|&n| n as f64 / 1e6));
        e.server_write_max = e.server_write_max.max(t.write_ns_max as f64 / 1e6);
    }
    e
}

#[derive(Debug, Clone, Serialize)]
struct ErrorStats {
    abs_p50: f64,
    abs_p99: f64,
    abs_max: f64,
    signed_median: f64,
    samples: usize,
}

fn stats(v: &[f64]) -> ErrorStats {
    let mut abs: Vec<f64> = v.iter().map(|x| x.abs()).collect();
    abs.sort_by(f64::total_cmp);
    let mut signed = v.to_vec();
    signed.sort_by(f64::total_cmp);
    ErrorStats {
        abs_p50: quantile(&abs, 0.5),
        abs_p99: quantile(&abs, 0.99),
        abs_max: abs.last().copied().unwrap_or(f64::NAN),
        signed_median: quantile(&signed, 0.5),
        samples: v.len(),
    }
}

/// One fidelity repeat: TTFT errors, ITL errors, server lateness p99, the
/// run's summary, the server's longest chunk write.
type Repeat = (ErrorStats, ErrorStats, f64, SummaryDoc, f64);

struct RunOut {
    dir: PathBuf,
    summary: SummaryDoc,
    rows: Vec<Value>,
}

#[allow(clippy::too_many_arguments)]
fn run_client(
    exe: &Path,
    args: &BenchArgs,
    endpoint: &str,
    dir: &Path,
    id: &str,
    load: &[String],
    tokens: u32,
    requests: u64,
    cache: &Path,
) -> anyhow::Result<RunOut> {
    let mut cmd = Command::new(exe);
    cmd.args([
        "run",
        args.workload.to_str().unwrap_or_default(),
        "--endpoint",
        endpoint,
        "--model",
        "truth",
        "--stream",
    ])
    .args([
        "--requests",
        &requests.to_string(),
        "--warmup",
        "0",
        "--max-tokens",
        &tokens.to_string(),
    ])
    .args([
        "--param",
        "short-range=16:16",
        "--param",
        "ignore-eos=true",
        "--engine-max-input-tokens",
        "0",
    ])
    .args([
        "--results-root",
        dir.to_str().unwrap_or_default(),
        "--run-id",
        id,
        "--quiet",
        "--kv-mode",
        "off",
        // The dispatch engine alone: telemetry sampling and the report
        // generator are not folded into its cost.
        "--no-telemetry",
        "--no-report",
    ])
    .args(load)
    .env("SPARKHOST_CACHE_DIR", cache)
    .stdout(Stdio::null());
    let status = cmd.status().context("running sparkhost run")?;
    let run_dir = dir.join(id);
    if !status.success() {
        bail!(
            "sparkhost run exited with {status}; see {}",
            run_dir.display()
        );
    }
    let summary: SummaryDoc = documents::read(&run_dir.join("summary.json"))?;
    let rows = std::fs::read_to_string(run_dir.join("requests.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()?;
    Ok(RunOut {
        dir: run_dir,
        summary,
        rows,
    })
}

fn cpu_s(s: &SummaryDoc) -> f64 {
    let h = &s.harness;
    if let Some(ns_resolution) = h.cpu_s {
        return ns_resolution;
    }
    h.cpu_user_s.unwrap_or(f64::NAN) + h.cpu_system_s.unwrap_or(f64::NAN)
}

/// The run's timing-error budget figure `f`, NaN when absent.
fn budget_of(s: &SummaryDoc, f: impl Fn(&TimingBudget) -> Option<f64>) -> f64 {
    s.timing_error_budget
        .as_ref()
        .and_then(f)
        .unwrap_or(f64::NAN)
}

/// The run's overall figure `f`, NaN when absent.
fn overall_of(s: &SummaryDoc, f: impl Fn(&PhaseSummary) -> f64) -> f64 {
    s.overall_measured.as_ref().map_or(f64::NAN, f)
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<Exit> {
    let exe = std::env::current_exe().context("locating the sparkhost binary")?;
    if !args.workload.is_file() {
        bail!(
            "{} is missing: run `make workloads` (or pass --workload)",
            args.workload.display()
        );
    }
    let root = args.results_root.join(format!(
        "bench-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let cache = root.join("cache");
    let mut report = serde_json::Map::new();
    report.insert("machine".into(), machine());
    report.insert(
        "command".into(),
        json!(crate::dispatch::access::redact_argv(std::env::args())),
    );
    let kinds: Vec<BenchKind> = if args.kind.is_empty() {
        vec![
            BenchKind::Fidelity,
            BenchKind::Capacity,
            BenchKind::Cost,
            BenchKind::Planning,
        ]
    } else {
        args.kind.clone()
    };
    for kind in kinds {
        let v = match kind {
            BenchKind::Fidelity => fidelity(&exe, &args, &root, &cache).await?,
            BenchKind::Capacity => capacity(&exe, &args, &root, &cache)?,
            BenchKind::Cost => cost(&exe, &args, &root)?,
            BenchKind::Planning => planning(&args)?,
        };
        report.insert(format!("{kind:?}").to_lowercase(), v);
        std::fs::write(root.join("bench.json"), serde_json::to_vec_pretty(&report)?)?;
    }
    println!("results: {}", root.join("bench.json").display());
    Ok(Exit::Ok)
}

fn machine() -> Value {
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_owned()),
    })
}

/// `args.repeats` fidelity runs at `c` streams with one arrival clock.
async fn fidelity_repeats(
    exe: &Path,
    args: &BenchArgs,
    root: &Path,
    cache: &Path,
    c: u32,
    clock: &str,
) -> anyhow::Result<Vec<Repeat>> {
    let mut per_repeat = Vec::new();
    for rep in 0..args.repeats {
        let server = TruthChild::start(exe, args.ttft, args.itl)?;
        let requests = (u64::from(c) * args.rounds).max(1);
        let run = run_client(
            exe,
            args,
            &server.endpoint,
            root,
            &format!("fidelity-{clock}-c{c}-r{rep}"),
            &[
                "--concurrency".into(),
                c.to_string(),
                "--arrival-clock".into(),
                clock.into(),
            ],
            args.tokens,
            requests,
            cache,
        )?;
        let truth = server.records().await?;
        let e = compare(&run.rows, &truth);
        if e.unmatched > 0 {
            bail!(
                "{} requests of {} could not be matched to the server's truth",
                e.unmatched,
                run.dir.display()
            );
        }
        let mut late = e.server_lateness.clone();
        late.sort_by(f64::total_cmp);
        per_repeat.push((
            stats(&e.ttft),
            stats(&e.itl),
            quantile(&late, 0.99),
            run.summary,
            e.server_write_max,
        ));
    }
    Ok(per_repeat)
}

async fn fidelity(
    exe: &Path,
    args: &BenchArgs,
    root: &Path,
    cache: &Path,
) -> anyhow::Result<Value> {
    println!(
        "fidelity: reported minus true, ms (T = {:?}, I = {:?}, N = {})",
        args.ttft, args.itl, args.tokens
    );
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "conc", "ttft p50", "ttft p99", "ttft max", "itl p50", "itl p99", "itl max", "srv late p99"
    );
    let mut out = Vec::new();
    for &c in &args.concurrency {
        // Kernel arrival stamps (the default) against the truth, then the
        // parser's clock, whose error against the truth must match the
        // read-path delay that same run reports in its timing-error budget.
        let kernel = fidelity_repeats(exe, args, root, cache, c, "kernel").await?;
        let app = fidelity_repeats(exe, args, root, cache, c, "application").await?;
        let pick = |rs: &[Repeat], f: &dyn Fn(&Repeat) -> f64| spread(rs.iter().map(f).collect());
        let budget = |r: &Repeat, k: &str| budget_of(&r.3, |t| t.read_path_delay_ms.stat(k));
        let row = json!({
            "concurrency": c,
            "ttft_abs_p50_ms": pick(&kernel, &|r| r.0.abs_p50),
            "ttft_abs_p99_ms": pick(&kernel, &|r| r.0.abs_p99),
            "ttft_abs_max_ms": pick(&kernel, &|r| r.0.abs_max),
            "ttft_signed_median_ms": pick(&kernel, &|r| r.0.signed_median),
            "itl_abs_p50_ms": pick(&kernel, &|r| r.1.abs_p50),
            "itl_abs_p99_ms": pick(&kernel, &|r| r.1.abs_p99),
            "itl_abs_max_ms": pick(&kernel, &|r| r.1.abs_max),
            "server_lateness_p99_ms": pick(&kernel, &|r| r.2),
            "server_write_max_ms": pick(&kernel, &|r| r.4),
            "client_schedule_lateness_p99_ms": pick(&kernel, &|r| budget_of(&r.3, |t| t.schedule_lateness_ms.p99)),
            "reported_read_path_delay_p50_ms": pick(&kernel, &|r| budget(r, "p50")),
            "reported_read_path_delay_p99_ms": pick(&kernel, &|r| budget(r, "p99")),
            "chunks_sharing_a_read": pick(&kernel, &|r| budget_of(&r.3, |t| Some(t.chunks_sharing_a_read as f64))),
            "client_cpu_s": pick(&kernel, &|r| cpu_s(&r.3)),
            "ttft_samples": kernel[0].0.samples,
            "itl_samples": kernel[0].1.samples,
            "application_clock": {
                "ttft_abs_p50_ms": pick(&app, &|r| r.0.abs_p50),
                "ttft_abs_p99_ms": pick(&app, &|r| r.0.abs_p99),
                "itl_abs_p50_ms": pick(&app, &|r| r.1.abs_p50),
                "itl_abs_p99_ms": pick(&app, &|r| r.1.abs_p99),
                "reported_read_path_delay_p50_ms": pick(&app, &|r| budget(r, "p50")),
                "reported_read_path_delay_p99_ms": pick(&app, &|r| budget(r, "p99")),
                "client_cpu_s": pick(&app, &|r| cpu_s(&r.3)),
            },
        });
        let m = |k: &str| row[k]["median"].as_f64().unwrap_or(f64::NAN);
        let ma = |k: &str| {
            row["application_clock"][k]["median"]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        println!(
            "{c:>6} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>12.3}",
            m("ttft_abs_p50_ms"),
            m("ttft_abs_p99_ms"),
            m("ttft_abs_max_ms"),
            m("itl_abs_p50_ms"),
            m("itl_abs_p99_ms"),
            m("itl_abs_max_ms"),
            m("server_lateness_p99_ms")
        );
        println!(
            "{:>6} application clock: ttft err p50 {:.3} p99 {:.3}, itl err p50 {:.3} p99 {:.3}; its reported read-path delay p50 {:.3} p99 {:.3}",
            "",
            ma("ttft_abs_p50_ms"),
            ma("ttft_abs_p99_ms"),
            ma("itl_abs_p50_ms"),
            ma("itl_abs_p99_ms"),
            ma("reported_read_path_delay_p50_ms"),
            ma("reported_read_path_delay_p99_ms"),
        );
        out.push(row);
    }
    Ok(Value::Array(out))
}

fn capacity(exe: &Path, args: &BenchArgs, root: &Path, cache: &Path) -> anyhow::Result<Value> {
    println!(
        "capacity: open loop, constant arrivals, {} tokens per streamed response, {:?} per run, {} runs per rate",
        args.capacity_tokens, args.capacity_duration, args.repeats
    );
    println!(
        "{:>8} {:>10} {:>8} {:>8} {:>12} {:>10} {:>6}",
        "target", "achieved", "ratio", "errors", "late p99 ms", "client cpu", "pass"
    );
    let mut steps = Vec::new();
    let mut best: Option<f64> = None;
    for &rate in &args.rates {
        let mut achieved = Vec::new();
        let mut late = Vec::new();
        let mut cpu = Vec::new();
        let mut errors = 0u64;
        for rep in 0..args.repeats {
            let server =
                TruthChild::start(exe, Duration::from_millis(1), Duration::from_millis(1))?;
            let requests = (rate * args.capacity_duration.as_secs_f64()).ceil() as u64;
            let run = run_client(
                exe,
                args,
                &server.endpoint,
                root,
                &format!("capacity-{rate}-r{rep}"),
                &[
                    "--rate".into(),
                    rate.to_string(),
                    "--arrival".into(),
                    "constant".into(),
                ],
                args.capacity_tokens,
                requests,
                cache,
            )?;
            let sent: Vec<f64> = run
                .rows
                .iter()
                .filter_map(|r| r["sent_offset_ms"].as_f64())
                .collect();
            let span_s = (sent.iter().copied().fold(f64::MIN, f64::max)
                - sent.iter().copied().fold(f64::MAX, f64::min))
                / 1e3;
            achieved.push(if span_s > 0.0 {
                (sent.len() as f64 - 1.0) / span_s
            } else {
                0.0
            });
            errors += run
                .summary
                .overall_measured
                .as_ref()
                .map_or(u64::MAX, |o| o.error_requests);
            late.push(budget_of(&run.summary, |t| t.schedule_lateness_ms.p99));
            cpu.push(cpu_s(&run.summary));
        }
        let (achieved, late, cpu) = (spread(achieved), spread(late), spread(cpu));
        let med = |s: &Option<Spread>| s.as_ref().map_or(f64::NAN, |s| s.median);
        // The median run decides; errors in any run fail the step.
        let pass = med(&achieved) >= 0.95 * rate && errors == 0 && med(&late) < 1.0;
        println!(
            "{rate:>8.0} {:>10.0} {:>8.3} {errors:>8} {:>12.3} {:>10.2} {:>6}",
            med(&achieved),
            med(&achieved) / rate,
            med(&late),
            med(&cpu),
            if pass { "yes" } else { "no" }
        );
        if pass {
            best = Some(best.map_or(rate, |b: f64| b.max(rate)));
        }
        steps.push(json!({"target_rate": rate, "achieved_rate": achieved, "errors": errors, "schedule_lateness_p99_ms": late, "pass": pass, "client_cpu_s": cpu}));
    }
    let ceiling = server_ceiling(exe)?;
    Ok(json!({"steps": steps, "highest_passing_rate": best, "truth_server_ceiling": ceiling}))
}

/// The truth server's own ceiling for the capacity responses, measured with
/// `wrk` (a C load generator, closed loop, 256 keep-alive connections), so a
/// reader can see whether sparkhost or the server ran out first. Skipped,
/// with a note, where `wrk` is not installed.
fn server_ceiling(exe: &Path) -> anyhow::Result<Value> {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("truth server ceiling: skipped (`wrk` is not installed; `apt-get install wrk`)");
        return Ok(json!({"skipped": "wrk is not installed"}));
    }
    let server = TruthChild::start(exe, Duration::from_millis(1), Duration::from_millis(1))?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        r#"wrk.method = "POST"
wrk.body = '{"model":"truth","prompt":"one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen","max_tokens":4,"stream":true}'
wrk.headers["Content-Type"] = "application/json"
"#,
    )?;
    let out = Command::new("wrk")
        .args(["-t1", "-c256", "-d4s", "-s"])
        .arg(&script)
        .arg(format!("{}/v1/completions", server.endpoint))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk printed no Requests/sec:\n{text}"))?;
    let non_2xx = text.lines().any(|l| l.contains("Non-2xx"));
    println!("truth server ceiling (wrk, closed loop, 256 connections): {rps:.0} req/s");
    Ok(json!({"tool": "wrk -t1 -c256 -d4s", "requests_per_s": rps, "non_2xx_seen": non_2xx}))
}

fn cost(exe: &Path, args: &BenchArgs, root: &Path) -> anyhow::Result<Value> {
    let c = args.cost_concurrency;
    println!(
        "cost: {c} streams × {} tokens, start-up cold vs cached",
        args.tokens
    );
    let mut per_1k = Vec::new();
    let mut rss = Vec::new();
    let mut rss_small = Vec::new();
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    let mut floor_per_1k = Vec::new();
    let mut floor_reads_per_token = Vec::new();
    let mut over_floor = Vec::new();
    for rep in 0..args.repeats {
        let fresh_cache = root.join(format!("cache-cost-{rep}"));
        let server = TruthChild::start(exe, args.ttft, args.itl)?;
        let first = run_client(
            exe,
            args,
            &server.endpoint,
            root,
            &format!("cost-cold-r{rep}"),
            &["--concurrency".into(), "1".into()],
            4,
            1,
            &fresh_cache,
        )?;
        cold.push(
            first
                .summary
                .harness
                .first_send_after_start_ms
                .unwrap_or(f64::NAN),
        );
        let small = run_client(
            exe,
            args,
            &server.endpoint,
            root,
            &format!("cost-c1-r{rep}"),
            &["--concurrency".into(), "1".into()],
            4,
            1,
            &fresh_cache,
        )?;
        cached.push(
            small
                .summary
                .harness
                .first_send_after_start_ms
                .unwrap_or(f64::NAN),
        );
        rss_small.push(
            small
                .summary
                .harness
                .peak_rss_kib
                .map_or(f64::NAN, |k| k as f64),
        );
        let big = run_client(
            exe,
            args,
            &server.endpoint,
            root,
            &format!("cost-c{c}-r{rep}"),
            &["--concurrency".into(), c.to_string()],
            args.tokens,
            u64::from(c) * args.rounds,
            &fresh_cache,
        )?;
        let tokens = overall_of(&big.summary, |o| o.output_tokens_total as f64);
        let ours = cpu_s(&big.summary) / tokens * 1000.0;
        per_1k.push(ours);
        // Same server, same streams and tokens, right after: the least any
        // per-chunk client could have spent.
        let f = floor::measure(&server.endpoint, c, args.rounds, args.tokens)?;
        let theirs = f.cpu_s / f.tokens as f64 * 1000.0;
        println!(
            "  r{rep}: sparkhost {ours:.4} CPU-s/1k tokens, floor {theirs:.4} ({} reads, {} stamped, {:.2} s)",
            f.reads, f.stamped_reads, f.wall_s
        );
        floor_per_1k.push(theirs);
        floor_reads_per_token.push(f.reads as f64 / f.tokens as f64);
        if theirs > 0.0 {
            over_floor.push(ours / theirs);
        }
        rss.push(
            big.summary
                .harness
                .peak_rss_kib
                .map_or(f64::NAN, |k| k as f64),
        );
    }
    let per_stream: Vec<f64> = rss
        .iter()
        .zip(&rss_small)
        .map(|(b, s)| (b - s) / f64::from(c.max(2) - 1))
        .collect();
    let v = json!({
        "concurrency": c,
        "cpu_s_per_1000_tokens_incl_startup": spread(per_1k),
        "peak_rss_kib": spread(rss),
        "peak_rss_kib_one_stream": spread(rss_small),
        "rss_kib_per_in_flight_stream": spread(per_stream),
        "first_send_after_start_ms_cold_cache": spread(cold),
        "first_send_after_start_ms_cached": spread(cached),
        "floor": {
            "what": "one thread, one stamped recvmsg per arrival, chunk framing only: the least a client timing every chunk spends",
            "cpu_s_per_1000_tokens": spread(floor_per_1k),
            "reads_per_token": spread(floor_reads_per_token),
        },
        "sparkhost_over_floor": spread(over_floor),
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(v)
}

fn planning(args: &BenchArgs) -> anyhow::Result<Value> {
    let mut out = Vec::new();
    let workloads: Vec<&PathBuf> = std::iter::once(&args.workload)
        .chain(args.planning_workloads.iter())
        .collect();
    println!("planning: requests/s a workload plans (guest calls only)");
    for w in workloads {
        let sandbox = Sandbox::new(
            Some(args.results_root.join(".bench-cache")),
            Limits::default(),
        )?;
        let loaded = sandbox.load(w)?;
        let mut rates = Vec::new();
        for _ in 0..args.repeats {
            let mut inst = sandbox.instantiate(
                &loaded,
                Arc::new(TokenCounter::Heuristic),
                1,
                &DataGrants::default(),
            )?;
            let n = args.planning_requests.to_string();
            let declared: Vec<String> = inst
                .describe()?
                .params
                .into_iter()
                .map(|p| p.name)
                .collect();
            // `salt=off`: the seed's prompts; a per-run salt is drawn only by
            // `run`, and planning speed does not depend on it.
            let wanted = [
                ("requests", n.as_str()),
                ("warmup", "0"),
                ("short-range", "16:16"),
                ("salt", "off"),
            ];
            let mut params: Vec<(String, String)> = wanted
                .iter()
                .filter(|(k, _)| declared.iter().any(|d| d == k))
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            // Each extra param goes to the workloads that declare it.
            for (k, v) in args
                .planning_params
                .iter()
                .filter(|(k, _)| declared.contains(k))
            {
                params.retain(|(p, _)| p != k);
                params.push((k.clone(), v.clone()));
            }
            inst.create(&params, 1)?;
            let start = Instant::now();
            let mut planned = 0u64;
            loop {
                let b = Planner::next_batch(&mut inst, 256).map_err(anyhow::Error::msg)?;
                planned += b.requests.len() as u64;
                if b.done || b.requests.is_empty() {
                    break;
                }
            }
            rates.push(planned as f64 / start.elapsed().as_secs_f64());
        }
        let s = spread(rates);
        println!(
            "  {}: {:.0} requests/s",
            w.display(),
            s.as_ref().map_or(f64::NAN, |s| s.median)
        );
        out.push(json!({"workload": w.display().to_string(), "requests_per_s": s}));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, offsets: &[f64], tokens: &[u64]) -> Value {
        json!({"response_id": id, "chunk_offsets_ms": offsets, "chunk_tokens": tokens})
    }

    fn truth(id: &str, received_ms: u64, writes_ms: &[u64]) -> TruthRecord {
        TruthRecord {
            id: id.into(),
            stream: true,
            received_ns: received_ms * 1_000_000,
            token_writes_ns: writes_ms.iter().map(|w| w * 1_000_000).collect(),
            lateness_ns: vec![0; writes_ms.len()],
            write_ns_max: 0,
        }
    }

    #[test]
    fn errors_are_reported_minus_true_per_token() {
        // Server: first token 50 ms after receipt, then every 10 ms.
        let t = truth("a", 100, &[150, 160, 170]);
        // Client saw them 0.5 ms later each, except the last two arrived together.
        let r = row("a", &[50.5, 60.5, 80.0], &[1, 1, 1]);
        let e = compare(&[r], std::slice::from_ref(&t));
        assert_eq!(e.unmatched, 0);
        assert_eq!(e.ttft, vec![0.5]);
        assert_eq!(e.itl, vec![0.0, 9.5]);
        // A chunk carrying two tokens: both tokens arrive with it.
        let coalesced = row("a", &[50.5, 70.5], &[1, 2]);
        let e = compare(&[coalesced], &[t]);
        let itl: Vec<f64> = e.itl.iter().map(|v| (v * 1e6).round() / 1e6).collect();
        assert_eq!(itl, vec![10.0, -10.0]);
    }

    #[test]
    fn unmatched_rows_are_counted_not_guessed() {
        let e = compare(&[row("x", &[1.0], &[1])], &[truth("a", 0, &[1])]);
        assert_eq!(e.unmatched, 1);
        let e = compare(&[row("a", &[1.0], &[1])], &[truth("a", 0, &[1, 2])]);
        assert_eq!(e.unmatched, 1, "token counts differ");
    }

    #[test]
    fn spread_and_stats() {
        let s = spread(vec![3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        assert!(spread(vec![]).is_none());
        let st = stats(&[-2.0, 1.0, 0.5]);
        assert_eq!(st.abs_max, 2.0);
        assert_eq!(st.signed_median, 0.5);
    }
}
