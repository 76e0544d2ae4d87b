//! Starting, checking and stopping a rendered stack. Every process leads its
//! own process group and is recorded with its start time, every container
//! with its id, in `stack.json` in the state dir: `down` signals exactly
//! those (a PID whose start time changed was reused and is left alone),
//! never anything found by name.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sparkhost_kvbm::TierMode;

use super::health::{self, Health, Targets, TierExpect};
use super::profile::{INHERITED_ENV, ProfileError};
use super::render::{Rendered, RenderedProcess};
use crate::limits;

pub const STATE_FILE: &str = "stack.json";
/// Marks a directory `up` may empty: a state dir given by mistake (`.`,
/// `$HOME`) is never wiped.
const MARKER: &str = ".sparkhost-stack";

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("{what} {}: {error}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("state dir {} already runs a stack ({profile} {mode:?}, started {started}); stop it first: sparkhost stack down --state-dir {}", dir.display(), dir.display())]
    AlreadyRunning {
        dir: PathBuf,
        profile: String,
        mode: TierMode,
        started: String,
    },
    #[error("state dir {} is not empty and was not made by sparkhost stack; pick an empty or new directory", .0.display())]
    ForeignStateDir(PathBuf),
    #[error("no stack in {} (no {STATE_FILE}); start one with sparkhost stack up", .0.display())]
    NoStack(PathBuf),
    #[error("{}: {error}", path.display())]
    BadState { path: PathBuf, error: String },
    #[error("starting {name}: {error}")]
    Spawn { name: String, error: String },
    #[error("stack {profile} {mode:?} not ready after {secs} s: {what}\n{logs}")]
    NotReady {
        profile: String,
        mode: TierMode,
        secs: u64,
        what: String,
        logs: String,
    },
    #[error("stack {profile} {mode:?}: {name} exited during start-up ({status})\n{logs}")]
    Exited {
        profile: String,
        mode: TierMode,
        name: String,
        status: String,
        logs: String,
    },
    /// The stack runs, but not in the mode it is labelled with.
    #[error("tier_mode_mismatch: stack {profile} is labelled {mode:?}, but {}", seen.join("; "))]
    TierMismatch {
        profile: String,
        mode: TierMode,
        seen: Vec<String>,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StackError + 'a {
    move |error| StackError::Io {
        what,
        path: path.to_path_buf(),
        error,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRef {
    pub runtime: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    pub name: String,
    pub log: PathBuf,
    /// Local process: its PID, which is also its process group.
    pub pid: Option<u32>,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22),
    /// so a reused PID is never signalled.
    pub start_ticks: Option<u64>,
    pub container: Option<ContainerRef>,
    pub stop_grace_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRef {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
}

/// `stack.json`: what runs, and everything a run needs to know about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub profile: String,
    pub source: String,
    pub tier_mode: TierMode,
    pub simulated: bool,
    pub kvbm: bool,
    pub endpoint: String,
    pub health_url: Option<String>,
    pub models: bool,
    pub kvbm_metrics_url: Option<String>,
    pub nats_client: Option<String>,
    pub nats_monitor: Option<String>,
    pub disk_cache_dir: Option<PathBuf>,
    pub disk_device: Option<String>,
    pub config_sha256: String,
    pub env_sha256: String,
    pub files: Vec<FileRef>,
    pub processes: Vec<Running>,
    pub logs: PathBuf,
    pub started_utc: String,
    /// Seconds from the first spawn until every readiness check passed.
    pub ready_s: f64,
}

impl State {
    pub fn load(dir: &Path) -> Result<State, StackError> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StackError::NoStack(dir.to_path_buf()));
            }
            Err(e) => return Err(io("reading", &path)(e)),
        };
        serde_json::from_str(&text).map_err(|e| StackError::BadState {
            path,
            error: e.to_string(),
        })
    }

    fn save(&self, dir: &Path) -> Result<(), StackError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| StackError::BadState {
            path: path.clone(),
            error: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(io("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("writing", &path))
    }

    pub fn targets(&self) -> Targets {
        Targets {
            endpoint: self.endpoint.clone(),
            health: self.health_url.clone(),
            models: self.models,
            kvbm_metrics: self.kvbm_metrics_url.clone(),
            nats_client: self.nats_client.clone(),
            nats_monitor: self.nats_monitor.clone(),
        }
    }

    pub fn expect(&self) -> TierExpect {
        TierExpect {
            mode: self.tier_mode,
            kvbm: self.kvbm,
            kvbm_declared: self.kvbm_metrics_url.is_some(),
            disk_cache_dir: self.disk_cache_dir.clone(),
            disk_device: self.disk_device.clone(),
        }
    }

    /// Whether each process still runs, by name.
    pub fn alive(&self) -> Vec<(String, bool)> {
        self.processes
            .iter()
            .map(|p| (p.name.clone(), running(p)))
            .collect()
    }
}

/// Field 22 of `/proc/PID/stat`, and whether the process is a zombie.
fn proc_start(pid: u32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and ')': fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// Reaps `pid` if it is our child (a stack started and stopped by the same
/// `compare`); ECHILD otherwise, which is fine.
fn reap(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
    }
}

/// The process is ours (same start time) and not a zombie.
fn local_alive(pid: u32, start: Option<u64>) -> bool {
    reap(pid);
    match proc_start(pid) {
        Some((t, zombie)) => !zombie && start.is_none_or(|s| s == t),
        None => false,
    }
}

fn group_has_members(pgid: u32) -> bool {
    rustix::process::Pid::from_raw(pgid as i32)
        .is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok())
}

