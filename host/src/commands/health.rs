//! `sparkhost health`: the seed's `bench_health.sh` for any endpoint, or for
//! the stack in a state dir (with its tier checks).

use super::Exit;
use crate::cli::HealthArgs;
use crate::limits;
use crate::simulate;
use crate::stack::health::{self, Targets, TierExpect};
use crate::stack::supervise;

pub fn health(args: HealthArgs) -> anyhow::Result<Exit> {
    let (targets, expect) = match &args.state_dir {
        Some(dir) => {
            let s = supervise::State::load(dir)?;
            (s.targets(), Some(s.expect()))
        }
        None => {
            let endpoint = args.endpoint.clone().ok_or_else(|| {
                anyhow::anyhow!("give --endpoint URL, or --state-dir DIR of a running stack")
            })?;
            let endpoint = endpoint.trim_end_matches('/').to_string();
            if !endpoint.starts_with("http://") {
                anyhow::bail!("--endpoint {endpoint:?}: an http:// URL");
            }
            let expect = match &args.tier_mode {
                Some(m) => {
                    let mode = simulate::tier_mode(m, "--tier-mode")?;
                    Some(TierExpect {
                        mode,
                        kvbm: mode != sparkhost_kvbm::TierMode::B0,
                        kvbm_declared: args.kvbm_metrics_url.is_some(),
                        disk_cache_dir: None,
                        disk_device: None,
                    })
                }
                None => None,
            };
            (
                Targets {
                    health: Some(
                        args.health_url
                            .clone()
                            .unwrap_or_else(|| format!("{endpoint}/health")),
                    ),
                    endpoint,
                    models: true,
                    kvbm_metrics: args.kvbm_metrics_url.clone(),
                    nats_client: args.nats.clone(),
                    nats_monitor: args.nats_monitor.clone(),
                },
                expect,
            )
        }
    };
    let h = health::probe(&targets, limits::STACK_PROBE_TIMEOUT);
    let tier = expect
        .as_ref()
        .map(|e| health::tier_checks(&h, e))
        .unwrap_or_default();
    let ok = h.ok() && tier.is_empty();
    if args.json {
        let v = serde_json::json!({"ok": ok, "health": h, "tier_mode_mismatch": tier});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", h.table());
        for t in &tier {
            println!("FAIL tier_mode_mismatch {t}");
        }
        println!("{}", if ok { "healthy" } else { "NOT healthy" });
    }
    Ok(if ok { Exit::Ok } else { Exit::Crashed })
}
