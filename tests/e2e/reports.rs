//! Reports and cross-run analysis through the real binary: the default
//! report generator (golden `report.md`, `report.html` in headless
//! Chromium), `summarize`, `compare` on fabricated runs with known
//! distributions, `matrix` (resume) and `search` against an in-test server
//! whose latency grows with load.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{read_json, repo, sparkhost, synthetic, text, workload};

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/run-basic")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn default_generator() -> PathBuf {
    workload("report-default")
}

/// `sparkhost report RUN_DIR --generator GENERATOR`.
fn report(run_dir: &Path, generator: &Path, cache: &Path) -> Output {
    sparkhost(
        &[
            "report",
            run_dir.to_str().unwrap(),
            "--generator",
            generator.to_str().unwrap(),
        ],
        cache,
    )
}

/// The fixture copied into a temp dir, with reports written by the default generator.
fn reported_fixture(cache: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    let o = report(dir.path(), &default_generator(), cache);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    dir
}

#[test]
fn golden_report_md() {
    let cache = tempfile::tempdir().unwrap();
    let dir = reported_fixture(cache.path());
    let got = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let golden = repo().join("tests/fixtures/golden/run-basic.report.md");
    if std::env::var_os("SPARKHOST_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
        eprintln!("updated {}", golden.display());
        return;
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with `make report-golden` and review it",
            golden.display()
        )
    });
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "report.md differs from {} at line {}:\n got: {:?}\nwant: {:?}\n(if the change is intended: `make report-golden`, then review the diff)",
            golden.display(),
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
    // Regenerating replaces the earlier report (and only it) with the same bytes.
    let o = report(dir.path(), &default_generator(), cache.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("report.md")).unwrap(),
        got
    );
    let m = read_json(&dir.path().join("report_manifest.json"));
    assert_eq!(m["generator"]["name"], "report-default");
    assert_eq!(m["files"].as_array().unwrap().len(), 2);
}

/// Runs Chromium with the flags CI can use, bounded in time.
fn chromium(args: &[String]) -> std::process::Output {
    let mut child = Command::new("chromium")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium is installed (apt-get install -y chromium; .ci/run does it)");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let _ = stdout.read_to_end(&mut out);
        out
    });
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    std::process::Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err.into_bytes(),
    }
}

