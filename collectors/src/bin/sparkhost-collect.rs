//! `sparkhost-collect`: one-off use of the collectors without a benchmark.
//!
//! - `nvme [DEVICE]`: Identify + SMART as JSON (default `/dev/nvme0`).
//! - `nvme-write-check --ctrl /dev/nvme0 --ns nvme0n1 [--write-mib 64] [--read-mib 32]`:
//!   SMART, diskstats and this process's I/O before and after O_DIRECT I/O of a
//!   known size on the namespace, as one JSON document (the QEMU test runs it in
//!   its guest). Overwrites the start of the namespace.
//! - `sample --run-dir DIR --seconds N [--interval-ms MS] [--only a,b,…]`: a
//!   telemetry session for N seconds as one phase named `sample`, for checking a
//!   collector on a real machine (e.g. `--only gpu` while a GPU load runs).
//! - `prom FILE`: parse a Prometheus text file strictly and summarize it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use sparkhost_collectors::{
    Collectors, Config, Session, SourceId, directio, diskstats, nvme, prometheus,
};

fn usage() -> ExitCode {
    eprintln!(
        "usage: sparkhost-collect nvme [DEVICE]\n       sparkhost-collect nvme-write-check --ctrl DEV --ns NAME [--write-mib N] [--read-mib N]\n       sparkhost-collect sample --run-dir DIR --seconds N [--interval-ms MS] [--only LIST] [--nvme DEV] [--block-device NAME] [--process-pattern RE] [--kvbm-url URL] [--frontend-url URL] [--worker-url URL]\n       sparkhost-collect prom FILE"
    );
    ExitCode::from(2)
}

/// `--name value` pairs after the subcommand.
fn flags(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let k = a
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {a:?}"))?;
        let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
        out.push((k.to_string(), v.clone()));
    }
    Ok(out)
}

