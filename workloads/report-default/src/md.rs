//! `report.md`: the seed harness's sections (status, fingerprint, KV
//! configuration, overall, per phase, KVBM signal, request identity,
//! anomalies and limitations) plus the timing-error budget and the verdict.

use std::fmt::Write as _;

use serde_json::Value;

use crate::data::{Run, io_mib, kv};
use crate::fmt::{DASH, cell, fixed, json_num, opt, pct, text, yes_no};

/// Latency metrics in the order they are reported, with their labels.
pub const LATENCY: [(&str, &str); 8] = [
    ("ttft", "TTFT"),
    ("ttfc", "TTFC"),
    ("itl", "ITL"),
    ("tpot", "TPOT"),
    ("e2e", "e2e"),
    ("ttft_from_intended", "TTFT from intended send"),
    ("e2e_from_intended", "e2e from intended send"),
    ("schedule_lateness", "schedule lateness"),
];
pub const STATS: [&str; 8] = ["count", "p50", "p90", "p95", "p99", "p99.9", "max", "mean"];

/// KVBM counters that exist in Dynamo, with labels.
pub const KVBM: [(&str, &str); 6] = [
    ("offload_blocks_d2h", "offload d2h GPU→CPU"),
    ("offload_blocks_h2d", "offload h2d CPU→disk"),
    ("offload_blocks_d2d", "offload d2d GPU→disk"),
    ("onboard_blocks_h2d", "onboard h2d CPU→GPU"),
    ("onboard_blocks_d2d", "onboard d2d disk→GPU"),
    ("matched_tokens", "matched tokens"),
];

pub fn is_replay(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("replay") || n.contains("rehydrate")
}

/// Sum of a KVBM counter over phases (`None` when no phase has it).
pub fn kv_sum<'a>(deltas: impl Iterator<Item = &'a Value>, short: &str) -> Option<f64> {
    let mut any = false;
    let mut sum = 0.0;
    for d in deltas {
        if let Some(v) = kv(d, short) {
            any = true;
            sum += v;
        }
    }
    any.then_some(sum)
}

/// What the KVBM counters say, in sentences; empty when not collected.
pub fn kvbm_signals(run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    if !run.kvbm_collected {
        return out;
    }
    let replay: Vec<&Value> = run
        .phases
        .iter()
        .filter(|p| is_replay(&p.name))
        .filter_map(|p| p.kvbm.as_ref())
        .collect();
    let all: Vec<&Value> = run.phases.iter().filter_map(|p| p.kvbm.as_ref()).collect();
    let scope = if replay.is_empty() {
        "over all phases (no replay phase)"
    } else {
        "in replay phases"
    };
    let pick = if replay.is_empty() { &all } else { &replay };
    let d2d = kv_sum(pick.iter().copied(), "onboard_blocks_d2d");
    let h2d = kv_sum(pick.iter().copied(), "onboard_blocks_h2d");
    let matched = kv_sum(pick.iter().copied(), "matched_tokens");
    let to_disk = match (
        kv_sum(all.iter().copied(), "offload_blocks_h2d"),
        kv_sum(all.iter().copied(), "offload_blocks_d2d"),
    ) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    };
    out.push(match d2d {
        Some(n) if n > 0.0 => format!(
            "Disk rehydration {scope}: **detected** — {} blocks onboarded disk→GPU (`kvbm_onboard_blocks_d2d`).",
            fixed(n, 0)
        ),
        Some(_) => format!(
            "Disk rehydration {scope}: not detected (`kvbm_onboard_blocks_d2d` = 0)."
        ),
        None => format!("Disk rehydration {scope}: unknown (no `kvbm_onboard_blocks_d2d`)."),
    });
    out.push(match h2d {
        Some(n) if n > 0.0 => format!(
            "CPU-tier reuse {scope}: {} blocks onboarded CPU→GPU (h2d). This is host-memory reuse, not disk rehydration.",
            fixed(n, 0)
        ),
        Some(_) => format!("CPU-tier reuse {scope}: none (onboard h2d = 0)."),
        None => format!("CPU-tier reuse {scope}: unknown."),
    });
    out.push(match to_disk {
        Some(n) if n > 0.0 => format!(
            "Writes to the disk tier over the run: {} blocks (offload h2d + d2d).",
            fixed(n, 0)
        ),
        Some(_) => "Writes to the disk tier over the run: none.".to_owned(),
        None => "Writes to the disk tier: unknown.".to_owned(),
    });
    out.push(match matched {
        Some(n) if n > 0.0 => format!("Prefix reuse {scope}: {} matched tokens.", fixed(n, 0)),
        Some(_) => format!(
            "Prefix reuse {scope}: **no matched tokens** — without cross-request matching KVBM onboards nothing, so no latency change can be attributed to a KV tier."
        ),
        None => format!("Prefix reuse {scope}: unknown."),
    });
    out
}

fn table(s: &mut String, header: &[&str], rows: &[Vec<String>]) {
    table_aligned(s, header, rows, true);
}