fn chromium_flags(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// The text of `<td data-col="col">` in row `row` of table `table`.
fn cell(dom: &str, table: &str, row: &str, col: &str) -> String {
    let t0 = dom
        .find(&format!("<table data-table=\"{table}\">"))
        .unwrap_or_else(|| panic!("no table {table} in the DOM"));
    let t = &dom[t0..t0 + dom[t0..].find("</table>").unwrap()];
    let r0 = t
        .find(&format!("<tr data-row=\"{row}\">"))
        .unwrap_or_else(|| panic!("no row {row} in table {table}"));
    let r = &t[r0..r0 + t[r0..].find("</tr>").unwrap()];
    let key = format!("<td data-col=\"{col}\">");
    let c0 = r
        .find(&key)
        .unwrap_or_else(|| panic!("no column {col} in row {row} of {table}"))
        + key.len();
    r[c0..c0 + r[c0..].find("</td>").unwrap()].to_owned()
}

fn same_number(got: &str, want: &Value, what: &str) {
    let g: f64 = got
        .parse()
        .unwrap_or_else(|_| panic!("{what}: {got:?} is not a number"));
    let w = want
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: summary has {want}"));
    assert!(
        (g - w).abs() < 1e-9,
        "{what}: page shows {g}, summary.json has {w}"
    );
}

#[test]
fn report_html_in_headless_chromium() {
    if Command::new("chromium").arg("--version").output().is_err() {
        if std::env::var_os("SPARKHOST_SKIP_CHROMIUM").is_some() {
            eprintln!("skipped: chromium is not installed");
            return;
        }
        panic!(
            "chromium is not installed: apt-get install -y chromium (or SPARKHOST_SKIP_CHROMIUM=1)"
        );
    }
    let cache = tempfile::tempdir().unwrap();
    let dir = reported_fixture(cache.path());
    let html = dir.path().join("report.html");
    let url = format!("file://{}", html.display());
    let profile = tempfile::tempdir().unwrap();

    let mut args = chromium_flags(profile.path());
    args.extend(["--dump-dom".to_owned(), url.clone()]);
    let o = chromium(&args);
    let dom = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        dom.contains("<h1>Benchmark Report: run-basic</h1>"),
        "chromium produced no DOM: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for id in [
        "chart-ttft-cdf",
        "chart-itl-cdf",
        "chart-latency-time",
        "chart-kvbm",
        "chart-kvbm-matched",
        "chart-disk-io",
        "chart-gpu-utilization",
        "chart-gpu-memory",
        "chart-gpu-power-w",
        "chart-gpu-temperature-c",
    ] {
        let at = dom
            .find(&format!("<svg id=\"{id}\""))
            .unwrap_or_else(|| panic!("chart {id} is missing from the page"));
        let svg = &dom[at..at + dom[at..].find("</svg>").unwrap()];
        assert!(
            svg.contains("<polyline") || svg.contains("<circle") || svg.contains("class=\"bar\""),
            "chart {id} draws nothing"
        );
    }
    assert!(
        !dom.contains("-missing\""),
        "a chart says its data is missing"
    );
    // One line per phase in the distributions, one band per phase in the timeline.
    let s = read_json(&fixture().join("summary.json"));
    let phases = s["phase_summaries"].as_array().unwrap();
    for p in phases {
        let name = p["phase"].as_str().unwrap();
        assert!(
            dom.contains(&format!("data-series=\"{name} (n=")),
            "{name} line"
        );
        assert!(
            dom.contains(&format!("class=\"band\" data-phase=\"{name}\"")),
            "{name} band"
        );
        for (col, metric, stat) in [
            ("TTFT p50", "ttft", "p50"),
            ("TTFT p95", "ttft", "p95"),
            ("TTFT p99", "ttft", "p99"),
            ("ITL p50", "itl", "p50"),
            ("TPOT p50", "tpot", "p50"),
            ("e2e p99", "e2e", "p99"),
        ] {
            same_number(
                &cell(&dom, "phase-results-1", name, col),
                &p["latency_ms"][metric][stat],
                &format!("{name} {col}"),
            );
        }
        same_number(
            &cell(&dom, "phase-results-1", name, "req/s"),
            &p["req_per_s"],
            &format!("{name} req/s"),
        );
        same_number(
            &cell(&dom, "phase-results-1", name, "requests"),
            &p["total_requests"],
            &format!("{name} requests"),
        );
    }
    let o = &s["overall_measured"];
    for (row, metric) in [
        ("TTFT", "ttft"),
        ("ITL", "itl"),
        ("TPOT", "tpot"),
        ("e2e", "e2e"),
    ] {
        for stat in ["count", "p50", "p90", "p95", "p99", "p99.9", "max", "mean"] {
            same_number(
                &cell(&dom, "overall-results-2", row, stat),
                &o["latency_ms"][metric][stat],
                &format!("overall {row} {stat}"),
            );
        }
    }
    let row = o["total_requests"].to_string();
    for (col, key) in [
        ("req/s", "req_per_s"),
        ("output tok/s", "output_tokens_per_s"),
        ("input tok/s", "input_tokens_per_s"),
        ("error rate", "error_rate"),
    ] {
        same_number(&cell(&dom, "overall-results-1", &row, col), &o[key], col);
    }

    let shot = dir.path().join("report.png");
    let mut args = chromium_flags(profile.path());
    args.extend([
        "--window-size=1200,3000".to_owned(),
        format!("--screenshot={}", shot.display()),
        url,
    ]);
    let o = chromium(&args);
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a {} byte screenshot is blank",
        png.len()
    );
    let keep = repo().join("target/report-screenshot.png");
    let _ = std::fs::write(&keep, &png);
}

// ---- fabricated runs with known distributions -------------------------------

