//! [`RunPlan`]: everything a run needs, resolved once from the flags and the
//! workload's own description, before the run directory exists. A user
//! error (a flag, a param, the workload) stops here; from the run directory
//! on, failures are recorded in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::Utc;

use crate::analysis::slo::Slo;
use crate::cli::{ArrivalKind, RunArgs};
use crate::dispatch::client::Client;
use crate::dispatch::runner::PhaseRun;
use crate::feed::{Preflight, PreflightReport};
use crate::limits;
use crate::plan::{LoadModel, PhasePlan};
use crate::report::ReportOptions;
use crate::results::documents::{
    ClientParams, ConfigDoc, DataFile, HostInfo, KvModeDoc, KvModeField, ManifestDoc, PhaseDecl,
    PreflightDoc, ServerBuildDoc, WorkloadDoc,
};
use crate::sandbox::{DATA_DIR, DataGrants, Limits, Sandbox, WorkloadInfo, WorkloadInstance};
use crate::tokenize::TokenCounter;
use sparkhost_collectors::KvMode;

/// KV tier labels, as the seed harness recorded them.
#[derive(Debug, Clone, PartialEq)]
pub struct KvModeInfo {
    pub mode: KvMode,
    pub cpu_cache_gb: f64,
    pub disk_cache_gb: f64,
}

impl KvModeInfo {
    /// `--tier-mode` wins over `--kv-mode`; cache sizes default per mode as
    /// the seed's scripts set them.
    /// `fallback` when neither flag is given: the simulator's own B2, else
    /// `unspecified`.
    pub fn resolve(
        kv: Option<KvMode>,
        tier: Option<&str>,
        cpu: Option<f64>,
        disk: Option<f64>,
        fallback: KvMode,
    ) -> anyhow::Result<Self> {
        let kv = match tier.map(|t| t.trim().to_ascii_uppercase()) {
            None => kv.unwrap_or(fallback),
            Some(t) => match KvMode::ALL
                .into_iter()
                .find(|m| m.is_specified() && m.tier_mode() == t)
            {
                Some(m) => m,
                None => bail!("--tier-mode {t:?} is not one of B0, B1, B2"),
            },
        };
        Ok(KvModeInfo {
            mode: kv,
            cpu_cache_gb: cpu.unwrap_or(if kv.kvbm_enabled() { 8.0 } else { 0.0 }),
            disk_cache_gb: disk.unwrap_or(if kv.disk_tier_on() { 32.0 } else { 0.0 }),
        })
    }

    pub fn mode_str(&self) -> &'static str {
        self.mode.as_str()
    }

    pub fn tier_mode(&self) -> &'static str {
        self.mode.tier_mode()
    }

    pub fn kvbm_enabled(&self) -> bool {
        self.mode.kvbm_enabled()
    }

    pub fn doc(&self) -> KvModeField {
        KvModeField::Labels(KvModeDoc {
            mode: self.mode_str().into(),
            tier_mode: self.tier_mode().into(),
            kvbm_enabled: self.kvbm_enabled(),
            cpu_cache_gb: self.cpu_cache_gb,
            disk_cache_gb: self.disk_cache_gb,
        })
    }
}

/// The component that plans the run.
#[derive(Debug, Clone)]
pub struct WorkloadPlan {
    pub doc: WorkloadDoc,
    pub from_cache: bool,
}

/// How the plan feed prepares requests.
#[derive(Debug, Clone)]
pub struct FeedPlan {
    pub stream: bool,
    pub stream_usage: bool,
    pub batch_max: u32,
    pub lookahead: usize,
    pub preflight: Option<Preflight>,
}

/// How the dispatcher paces and connects.
#[derive(Debug, Clone)]
pub struct DispatchPlan {
    pub lookahead: usize,
    pub max_in_flight: usize,
    /// Keep-alive connections to open before the first phase.
    pub prewarm: usize,
    /// The phases as the dispatcher runs them: load and schedule seed each.
    pub phases: Vec<PhaseRun>,
    /// `--duration`: sending stops this long after the first phase starts.
    pub duration: Option<std::time::Duration>,
}

