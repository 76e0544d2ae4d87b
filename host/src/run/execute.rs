//! The live part of a run: waits for the model, checks the whole plan
//! (preflight, a second workload instance on its own thread), writes
//! `config.json` and `manifest.json` once, resets and primes the KV cache
//! when asked, and owns every thread and task until the last request is
//! recorded — the plan feed (thread), the recorder (thread), the
//! dispatcher, the model watcher and the Ctrl-C handler (tasks). Returns one
//! [`RunOutcome`]; nothing here decides what the run means.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use chrono::Utc;
use tokio::sync::{mpsc, watch};

use super::plan::RunPlan;
use crate::dispatch::client::Client;
use crate::dispatch::models;
use crate::dispatch::runner::{Runner, StopReason};
use crate::evidence::{InvalidReason, Validity};
use crate::feed::{self, FeedConfig, FeedReport, PreflightReport};
use crate::results::documents::{DispatchDoc, KvResetDoc, PrimeDoc, ServerBuildDoc};
use crate::results::recorder::{PhaseResult, Recorder};
use crate::results::rundir::RunDir;
use crate::results::summary::Accumulator;
use crate::sandbox::WorkloadInstance;
use crate::simulate::SimRun;
use crate::telemetry::TelemetryRun;
use crate::tokenize::TokenCounter;

/// What a run did, before anyone judges it.
pub struct RunOutcome {
    /// The resolved model; `None` when it never appeared.
    pub model: Option<String>,
    pub phases: Vec<PhaseResult>,
    /// Wall and monotonic time of the dispatch start (`None`: nothing ran).
    pub started: Option<(SystemTime, Instant)>,
    pub first_sent: Option<Instant>,
    pub dispatch: DispatchDoc,
    /// The whole run's preflight.
    pub preflight: Option<PreflightReport>,
    /// Reasons found while running; the verdict may add more.
    pub validity: Validity,
    pub telemetry: Option<TelemetryRun>,
    /// The in-process simulator, still running: `finish` stops it after
    /// telemetry's last scrape, so the run-end snapshot still reaches it.
    pub sim: Option<SimRun>,
    /// The KV reset before the first phase, when one was asked for.
    pub kv_reset: Option<KvResetDoc>,
    /// The warm-up before the first phase, when one was asked for.
    pub prime: Option<PrimeDoc>,
}

impl RunOutcome {
    fn empty(plan: &RunPlan, model: Option<String>, validity: Validity) -> Self {
        RunOutcome {
            model,
            phases: plan
                .phases
                .iter()
                .map(|p| PhaseResult {
                    name: p.name.clone(),
                    include_in_summary: p.include_in_summary,
                    start: None,
                    end: None,
                    acc: Accumulator::default(),
                })
                .collect(),
            started: None,
            first_sent: None,
            dispatch: DispatchDoc::default(),
            preflight: None,
            validity,
            telemetry: None,
            sim: None,
            kv_reset: None,
            prime: None,
        }
    }
}