/// A small deterministic noise source (LCG), in [-1, 1).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let k = (v.len() - 1) as f64 * p / 100.0;
    let (lo, hi) = (k.floor() as usize, k.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (k - lo as f64)
}

fn stats(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "count": s.len(),
        "min": r(pct(&mut s, 0.0)),
        "p50": r(pct(&mut s, 50.0)), "p90": r(pct(&mut s, 90.0)), "p95": r(pct(&mut s, 95.0)),
        "p99": r(pct(&mut s, 99.0)), "p99.9": r(pct(&mut s, 99.9)), "max": r(pct(&mut s, 100.0)),
        "mean": r(s.iter().sum::<f64>() / s.len() as f64),
    })
}

struct FakeRun<'a> {
    id: &'a str,
    tier: &'a str,
    created: String,
    ttft: Vec<f64>,
    tpot: Vec<f64>,
    tags: Vec<String>,
}

/// Writes a run directory as `sparkhost run` would (the fields the
/// analysis reads), with one request row per TTFT value.
fn write_fake_run(root: &Path, r: &FakeRun<'_>) -> PathBuf {
    let dir = root.join(r.id);
    std::fs::create_dir_all(&dir).unwrap();
    let mode = match r.tier {
        "B0" => "off",
        "B1" => "cpu_only",
        _ => "cpu_disk",
    };
    let n = r.ttft.len();
    let e2e: Vec<f64> = r
        .ttft
        .iter()
        .zip(&r.tpot)
        .map(|(a, b)| a + 31.0 * b)
        .collect();
    let duration = 4.0;
    let phase = json!({
        "phase": "main", "include_in_summary": true, "duration_s": duration,
        "total_requests": n, "ok_requests": n, "error_requests": 0, "error_rate": 0.0,
        "errors_by_kind": {}, "req_per_s": n as f64 / duration,
        "input_tokens_per_s": 1000.0, "output_tokens_per_s": 32.0 * n as f64 / duration,
        "latency_ms": {"ttft": stats(&r.ttft), "tpot": stats(&r.tpot), "e2e": stats(&e2e)},
    });
    let summary = json!({
        "run_id": r.id, "created_utc": r.created, "run_valid": true, "invalid_reason": null,
        "invalid_details": [], "scenario": "fake", "workload": {"name": "fake", "version": "0.0.1"},
        "stream": true, "tier_mode": r.tier,
        "kv_mode": {"mode": mode, "tier_mode": r.tier, "kvbm_enabled": mode != "off", "cpu_cache_gb": 8.0, "disk_cache_gb": 32.0},
        "variant_tags": r.tags, "phase_summaries": [phase.clone()],
        "overall_summary": phase, "overall_measured": phase,
        "timing_error_budget": {"schedule_lateness_ms": stats(&[0.1, 0.2])},
        "dispatch": {"planned": n, "recorded": n, "unsent": 0},
    });
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    let config = json!({
        "run_id": r.id, "load": {"kind": "closed", "concurrency": 4},
        "phases": [{"name": "main", "include_in_overall": true}], "params": {},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rows = String::new();
    for (i, (t, p)) in r.ttft.iter().zip(&r.tpot).enumerate() {
        let offsets: Vec<f64> = (0..32).map(|k| t + k as f64 * p).collect();
        rows.push_str(
            &json!({
                "request_index": i, "phase": "main", "ok": true, "ttft_ms": t, "ttfc_ms": t,
                "tpot_ms": p, "latency_ms": t + 31.0 * p, "sent_offset_ms": i as f64 * 10.0,
                "start_ts": "2026-01-01T00:00:00.000Z",
                "chunk_offsets_ms": offsets, "chunk_tokens": vec![1; 32],
            })
            .to_string(),
        );
        rows.push('\n');
    }
    std::fs::write(dir.join("requests.jsonl"), rows).unwrap();
    dir
}

/// `pairs` AB/BA-alternating pairs: baseline TTFT around `a_ms`, treatment
/// around `b_ms`, per-run noise ±`noise` ms; `first_penalty` is added to
/// whichever run of a pair went first.
fn fake_pairs(
    root: &Path,
    pairs: usize,
    a_ms: f64,
    b_ms: f64,
    noise: f64,
    first_penalty: f64,
    seed: u64,
) {
    let mut rng = Noise(seed);
    for i in 0..pairs {
        let ab = i % 2 == 0;
        let mut mk = |tier: &str, base: f64, first: bool, slot: u32| {
            let shift = rng.next() * noise + if first { first_penalty } else { 0.0 };
            let ttft: Vec<f64> = (0..50)
                .map(|k| base + shift + (k % 10) as f64 * 2.0)
                .collect();
            let tpot = vec![5.0 + rng.next() * 0.1; 50];
            write_fake_run(
                root,
                &FakeRun {
                    id: &format!("p{i:02}-{tier}"),
                    tier,
                    created: format!("2026-01-01T00:{:02}:{slot:02}.000Z", i),
                    ttft,
                    tpot,
                    tags: vec![format!("pair={i}")],
                },
            );
        };
        let (sa, sb) = if ab { (0, 30) } else { (30, 0) };
        mk("B1", a_ms, ab, sa);
        mk("B2", b_ms, !ab, sb);
    }
}

fn compare_json(root: &Path, out: &Path, cache: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "compare",
        root.to_str().unwrap(),
        "--group-by",
        "tier_mode",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = sparkhost(&args, cache);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.join("compare.html").is_file());
    read_json(&out.join("compare.json"))
}

fn metric<'a>(c: &'a Value, m: &str) -> &'a Value {
    c["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["metric"] == m)
        .unwrap_or_else(|| panic!("no {m} in {c}"))
}