fn get<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
    f.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let r = match cmd.as_str() {
        "nvme" => cmd_nvme(args.get(1).map(String::as_str).unwrap_or("/dev/nvme0")),
        "nvme-write-check" => flags(&args[1..]).and_then(|f| cmd_write_check(&f)),
        "sample" => flags(&args[1..]).and_then(|f| cmd_sample(&f)),
        "prom" => match args.get(1) {
            Some(p) => cmd_prom(Path::new(p)),
            None => return usage(),
        },
        _ => return usage(),
    };
    match r {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sparkhost-collect: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_nvme(device: &str) -> Result<Value, String> {
    let dev = nvme::resolve(device, Path::new("/dev"), Path::new("/sys"))?;
    let id = nvme::read_identity(&dev, Path::new("/dev"));
    let smart = nvme::read_smart(&dev, Path::new("/dev"));
    Ok(json!({
        "device": dev,
        "identity": id.as_ref().ok().map(|x| &x.0),
        "identity_error": id.as_ref().err(),
        "smart": smart.as_ref().ok().map(|x| &x.0),
        "smart_error": smart.as_ref().err(),
    }))
}

fn self_io() -> Value {
    match std::fs::read_to_string("/proc/self/io") {
        Ok(t) => {
            let m: serde_json::Map<String, Value> = t
                .lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    Some((k.trim().to_string(), json!(v.trim().parse::<u64>().ok()?)))
                })
                .collect();
            Value::Object(m)
        }
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn cmd_write_check(f: &[(String, String)]) -> Result<Value, String> {
    let ctrl = get(f, "ctrl").unwrap_or("/dev/nvme0");
    let ns = get(f, "ns").unwrap_or("nvme0n1");
    let mib = |k: &str, d: u64| {
        get(f, k)
            .map(|v| v.parse::<u64>().map_err(|e| format!("--{k}: {e}")))
            .unwrap_or(Ok(d))
    };
    let write_mib = mib("write-mib", 64)?;
    let read_mib = mib("read-mib", 0)?;
    let dev_root = Path::new("/dev");
    let dev = nvme::resolve(ctrl, dev_root, Path::new("/sys"))?;
    let ns_path = dev_root.join(ns);
    let identity = nvme::read_identity(&dev, dev_root)?.0;
    let smart_pre = nvme::read_smart(&dev, dev_root)?.0;
    let disk_pre = diskstats::read(Path::new("/proc"))?;
    let io_pre = self_io();
    let written = directio::write(&ns_path, 0, write_mib << 20, 1 << 20, false)
        .map_err(|e| format!("O_DIRECT write to {}: {e}", ns_path.display()))?;
    // Read a different region than the one just written, so that no layer can
    // answer from what the write left behind.
    let read = if read_mib > 0 {
        directio::read(&ns_path, (write_mib + 1) << 20, read_mib << 20, 1 << 20)
            .map_err(|e| format!("O_DIRECT read from {}: {e}", ns_path.display()))?
    } else {
        0
    };
    let smart_post = nvme::read_smart(&dev, dev_root)?.0;
    let disk_post = diskstats::read(Path::new("/proc"))?;
    let io_post = self_io();
    let dd = match (disk_pre.get(ns), disk_post.get(ns)) {
        (Some(a), Some(b)) => Some(diskstats::delta(a, b)),
        _ => None,
    };
    Ok(json!({
        "ctrl": ctrl,
        "namespace": ns,
        "bytes_written": written,
        "bytes_read": read,
        "identity": identity,
        "smart_pre": smart_pre,
        "smart_post": smart_post,
        "smart_delta": nvme::smart_delta(&smart_pre, &smart_post),
        "diskstats_pre": disk_pre.get(ns),
        "diskstats_post": disk_post.get(ns),
        "diskstats_delta": dd,
        "proc_self_io_pre": io_pre,
        "proc_self_io_post": io_post,
    }))
}

fn cmd_sample(f: &[(String, String)]) -> Result<Value, String> {
    let run_dir = PathBuf::from(get(f, "run-dir").ok_or("--run-dir is required")?);
    let secs: f64 = get(f, "seconds")
        .unwrap_or("10")
        .parse()
        .map_err(|e| format!("--seconds: {e}"))?;
    let mut cfg = Config::new(&run_dir);
    if let Some(ms) = get(f, "interval-ms") {
        cfg.interval =
            Duration::from_millis(ms.parse().map_err(|e| format!("--interval-ms: {e}"))?);
    }
    if let Some(only) = get(f, "only") {
        let ids = only
            .split(',')
            .map(|n| n.trim().parse::<SourceId>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--only: {e}"))?;
        cfg.collectors = Collectors::only(ids);
    }
    if let Some(v) = get(f, "nvme") {
        cfg.nvme_device = Some(v.into());
    }
    if let Some(v) = get(f, "block-device") {
        cfg.block_devices = v.split(',').map(str::to_string).collect();
    }
    if let Some(v) = get(f, "process-pattern") {
        cfg.process_pattern = Some(v.into());
    }
    if let Some(v) = get(f, "kvbm-url") {
        cfg.kvbm_metrics_url = Some(v.into());
    }
    if let Some(v) = get(f, "frontend-url") {
        cfg.frontend_metrics_url = Some(v.into());
    }
    if let Some(v) = get(f, "worker-url") {
        cfg.worker_metrics_url = Some(v.into());
    }
    let s = Session::start(cfg);
    let a = s.snapshot("before_sample");
    std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
    let b = s.snapshot("after_sample");
    let d = s.phase_deltas("sample", &a, &b);
    let report = s.stop();
    Ok(json!({
        "run_dir": run_dir,
        "sources": report.sources,
        "sampler": report.sampler,
        "gpu": d.gpu,
        "files": d.files,
        "warnings": report.warnings,
    }))
}

fn cmd_prom(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let e = prometheus::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let kinds: std::collections::BTreeMap<String, usize> =
        e.families.iter().fold(Default::default(), |mut m, f| {
            *m.entry(format!("{:?}", f.kind).to_lowercase()).or_insert(0) += 1;
            m
        });
    let kvbm = sparkhost_collectors::kvbm::KvbmView::from_exposition(&e);
    Ok(
        json!({ "families": e.families.len(), "samples": e.len(), "types": kinds, "kvbm": kvbm.metrics }),
    )
}
