//! A real NVIDIA Dynamo stack (OpenAI frontend + mocker engine + ZMQ broker)
//! for end-to-end tests, started per test on free loopback ports.
//!
//! Needs the venv and model dir from `make dynamo` (scripts/dynamo/). The
//! mocker simulates GPU timing and a real prefix cache but emits random
//! tokens, so tests should assert on shape, usage and metrics, not on text.
#![allow(dead_code)]

use std::fs::{self, File};
use std::hash::BuildHasher;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Compiled in rather than located at run time: the test binary's working
/// directory and the repo layout around it are not ours to assume.
const ZMQ_BROKER_PY: &str = include_str!("../../scripts/dynamo/zmq_broker.py");

const HOST: &str = "127.0.0.1";
pub const DEFAULT_MODEL: &str = "tiny-llama";

#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Extra `python -m dynamo.mocker` flags, e.g. `--max-model-len 512`.
    pub mocker_args: Vec<String>,
    /// Extra `python -m dynamo.frontend` flags, e.g. `--router-mode kv`.
    pub frontend_args: Vec<String>,
    pub model_name: String,
    /// Ready takes ~1-2 s on an idle box; the slack is for loaded CI runners.
    pub ready_timeout: Duration,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            mocker_args: Vec::new(),
            frontend_args: Vec::new(),
            model_name: DEFAULT_MODEL.to_string(),
            ready_timeout: Duration::from_secs(120),
        }
    }
}

impl StackOptions {
    pub fn with_mocker_args<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            mocker_args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

pub struct DynamoStack {
    /// Base URL of the OpenAI API, e.g. `http://127.0.0.1:41234` (no `/v1`).
    pub endpoint: String,
    pub model: String,
    pub frontend_metrics_url: String,
    pub worker_metrics_url: String,
    pub http_port: u16,
    pub system_port: u16,
    state_dir: PathBuf,
    procs: Vec<Proc>,
}

impl DynamoStack {
    pub fn start(opts: StackOptions) -> Result<Self, String> {
        let venv = env_path("SPARKHOST_DYNAMO_VENV", ".venv-dynamo");
        let model_dir = env_path("SPARKHOST_DYNAMO_MODEL", "target/dynamo-model/tiny-llama");
        let python = venv.join("bin/python");
        if !python.exists() {
            return Err(format!(
                "Dynamo venv not found at {} (python missing); run `make dynamo` \
                 or set SPARKHOST_DYNAMO_VENV",
                venv.display()
            ));
        }
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            if !model_dir.join(f).exists() {
                return Err(format!(
                    "Dynamo model dir {} lacks {f}; run `make dynamo` or set SPARKHOST_DYNAMO_MODEL",
                    model_dir.display()
                ));
            }
        }

