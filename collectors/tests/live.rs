//! Collectors against this machine's real `/proc` and `/sys`: O_DIRECT I/O of a
//! known size must show up in the device's sectors, the process's
//! `write_bytes` and the paging counters; a whole session over fixture-serving
//! metrics endpoints must write every artifact and a sound verdict.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sparkhost_collectors::procio::{self, CgroupTarget, Matcher};
use sparkhost_collectors::verdict::{
    self, KvMode, Policy, ReuseOpportunity, RunErrors, VerdictInput,
};
use sparkhost_collectors::{Config, Session, SourceId, directio, diskstats, gpu, memory};

const MIB: u64 = 1 << 20;

/// A scratch directory on a real block device (not tmpfs/overlay), and that device.
fn scratch() -> (tempfile::TempDir, diskstats::BackingDevice) {
    let sys = Path::new("/sys");
    for base in [
        std::env::temp_dir(),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    ] {
        let Ok(d) = tempfile::tempdir_in(&base) else {
            continue;
        };
        if let Ok(dev) = diskstats::device_for_path(d.path(), sys) {
            return (d, dev);
        }
    }
    panic!("no temp directory on a block device: diskstats cannot be checked here");
}

#[test]
fn direct_write_moves_device_sectors_process_bytes_and_pgpgout() {
    let (dir, dev) = scratch();
    let proc_root = Path::new("/proc");
    let me = Matcher::new(None, &[std::process::id()]).unwrap();
    let d0 = diskstats::read(proc_root).unwrap();
    let p0 = procio::scan(proc_root, &me).unwrap();
    let m0 = memory::read(proc_root).unwrap();
    let t0 = Instant::now();

    let n = directio::write(&dir.path().join("blob"), 0, 32 * MIB, MIB as usize, true).unwrap();
    assert_eq!(n, 32 * MIB);

    let d1 = diskstats::read(proc_root).unwrap();
    let p1 = procio::scan(proc_root, &me).unwrap();
    let m1 = memory::read(proc_root).unwrap();
    let secs = t0.elapsed().as_secs_f64();

    // Other processes share this disk: at least what we wrote, never less.
    let dd = diskstats::delta(&d0[&dev.name], &d1[&dev.name]);
    assert!(
        dd.write_bytes_delta >= 32 * MIB,
        "{} wrote {:?}",
        dev.name,
        dd
    );
    assert!(dd.write_ios_delta >= 1);
    let io = diskstats::iostat(&d0[&dev.name], &d1[&dev.name], secs);
    assert!(io.wmb_s > 0.0 && io.w_s > 0.0, "{io:?}");

    let pd = procio::delta(&p0, &p1, 5);
    assert_eq!(pd.matched_pids_after, vec![std::process::id()]);
    assert!(pd.write_bytes_delta >= 32 * MIB, "{pd:?}");
    assert_eq!(pd.top_writers[0].pid, std::process::id());
    assert!(p1.processes[0].rss_bytes.unwrap() > 0);

    let md = memory::delta(&m0, &m1);
    assert!(m1.mem("MemTotal").unwrap() > 0);
    // pgpgout counts KiB submitted for write, direct I/O included.
    assert!(
        md.vmstat_delta["pgpgout"] >= 32 * 1024,
        "{:?}",
        md.vmstat_delta
    );
}

