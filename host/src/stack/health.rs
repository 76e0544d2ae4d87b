//! The seed's health check (`bench_health.sh`: `/health`, `/v1/models`, the
//! KVBM metrics port, NATS when used) and the tier checks of a running stack:
//! KVBM metrics answer iff the mode runs KVBM, B1 shows no disk offload, B0
//! no KVBM activity, and the disk cache directory is on the profiled device.

use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sparkhost_collectors::prometheus::http;
use sparkhost_kvbm::TierMode;

/// What to probe. Every field but `endpoint` is optional.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub endpoint: String,
    pub health: Option<String>,
    pub models: bool,
    pub kvbm_metrics: Option<String>,
    pub nats_client: Option<String>,
    pub nats_monitor: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub checks: Vec<Check>,
    pub models: Vec<String>,
    /// Whether the KVBM URL answered with `kvbm_*` series.
    pub kvbm_answered: bool,
    /// Sum of each KVBM counter family seen, by its name without prefix.
    pub kvbm_counters: std::collections::BTreeMap<String, f64>,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn table(&self) -> String {
        self.checks
            .iter()
            .map(|c| {
                format!(
                    "{:<4} {:<14} {}\n",
                    if c.ok { "ok" } else { "FAIL" },
                    c.name,
                    c.detail
                )
            })
            .collect()
    }
}

fn head(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    one.chars().take(160).collect()
}

/// The KVBM names sparkhost accepts (`kvbm-metric-catalogue.md`): v1's
/// `kvbm_`, the older doc's `dynamo_kvbm_`.
fn kvbm_name(n: &str) -> Option<&str> {
    n.strip_prefix("dynamo_kvbm_")
        .or_else(|| n.strip_prefix("kvbm_"))
}

/// Probes everything in `t`, each with `timeout`. A KVBM URL is reported
/// (answered or not) without a verdict: whether it should answer depends on
/// the tier mode, which [`tier_checks`] judges.
pub fn probe(t: &Targets, timeout: Duration) -> Health {
    let mut checks = Vec::new();
    let mut models = Vec::new();
    if let Some(url) = &t.health {
        checks.push(match http::get(url, timeout) {
            Ok((s, body)) if (200..300).contains(&s) => Check {
                name: "health".into(),
                ok: true,
                detail: format!("{url}: HTTP {s} {}", head(&body)),
            },
            Ok((s, body)) => Check {
                name: "health".into(),
                ok: false,
                detail: format!("{url}: HTTP {s} {}", head(&body)),
            },
            Err(e) => Check {
                name: "health".into(),
                ok: false,
                detail: format!("{url}: {e}"),
            },
        });
    }
    if t.models {
        let url = format!("{}/v1/models", t.endpoint.trim_end_matches('/'));
        let c = match http::get(&url, timeout) {
            Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) => {
                    models = v["data"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|m| m["id"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    Check {
                        name: "models".into(),
                        ok: !models.is_empty(),
                        detail: if models.is_empty() {
                            format!("{url}: lists no model yet")
                        } else {
                            format!("{url}: {}", models.join(", "))
                        },
                    }
                }
                Err(e) => Check {
                    name: "models".into(),
                    ok: false,
                    detail: format!("{url}: not a model list: {e}"),
                },
            },
            Ok((s, body)) => Check {
                name: "models".into(),
                ok: false,
                detail: format!("{url}: HTTP {s} {}", head(&body)),
            },
            Err(e) => Check {
                name: "models".into(),
                ok: false,
                detail: format!("{url}: {e}"),
            },
        };
        checks.push(c);
    }
    let mut kvbm_answered = false;
    let mut kvbm_counters = std::collections::BTreeMap::new();
    if let Some(url) = &t.kvbm_metrics {
        let s = http::scrape(url, timeout);
        let detail = match (&s.expo, &s.error) {
            (Some(expo), _) => {
                for (_, sample) in expo.samples() {
                    if let Some(n) = kvbm_name(&sample.name) {
                        *kvbm_counters.entry(n.to_string()).or_insert(0.0) += sample.value;
                    }
                }
                kvbm_answered = !kvbm_counters.is_empty();
                if kvbm_answered {
                    format!("{url}: {} KVBM series", kvbm_counters.len())
                } else {
                    format!("{url}: answers, but with no kvbm_* series")
                }
            }
            (None, Some(e)) => format!("{url}: {e}"),
            (None, None) => format!("{url}: no answer"),
        };
        checks.push(Check {
            name: "kvbm_metrics".into(),
            // Judged by tier_checks; here it only informs.
            ok: true,
            detail,
        });
    }
    if let Some(addr) = &t.nats_client {
        checks.push(nats_client(addr, timeout));
    }
    if let Some(m) = &t.nats_monitor {
        let m = m.trim_end_matches('/');
        let hz = http::get(&format!("{m}/healthz"), timeout);
        let varz = http::get(&format!("{m}/varz"), timeout);
        let js = varz.as_ref().ok().and_then(|(_, b)| {
            serde_json::from_str::<serde_json::Value>(b)
                .ok()
                .map(|v| !v["jetstream"].is_null())
        });
        let ok = matches!(hz, Ok((200, _))) && js == Some(true);
        checks.push(Check {
            name: "nats_monitor".into(),
            ok,
            detail: format!(
                "{m}: /healthz {}, JetStream {}",
                match &hz {
                    Ok((s, _)) => format!("HTTP {s}"),
                    Err(e) => e.clone(),
                },
                match js {
                    Some(true) => "on",
                    Some(false) => "OFF (the KV router needs it: nats -js)",
                    None => "unknown (/varz did not answer JSON)",
                }
            ),
        });
    }
    Health {
        checks,
        models,
        kvbm_answered,
        kvbm_counters,
    }
}