#[test]
fn compare_recovers_a_known_difference() {
    let cache = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // B2 is 20 ms faster at every percentile; each run is off by up to ±3 ms.
    fake_pairs(root.path(), 8, 100.0, 80.0, 3.0, 0.0, 42);
    let c = compare_json(root.path(), out.path(), cache.path(), &[]);
    assert_eq!(c["baseline"], "B1");
    assert_eq!(c["treatment"], "B2");
    assert_eq!(c["pairing"], "pair_tag");
    assert_eq!(c["pairs"].as_array().unwrap().len(), 8);
    for m in ["ttft_p50", "ttft_p95", "ttft_p99"] {
        let r = metric(&c, m);
        let (lo, hi) = (
            r["ci"]["low"].as_f64().unwrap(),
            r["ci"]["high"].as_f64().unwrap(),
        );
        assert!(
            lo <= -20.0 && -20.0 <= hi,
            "{m}: CI [{lo}, {hi}] misses -20"
        );
        assert!(hi < 0.0, "{m}: CI [{lo}, {hi}] includes 0");
        assert_eq!(r["significant"], true);
        assert_eq!(r["effect"], "better");
        assert_eq!(r["ci_method"], "paired_bootstrap");
    }
    let v = c["verdict"].as_str().unwrap();
    assert!(v.starts_with("B2 lowers TTFT p95 by "), "{v}");
    assert!(v.contains("95% CI ["), "{v}");
    assert!(v.ends_with("8 pairs."), "{v}");
    assert_eq!(metric(&c, "ttft_p95")["order_effect"]["status"], "ok");
    assert!(c["reason_codes"].as_array().unwrap().is_empty(), "{c}");
    // Seeded: the same inputs give the same interval.
    let out2 = tempfile::tempdir().unwrap();
    let c2 = compare_json(root.path(), out2.path(), cache.path(), &[]);
    assert_eq!(metric(&c, "ttft_p95")["ci"], metric(&c2, "ttft_p95")["ci"]);
    let html = std::fs::read_to_string(out.path().join("compare.html")).unwrap();
    assert!(html.contains("<svg id=\"forest\""));
    assert!(html.contains("id=\"verdict\">B2 lowers TTFT p95 by "));
}

