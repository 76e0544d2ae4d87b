//! The simulated engine (`sparkhost-kvbm`) as the host uses it: the
//! `sim[:PROFILE]` endpoint spec, flags into a [`SimConfig`], and a running
//! simulator that knows its URLs and the cache directory it made.
//!
//! Kept out of `dispatch`: the request path never knows whether it talks to
//! a simulator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sparkhost_kvbm::{
    DiskTiming, Lies, Naming, Profile, SimConfig, SimHandle, SimInfo, Simulator, TierMode,
};

use crate::cli::{DiskTimingArg, KvMode, LieArg, NamingArg, SimEndpointArgs};

/// The profile `--endpoint sim` uses without `:PROFILE`: the seed's main
/// model on a DGX Spark, the machine the product is about.
pub const DEFAULT_PROFILE: &str = "spark-llama31-8b-fp8";

/// `Some(profile spec)` when `endpoint` asks for the simulator.
pub fn endpoint_profile(endpoint: &str) -> Option<&str> {
    let e = endpoint.trim();
    if e == "sim" {
        return Some(DEFAULT_PROFILE);
    }
    e.strip_prefix("sim:")
}

/// A profile by name or file, with `KEY=VALUE` overrides applied in order;
/// errors name `flag`.
pub fn profile(
    spec: &str,
    sets: &[(String, String)],
    flag: &str,
    set_flag: &str,
) -> anyhow::Result<Profile> {
    if spec.trim().is_empty() {
        bail!(
            "{flag}: the profile is empty; use a built-in name (tiny, spark-llama31-8b-fp8, spark-llama33-70b-nvfp4) or a .toml file"
        );
    }
    let mut p = Profile::load(spec.trim()).with_context(|| format!("{flag} {spec:?}"))?;
    if !sets.is_empty() {
        let name = p.name.clone();
        let given: Vec<String> = sets
            .iter()
            .map(|(k, v)| format!("{set_flag} {k}={v}"))
            .collect();
        p = p
            .with_sets(sets)
            .with_context(|| format!("{} (profile {name})", given.join(" ")))?;
    }
    Ok(p)
}

pub fn tier_mode(s: &str, flag: &str) -> anyhow::Result<TierMode> {
    match s.trim().to_ascii_uppercase().as_str() {
        "B0" => Ok(TierMode::B0),
        "B1" => Ok(TierMode::B1),
        "B2" => Ok(TierMode::B2),
        _ => bail!("{flag} {s:?} is not one of B0, B1, B2"),
    }
}

pub fn tier_of(kv: KvMode) -> TierMode {
    match kv {
        KvMode::Off => TierMode::B0,
        KvMode::CpuOnly => TierMode::B1,
        // `run` refuses an unspecified mode for a simulator; the simulator's
        // own default is B2.
        KvMode::CpuDisk | KvMode::Unspecified => TierMode::B2,
    }
}

pub fn lies(list: &[LieArg]) -> Lies {
    let mut l = Lies::default();
    for x in list {
        match x {
            LieArg::MetricsWithoutIo => l.metrics_without_io = true,
            LieArg::IoWithoutMetrics => l.io_without_metrics = true,
            LieArg::StaleGauges => l.stale_gauges = true,
            LieArg::UsageWithoutCachedTokens => l.usage_without_cached_tokens = true,
        }
    }
    l
}

pub fn naming(n: NamingArg) -> Naming {
    match n {
        NamingArg::V1 => Naming::V1,
        NamingArg::V2 => Naming::V2,
    }
}

pub fn disk_timing(d: DiskTimingArg) -> DiskTiming {
    match d {
        DiskTimingArg::Model => DiskTiming::Model,
        DiskTimingArg::Measured => DiskTiming::Measured,
    }
}

/// An IP:port from a flag.
pub fn listen_addr(s: &str, flag: &str) -> anyhow::Result<SocketAddr> {
    s.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} {s:?} is not an address like 127.0.0.1:8000"))
}

/// An in-process simulator for one run, resolved from the flags.
#[derive(Debug, Clone)]
pub struct SimPlan {
    pub config: SimConfig,
    /// `None`: `sim-cache/` in the run directory, made when it starts.
    pub cache_dir: Option<PathBuf>,
}