/// `numeric`: columns after the first are right-aligned.
fn table_aligned(s: &mut String, header: &[&str], rows: &[Vec<String>], numeric: bool) {
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(
        s,
        "|{}|",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 || !numeric { "---" } else { "---:" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} |",
            r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    s.push('\n');
}

fn load_text(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return DASH.to_owned();
    };
    match v.get("kind").and_then(Value::as_str) {
        Some("closed") => format!(
            "closed loop, concurrency {}",
            json_num(v.get("concurrency"))
        ),
        Some("gamma") => format!(
            "open loop, gamma arrivals at {} req/s (shape {})",
            json_num(v.get("rate")),
            json_num(v.get("shape"))
        ),
        Some(k) => format!(
            "open loop, {k} arrivals at {} req/s",
            json_num(v.get("rate"))
        ),
        None => text(Some(v)),
    }
}

fn params_text(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", text(Some(v))))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".to_owned(),
    }
}

pub fn render(run: &Run) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark Report: {}\n", run.run_id);
    simulated(&mut s, run);
    status(&mut s, run);
    fingerprint(&mut s, run);
    kv_config(&mut s, run);
    overall(&mut s, run);
    phases(&mut s, run);
    kvbm(&mut s, run);
    disk_ceiling(&mut s, run);
    gpu(&mut s, run);
    identity(&mut s, run);
    timing(&mut s, run);
    verdict(&mut s, run);
    cross_checks(&mut s, run);
    anomalies(&mut s, run);
    let _ = writeln!(
        s,
        "---\nGenerated by {} {} from `summary.json`{}.",
        crate::NAME,
        crate::VERSION,
        [
            ("config.json", "config.json"),
            ("manifest.json", "manifest.json"),
            ("requests.jsonl", "requests.jsonl"),
            ("request_manifest.jsonl", "request_manifest.jsonl"),
            ("verdict.json", "verdict.json"),
        ]
        .iter()
        .filter(|(f, _)| run.files.iter().any(|x| x == f))
        .map(|(_, n)| format!(", `{n}`"))
        .collect::<String>()
    );
    s
}

/// A simulated result must never pass for a measured one: first thing
/// under the title, whenever `summary.json` names a simulator.
fn simulated(s: &mut String, run: &Run) {
    let Some(sim) = run.s(&["simulator"]).filter(|v| v.is_object()) else {
        return;
    };
    let _ = writeln!(
        s,
        "**SIMULATED RUN — not a measurement of a serving engine.** The endpoint was sparkhost's simulated engine (profile `{}`, tier mode {}, KVBM names {}): every latency below comes from its model (`kvbm/README.md`); only its disk tier's I/O was real.\n",
        text(sim.get("profile").and_then(|p| p.get("name"))),
        text(sim.get("tier_mode")),
        text(sim.get("naming")),
    );
}

fn status(s: &mut String, run: &Run) {
    s.push_str("## Run Status\n\n");
    let _ = writeln!(s, "- Created: {}", text(run.s(&["created_utc"])));
    let _ = writeln!(
        s,
        "- Workload: {} {} (scenario `{}`)",
        text(run.s(&["workload", "name"])),
        text(run.s(&["workload", "version"])),
        text(run.s(&["scenario"]))
    );
    let _ = writeln!(
        s,
        "- Model: {} at {}",
        text(run.s(&["model_id"])),
        text(run.config.get("base_url"))
    );
    if run.valid() {
        s.push_str("- Valid: **yes**\n");
    } else {
        let _ = writeln!(
            s,
            "- Valid: **no** — `{}`",
            text(run.s(&["invalid_reason"]))
        );
        if let Some(d) = run.s(&["invalid_details"]).and_then(Value::as_array) {
            for x in d {
                let _ = writeln!(s, "  - {}", text(Some(x)));
            }
        }
    }
    if let Some(d) = run.s(&["dispatch"]) {
        let _ = writeln!(
            s,
            "- Requests: {} planned, {} recorded, {} never sent; {} phases completed",
            json_num(d.get("planned")),
            json_num(d.get("recorded")),
            json_num(d.get("unsent")),
            json_num(d.get("phases_completed"))
        );
    }
    s.push('\n');
}