#[test]
fn compare_reports_no_difference_on_identical_inputs() {
    let cache = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Identical numbers in both groups: every pair difference is exactly 0.
    fake_pairs(root.path(), 4, 100.0, 100.0, 0.0, 0.0, 1);
    let c = compare_json(root.path(), out.path(), cache.path(), &[]);
    for m in [
        "ttft_p50",
        "ttft_p95",
        "ttft_p99",
        "tpot_p95",
        "output_tok_s",
    ] {
        let r = metric(&c, m);
        assert_eq!(r["significant"], false, "{m}: {r}");
        assert_eq!(r["effect"], "none");
    }
    let v = c["verdict"].as_str().unwrap();
    assert!(
        v.starts_with("No difference in TTFT p95 between B2 and B1"),
        "{v}"
    );

    // Same distribution, independent noise: the interval spans 0.
    let root = tempfile::tempdir().unwrap();
    fake_pairs(root.path(), 8, 100.0, 100.0, 3.0, 0.0, 7);
    let c = compare_json(root.path(), out.path(), cache.path(), &[]);
    let r = metric(&c, "ttft_p95");
    assert_eq!(r["significant"], false, "{r}");
    assert!(
        c["verdict"]
            .as_str()
            .unwrap()
            .starts_with("No clear difference in TTFT p95")
    );
}

#[test]
fn compare_flags_an_order_effect_and_bootstraps_one_pair() {
    let cache = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // No treatment effect, but whichever run goes first is 15 ms slower.
    fake_pairs(root.path(), 8, 100.0, 100.0, 1.0, 15.0, 3);
    let c = compare_json(root.path(), out.path(), cache.path(), &[]);
    let oe = &metric(&c, "ttft_p95")["order_effect"];
    assert_eq!(oe["status"], "suspect", "{oe}");
    let e = oe["first_run_penalty"].as_f64().unwrap();
    assert!((e - 15.0).abs() < 2.0, "{e}");
    assert!(
        c["reason_codes"]
            .as_array()
            .unwrap()
            .contains(&json!("ORDER_EFFECT_SUSPECT"))
    );
    assert!(
        c["verdict"]
            .as_str()
            .unwrap()
            .contains("Order effect suspected")
    );

    // One pair: latency percentiles fall back to resampling requests.
    let root = tempfile::tempdir().unwrap();
    fake_pairs(root.path(), 1, 100.0, 80.0, 0.0, 0.0, 5);
    let c = compare_json(
        root.path(),
        out.path(),
        cache.path(),
        &["--resamples", "2000"],
    );
    let r = metric(&c, "ttft_p95");
    assert_eq!(r["ci_method"], "request_bootstrap");
    let (lo, hi) = (
        r["ci"]["low"].as_f64().unwrap(),
        r["ci"]["high"].as_f64().unwrap(),
    );
    assert!(lo <= -20.0 && -20.0 <= hi, "[{lo}, {hi}]");
    assert!(
        c["reason_codes"]
            .as_array()
            .unwrap()
            .contains(&json!("INSUFFICIENT_PAIRS"))
    );
    assert_eq!(metric(&c, "output_tok_s")["ci"], Value::Null);
}

#[test]
fn summarize_writes_one_row_per_run() {
    let cache = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    fake_pairs(root.path(), 2, 100.0, 80.0, 0.0, 0.0, 9);
    copy_dir(&fixture(), &root.path().join("sub/run-basic"));
    let out = tempfile::tempdir().unwrap();
    let glob = format!("{}/p0*", root.path().display());
    let o = sparkhost(
        &[
            "summarize",
            &glob,
            root.path().join("sub").to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--slo",
            "ttft_p95=100ms",
        ],
        cache.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("run-basic"), "{stdout}");
    let mut r = csv_rows(&out.path().join("summary.csv"));
    let header = r.remove(0);
    assert_eq!(r.len(), 5, "4 fake runs + run-basic");
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}: {header:?}"))
    };
    let basic = r.iter().find(|x| x[col("run_id")] == "run-basic").unwrap();
    assert_eq!(basic[col("valid")], "true");
    assert_eq!(basic[col("tier_mode")], "B2");
    assert_eq!(basic[col("replay.onboard_blocks_d2d")], "18");
    assert_eq!(basic[col("replay.matched_tokens")], "1536");
    assert_eq!(basic[col("replay.disk_read_mib")], "9");
    let s = read_json(&fixture().join("summary.json"));
    assert_eq!(
        basic[col("ttft_p95_ms")].parse::<f64>().unwrap(),
        s["overall_measured"]["latency_ms"]["ttft"]["p95"]
            .as_f64()
            .unwrap()
    );
    let b2 = r.iter().find(|x| x[col("run_id")] == "p00-B2").unwrap();
    assert_eq!(b2[col("slo_met")], "true");
    let b1 = r.iter().find(|x| x[col("run_id")] == "p00-B1").unwrap();
    assert_eq!(b1[col("slo_met")], "false");
}

