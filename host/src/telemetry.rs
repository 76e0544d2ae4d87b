//! Wires the collectors into a run: a snapshot at every phase boundary (the
//! dispatcher waits for it), phase deltas, and the verdict. The collectors'
//! configuration and policy come in built (`cli::TelemetryArgs` builds them). Collection is blocking I/O, so it runs on blocking threads; a
//! source that cannot work fails soft inside the collectors crate.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sparkhost_collectors::verdict::ClientReuse;
use sparkhost_collectors::{
    Config, KvMode, PhaseDeltas, PhaseEvidence, Policy, ReuseOpportunity, RunErrors, Session,
    Snapshot, TelemetryReport, Verdict, VerdictInput,
};

use crate::results::recorder::PhaseResult;
use tokio::sync::mpsc;

use crate::dispatch::runner::{Boundary, BoundaryHook};

/// A running telemetry session and the task answering phase boundaries.
pub struct TelemetryRun {
    session: Arc<Session>,
    hook: Option<BoundaryHook>,
    task: tokio::task::JoinHandle<Vec<PhaseDeltas>>,
}

/// What telemetry left for the summary and the verdict.
#[derive(Default)]
pub struct TelemetryOutcome {
    pub enabled: bool,
    pub deltas: Vec<PhaseDeltas>,
    pub report: Option<TelemetryReport>,
}

impl TelemetryOutcome {
    pub fn evidence(&self) -> Vec<PhaseEvidence> {
        self.deltas.iter().map(PhaseDeltas::evidence).collect()
    }

    pub fn phase(&self, name: &str) -> Option<&PhaseDeltas> {
        self.deltas.iter().find(|d| d.phase == name)
    }
}

impl TelemetryRun {
    /// Starts the session (NVMe identity and SMART "pre" are read here).
    pub async fn start(cfg: Config, phase_names: Vec<String>) -> Self {
        let session = Arc::new(
            tokio::task::spawn_blocking(move || Session::start(cfg))
                .await
                .expect("starting telemetry does not panic"),
        );
        let (hook, mut rx) =
            mpsc::unbounded_channel::<(Boundary, tokio::sync::oneshot::Sender<()>)>();
        let s = session.clone();
        let task = tokio::spawn(async move {
            let mut before: HashMap<usize, Snapshot> = HashMap::new();
            let mut deltas = Vec::new();
            while let Some((b, ack)) = rx.recv().await {
                let (index, label) = match b {
                    Boundary::Before(i) => (i, format!("before_{}", phase_names[i])),
                    Boundary::After(i) => (i, format!("after_{}", phase_names[i])),
                };
                let s2 = s.clone();
                let snap = tokio::task::spawn_blocking(move || s2.snapshot(&label))
                    .await
                    .expect("snapshots do not panic");
                match b {
                    Boundary::Before(_) => {
                        before.insert(index, snap);
                    }
                    Boundary::After(_) => {
                        if let Some(start) = before.remove(&index) {
                            let s3 = s.clone();
                            let name = phase_names[index].clone();
                            let d = tokio::task::spawn_blocking(move || {
                                s3.phase_deltas(&name, &start, &snap)
                            })
                            .await
                            .expect("phase deltas do not panic");
                            deltas.push(d);
                        }
                    }
                }
                let _ = ack.send(());
            }
            deltas
        });
        TelemetryRun {
            session,
            hook: Some(hook),
            task,
        }
    }

    /// The dispatcher's end of the boundary channel.
    pub fn hook(&mut self) -> Option<BoundaryHook> {
        self.hook.take()
    }

    /// Stops sampling and writes the "post" documents. Call after the
    /// dispatcher has dropped its hook.
    pub async fn close(mut self) -> TelemetryOutcome {
        self.hook = None;
        let deltas = self.task.await.unwrap_or_default();
        let report = match Arc::try_unwrap(self.session) {
            Ok(session) => tokio::task::spawn_blocking(move || session.stop())
                .await
                .ok(),
            Err(_) => None,
        };
        TelemetryOutcome {
            enabled: true,
            deltas,
            report,
        }
    }
}

/// The run's verdict from telemetry evidence, the client's per-phase
/// figures and request errors. `host_invalid`: the host already found the
/// run invalid.
pub fn verdict(
    kv_mode: KvMode,
    outcome: &TelemetryOutcome,
    phases: &[PhaseResult],
    errors: RunErrors,
    run_dir: &Path,
    host_invalid: bool,
    mut policy: Policy,
) -> Verdict {
    let mut evidence = outcome.evidence();
    // The client's side of each phase's cross-check: the same usage the
    // requests.jsonl rows carry, summed as they were recorded.
    for e in &mut evidence {
        if let Some(p) = phases.iter().find(|p| p.name == e.phase) {
            e.client = Some(ClientReuse {
                requests: p.acc.requests,
                requests_without_usage: p.acc.requests_without_usage,
                prompt_tokens: p.acc.prompt_tokens,
                cached_tokens: p.acc.cached_tokens,
            });
        }
    }
    // Without telemetry there is nothing to find; say so without failing.
    policy.allow_missing_kvbm_metrics |= !outcome.enabled;
    sparkhost_collectors::evaluate(&VerdictInput {
        kv_mode,
        phases: &evidence,
        errors,
        reuse: ReuseOpportunity::from_manifest_file(&run_dir.join("request_manifest.jsonl")).ok(),
        host_invalid,
        policy,
    })
}