fn fingerprint(s: &mut String, run: &Run) {
    s.push_str("## Platform + Software Fingerprint\n\n");
    let m = &run.manifest;
    let h = m.get("host");
    let rows = vec![
        vec![
            "sparkhost".to_owned(),
            format!(
                "{} (git {}, wasmtime {})",
                text(m.get("sparkhost_version")),
                text(m.get("sparkhost_git_sha")),
                text(m.get("wasmtime_version"))
            ),
        ],
        vec![
            "server build".to_owned(),
            match m.get("server_build").filter(|v| !v.is_null()) {
                Some(b) => format!(
                    "Server header {}; /version {}",
                    text(b.get("server_header")),
                    match b.get("version").filter(|v| !v.is_null()) {
                        Some(v) if v.is_string() => text(Some(v)),
                        Some(v) => format!("`{v}`"),
                        None => format!("not served (HTTP {})", text(b.get("version_status"))),
                    }
                ),
                // Absent: written before sparkhost recorded it; null: the
                // server said nothing about its build.
                None if m.get("server_build").is_none() => "not recorded".to_owned(),
                None => "not exposed by the server".to_owned(),
            },
        ],
        vec![
            "stack config".to_owned(),
            m.get("stack_config_sha256")
                .filter(|v| !v.is_null())
                .map(|v| format!("sha256 `{}`", text(Some(v))))
                .unwrap_or_else(|| DASH.to_owned()),
        ],
        vec![
            "device profile".to_owned(),
            m.get("device_profile_sha256")
                .filter(|v| !v.is_null())
                .map(|v| format!("sha256 `{}`", text(Some(v))))
                .unwrap_or_else(|| DASH.to_owned()),
        ],
        vec![
            "host".to_owned(),
            match h {
                Some(h) => format!(
                    "{}, {} {}, kernel {}, {} CPUs",
                    text(h.get("hostname")),
                    text(h.get("os")),
                    text(h.get("arch")),
                    text(h.get("kernel")),
                    text(h.get("cpus"))
                ),
                None => DASH.to_owned(),
            },
        ],
        vec![
            "workload".to_owned(),
            format!(
                "{} {} ({}), sha256 `{}`",
                text(m.pointer("/workload/name")),
                text(m.pointer("/workload/version")),
                text(m.pointer("/workload/wit")),
                text(m.pointer("/workload/sha256"))
            ),
        ],
        vec!["params".to_owned(), params_text(m.get("params"))],
        vec!["seed".to_owned(), text(m.get("seed"))],
        vec!["tokenizer".to_owned(), text(m.get("tokenizer"))],
        vec![
            "transport".to_owned(),
            match run.config.get("client_request_parameters") {
                Some(c) => format!(
                    "{}{}, timeout {} s",
                    if c.get("stream").and_then(Value::as_bool) == Some(true) {
                        "streamed (SSE)"
                    } else {
                        "unary"
                    },
                    if c.get("stream_usage").and_then(Value::as_bool) == Some(true) {
                        " with usage"
                    } else {
                        ""
                    },
                    json_num(c.get("timeout_s"))
                ),
                None => DASH.to_owned(),
            },
        ],
        vec!["load".to_owned(), {
            let phases: Vec<String> = run
                .config
                .get("phases")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|p| format!("{}: {}", text(p.get("name")), load_text(p.get("load"))))
                        .collect()
                })
                .unwrap_or_default();
            if phases.is_empty() {
                load_text(run.config.get("load"))
            } else {
                format!(
                    "{} by default; {}",
                    load_text(run.config.get("load")),
                    phases.join("; ")
                )
            }
        }],
        vec![
            "model".to_owned(),
            format!(
                "requested {}, resolved {}",
                text(m.get("model_id_requested")),
                text(m.get("model_id_resolved"))
            ),
        ],
    ];
    table_aligned(s, &["what", "value"], &rows, false);
}

/// The KV reset and warm-up that preceded the measured phases.
fn hygiene(s: &mut String, run: &Run) {
    if let Some(r) = run.s(&["kv_reset"]).filter(|v| v.is_object()) {
        let _ = writeln!(
            s,
            "- KV reset before the first phase: {} `{}` → {} (status {}, {} ms){}",
            text(r.get("method")),
            text(r.get("target")),
            if r.get("ok").and_then(Value::as_bool) == Some(true) {
                "ok"
            } else {
                "FAILED"
            },
            text(r.get("status")),
            json_num(r.get("elapsed_ms")),
            r.get("error")
                .filter(|e| !e.is_null())
                .map(|e| format!(": {}", text(Some(e))))
                .unwrap_or_default()
        );
    }
    if let Some(p) = run.s(&["prime"]).filter(|v| v.is_object()) {
        let _ = writeln!(
            s,
            "- Warm-up: {} distinct filler requests ({} prompt tokens, {} failed, {} s) before the first phase; not in requests.jsonl",
            json_num(p.get("requests")),
            json_num(p.get("prompt_tokens_sent")),
            json_num(p.get("failed")),
            json_num(p.get("elapsed_s"))
        );
    }
}

fn kv_config(s: &mut String, run: &Run) {
    s.push_str("## KV Configuration\n\n");
    let kvm = run.s(&["kv_mode"]);
    let g = |k: &str| text(kvm.and_then(|v| v.get(k)));
    let _ = writeln!(
        s,
        "- Tier: {}, mode `{}`, KVBM enabled: {}",
        text(run.s(&["tier_mode"])),
        g("mode"),
        match kvm
            .and_then(|v| v.get("kvbm_enabled"))
            .and_then(Value::as_bool)
        {
            Some(b) => yes_no(b).to_owned(),
            None => DASH.to_owned(),
        }
    );
    let _ = writeln!(
        s,
        "- CPU cache: {} GB; disk cache: {} GB",
        g("cpu_cache_gb"),
        g("disk_cache_gb")
    );
    let tags = run
        .s(&["variant_tags"])
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|t| text(Some(t))).collect::<Vec<_>>())
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "- Variant tags: {}",
        if tags.is_empty() {
            "none".to_owned()
        } else {
            tags.join(", ")
        }
    );
    s.push_str("- These are the labels given to `sparkhost run`; the server's configuration is not verified from them.\n");
    hygiene(s, run);
    s.push('\n');
}

