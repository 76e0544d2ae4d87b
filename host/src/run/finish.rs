//! What a run means, written once: telemetry closed, the verdict, the run's
//! validity, `summary.json` (with goodput when SLOs were given),
//! `histograms.hlog`, the report, and the table on stdout. [`conclude`]
//! is the part after telemetry, shared with `recover`, which rebuilds the
//! same documents from a killed run's rows.

use std::collections::BTreeMap;

use super::execute::RunOutcome;
use super::plan::{KvModeInfo, ReportPlan, RunPlan};
use crate::analysis::slo::Slo;
use crate::evidence::{InvalidReason, Validity};
use crate::results::documents::{
    Excluded, OverallSummary, PhaseDoc, ReasonName, ServerSide, SummaryDoc, TelemetryDoc,
    WorkloadDoc, WorkloadId,
};
use crate::results::recorder::PhaseResult;
use crate::results::rundir::RunDir;
use crate::results::summary::{self, Accumulator, LogEntry, PhaseSummary};
use crate::telemetry::TelemetryOutcome;
use sparkhost_collectors::RunErrors;

/// The accumulators of `phases`, merged.
pub fn merged<'a>(phases: impl Iterator<Item = &'a PhaseResult>) -> Accumulator {
    let mut all = Accumulator::default();
    for p in phases {
        all.merge(&p.acc);
    }
    all
}

/// The run's summary and its validity, after the verdict.
pub struct Finished {
    pub summary: SummaryDoc,
    pub validity: Validity,
}

/// What the closing documents need to know about a run besides its
/// results: from the plan of a live run, or from a killed run's
/// `manifest.json` and command line (`recover`).
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub run_id: String,
    pub created_utc: String,
    pub workload: WorkloadDoc,
    pub stream: bool,
    pub kv: KvModeInfo,
    pub variant_tags: Vec<String>,
    pub tokenizer_id: String,
    pub verdict_policy: sparkhost_collectors::Policy,
    pub slo: Option<Slo>,
    pub device_profile: Option<crate::devprofile::DeviceProfile>,
    pub report: Option<ReportPlan>,
    pub quiet: bool,
}

impl RunFacts {
    pub fn of(plan: &RunPlan) -> Self {
        RunFacts {
            run_id: plan.run_id.clone(),
            created_utc: plan.created_utc.clone(),
            workload: plan.workload.doc.clone(),
            stream: plan.client.stream,
            kv: plan.kv.clone(),
            variant_tags: plan.variant_tags.clone(),
            tokenizer_id: plan.tokenizer_id.clone(),
            verdict_policy: plan.verdict_policy.clone(),
            slo: plan.slo.clone(),
            device_profile: plan.device_profile.clone(),
            report: plan.report.clone(),
            quiet: plan.quiet,
        }
    }
}

/// A run's results, once telemetry is closed.
pub struct Concluded {
    pub model: Option<String>,
    pub phases: Vec<PhaseResult>,
    pub started: Option<(std::time::SystemTime, std::time::Instant)>,
    pub dispatch: crate::results::documents::DispatchDoc,
    pub preflight: Option<crate::feed::PreflightReport>,
    pub validity: Validity,
    pub telemetry: TelemetryOutcome,
    pub simulator: Option<sparkhost_kvbm::SimInfo>,
    pub kv_reset: Option<crate::results::documents::KvResetDoc>,
    pub prime: Option<crate::results::documents::PrimeDoc>,
    /// What the run cost the client; `None` when it is not this process
    /// (`recover`).
    pub harness: Option<crate::harness::HarnessCost>,
}

pub async fn finish(plan: &RunPlan, rd: &RunDir, run: RunOutcome) -> anyhow::Result<Finished> {
    let RunOutcome {
        model,
        phases,
        started,
        first_sent,
        dispatch,
        preflight,
        validity,
        telemetry,
        sim,
        kv_reset,
        prime,
    } = run;
    let telemetry = match telemetry {
        Some(t) => t.close().await,
        None => TelemetryOutcome::default(),
    };
    let simulator = sim.as_ref().map(|s| s.info().clone());
    if let Some(s) = sim {
        s.shutdown().await;
    }
    let harness = crate::harness::measure(first_sent, Some(plan.workload.from_cache));
    conclude(
        &RunFacts::of(plan),
        rd,
        Concluded {
            model,
            phases,
            started,
            dispatch,
            preflight,
            validity,
            telemetry,
            simulator,
            kv_reset,
            prime,
            harness: Some(harness),
        },
    )
}

