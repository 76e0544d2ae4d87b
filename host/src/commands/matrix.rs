//! `sparkhost matrix`: every cell of a `matrix.toml` as its own run, into
//! one results tree with `matrix_index.json`; resumable; summarized at the end.
//!
//! Exit status: 0 when every cell produced a valid run, 2 when some cell is
//! invalid, failed or was not reached (interrupted), 1 for a bad matrix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};

use super::Exit;
use crate::analysis::launch::{RunLaunch, interrupt_flag, launch, sparkhost_exe};
use crate::analysis::matrix::{CellRecord, MatrixFile, MatrixIndex, cell_state, set_aside};
use crate::analysis::rundoc::RunRecord;
use crate::analysis::summarize::{render_text, table, write_csv};
use crate::cli::MatrixArgs;
use crate::digest::sha256_hex;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub async fn matrix(args: MatrixArgs) -> anyhow::Result<Exit> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let m = MatrixFile::parse(&text).with_context(|| format!("in {}", args.file.display()))?;
    let name = m.name(&args.file);
    let root: PathBuf = args
        .results_root
        .clone()
        .or_else(|| m.results_root.clone())
        .unwrap_or_else(|| Path::new("bench/matrix").join(&name));
    let cells = m.cells(&name);
    if args.dry_run {
        let exe = sparkhost_exe()?;
        for c in &cells {
            let l = RunLaunch {
                workload: c.workload.clone(),
                results_root: root.clone(),
                run_id: c.id.clone(),
                args: c.args.clone(),
            };
            let done =
                cell_state(&l.run_dir()).is_some_and(|(_, r)| r.as_deref() != Some("interrupted"));
            println!(
                "{}{} {}",
                if done { "(done) " } else { "" },
                exe.display(),
                l.argv().join(" ")
            );
        }
        println!("{} cells into {}", cells.len(), root.display());
        return Ok(Exit::Ok);
    }
    let pinned = resolve_workloads(&m, &args)?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let exe = sparkhost_exe()?;
    let interrupted = interrupt_flag();
    let mut index = MatrixIndex {
        name: name.clone(),
        matrix_file: args.file.display().to_string(),
        matrix_sha256: sha256_hex(text.as_bytes()),
        results_root: root.display().to_string(),
        updated_utc: now(),
        cells: cells
            .iter()
            .map(|c| CellRecord {
                id: c.id.clone(),
                repeat: c.repeat,
                label: c.label.clone(),
                workload: c.workload.display().to_string(),
                params: c.params.clone(),
                load: serde_json::to_value(c.load).unwrap_or_default(),
                run_dir: root.join(&c.id).display().to_string(),
                status: "pending".into(),
                invalid_reason: None,
                exit_code: None,
                resumed: false,
                error: None,
            })
            .collect(),
        prompt_reuse_across_runs: None,
    };
    let total = cells.len();
    for (i, c) in cells.iter().enumerate() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let mut cell_args = c.args.clone();
        if args.plain_http {
            cell_args.push("--plain-http".into());
        }
        let l = RunLaunch {
            workload: pinned
                .get(&c.workload)
                .cloned()
                .unwrap_or_else(|| c.workload.clone()),
            results_root: root.clone(),
            run_id: c.id.clone(),
            args: cell_args,
        };
        let dir = l.run_dir();
        let rec = &mut index.cells[i];
        match cell_state(&dir) {
            Some((valid, reason)) if reason.as_deref() != Some("interrupted") => {
                rec.status = if valid { "valid" } else { "invalid" }.into();
                rec.invalid_reason = reason;
                rec.resumed = true;
                println!("[{}/{total}] {} already done ({})", i + 1, c.id, rec.status);
                continue;
            }
            _ => {}
        }
        if dir.exists() {
            let aside = set_aside(&dir)?;
            eprintln!(
                "{} was unfinished; kept as {}",
                dir.display(),
                aside.display()
            );
        }
        println!("[{}/{total}] {} …", i + 1, c.id);
        let exe2 = exe.clone();
        let l2 = l.clone();
        let out = tokio::task::spawn_blocking(move || launch(&exe2, &l2))
            .await
            .context("the run launcher panicked")??;
        let rec = &mut index.cells[i];
        rec.exit_code = out.exit_code;
        match cell_state(&dir) {
            Some((_, Some(r))) if r == "interrupted" => {
                rec.status = "interrupted".into();
                rec.invalid_reason = Some(r);
                interrupted.store(true, Ordering::SeqCst);
            }
            Some((valid, reason)) => {
                rec.status = if valid { "valid" } else { "invalid" }.into();
                rec.invalid_reason = reason;
            }
            None => {
                rec.status = "failed".into();
                rec.error = Some(out.stderr_tail.clone());
            }
        }
        if out.exit_code.is_none() {
            interrupted.store(true, Ordering::SeqCst);
        }
        println!(
            "[{}/{total}] {} {}{}",
            i + 1,
            c.id,
            rec.status,
            rec.invalid_reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        let failed = rec.status == "failed";
        if failed {
            eprintln!("{}", out.stderr_tail);
        }
        index.updated_utc = now();
        index.write(&root)?;
        if failed && args.fail_fast {
            bail!("cell {} failed to run (--fail-fast)", c.id);
        }
    }
    index.updated_utc = now();
    index.write(&root)?;
    let runs: Vec<RunRecord> = index
        .cells
        .iter()
        .filter(|c| matches!(c.status.as_str(), "valid" | "invalid" | "interrupted"))
        .filter_map(|c| RunRecord::load(Path::new(&c.run_dir)).ok())
        .collect();
    if !runs.is_empty() {
        let reuse = crate::analysis::reuse::cross_run_prompt_reuse(&runs);
        if reuse.flagged {
            println!(
                "WARNING {}: {}",
                crate::analysis::reuse::PROMPT_REUSED_ACROSS_RUNS,
                reuse.note
            );
        }
        index.prompt_reuse_across_runs = Some(reuse);
        index.write(&root)?;
        let t = table(&runs, args.slo.as_ref());
        print!("{}", render_text(&t));
        let csv = root.join("summary.csv");
        write_csv(&t, &csv)?;
        println!("wrote {}", csv.display());
    }
    let count = |s: &str| index.cells.iter().filter(|c| c.status == s).count();
    println!(
        "matrix {name}: {} valid, {} invalid, {} failed, {} interrupted, {} not run; index {}",
        count("valid"),
        count("invalid"),
        count("failed"),
        count("interrupted"),
        count("pending"),
        root.join("matrix_index.json").display()
    );
    Ok(if count("valid") == total {
        Exit::Ok
    } else {
        Exit::Invalid
    })
}