fn latency_rows(v: &Value) -> Vec<Vec<String>> {
    LATENCY
        .iter()
        .filter_map(|(k, label)| {
            let d = v.get("latency_ms")?.get(k)?;
            Some(
                std::iter::once((*label).to_owned())
                    .chain(STATS.iter().map(|st| json_num(d.get(st))))
                    .collect(),
            )
        })
        .collect()
}

fn overall(s: &mut String, run: &Run) {
    s.push_str("## Overall Results\n\n");
    let o = run.overall();
    if o.is_null() {
        s.push_str("No overall statistics in `summary.json`.\n\n");
        return;
    }
    let measured: Vec<&str> = run
        .phases
        .iter()
        .filter(|p| p.include)
        .map(|p| p.name.as_str())
        .collect();
    let _ = writeln!(
        s,
        "Over the measured phases ({}){}.\n",
        if measured.is_empty() {
            DASH.to_owned()
        } else {
            measured.join(", ")
        },
        if run.valid() {
            ""
        } else {
            "; **the run is invalid**, so these numbers are shown for diagnosis only"
        }
    );
    table(
        s,
        &[
            "requests",
            "ok",
            "errors",
            "error rate",
            "req/s",
            "input tok/s",
            "output tok/s",
            "cached tokens",
            "duration s",
        ],
        &[vec![
            json_num(o.get("total_requests")),
            json_num(o.get("ok_requests")),
            json_num(o.get("error_requests")),
            json_num(o.get("error_rate")),
            json_num(o.get("req_per_s")),
            json_num(o.get("input_tokens_per_s")),
            json_num(o.get("output_tokens_per_s")),
            json_num(o.get("cached_tokens_total")),
            json_num(o.get("duration_s")),
        ]],
    );
    let mut header = vec!["latency (ms)"];
    header.extend(STATS);
    table(s, &header, &latency_rows(o));
    let errors = o
        .get("errors_by_kind")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty());
    let _ = writeln!(
        s,
        "Errors by kind: {}\n",
        errors
            .map(|m| m
                .iter()
                .map(|(k, v)| format!("{k} {}", json_num(Some(v))))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_else(|| "none".to_owned())
    );
    if run.kvbm_collected {
        let all: Vec<&Value> = run.phases.iter().filter_map(|p| p.kvbm.as_ref()).collect();
        let off = [
            "offload_blocks_d2h",
            "offload_blocks_h2d",
            "offload_blocks_d2d",
        ]
        .iter()
        .filter_map(|k| kv_sum(all.iter().copied(), k))
        .sum::<f64>();
        let on = ["onboard_blocks_h2d", "onboard_blocks_d2d"]
            .iter()
            .filter_map(|k| kv_sum(all.iter().copied(), k))
            .sum::<f64>();
        let _ = writeln!(
            s,
            "KVBM rollup over all phases: offload {} blocks, onboard {} blocks, matched tokens {}.\n",
            fixed(off, 0),
            fixed(on, 0),
            opt(kv_sum(all.iter().copied(), "matched_tokens"), 0)
        );
    } else {
        s.push_str("KVBM rollup: not collected.\n\n");
    }
    if let Some(g) = run.s(&["goodput"]) {
        let _ = writeln!(
            s,
            "Goodput under `{}`: {} good requests of {} ({}/s); SLO met: **{}**.\n",
            text(g.get("slo")),
            json_num(g.get("good_requests")),
            json_num(g.get("requests")),
            json_num(g.get("goodput_req_per_s")),
            text(g.get("slo_met"))
        );
        // Per-token bounds over a run without streamed tokens: said, not
        // counted as missed.
        let na: Vec<String> = g
            .get("checks")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter(|c| c.get("applicable").and_then(Value::as_bool) == Some(false))
                    .map(|c| format!("`{}`", text(c.get("name"))))
                    .collect()
            })
            .unwrap_or_default();
        if !na.is_empty() {
            let _ = writeln!(
                s,
                "Not applicable (no request had streamed tokens to time): {}.\n",
                na.join(", ")
            );
        }
    }
}

fn lat(v: &Value, m: &str, st: &str) -> String {
    json_num(
        v.get("latency_ms")
            .and_then(|l| l.get(m))
            .and_then(|d| d.get(st)),
    )
}