/// How the model is found.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    /// `None` takes the first model `/v1/models` lists.
    pub wanted: Option<String>,
    /// As the user typed it (`auto` included), for the manifest.
    pub requested: String,
    pub timeout: std::time::Duration,
    pub poll: std::time::Duration,
    /// `--endpoint` was typed: a refused connection may be a server still
    /// starting, so discovery keeps polling. Otherwise (the default, or
    /// SPARKHOST_ENDPOINT) nothing listening ends the run at once.
    pub wait_if_refused: bool,
}

/// The report made at the end, if any.
#[derive(Debug, Clone)]
pub struct ReportPlan {
    /// `--report-generator`, resolved (an `oci://` one is pulled before the run).
    pub generator: Option<crate::share::ComponentSource>,
    pub options: ReportOptions,
}

/// One run, resolved.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// `--stack`: the stack the run goes to.
    pub stack: Option<crate::results::documents::StackDoc>,
    pub run_id: String,
    pub results_root: PathBuf,
    pub created_utc: String,
    /// The command line as typed.
    pub command_line: Vec<String>,
    pub endpoint: String,
    /// `--endpoint sim[:PROFILE]`: the simulator `execute` starts.
    pub sim: Option<crate::simulate::SimPlan>,
    pub model: ModelPlan,
    pub kv: KvModeInfo,
    pub workload: WorkloadPlan,
    /// `--concurrency`/`--rate` (closed loop at 1 without either), for
    /// `config.json`'s run-level `load`; each phase's own is in `dispatch`.
    pub default_load: LoadModel,
    /// Why each phase runs the load it does (`run::loads`), in phase order.
    pub load_sources: Vec<super::loads::LoadSource>,
    pub phases: Vec<PhasePlan>,
    /// Effective params (workload defaults filled in).
    pub params: Vec<(String, String)>,
    pub data_files: Vec<DataFile>,
    pub seed: u64,
    pub tokenizer_id: String,
    pub client: ClientParams,
    pub feed: FeedPlan,
    pub dispatch: DispatchPlan,
    /// `None` with `--no-telemetry`.
    pub telemetry: Option<sparkhost_collectors::Config>,
    pub verdict_policy: sparkhost_collectors::Policy,
    pub sandbox: Limits,
    pub report: Option<ReportPlan>,
    pub slo: Option<Slo>,
    pub variant_tags: Vec<String>,
    pub quiet: bool,
    /// `--device-profile`: the disk ceiling to compare the KV disk with.
    pub device_profile: Option<crate::devprofile::DeviceProfile>,
    /// `--kv-reset-*`: emptied before the first phase.
    pub kv_reset: Option<crate::hygiene::ResetPlan>,
    /// `--prime-tokens`: the warm-up before the first phase.
    pub prime: Option<crate::hygiene::PrimePlan>,
    /// The stack profile's rendered engine config digest (set by a run
    /// started through a stack profile; `None` otherwise).
    pub stack_config_sha256: Option<String>,
    /// `--store-responses`: each response's text under `responses/`.
    pub store_responses: bool,
}

/// A plan and what it resolved to: the instantiated workload, the client,
/// the token counter.
pub struct Resolved {
    pub plan: RunPlan,
    /// Kept for the whole run: its epoch thread is what makes workload call
    /// deadlines fire.
    pub sandbox: Sandbox,
    pub workload: WorkloadInstance,
    /// A second instance, same seed and params, that the whole-plan
    /// preflight plans through before anything is sent (`None`: preflight
    /// off).
    pub checker: Option<WorkloadInstance>,
    /// `None` for a simulator, whose address is known once it runs.
    pub client: Option<Client>,
    pub tokens: Arc<TokenCounter>,
}

