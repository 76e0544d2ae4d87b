//! `sparkhost stack up|down|status|logs|render`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use super::Exit;
use crate::cli::{StackAction, StackArgs, StackProfileArgs};
use crate::simulate;
use crate::stack::Profile;
use crate::stack::render::{self, Rendered};
use crate::stack::supervise::{self, Status};

/// Renders the profile for `state_dir`, with logs in `logs` (default: the
/// state dir's `logs/`).
pub fn render_for(
    args: &StackProfileArgs,
    state_dir: &Path,
    logs: Option<&Path>,
) -> anyhow::Result<Rendered> {
    let mode = simulate::tier_mode(&args.tier_mode, "--tier-mode")?;
    let (profile, source) = Profile::load(&args.profile).context("--profile")?;
    let state = absolute(state_dir)?;
    let ctx = render::Context {
        logs: match logs {
            Some(l) => absolute(l)?,
            None => state.join("logs"),
        },
        state,
        sparkhost: std::env::current_exe().context("locating this sparkhost binary")?,
        overrides: args.vars.iter().cloned().collect::<BTreeMap<_, _>>(),
    };
    Ok(render::render(&profile, &source, mode, &ctx)?)
}

/// Processes run in other directories than ours; every path they get is absolute.
fn absolute(p: &Path) -> anyhow::Result<std::path::PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current directory")?
        .join(p))
}

pub fn print_status(s: &Status) {
    let st = &s.state;
    println!(
        "stack {} tier mode {:?}{} (config sha256 {}, started {}, ready in {} s)",
        st.profile,
        st.tier_mode,
        if st.simulated { " SIMULATED" } else { "" },
        st.config_sha256,
        st.started_utc,
        st.ready_s
    );
    println!("endpoint {}", st.endpoint);
    for ((name, alive), p) in s.alive.iter().zip(&st.processes) {
        let id = match (&p.container, p.pid) {
            (Some(c), _) => format!("{} container {}", c.runtime, c.id),
            (None, Some(pid)) => format!("pid {pid}"),
            (None, None) => "-".into(),
        };
        println!(
            "{:<4} process {name:<10} {id} (log {})",
            if *alive { "ok" } else { "DOWN" },
            p.log.display()
        );
    }
    print!("{}", s.health.table());
    if s.tier.is_empty() {
        println!("ok   tier mode      {:?} as labelled", st.tier_mode);
    } else {
        for t in &s.tier {
            println!("FAIL tier_mode_mismatch {t}");
        }
    }
}

pub fn stack(args: StackArgs) -> anyhow::Result<Exit> {
    match args.action {
        StackAction::Render(a) => {
            let r = render_for(&a.profile, &a.state_dir, None)?;
            print!("{}", r.describe());
            if let Some(out) = &a.out {
                std::fs::create_dir_all(out)
                    .with_context(|| format!("creating {}", out.display()))?;
                for f in &r.files {
                    let p = out.join(&f.name);
                    std::fs::write(&p, &f.content)
                        .with_context(|| format!("writing {}", p.display()))?;
                }
            }
            Ok(Exit::Ok)
        }
        StackAction::Up(a) => {
            let r = render_for(&a.profile, &a.dir.state_dir, a.logs.as_deref())?;
            let logs = r
                .processes
                .first()
                .and_then(|p| p.log.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| a.dir.state_dir.join("logs"));
            let state = supervise::up(&r, &absolute(&a.dir.state_dir)?, &logs)?;
            eprintln!(
                "stack {} {:?}{} ready in {} s (config sha256 {}; logs in {})",
                state.profile,
                state.tier_mode,
                if state.simulated { " SIMULATED" } else { "" },
                state.ready_s,
                state.config_sha256,
                state.logs.display()
            );
            println!("{}", state.endpoint);
            Ok(Exit::Ok)
        }
        StackAction::Down(a) => {
            for s in supervise::down(&a.state_dir)? {
                println!("{}: {}", s.name, s.how);
            }
            Ok(Exit::Ok)
        }
        StackAction::Status(a) => {
            let s = supervise::status(&a.dir.state_dir)?;
            if a.json {
                let v = serde_json::json!({
                    "ok": s.ok(),
                    "stack": s.state,
                    "alive": s.alive.iter().map(|(n, a)| serde_json::json!({"name": n, "alive": a})).collect::<Vec<_>>(),
                    "health": s.health,
                    "tier_mode_mismatch": s.tier,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&s);
            }
            Ok(if s.ok() { Exit::Ok } else { Exit::Crashed })
        }
        StackAction::Logs(a) => {
            let state = supervise::State::load(&a.dir.state_dir)?;
            let mut found = false;
            for p in &state.processes {
                if a.process.as_deref().is_none_or(|n| n == p.name) {
                    found = true;
                    print!("{}", supervise::tail(p, a.lines as usize));
                }
            }
            if !found {
                let names: Vec<&str> = state.processes.iter().map(|p| p.name.as_str()).collect();
                anyhow::bail!(
                    "--process {:?}: the stack has {}",
                    a.process.unwrap_or_default(),
                    names.join(", ")
                );
            }
            Ok(Exit::Ok)
        }
    }
}
