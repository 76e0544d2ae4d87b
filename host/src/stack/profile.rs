//! Stack profiles: what to start per tier mode, and how to tell it is ready.
//!
//! Every string may contain `{name}` placeholders: the profile's `[vars]`
//! (overridable per tier under `[tiers.Bn.vars]` and by `--var`), and the
//! built-ins `tier_mode` (B0/B1/B2), `state` (the state dir), `logs`,
//! `sparkhost` (this binary), `endpoint` and `files.NAME` (a rendered
//! file's path). A var whose value is `auto` and whose name ends in `_port`
//! gets a free loopback port at `up`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sparkhost_kvbm::TierMode;

use crate::limits;

/// Profiles shipped with sparkhost, compiled in.
pub const BUILTIN: &[(&str, &str)] = &[
    ("sim", include_str!("../../../stacks/sim.toml")),
    (
        "dynamo-mocker",
        include_str!("../../../stacks/dynamo-mocker.toml"),
    ),
    (
        "dgx-spark-trtllm",
        include_str!("../../../stacks/dgx-spark-trtllm.toml"),
    ),
];

/// Environment a process may inherit from the caller; everything else is
/// cleared, so a leftover `DYN_KVBM_DISK_CACHE_GB=32` in the shell can never
/// turn B1 into a disk run (the seed's B1 leak).
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"];

/// KVBM settings that switch the disk tier on; B0 and B1 must not set them,
/// and they are removed from every process (also inside containers) there.
pub const KVBM_DISK_ENV: &[&str] = &[
    "DYN_KVBM_DISK_CACHE_GB",
    "DYN_KVBM_DISK_CACHE_OVERRIDE_NUM_BLOCKS",
    "DYN_KVBM_DISK_CACHE_DIR",
];

/// KVBM settings that switch the host tier on; B0 must not set them.
pub const KVBM_HOST_ENV: &[&str] = &[
    "DYN_KVBM_CPU_CACHE_GB",
    "DYN_KVBM_CPU_CACHE_OVERRIDE_NUM_BLOCKS",
];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "no built-in stack profile {0:?} (built in: sim, dynamo-mocker, dgx-spark-trtllm); a path to a .toml works too"
    )]
    Unknown(String),
    #[error("stack profile {path}: {error}")]
    Read { path: String, error: String },
    #[error("stack profile {profile}: {field}: {problem}")]
    Invalid {
        profile: String,
        field: String,
        problem: String,
    },
    #[error("stack profile {profile}: tier mode {mode:?} is not offered: {reason}")]
    Refused {
        profile: String,
        mode: TierMode,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// True when the stack's engine is a simulation (`sparkhost sim`, the
    /// Dynamo mocker): its results are labelled simulated.
    #[serde(default)]
    pub simulated: bool,
    /// The OpenAI base URL, e.g. `http://127.0.0.1:{http_port}`.
    pub endpoint: String,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// `[choices.VAR.VALUE]`: vars set when VAR has VALUE (the seed's model
    /// profiles); VAR must then be one of the listed values.
    #[serde(default)]
    pub choices: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    #[serde(default)]
    pub tiers: BTreeMap<TierMode, TierSpec>,
    #[serde(default)]
    pub readiness: Readiness,
    #[serde(default, rename = "file")]
    pub files: Vec<FileSpec>,
    #[serde(rename = "process")]
    pub processes: Vec<ProcessSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    /// Whether KVBM runs in this mode: its metrics must then exist, and must
    /// not otherwise. Default: B1 and B2 yes, B0 no.
    pub kvbm: Option<bool>,
    /// Set when the stack cannot run this mode; `up` and `render` refuse
    /// with this text.
    pub refuse: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The KVBM disk cache directory (B2): it must exist at `up`, and be on
    /// `disk_device` when that is given.
    pub disk_cache_dir: Option<String>,
    /// Block device the disk cache must be on, e.g. `nvme0n1`.
    pub disk_device: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// A URL that must answer 2xx (Dynamo's `/health`).
    pub health: Option<String>,
    /// `/v1/models` must list at least one model.
    #[serde(default = "yes")]
    pub models: bool,
    /// KVBM's metrics URL; probed in every mode (it must answer iff KVBM runs).
    pub kvbm_metrics: Option<String>,
    pub nats: Option<NatsSpec>,
    /// How long `up` waits, e.g. `120s`.
    #[serde(default = "default_ready_timeout")]
    pub timeout: String,
}