fn nats_client(addr: &str, timeout: Duration) -> Check {
    let r = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "resolves to nothing".to_string()))
        .and_then(|a| TcpStream::connect_timeout(&a, timeout).map_err(|e| e.to_string()));
    Check {
        name: "nats".into(),
        ok: r.is_ok(),
        detail: match r {
            Ok(_) => format!("{addr}: accepts connections"),
            Err(e) => format!("{addr}: {e}"),
        },
    }
}

/// What the tier mode promises about a running stack.
#[derive(Debug, Clone)]
pub struct TierExpect {
    pub mode: TierMode,
    pub kvbm: bool,
    /// Whether a KVBM metrics URL was declared at all (the mocker has none).
    pub kvbm_declared: bool,
    pub disk_cache_dir: Option<PathBuf>,
    pub disk_device: Option<String>,
}

/// Disk-tier offload counters: GPU→disk and host→disk.
const DISK_OFFLOAD: &[&str] = &["offload_blocks_d2d", "offload_blocks_h2d"];

/// Every way the stack contradicts its tier mode, in words naming what was
/// seen; empty when it matches. Counters are totals since the engine
/// started, so at `up` they must all be zero where a tier is off.
pub fn tier_checks(h: &Health, e: &TierExpect) -> Vec<String> {
    let mut out = Vec::new();
    if e.kvbm_declared {
        match (e.kvbm, h.kvbm_answered) {
            (true, false) => out.push(format!(
                "{:?} runs KVBM, but its metrics port served no kvbm_* series",
                e.mode
            )),
            (false, true) => out.push(format!(
                "{:?} runs no KVBM, but its metrics port served {} kvbm_* series",
                e.mode,
                h.kvbm_counters.len()
            )),
            _ => {}
        }
    }
    let nonzero = |names: &[&str]| -> Vec<String> {
        h.kvbm_counters
            .iter()
            .filter(|(k, v)| **v > 0.0 && names.contains(&k.as_str()))
            .map(|(k, v)| format!("kvbm_{k}={v}"))
            .collect()
    };
    if e.mode == TierMode::B1 {
        let seen = nonzero(DISK_OFFLOAD);
        if !seen.is_empty() {
            out.push(format!(
                "B1 has the disk tier off, but KVBM offloaded to disk: {}",
                seen.join(", ")
            ));
        }
    }
    if e.mode == TierMode::B0 {
        let seen: Vec<String> = h
            .kvbm_counters
            .iter()
            .filter(|(k, v)| **v > 0.0 && (k.starts_with("offload_") || k.starts_with("onboard_")))
            .map(|(k, v)| format!("kvbm_{k}={v}"))
            .collect();
        if !seen.is_empty() {
            out.push(format!(
                "B0 runs no KVBM, but KVBM moved blocks: {}",
                seen.join(", ")
            ));
        }
    }
    if e.mode == TierMode::B2
        && let Some(dir) = &e.disk_cache_dir
    {
        if !dir.is_dir() {
            out.push(format!(
                "B2's disk cache directory {} does not exist",
                dir.display()
            ));
        } else if let Some(want) = &e.disk_device {
            match device_of(dir) {
                Ok(dev) if dev == *want || dev.starts_with(want.as_str()) => {}
                Ok(dev) => out.push(format!(
                    "B2's disk cache directory {} is on {dev}, not on the profiled {want}",
                    dir.display()
                )),
                Err(err) => out.push(format!(
                    "B2's disk cache directory {}: cannot tell its device: {err}",
                    dir.display()
                )),
            }
        }
    }
    out
}