/// The verdict, `summary.json`, `histograms.hlog`, the report and the table.
pub fn conclude(plan: &RunFacts, rd: &RunDir, run: Concluded) -> anyhow::Result<Finished> {
    let Concluded {
        model,
        phases,
        started,
        dispatch,
        preflight,
        mut validity,
        telemetry,
        simulator,
        kv_reset,
        prime,
        harness,
    } = run;
    let all = merged(phases.iter());
    let errors = RunErrors {
        total_requests: all.requests,
        failed_requests: all.errors.values().sum(),
        by_kind: all.errors_by_kind(),
        unary_answers_to_stream: all.unary_answers_to_stream,
    };
    let mut policy = plan.verdict_policy.clone();
    if let Some(info) = &simulator {
        // The simulator is the server: its own sizes and window are exact.
        policy.kv_block_bytes = Some(info.block_bytes);
        policy.kv_disk_block_bytes = Some(info.disk_slot_bytes);
        policy.hit_rate_window_requests = u64::from(info.profile.cache_stats_max_requests);
    }
    let verdict = crate::telemetry::verdict(
        plan.kv.mode,
        &telemetry,
        &phases,
        errors,
        rd.path(),
        !validity.is_valid(),
        policy,
    );
    if let Err(e) = sparkhost_collectors::verdict::write(rd.path(), &verdict) {
        validity.invalidate(
            InvalidReason::ResultsWriteFailed,
            format!("verdict.json: {e}"),
        );
    }
    if let Some((reason, detail)) = verdict
        .invalid_reason
        .and_then(|code| InvalidReason::from_verdict(code, &verdict.details))
    {
        validity.invalidate(reason, detail);
    }

    let phase_summaries: Vec<PhaseSummary> = phases
        .iter()
        .map(|p| p.acc.summarize(&p.name, p.include_in_summary))
        .collect();
    let phase_docs = phase_summaries
        .iter()
        .map(|p| phase_doc(p, &telemetry))
        .collect();
    let overall_measured =
        merged(phases.iter().filter(|p| p.include_in_summary)).summarize("overall", true);
    let overall_summary = if validity.is_valid() {
        OverallSummary::Measured(Box::new(overall_measured.clone()))
    } else {
        OverallSummary::Excluded(Excluded {
            phase: "overall".into(),
            scenario: plan.workload.name.clone(),
            excluded: true,
            reason: validity.invalid_reason.map(ReasonName::Known),
            details: validity.invalid_details.clone(),
        })
    };
    let goodput = match (&plan.slo, started) {
        (Some(slo), Some(_)) => {
            let included: Vec<&PhaseSummary> = phase_summaries
                .iter()
                .filter(|p| p.include_in_summary)
                .collect();
            match crate::analysis::slo::goodput_of_rows(rd.path(), slo, &included) {
                Ok(g) => Some(g),
                Err(e) => {
                    eprintln!("warning: goodput not computed: {e:#}");
                    None
                }
            }
        }
        _ => None,
    };
    let disk_ceiling = plan
        .device_profile
        .as_ref()
        .map(|p| disk_ceiling(p, &phases, &telemetry, simulator.is_some()));
    let reuse_verify_identity = (plan.workload.name == "reuse_verify")
        .then(|| crate::hygiene::reuse_verify_identity(&rd.path().join("request_manifest.jsonl")))
        .and_then(|r| {
            r.map_err(|e| tracing::warn!("reuse_verify identity not computed: {e}"))
                .ok()
        });
    let summary = SummaryDoc {
        run_id: plan.run_id.clone(),
        created_utc: plan.created_utc.clone(),
        run_valid: validity.is_valid(),
        invalid_reason: validity.invalid_reason.map(ReasonName::Known),
        invalid_details: validity.invalid_details.clone(),
        model_id: model,
        scenario: plan.workload.name.clone(),
        workload: WorkloadId {
            name: plan.workload.name.clone(),
            version: plan.workload.version.clone(),
        },
        stream: plan.stream,
        tier_mode: plan.kv.tier_mode().into(),
        kv_mode: plan.kv.doc(),
        variant_tags: plan.variant_tags.clone(),
        tokenizer: plan.tokenizer_id.clone(),
        request_manifest_path: "request_manifest.jsonl".into(),
        dispatch,
        preflight,
        phase_summaries: phase_docs,
        overall_summary: Some(overall_summary),
        timing_error_budget: Some(overall_measured.timing_error_budget.clone()),
        overall_measured: Some(overall_measured),
        verdict: Some(verdict),
        telemetry: TelemetryDoc {
            enabled: telemetry.enabled,
            sources: match telemetry.report.as_ref() {
                Some(r) => Some(serde_json::to_value(&r.sources)?),
                None => None,
            },
            kv_disk_device: telemetry
                .report
                .as_ref()
                .and_then(|r| r.kv_disk_device.clone()),
        },
        harness: harness.unwrap_or_default(),
        goodput,
        notes: NOTES.iter().map(|s| s.to_string()).collect(),
        simulator,
        disk_ceiling,
        kv_reset,
        prime,
        reuse_verify_identity,
    };
    rd.write_json("summary.json", &summary)?;
    if let Some((start_time, base)) = started {
        let entries: Vec<LogEntry<'_>> = phases
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
        match summary::interval_log(start_time, &entries) {
            Ok(bytes) => rd.write_bytes("histograms.hlog", &bytes)?,
            Err(e) => tracing::warn!("cannot write histograms.hlog: {e}"),
        }
    }
    if let Some(report) = &plan.report {
        // A report is a view of the results, not a result: failing to render
        // one never invalidates a run, and `sparkhost report` can retry.
        match crate::report::generate_report(rd.path(), report.generator.as_ref(), &report.options)
        {
            Ok(files) => tracing::info!("report files: {files:?}"),
            Err(e) => eprintln!(
                "warning: report not generated (retry with `sparkhost report {}`): {e:#}",
                rd.path().display()
            ),
        }
    }
    if !plan.quiet {
        print_table(&phase_summaries, &summary, &validity, rd);
    }
    Ok(Finished { summary, validity })
}

