//! `sparkhost run`: plan with the workload, dispatch, record, summarize.
//!
//! Order matters for the evidence: user errors (flags, params, workload) stop
//! before a run directory exists; from the run directory on, every failure is
//! recorded in it and the run is labelled invalid instead of vanishing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::Exit;
use super::inspect::limits;
use crate::cli::{ArrivalKind, KvMode, RunArgs};
use crate::dispatch::client::Client;
use crate::dispatch::models;
use crate::dispatch::runner::{PhaseRun, Runner, StopReason};
use crate::evidence::{InvalidReason, Validity};
use crate::feed::{self, FeedConfig, Preflight, PreflightReport};
use crate::plan::{LoadModel, PhasePlan};
use crate::results::identity::sha256_hex;
use crate::results::recorder::{PhaseResult, Recorder};
use crate::results::rundir::RunDir;
use crate::results::summary::{self, Accumulator, LogEntry, PhaseSummary};
use crate::sandbox::{DATA_DIR, DataGrants, LoadedWorkload, Sandbox, WorkloadInfo};
use crate::telemetry::{TelemetryOutcome, TelemetryRun};
use crate::tokenize::TokenCounter;
use sparkhost_collectors::RunErrors;
use sparkhost_collectors::verdict::ReasonCode;

/// KV tier labels, as the seed harness recorded them.
#[derive(Debug, Clone, Serialize)]
pub struct KvModeInfo {
    pub mode: KvMode,
    pub tier_mode: &'static str,
    pub kvbm_enabled: bool,
    pub cpu_cache_gb: f64,
    pub disk_cache_gb: f64,
}

impl KvModeInfo {
    pub fn resolve(
        kv: KvMode,
        tier: Option<&str>,
        cpu: Option<f64>,
        disk: Option<f64>,
    ) -> anyhow::Result<Self> {
        let kv = match tier.map(|t| t.trim().to_ascii_uppercase()) {
            None => kv,
            Some(t) => match KvMode::ALL.into_iter().find(|m| m.tier_mode() == t) {
                Some(m) => m,
                None => bail!("--tier-mode {t:?} is not one of B0, B1, B2"),
            },
        };
        Ok(KvModeInfo {
            mode: kv,
            tier_mode: kv.tier_mode(),
            kvbm_enabled: kv.kvbm_enabled(),
            cpu_cache_gb: cpu.unwrap_or(if kv.kvbm_enabled() { 8.0 } else { 0.0 }),
            disk_cache_gb: disk.unwrap_or(if kv.disk_tier_on() { 32.0 } else { 0.0 }),
        })
    }
}

fn default_load(args: &RunArgs) -> anyhow::Result<LoadModel> {
    let load = match args.rate {
        None => LoadModel::Closed {
            concurrency: args.concurrency,
        },
        Some(rate) => match args.arrival {
            ArrivalKind::Constant => LoadModel::Constant { rate },
            ArrivalKind::Poisson => LoadModel::Poisson { rate },
            ArrivalKind::Gamma => LoadModel::Gamma {
                rate,
                shape: args.gamma_shape,
            },
        },
    };
    load.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(load)
}

/// Params the user set (`--param`, then the shorthand flags), and the
/// effective set with `describe()` defaults filled in for the manifest. Only
/// the user's go to the workload, so it can tell a default from a choice.
type Params = Vec<(String, String)>;