#[test]
fn direct_read_moves_read_counters() {
    let (dir, dev) = scratch();
    let f = dir.path().join("blob");
    directio::write(&f, 0, 8 * MIB, MIB as usize, true).unwrap();
    let d0 = diskstats::read(Path::new("/proc")).unwrap();
    assert_eq!(
        directio::read(&f, 0, 8 * MIB, MIB as usize).unwrap(),
        8 * MIB
    );
    let d1 = diskstats::read(Path::new("/proc")).unwrap();
    let dd = diskstats::delta(&d0[&dev.name], &d1[&dev.name]);
    assert!(dd.read_bytes_delta >= 8 * MIB, "{dd:?}");
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cmdline_regex_matches_other_processes_and_never_this_one() {
    let child = Kill(Command::new("sleep").arg("61.4321").spawn().unwrap());
    let pid = child.0.id();
    // This test binary's argv does not contain the text; the pattern would
    // match ours only if self-exclusion failed and it did.
    let m = Matcher::new(Some(r"^sleep 61\.4321$"), &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let snap = loop {
        let s = procio::scan(Path::new("/proc"), &m).unwrap();
        if !s.matched_pids.is_empty() || Instant::now() > deadline {
            break s;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(snap.matched_pids, vec![pid]);
    assert_eq!(snap.processes[0].comm, "sleep");
    assert!(
        snap.processes[0].io_error.is_none(),
        "root reads any /proc/<pid>/io"
    );
    let me = Matcher::new(Some("."), &[]).unwrap();
    let all = procio::scan(Path::new("/proc"), &me).unwrap();
    assert!(!all.matched_pids.contains(&std::process::id()));
    drop(child);
}

#[test]
fn cgroup_of_this_process_reads_on_v1_or_v2() {
    let r = procio::read_cgroup(
        &CgroupTarget::Pid(std::process::id()),
        Path::new("/proc"),
        Path::new("/sys/fs/cgroup"),
        Duration::from_secs(5),
    );
    let c = r.unwrap_or_else(|e| panic!("cgroup I/O unreadable here: {e}"));
    assert!(c.version == 1 || c.version == 2);
    assert!(c.source.starts_with("/sys/fs/cgroup"), "{}", c.source);
}

#[test]
fn nvml_reports_unavailable_without_a_driver() {
    let has_driver = Path::new("/proc/driver/nvidia/version").exists();
    match gpu::Gpu::open() {
        Ok(g) => {
            assert!(has_driver, "NVML loaded without a driver?");
            assert!(!g.snapshot().unwrap().devices.is_empty());
        }
        Err(e) => {
            assert!(!has_driver, "driver present but NVML failed: {e}");
            assert!(
                e.contains("NVML unavailable") || e.contains("without the `nvml` feature"),
                "{e}"
            );
        }
    }
}

/// Serves `before` until `flip` is set, then `after`; stops when `stop` is set.
fn serve(
    before: String,
    after: String,
    flip: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (String, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        for s in l.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let body = if flip.load(Ordering::SeqCst) {
                &after
            } else {
                &before
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://{addr}/metrics"), h)
}

fn fixture(p: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(p),
    )
    .unwrap()
}

#[test]
fn session_end_to_end_on_this_machine() {
    let (scratch_dir, dev) = scratch();
    let run = tempfile::tempdir().unwrap();
    let flip = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (kvbm_url, kh) = serve(
        fixture("kvbm/kvbm_metrics_before.prom"),
        fixture("kvbm/kvbm_metrics_after.prom"),
        flip.clone(),
        stop.clone(),
    );
    let front = fixture("dynamo/frontend_metrics.prom");
    let (front_url, fh) = serve(front.clone(), front, flip.clone(), stop.clone());
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/metrics", l.local_addr().unwrap())
    };

    let mut cfg = Config::new(run.path());
    cfg.interval = Duration::from_millis(200);
    cfg.block_devices = vec!["nvme9n9".into()]; // absent: reported, not fatal
    cfg.kv_cache_dir = Some(scratch_dir.path().to_path_buf()); // the KV disk is its device
    cfg.pids = vec![std::process::id()];
    cfg.kvbm_metrics_url = Some(kvbm_url);
    cfg.frontend_metrics_url = Some(front_url);
    cfg.worker_metrics_url = Some(refused);
    cfg.nvme_device = Some("/dev/nvme9".into());
    cfg.metrics_timeout = Duration::from_secs(2);
    cfg.cufile_log_dirs = vec![run.path().join("no-cufile")];
    cfg.top_n = 50; // concurrent builds on this machine may out-write us

    let s = Session::start(cfg);
    assert_eq!(s.kv_disk_device(), Some(dev.disk.as_str()));
    assert!(!s.sources()[&SourceId::Gpu].available || Path::new("/proc/driver/nvidia").exists());
    assert!(!s.sources()[&SourceId::Nvme].available);
    let a = s.snapshot("before_replay_A");
    directio::write(
        &scratch_dir.path().join("kv.bin"),
        0,
        16 * MIB,
        MIB as usize,
        true,
    )
    .unwrap();
    flip.store(true, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(700)); // a few timeline ticks
    let b = s.snapshot("after_replay_A");
    let d = s.phase_deltas("replay_A", &a, &b);
    let report = s.stop();
    stop.store(true, Ordering::SeqCst);
    // Unblock the accept loops so the server threads end.
    for url in [
        report.config.kvbm_metrics_url.clone(),
        report.config.frontend_metrics_url.clone(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = std::net::TcpStream::connect(
            url.trim_start_matches("http://")
                .trim_end_matches("/metrics"),
        );
    }
    kh.join().unwrap();
    fh.join().unwrap();

    assert!(d.write_errors.is_empty(), "{:?}", d.write_errors);
    // KVBM deltas from the fixtures.
    assert!(d.kvbm.available);
    assert_eq!(d.kvbm.kvbm_onboard_blocks_d2d_delta, Some(48.0));
    assert_eq!(d.kvbm.kvbm_onboard_blocks_h2d_delta, Some(64.0));
    assert_eq!(d.kvbm.kvbm_matched_tokens_delta, Some(8192.0));
    assert!(d.kvbm.disk_rehydrate_counter_positive);
    // OS deltas: the KV disk saw our write, and so did our process.
    let bd = d.os_io.block_device_delta.as_ref().expect("KV disk delta");
    assert!(bd.write_bytes_delta >= 16 * MIB, "{bd:?}");
    assert!(d.os_io.worker_process_io_delta.write_bytes_delta >= 16 * MIB);
    assert!(
        d.os_io
            .block_device_errors
            .iter()
            .any(|e| e.contains("nvme9n9"))
    );
    assert!(
        d.os_io
            .host_top_writers
            .iter()
            .any(|t| t.pid == std::process::id())
    );
    assert!(d.frontend.available);
    assert_eq!(d.frontend.requests_delta, Some(0.0));
    assert!(!d.worker.available);
    assert!(!d.nvme.available);

    let pd = run.path().join("phase_deltas");
    for suffix in [
        "kvbm_metrics_start",
        "kvbm_metrics_end",
        "kvbm_metrics_delta",
        "os_io_start",
        "os_io_end",
        "os_io_delta",
        "nvme_delta",
        "gpu_delta",
        "frontend_metrics_delta",
        "worker_metrics_delta",
    ] {
        assert!(
            pd.join(format!("phase_replay_A_{suffix}.json")).exists(),
            "{suffix}"
        );
    }
    assert!(pd.join("raw/phase_replay_A_kvbm_end.prom").exists());
    let tel = run.path().join("telemetry");
    for csv in [
        "os_iostat.csv",
        "os_pid_io.csv",
        "memory.csv",
        "kvbm_metrics.csv",
        "phases.csv",
    ] {
        let rows = std::fs::read_to_string(tel.join(csv))
            .unwrap()
            .lines()
            .count();
        assert!(rows >= 2, "{csv} has {rows} lines");
    }
    let kv_csv = std::fs::read_to_string(tel.join("kvbm_metrics.csv")).unwrap();
    assert!(
        kv_csv
            .lines()
            .next()
            .unwrap()
            .contains("kvbm_onboard_blocks_d2d")
    );
    assert!(kv_csv.lines().any(|l| l.contains(",48,")), "{kv_csv}");
    assert!(tel.join("telemetry_report.json").exists());
    assert!(run.path().join("kvbm_metrics_snapshots.jsonl").exists());
    let snaps = std::fs::read_to_string(run.path().join("kvbm_metrics_snapshots.jsonl")).unwrap();
    assert_eq!(
        snaps
            .lines()
            .map(
                |l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"]
                    .as_str()
                    .unwrap()
                    .to_string()
            )
            .collect::<Vec<_>>(),
        vec!["run_start", "before_replay_A", "after_replay_A", "run_end"]
    );
    let pre: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.path().join("nvme_smart_pre.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pre["success"], false);
    assert!(pre["error"].as_str().unwrap().contains("missing"));
    assert!(run.path().join("nvme_identity.json").exists());
    assert!(run.path().join("nvme_smart_post.json").exists());
    assert!(report.sampler.ticks >= 2, "{:?}", report.sampler);
    assert!(report.phases == vec!["replay_A".to_string()]);

    // The verdict over this phase: disk rehydration from onboard_d2d and the
    // disk hit rate, host onboarding reported apart.
    let ev = [d.evidence()];
    let v = verdict::evaluate(&VerdictInput {
        kv_mode: KvMode::CpuDisk,
        phases: &ev,
        errors: RunErrors {
            total_requests: 10,
            failed_requests: 0,
            by_kind: Default::default(),
            unary_answers_to_stream: 0,
        },
        reuse: Some(ReuseOpportunity::default()),
        host_invalid: false,
        policy: Policy::default(),
    });
    assert!(v.run_valid, "{:?}", v.reason_codes);
    assert!(v.signals.ssd_rehydrate_signal);
    assert!(
        v.signals
            .ssd_rehydrate_sources
            .contains(&"kvbm_onboard_blocks_d2d".to_string())
    );
    assert!(v.signals.host_onboard_signal);
}