        // Ports are picked by binding :0 and releasing, so another process can
        // take one before Dynamo binds it; a retry with fresh ports covers that.
        let mut last_err = String::new();
        for _ in 0..3 {
            match Self::start_once(&opts, &python, &model_dir) {
                Ok(stack) => return Ok(stack),
                Err(e) if e.contains("Address already in use") || e.contains("address in use") => {
                    last_err = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err)
    }

    fn start_once(opts: &StackOptions, python: &Path, model_dir: &Path) -> Result<Self, String> {
        let ports = free_ports()?;
        let (http_port, system_port, xsub_port, xpub_port) =
            (ports[0], ports[1], ports[2], ports[3]);
        let state_dir = unique_state_dir()?;
        let kv_dir = state_dir.join("kv");
        let cache_dir = state_dir.join("cache");
        for d in [&kv_dir, &cache_dir] {
            fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let broker_py = state_dir.join("zmq_broker.py");
        fs::write(&broker_py, ZMQ_BROKER_PY)
            .map_err(|e| format!("write {}: {e}", broker_py.display()))?;

        let mut stack = DynamoStack {
            endpoint: format!("http://{HOST}:{http_port}"),
            model: opts.model_name.clone(),
            frontend_metrics_url: format!("http://{HOST}:{http_port}/metrics"),
            worker_metrics_url: format!("http://{HOST}:{system_port}/metrics"),
            http_port,
            system_port,
            state_dir,
            procs: Vec::new(),
        };

        let xsub = format!("tcp://{HOST}:{xsub_port}");
        let xpub = format!("tcp://{HOST}:{xpub_port}");
        let env: Vec<(&str, String)> = vec![
            ("DYN_DISCOVERY_BACKEND", "file".into()),
            ("DYN_FILE_KV", kv_dir.display().to_string()),
            ("DYN_REQUEST_PLANE", "tcp".into()),
            ("DYN_EVENT_PLANE", "zmq".into()),
            // Broker mode: without it every event publisher binds 0.0.0.0.
            ("DYN_ZMQ_BROKER_URL", format!("xsub={xsub},xpub={xpub}")),
            // Each server socket has its own host knob, all defaulting to 0.0.0.0.
            ("DYN_TCP_RPC_HOST", HOST.into()),
            ("DYN_SYSTEM_HOST", HOST.into()),
            ("DYN_TCP_RESPONSE_STREAM_HOST", HOST.into()),
            ("DYN_EVENT_PLANE_HOST", HOST.into()),
            ("DYN_HTTP_RPC_HOST", HOST.into()),
            ("HF_HUB_OFFLINE", "1".into()),
            (
                "HF_HOME",
                cache_dir.join("huggingface").display().to_string(),
            ),
            // The frontend caches model cards here; keep them per stack.
            ("XDG_CACHE_HOME", cache_dir.display().to_string()),
            ("PYTHONUNBUFFERED", "1".into()),
            ("DYN_SDK_DISABLE_ANSI_LOGGING", "1".into()),
            ("NO_COLOR", "1".into()),
        ];

        // Pushed one by one so Drop cleans up whatever did start if a later
        // spawn fails.
        let broker = stack.spawn(
            "broker",
            python,
            &[broker_py.display().to_string(), xsub, xpub],
            &env,
            None,
        )?;
        stack.procs.push(broker);

        let mut mocker_args = vec![
            "-m".to_string(),
            "dynamo.mocker".into(),
            "--model-path".into(),
            model_dir.display().to_string(),
            "--model-name".into(),
            opts.model_name.clone(),
        ];
        mocker_args.extend(opts.mocker_args.iter().cloned());
        // The worker serves /metrics only when DYN_SYSTEM_PORT is set.
        let mocker = stack.spawn("mocker", python, &mocker_args, &env, Some(system_port))?;
        stack.procs.push(mocker);

        let mut frontend_args = vec![
            "-m".to_string(),
            "dynamo.frontend".into(),
            "--http-host".into(),
            HOST.into(),
            "--http-port".into(),
            http_port.to_string(),
        ];
        frontend_args.extend(opts.frontend_args.iter().cloned());
        let frontend = stack.spawn("frontend", python, &frontend_args, &env, None)?;
        stack.procs.push(frontend);

        stack.wait_ready(opts.ready_timeout)?;
        Ok(stack)
    }

    fn spawn(
        &self,
        name: &'static str,
        python: &Path,
        args: &[String],
        env: &[(&str, String)],
        system_port: Option<u16>,
    ) -> Result<Proc, String> {
        let log = self.state_dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
        let mut cmd = Command::new(python);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own group, so Drop's group kill also reaches anything it forks.
            .process_group(0);
        // An inherited DYN_SYSTEM_PORT would make every process bind the same port.
        match system_port {
            Some(p) => cmd.env("DYN_SYSTEM_PORT", p.to_string()),
            None => cmd.env_remove("DYN_SYSTEM_PORT"),
        };
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {name} ({}): {e}", python.display()))?;
        Ok(Proc { name, child, log })
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/v1/models", self.endpoint);
        loop {
            let exited = self
                .procs
                .iter_mut()
                .find_map(|p| match p.child.try_wait() {
                    Ok(Some(status)) => Some((p.name, status)),
                    _ => None,
                });
            if let Some((name, status)) = exited {
                return Err(format!(
                    "dynamo {name} exited during startup ({status})\n{}",
                    self.tail_logs()
                ));
            }
            if let Ok((200, body)) = http_get(&url)
                && models_list_contains(&body, &self.model)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "model {:?} not listed at {url} after {timeout:?}\n{}",
                    self.model,
                    self.tail_logs()
                ));
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Last lines of every component's log, for assertion messages.
    pub fn tail_logs(&self) -> String {
        const LINES: usize = 40;
        let mut out = String::new();
        for p in &self.procs {
            let text = fs::read_to_string(&p.log).unwrap_or_else(|e| format!("<unreadable: {e}>"));
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LINES);
            out.push_str(&format!(
                "----- {} ({}) last {} lines -----\n",
                p.name,
                p.log.display(),
                lines.len() - start
            ));
            for l in &lines[start..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// PIDs (== process-group ids) of broker, mocker and frontend.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }
}

impl Drop for DynamoStack {
    fn drop(&mut self) {
        // Frontend first so it stops routing before its worker goes away.
        for p in self.procs.iter().rev() {
            signal_group(p.child.id(), "TERM");
        }
        // Each component exits within ~2 s of SIGTERM.
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in self.procs.iter_mut().rev() {
            let pgid = p.child.id();
            loop {
                let child_done = matches!(p.child.try_wait(), Ok(Some(_)));
                if child_done && !group_alive(pgid) {
                    break;
                }
                if Instant::now() >= deadline {
                    signal_group(pgid, "KILL");
                    let _ = p.child.wait();
                    break;
                }
                sleep(Duration::from_millis(50));
            }
        }
        if std::env::var_os("SPARKHOST_DYNAMO_KEEP_STATE").is_none() {
            let _ = fs::remove_dir_all(&self.state_dir);
        }
    }
}

fn signal_group(pgid: u32, sig: &str) {
    // `kill` rather than libc: the workspace denies unsafe code.
    let _ = Command::new("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn repo_root() -> PathBuf {
    // Works whether this file is compiled by the host crate (manifest in
    // host/) or from the repo root.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|d| d.join("scripts/dynamo/stack.sh").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.parent().unwrap_or(&manifest).to_path_buf())
}

fn env_path(var: &str, default_rel: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => repo_root().join(default_rel),
    }
}

/// Dynamo 1.6.1 parses DYN_SYSTEM_PORT as an i16 ("expected i16 for key
/// SYSTEM_PORT") and refuses to start above 32767, which is where Linux hands
/// out port-0 binds; the system port is therefore drawn from below that.
const SYSTEM_PORT_RANGE: std::ops::RangeInclusive<u16> = 20000..=32767;

/// Returns `[http, system, xsub, xpub]`, all distinct and free right now.
fn free_ports() -> Result<Vec<u16>, String> {
    // Listeners are held until all ports are chosen so none repeats.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpListener::bind((HOST, 0)).map_err(|e| format!("bind {HOST}:0: {e}"))?);
    }
    let span = u64::from(SYSTEM_PORT_RANGE.end() - SYSTEM_PORT_RANGE.start()) + 1;
    // RandomState is seeded per process, so parallel test binaries spread out.
    let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    let system = (0..200u64)
        .map(|i| {
            SYSTEM_PORT_RANGE.start() + (seed.wrapping_add(i.wrapping_mul(7919)) % span) as u16
        })
        .find_map(|p| TcpListener::bind((HOST, p)).ok())
        .ok_or_else(|| {
            format!("no free port in {SYSTEM_PORT_RANGE:?} for the worker system server")
        })?;
    held.insert(1, system);
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string()))
        .collect()
}

fn unique_state_dir() -> Result<PathBuf, String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "sparkhost-dynamo-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn models_list_contains(body: &str, model: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("data").and_then(|d| d.as_array()).cloned())
        .is_some_and(|data| {
            data.iter()
                .any(|m| m.get("id").and_then(|i| i.as_str()) == Some(model))
        })
}

/// Minimal HTTP/1.1 GET (`http://host:port/path` only) returning status and
/// body; handles Content-Length, chunked and read-to-close bodies.
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .parse::<std::net::SocketAddr>()
        .map_err(|e| format!("{authority}: need ip:port ({e})"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read {addr}: {e}"))?;

    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "response without header terminator".to_string())?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let decoded;
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        decoded = dechunk(body)?;
        body = &decoded;
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = &body[..n.min(body.len())];
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| "truncated chunk size line".to_string())?;
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_str:?}: {e}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