fn effective_params(info: &WorkloadInfo, args: &RunArgs) -> anyhow::Result<(Params, Params)> {
    let known: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
    let mut explicit: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |name: &str, value: String, flag: &str| -> anyhow::Result<()> {
        if !known.contains(&name) {
            bail!(
                "{flag} sets parameter {name:?}, which workload {} {} does not have (its parameters: {})",
                info.name,
                info.version,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
        }
        explicit.insert(name.to_owned(), value);
        Ok(())
    };
    for (k, v) in &args.params {
        set(k, v.clone(), &format!("--param {k}=…"))?;
    }
    let shorthands: [(&str, Option<String>, &str); 6] = [
        (
            "requests",
            args.requests.map(|v| v.to_string()),
            "--requests",
        ),
        ("warmup", args.warmup.map(|v| v.to_string()), "--warmup"),
        (
            "max-tokens",
            args.max_tokens.map(|v| v.to_string()),
            "--max-tokens",
        ),
        (
            "temperature",
            args.temperature.map(|v| v.to_string()),
            "--temperature",
        ),
        ("top-p", args.top_p.map(|v| v.to_string()), "--top-p"),
        (
            "request-seed",
            args.request_seed.map(|v| v.to_string()),
            "--request-seed",
        ),
    ];
    for (name, value, flag) in shorthands {
        if let Some(v) = value {
            set(name, v, flag)?;
        }
    }
    let mut effective: BTreeMap<String, String> = info
        .params
        .iter()
        .map(|p| (p.name.clone(), p.default_value.clone()))
        .collect();
    effective.extend(explicit.clone());
    Ok((
        explicit.into_iter().collect(),
        effective.into_iter().collect(),
    ))
}

fn check_phases(phases: &[PhasePlan], label: &str) -> anyhow::Result<()> {
    if phases.is_empty() {
        bail!("workload {label} declared no phases");
    }
    let mut seen = HashSet::new();
    for p in phases {
        if p.name.is_empty() || !seen.insert(p.name.as_str()) {
            bail!(
                "workload {label} declared an empty or duplicate phase name {:?}",
                p.name
            );
        }
        if let Some(l) = &p.load {
            l.validate()
                .map_err(|e| anyhow::anyhow!("workload {label}, phase {:?}: {e}", p.name))?;
        }
    }
    Ok(())
}

fn host_info() -> serde_json::Value {
    json!({
        "hostname": gethostname::gethostname().to_string_lossy(),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
    })
}

struct Context_ {
    run_id: String,
    created: String,
    args_json: serde_json::Value,
    kv: KvModeInfo,
    info: WorkloadInfo,
    params: Vec<(String, String)>,
    phases: Vec<PhasePlan>,
    default_load: LoadModel,
    tokenizer_id: String,
    data_files: Vec<serde_json::Value>,
    preflight: Option<Preflight>,
    workload_from_cache: bool,
}

impl Context_ {
    fn write_docs(
        &self,
        rd: &RunDir,
        args: &RunArgs,
        loaded: &LoadedWorkload,
        model: Option<&str>,
        preflight: Option<&PreflightReport>,
    ) -> anyhow::Result<()> {
        let phases: Vec<_> = self
            .phases
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "include_in_overall": p.include_in_summary,
                    "load": p.load.unwrap_or(self.default_load),
                })
            })
            .collect();
        let params: BTreeMap<_, _> = self.params.iter().cloned().collect();
        let config = json!({
            "run_id": self.run_id,
            "created_utc": self.created,
            "base_url": args.endpoint.endpoint,
            "model_id": model.unwrap_or(&args.model),
            "scenario": self.info.name,
            "tokenizer": self.tokenizer_id,
            "tier_mode": self.kv.tier_mode,
            "kv_mode": self.kv,
            "client_request_parameters": {
                "stream": args.stream,
                "stream_usage": args.stream && !args.no_stream_usage,
                "timeout_s": args.timeout.as_secs_f64(),
                "arrival_clock": args.arrival_clock,
            },
            "load": self.default_load,
            "params": params,
            "phases": phases,
            "preflight": {
                "settings": self.preflight,
                "result": preflight,
            },
            "data_files": self.data_files,
            "args": self.args_json,
        });
        rd.write_json("config.json", &config)?;
        let manifest = json!({
            "run_id": self.run_id,
            "created_utc": self.created,
            "sparkhost_version": env!("CARGO_PKG_VERSION"),
            "wasmtime_version": "48",
            "host": host_info(),
            "workload": {
                "path": args.workload.display().to_string(),
                "name": self.info.name,
                "version": self.info.version,
                "sha256": loaded.digest,
                "wit": format!("sparkhost:workload@{}", loaded.wit_version),
            },
            "scenario": self.info.name,
            "params": params,
            "seed": args.seed,
            "tokenizer": self.tokenizer_id,
            "data_files": self.data_files,
            "tier_mode": self.kv.tier_mode,
            "kv_mode": self.kv,
            "variant_tags": args.variant_tags,
            "model_id_requested": args.model,
            "model_id_resolved": model,
            "base_url": args.endpoint.endpoint,
            "phases": phases,
            "args": self.args_json,
        });
        rd.write_json("manifest.json", &manifest)?;
        Ok(())
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<Exit> {
    // A bad endpoint is a flag error: say so before any work is done.
    let client = Client::with_clock(&args.endpoint.endpoint, args.timeout, args.arrival_clock)
        .context("--endpoint")?;
    let default_load = default_load(&args)?;
    let kv = KvModeInfo::resolve(
        args.kv_mode,
        args.tier_mode.as_deref(),
        args.kv_cpu_cache_gb,
        args.kv_disk_cache_gb,
    )?;
    let tokens = Arc::new(match &args.tokenizer {
        Some(p) => TokenCounter::from_file(p)?,
        None => TokenCounter::Heuristic,
    });
    let sandbox = Sandbox::new(args.sandbox.cache_dir.clone(), limits(&args.sandbox))?;
    let loaded = sandbox.load(&args.workload)?;
    let mut grants = DataGrants::default();
    for f in &args.data {
        grants.add(f)?;
    }
    let mut args = args;
    for (_, v) in args.params.iter_mut() {
        if let Some(file) = v.strip_prefix('@') {
            *v = grants.add(std::path::Path::new(file))?;
        }
    }
    let args = args;
    let data_files = grants
        .files()
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).with_context(|| format!("reading data file {}", f.display()))?;
            Ok(json!({
                "path": f.display().to_string(),
                "guest_path": format!("{DATA_DIR}/{}", f.file_name().unwrap_or_default().to_string_lossy()),
                "sha256": sha256_hex(&bytes),
                "bytes": bytes.len(),
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Guest calls may do blocking WASI I/O (a granted data file), which
    // wasmtime-wasi runs through the current tokio runtime: leave the async
    // context for them.
    let (inst, info, params, phases) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let mut inst = sandbox.instantiate(&loaded, tokens.clone(), args.seed, &grants)?;
        let info = inst.describe()?;
        let (explicit, params) = effective_params(&info, &args)?;
        inst.create(&explicit, args.seed)?;
        let phases = inst.phases()?;
        Ok((inst, info, params, phases))
    })?;
    let label = format!("{} {}", info.name, info.version);
    check_phases(&phases, &label)?;

    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    let telemetry_cfg = if args.telemetry.no_telemetry {
        None
    } else {
        Some(args.telemetry.collectors_config(
            &args.results_root.join(&run_id),
            &args.endpoint.endpoint,
            kv.kvbm_enabled,
        ))
    };
    let rd = RunDir::create(&args.results_root, &run_id)?;
    let ctx = Context_ {
        run_id: run_id.clone(),
        created: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        args_json: json!(std::env::args().collect::<Vec<_>>()),
        kv,
        info: info.clone(),
        params,
        phases: phases.clone(),
        default_load,
        tokenizer_id: tokens.id(),
        data_files,
        workload_from_cache: loaded.from_cache,
        preflight: (args.engine_max_input_tokens > 0).then_some(Preflight {
            engine_max_input_tokens: args.engine_max_input_tokens,
            input_token_safety_margin: args.input_token_safety_margin,
        }),
    };
    ctx.write_docs(&rd, &args, &loaded, None, None)?;
    let mut telemetry = match telemetry_cfg {
        Some(cfg) => {
            Some(TelemetryRun::start(cfg, phases.iter().map(|p| p.name.clone()).collect()).await)
        }
        None => None,
    };
    if !args.quiet {
        eprintln!(
            "sparkhost: {label} → {} (run {})",
            args.endpoint.endpoint,
            rd.path().display()
        );
    }

    let mut validity = Validity::default();
    let wanted = (args.model != "auto").then_some(args.model.as_str());
    let model = match models::wait_for_model(
        &client,
        wanted,
        args.model_resolve_timeout,
        args.model_resolve_poll,
        1,
    )
    .await
    {
        Ok(m) => m,
        Err(e) => {
            validity.invalidate(InvalidReason::ModelUnavailable, e);
            let report = Report::empty(&ctx, &phases);
            return finish(
                &rd,
                &ctx,
                &args,
                None,
                report,
                validity,
                Default::default(),
                telemetry,
            )
            .await;
        }
    };
    ctx.write_docs(&rd, &args, &loaded, Some(&model), None)?;

    let manifest = rd.jsonl("request_manifest.jsonl")?;
    let mut feed = feed::spawn(
        Box::new(inst),
        phases.clone(),
        FeedConfig {
            model: model.clone(),
            stream: args.stream,
            stream_usage: !args.no_stream_usage,
            // Small batches: planning 64 requests at once took ~2 ms of a
            // core in one burst, and at 8,000 req/s that burst alone made the
            // schedule lateness p99 3 ms on a 2-core machine (16: ~1 ms).
            batch_max: 16,
            lookahead: args.lookahead.max(1),
            preflight: ctx.preflight,
        },
        tokens.clone(),
        manifest,
        rd.jsonl("prompts_manifest.jsonl")?,
    );
    // The manifest holds the initial plan before anything is sent.
    let initial = (&mut feed.initial).await.unwrap_or_default();
    let initially_planned = initial.planned;
    tracing::info!(initially_planned, "initial plan written");
    if initial.preflight_failed {
        drop(feed.requests);
        drop(feed.responses);
        let report = tokio::task::spawn_blocking(move || feed.thread.join())
            .await
            .context("joining the plan feed")?
            .map_err(|_| anyhow::anyhow!("the plan feed thread panicked"))?;
        ctx.write_docs(&rd, &args, &loaded, Some(&model), Some(&report.preflight))?;
        validity.invalidate(
            InvalidReason::PromptPreflightFailed,
            format!(
                "{} of {} planned requests cannot fit the engine; nothing was sent (lower the prompt sizes or max tokens, or set --engine-max-input-tokens to the engine's real limit)",
                report.preflight.failure_count, report.planned
            ),
        );
        validity
            .invalid_details
            .extend(report.preflight.errors.iter().cloned());
        let dispatch = DispatchInfo {
            planned: report.planned,
            initially_planned,
            unsent: report.planned,
            ..Default::default()
        };
        return finish(
            &rd,
            &ctx,
            &args,
            Some(&model),
            Report::empty(&ctx, &phases),
            validity,
            dispatch,
            telemetry,
        )
        .await;
    }

    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (alarm_tx, alarm_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(None);
    let base = Instant::now();
    let wall_base = Utc::now();
    let start_time = SystemTime::now();
    let recorder = Recorder::new(
        rd.jsonl("requests.jsonl")?,
        base,
        wall_base,
        tokens.clone(),
        phases
            .iter()
            .map(|p| (p.name.clone(), p.include_in_summary))
            .collect(),
        Some(feed.responses.clone()),
        Some(alarm_tx),
    );
    let progress = crate::progress::Progress::new(initially_planned, args.quiet);
    let recorder = recorder.with_progress(progress.clone());
    let rec_thread = std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || recorder.run_blocking(ev_rx))
        .context("starting the recorder thread")?;
    let watcher = tokio::spawn(watch_model(
        client.clone(),
        model.clone(),
        alarm_rx,
        stop_tx.clone(),
    ));
    let interrupt = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop_tx.send(Some(StopReason::Interrupted));
            }
        })
    };

    let runner = Runner {
        timer: crate::dispatch::timer::PreciseTimer::new(),
        boundaries: telemetry.as_mut().and_then(TelemetryRun::hook),
        client: client.clone(),
        lookahead: args.lookahead.max(1),
        max_in_flight: args.max_in_flight.max(1),
    };
    let phase_runs: Vec<PhaseRun> = phases
        .iter()
        .enumerate()
        .map(|(i, p)| PhaseRun {
            name: p.name.clone(),
            load: p.load.unwrap_or(default_load),
            seed: args
                .seed
                .wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        })
        .collect();
    let prewarm = args.prewarm_connections.unwrap_or_else(|| {
        phase_runs
            .iter()
            .map(|p| match p.load {
                LoadModel::Closed { concurrency } => concurrency as usize,
                // Open loop: enough for 10 ms of arrivals, which covers the
                // in-flight count of short requests; opening connections
                // mid-phase made the first sends of a 10,000 req/s run up
                // to 6 ms late. Longer requests open more as they need them.
                LoadModel::Constant { rate }
                | LoadModel::Poisson { rate }
                | LoadModel::Gamma { rate, .. } => (rate * 0.01).ceil() as usize,
            })
            .max()
            .unwrap_or(0)
            .min(1024)
    });
    let prewarmed = if prewarm > 0 {
        client.prewarm(prewarm).await
    } else {
        0
    };
    // On a runtime worker, not this thread: request tasks it spawns and the
    // completions it awaits then stay on that worker's queue instead of
    // crossing threads through a futex for every request.
    let mut requests = feed.requests;
    let dispatch = tokio::spawn(async move {
        let end = runner
            .run(&phase_runs, &mut requests, &ev_tx, stop_rx)
            .await;
        drop(runner);
        drop(ev_tx);
        drop(requests);
        end
    });
    let dispatch_end = dispatch.await.context("the dispatcher task failed")?;
    drop(feed.responses);
    let recorder = tokio::task::spawn_blocking(move || rec_thread.join())
        .await
        .context("joining the recorder")?
        .map_err(|_| anyhow::anyhow!("the recorder thread panicked"))?;
    progress.finish();
    watcher.abort();
    interrupt.abort();
    let feed_report = tokio::task::spawn_blocking(move || feed.thread.join())
        .await
        .context("joining the plan feed")?
        .map_err(|_| anyhow::anyhow!("the plan feed thread panicked"))?;

    match &dispatch_end.stopped {
        Some(StopReason::ModelDropped(d)) => {
            validity.invalidate(InvalidReason::ModelDropped, d.clone())
        }
        Some(StopReason::Interrupted) => validity.invalidate(
            InvalidReason::Interrupted,
            "interrupted by the user (Ctrl-C)",
        ),
        None => {}
    }
    if recorder.prompt_limit_hits > 0 {
        validity.invalidate(
            InvalidReason::EnginePromptLimitExceeded,
            format!(
                "{} requests were refused as longer than the engine allows",
                recorder.prompt_limit_hits
            ),
        );
    }
    ctx.write_docs(
        &rd,
        &args,
        &loaded,
        Some(&model),
        Some(&feed_report.preflight),
    )?;
    if feed_report.preflight.failed {
        validity.invalidate(
            InvalidReason::PromptPreflightFailed,
            feed_report.error.clone().unwrap_or_default(),
        );
    } else if let Some(e) = feed_report
        .error
        .as_ref()
        .or(dispatch_end.workload_error.as_ref())
    {
        validity.invalidate(InvalidReason::WorkloadFailed, e.clone());
    }
    if let Some(e) = &recorder.write_error {
        validity.invalidate(InvalidReason::ResultsWriteFailed, e.clone());
    }
    let ok: u64 = recorder.phases.iter().map(|p| p.acc.ok).sum();
    if recorder.recorded == 0 && validity.is_valid() {
        validity.invalidate(
            InvalidReason::NoRequests,
            "the workload planned no requests",
        );
    } else if recorder.recorded > 0 && ok == 0 {
        let mut all = Accumulator::default();
        for p in &recorder.phases {
            all.merge(&p.acc);
        }
        validity.invalidate(
            InvalidReason::NoSuccessfulRequests,
            format!(
                "all {} requests failed: {:?}",
                recorder.recorded, all.errors
            ),
        );
    }
    let dispatch = DispatchInfo {
        planned: feed_report.planned,
        initially_planned,
        recorded: recorder.recorded,
        // Every planned request is in the manifest; whatever has no row was never sent,
        // whether it waited in the scheduler or still in the feed's channel.
        first_sent: recorder.first_sent,
        prewarmed_connections: prewarmed as u64,
        unsent: feed_report
            .planned
            .saturating_sub(recorder.recorded)
            .max(dispatch_end.unsent),
        phases_completed: dispatch_end.phases_completed as u64,
    };
    let report = Report::from_phases(recorder.phases, start_time, base);
    finish(
        &rd,
        &ctx,
        &args,
        Some(&model),
        report,
        validity,
        dispatch,
        telemetry,
    )
    .await
}