/// Signals only the process group the stack created (its leader's PID).
fn signal_group(pgid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(p, sig);
    }
}

fn container_running(c: &ContainerRef) -> bool {
    Command::new(&c.runtime)
        .args(["inspect", "-f", "{{.State.Running}}", &c.id])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false)
}

fn running(p: &Running) -> bool {
    match (&p.container, p.pid) {
        (Some(c), _) => container_running(c),
        (None, Some(pid)) => local_alive(pid, p.start_ticks),
        (None, None) => false,
    }
}

/// Last `lines` of a process's log (a container's from its runtime).
pub fn tail(p: &Running, lines: usize) -> String {
    let text = match &p.container {
        Some(c) => Command::new(&c.runtime)
            .args(["logs", "--tail", &lines.to_string(), &c.id])
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s
            })
            .unwrap_or_else(|e| format!("<{} logs failed: {e}>", c.runtime)),
        None => fs::read_to_string(&p.log).unwrap_or_else(|e| format!("<unreadable: {e}>")),
    };
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = format!(
        "----- {} ({}) last {} lines -----\n",
        p.name,
        p.log.display(),
        all.len() - start
    );
    for l in &all[start..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn tails(ps: &[Running]) -> String {
    ps.iter()
        .map(|p| tail(p, limits::STACK_LOG_TAIL_LINES))
        .collect()
}

/// Empties `dir` for a new stack, refusing a live stack or a foreign dir.
fn prepare_state_dir(dir: &Path) -> Result<(), StackError> {
    if dir.exists() {
        match State::load(dir) {
            Ok(s) if s.alive().iter().any(|(_, a)| *a) => {
                return Err(StackError::AlreadyRunning {
                    dir: dir.to_path_buf(),
                    profile: s.profile,
                    mode: s.tier_mode,
                    started: s.started_utc,
                });
            }
            _ => {}
        }
        let empty = fs::read_dir(dir)
            .map_err(io("reading", dir))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(StackError::ForeignStateDir(dir.to_path_buf()));
        }
        fs::remove_dir_all(dir).map_err(io("emptying", dir))?;
    }
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    fs::write(
        dir.join(MARKER),
        "made by sparkhost stack up; emptied by the next up\n",
    )
    .map_err(io("writing", dir))?;
    // Dynamo's file discovery and caches; wiped with the dir, so a dead
    // worker's registration is never routed to.
    for sub in ["discovery", "cache"] {
        let d = dir.join(sub);
        fs::create_dir_all(&d).map_err(io("creating", &d))?;
    }
    Ok(())
}

