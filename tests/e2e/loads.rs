//! Load flags never silently do nothing (`run::loads`): against the
//! in-process simulator, each shipped kind of phase load — left to the
//! command line, derived from a `concurrency` param, fixed by the workload —
//! either runs at the flag's load or refuses the run naming the phase, and
//! `config.json` and `summarize` show what each phase really ran.

use std::path::Path;

use serde_json::{Value, json};

use crate::{dirs, read_json, sparkhost, text, workload};

/// `run WASM --endpoint sim:tiny` with quick settings, into `root/<id>`.
fn run(root: &Path, cache: &Path, wasm: &str, id: &str, extra: &[&str]) -> std::process::Output {
    let w = workload(wasm);
    let mut args = vec![
        "run",
        w.to_str().unwrap(),
        "--endpoint",
        "sim:tiny",
        "--tier-mode",
        "B0",
        "--no-telemetry",
        "--no-report",
        "--max-tokens",
        "4",
        "--results-root",
        root.to_str().unwrap(),
        "--run-id",
        id,
    ];
    args.extend_from_slice(extra);
    sparkhost(&args, cache)
}

/// `(phase, load, load_source)` from a run's config.json.
fn phase_loads(dir: &Path) -> Vec<(String, Value, Value)> {
    read_json(&dir.join("config.json"))["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["load"].clone(),
                p["load_source"].clone(),
            )
        })
        .collect()
}

fn closed(c: u32) -> Value {
    json!({"kind": "closed", "concurrency": c})
}

#[test]
fn concurrency_goes_to_a_concurrency_param_and_every_phase_shows_its_load() {
    let d = dirs();
    let root = d.results.path();
    let small = [
        "-p",
        "a-requests=2",
        "-p",
        "b-requests=2",
        "-p",
        "warmup=0",
        "-p",
        "long-range=64:64",
    ];
    let mut args = vec!["--concurrency", "4"];
    args.extend_from_slice(&small);
    let out = run(root, d.cache.path(), "eviction_replay", "c4", &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let src = json!("workload_param");
    assert_eq!(
        phase_loads(&root.join("c4")),
        vec![
            ("warm_A".to_owned(), closed(4), src.clone()),
            // The seed's rule, kept by the workload: B at twice the concurrency.
            ("pressure_B".to_owned(), closed(8), src.clone()),
            ("replay_A".to_owned(), closed(4), src),
        ]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "phase loads: warm_A closed loop, concurrency 4 (from its concurrency param)"
        ),
        "{stderr}"
    );
    let config = read_json(&root.join("c4/config.json"));
    assert_eq!(config["params"]["concurrency"], "4");

    // No flag: the workload's own defaults, labelled as such.
    let out = run(root, d.cache.path(), "eviction_replay", "own", &small);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        phase_loads(&root.join("own"))
            .iter()
            .all(|(_, l, s)| *s == json!("workload") && *l != closed(4)),
        "{:?}",
        phase_loads(&root.join("own"))
    );

    // The flag and the param disagreeing is refused.
    let mut both = vec!["--concurrency", "4", "-p", "concurrency=2"];
    both.extend_from_slice(&small);
    let out = run(root, d.cache.path(), "eviction_replay", "both", &both);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("disagree"),
        "{}",
        text(&out)
    );

    // summarize's load column is what the counted phases ran.
    let csv_dir = tempfile::tempdir().unwrap();
    let out = sparkhost(
        &[
            "summarize",
            root.join("c4").to_str().unwrap(),
            "--out",
            csv_dir.path().to_str().unwrap(),
        ],
        d.cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let csv = std::fs::read_to_string(csv_dir.path().join("summary.csv")).unwrap();
    assert!(
        csv.contains("\"c=4,c=8\"") || csv.contains("c=4,c=8"),
        "{csv}"
    );
}

#[test]
fn a_fixed_phase_load_refuses_the_flag_by_name_unless_overridden() {
    let d = dirs();
    let root = d.results.path();
    let small = ["-p", "repeats=2", "-p", "short-range=32:32"];
    let mut args = vec!["--concurrency", "4"];
    args.extend_from_slice(&small);
    let out = run(root, d.cache.path(), "reuse_verify", "refused", &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--concurrency 4 cannot apply")
            && err.contains("reuse_verify")
            && err.contains("--override-phase-loads"),
        "{err}"
    );
    assert!(
        !root.join("refused").exists(),
        "refused before the run directory"
    );

    let mut args = vec!["--concurrency", "4", "--override-phase-loads"];
    args.extend_from_slice(&small);
    let out = run(root, d.cache.path(), "reuse_verify", "over", &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let loads = phase_loads(&root.join("over"));
    assert!(!loads.is_empty());
    assert!(
        loads
            .iter()
            .all(|(_, l, s)| *l == closed(4) && *s == json!("override")),
        "{loads:?}"
    );

    // --override-phase-loads with no load to override with.
    let out = run(
        root,
        d.cache.path(),
        "reuse_verify",
        "nothing",
        &["--override-phase-loads"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --concurrency or --rate"));
}

#[test]
fn phases_left_to_the_command_line_take_the_flag_and_two_loads_are_refused() {
    let d = dirs();
    let root = d.results.path();
    let small = [
        "--requests",
        "4",
        "--warmup",
        "0",
        "-p",
        "short-range=32:32",
    ];
    let mut args = vec!["--rate", "50", "--arrival", "constant"];
    args.extend_from_slice(&small);
    let out = run(root, d.cache.path(), "synthetic", "rate", &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let loads = phase_loads(&root.join("rate"));
    assert!(
        loads
            .iter()
            .all(|(_, l, s)| *l == json!({"kind": "constant", "rate": 50.0})
                && *s == json!("command_line")),
        "{loads:?}"
    );

    let mut args = vec!["--rate", "50", "--concurrency", "2"];
    args.extend_from_slice(&small);
    let out = run(root, d.cache.path(), "synthetic", "two", &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not both"),
        "{}",
        text(&out)
    );
}

#[test]
fn duration_stops_sending_keeps_what_was_sent_and_the_run_stays_valid() {
    let d = dirs();
    let root = d.results.path();
    // 1000 requests at 20/s would take 50 s; the run is cut at 2 s.
    let args = [
        "--rate",
        "20",
        "--arrival",
        "constant",
        "--requests",
        "1000",
        "--warmup",
        "0",
        "-p",
        "short-range=32:32",
        "--duration",
        "2s",
    ];
    let out = run(root, d.cache.path(), "synthetic", "cut", &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = root.join("cut");
    let summary = read_json(&dir.join("summary.json"));
    let dispatch = &summary["dispatch"];
    assert_eq!(dispatch["stopped_by_duration"], true, "{dispatch:#}");
    let recorded = dispatch["recorded"].as_u64().unwrap();
    let unsent = dispatch["unsent"].as_u64().unwrap();
    let planned = dispatch["planned"].as_u64().unwrap();
    // 2 s at 20/s: about 40 sent (the first at 0 s), far from 1000.
    assert!((30..=45).contains(&recorded), "{dispatch:#}");
    assert!(unsent > 0 && recorded + unsent <= planned, "{dispatch:#}");
    let rows = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap();
    assert_eq!(rows.lines().count() as u64, recorded);
    assert_eq!(summary["run_valid"], true, "{summary:#}");
    assert_eq!(read_json(&dir.join("config.json"))["duration_s"], 2.0);

    for bad in ["0s", "8d", "1e300"] {
        let out = run(
            root,
            d.cache.path(),
            "synthetic",
            "bad",
            &["--duration", bad],
        );
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--duration"),
            "{}",
            text(&out)
        );
    }
}