fn phases(s: &mut String, run: &Run) {
    s.push_str("## Phase Results\n\n");
    if run.phases.is_empty() {
        s.push_str("No phases.\n\n");
        return;
    }
    let rows: Vec<Vec<String>> = run
        .phases
        .iter()
        .map(|p| {
            let v = &p.summary;
            vec![
                p.name.clone(),
                yes_no(p.include).to_owned(),
                json_num(v.get("total_requests")),
                json_num(v.get("error_requests")),
                json_num(v.get("req_per_s")),
                json_num(v.get("output_tokens_per_s")),
                lat(v, "ttft", "p50"),
                lat(v, "ttft", "p95"),
                lat(v, "ttft", "p99"),
                lat(v, "itl", "p50"),
                lat(v, "tpot", "p50"),
                lat(v, "e2e", "p99"),
            ]
        })
        .collect();
    table(
        s,
        &[
            "phase",
            "in overall",
            "requests",
            "errors",
            "req/s",
            "out tok/s",
            "TTFT p50",
            "TTFT p95",
            "TTFT p99",
            "ITL p50",
            "TPOT p50",
            "e2e p99",
        ],
        &rows,
    );
    if run.io_collected || run.kvbm_collected {
        let rows: Vec<Vec<String>> = run
            .phases
            .iter()
            .map(|p| {
                let io = p.io.as_ref().map(io_mib).unwrap_or([None; 4]);
                let k = p.kvbm.as_ref();
                let sum = |keys: &[&str]| {
                    k.and_then(|k| {
                        let v: Vec<f64> = keys.iter().filter_map(|x| kv(k, x)).collect();
                        (!v.is_empty()).then(|| v.iter().sum::<f64>())
                    })
                };
                vec![
                    p.name.clone(),
                    opt(io[0], 3),
                    opt(io[1], 3),
                    opt(io[2], 3),
                    opt(io[3], 3),
                    opt(
                        sum(&[
                            "offload_blocks_d2h",
                            "offload_blocks_h2d",
                            "offload_blocks_d2d",
                        ]),
                        0,
                    ),
                    opt(sum(&["onboard_blocks_h2d", "onboard_blocks_d2d"]), 0),
                    opt(k.and_then(|k| kv(k, "matched_tokens")), 0),
                ]
            })
            .collect();
        table(
            s,
            &[
                "phase",
                "disk read MiB",
                "disk write MiB",
                "proc read MiB",
                "proc write MiB",
                "offload blocks",
                "onboard blocks",
                "matched tokens",
            ],
            &rows,
        );
    } else {
        s.push_str("Disk and process I/O per phase: not collected.\n\n");
    }
}

fn kvbm(s: &mut String, run: &Run) {
    s.push_str("## KVBM Metrics Signal\n\n");
    if !run.kvbm_collected {
        s.push_str("Not collected: the run directory has no KVBM phase deltas (`phase_deltas/phase_<name>_kvbm_metrics_delta.json`), so nothing can be said about offload, onboarding or reuse.\n\n");
        return;
    }
    let mut header = vec!["phase", "available"];
    header.extend(KVBM.iter().map(|(_, l)| *l));
    header.extend(["host hit rate", "disk hit rate"]);
    let rows: Vec<Vec<String>> = run
        .phases
        .iter()
        .map(|p| {
            let mut r = vec![p.name.clone()];
            match &p.kvbm {
                None => {
                    r.push("not collected".into());
                    r.extend(std::iter::repeat_n(DASH.to_owned(), KVBM.len() + 2));
                }
                Some(d) => {
                    let avail = d.get("available").and_then(Value::as_bool).unwrap_or(true);
                    r.push(if avail {
                        "yes".to_owned()
                    } else {
                        format!("no ({})", text(d.get("reason")))
                    });
                    for (k, _) in KVBM {
                        r.push(opt(kv(d, k), 0));
                    }
                    for g in ["host_cache_hit_rate", "disk_cache_hit_rate"] {
                        r.push(json_num(
                            d.get(format!("kvbm_{g}_after").as_str())
                                .or_else(|| d.get(format!("{g}_after").as_str())),
                        ));
                    }
                }
            }
            r
        })
        .collect();
    table(s, &header, &rows);
    for line in kvbm_signals(run) {
        let _ = writeln!(s, "- {line}");
    }
    s.push('\n');
}

fn gpu(s: &mut String, run: &Run) {
    s.push_str("## GPU Telemetry\n\n");
    let Some(g) = &run.gpu else {
        s.push_str("Not collected: the run directory has no `telemetry/gpu*.csv`.\n\n");
        return;
    };
    let _ = writeln!(
        s,
        "From {}; time axis {}.\n",
        g.files
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", "),
        if g.aligned {
            "aligned to the run's start"
        } else {
            "relative to the first sample"
        }
    );
    let mut rows = Vec::new();
    for (group, series) in &g.groups {
        for se in series {
            let n = se.points.len();
            let mean = se.points.iter().map(|p| p.1).sum::<f64>() / n.max(1) as f64;
            let max = se
                .points
                .iter()
                .map(|p| p.1)
                .fold(f64::NEG_INFINITY, f64::max);
            rows.push(vec![
                se.name.clone(),
                group.clone(),
                n.to_string(),
                fixed(mean, 2),
                fixed(max, 2),
            ]);
        }
    }
    table(s, &["series", "group", "samples", "mean", "max"], &rows);
}