impl RunPlan {
    /// Resolves flags and the workload into a plan. Blocking: it compiles
    /// (or loads) and instantiates the component.
    pub fn resolve(mut args: RunArgs) -> anyhow::Result<Resolved> {
        let stack = apply_stack(&mut args)?;
        let stack_config_sha256 = stack.as_ref().map(|s| s.config_sha256.clone());
        let to_sim = crate::simulate::endpoint_profile(&args.endpoint.endpoint).is_some();
        if to_sim && args.kv_mode == Some(KvMode::Unspecified) {
            bail!(
                "--kv-mode unspecified: a simulator endpoint runs a known tier mode; give B0, B1 or B2 (default B2)"
            );
        }
        let kv = KvModeInfo::resolve(
            args.kv_mode,
            args.tier_mode.as_deref(),
            args.kv_cpu_cache_gb,
            args.kv_disk_cache_gb,
            if to_sim {
                KvMode::CpuDisk
            } else {
                KvMode::Unspecified
            },
        )?;
        let device_profile = match &args.hygiene.device_profile {
            Some(p) => Some(crate::devprofile::DeviceProfile::load(p).context("--device-profile")?),
            None => None,
        };
        let kv_reset = crate::hygiene::ResetPlan::from_args(&args.hygiene)?;
        let prime = crate::hygiene::PrimePlan::from_args(&args.hygiene)?;
        // The simulator reads a tokenizer.json; a model directory names one.
        let sim_tokenizer = args.tokenizer.as_deref().map(|t| {
            if t.is_dir() {
                t.join("tokenizer.json")
            } else {
                t.to_path_buf()
            }
        });
        // A bad endpoint is a flag error: say so before any work is done. A
        // simulator's address exists only once it runs, so its client is
        // made then.
        let mut sim = match crate::simulate::endpoint_profile(&args.endpoint.endpoint) {
            Some(spec) => Some(crate::simulate::SimPlan::for_run(
                spec,
                kv.mode,
                &args.sim,
                sim_tokenizer.as_deref(),
                &device_profile
                    .as_ref()
                    .map(crate::devprofile::DeviceProfile::sim_sets)
                    .unwrap_or_default(),
            )?),
            None => {
                check_no_sim_flags(&args.sim)?;
                None
            }
        };
        let client = match sim {
            Some(_) => None,
            None => Some(
                args.endpoint
                    .client_for(&args.endpoint.endpoint, args.timeout, args.arrival_clock)?
                    .with_max_response_bytes(args.max_response_bytes),
            ),
        };
        let mut load_flags = load_flags(&args)?;
        let tokens = Arc::new(match &args.tokenizer {
            Some(p) => TokenCounter::from_path(p).context("--tokenizer")?,
            None => match (client.as_ref(), sim.as_mut()) {
                (Some(c), _) => local_model_tokenizer(c, &args.model)?,
                // A simulator whose profile's model is a local directory
                // (`--sim-set model=DIR`): both sides count with its tokenizer.
                (None, Some(s))
                    if Path::new(&s.config.profile.model)
                        .join("tokenizer.json")
                        .is_file() =>
                {
                    let dir = PathBuf::from(&s.config.profile.model);
                    s.config.tokenizer = Some(dir.join("tokenizer.json"));
                    TokenCounter::from_path(&dir).with_context(|| {
                        format!("the simulator's model directory {}", dir.display())
                    })?
                }
                (None, _) => TokenCounter::Heuristic,
            },
        });
        let sandbox_limits = Limits::from(&args.sandbox);
        let sandbox = Sandbox::new(args.sandbox.cache_dir.clone(), sandbox_limits)?;
        // An oci:// workload or generator is pulled and verified here,
        // before the run directory exists: a registry error is a user error.
        let registry = args.sandbox.registry();
        crate::share::check_plain_http_used(
            registry.plain_http,
            &[
                Some(args.workload.as_path()),
                args.report_generator.as_deref(),
            ],
        )?;
        let source = crate::share::resolve(&args.workload, &registry)
            .with_context(|| format!("workload {}", args.workload.display()))?;
        let loaded = sandbox.load(&source.path)?;
        if let Some(pin) = &args.workload_sha256 {
            source.check_pin(&loaded.digest, pin)?;
        }
        let report_generator = match (&args.report_generator, args.no_report) {
            (Some(g), false) => Some(
                crate::share::resolve(g, &registry)
                    .with_context(|| format!("report generator {}", g.display()))?,
            ),
            _ => None,
        };
        let mut grants = DataGrants::default();
        for f in &args.data {
            grants.add(f)?;
        }
        let mut user_params = args.params.clone();
        for (_, v) in user_params.iter_mut() {
            if let Some(file) = v.strip_prefix('@') {
                *v = grants.add(Path::new(file))?;
            }
        }
        let data_files = grants
            .files()
            .iter()
            .map(|f| data_file(f))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Guest calls may do blocking WASI I/O (a granted data file), which
        // wasmtime-wasi runs through the current tokio runtime: leave the
        // async context for them.
        let preflight_on = args.engine_max_input_tokens > 0;
        let (workload, checker, info, params, phases) =
            in_blocking_context(|| -> anyhow::Result<_> {
                let mut inst = sandbox.instantiate(&loaded, tokens.clone(), args.seed, &grants)?;
                let info = inst.describe()?;
                load_flags.has_concurrency_param = info
                    .params
                    .iter()
                    .any(|p| p.name == super::loads::CONCURRENCY_PARAM);
                let (explicit, params) =
                    effective_params(&info, &user_params, &args, load_flags.param_value())?;
                inst.create(&explicit, args.seed)?;
                let phases = inst.phases()?;
                let checker = if preflight_on {
                    let mut c = sandbox.instantiate(&loaded, tokens.clone(), args.seed, &grants)?;
                    c.create(&explicit, args.seed)?;
                    Some(c)
                } else {
                    None
                };
                Ok((inst, checker, info, params, phases))
            })?;
        check_phases(&phases, &format!("{} {}", info.name, info.version))?;

        let run_id = args
            .run_id
            .clone()
            .unwrap_or_else(|| Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
        let telemetry = if args.telemetry.no_telemetry {
            None
        } else {
            Some(args.telemetry.collectors_config(
                &args.results_root.join(&run_id),
                &args.endpoint.api_root(),
                kv.mode.scrapes_kvbm(),
            ))
        };
        let lookahead = args.lookahead.max(1);
        let loads = super::loads::phase_loads(
            &phases,
            &load_flags,
            &format!("{} {}", info.name, info.version),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let phase_runs: Vec<PhaseRun> = phases
            .iter()
            .zip(&loads)
            .enumerate()
            .map(|(i, (p, (load, _)))| PhaseRun {
                name: p.name.clone(),
                load: *load,
                seed: phase_seed(args.seed, i),
            })
            .collect();
        let load_sources = loads.iter().map(|(_, s)| *s).collect();
        let prewarm = args
            .prewarm_connections
            .unwrap_or_else(|| default_prewarm(&phase_runs));
        let report = (!args.no_report).then(|| ReportPlan {
            generator: report_generator,
            options: ReportOptions::for_run(args.sandbox.cache_dir.clone(), sandbox_limits),
        });
        let plan = RunPlan {
            stack,
            run_id,
            results_root: args.results_root.clone(),
            created_utc: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            command_line: crate::dispatch::access::redact_argv(std::env::args()),
            endpoint: args.endpoint.endpoint.clone(),
            sim,
            model: ModelPlan {
                wanted: (args.model != "auto").then(|| args.model.clone()),
                requested: args.model.clone(),
                timeout: args.model_resolve_timeout,
                poll: args.model_resolve_poll,
                wait_if_refused: args.endpoint.endpoint_given,
            },
            kv,
            workload: WorkloadPlan {
                doc: WorkloadDoc {
                    path: args.workload.display().to_string(),
                    name: info.name.clone(),
                    version: info.version.clone(),
                    sha256: loaded.digest.clone(),
                    wit: format!("sparkhost:workload@{}", loaded.wit_version),
                    oci: source.oci.clone(),
                },
                from_cache: loaded.from_cache,
            },
            default_load: load_flags.given.unwrap_or(load_flags.default),
            load_sources,
            phases,
            params,
            data_files,
            seed: args.seed,
            tokenizer_id: tokens.id(),
            client: ClientParams {
                stream: args.stream,
                stream_usage: args.stream && !args.no_stream_usage,
                timeout_s: args.timeout.as_secs_f64(),
                arrival_clock: args.arrival_clock,
                max_response_bytes: args.max_response_bytes,
            },
            feed: FeedPlan {
                stream: args.stream,
                stream_usage: !args.no_stream_usage,
                batch_max: limits::PLAN_BATCH_MAX,
                lookahead,
                preflight: (args.engine_max_input_tokens > 0).then_some(Preflight {
                    engine_max_input_tokens: args.engine_max_input_tokens,
                    input_token_safety_margin: args.input_token_safety_margin,
                }),
            },
            dispatch: DispatchPlan {
                lookahead,
                max_in_flight: args.max_in_flight.max(1),
                prewarm,
                phases: phase_runs,
                duration: args.duration,
            },
            telemetry,
            verdict_policy: args.telemetry.policy(),
            sandbox: sandbox_limits,
            report,
            slo: args.slo.clone(),
            variant_tags: args.variant_tags.clone(),
            quiet: args.quiet,
            device_profile,
            kv_reset,
            prime,
            stack_config_sha256,
            store_responses: args.store_responses,
        };
        Ok(Resolved {
            plan,
            sandbox,
            workload,
            checker,
            client,
            tokens,
        })
    }

    /// `<name> <version>` of the workload, for messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.workload.doc.name, self.workload.doc.version)
    }

    /// The phases with the load each really runs and where it came from.
    fn phase_decls(&self) -> Vec<PhaseDecl> {
        self.phases
            .iter()
            .zip(&self.dispatch.phases)
            .zip(&self.load_sources)
            .map(|((p, r), source)| PhaseDecl {
                name: p.name.clone(),
                include_in_overall: p.include_in_summary,
                load: Some(r.load),
                load_source: Some(*source),
            })
            .collect()
    }

    fn params_map(&self) -> BTreeMap<String, String> {
        self.params.iter().cloned().collect()
    }

    /// `config.json`: written once the model is resolved (or known to be
    /// missing) and the initial plan is preflighted.
    pub fn config_doc(
        &self,
        model: Option<&str>,
        preflight: Option<&PreflightReport>,
    ) -> ConfigDoc {
        ConfigDoc {
            run_id: self.run_id.clone(),
            created_utc: self.created_utc.clone(),
            base_url: self.endpoint.clone(),
            model_id: model.unwrap_or(&self.model.requested).to_owned(),
            scenario: self.workload.doc.name.clone(),
            tokenizer: self.tokenizer_id.clone(),
            tier_mode: self.kv.tier_mode().into(),
            kv_mode: self.kv.doc(),
            client_request_parameters: self.client.clone(),
            load: Some(self.default_load),
            duration_s: self.dispatch.duration.map(|d| d.as_secs_f64()),
            params: self.params_map(),
            phases: self.phase_decls(),
            preflight: PreflightDoc {
                settings: self.feed.preflight,
                result: preflight.cloned(),
            },
            data_files: self.data_files.clone(),
            args: self.command_line.clone(),
        }
    }

    /// `manifest.json`: written with `config.json`. `sim`: the simulator's
    /// base URL and what it was.
    pub fn manifest_doc(
        &self,
        model: Option<&str>,
        sim: Option<(&str, &sparkhost_kvbm::SimInfo)>,
        server_build: Option<&ServerBuildDoc>,
    ) -> ManifestDoc {
        ManifestDoc {
            run_id: self.run_id.clone(),
            created_utc: self.created_utc.clone(),
            sparkhost_version: env!("CARGO_PKG_VERSION").into(),
            sparkhost_git_sha: crate::devprofile::GIT_SHA.into(),
            wasmtime_version: crate::sandbox::WASMTIME_VERSION.into(),
            host: HostInfo::current(),
            server_build: server_build.cloned(),
            stack_config_sha256: self.stack_config_sha256.clone(),
            device_profile_sha256: self.device_profile.as_ref().map(|d| d.sha256.clone()),
            workload: self.workload.doc.clone(),
            report_generator_oci: self
                .report
                .as_ref()
                .and_then(|r| r.generator.as_ref())
                .and_then(|g| g.oci.clone()),
            scenario: self.workload.doc.name.clone(),
            params: self.params_map(),
            seed: self.seed,
            tokenizer: self.tokenizer_id.clone(),
            data_files: self.data_files.clone(),
            tier_mode: self.kv.tier_mode().into(),
            kv_mode: self.kv.doc(),
            variant_tags: self.variant_tags.clone(),
            model_id_requested: self.model.requested.clone(),
            model_id_resolved: model.map(str::to_owned),
            base_url: sim.map_or_else(|| self.endpoint.clone(), |(url, _)| url.to_owned()),
            phases: self.phase_decls(),
            args: self.command_line.clone(),
            simulator: sim.map(|(_, info)| info.clone()),
            stack: self.stack.clone(),
        }
    }
}

/// Without `--tokenizer`: the tokenizer of the local model directory the
/// endpoint's model names (by its id or `root`), when there is one; else
/// the heuristic. A server that is not up yet gives the heuristic too (the
/// run then waits for it as usual).
fn local_model_tokenizer(client: &Client, model: &str) -> anyhow::Result<TokenCounter> {
    let wanted = (model != "auto").then_some(model);
    let probe = crate::dispatch::models::local_model_dir(client, wanted);
    let dir = match tokio::runtime::Handle::try_current() {
        Ok(h) => tokio::task::block_in_place(|| {
            h.block_on(async {
                tokio::time::timeout(limits::MODEL_DIR_PROBE_TIMEOUT, probe)
                    .await
                    .ok()
                    .flatten()
            })
        }),
        Err(_) => None,
    };
    match dir {
        Some(d) => TokenCounter::from_path(&d).with_context(|| {
            format!(
                "the endpoint's model names the local directory {}, whose tokenizer does not load (pass --tokenizer to choose one)",
                d.display()
            )
        }),
        None => Ok(TokenCounter::Heuristic),
    }
}

/// `--stack DIR`: points the run at the stack recorded there. A tier label
/// that disagrees with the stack's is refused here; what the server really
/// does is the verdict's `tier_mode_mismatch`.
fn apply_stack(args: &mut RunArgs) -> anyhow::Result<Option<crate::results::documents::StackDoc>> {
    use crate::results::documents::{StackDoc, StackFileDoc};
    let Some(dir) = &args.stack else {
        return Ok(None);
    };
    let state = crate::stack::supervise::State::load(dir).context("--stack")?;
    let dead: Vec<String> = state
        .alive()
        .into_iter()
        .filter(|(_, a)| !a)
        .map(|(n, _)| n)
        .collect();
    if !dead.is_empty() {
        anyhow::bail!(
            "--stack {}: {} not running; sparkhost stack status --state-dir {} says more",
            dir.display(),
            dead.join(", "),
            dir.display()
        );
    }
    let mode = format!("{:?}", state.tier_mode);
    let given = args
        .tier_mode
        .as_deref()
        .map(str::to_ascii_uppercase)
        .or_else(|| args.kv_mode.map(|m| m.tier_mode().to_ascii_uppercase()));
    if let Some(l) = given
        && l != mode
    {
        anyhow::bail!(
            "--tier-mode/--kv-mode {l} disagrees with --stack {}, which runs {mode} (profile {})",
            dir.display(),
            state.profile
        );
    }
    if crate::simulate::endpoint_profile(&args.endpoint.endpoint).is_some() {
        anyhow::bail!("--stack and --endpoint sim[:PROFILE] are two different servers; give one");
    }
    let given = args.endpoint.endpoint.trim_end_matches('/');
    if given != crate::cli::DEFAULT_ENDPOINT && given != state.endpoint {
        anyhow::bail!(
            "--endpoint {given} is not --stack {}'s endpoint {}; give one of them",
            dir.display(),
            state.endpoint
        );
    }
    args.tier_mode = Some(mode.clone());
    args.endpoint.endpoint = state.endpoint.clone();
    if let Some(u) = &state.kvbm_metrics_url {
        args.telemetry.kvbm_metrics_url = u.clone();
    }
    if let Some(d) = &state.disk_cache_dir {
        args.telemetry.kv_cache_dir = d.clone();
    }
    Ok(Some(StackDoc {
        profile: state.profile.clone(),
        source: state.source.clone(),
        tier_mode: mode,
        kvbm: state.kvbm,
        simulated: state.simulated,
        config_sha256: state.config_sha256.clone(),
        env_sha256: state.env_sha256.clone(),
        files: state
            .files
            .iter()
            .map(|f| StackFileDoc {
                name: f.name.clone(),
                sha256: f.sha256.clone(),
            })
            .collect(),
        started_utc: state.started_utc.clone(),
    }))
}

/// `--sim-*` flags without a simulator would be silently ignored.
fn check_no_sim_flags(a: &crate::cli::SimEndpointArgs) -> anyhow::Result<()> {
    let given = [
        ("--sim-cache-dir", a.sim_cache_dir.is_some()),
        ("--sim-set", !a.sim_set.is_empty()),
        ("--sim-lie", !a.sim_lies.is_empty()),
        (
            "--sim-kvbm-naming",
            a.sim_kvbm_naming != crate::cli::NamingArg::V1,
        ),
        (
            "--sim-disk-timing",
            a.sim_disk_timing != crate::cli::DiskTimingArg::Model,
        ),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
        bail!("{flag} only applies with --endpoint sim[:PROFILE]");
    }
    Ok(())
}

/// Runs `f` where blocking is allowed: through `block_in_place` inside a
/// multi-threaded runtime, directly elsewhere.
fn in_blocking_context<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(f),
        Err(_) => f(),
    }
}