/// Runs the plan into `rd`.
pub async fn execute(
    plan: &RunPlan,
    workload: WorkloadInstance,
    checker: Option<WorkloadInstance>,
    client: Option<Client>,
    tokens: Arc<TokenCounter>,
    rd: &RunDir,
) -> anyhow::Result<RunOutcome> {
    // The simulator comes first: the client, telemetry's URLs and the KV
    // disk all come from where it runs.
    let sim = match &plan.sim {
        Some(s) => Some(SimRun::start(s, &rd.path().join("sim-cache")).await?),
        None => None,
    };
    let (client, endpoint) = match (&sim, client) {
        (Some(s), _) => (
            Client::with_clock(
                &s.base_url(),
                Duration::from_secs_f64(plan.client.timeout_s),
                plan.client.arrival_clock,
            )
            .context("the simulator's endpoint")?
            .with_max_response_bytes(plan.client.max_response_bytes),
            s.base_url(),
        ),
        (None, Some(c)) => (c, plan.endpoint.clone()),
        (None, None) => anyhow::bail!("no client and no simulator: the plan is inconsistent"),
    };
    let sim_info = sim.as_ref().map(|s| (endpoint.as_str(), s.info()));
    let mut telemetry = match &plan.telemetry {
        Some(cfg) => {
            let mut cfg = cfg.clone();
            if let Some(s) = &sim {
                s.point_telemetry(&mut cfg);
            }
            Some(
                TelemetryRun::start(cfg, plan.phases.iter().map(|p| p.name.clone()).collect())
                    .await,
            )
        }
        None => None,
    };
    if !plan.quiet {
        match &sim {
            Some(s) => eprintln!(
                "sparkhost: {} → SIMULATED engine {} ({}, tier mode {:?}) at {endpoint} (run {})",
                crate::terminal::safe(&plan.label()),
                plan.endpoint,
                s.info().profile.name,
                s.info().tier_mode,
                rd.path().display()
            ),
            None => eprintln!(
                "sparkhost: {} → {} (run {})",
                crate::terminal::safe(&plan.label()),
                plan.endpoint,
                rd.path().display()
            ),
        }
        // A load that is not the flag's is said once, where the user looks.
        if let Some(line) = super::loads::announcement(&plan.dispatch.phases, &plan.load_sources) {
            eprintln!("sparkhost: phase loads: {line}");
        }
    }

    let mut validity = Validity::default();
    let resolved = models::wait_for_model(
        &client,
        plan.model.wanted.as_deref(),
        plan.model.timeout,
        plan.model.poll,
        1,
        sim.is_none() && !plan.model.wait_if_refused,
    )
    .await;
    let model = match resolved {
        Ok(m) => m,
        Err(e) => {
            // An HTTP answer (401, 404, …) is something there, with its own hint.
            let e = if sim.is_none() && !e.contains("models listed") && !e.contains("answered HTTP")
            {
                // Most often nothing is running there yet: say so, and how to
                // try sparkhost without a server.
                let hint = format!(
                    "nothing answered at {endpoint}: start a server there, or use `--endpoint sim` (or sim:tiny) for sparkhost's built-in SIMULATED engine"
                );
                eprintln!("sparkhost: {hint}");
                format!("{e}; {hint}")
            } else {
                e
            };
            validity.invalidate(InvalidReason::ModelUnavailable, e);
            write_docs(plan, rd, None, None, sim_info, None)?;
            let mut out = RunOutcome::empty(plan, None, validity);
            out.telemetry = telemetry;
            out.sim = sim;
            return Ok(out);
        }
    };

    let server_build = crate::hygiene::server_build(&client).await;

    // The whole plan, checked before anything is sent: a second instance
    // of the workload plans it through the preflight rule and is dropped.
    let whole = match (checker, plan.feed.preflight) {
        (Some(c), Some(pf)) => Some(whole_plan(c, pf, tokens.clone(), plan.feed.batch_max).await?),
        _ => None,
    };
    // A failed whole-plan check still lets the feed plan and record the
    // initial window (the manifest shows what was planned), sending nothing.
    let whole_failed = whole.as_ref().filter(|w| w.failed).cloned();
    let whole_plan_doc = whole.and_then(|w| w.whole_plan);

    let mut feed = feed::spawn(
        Box::new(workload),
        plan.phases.clone(),
        FeedConfig {
            model: model.clone(),
            stream: plan.feed.stream,
            stream_usage: plan.feed.stream_usage,
            batch_max: plan.feed.batch_max,
            lookahead: plan.feed.lookahead,
            preflight: plan.feed.preflight,
            refuse: whole_failed.is_some(),
        },
        tokens.clone(),
        rd.jsonl("request_manifest.jsonl")?,
        rd.jsonl("prompts_manifest.jsonl")?,
    );
    // The manifest holds the initial plan before anything is sent.
    let initial = (&mut feed.initial).await.unwrap_or_default();
    let initially_planned = initial.planned;
    tracing::info!(initially_planned, "initial plan written");
    if initial.preflight_failed {
        drop(feed.requests);
        drop(feed.responses);
        let mut report = join_feed(feed.thread).await?;
        // The whole plan's offenders, not only the window's.
        let planned = match whole_failed {
            Some(w) => {
                report.preflight = w;
                report.planned.max(report.preflight.checked)
            }
            None => {
                report.preflight.whole_plan = whole_plan_doc.clone();
                report.planned
            }
        };
        write_docs(
            plan,
            rd,
            Some(&model),
            Some(&report.preflight),
            sim_info,
            server_build.as_ref(),
        )?;
        validity.invalidate(
            InvalidReason::PromptPreflightFailed,
            format!(
                "{} of {} planned requests cannot fit the engine; nothing was sent (lower the prompt sizes or max tokens, or set --engine-max-input-tokens to the engine's real limit)",
                report.preflight.failure_count, planned
            ),
        );
        validity
            .invalid_details
            .extend(report.preflight.errors.iter().cloned());
        let mut out = RunOutcome::empty(plan, Some(model), validity);
        out.dispatch = DispatchDoc {
            planned,
            initially_planned,
            unsent: planned,
            ..Default::default()
        };
        out.preflight = Some(report.preflight);
        out.telemetry = telemetry;
        out.sim = sim;
        return Ok(out);
    }
    // The initial plan passed preflight (or preflight is off): what the run
    // was asked to do is now fully known.
    let initial_preflight = plan.feed.preflight.map(|_| PreflightReport {
        checked: initially_planned,
        whole_plan: whole_plan_doc.clone(),
        ..Default::default()
    });
    write_docs(
        plan,
        rd,
        Some(&model),
        initial_preflight.as_ref(),
        sim_info,
        server_build.as_ref(),
    )?;

    // Cache hygiene, after the plan is known good and before the first
    // send: empty the KV cache, then prime it with the warm-up.
    let kv_reset = match &plan.kv_reset {
        Some(r) => {
            let doc = crate::hygiene::reset(r, &endpoint).await;
            if !plan.quiet {
                eprintln!(
                    "sparkhost: KV reset ({} {}): {}",
                    doc.method,
                    doc.target,
                    if doc.ok {
                        "ok".to_owned()
                    } else {
                        doc.error.clone().unwrap_or_default()
                    }
                );
            }
            Some(doc)
        }
        None => None,
    };
    if let Some(doc) = kv_reset.as_ref().filter(|d| !d.ok) {
        drop(feed.requests);
        drop(feed.responses);
        let report = join_feed(feed.thread).await?;
        validity.invalidate(
            InvalidReason::KvResetFailed,
            format!(
                "the KV reset ({} {}) failed: {}; nothing was sent, since the cache may hold an earlier run's KV",
                doc.method,
                doc.target,
                doc.error.as_deref().unwrap_or("no detail")
            ),
        );
        let mut out = RunOutcome::empty(plan, Some(model), validity);
        out.dispatch = DispatchDoc {
            planned: report.planned,
            initially_planned,
            unsent: report.planned,
            ..Default::default()
        };
        out.telemetry = telemetry;
        out.sim = sim;
        out.kv_reset = kv_reset;
        return Ok(out);
    }
    let prime = match &plan.prime {
        Some(p) => {
            let doc = crate::hygiene::prime(&client, &model, p, tokens.clone(), plan.seed).await;
            if !plan.quiet {
                eprintln!(
                    "sparkhost: warm-up sent {} filler requests ({} prompt tokens, {} failed) in {:.1} s",
                    doc.requests, doc.prompt_tokens_sent, doc.failed, doc.elapsed_s
                );
            }
            Some(doc)
        }
        None => None,
    };

    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (alarm_tx, alarm_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(None);
    let (write_alarm_tx, write_alarm_rx) = tokio::sync::oneshot::channel::<String>();
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            if let Ok(e) = write_alarm_rx.await {
                tracing::error!("results write failed, stopping the run: {e}");
                let _ = stop_tx.send(Some(StopReason::WriteFailed(e)));
            }
        });
    }
    let base = Instant::now();
    let wall_base = Utc::now();
    let start_time = SystemTime::now();
    let progress = crate::progress::Progress::new(initially_planned, plan.quiet);
    let recorder = Recorder::new(
        rd.jsonl("requests.jsonl")?,
        base,
        wall_base,
        tokens.clone(),
        plan.phases
            .iter()
            .map(|p| (p.name.clone(), p.include_in_summary))
            .collect(),
        Some(feed.responses.clone()),
        Some(alarm_tx),
    )
    .with_progress(progress.clone())
    .with_write_alarm(write_alarm_tx);
    let recorder = if plan.store_responses {
        let store = crate::results::responses::ResponseStore::create(rd.path())
            .context("creating responses/ for --store-responses")?;
        recorder.with_responses(store)
    } else {
        recorder
    };
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
    // Lives until the process exits (never aborted): once installed, the
    // handlers stop the signals' default action, so a listener must remain
    // for a signal during `finish` to mean anything.
    let signals = crate::signals::StopSignals::install().context("installing signal handlers")?;
    tokio::spawn(stop_on_signals(signals, stop_tx.clone(), plan.quiet));

    let runner = Runner {
        timer: crate::dispatch::timer::PreciseTimer::new(),
        boundaries: telemetry.as_mut().and_then(TelemetryRun::hook),
        client: client.clone(),
        lookahead: plan.dispatch.lookahead,
        max_in_flight: plan.dispatch.max_in_flight,
        duration: plan.dispatch.duration,
    };
    let prewarmed = if plan.dispatch.prewarm > 0 {
        client.prewarm(plan.dispatch.prewarm).await
    } else {
        0
    };
    // On a runtime worker, not this thread: request tasks it spawns and the
    // completions it awaits then stay on that worker's queue instead of
    // crossing threads through a futex for every request.
    let mut requests = feed.requests;
    let phase_runs = plan.dispatch.phases.clone();
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
    let mut feed_report = join_feed(feed.thread).await?;
    feed_report.preflight.whole_plan = whole_plan_doc;

    match &dispatch_end.stopped {
        Some(StopReason::ModelDropped(d)) => {
            validity.invalidate(InvalidReason::ModelDropped, d.clone())
        }
        Some(StopReason::Interrupted(sig) | StopReason::Abandoned(sig)) => validity.invalidate(
            InvalidReason::Interrupted,
            if dispatch_end.abandoned > 0 {
                format!(
                    "interrupted by {sig}; a second stop signal gave up on {} requests in flight",
                    dispatch_end.abandoned
                )
            } else {
                format!("interrupted by {sig}; requests in flight finished")
            },
        ),
        // The recorder's own error (below) names the file and what was lost;
        // a run that ran for its --duration is complete.
        Some(StopReason::WriteFailed(_) | StopReason::DurationReached) | None => {}
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
    if feed_report.preflight.failed {
        validity.invalidate(
            InvalidReason::PromptPreflightFailed,
            feed_report
                .error
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        );
    } else if let Some(e) = feed_report
        .error
        .as_ref()
        .or(dispatch_end.workload_error.as_ref())
    {
        // The manifest's writer failing is the results disk, not the workload.
        let reason = if matches!(&**e, crate::plan::PlanError::Write(_)) {
            InvalidReason::ResultsWriteFailed
        } else {
            InvalidReason::WorkloadFailed
        };
        validity.invalidate(reason, e.to_string());
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
        let all = super::finish::merged(recorder.phases.iter());
        validity.invalidate(
            InvalidReason::NoSuccessfulRequests,
            format!(
                "all {} requests failed: {:?}",
                recorder.recorded,
                all.errors_by_kind()
            ),
        );
    }
    let dispatch = DispatchDoc {
        planned: feed_report.planned,
        initially_planned,
        recorded: recorder.recorded,
        prewarmed_connections: prewarmed as u64,
        // Every planned request is in the manifest; whatever has no row was
        // never sent, whether it waited in the scheduler or in the feed's channel.
        unsent: feed_report
            .planned
            .saturating_sub(recorder.recorded + dispatch_end.abandoned)
            .max(dispatch_end.unsent),
        phases_completed: dispatch_end.phases_completed as u64,
        abandoned_in_flight: dispatch_end.abandoned,
        stopped_by_duration: dispatch_end.stopped == Some(StopReason::DurationReached),
    };
    Ok(RunOutcome {
        model: Some(model),
        phases: recorder.phases,
        started: Some((start_time, base)),
        first_sent: recorder.first_sent,
        dispatch,
        preflight: Some(feed_report.preflight),
        validity,
        telemetry,
        sim,
        kv_reset,
        prime,
    })
}