/// Watches for signs that the model went away: a 404/5xx answer followed by
/// `/v1/models` no longer listing it.
async fn watch_model(
    client: Client,
    model: String,
    mut alarms: mpsc::UnboundedReceiver<()>,
    stop: watch::Sender<Option<StopReason>>,
) {
    let mut last_check: Option<Instant> = None;
    while alarms.recv().await.is_some() {
        if last_check.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            continue;
        }
        last_check = Some(Instant::now());
        match models::list(&client).await {
            Ok(list) if !list.contains(&model) => {
                let _ = stop.send(Some(StopReason::ModelDropped(format!(
                    "after an HTTP 404/5xx answer, /v1/models lists {list:?}, without {model:?}"
                ))));
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("model check after an error answer failed: {e}"),
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct DispatchInfo {
    #[serde(skip)]
    first_sent: Option<Instant>,
    /// Keep-alive connections opened before the first request.
    prewarmed_connections: u64,
    planned: u64,
    initially_planned: u64,
    recorded: u64,
    unsent: u64,
    phases_completed: u64,
}

struct Report {
    phases: Vec<PhaseResult>,
    start_time: SystemTime,
    base: Option<Instant>,
}

impl Report {
    fn empty(_ctx: &Context_, phases: &[PhasePlan]) -> Self {
        Report {
            phases: phases
                .iter()
                .map(|p| PhaseResult {
                    name: p.name.clone(),
                    include_in_summary: p.include_in_summary,
                    start: None,
                    end: None,
                    acc: Accumulator::default(),
                })
                .collect(),
            start_time: SystemTime::now(),
            base: None,
        }
    }

    fn from_phases(phases: Vec<PhaseResult>, start_time: SystemTime, base: Instant) -> Self {
        Report {
            phases,
            start_time,
            base: Some(base),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    rd: &RunDir,
    ctx: &Context_,
    args: &RunArgs,
    model: Option<&str>,
    report: Report,
    mut validity: Validity,
    dispatch: DispatchInfo,
    telemetry: Option<TelemetryRun>,
) -> anyhow::Result<Exit> {
    let outcome = match telemetry {
        Some(t) => t.close().await,
        None => TelemetryOutcome::default(),
    };
    let mut all = Accumulator::default();
    for p in &report.phases {
        all.merge(&p.acc);
    }
    let errors = RunErrors {
        total_requests: all.requests,
        failed_requests: all.errors.values().sum(),
        by_kind: all.errors.clone(),
    };
    let verdict = crate::telemetry::verdict(
        ctx.kv.mode,
        &outcome,
        errors,
        rd.path(),
        !validity.is_valid(),
        args.telemetry.policy(),
    );
    if let Err(e) = sparkhost_collectors::verdict::write(rd.path(), &verdict) {
        validity.invalidate(
            InvalidReason::ResultsWriteFailed,
            format!("verdict.json: {e}"),
        );
    }
    match verdict.invalid_reason {
        Some(ReasonCode::ErrorRateAboveThreshold) => validity.invalidate(
            InvalidReason::ErrorRateAboveThreshold,
            verdict.details.first().cloned().unwrap_or_default(),
        ),
        Some(ReasonCode::KvbmMetricsMissing) => validity.invalidate(
            InvalidReason::KvbmMetricsUnavailable,
            "a KV tier is configured but no KVBM metrics could be read (use --kv-mode off for runs without KVBM, or --allow-missing-kvbm-metrics)",
        ),
        _ => {}
    }
    let phase_summaries: Vec<PhaseSummary> = report
        .phases
        .iter()
        .map(|p| p.acc.summarize(&p.name, p.include_in_summary))
        .collect();
    let phase_values: Vec<serde_json::Value> = phase_summaries
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            if let (Some(d), Some(o)) = (outcome.phase(&p.phase), v.as_object_mut()) {
                o.insert(
                    "kvbm_metrics_delta".into(),
                    serde_json::to_value(&d.kvbm).unwrap_or_default(),
                );
                o.insert(
                    "io_delta".into(),
                    serde_json::to_value(&d.os_io).unwrap_or_default(),
                );
                o.insert(
                    "nvme_delta".into(),
                    serde_json::to_value(&d.nvme).unwrap_or_default(),
                );
                o.insert(
                    "gpu_delta".into(),
                    serde_json::to_value(&d.gpu).unwrap_or_default(),
                );
                // The server's own view of the phase, next to the client's.
                o.insert(
                    "server_side_ms".into(),
                    json!({
                        "source": d.frontend.url,
                        "available": d.frontend.available,
                        "ttft": d.frontend.ttft_ms,
                        "itl": d.frontend.itl_ms,
                        "request_duration": d.frontend.request_duration_ms,
                    }),
                );
            }
            v
        })
        .collect();
    let mut overall = Accumulator::default();
    for p in report.phases.iter().filter(|p| p.include_in_summary) {
        overall.merge(&p.acc);
    }
    let overall_measured = overall.summarize("overall", true);
    let overall_summary = if validity.is_valid() {
        serde_json::to_value(&overall_measured)?
    } else {
        json!({
            "phase": "overall",
            "scenario": ctx.info.name,
            "excluded": true,
            "reason": validity.invalid_reason.map(|r| r.as_str()),
            "details": validity.invalid_details,
        })
    };
    let harness = crate::harness::measure(dispatch.first_sent, Some(ctx.workload_from_cache));
    let summary = json!({
        "run_id": ctx.run_id,
        "created_utc": ctx.created,
        "run_valid": validity.is_valid(),
        "invalid_reason": validity.invalid_reason.map(|r| r.as_str()),
        "invalid_details": validity.invalid_details,
        "model_id": model,
        "scenario": ctx.info.name,
        "workload": { "name": ctx.info.name, "version": ctx.info.version },
        "stream": args.stream,
        "tier_mode": ctx.kv.tier_mode,
        "kv_mode": ctx.kv,
        "variant_tags": args.variant_tags,
        "tokenizer": ctx.tokenizer_id,
        "request_manifest_path": "request_manifest.jsonl",
        "dispatch": dispatch,
        "phase_summaries": phase_values,
        "overall_summary": overall_summary,
        "overall_measured": overall_measured,
        "timing_error_budget": overall_measured.timing_error_budget,
        "verdict": verdict,
        "telemetry": {
            "enabled": outcome.enabled,
            "sources": outcome.report.as_ref().map(|r| &r.sources),
            "kv_disk_device": outcome.report.as_ref().and_then(|r| r.kv_disk_device.clone()),
        },
        "harness": harness,
        "notes": [
            "Latencies are measured from the actual send; *_from_intended include the harness's scheduling delay (coordinated omission corrected).",
            "TTFT is the first chunk carrying generated text; TTFC is the first SSE event of any kind; unary requests have neither.",
            "ITL and TPOT are per token: a chunk carrying k tokens contributes k samples.",
        ],
    });
    rd.write_json("summary.json", &summary)?;
    if let Some(base) = report.base {
        let entries: Vec<LogEntry<'_>> = report
            .phases
            .iter()
            .map(|p| LogEntry {
                phase: &p.name,
                start: p
                    .start
                    .map(|s| s.saturating_duration_since(base))
                    .unwrap_or_default(),
                acc: &p.acc,
            })
            .collect();
        match summary::interval_log(report.start_time, &entries) {
            Ok(bytes) => rd.write_bytes("histograms.hlog", &bytes)?,
            Err(e) => tracing::warn!("cannot write histograms.hlog: {e}"),
        }
    }
    if let Some(slo) = &args.slo {
        match crate::analysis::slo::goodput_for_run(rd.path(), slo) {
            Ok(g) => {
                let mut summary = summary;
                summary["goodput"] = serde_json::to_value(&g)?;
                rd.write_json("summary.json", &summary)?;
            }
            Err(e) => eprintln!("warning: goodput not computed: {e:#}"),
        }
    }
    if !args.no_report {
        // A report is a view of the results, not a result: failing to render
        // one never invalidates a run, and `sparkhost report` can retry.
        match crate::report::generate_report(
            rd.path(),
            args.report_generator.as_deref(),
            &args.sandbox,
        ) {
            Ok(files) => tracing::info!("report files: {files:?}"),
            Err(e) => eprintln!(
                "warning: report not generated (retry with `sparkhost report {}`): {e:#}",
                rd.path().display()
            ),
        }
    }
    if !args.quiet {
        print_table(&phase_summaries, &overall_measured, &validity, rd);
    }
    Ok(if validity.is_valid() {
        Exit::Ok
    } else {
        Exit::Invalid
    })
}

fn print_table(phases: &[PhaseSummary], overall: &PhaseSummary, validity: &Validity, rd: &RunDir) {
    let f = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<14} {:>6} {:>5} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}",
        "phase",
        "reqs",
        "err",
        "req/s",
        "ttft p50",
        "ttft p99",
        "itl p50",
        "itl p99",
        "e2e p50",
        "e2e p99",
        "out tok/s",
        "late p99"
    );
    for p in phases.iter().chain(std::iter::once(overall)) {
        let l = |m: &str| &p.latency_ms[m];
        println!(
            "{:<14} {:>6} {:>5} {:>8.2} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9.1} {:>10}",
            if p.include_in_summary || p.phase == "overall" {
                p.phase.clone()
            } else {
                format!("({})", p.phase)
            },
            p.total_requests,
            p.error_requests,
            p.req_per_s,
            f(l("ttft").p50),
            f(l("ttft").p99),
            f(l("itl").p50),
            f(l("itl").p99),
            f(l("e2e").p50),
            f(l("e2e").p99),
            p.output_tokens_per_s,
            f(l("schedule_lateness").p99),
        );
    }
    println!("latencies in ms; (phase) = not in the overall summary");
    if !overall.errors_by_kind.is_empty() {
        println!("errors: {:?}", overall.errors_by_kind);
    }
    match validity.invalid_reason {
        None => println!("run valid: {}", rd.path().display()),
        Some(r) => {
            println!("run INVALID ({}): {}", r.as_str(), rd.path().display());
            for d in &validity.invalid_details {
                println!("  - {d}");
            }
        }
    }
}