fn data_file(f: &Path) -> anyhow::Result<DataFile> {
    use sha2::Digest;
    use std::io::Read;
    // Hashed in pieces: a data file may be far larger than what the host
    // should hold in memory at once.
    let mut file =
        std::fs::File::open(f).with_context(|| format!("reading data file {}", f.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading data file {}", f.display()))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(DataFile {
        path: f.display().to_string(),
        guest_path: format!(
            "{DATA_DIR}/{}",
            f.file_name().unwrap_or_default().to_string_lossy()
        ),
        sha256: hex::encode(hasher.finalize()),
        bytes,
    })
}

/// Each phase's open-loop schedule gets its own seed, derived from the
/// run's, so phases never replay one another's arrival pattern.
pub fn phase_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The largest closed-loop concurrency, or [`limits::PREWARM_OPEN_LOOP`] of
/// open-loop arrivals, at most [`limits::PREWARM_MAX`].
fn default_prewarm(phases: &[PhaseRun]) -> usize {
    phases
        .iter()
        .map(|p| match p.load {
            LoadModel::Closed { concurrency } => concurrency as usize,
            LoadModel::Constant { rate }
            | LoadModel::Poisson { rate }
            | LoadModel::Gamma { rate, .. } => {
                (rate * limits::PREWARM_OPEN_LOOP.as_secs_f64()).ceil() as usize
            }
        })
        .max()
        .unwrap_or(0)
        .min(limits::PREWARM_MAX)
}