fn write_docs(
    plan: &RunPlan,
    rd: &RunDir,
    model: Option<&str>,
    preflight: Option<&PreflightReport>,
    sim: Option<(&str, &sparkhost_kvbm::SimInfo)>,
    server: Option<&ServerBuildDoc>,
) -> anyhow::Result<()> {
    rd.write_json("config.json", &plan.config_doc(model, preflight))?;
    rd.write_json("manifest.json", &plan.manifest_doc(model, sim, server))?;
    Ok(())
}

/// Runs the whole-plan check on its own thread (guest calls may block),
/// like the plan feed.
async fn whole_plan(
    checker: WorkloadInstance,
    pf: feed::Preflight,
    tokens: Arc<TokenCounter>,
    batch_max: u32,
) -> anyhow::Result<PreflightReport> {
    let thread = std::thread::Builder::new()
        .name("plan-check".into())
        .spawn(move || {
            let mut checker = checker;
            let mut report = PreflightReport::default();
            feed::check_whole_plan(
                &mut checker,
                pf,
                &tokens,
                batch_max,
                crate::limits::PREFLIGHT_PLAN_MAX,
                &mut report,
            );
            report
        })
        .context("starting the whole-plan check")?;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("joining the whole-plan check")?
        .map_err(|_| anyhow::anyhow!("the whole-plan check panicked"))
}

async fn join_feed(thread: std::thread::JoinHandle<FeedReport>) -> anyhow::Result<FeedReport> {
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("joining the plan feed")?
        .map_err(|_| anyhow::anyhow!("the plan feed thread panicked"))
}

/// The first stop signal drains the run; the second gives up on what is in
/// flight and arms the last-resort exit.
async fn stop_on_signals(
    mut signals: crate::signals::StopSignals,
    stop: watch::Sender<Option<StopReason>>,
    quiet: bool,
) {
    let Some(first) = signals.next().await else {
        return;
    };
    let _ = stop.send(Some(StopReason::Interrupted(first.name())));
    if !quiet {
        eprintln!(
            "\nsparkhost: {}: no new requests; waiting for those in flight (send it again to stop waiting)",
            first.name()
        );
    }
    let Some(second) = signals.next().await else {
        return;
    };
    let _ = stop.send(Some(StopReason::Abandoned(second.name())));
    eprintln!(
        "sparkhost: {} again: giving up on requests in flight, writing what was measured",
        second.name()
    );
    crate::signals::exit_after_last_resort(crate::commands::Exit::Invalid as u8);
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
