//! The NVMe collector against a real (emulated) NVMe controller: QEMU software
//! emulation boots Debian's cloud kernel with two NVMe controllers and a
//! busybox initramfs holding `sparkhost-collect`. In the guest it reads
//! Identify and SMART through the admin ioctl, writes 64 MiB and reads 32 MiB
//! with O_DIRECT, and reads them again; the host side checks the SMART and
//! diskstats deltas against those amounts, and the critical-warning path on the
//! second controller (`smart_critical_warning=1`).
//!
//! Prerequisites come from `collectors/tests/nvme-qemu/setup.sh`. Without them
//! the test fails under CI (`CI` set) or `SPARKHOST_REQUIRE_NVME_QEMU=1`, and is
//! skipped with a message otherwise. Every process it starts is waited for.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SERIAL: &str = "sparkhostnvme";
const WARN_SERIAL: &str = "sparkhostwarn";
const WRITE_MIB: u64 = 64;
const READ_MIB: u64 = 32;
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn assets_dir() -> PathBuf {
    std::env::var_os("SPARKHOST_NVME_QEMU_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nvme-qemu"))
}

fn which(p: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(p))
        .find(|c| c.is_file())
}

/// What is missing, or the paths we need.
fn prerequisites() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let kernel = assets_dir().join("vmlinuz");
    let mut missing = Vec::new();
    if !kernel.is_file() {
        missing.push(format!("{}", kernel.display()));
    }
    let qemu = which("qemu-system-x86_64");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    for (name, found) in [
        ("qemu-system-x86_64", qemu.is_some()),
        ("busybox", busybox.is_some()),
        ("cpio", which("cpio").is_some()),
        ("ldd", which("ldd").is_some()),
    ] {
        if !found {
            missing.push(name.to_string());
        }
    }
    if missing.is_empty() {
        Ok((kernel, qemu.unwrap(), busybox.unwrap()))
    } else {
        Err(format!(
            "missing {}; run collectors/tests/nvme-qemu/setup.sh",
            missing.join(", ")
        ))
    }
}

/// KVM only where it can run a stock kernel: not PVM (it hangs silently), and
/// only with hardware virtualization flags.
fn accel() -> &'static str {
    let cpu = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpu
        .lines()
        .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")));
    if Path::new("/dev/kvm").exists()
        && !Path::new("/sys/module/kvm_pvm").exists()
        && hw
        && std::env::var_os("SPARKHOST_NVME_QEMU_TCG").is_none()
    {
        "kvm"
    } else {
        "tcg"
    }
}

/// Copies `bin` and every shared library `ldd` lists into the initramfs tree.
fn install_with_libs(root: &Path, bin: &Path, dest: &str) {
    let to = root.join(dest.trim_start_matches('/'));
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    // Debug info would make a debug build's initramfs ~70 MB; the guest needs none.
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&to)
        .arg(bin)
        .status();
    if !stripped.is_ok_and(|s| s.success()) {
        fs::copy(bin, &to).unwrap();
    }
    fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("ldd").arg(bin).output().unwrap();
    for tok in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if tok.starts_with('/') {
            let lib = Path::new(tok);
            let dst = root.join(tok.trim_start_matches('/'));
            if !dst.exists() {
                fs::create_dir_all(dst.parent().unwrap()).unwrap();
                // The file, not the symlink: the initramfs has no libc tree to point into.
                fs::copy(fs::canonicalize(lib).unwrap(), &dst).unwrap();
            }
        }
    }
}