/// The KV disk's achieved read bandwidth against its measured ceiling
/// (`--device-profile`), and where the host tier lives on a DGX Spark.
fn disk_ceiling(s: &mut String, run: &Run) {
    let Some(c) = run.s(&["disk_ceiling"]).filter(|v| v.is_object()) else {
        return;
    };
    s.push_str("## Disk Ceiling\n\n");
    let _ = writeln!(s, "{}.\n", text(c.get("statement")));
    let rows: Vec<Vec<String>> = c
        .get("phases")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let pct = |k: &str| {
                        p.get(k)
                            .and_then(Value::as_f64)
                            .map(|f| format!("{:.0}%", f * 100.0))
                            .unwrap_or_else(|| DASH.to_owned())
                    };
                    vec![
                        text(p.get("phase")),
                        text(p.get("block_device")),
                        json_num(p.get("read_bytes")),
                        json_num(p.get("busy_s")),
                        p.get("achieved_read_gbps")
                            .and_then(Value::as_f64)
                            .map(|g| format!("{g:.3}"))
                            .unwrap_or_else(|| DASH.to_owned()),
                        pct("fraction_of_random_read"),
                        pct("fraction_of_sequential_read"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !rows.is_empty() {
        table(
            s,
            &[
                "phase",
                "device",
                "read bytes",
                "busy s",
                "GB/s",
                "of random read",
                "of sequential read",
            ],
            &rows,
        );
    }
    let _ = writeln!(s, "{}\n", text(c.get("host_tier_note")));
}

fn identity(s: &mut String, run: &Run) {
    s.push_str("## Request Identity\n\n");
    let id = &run.identity;
    if !id.available {
        s.push_str("Not available: `request_manifest.jsonl` is missing.\n\n");
        return;
    }
    let _ = writeln!(s, "- Planned requests (manifest rows): {}", id.requests);
    let _ = writeln!(
        s,
        "- Unique prompts {}, generation params {}, request identities {}, payloads {}",
        id.prompts, id.params, id.identities, id.payloads
    );
    let _ = writeln!(
        s,
        "- Prefix hashes: {} unique over {} requests carrying one; sessions: {}",
        id.prefix_hashes, id.with_prefix, id.sessions
    );
    let share = |n: u64| {
        if id.requests > 0 {
            pct(n as f64 / id.requests as f64, 1)
        } else {
            DASH.to_owned()
        }
    };
    let _ = writeln!(
        s,
        "- Reuse opportunity: {} of requests repeat an earlier prefix hash; {} repeat an earlier prompt exactly",
        share(id.prefix_repeats),
        share(id.prompt_repeats)
    );
    let matched = kv_sum(
        run.phases.iter().filter_map(|p| p.kvbm.as_ref()),
        "matched_tokens",
    );
    if let Some(r) = run.s(&["reuse_verify_identity"]).filter(|v| v.is_object()) {
        let _ = writeln!(
            s,
            "- reuse_verify identity: **`{}`** ({} reuse requests; {} request identities, {} prompts, {} generation params)",
            text(r.get("verdict")),
            json_num(r.get("reuse_requests")),
            json_num(r.get("unique_request_identity_sha256")),
            json_num(r.get("unique_prompt_sha256")),
            json_num(r.get("unique_generation_params_sha256"))
        );
    }
    if id.prefix_repeats + id.prompt_repeats > 0 && matched == Some(0.0) {
        s.push_str("- **Reuse was offered but KVBM matched no tokens**: this run cannot support a KV-reuse claim.\n");
    }
    s.push('\n');
    let rows: Vec<Vec<String>> = id
        .phases
        .iter()
        .map(|(n, r, p, i)| vec![n.clone(), r.to_string(), p.to_string(), i.to_string()])
        .collect();
    table(
        s,
        &["phase", "requests", "unique prompts", "unique identities"],
        &rows,
    );
}

/// Where chunk arrival times came from and how late the parser saw them.
/// Runs recorded before receive timestamps existed have neither; say nothing.
fn read_path(s: &mut String, run: &Run) {
    let clock = run
        .s(&["timing_error_budget", "arrival_clock"])
        .and_then(Value::as_str);
    let Some(d) = run.s(&["timing_error_budget", "read_path_delay_ms"]) else {
        return;
    };
    let n = |k: &str| json_num(run.s(&["timing_error_budget", k]));
    let delay = format!(
        "p50 {} ms, p99 {} ms, max {} ms over {} chunks",
        json_num(d.get("p50")),
        json_num(d.get("p99")),
        json_num(d.get("max")),
        json_num(d.get("count"))
    );
    let _ = match clock {
        Some("kernel") => writeln!(
            s,
            "Chunk arrivals are the kernel's receive timestamps, so TTFT and ITL do not include the client's own read-path delay ({delay}). {} chunks shared a read with the chunk before them and carry that read's later stamp.\n",
            n("chunks_sharing_a_read")
        ),
        Some("application") => writeln!(
            s,
            "Chunk arrivals are the client's parser clock (`--arrival-clock application`), so TTFT and ITL **include** its read-path delay: {delay}.\n"
        ),
        _ => writeln!(
            s,
            "Chunk arrivals are kernel receive timestamps for some requests and the parser's clock for others (stamping started late); read-path delay {delay}.\n"
        ),
    };
}

fn timing(s: &mut String, run: &Run) {
    s.push_str("## Timing-Error Budget\n\n");
    let b = run.s(&["timing_error_budget", "schedule_lateness_ms"]);
    let Some(b) = b else {
        s.push_str("Not recorded in `summary.json`.\n\n");
        return;
    };
    let _ = writeln!(
        s,
        "Schedule lateness (actual − intended send, the harness's own error) over the measured phases: p50 {} ms, p99 {} ms, max {} ms ({} requests).\n",
        json_num(b.get("p50")),
        json_num(b.get("p99")),
        json_num(b.get("max")),
        json_num(b.get("count"))
    );
    let rows: Vec<Vec<String>> = run
        .phases
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                lat(&p.summary, "schedule_lateness", "p50"),
                lat(&p.summary, "schedule_lateness", "p99"),
                lat(&p.summary, "schedule_lateness", "max"),
            ]
        })
        .collect();
    table(
        s,
        &["phase", "lateness p50", "lateness p99", "lateness max"],
        &rows,
    );
    let late = b.get("p99").and_then(Value::as_f64);
    let ttft = run
        .overall()
        .pointer("/latency_ms/ttft/p50")
        .and_then(Value::as_f64);
    match (late, ttft) {
        (Some(l), Some(t)) if t > 0.0 => {
            let _ = writeln!(
                s,
                "Lateness p99 is {} of TTFT p50: {}\n",
                pct(l / t, 2),
                if l / t < 0.01 {
                    "the harness's scheduling error is negligible for these latencies."
                } else {
                    "**not negligible** — compare the `*_from_intended` latencies, which include it."
                }
            );
        }
        _ => {}
    }
    read_path(s, run);
    if let Some(h) = run.s(&["harness"]).and_then(Value::as_object) {
        let parts: Vec<String> = h
            .iter()
            .filter(|(_, v)| v.is_number() || v.is_boolean() || v.is_string())
            .map(|(k, v)| format!("{k} {}", text(Some(v))))
            .collect();
        if !parts.is_empty() {
            let _ = writeln!(s, "Harness cost: {}.\n", parts.join(", "));
        }
    }
}