const NOTES: [&str; 3] = [
    "Latencies are measured from the actual send; *_from_intended include the harness's scheduling delay (coordinated omission corrected).",
    "TTFT is the first chunk carrying generated text; TTFC is the first SSE event of any kind; unary requests have neither.",
    "ITL and TPOT are per token: a chunk carrying k tokens contributes k samples.",
];

/// Each phase's reads from the KV disk (its own delta when telemetry
/// resolved one, else the primary block device's) against the profile.
fn disk_ceiling(
    profile: &crate::devprofile::DeviceProfile,
    phases: &[PhaseResult],
    telemetry: &TelemetryOutcome,
    simulated: bool,
) -> crate::results::documents::DiskCeilingDoc {
    let kv_disk = telemetry
        .report
        .as_ref()
        .and_then(|r| r.kv_disk_device.clone());
    let rows: Vec<crate::devprofile::PhaseDisk<'_>> = phases
        .iter()
        .filter_map(|p| {
            let d = telemetry.phase(&p.name)?;
            let (dev, delta) = match kv_disk
                .as_deref()
                .and_then(|k| d.os_io.block_devices_delta.get(k).map(|x| (k, x)))
            {
                Some((k, x)) => (Some(k), x),
                None => (
                    d.os_io.block_device.as_deref(),
                    d.os_io.block_device_delta.as_ref()?,
                ),
            };
            Some(crate::devprofile::PhaseDisk {
                phase: &p.name,
                block_device: dev,
                read_bytes: delta.read_bytes_delta,
                busy_ms: delta.after.io_ms.saturating_sub(delta.before.io_ms),
            })
        })
        .collect();
    let run_device = kv_disk
        .as_deref()
        .or_else(|| rows.iter().find_map(|r| r.block_device));
    crate::devprofile::disk_ceiling(profile, &rows, run_device, simulated)
}