impl SimPlan {
    /// For `sparkhost run`: the profile from the endpoint, the tier mode
    /// from the run's, everything on loopback ephemeral ports.
    pub fn for_run(
        spec: &str,
        kv: KvMode,
        a: &SimEndpointArgs,
        tokenizer: Option<&Path>,
        device_sets: &[(String, String)],
    ) -> anyhow::Result<SimPlan> {
        // A measured device profile's disk bandwidths first, so an explicit
        // --sim-set still wins.
        let mut p = profile(spec, &a.sim_set, "--endpoint sim:", "--sim-set")?;
        if !device_sets.is_empty() {
            let explicit: Vec<&str> = a.sim_set.iter().map(|(k, _)| k.as_str()).collect();
            let sets: Vec<(String, String)> = device_sets
                .iter()
                .filter(|(k, _)| !explicit.contains(&k.as_str()))
                .cloned()
                .collect();
            let name = p.name.clone();
            p = p
                .with_sets(&sets)
                .with_context(|| format!("--device-profile's disk bandwidths (profile {name})"))?;
        }
        let mut config = SimConfig::new(p, tier_of(kv));
        config.naming = naming(a.sim_kvbm_naming);
        config.lies = lies(&a.sim_lies);
        config.disk_timing = disk_timing(a.sim_disk_timing);
        config.tokenizer = tokenizer.map(Path::to_path_buf);
        if let Some(d) = &a.sim_cache_dir
            && d.exists()
            && !d.is_dir()
        {
            bail!("--sim-cache-dir {} is not a directory", d.display());
        }
        Ok(SimPlan {
            config,
            cache_dir: a.sim_cache_dir.clone(),
        })
    }
}

/// A running simulator and the directory it was given.
pub struct SimRun {
    handle: SimHandle,
    /// A directory this made, removed at shutdown when empty.
    made_dir: Option<PathBuf>,
}

impl SimRun {
    /// Starts the simulator; `default_dir` is used when the plan names no
    /// cache directory. Only B2 needs (and makes) the directory.
    pub async fn start(plan: &SimPlan, default_dir: &Path) -> anyhow::Result<SimRun> {
        let mut cfg = plan.config.clone();
        let mut made_dir = None;
        if cfg.tier_mode == TierMode::B2 {
            let dir = plan
                .cache_dir
                .clone()
                .unwrap_or_else(|| default_dir.to_path_buf());
            if !dir.exists() {
                std::fs::create_dir_all(&dir).with_context(|| {
                    format!("creating the simulator's cache dir {}", dir.display())
                })?;
                made_dir = Some(dir.clone());
            }
            cfg.cache_dir = Some(dir);
        }
        let handle = match Simulator::start(cfg).await {
            Ok(h) => h,
            Err(e) => {
                if let Some(d) = &made_dir {
                    let _ = std::fs::remove_dir(d);
                }
                return Err(anyhow::Error::new(e).context("starting the simulated engine"));
            }
        };
        Ok(SimRun { handle, made_dir })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.handle.addr())
    }

    pub fn kvbm_metrics_url(&self) -> Option<String> {
        self.handle
            .metrics_addr()
            .map(|a| format!("http://{a}/metrics"))
    }

    pub fn info(&self) -> &SimInfo {
        self.handle.info()
    }

    /// The directory of the disk tier, when there is one.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.handle
            .info()
            .disk_cache_file
            .as_deref()
            .and_then(Path::parent)
    }

    /// Points the collectors at the simulator: its KVBM port, its frontend
    /// metrics, the disk its cache directory is on, and this process (the
    /// engine's disk I/O is ours).
    pub fn point_telemetry(&self, c: &mut sparkhost_collectors::Config) {
        c.kvbm_metrics_url = self.kvbm_metrics_url();
        c.frontend_metrics_url = Some(format!("{}/metrics", self.base_url()));
        if let Some(d) = self.cache_dir() {
            c.kv_cache_dir = Some(d.to_path_buf());
        }
        // No worker process or system port exists; asking would only record
        // a failure that reads like a broken deployment.
        c.collectors
            .set(sparkhost_collectors::source::SourceId::Worker, false);
        if c.pids.is_empty() {
            c.pids = vec![std::process::id()];
            c.process_pattern = None;
        }
    }

    /// Stops it (the cache file goes with it) and removes the directory it made.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
        if let Some(d) = &self.made_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_specs() {
        assert_eq!(endpoint_profile("sim"), Some(DEFAULT_PROFILE));
        assert_eq!(endpoint_profile("sim:tiny"), Some("tiny"));
        assert_eq!(endpoint_profile("sim:p.toml"), Some("p.toml"));
        assert_eq!(endpoint_profile("http://127.0.0.1:8000"), None);
        assert_eq!(endpoint_profile("simulator"), None);
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let e = tier_mode("B3", "--tier-mode").unwrap_err().to_string();
        assert!(e.contains("--tier-mode") && e.contains("B0, B1, B2"), "{e}");
        let e = listen_addr("localhost", "--listen")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--listen"), "{e}");
        let e = format!(
            "{:#}",
            profile(
                "tiny",
                &[("bogus".into(), "1".into())],
                "--profile",
                "--set"
            )
            .unwrap_err()
        );
        assert!(e.contains("--set bogus=1") && e.contains("bogus"), "{e}");
        let e = format!(
            "{:#}",
            profile("huge", &[], "--profile", "--set").unwrap_err()
        );
        assert!(e.contains("--profile") && e.contains("tiny"), "{e}");
        assert!(profile(" ", &[], "--profile", "--set").is_err());
    }

    #[test]
    fn lies_map_one_to_one() {
        let l = lies(&[LieArg::StaleGauges, LieArg::MetricsWithoutIo]);
        assert!(l.stale_gauges && l.metrics_without_io && !l.io_without_metrics);
    }
}