fn spawn_local(p: &RenderedProcess) -> Result<(Child, Running), StackError> {
    let log = File::create(&p.log).map_err(io("creating log", &p.log))?;
    let err = log.try_clone().map_err(io("creating log", &p.log))?;
    let mut cmd = Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .env_clear()
        .envs(
            INHERITED_ENV
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .envs(&p.env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own group, so `down` also reaches whatever it forks.
        .process_group(0);
    let child = cmd.spawn().map_err(|e| StackError::Spawn {
        name: p.name.clone(),
        error: format!("{}: {e}", p.argv[0]),
    })?;
    let pid = child.id();
    let start_ticks = proc_start(pid).map(|(t, _)| t);
    Ok((
        child,
        Running {
            name: p.name.clone(),
            log: p.log.clone(),
            pid: Some(pid),
            start_ticks,
            container: None,
            stop_grace_s: p.stop_grace_s,
        },
    ))
}

fn spawn_container(p: &RenderedProcess) -> Result<Running, StackError> {
    let c = p.container.as_ref().expect("a container process");
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    args.extend(c.run_args.iter().cloned());
    for (k, v) in &p.env {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.push(c.image.clone());
    // A variable the image's ENV sets cannot be unset by `run -e`; `env -u`
    // removes it in the container itself.
    if !p.unset.is_empty() {
        args.push("env".into());
        for u in &p.unset {
            args.push("-u".into());
            args.push(u.clone());
        }
    }
    args.extend(p.argv.iter().cloned());
    let out = Command::new(&c.runtime)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StackError::Spawn {
            name: p.name.clone(),
            error: format!("{}: {e}", c.runtime),
        })?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StackError::Spawn {
            name: p.name.clone(),
            error: format!(
                "{} run failed ({}): {}",
                c.runtime,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(Running {
        name: p.name.clone(),
        log: p.log.clone(),
        pid: None,
        start_ticks: None,
        container: Some(ContainerRef {
            runtime: c.runtime.clone(),
            id,
        }),
        stop_grace_s: p.stop_grace_s,
    })
}

/// Starts `r` with its state in `dir`, waits until it is ready and in the
/// mode it is labelled with. On any failure everything started is stopped.
pub fn up(r: &Rendered, dir: &Path, logs: &Path) -> Result<State, StackError> {
    prepare_state_dir(dir)?;
    fs::create_dir_all(logs).map_err(io("creating", logs))?;
    for f in &r.files {
        fs::write(&f.path, &f.content).map_err(io("writing", &f.path))?;
    }
    let mut state = State {
        profile: r.profile.clone(),
        source: r.source.clone(),
        tier_mode: r.tier_mode,
        simulated: r.simulated,
        kvbm: r.kvbm,
        endpoint: r.endpoint.clone(),
        health_url: r.health_url.clone(),
        models: r.models,
        kvbm_metrics_url: r.kvbm_metrics_url.clone(),
        nats_client: r.nats_client.clone(),
        nats_monitor: r.nats_monitor.clone(),
        disk_cache_dir: r.disk_cache_dir.clone(),
        disk_device: r.disk_device.clone(),
        config_sha256: r.config_sha256.clone(),
        env_sha256: r.env_sha256.clone(),
        files: r
            .files
            .iter()
            .map(|f| FileRef {
                name: f.name.clone(),
                path: f.path.clone(),
                sha256: f.sha256.clone(),
            })
            .collect(),
        processes: Vec::new(),
        logs: logs.to_path_buf(),
        started_utc: sparkhost_collectors::common::utc_now(),
        ready_s: 0.0,
    };
    let t0 = Instant::now();
    let mut children: Vec<Child> = Vec::new();
    let result = (|| {
        for p in &r.processes {
            let running = match &p.container {
                Some(_) => spawn_container(p)?,
                None => {
                    let (child, running) = spawn_local(p)?;
                    children.push(child);
                    running
                }
            };
            state.processes.push(running);
            // Saved after every start, so `down` finds whatever did start
            // even if this process dies next.
            state.save(dir)?;
        }
        wait_ready(&state, r.ready_timeout)
    })();
    match result {
        Ok(()) => {
            state.ready_s = (t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
            state.save(dir)?;
            Ok(state)
        }
        Err(e) => {
            stop(&state);
            let _ = fs::remove_file(dir.join(STATE_FILE));
            for mut c in children {
                let _ = c.try_wait();
            }
            Err(e)
        }
    }
}

/// Polls until every readiness check passes, then judges the tier mode.
fn wait_ready(state: &State, timeout: Duration) -> Result<(), StackError> {
    let deadline = Instant::now() + timeout;
    let targets = state.targets();
    let expect = state.expect();
    let mut last_container_check = Instant::now();
    loop {
        // A container check forks the runtime: once a second is enough.
        let check_containers = last_container_check.elapsed() >= Duration::from_secs(1);
        for p in &state.processes {
            if p.container.is_some() && !check_containers {
                continue;
            }
            if !running(p) {
                return Err(StackError::Exited {
                    profile: state.profile.clone(),
                    mode: state.tier_mode,
                    name: p.name.clone(),
                    status: "not running".into(),
                    logs: tails(&state.processes),
                });
            }
        }
        if check_containers {
            last_container_check = Instant::now();
        }
        let h = health::probe(&targets, limits::STACK_PROBE_TIMEOUT);
        let kvbm_pending = expect.kvbm && expect.kvbm_declared && !h.kvbm_answered;
        if h.ok() && !kvbm_pending {
            let seen = health::tier_checks(&h, &expect);
            if !seen.is_empty() {
                return Err(StackError::TierMismatch {
                    profile: state.profile.clone(),
                    mode: state.tier_mode,
                    seen,
                });
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut what: Vec<String> = h
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            if kvbm_pending {
                what.extend(health::tier_checks(&h, &expect));
            }
            return Err(StackError::NotReady {
                profile: state.profile.clone(),
                mode: state.tier_mode,
                secs: timeout.as_secs(),
                what: what.join("; "),
                logs: tails(&state.processes),
            });
        }
        sleep(limits::STACK_READY_POLL);
    }
}

/// What `down` did, per process.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    pub name: String,
    pub how: String,
}

/// Stops every recorded process, last started first (the frontend stops
/// taking requests before its worker goes). Never fails half-way: each
/// process gets its chance, and what happened is returned.
fn stop(state: &State) -> Vec<Stopped> {
    let mut out = Vec::new();
    for p in state.processes.iter().rev() {
        let how = match (&p.container, p.pid) {
            (Some(c), _) => stop_container(p, c),
            (None, Some(pid)) => stop_local(pid, p.start_ticks, p.stop_grace_s),
            (None, None) => "nothing recorded".into(),
        };
        out.push(Stopped {
            name: p.name.clone(),
            how,
        });
    }
    out
}

fn stop_local(pid: u32, start: Option<u64>, grace_s: u64) -> String {
    if !local_alive(pid, start) {
        // Stragglers of the group (a forked helper) still go.
        if group_has_members(pid) && proc_start(pid).is_none() {
            signal_group(pid, rustix::process::Signal::KILL);
            return format!("pid {pid} had exited; killed what was left of its group");
        }
        return format!("pid {pid} was not running (or was reused; left alone)");
    }
    signal_group(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(grace_s);
    while local_alive(pid, start) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    let forced = local_alive(pid, start);
    if group_has_members(pid) {
        signal_group(pid, rustix::process::Signal::KILL);
    }
    let t = Instant::now();
    while local_alive(pid, start) && t.elapsed() < Duration::from_secs(5) {
        sleep(Duration::from_millis(20));
    }
    if forced {
        format!("pid {pid}: ignored SIGTERM for {grace_s} s, killed")
    } else {
        format!("pid {pid}: stopped by SIGTERM")
    }
}

fn stop_container(p: &Running, c: &ContainerRef) -> String {
    // Its output lives in the runtime until `rm`; keep it with the run.
    if let Ok(o) = Command::new(&c.runtime)
        .args(["logs", &c.id])
        .stdin(Stdio::null())
        .output()
    {
        let mut text = o.stdout;
        text.extend_from_slice(&o.stderr);
        let _ = fs::write(&p.log, text);
    }
    let stop = Command::new(&c.runtime)
        .args(["stop", "-t", &p.stop_grace_s.to_string(), &c.id])
        .stdin(Stdio::null())
        .output();
    let rm = Command::new(&c.runtime)
        .args(["rm", "-f", &c.id])
        .stdin(Stdio::null())
        .output();
    match (stop, rm) {
        (Ok(s), Ok(r)) if s.status.success() && r.status.success() => {
            format!(
                "container {}: stopped and removed",
                &c.id[..12.min(c.id.len())]
            )
        }
        (s, r) => format!(
            "container {}: stop {:?}, rm {:?}",
            c.id,
            s.map(|o| o.status),
            r.map(|o| o.status)
        ),
    }
}

/// Stops the stack recorded in `dir` and removes its `stack.json` (logs stay).
pub fn down(dir: &Path) -> Result<Vec<Stopped>, StackError> {
    let state = State::load(dir)?;
    let out = stop(&state);
    let path = dir.join(STATE_FILE);
    fs::remove_file(&path).map_err(io("removing", &path))?;
    Ok(out)
}

/// The stack's processes, its health and its tier checks.
pub struct Status {
    pub state: State,
    pub alive: Vec<(String, bool)>,
    pub health: Health,
    pub tier: Vec<String>,
}

pub fn status(dir: &Path) -> Result<Status, StackError> {
    let state = State::load(dir)?;
    let alive = state.alive();
    let health = health::probe(&state.targets(), limits::STACK_PROBE_TIMEOUT);
    let tier = health::tier_checks(&health, &state.expect());
    Ok(Status {
        state,
        alive,
        health,
        tier,
    })
}

impl Status {
    pub fn ok(&self) -> bool {
        self.alive.iter().all(|(_, a)| *a) && self.health.ok() && self.tier.is_empty()
    }
}