/// `--concurrency`/`--rate` as given. Both at once is refused: one of
/// them would do nothing.
fn load_flags(args: &RunArgs) -> anyhow::Result<super::loads::LoadFlags> {
    let given = match (args.concurrency, args.rate) {
        (Some(c), Some(r)) => bail!(
            "--concurrency {c} and --rate {r}: a phase runs closed loop or open loop, not both; give one"
        ),
        (Some(concurrency), None) => Some(LoadModel::Closed { concurrency }),
        (None, Some(rate)) => Some(open_load(args, rate)),
        (None, None) => None,
    };
    if let Some(load) = &given {
        load.validate()
            .map_err(|e| anyhow::anyhow!("--concurrency/--rate/--gamma-shape: {e}"))?;
    }
    Ok(super::loads::LoadFlags {
        given,
        default: LoadModel::Closed { concurrency: 1 },
        override_phase_loads: args.override_phase_loads,
        has_concurrency_param: false,
    })
}

fn open_load(args: &RunArgs, rate: f64) -> LoadModel {
    match args.arrival {
        ArrivalKind::Constant => LoadModel::Constant { rate },
        ArrivalKind::Poisson => LoadModel::Poisson { rate },
        ArrivalKind::Gamma => LoadModel::Gamma {
            rate,
            shape: args.gamma_shape,
        },
    }
}