/// The block device (e.g. `nvme0n1p2`) holding `path`, from its `st_dev`
/// and `/sys/dev/block/MAJ:MIN`.
pub fn device_of(path: &Path) -> Result<String, String> {
    let dev = std::fs::metadata(path).map_err(|e| e.to_string())?.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let link = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    let target = std::fs::read_link(&link).map_err(|_| {
        format!("device {maj}:{min} is not a block device (tmpfs, overlay or a network filesystem)")
    })?;
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} has no name", link.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(kvbm: &[(&str, f64)]) -> Health {
        Health {
            checks: vec![],
            models: vec![],
            kvbm_answered: !kvbm.is_empty(),
            kvbm_counters: kvbm.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn expect(mode: TierMode) -> TierExpect {
        TierExpect {
            mode,
            kvbm: mode != TierMode::B0,
            kvbm_declared: true,
            disk_cache_dir: None,
            disk_device: None,
        }
    }

    #[test]
    fn kvbm_metrics_must_exist_iff_the_mode_runs_kvbm() {
        assert!(tier_checks(&h(&[]), &expect(TierMode::B0)).is_empty());
        assert!(tier_checks(&h(&[("offload_blocks_d2h", 0.0)]), &expect(TierMode::B1)).is_empty());
        let e = tier_checks(&h(&[]), &expect(TierMode::B1));
        assert_eq!(
            e,
            ["B1 runs KVBM, but its metrics port served no kvbm_* series"]
        );
        let e = tier_checks(&h(&[("offload_blocks_d2h", 3.0)]), &expect(TierMode::B0));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[1].contains("kvbm_offload_blocks_d2h=3"), "{e:?}");
        let mut mocker = expect(TierMode::B1);
        mocker.kvbm = false;
        mocker.kvbm_declared = false;
        assert!(tier_checks(&h(&[]), &mocker).is_empty());
    }

    #[test]
    fn b1_disk_offload_is_named() {
        let e = tier_checks(
            &h(&[("offload_blocks_d2h", 8.0), ("offload_blocks_h2d", 5.0)]),
            &expect(TierMode::B1),
        );
        assert_eq!(
            e,
            ["B1 has the disk tier off, but KVBM offloaded to disk: kvbm_offload_blocks_h2d=5"]
        );
        assert!(tier_checks(&h(&[("offload_blocks_h2d", 5.0)]), &expect(TierMode::B2)).is_empty());
    }

    #[test]
    fn b2_cache_dir_must_exist() {
        let mut x = expect(TierMode::B2);
        x.disk_cache_dir = Some(PathBuf::from("/nonexistent/kvbm"));
        let e = tier_checks(&h(&[("offload_blocks_d2h", 0.0)]), &x);
        assert_eq!(
            e,
            ["B2's disk cache directory /nonexistent/kvbm does not exist"]
        );
    }

    #[test]
    fn probe_reports_unreachable_endpoints_by_url() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let t = Targets {
            endpoint: format!("http://127.0.0.1:{port}"),
            health: Some(format!("http://127.0.0.1:{port}/health")),
            models: true,
            kvbm_metrics: Some(format!("http://127.0.0.1:{port}/metrics")),
            nats_client: Some(format!("127.0.0.1:{port}")),
            nats_monitor: None,
        };
        let r = probe(&t, Duration::from_millis(500));
        assert!(!r.ok());
        let failed: Vec<&str> = r
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(failed, ["health", "models", "nats"]);
        assert!(!r.kvbm_answered);
        assert!(
            r.checks
                .iter()
                .all(|c| c.detail.contains(&port.to_string())),
            "{:?}",
            r.checks
        );
    }
}