fn verdict(s: &mut String, run: &Run) {
    s.push_str("## Verdict\n\n");
    let Some(v) = &run.verdict else {
        s.push_str("`verdict.json` is absent: decision grade was not assessed for this run (the telemetry collectors write it).\n\n");
        return;
    };
    let b = |k: &str| match v.get(k).and_then(Value::as_bool) {
        Some(x) => yes_no(x).to_owned(),
        None => text(v.get(k)),
    };
    let _ = writeln!(s, "- Run valid: {}", b("run_valid"));
    let _ = writeln!(s, "- Decision grade: **{}**", b("decision_grade"));
    let codes = v
        .get("reason_codes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| format!("`{}`", text(Some(c))))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "- Reason codes: {}",
        if codes.is_empty() {
            "none".to_owned()
        } else {
            codes.join(", ")
        }
    );
    if let Some(m) = v.as_object() {
        for (k, x) in m {
            if matches!(k.as_str(), "run_valid" | "decision_grade" | "reason_codes") {
                continue;
            }
            if x.is_string() || x.is_number() || x.is_boolean() {
                let _ = writeln!(s, "- {k}: {}", text(Some(x)));
            }
        }
    }
    s.push('\n');
}

/// `verdict.json`'s `cross_checks`: each phase's reuse and disk figures from
/// every source side by side, so a reader sees which source disagreed.
fn cross_checks(s: &mut String, run: &Run) {
    let Some(c) = run.verdict.as_ref().and_then(|v| v.get("cross_checks")) else {
        return;
    };
    let Some(phases) = c.get("phases").and_then(Value::as_array) else {
        return;
    };
    if phases.is_empty() {
        return;
    }
    s.push_str(
        "## Cross-checks

",
    );
    let tol = |k: &str| {
        format!(
            "max({}, {} × the larger)",
            json_num(c.pointer(&format!("/{k}/absolute"))),
            json_num(c.pointer(&format!("/{k}/relative")))
        )
    };
    let _ = writeln!(
        s,
        "Two figures agree within {} tokens or {} bytes. Hit-rate gauges cover KVBM's last N requests, not the phase.\n",
        tol("tokens_tolerance"),
        tol("bytes_tolerance")
    );
    let n = |p: &Value, path: &str| json_num(p.pointer(path));
    let ratio = |p: &Value, path: &str| match p.pointer(path).and_then(Value::as_f64) {
        Some(x) => pct(x, 1),
        None => DASH.to_owned(),
    };
    let reuse: Vec<Vec<String>> = phases
        .iter()
        .map(|p| {
            vec![
                text(p.get("phase")),
                format!(
                    "{} / {}",
                    n(p, "/reuse/client_cached_tokens"),
                    n(p, "/reuse/client_prompt_tokens")
                ),
                ratio(p, "/reuse/client_reuse_ratio"),
                format!(
                    "{} / {}",
                    n(p, "/reuse/frontend_cached_tokens"),
                    n(p, "/reuse/frontend_input_tokens")
                ),
                ratio(p, "/reuse/frontend_reuse_ratio"),
                n(p, "/reuse/kvbm_matched_tokens"),
                n(p, "/reuse/kvbm_onboarded_tokens"),
                format!(
                    "{} / {}",
                    n(p, "/reuse/host_only_onboarded_blocks"),
                    n(p, "/reuse/disk_onboarded_blocks")
                ),
                format!(
                    "{} (last {} req; phase {})",
                    n(p, "/reuse/disk_hit_rate_after"),
                    n(p, "/reuse/hit_rate_window/window_requests"),
                    n(p, "/reuse/hit_rate_window/phase_requests")
                ),
            ]
        })
        .collect();
    table_aligned(
        s,
        &[
            "phase",
            "client cached / prompt tok",
            "client reuse",
            "frontend cached / input tok",
            "frontend reuse",
            "KVBM matched tok",
            "KVBM onboarded tok",
            "host-only / disk blocks",
            "disk hit-rate gauge",
        ],
        &reuse,
        true,
    );
    let disk: Vec<Vec<String>> = phases
        .iter()
        .map(|p| {
            let pair = |a: &str, b: &str| format!("{} / {}", n(p, a), n(p, b));
            vec![
                text(p.get("phase")),
                pair("/disk/kvbm_read_bytes", "/disk/kvbm_write_bytes"),
                pair("/disk/device_read_bytes", "/disk/device_write_bytes"),
                pair("/disk/process_read_bytes", "/disk/process_write_bytes"),
                pair("/disk/cgroup_read_bytes", "/disk/cgroup_write_bytes"),
            ]
        })
        .collect();
    table_aligned(
        s,
        &[
            "phase",
            "KVBM read / write B",
            "device read / write B",
            "process read / write B",
            "cgroup read / write B",
        ],
        &disk,
        true,
    );
    let mut lines = Vec::new();
    for p in phases {
        for d in p
            .get("disagreements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            lines.push(format!(
                "- `{}` in {}: {} {} vs {} {}",
                text(d.get("code")),
                text(d.get("phase")),
                text(d.get("figure")),
                json_num(d.get("value")),
                text(d.get("against")),
                json_num(d.get("against_value"))
            ));
        }
        for u in p
            .get("unchecked")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            lines.push(format!(
                "- not checked in {}: {}",
                text(p.get("phase")),
                text(Some(u))
            ));
        }
    }
    if lines.is_empty() {
        s.push_str("Every figure present agrees.\n\n");
    } else {
        s.push_str(&lines.join("\n"));
        s.push_str("\n\n");
    }
}

