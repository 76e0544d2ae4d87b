//! A profile and a tier mode → the exact stack: argv, environment, files,
//! readiness URLs, and the hash of all of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sparkhost_kvbm::TierMode;
use sparkhost_kvbm::engine_config;

use super::profile::{KVBM_DISK_ENV, KVBM_HOST_ENV, Profile, ProfileError, parse_timeout};
use crate::digest;
use crate::limits;

/// Where a stack lives on this machine.
#[derive(Debug, Clone)]
pub struct Context {
    /// Holds `stack.json` and the rendered files.
    pub state: PathBuf,
    pub logs: PathBuf,
    /// This binary, for profiles that run `sparkhost sim`.
    pub sparkhost: PathBuf,
    /// `--var NAME=VALUE`, applied over the profile's and its tier's vars.
    pub overrides: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RenderedFile {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    #[serde(skip)]
    pub content: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RenderedContainer {
    pub runtime: String,
    pub image: String,
    pub run_args: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RenderedProcess {
    pub name: String,
    pub argv: Vec<String>,
    /// Set on top of a cleared environment (see [`super::profile::INHERITED_ENV`]).
    pub env: BTreeMap<String, String>,
    /// Removed inside containers too (`env -u`): the tiers this mode has off.
    pub unset: Vec<String>,
    pub container: Option<RenderedContainer>,
    pub stop_grace_s: u64,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    pub profile: String,
    pub source: String,
    pub tier_mode: TierMode,
    pub simulated: bool,
    /// Whether KVBM runs: its metrics must exist iff this is true.
    pub kvbm: bool,
    pub endpoint: String,
    pub health_url: Option<String>,
    pub models: bool,
    pub kvbm_metrics_url: Option<String>,
    pub nats_client: Option<String>,
    pub nats_monitor: Option<String>,
    #[serde(skip)]
    pub ready_timeout: Duration,
    pub disk_cache_dir: Option<PathBuf>,
    pub disk_device: Option<String>,
    pub files: Vec<RenderedFile>,
    pub processes: Vec<RenderedProcess>,
    pub vars: BTreeMap<String, String>,
    /// sha256 of the rendered files, argv and set environment with free
    /// ports and this machine's paths as placeholders: equal on two machines
    /// iff they run the same stack.
    pub config_sha256: String,
    /// sha256 of the set environment of every process (same placeholders).
    pub env_sha256: String,
}

fn invalid(p: &Profile, field: impl Into<String>, problem: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        profile: p.name.clone(),
        field: field.into(),
        problem: problem.into(),
    }
}

/// Replaces `{name}` from `vars`. An unknown name is an error: a typo must
/// not reach a worker's command line as literal braces.
fn subst(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{s:?}: unclosed {{"))?;
        let key = &after[..end];
        let v = vars
            .get(key)
            .ok_or_else(|| format!("{s:?}: unknown placeholder {{{key}}}"))?;
        out.push_str(v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if out.len() > limits::STACK_MAX_VALUE_BYTES || out.contains('\0') {
        return Err(format!(
            "{s:?}: renders to more than {} bytes or contains NUL",
            limits::STACK_MAX_VALUE_BYTES
        ));
    }
    Ok(out)
}

fn truthy(p: &Profile, vars: &BTreeMap<String, String>, name: &str) -> Result<bool, ProfileError> {
    match vars.get(name).map(String::as_str) {
        Some("true") => Ok(true),
        Some("false") | None => Ok(false),
        Some(v) => Err(invalid(
            p,
            format!("vars.{name}"),
            format!("{v:?}: true or false"),
        )),
    }
}

/// A free loopback port in [`limits::STACK_AUTO_PORTS`]: below Linux's
/// ephemeral range, so outgoing connections do not take it between the pick
/// and the bind, and within Dynamo 1.6.1's i16 `DYN_SYSTEM_PORT`. It is
/// bound, read and released, so another process can still take it; `up`
/// reports that as a start failure.
fn free_port(taken: &mut Vec<u16>) -> Result<u16, String> {
    use std::hash::BuildHasher;
    let range = limits::STACK_AUTO_PORTS;
    let span = u64::from(range.end() - range.start()) + 1;
    let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    for i in 0..500u64 {
        let port = range.start() + (seed.wrapping_add(i.wrapping_mul(7919)) % span) as u16;
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return Ok(port);
        }
    }
    Err(format!("no free loopback port in {range:?}"))
}

/// Renders `profile` in `mode`. Free ports are picked here.
pub fn render(
    profile: &Profile,
    source: &str,
    mode: TierMode,
    ctx: &Context,
) -> Result<Rendered, ProfileError> {
    profile.check_mode(mode)?;
    let mut live = render_inner(profile, source, mode, ctx, false)?;
    let hashed = render_inner(profile, source, mode, ctx, true)?;
    let files: Vec<_> = hashed
        .files
        .iter()
        .map(|f| json!({"name": f.name, "content": f.content}))
        .collect();
    let procs: Vec<_> = hashed
        .processes
        .iter()
        .map(|p| json!({"name": p.name, "argv": p.argv, "env": p.env, "unset": p.unset, "container": p.container}))
        .collect();
    let env: Vec<_> = hashed
        .processes
        .iter()
        .map(|p| json!({"name": p.name, "env": p.env, "unset": p.unset}))
        .collect();
    live.config_sha256 = digest::sha256_json(&json!({
        "profile": hashed.profile,
        "tier_mode": hashed.tier_mode,
        "kvbm": hashed.kvbm,
        "endpoint": hashed.endpoint,
        "files": files,
        "processes": procs,
    }));
    live.env_sha256 = digest::sha256_json(&json!(env));
    Ok(live)
}

fn render_inner(
    p: &Profile,
    source: &str,
    mode: TierMode,
    ctx: &Context,
    for_hash: bool,
) -> Result<Rendered, ProfileError> {
    let tier = p.tier(mode);
    let mut vars = p.vars.clone();
    vars.extend(tier.vars.clone());
    for (k, v) in &ctx.overrides {
        if !vars.contains_key(k) {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            return Err(invalid(
                p,
                format!("--var {k}"),
                format!(
                    "the profile has no var {k:?} (it has: {})",
                    known.join(", ")
                ),
            ));
        }
        vars.insert(k.clone(), v.clone());
    }
    for (var, options) in &p.choices {
        let value = vars.get(var).cloned().unwrap_or_default();
        let chosen = options.get(&value).ok_or_else(|| {
            let names: Vec<&str> = options.keys().map(String::as_str).collect();
            invalid(
                p,
                format!("vars.{var}"),
                format!("{value:?} is not one of {}", names.join(", ")),
            )
        })?;
        for (k, v) in chosen {
            if !ctx.overrides.contains_key(k) {
                vars.insert(k.clone(), v.clone());
            }
        }
    }
    let path_str = |x: &Path| x.display().to_string();
    let (state, logs, sparkhost) = if for_hash {
        (
            "$STATE".to_string(),
            "$LOGS".to_string(),
            "sparkhost".to_string(),
        )
    } else {
        (
            path_str(&ctx.state),
            path_str(&ctx.logs),
            path_str(&ctx.sparkhost),
        )
    };
    let builtins = BTreeMap::from([
        ("tier_mode".to_string(), format!("{mode:?}")),
        ("state".to_string(), state.clone()),
        ("logs".to_string(), logs.clone()),
        ("sparkhost".to_string(), sparkhost),
    ]);
    for k in builtins.keys() {
        if vars.contains_key(k) {
            return Err(invalid(p, format!("vars.{k}"), "is a built-in placeholder"));
        }
    }
    let mut taken = Vec::new();
    for (k, v) in vars.iter_mut() {
        if v == "auto" && k.ends_with("_port") && !for_hash {
            *v = free_port(&mut taken)
                .map_err(|e| invalid(p, format!("vars.{k}"), e))?
                .to_string();
        }
    }
    for f in &p.files {
        vars.insert(format!("files.{}", f.name), format!("{state}/{}", f.name));
    }
    let mut all = builtins.clone();
    all.extend(vars.clone());
    // Vars may use other vars and built-ins; a few rounds cover any sane
    // nesting, and a cycle ends as an unresolved-placeholder error.
    for _ in 0..4 {
        let snapshot = all.clone();
        for v in all.values_mut() {
            if v.contains('{')
                && let Ok(s) = subst(v, &snapshot)
            {
                *v = s;
            }
        }
    }
    for (k, v) in &all {
        if v.contains('{') {
            subst(v, &all).map_err(|e| invalid(p, format!("vars.{k}"), e))?;
        }
    }
    let endpoint = subst(&p.endpoint, &all).map_err(|e| invalid(p, "endpoint", e))?;
    if !endpoint.starts_with("http://") {
        return Err(invalid(
            p,
            "endpoint",
            format!("{endpoint:?}: an http:// URL"),
        ));
    }
    all.insert("endpoint".into(), endpoint.clone());
    let s = |field: &str, v: &str| subst(v, &all).map_err(|e| invalid(p, field, e));

    let kvbm = tier.kvbm(mode);
    let mut template_values: BTreeMap<String, String> = all.clone();
    template_values.retain(|k, _| !k.contains('.'));
    let mut files = Vec::new();
    for f in &p.files {
        let text = engine_config::builtin(&f.template)
            .map_err(|e| invalid(p, format!("file {:?}", f.name), e.to_string()))?;
        let content = engine_config::render(&f.name, text, mode, &template_values)
            .map_err(|e| invalid(p, format!("file {:?}", f.name), e.to_string()))?;
        files.push(RenderedFile {
            name: f.name.clone(),
            path: PathBuf::from(format!("{state}/{}", f.name)),
            sha256: digest::sha256_hex(content.as_bytes()),
            content,
        });
    }

    let mut unset: Vec<String> = Vec::new();
    if mode != TierMode::B2 {
        unset.extend(KVBM_DISK_ENV.iter().map(|s| s.to_string()));
    }
    if mode == TierMode::B0 {
        unset.extend(KVBM_HOST_ENV.iter().map(|s| s.to_string()));
    }
    let mut processes = Vec::new();
    for proc in &p.processes {
        if let Some(w) = &proc.when
            && !truthy(p, &all, w)?
        {
            continue;
        }
        let field = format!("process {:?}", proc.name);
        let pt = proc.tiers.get(&mode).cloned().unwrap_or_default();
        let mut argv = Vec::new();
        for a in proc.command.iter().chain(pt.args.iter()) {
            argv.push(s(&format!("{field}.command"), a)?);
        }
        if argv.len() > limits::STACK_MAX_ARGS {
            return Err(invalid(
                p,
                format!("{field}.command"),
                format!("more than {} arguments", limits::STACK_MAX_ARGS),
            ));
        }
        let mut env = BTreeMap::new();
        for (k, v) in proc.env.iter().chain(pt.env.iter()) {
            env.insert(k.clone(), s(&format!("{field}.env.{k}"), v)?);
        }
        let container = match &proc.container {
            Some(c) => Some(RenderedContainer {
                runtime: match s(&format!("{field}.container.runtime"), &c.runtime)?.as_str() {
                    r @ ("docker" | "podman") => r.to_string(),
                    r => {
                        return Err(invalid(
                            p,
                            format!("{field}.container.runtime"),
                            format!("{r:?}: docker or podman"),
                        ));
                    }
                },
                image: s(&format!("{field}.container.image"), &c.image)?,
                run_args: c
                    .run_args
                    .iter()
                    .map(|a| s(&format!("{field}.container.run_args"), a))
                    .collect::<Result<_, _>>()?,
            }),
            None => None,
        };
        processes.push(RenderedProcess {
            name: proc.name.clone(),
            argv,
            env: env.clone(),
            // Only KVBM processes: a NATS image has no `env` to wrap with.
            unset: if env.keys().any(|k| k.starts_with("DYN_KVBM_")) {
                unset.clone()
            } else {
                Vec::new()
            },
            container,
            stop_grace_s: proc.stop_grace_s,
            log: PathBuf::from(format!("{logs}/{}.log", proc.name)),
        });
    }
    let r = &p.readiness;
    let opt = |field: &str, v: &Option<String>| v.as_deref().map(|v| s(field, v)).transpose();
    let nats_on = match &r.nats {
        Some(n) => match &n.when {
            Some(w) => truthy(p, &all, w)?,
            None => true,
        },
        None => false,
    };
    let (nats_client, nats_monitor) = match (&r.nats, nats_on) {
        (Some(n), true) => (
            Some(s("readiness.nats.client", &n.client)?),
            Some(s("readiness.nats.monitor", &n.monitor)?),
        ),
        _ => (None, None),
    };
    Ok(Rendered {
        profile: p.name.clone(),
        source: source.to_string(),
        tier_mode: mode,
        simulated: p.simulated,
        kvbm,
        endpoint,
        health_url: opt("readiness.health", &r.health)?,
        models: r.models,
        kvbm_metrics_url: opt("readiness.kvbm_metrics", &r.kvbm_metrics)?,
        nats_client,
        nats_monitor,
        ready_timeout: parse_timeout(&r.timeout).map_err(|e| invalid(p, "readiness.timeout", e))?,
        disk_cache_dir: opt("tiers.disk_cache_dir", &tier.disk_cache_dir)?.map(PathBuf::from),
        disk_device: opt("tiers.disk_device", &tier.disk_device)?,
        files,
        processes,
        vars: all,
        config_sha256: String::new(),
        env_sha256: String::new(),
    })
}

impl Rendered {
    /// What `stack render` prints: everything a reviewer needs to see that
    /// the modes differ only where they should.
    pub fn describe(&self) -> String {
        let mut o = String::new();
        let sim = if self.simulated {
            " (SIMULATED engine)"
        } else {
            ""
        };
        o.push_str(&format!(
            "stack {} [{}] tier mode {:?}{sim}\n  KVBM {}\n  config sha256 {}\n  env sha256    {}\n  endpoint {}\n",
            self.profile,
            self.source,
            self.tier_mode,
            if self.kvbm { "on: its metrics must answer" } else { "off: its metrics must not answer" },
            self.config_sha256,
            self.env_sha256,
            self.endpoint
        ));
        for (k, v) in [
            ("health", &self.health_url),
            ("kvbm metrics", &self.kvbm_metrics_url),
            ("nats", &self.nats_client),
            ("nats monitor", &self.nats_monitor),
            ("disk device", &self.disk_device),
        ] {
            if let Some(v) = v {
                o.push_str(&format!("  {k}: {v}\n"));
            }
        }
        if let Some(d) = &self.disk_cache_dir {
            o.push_str(&format!("  disk cache dir: {}\n", d.display()));
        }
        for p in &self.processes {
            o.push_str(&format!("\nprocess {} (log {})\n", p.name, p.log.display()));
            if let Some(c) = &p.container {
                o.push_str(&format!(
                    "  container: {} run -d {} {}\n",
                    c.runtime,
                    c.run_args.join(" "),
                    c.image
                ));
            }
            o.push_str(&format!("  argv: {}\n", shell_words(&p.argv)));
            for (k, v) in &p.env {
                o.push_str(&format!("  env {k}={v}\n"));
            }
            if !p.unset.is_empty() {
                o.push_str(&format!("  unset: {}\n", p.unset.join(" ")));
            }
        }
        for f in &self.files {
            o.push_str(&format!(
                "\nfile {} ({}, sha256 {})\n{}",
                f.name,
                f.path.display(),
                f.sha256,
                f.content
            ));
        }
        o
    }
}

/// Quotes what a shell would split, for display only.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(overrides: &[(&str, &str)]) -> Context {
        Context {
            state: PathBuf::from("/tmp/state-a"),
            logs: PathBuf::from("/tmp/state-a/logs"),
            sparkhost: PathBuf::from("/usr/bin/sparkhost"),
            overrides: overrides
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    fn r(name: &str, mode: TierMode, overrides: &[(&str, &str)]) -> Rendered {
        let (p, src) = Profile::load(name).unwrap();
        render(&p, &src, mode, &ctx(overrides)).unwrap()
    }

    fn proc<'a>(r: &'a Rendered, name: &str) -> &'a RenderedProcess {
        r.processes.iter().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn the_hash_ignores_free_ports_and_paths_but_not_the_mode() {
        let (p, src) = Profile::load("sim").unwrap();
        let a = render(&p, &src, TierMode::B1, &ctx(&[])).unwrap();
        let mut c2 = ctx(&[]);
        c2.state = PathBuf::from("/elsewhere");
        let b = render(&p, &src, TierMode::B1, &c2).unwrap();
        assert_eq!(a.config_sha256, b.config_sha256);
        assert_ne!(a.endpoint, "http://127.0.0.1:auto");
        let c = render(&p, &src, TierMode::B2, &ctx(&[])).unwrap();
        assert_ne!(a.config_sha256, c.config_sha256);
        let d = render(
            &p,
            &src,
            TierMode::B1,
            &ctx(&[("sim_profile", "spark-llama31-8b-fp8")]),
        )
        .unwrap();
        assert_ne!(a.config_sha256, d.config_sha256);
    }

    /// The seed's B0 confound: B0 started the worker without the engine
    /// yaml. Here every mode gets the same argv and the same file, which
    /// differs only in the connector block (tested in kvbm), and the env
    /// differs only in DYN_KVBM_*.
    #[test]
    fn dgx_spark_modes_differ_only_in_kv_tiers() {
        let b0 = r("dgx-spark-trtllm", TierMode::B0, &[]);
        let b1 = r("dgx-spark-trtllm", TierMode::B1, &[]);
        let b2 = r("dgx-spark-trtllm", TierMode::B2, &[]);
        for x in [&b0, &b1, &b2] {
            let w = proc(x, "worker");
            assert!(
                w.argv.windows(2).any(|a| a[0] == "--extra-engine-args"
                    && a[1].ends_with("/kvbm_llm_api_config.yaml")),
                "{:?}",
                w.argv
            );
            assert_eq!(x.files.len(), 1);
        }
        assert_eq!(proc(&b0, "worker").argv, proc(&b1, "worker").argv);
        assert_eq!(proc(&b1, "worker").argv, proc(&b2, "worker").argv);
        assert_eq!(
            proc(&b0, "worker").container.as_ref().unwrap().run_args,
            proc(&b2, "worker").container.as_ref().unwrap().run_args
        );
        let non_kvbm = |x: &Rendered| {
            proc(x, "worker")
                .env
                .iter()
                .filter(|(k, _)| !k.starts_with("DYN_KVBM_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(non_kvbm(&b0), non_kvbm(&b1));
        assert_eq!(non_kvbm(&b1), non_kvbm(&b2));
        let w0 = &proc(&b0, "worker").env;
        assert_eq!(
            w0.get("DYN_KVBM_METRICS").map(String::as_str),
            Some("false")
        );
        assert!(!w0.contains_key("DYN_KVBM_CPU_CACHE_GB"));
        let w1 = &proc(&b1, "worker").env;
        assert_eq!(
            w1.get("DYN_KVBM_CPU_CACHE_GB").map(String::as_str),
            Some("8")
        );
        assert_eq!(w1.get("DYN_KVBM_METRICS").map(String::as_str), Some("true"));
        // B1's disk tier is really off: nothing sets it, and the names are
        // removed inside the container too, whatever the image's ENV says.
        for k in KVBM_DISK_ENV {
            assert!(!w1.contains_key(*k), "{k}");
            assert!(proc(&b1, "worker").unset.iter().any(|u| u == k), "{k}");
            assert!(!proc(&b2, "worker").unset.iter().any(|u| u == k), "{k}");
        }
        let w2 = &proc(&b2, "worker").env;
        assert_eq!(
            w2.get("DYN_KVBM_DISK_CACHE_GB").map(String::as_str),
            Some("32")
        );
        assert_eq!(
            w2.get("DYN_KVBM_DISK_CACHE_DIR").map(String::as_str),
            Some("/mnt/nvme/kvbm")
        );
        assert_eq!(
            b2.disk_cache_dir.as_deref(),
            Some(Path::new("/mnt/nvme/kvbm"))
        );
        assert!(
            b0.files[0].content != b1.files[0].content
                && b1.files[0].content == b2.files[0].content
        );
        assert!(!b0.kvbm && b1.kvbm && b2.kvbm);
    }

    #[test]
    fn dgx_spark_model_profiles_and_optional_kv_router() {
        let b1 = r("dgx-spark-trtllm", TierMode::B1, &[]);
        assert!(
            proc(&b1, "worker")
                .argv
                .iter()
                .any(|a| a.contains("nvidia/Llama-3.1-8B-Instruct-FP8"))
        );
        assert!(!b1.processes.iter().any(|p| p.name == "nats"));
        assert!(b1.nats_client.is_none());
        let big = r(
            "dgx-spark-trtllm",
            TierMode::B2,
            &[
                ("model", "nvidia/Llama-3.3-70B-Instruct-NVFP4"),
                ("kv_router", "true"),
            ],
        );
        assert!(
            proc(&big, "worker")
                .argv
                .iter()
                .any(|a| a.contains("Llama-3.3-70B-Instruct-NVFP4"))
        );
        assert!(big.processes.iter().any(|p| p.name == "nats"));
        assert!(
            proc(&big, "frontend")
                .argv
                .windows(2)
                .any(|a| a == ["--router-mode", "kv"])
        );
        assert_eq!(big.nats_client.as_deref(), Some("127.0.0.1:4222"));
        assert_eq!(
            proc(&big, "worker")
                .env
                .get("NATS_SERVER")
                .map(String::as_str),
            Some("nats://127.0.0.1:4222")
        );
    }

    #[test]
    fn mocker_b1_gets_the_host_tier_through_its_engine_args() {
        let b0 = r("dynamo-mocker", TierMode::B0, &[]);
        let b1 = r("dynamo-mocker", TierMode::B1, &[]);
        assert_eq!(
            proc(&b0, "mocker")
                .argv
                .iter()
                .filter(|a| !a.contains("127.0.0.1"))
                .collect::<Vec<_>>(),
            proc(&b1, "mocker")
                .argv
                .iter()
                .filter(|a| !a.contains("127.0.0.1"))
                .collect::<Vec<_>>()
        );
        let j0: serde_json::Value = serde_json::from_str(&b0.files[0].content).unwrap();
        let j1: serde_json::Value = serde_json::from_str(&b1.files[0].content).unwrap();
        assert!(j0["engine"].get("native_host_offload").is_none());
        assert!(
            j1["engine"]["native_host_offload"]["num_host_blocks"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert!(
            !b1.kvbm,
            "the mocker's host tier is not KVBM and exports no kvbm_* metrics"
        );
        let (p, src) = Profile::load("dynamo-mocker").unwrap();
        let e = render(&p, &src, TierMode::B2, &ctx(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no live disk tier"), "{e}");
    }

    #[test]
    fn unknown_vars_and_placeholders_are_errors() {
        let (p, src) = Profile::load("sim").unwrap();
        let e = render(&p, &src, TierMode::B1, &ctx(&[("nope", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--var nope") && e.contains("sim_profile"), "{e}");
        let text = "name = \"x\"\nendpoint = \"http://127.0.0.1:{prot}\"\n[[process]]\nname = \"p\"\ncommand = [\"true\"]\n";
        let p = Profile::parse(text, "t").unwrap();
        let e = render(&p, "t", TierMode::B0, &ctx(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoint") && e.contains("{prot}"), "{e}");
        let bad = "name = \"x\"\nendpoint = \"http://127.0.0.1:1\"\n[vars]\nfree_gpu_memory_fraction = \"0.6 x\"\n[[file]]\nname = \"e.yaml\"\ntemplate = \"trtllm-kvbm\"\n[[process]]\nname = \"p\"\ncommand = [\"true\"]\n";
        let p = Profile::parse(bad, "t").unwrap();
        let e = render(&p, "t", TierMode::B1, &ctx(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("free_gpu_memory_fraction"), "{e}");
    }
}
