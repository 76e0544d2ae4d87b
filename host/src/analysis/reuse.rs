//! Prompts reused across the runs of a `compare` or `matrix`: a run whose
//! prompts an earlier run against the same server already sent can find
//! their KV still cached, and its hit rate (and latency) then measure the
//! run order, not the KV tier. Each run's `request_manifest.jsonl` carries
//! a `prompt_sha256` per request; a run that began with a successful KV
//! reset (`summary.json`'s `kv_reset`) is not at risk.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::rundoc::RunRecord;
use crate::limits;

pub const PROMPT_REUSED_ACROSS_RUNS: &str = "PROMPT_REUSED_ACROSS_RUNS";

/// A later run that sent prompts an earlier one had sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReusedPair {
    pub earlier_run: String,
    pub later_run: String,
    /// Distinct prompts of the later run the earlier one also sent.
    pub shared_prompts: u64,
    pub later_distinct_prompts: u64,
    /// The later run began with an empty cache (a successful KV reset, or
    /// an in-process simulator): nothing of the earlier run could be cached.
    pub later_kv_reset: bool,
}

/// The cross-run check, for `compare.json` and `matrix_index.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrossRunReuse {
    /// Runs with a readable `request_manifest.jsonl`.
    pub runs_checked: usize,
    /// Runs whose manifest had more distinct prompts than were read.
    pub runs_truncated: Vec<String>,
    pub pairs: Vec<ReusedPair>,
    /// A later run without a KV reset shares prompts with an earlier run:
    /// its cache hits can come from that run.
    pub flagged: bool,
    pub note: String,
}

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    prompt_sha256: String,
}

/// Distinct prompt digests of a run, streamed; `true` when capped.
fn prompts(dir: &Path) -> Option<(HashSet<String>, bool)> {
    let f = std::fs::File::open(dir.join("request_manifest.jsonl")).ok()?;
    let mut set = HashSet::new();
    for line in std::io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        let Ok(r) = serde_json::from_str::<Row>(&line) else {
            continue;
        };
        if r.prompt_sha256.is_empty() {
            continue;
        }
        if set.len() >= limits::REUSE_CHECK_MAX_PROMPTS && !set.contains(&r.prompt_sha256) {
            return Some((set, true));
        }
        set.insert(r.prompt_sha256);
    }
    Some((set, false))
}

/// The run began with an empty KV cache: a successful KV reset, or an
/// in-process simulator (`--endpoint sim…`), which is a new engine per run.
fn reset_ok(dir: &Path) -> bool {
    use crate::results::documents::{ConfigDoc, SummaryDoc, read};
    let fresh_sim = read::<ConfigDoc>(&dir.join("config.json"))
        .is_ok_and(|c| crate::simulate::endpoint_profile(&c.base_url).is_some());
    fresh_sim
        || read::<SummaryDoc>(&dir.join("summary.json"))
            .ok()
            .and_then(|s| s.kv_reset)
            .is_some_and(|r| r.ok)
}

/// Every (earlier, later) pair of runs, in creation order, that shares
/// prompts. Runs are compared whatever their endpoint: run directories do
/// not say whether two endpoints were one server.
pub fn cross_run_prompt_reuse(runs: &[RunRecord]) -> CrossRunReuse {
    let mut ordered: Vec<&RunRecord> = runs.iter().collect();
    ordered.sort_by(|a, b| a.created_utc.cmp(&b.created_utc));
    let mut out = CrossRunReuse::default();
    let mut seen: Vec<(&str, HashSet<String>)> = Vec::new();
    for r in ordered {
        let Some((set, truncated)) = prompts(&r.dir) else {
            continue;
        };
        out.runs_checked += 1;
        if truncated {
            out.runs_truncated.push(r.run_id.clone());
        }
        let reset = reset_ok(&r.dir);
        for (earlier, prev) in &seen {
            let shared = set.iter().filter(|p| prev.contains(*p)).count() as u64;
            if shared > 0 {
                out.flagged |= !reset;
                out.pairs.push(ReusedPair {
                    earlier_run: (*earlier).to_owned(),
                    later_run: r.run_id.clone(),
                    shared_prompts: shared,
                    later_distinct_prompts: set.len() as u64,
                    later_kv_reset: reset,
                });
            }
        }
        seen.push((&r.run_id, set));
    }
    let unreset = out.pairs.iter().filter(|p| !p.later_kv_reset).count();
    out.note = if out.flagged {
        format!(
            "{unreset} later run(s) sent prompts an earlier run had sent, without a KV reset first: their cache hits may be the earlier run's KV (use --kv-reset-url/--kv-reset-command/--kv-reset-sim, or distinct seeds per cell)"
        )
    } else if out.pairs.is_empty() {
        "no run sent a prompt an earlier run had sent".into()
    } else {
        "runs share prompts, but every later one began with a successful KV reset".into()
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        root: &Path,
        id: &str,
        created: &str,
        prompts: &[&str],
        reset: Option<bool>,
    ) -> RunRecord {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let rows: String = prompts
            .iter()
            .map(|p| format!("{{\"prompt_sha256\":\"{p}\"}}\n"))
            .collect();
        std::fs::write(dir.join("request_manifest.jsonl"), rows).unwrap();
        let mut s = serde_json::json!({"run_id": id, "created_utc": created});
        if let Some(ok) = reset {
            s["kv_reset"] = serde_json::json!({"method": "sim", "ok": ok});
        }
        std::fs::write(dir.join("summary.json"), s.to_string()).unwrap();
        RunRecord {
            dir,
            run_id: id.into(),
            created_utc: created.into(),
            ..RunRecord::default()
        }
    }

    #[test]
    fn a_later_run_resending_prompts_is_flagged_unless_reset() {
        let d = tempfile::tempdir().unwrap();
        let a = run(d.path(), "a", "2026-01-01T00:00:00Z", &["p1", "p2"], None);
        let b = run(
            d.path(),
            "b",
            "2026-01-01T00:01:00Z",
            &["p2", "p3", "p3"],
            None,
        );
        let c = run(d.path(), "c", "2026-01-01T00:02:00Z", &["p4"], None);
        // Given out of order: creation time decides which run was first.
        let r = cross_run_prompt_reuse(&[b.clone(), c, a.clone()]);
        assert_eq!(r.runs_checked, 3);
        assert!(r.flagged, "{r:?}");
        assert_eq!(r.pairs.len(), 1);
        let p = &r.pairs[0];
        assert_eq!((p.earlier_run.as_str(), p.later_run.as_str()), ("a", "b"));
        assert_eq!((p.shared_prompts, p.later_distinct_prompts), (1, 2));

        let b = run(d.path(), "b", "2026-01-01T00:01:00Z", &["p2"], Some(true));
        let r = cross_run_prompt_reuse(&[a.clone(), b]);
        assert!(!r.flagged && r.pairs[0].later_kv_reset, "{r:?}");
        let b = run(d.path(), "b", "2026-01-01T00:01:00Z", &["p2"], Some(false));
        assert!(
            cross_run_prompt_reuse(&[a.clone(), b.clone()]).flagged,
            "a failed reset is no reset"
        );
        // An in-process simulator is a new engine per run.
        std::fs::write(b.dir.join("config.json"), r#"{"base_url":"sim:tiny"}"#).unwrap();
        assert!(!cross_run_prompt_reuse(&[a, b]).flagged);
    }
}