/// Params the user set (`--param`, then the shorthand flags), and the
/// effective set with `describe()` defaults filled in for the manifest. Only
/// the user's go to the workload, so it can tell a default from a choice.
type Params = Vec<(String, String)>;

/// The workload param the host fills with a fresh salt per run, and the
/// default that asks for it.
const SALT_PARAM: &str = "salt";
const SALT_PER_RUN: &str = "per-run";

/// `concurrency`: `--concurrency` for a workload that takes its phase loads
/// from its `concurrency` param (`run::loads`).
fn effective_params(
    info: &WorkloadInfo,
    user: &[(String, String)],
    args: &RunArgs,
    concurrency: Option<u32>,
) -> anyhow::Result<(Params, Params)> {
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
    for (k, v) in user {
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
    if let Some(c) = concurrency {
        let name = super::loads::CONCURRENCY_PARAM;
        match explicit.get(name) {
            Some(v) if v.trim() != c.to_string() => bail!(
                "--concurrency {c} and --param {name}={v} disagree: workload {} {} takes its phase loads from its {name} param; give one",
                info.name,
                info.version
            ),
            _ => {
                explicit.insert(name.to_owned(), c.to_string());
            }
        }
    }
    // A `salt` param defaulting to `per-run` asks for a fresh value each run
    // (the SDK's `salt` module): drawn here, it reaches the workload and
    // config.json, and `--param salt=VALUE` replays the run byte for byte.
    if info
        .params
        .iter()
        .any(|p| p.name == SALT_PARAM && p.default_value == SALT_PER_RUN)
        && !explicit.contains_key(SALT_PARAM)
    {
        explicit.insert(
            SALT_PARAM.to_owned(),
            format!("{:016x}", rand::random::<u64>()),
        );
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
    crate::plan::validate_phases(phases)
        .map_err(|e| anyhow::anyhow!("workload {label} declared bad phases: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_mode_overrides_kv_mode_and_sets_seed_defaults() {
        let k = KvModeInfo::resolve(
            Some(KvMode::CpuDisk),
            Some("b1"),
            None,
            None,
            KvMode::Unspecified,
        )
        .unwrap();
        assert_eq!((k.mode_str(), k.tier_mode()), ("cpu_only", "B1"));
        assert_eq!((k.cpu_cache_gb, k.disk_cache_gb), (8.0, 0.0));
        let k = KvModeInfo::resolve(
            Some(KvMode::Off),
            None,
            None,
            Some(4.0),
            KvMode::Unspecified,
        )
        .unwrap();
        assert!(!k.kvbm_enabled());
        assert_eq!(k.disk_cache_gb, 4.0);
        let e = KvModeInfo::resolve(
            Some(KvMode::Off),
            Some("B9"),
            None,
            None,
            KvMode::Unspecified,
        )
        .unwrap_err();
        assert!(e.to_string().contains("B0, B1, B2"), "{e}");
    }

    #[test]
    fn no_mode_given_is_the_fallback() {
        let k = KvModeInfo::resolve(None, None, None, None, KvMode::Unspecified).unwrap();
        assert_eq!(
            (k.mode_str(), k.tier_mode()),
            ("unspecified", "unspecified")
        );
        assert!(!k.kvbm_enabled() && k.mode.scrapes_kvbm());
        assert_eq!((k.cpu_cache_gb, k.disk_cache_gb), (0.0, 0.0));
        let sim = KvModeInfo::resolve(None, None, None, None, KvMode::CpuDisk).unwrap();
        assert_eq!(sim.tier_mode(), "B2");
        // `--tier-mode` takes the seed's three labels only.
        assert!(KvModeInfo::resolve(None, Some("unspecified"), None, None, KvMode::Off).is_err());
    }

    #[test]
    fn prewarm_covers_the_largest_phase_and_is_capped() {
        let phase = |load| PhaseRun {
            name: "p".into(),
            load,
            seed: 0,
        };
        assert_eq!(
            default_prewarm(&[
                phase(LoadModel::Closed { concurrency: 8 }),
                phase(LoadModel::Poisson { rate: 2000.0 }),
            ]),
            20
        );
        assert_eq!(
            default_prewarm(&[phase(LoadModel::Constant { rate: 1e9 })]),
            limits::PREWARM_MAX
        );
    }

    #[test]
    fn phase_seeds_differ_and_are_stable() {
        assert_ne!(phase_seed(1337, 0), phase_seed(1337, 1));
        assert_eq!(phase_seed(1337, 0), phase_seed(1337, 0));
    }
}