const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Results travel on the second serial port, free of kernel log lines.
stty -F /dev/ttyS1 raw -echo
exec >/dev/ttyS1 2>&1
i=0
while [ ! -e /dev/nvme1n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ctrl=; warn=
for c in /sys/class/nvme/nvme*; do
  s=$(cat $c/serial | tr -d ' ')
  [ "$s" = "@SERIAL@" ] && ctrl=$(basename $c)
  [ "$s" = "@WARN@" ] && warn=$(basename $c)
done
echo "@@CTRL=$ctrl WARN=$warn"
echo "@@BEGIN check"
/bin/sparkhost-collect nvme-write-check --ctrl /dev/$ctrl --ns ${ctrl}n1 --write-mib @WRITE@ --read-mib @READ@
rc=$?
echo "@@END check"
echo "@@BEGIN warn"
/bin/sparkhost-collect nvme /dev/$warn
echo "@@END warn"
echo "@@RC=$rc"
poweroff -f
"#;

fn build_initramfs(dir: &Path, busybox: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        // The list includes "busybox" itself; linking it over the binary makes a loop.
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    install_with_libs(
        &root,
        Path::new(env!("CARGO_BIN_EXE_sparkhost-collect")),
        "/bin/sparkhost-collect",
    );
    let init = INIT
        .replace("@SERIAL@", SERIAL)
        .replace("@WARN@", WARN_SERIAL)
        .replace("@WRITE@", &WRITE_MIB.to_string())
        .replace("@READ@", &READ_MIB.to_string());
    fs::write(root.join("init"), init).unwrap();
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join("initrd.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . -print0 | cpio --null -o -H newc --quiet > '{}'",
            root.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "cpio failed");
    out
}

/// Runs QEMU to completion or kills it at the deadline; always reaps it.
fn boot(dir: &Path, qemu: &Path, kernel: &Path, initrd: &Path) -> (String, String, Duration) {
    let img = dir.join("nvme.img");
    let img2 = dir.join("warn.img");
    fs::File::create(&img).unwrap().set_len(1 << 30).unwrap();
    fs::File::create(&img2).unwrap().set_len(16 << 20).unwrap();
    let console = dir.join("console.log");
    let out = dir.join("out.txt");
    let t0 = Instant::now();
    let mut child = Command::new(qemu)
        .args([
            "-accel",
            accel(),
            "-m",
            "512",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", out.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .arg("-drive")
        .arg(format!("file={},if=none,id=nv0,format=raw", img.display()))
        .arg("-device")
        .arg(format!("nvme,serial={SERIAL},drive=nv0"))
        .arg("-drive")
        .arg(format!("file={},if=none,id=nv1,format=raw", img2.display()))
        .arg("-device")
        .arg(format!(
            "nvme,serial={WARN_SERIAL},drive=nv1,smart_critical_warning=1"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = t0.elapsed();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let console = fs::read_to_string(&console).unwrap_or_default();
    let out = fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.is_some(),
        "QEMU timed out after {BOOT_TIMEOUT:?}\nconsole:\n{console}\nout:\n{out}"
    );
    assert!(
        status.unwrap().success(),
        "QEMU failed: {err}\nconsole:\n{console}"
    );
    (out, console, elapsed)
}

fn section(out: &str, name: &str) -> Value {
    let begin = format!("@@BEGIN {name}");
    let end = format!("@@END {name}");
    let s = out
        .find(&begin)
        .unwrap_or_else(|| panic!("no {begin} in guest output:\n{out}"))
        + begin.len();
    let e = out[s..]
        .find(&end)
        .unwrap_or_else(|| panic!("no {end} in guest output:\n{out}"))
        + s;
    let text = out[s..e].trim();
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"))
}

fn num(v: &Value) -> u128 {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(u128::from)
            .unwrap_or_else(|| n.to_string().parse().unwrap()),
        Value::String(s) => s.parse().unwrap(),
        _ => panic!("not a number: {v}"),
    }
}

#[test]
fn smart_and_diskstats_deltas_match_known_direct_io_on_emulated_nvme() {
    let (kernel, qemu, busybox) = match prerequisites() {
        Ok(p) => p,
        Err(why) => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("SPARKHOST_REQUIRE_NVME_QEMU").is_some();
            assert!(!required, "NVMe QEMU test cannot run: {why}");
            eprintln!("SKIPPED nvme_qemu: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let t_build = Instant::now();
    let initrd = build_initramfs(dir.path(), &busybox);
    let build = t_build.elapsed();
    let (out, console, boot_time) = boot(dir.path(), &qemu, &kernel, &initrd);
    eprintln!(
        "nvme_qemu: accel={} initramfs {:.1}s ({} KiB), boot+check+poweroff {:.1}s",
        accel(),
        build.as_secs_f64(),
        fs::metadata(&initrd).map(|m| m.len() / 1024).unwrap_or(0),
        boot_time.as_secs_f64()
    );
    assert!(
        out.contains("@@RC=0"),
        "guest check failed\nout:\n{out}\nconsole:\n{console}"
    );

    let c = section(&out, "check");
    let id = &c["identity"];
    assert_eq!(id["serial"], SERIAL);
    assert_eq!(id["model"], "QEMU NVMe Ctrl");
    assert_eq!(id["vid"], 0x1b36);
    assert!(!id["firmware"].as_str().unwrap().is_empty());
    assert!(id["version"].as_str().unwrap().starts_with("1."));

    let written = WRITE_MIB << 20;
    let read = READ_MIB << 20;
    assert_eq!(num(&c["bytes_written"]), written as u128);
    assert_eq!(num(&c["bytes_read"]), read as u128);
    let sd = &c["smart_delta"];
    // Data units are thousands of 512-byte units, rounded up by the controller.
    let units = |bytes: u64| (bytes / 512).div_ceil(1000) as u128;
    let w_units = num(&sd["data_units_written_delta"]);
    assert!(
        (units(written) - 1..=units(written) + 1).contains(&w_units),
        "data units written {w_units}, expected about {}",
        units(written)
    );
    let w_bytes = num(&sd["bytes_written_delta"]) as i128;
    assert!(
        (w_bytes - written as i128).abs() <= 512_000,
        "SMART bytes written {w_bytes} vs {written}"
    );
    let r_units = num(&sd["data_units_read_delta"]);
    assert!(
        (units(read) - 1..=units(read) + 1).contains(&r_units),
        "data units read {r_units}"
    );
    // A 1 MiB write becomes 1–4 commands: mdts caps a command at 512 KiB here,
    // and a buffer that is not physically contiguous hits the segment limit.
    let wcmds = num(&sd["host_write_commands_delta"]);
    assert!(
        (WRITE_MIB as u128..=4 * WRITE_MIB as u128).contains(&wcmds),
        "write commands {wcmds}"
    );
    let rcmds = num(&sd["host_read_commands_delta"]);
    assert!(
        (READ_MIB as u128..=4 * READ_MIB as u128 + 4).contains(&rcmds),
        "read commands {rcmds}"
    );
    assert_eq!(num(&sd["media_errors_delta"]), 0);
    assert_eq!(sd["counter_reset"], false);
    assert_eq!(c["smart_post"]["critical_warning"], 0);
    let t = c["smart_post"]["temperature_c"].as_i64().unwrap();
    assert!((0..=100).contains(&t), "temperature {t} °C");

    // Nothing else touches the namespace in the guest: diskstats is exact.
    let dd = &c["diskstats_delta"];
    assert_eq!(
        num(&dd["write_sectors_delta"]),
        (written / 512) as u128,
        "{dd}"
    );
    assert_eq!(num(&dd["write_bytes_delta"]), written as u128);
    let rs = num(&dd["read_sectors_delta"]);
    assert!(
        ((read / 512) as u128..=(read / 512) as u128 + 64).contains(&rs),
        "read sectors {rs}"
    );
    // One request per NVMe write command, plus at most the fsync's flush, which
    // the block layer may count as a write but NVMe counts as no write command.
    let wios = num(&dd["write_ios_delta"]);
    assert!(
        (wcmds..=wcmds + 1).contains(&wios),
        "diskstats writes {wios} vs NVMe write commands {wcmds}"
    );

    // The guest kernel accounts the O_DIRECT write to our process.
    let io_pre = &c["proc_self_io_pre"];
    let io_post = &c["proc_self_io_post"];
    if io_pre.get("write_bytes").is_some() {
        assert!(num(&io_post["write_bytes"]) - num(&io_pre["write_bytes"]) >= written as u128);
    }

    eprintln!(
        "nvme_qemu: SMART data units written {w_units} (read {r_units}), write commands {wcmds} (read {rcmds}); diskstats sectors written {} read {rs}, writes {wios}",
        num(&dd["write_sectors_delta"])
    );

    // The second controller reports the injected critical warning.
    let w = section(&out, "warn");
    assert_eq!(w["identity"]["serial"], WARN_SERIAL);
    assert_eq!(w["smart"]["critical_warning"], 1, "{w}");
}