/// Checks every workload before any cell runs: a file exists, an
/// `oci://` reference resolves (and is pulled), and a `sha256` pin matches.
/// Returns each `oci://` reference's pinned form (`@sha256:` of the
/// manifest it resolved to), which every cell then runs.
fn resolve_workloads(
    m: &MatrixFile,
    args: &MatrixArgs,
) -> anyhow::Result<BTreeMap<PathBuf, PathBuf>> {
    let paths: Vec<Option<&Path>> = m.workloads.iter().map(|w| Some(w.path.as_path())).collect();
    crate::share::check_plain_http_used(args.plain_http, &paths)?;
    let registry = crate::share::RegistryOptions {
        plain_http: args.plain_http,
        cache_dir: None,
    };
    let mut pinned = BTreeMap::new();
    for w in &m.workloads {
        let in_file = || format!("workload {} (in {})", w.path.display(), args.file.display());
        let is_oci = w.path.to_str().is_some_and(crate::share::is_oci);
        if !is_oci && !w.path.is_file() {
            bail!("{} does not exist", in_file());
        }
        let source = crate::share::resolve(&w.path, &registry).with_context(in_file)?;
        if let Some(o) = &source.oci {
            pinned.insert(w.path.clone(), PathBuf::from(&o.pinned));
        }
        if let Some(pin) = &w.sha256 {
            let actual = match &source.oci {
                Some(o) => o.layer_digest.trim_start_matches("sha256:").to_owned(),
                None => sha256_hex(
                    &std::fs::read(&w.path).with_context(|| format!("reading {}", in_file()))?,
                ),
            };
            if &actual != pin {
                bail!(
                    "{} has sha256 {actual}, but the matrix pins sha256 {pin}; refusing to run any cell",
                    in_file()
                );
            }
        }
    }
    Ok(pinned)
}