/// A minimal CSV reader for the harness's own files (quoted fields allowed).
fn csv_rows(p: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(p).unwrap();
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut row = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => row.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        row.push(cur);
        rows.push(row);
    }
    rows
}

#[test]
fn report_without_telemetry_says_not_collected() {
    let cache = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = write_fake_run(
        root.path(),
        &FakeRun {
            id: "plain",
            tier: "B1",
            created: "2026-01-01T00:00:00.000Z".into(),
            ttft: vec![10.0, 20.0, 30.0],
            tpot: vec![5.0; 3],
            tags: vec![],
        },
    );
    let o = report(&dir, &default_generator(), cache.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for want in [
        "## KVBM Metrics Signal\n\nNot collected",
        "KVBM rollup: not collected.",
        "## GPU Telemetry\n\nNot collected",
        "`verdict.json` is absent",
        "Disk and process I/O per phase: not collected.",
    ] {
        assert!(md.contains(want), "report.md lacks {want:?}:\n{md}");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for id in [
        "chart-kvbm-missing",
        "chart-disk-io-missing",
        "chart-gpu-missing",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(html.contains("<svg id=\"chart-ttft-cdf\""));

    // A workload is not a report generator; the error says so.
    let o = report(&dir, &synthetic(), cache.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("not a sparkhost report generator"),
        "{}",
        text(&o)
    );
}

// ---- a server whose latency grows with load ----------------------------------

/// OpenAI-compatible enough for `sparkhost run --stream`: TTFT is
/// `base + per_request × (requests in flight)`, then 4 tokens 2 ms apart.
pub(crate) struct LoadServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl LoadServer {
    pub fn start(base: Duration, per_request: Duration) -> LoadServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let s = stop.clone();
        let accept = thread::spawn(move || {
            let mut workers = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let f = in_flight.clone();
                        let st = s.clone();
                        workers.push(thread::spawn(move || {
                            serve(conn, &f, &st, base, per_request)
                        }));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        LoadServer {
            addr,
            stop,
            accept: Some(accept),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LoadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    in_flight: &AtomicUsize,
    stop: &AtomicBool,
    base: Duration,
    per: Duration,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_nodelay(true);
    let mut r = BufReader::new(&conn);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let mut w = &conn;
    if path == "/v1/models" {
        let b = json!({"object": "list", "data": [{"id": "load", "object": "model"}]}).to_string();
        let _ = write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        );
        let _ = conn.shutdown(Shutdown::Write);
        return;
    }
    let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let wait = base + per * n as u32;
    let end = Instant::now() + wait;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    let mut event = |data: String| {
        let payload = format!("data: {data}\n\n");
        let _ = write!(w, "{:x}\r\n{payload}\r\n", payload.len());
    };
    for i in 0..4 {
        if i > 0 {
            thread::sleep(Duration::from_millis(2));
        }
        event(
            json!({"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": format!(" t{i}"), "finish_reason": if i == 3 { json!("length") } else { Value::Null }}]})
                .to_string(),
        );
    }
    event(json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}}).to_string());
    // Out of flight before the client can see the end, so its next request
    // never counts this one.
    in_flight.fetch_sub(1, Ordering::SeqCst);
    event("[DONE]".into());
    let _ = w.write_all(b"0\r\n\r\n");
    let _ = conn.shutdown(Shutdown::Write);
}

