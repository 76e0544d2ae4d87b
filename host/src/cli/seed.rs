//! The seed harness's `run_bench.py` flags that existing scripts pass and
//! that have no one-to-one sparkhost flag: each is accepted by the parser
//! only to be refused with the sparkhost equivalent named (exit 1), never
//! silently ignored. Flags that do map one-to-one are plain aliases on the
//! real flags (`--base-url`, `--model-id`, `--timeout-s`,
//! `--model-resolve-timeout-s`, `--model-resolve-poll-s`,
//! `--telemetry-interval-s`, `--kvbm-metrics-timeout-s`, `--log-level`,
//! `--phase-io-device`, `--worker-proc-pattern`, `--container-name`,
//! `--metrics-system-url`); `--collect-telemetry` is accepted as what
//! sparkhost does anyway.

use clap::Args;

#[derive(Debug, Clone, Default, Args)]
pub struct SeedFlags {
    #[arg(long, hide = true, value_name = "SCENARIO")]
    pub scenario: Option<String>,
    #[arg(long, hide = true, value_name = "SET")]
    pub prompt_set: Option<String>,
    #[arg(long, hide = true, value_name = "MIN:MAX")]
    pub short_range: Option<String>,
    #[arg(long, hide = true, value_name = "MIN:MAX")]
    pub long_range: Option<String>,
    /// The seed's switch for its collector scripts: sparkhost's telemetry
    /// is on unless `--no-telemetry`, so this asks for what happens anyway.
    #[arg(long, hide = true, conflicts_with = "no_telemetry")]
    pub collect_telemetry: bool,
}

/// Workload component per seed scenario (`standard` is `synthetic`).
fn component(scenario: &str) -> String {
    let name = match scenario {
        "standard" => "synthetic",
        "local_copilot_burst" => "copilot",
        other => other,
    };
    format!("workloads/{name}.wasm")
}

impl SeedFlags {
    /// The first seed flag given, as a message naming what to use instead.
    pub fn refusal(&self) -> Option<String> {
        if let Some(s) = &self.scenario {
            return Some(format!(
                "--scenario is the seed harness's flag; sparkhost runs a workload component instead: \
                 `sparkhost run {} …` (standard → workloads/synthetic.wasm; eviction_replay, reuse_verify, \
                 local_copilot_burst, rehydrate_replay → workloads/<scenario>.wasm)",
                component(&crate::terminal::safe(s))
            ));
        }
        if let Some(v) = &self.prompt_set {
            return Some(format!(
                "--prompt-set is the seed harness's flag; in sparkhost it is a workload param: \
                 `--param set={v}` (workloads/synthetic.wasm, the seed's standard scenario) or \
                 `--param prompt-set={v}` (reuse_verify); `sparkhost inspect WORKLOAD` lists them",
                v = crate::terminal::safe(v)
            ));
        }
        for (flag, v) in [
            ("short-range", &self.short_range),
            ("long-range", &self.long_range),
        ] {
            if let Some(v) = v {
                return Some(format!(
                    "--{flag} is the seed harness's flag; in sparkhost it is a workload param: \
                     `--param {flag}={}`",
                    crate::terminal::safe(v)
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_the_equivalent() {
        let f = |s: SeedFlags| s.refusal().unwrap();
        let s = f(SeedFlags {
            scenario: Some("local_copilot_burst".into()),
            ..Default::default()
        });
        assert!(s.contains("sparkhost run workloads/copilot.wasm"), "{s}");
        let s = f(SeedFlags {
            scenario: Some("standard".into()),
            ..Default::default()
        });
        assert!(s.contains("workloads/synthetic.wasm"), "{s}");
        let s = f(SeedFlags {
            prompt_set: Some("mixed".into()),
            ..Default::default()
        });
        assert!(s.contains("--param set=mixed"), "{s}");
        let s = f(SeedFlags {
            long_range: Some("6000:7600".into()),
            ..Default::default()
        });
        assert!(s.contains("--param long-range=6000:7600"), "{s}");
        let quiet = SeedFlags {
            collect_telemetry: true,
            ..Default::default()
        };
        assert_eq!(quiet.refusal(), None);
    }
}