fn yes() -> bool {
    true
}

fn default_ready_timeout() -> String {
    "120s".into()
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            health: None,
            models: true,
            kvbm_metrics: None,
            nats: None,
            timeout: default_ready_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSpec {
    /// `host:port` of the client port (TCP connect).
    pub client: String,
    /// The monitor base URL (`/healthz`, `/varz` with JetStream on).
    pub monitor: String,
    /// Checked only when this var is `true`.
    pub when: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// File name under the state dir; `{files.NAME}` is its path.
    pub name: String,
    /// A built-in template of `kvbm/templates/` (`trtllm-kvbm`,
    /// `mocker-engine-args`).
    pub template: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra arguments and environment per tier mode.
    #[serde(default)]
    pub tiers: BTreeMap<TierMode, ProcessTier>,
    /// Started only when this var is `true` (e.g. NATS for the KV router).
    pub when: Option<String>,
    /// Run as a detached container instead of a local process.
    pub container: Option<ContainerSpec>,
    /// Seconds between SIGTERM (or `stop`) and SIGKILL.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_s: u64,
}

fn default_stop_grace() -> u64 {
    10
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessTier {
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// `docker` or `podman`.
    pub runtime: String,
    pub image: String,
    /// `run` options before the image (devices, mounts, `--network host`).
    #[serde(default)]
    pub run_args: Vec<String>,
}

impl TierSpec {
    pub fn kvbm(&self, mode: TierMode) -> bool {
        self.kvbm.unwrap_or(mode != TierMode::B0)
    }
}

impl Profile {
    /// A built-in name or a path to a `.toml` file (anything with a `/` or
    /// ending in `.toml`).
    pub fn load(name_or_path: &str) -> Result<(Profile, String), ProfileError> {
        let (text, source) = if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            let path = Path::new(name_or_path);
            let meta = std::fs::metadata(path).map_err(|e| ProfileError::Read {
                path: name_or_path.into(),
                error: e.to_string(),
            })?;
            if meta.len() > limits::STACK_PROFILE_MAX_BYTES {
                return Err(ProfileError::Read {
                    path: name_or_path.into(),
                    error: format!(
                        "{} bytes, more than the {} allowed",
                        meta.len(),
                        limits::STACK_PROFILE_MAX_BYTES
                    ),
                });
            }
            let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Read {
                path: name_or_path.into(),
                error: e.to_string(),
            })?;
            (text, name_or_path.to_string())
        } else {
            let text = BUILTIN
                .iter()
                .find(|(n, _)| *n == name_or_path)
                .map(|(_, t)| t.to_string())
                .ok_or_else(|| ProfileError::Unknown(name_or_path.into()))?;
            (text, format!("builtin:{name_or_path}"))
        };
        let p = Self::parse(&text, &source)?;
        Ok((p, source))
    }

    pub fn parse(text: &str, source: &str) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| ProfileError::Read {
            path: source.into(),
            error: e.to_string(),
        })?;
        p.validate()?;
        Ok(p)
    }

    fn invalid(&self, field: impl Into<String>, problem: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            profile: self.name.clone(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub fn tier(&self, mode: TierMode) -> TierSpec {
        self.tiers.get(&mode).cloned().unwrap_or_default()
    }

    /// Structure only; values are checked again once rendered.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        };
        if !name_ok(&self.name) {
            return Err(self.invalid("name", "1..=64 characters of A-Z a-z 0-9 - _ ."));
        }
        if self.processes.is_empty() || self.processes.len() > limits::STACK_MAX_PROCESSES {
            return Err(self.invalid(
                "process",
                format!(
                    "1..={} processes, found {}",
                    limits::STACK_MAX_PROCESSES,
                    self.processes.len()
                ),
            ));
        }
        if self.files.len() > limits::STACK_MAX_FILES {
            return Err(self.invalid("file", format!("at most {} files", limits::STACK_MAX_FILES)));
        }
        let mut all_vars: Vec<&String> = self.vars.keys().collect();
        for t in self.tiers.values() {
            all_vars.extend(t.vars.keys());
        }
        for (var, options) in &self.choices {
            if !self.vars.contains_key(var) {
                return Err(self.invalid(format!("choices.{var}"), "names no var of [vars]"));
            }
            for o in options.values() {
                all_vars.extend(o.keys());
            }
        }
        if all_vars.len() > limits::STACK_MAX_VARS {
            return Err(self.invalid("vars", format!("at most {} vars", limits::STACK_MAX_VARS)));
        }
        for v in all_vars {
            if !v
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                || v.is_empty()
                || v.len() > 64
            {
                return Err(self.invalid(format!("vars.{v}"), "a var name is 1..=64 of a-z 0-9 _"));
            }
        }
        let mut seen = Vec::new();
        for f in &self.files {
            if !name_ok(&f.name) || seen.contains(&&f.name) {
                return Err(self.invalid(
                    format!("file {:?}", f.name),
                    "a unique name of 1..=64 A-Z a-z 0-9 - _ .",
                ));
            }
            seen.push(&f.name);
            sparkhost_kvbm::engine_config::builtin(&f.template)
                .map_err(|e| self.invalid(format!("file {:?}.template", f.name), e.to_string()))?;
        }
        let mut seen = Vec::new();
        for p in &self.processes {
            let field = format!("process {:?}", p.name);
            if !name_ok(&p.name) || seen.contains(&&p.name) {
                return Err(self.invalid(field, "a unique name of 1..=64 A-Z a-z 0-9 - _ ."));
            }
            seen.push(&p.name);
            if p.command.is_empty() || p.command.len() > limits::STACK_MAX_ARGS {
                return Err(self.invalid(
                    format!("{field}.command"),
                    format!("1..={} arguments", limits::STACK_MAX_ARGS),
                ));
            }
            if !(1..=limits::STACK_MAX_STOP_GRACE_S).contains(&p.stop_grace_s) {
                return Err(self.invalid(
                    format!("{field}.stop_grace_s"),
                    format!("1..={} seconds", limits::STACK_MAX_STOP_GRACE_S),
                ));
            }
            for mode in [TierMode::B0, TierMode::B1, TierMode::B2] {
                let t = p.tiers.get(&mode).cloned().unwrap_or_default();
                for k in p.env.keys().chain(t.env.keys()) {
                    if !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || k.is_empty() {
                        return Err(self.invalid(
                            format!("{field}.env.{k}"),
                            "an environment name is A-Z a-z 0-9 _",
                        ));
                    }
                    self.check_tier_env(mode, &field, k)?;
                }
            }
        }
        parse_timeout(&self.readiness.timeout).map_err(|e| self.invalid("readiness.timeout", e))?;
        Ok(())
    }

    /// The seed's confounds, refused at the source: B0 sets no KVBM tier at
    /// all, B1 no disk tier. Unless the profile refuses that mode anyway.
    fn check_tier_env(&self, mode: TierMode, field: &str, key: &str) -> Result<(), ProfileError> {
        if self.tier(mode).refuse.is_some() {
            return Ok(());
        }
        let disk = KVBM_DISK_ENV.contains(&key);
        let host = KVBM_HOST_ENV.contains(&key);
        if (mode != TierMode::B2 && disk) || (mode == TierMode::B0 && host) {
            return Err(self.invalid(
                format!("{field}.env.{key}"),
                format!(
                    "sets {key} in {mode:?} (in the process env or its [tiers.{mode:?}] env), but {mode:?} has the {} tier off; set it under [process.tiers.{}] only",
                    if disk { "disk" } else { "host" },
                    if disk { "B2" } else { "B1/B2" }
                ),
            ));
        }
        Ok(())
    }

    /// The refusal for `mode`, when the profile cannot run it.
    pub fn check_mode(&self, mode: TierMode) -> Result<(), ProfileError> {
        match self.tier(mode).refuse {
            Some(reason) => Err(ProfileError::Refused {
                profile: self.name.clone(),
                mode,
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// `120s`, `2m`, or seconds; bounded by [`limits::STACK_MAX_READY_TIMEOUT`].
pub fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::cli::parse_duration(s)?;
    if d.is_zero() || d > limits::STACK_MAX_READY_TIMEOUT {
        return Err(format!(
            "{s:?}: 1 s ..= {} s",
            limits::STACK_MAX_READY_TIMEOUT.as_secs()
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses_and_validates() {
        for (name, _) in BUILTIN {
            let (p, src) = Profile::load(name).unwrap();
            assert_eq!(&p.name, name);
            assert_eq!(src, format!("builtin:{name}"));
        }
    }

    #[test]
    fn mocker_refuses_b2_because_it_has_no_live_disk_tier() {
        let (p, _) = Profile::load("dynamo-mocker").unwrap();
        p.check_mode(TierMode::B0).unwrap();
        p.check_mode(TierMode::B1).unwrap();
        let e = p.check_mode(TierMode::B2).unwrap_err().to_string();
        assert!(e.contains("no live disk tier"), "{e}");
    }

    #[test]
    fn a_disk_setting_in_b1_is_refused_with_its_name() {
        let text = r#"
name = "leaky"
endpoint = "http://127.0.0.1:1"
[[process]]
name = "worker"
command = ["true"]
env = { DYN_KVBM_DISK_CACHE_GB = "32" }
"#;
        let e = Profile::parse(text, "t").unwrap_err().to_string();
        assert!(
            e.contains("DYN_KVBM_DISK_CACHE_GB") && e.contains("B0"),
            "{e}"
        );
        let text = text.replace(
            "env = { DYN_KVBM_DISK_CACHE_GB = \"32\" }",
            "tiers.B1.env = { DYN_KVBM_DISK_CACHE_GB = \"32\" }",
        );
        let e = Profile::parse(&text, "t").unwrap_err().to_string();
        assert!(e.contains("in B1") && e.contains("disk tier off"), "{e}");
        let ok = text.replace("tiers.B1.env", "tiers.B2.env");
        Profile::parse(&ok, "t").unwrap();
    }

    #[test]
    fn malformed_profiles_name_the_field() {
        for (text, want) in [
            (
                "name = \"a b\"\nendpoint = \"x\"\n[[process]]\nname = \"p\"\ncommand = [\"x\"]\n",
                "name: 1..=64",
            ),
            (
                "name = \"a\"\nendpoint = \"x\"\nprocess = []\n",
                "process: 1..=",
            ),
            (
                "name = \"a\"\nendpoint = \"x\"\n[[process]]\nname = \"p\"\ncommand = []\n",
                "process \"p\".command",
            ),
            (
                "name = \"a\"\nendpoint = \"x\"\n[readiness]\ntimeout = \"9999h\"\n[[process]]\nname = \"p\"\ncommand = [\"x\"]\n",
                "readiness.timeout",
            ),
            (
                "name = \"a\"\nendpoint = \"x\"\n[[file]]\nname = \"f\"\ntemplate = \"nope\"\n[[process]]\nname = \"p\"\ncommand = [\"x\"]\n",
                "template",
            ),
            (
                "name = \"a\"\nendpoint = \"x\"\nbogus = 1\n[[process]]\nname = \"p\"\ncommand = [\"x\"]\n",
                "unknown field",
            ),
        ] {
            let e = Profile::parse(text, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