fn phase_doc(p: &PhaseSummary, telemetry: &TelemetryOutcome) -> PhaseDoc {
    let mut doc = PhaseDoc {
        stats: p.clone(),
        ..Default::default()
    };
    if let Some(d) = telemetry.phase(&p.phase) {
        doc.phase_deltas_stem = Some(sparkhost_collectors::common::file_safe(&p.phase));
        doc.kvbm_metrics_delta = serde_json::to_value(&d.kvbm).ok();
        doc.io_delta = serde_json::to_value(&d.os_io).ok();
        doc.nvme_delta = serde_json::to_value(&d.nvme).ok();
        doc.gpu_delta = serde_json::to_value(&d.gpu).ok();
        // The server's own view of the phase, next to the client's.
        doc.server_side_ms = Some(ServerSide {
            source: d.frontend.url.clone(),
            available: d.frontend.available,
            ttft: serde_json::to_value(&d.frontend.ttft_ms).unwrap_or_default(),
            itl: serde_json::to_value(&d.frontend.itl_ms).unwrap_or_default(),
            request_duration: serde_json::to_value(&d.frontend.request_duration_ms)
                .unwrap_or_default(),
        });
    }
    doc
}

fn print_table(phases: &[PhaseSummary], summary: &SummaryDoc, validity: &Validity, rd: &RunDir) {
    let Some(overall) = summary.overall_measured.as_ref() else {
        return;
    };
    let f = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    let mut out = String::new();
    out.push_str(&format!(
        "{:<14} {:>6} {:>5} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}\n",
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
    ));
    let empty = BTreeMap::new();
    for p in phases.iter().chain(std::iter::once(overall)) {
        let lat = if p.latency_ms.is_empty() {
            &empty
        } else {
            &p.latency_ms
        };
        let l = |m: &str, q: fn(&summary::Stats) -> Option<f64>| lat.get(m).and_then(q);
        out.push_str(&format!(
            "{:<14} {:>6} {:>5} {:>8.2} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9.1} {:>10}\n",
            if p.include_in_summary || p.phase == "overall" {
                p.phase.clone()
            } else {
                format!("({})", p.phase)
            },
            p.total_requests,
            p.error_requests,
            p.req_per_s,
            f(l("ttft", |s| s.p50)),
            f(l("ttft", |s| s.p99)),
            f(l("itl", |s| s.p50)),
            f(l("itl", |s| s.p99)),
            f(l("e2e", |s| s.p50)),
            f(l("e2e", |s| s.p99)),
            p.output_tokens_per_s,
            f(l("schedule_lateness", |s| s.p99)),
        ));
    }
    out.push_str("latencies in ms; (phase) = not in the overall summary\n");
    if let Some(s) = &summary.simulator {
        out.push_str(&format!(
            "SIMULATED: the endpoint was sparkhost's simulated engine (profile {}, tier mode {:?}); these figures come from its model, not from a serving engine\n",
            s.profile.name, s.tier_mode
        ));
    }
    if !overall.errors_by_kind.is_empty() {
        out.push_str(&format!("errors: {:?}\n", overall.errors_by_kind));
    }
    if let Some(c) = &summary.disk_ceiling {
        out.push_str(&format!("disk ceiling: {}\n", c.statement));
    }
    if let Some(r) = &summary.reuse_verify_identity {
        out.push_str(&format!("reuse_verify identity: {}\n", r.verdict));
    }
    match validity.invalid_reason {
        None => out.push_str(&format!("run valid: {}\n", rd.path().display())),
        Some(r) => {
            out.push_str(&format!(
                "run INVALID ({}): {}\n",
                r.as_str(),
                rd.path().display()
            ));
            for d in &validity.invalid_details {
                out.push_str(&format!("  - {d}\n"));
            }
        }
    }
    // A closed stdout (`| head`) must not fail a finished run.
    use std::io::Write;
    // Phase names and details come from the workload.
    let _ = std::io::stdout()
        .lock()
        .write_all(crate::terminal::safe(&out).as_bytes());
}