fn anomalies(s: &mut String, run: &Run) {
    s.push_str("## Anomalies + Limitations\n\n");
    let mut items: Vec<String> = Vec::new();
    if !run.valid() {
        items.push(format!(
            "The run is invalid (`{}`): its overall summary is excluded from comparisons.",
            text(run.s(&["invalid_reason"]))
        ));
    }
    let o = run.overall();
    if o.get("error_requests").and_then(Value::as_u64).unwrap_or(0) > 0 {
        items.push(format!(
            "{} of {} measured requests failed; latencies are over successful requests only.",
            json_num(o.get("error_requests")),
            json_num(o.get("total_requests"))
        ));
    }
    if run
        .s(&["dispatch", "unsent"])
        .and_then(Value::as_u64)
        .unwrap_or(0)
        > 0
    {
        items.push(format!(
            "{} planned requests were never sent.",
            json_num(run.s(&["dispatch", "unsent"]))
        ));
    }
    if run.s(&["stream"]).and_then(Value::as_bool) == Some(false) {
        items.push(
            "Requests were unary: TTFT, ITL and TPOT cannot be measured, only end-to-end latency."
                .into(),
        );
    }
    if o.get("requests_without_usage")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        > 0
    {
        items.push(
            "Some responses carried no `usage`: their token counts come from the host tokenizer."
                .into(),
        );
    }
    if run.rows == 0 {
        items.push("`requests.jsonl` has no rows: no distribution charts.".into());
    }
    if run.kvbm_collected {
        items.push("Offload does not imply rehydration: blocks written to a tier help only when later requests match them (matched tokens > 0) and are onboarded back.".into());
        items.push("Disk onboarding is gated behind cross-request prefix matching; host→GPU onboarding (h2d) is CPU-tier reuse and is never counted as disk rehydration.".into());
        items.push("KVBM counters are the primary evidence of tier use; NVMe and process I/O counters are supporting evidence (other processes can write to the same device).".into());
    } else {
        items.push("No KVBM counters were collected: this run says nothing about KV-tier behaviour, only about latency and throughput.".into());
    }
    items.push("TTFT is measured at the client to the first generated text; queueing in the frontend and network time are included.".into());
    items.push("KV tier labels are recorded as given on the command line; sparkhost does not verify the server's configuration.".into());
    for i in items {
        let _ = writeln!(s, "- {i}");
    }
    s.push('\n');
}
