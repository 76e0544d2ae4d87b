//! Wires the collectors into a run: configuration from flags, a snapshot at
//! every phase boundary (the dispatcher waits for it), phase deltas, and the
//! verdict. Collection is blocking I/O, so it runs on blocking threads; a
//! source that cannot work fails soft inside the collectors crate.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sparkhost_collectors::procio::CgroupTarget;
use sparkhost_collectors::{
    Config, KvMode, PhaseDeltas, PhaseEvidence, Policy, ReuseOpportunity, RunErrors, Session,
    Snapshot, TelemetryReport, Verdict, VerdictInput,
};
use tokio::sync::mpsc;

use crate::cli::TelemetryArgs;
use crate::dispatch::runner::{Boundary, BoundaryHook};

/// Builds the collectors' configuration; `Err` names an unknown collector.
pub fn config(
    a: &TelemetryArgs,
    run_dir: &Path,
    endpoint: &str,
    kvbm_expected: bool,
) -> Result<Config, String> {
    let mut c = Config::new(run_dir);
    c.interval = a.telemetry_interval;
    if !a.block_devices.is_empty() {
        c.block_devices = a.block_devices.clone();
    }
    c.process_pattern = (!a.process_regex.is_empty()).then(|| a.process_regex.clone());
    c.pids = a.pids.clone();
    c.cgroup = a.cgroup.clone().map(CgroupTarget::Path);
    c.container = a.container.clone();
    c.nvme_device = Some(a.nvme_device.clone());
    c.kvbm_metrics_url = Some(a.kvbm_metrics_url.clone());
    c.worker_metrics_url = Some(a.worker_metrics_url.clone());
    c.frontend_metrics_url = Some(
        a.frontend_metrics_url
            .clone()
            .unwrap_or_else(|| Config::metrics_url_for_endpoint(endpoint)),
    );
    c.metrics_timeout = a.metrics_timeout;
    c.kv_cache_dir = Some(a.kv_cache_dir.clone());
    if !a.cufile_log_dirs.is_empty() {
        c.cufile_log_dirs = a.cufile_log_dirs.clone();
    }
    c.save_raw_scrapes = !a.no_raw_scrapes;
    // B0 has no KVBM to ask; asking would only record a misleading failure.
    c.collectors.kvbm = kvbm_expected;
    for name in &a.no_collectors {
        let flag = match name.as_str() {
            "diskstats" => &mut c.collectors.diskstats,
            "processes" => &mut c.collectors.processes,
            "cgroup" => &mut c.collectors.cgroup,
            "memory" => &mut c.collectors.memory,
            "gpu" => &mut c.collectors.gpu,
            "nvme" => &mut c.collectors.nvme,
            "kvbm" => &mut c.collectors.kvbm,
            "frontend" => &mut c.collectors.frontend,
            "worker" => &mut c.collectors.worker,
            "logs" => &mut c.collectors.logs,
            "kv-cache-dir" => &mut c.collectors.kv_cache_dir,
            other => {
                return Err(format!(
                    "--no-collector {other:?} is not a collector (diskstats, processes, cgroup, memory, gpu, nvme, kvbm, frontend, worker, logs, kv-cache-dir)"
                ));
            }
        };
        *flag = false;
    }
    Ok(c)
}

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

/// The run's verdict from telemetry evidence and request errors.
pub fn verdict(
    kv_mode: &str,
    outcome: &TelemetryOutcome,
    errors: RunErrors,
    run_dir: &Path,
    host_invalid_reason: Option<String>,
    a: &TelemetryArgs,
) -> Verdict {
    let evidence = outcome.evidence();
    let policy = Policy {
        max_error_rate: a.max_error_rate,
        // Without telemetry there is nothing to find; say so without failing.
        allow_missing_kvbm_metrics: a.allow_missing_kvbm_metrics || !outcome.enabled,
        ..Policy::default()
    };
    sparkhost_collectors::evaluate(&VerdictInput {
        kv_mode: KvMode::parse(kv_mode).unwrap_or(KvMode::CpuDisk),
        phases: &evidence,
        errors,
        reuse: ReuseOpportunity::from_manifest_file(&run_dir.join("request_manifest.jsonl")).ok(),
        host_invalid_reason,
        policy,
    })
}