#[test]
fn search_finds_the_highest_concurrency_meeting_the_slo() {
    // TTFT ≈ 10 ms + 30 ms × in flight: concurrency c gives TTFT ≈ 10 + 30c,
    // so ttft_p95 ≤ 115 ms holds up to c = 3 (100 ms) and fails from c = 4 (130 ms).
    let server = LoadServer::start(Duration::from_millis(10), Duration::from_millis(30));
    let cache = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let wasm = synthetic();
    let endpoint = server.endpoint();
    let o = sparkhost(
        &[
            "search",
            wasm.to_str().unwrap(),
            "--slo",
            "ttft_p95=115ms,error_rate=0",
            "--max",
            "16",
            "--results-root",
            root.path().to_str().unwrap(),
            "--",
            "--endpoint",
            &endpoint,
            "--stream",
            "--requests",
            "12",
            "--warmup",
            "0",
            "--max-tokens",
            "4",
            "--param",
            "short-range=16:32",
            "--engine-max-input-tokens",
            "0",
            "--kv-mode",
            "off",
            "--no-report",
        ],
        cache.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = read_json(&root.path().join("search.json"));
    assert_eq!(s["best"], 3.0, "{s}");
    assert_eq!(s["first_failing"], 4.0, "{s}");
    assert_eq!(s["outcome"], "found");
    let steps = s["steps"].as_array().unwrap();
    let tried: Vec<f64> = steps.iter().map(|x| x["value"].as_f64().unwrap()).collect();
    assert_eq!(tried, vec![1.0, 2.0, 4.0, 3.0]);
    // Every run is kept as evidence.
    for st in steps {
        assert!(
            Path::new(st["run_dir"].as_str().unwrap())
                .join("summary.json")
                .is_file()
        );
    }
    assert!(root.path().join("summary.csv").is_file());
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("highest concurrency meeting ttft_p95=115ms,error_rate=0: 3; 4 misses")
    );
}

#[test]
fn matrix_runs_every_cell_and_resumes() {
    let server = LoadServer::start(Duration::from_millis(5), Duration::from_millis(1));
    let cache = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let results = root.path().join("tree");
    let toml = format!(
        r#"
name = "t"
repeats = 2
concurrency = [1, 2]
args = ["--endpoint", "{}", "--stream", "--requests", "4", "--warmup", "0", "--engine-max-input-tokens", "0", "--kv-mode", "off", "--no-report"]
[params]
max-tokens = [4]
short-range = "16:32"
[[workload]]
path = "{}"
label = "syn"
"#,
        server.endpoint(),
        synthetic().display()
    );
    let file = root.path().join("m.toml");
    std::fs::write(&file, toml).unwrap();
    let args = [
        "matrix",
        file.to_str().unwrap(),
        "--results-root",
        results.to_str().unwrap(),
    ];
    let o = sparkhost(&args, cache.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let idx = read_json(&results.join("matrix_index.json"));
    let cells = idx["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    assert!(
        cells
            .iter()
            .all(|c| c["status"] == "valid" && c["resumed"] == false),
        "{idx}"
    );
    assert_eq!(cells[0]["id"], "syn__c1__rep1");
    let csv = csv_rows(&results.join("summary.csv"));
    assert_eq!(csv.len(), 5);
    let s = read_json(&results.join("syn__c2__rep2/summary.json"));
    let tags: Vec<&str> = s["variant_tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["matrix=t", "cell=syn__c2__rep2", "repeat=2"]);

    // An interrupted cell (no summary.json) is set aside and run again; done cells are skipped.
    let cell = results.join("syn__c2__rep1");
    std::fs::remove_file(cell.join("summary.json")).unwrap();
    let o = sparkhost(&args, cache.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let idx = read_json(&results.join("matrix_index.json"));
    let resumed: Vec<bool> = idx["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["resumed"].as_bool().unwrap())
        .collect();
    assert_eq!(resumed, [true, false, true, true]);
    assert!(cell.join("summary.json").is_file());
    assert!(
        results
            .join("syn__c2__rep1.incomplete-1/requests.jsonl")
            .is_file()
    );
}
