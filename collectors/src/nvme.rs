//! NVMe identity and SMART / health log, read with the admin passthrough ioctl
//! (`NVME_IOCTL_ADMIN_CMD`): Identify Controller (opcode 0x06, CNS 1) and Get Log
//! Page 0x02. No nvme-cli: its JSON differs between versions (128-bit counters as
//! strings, Kelvin vs °C), and it is one more thing to install in containers.
//!
//! Byte offsets follow the NVMe base specification (Identify Controller data
//! structure; SMART / Health Information log). Data units are thousands of
//! 512-byte units, rounded up by the controller, so a byte delta computed from
//! them is exact to ±512,000 bytes.
//!
//! The ioctl needs CAP_SYS_ADMIN; without it the reading is unavailable with a
//! reason, and the run goes on.
#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{Reading, utc_now, write_json};
use crate::session::Config;
use crate::source::{At, Fill, Finish, Opened, Probe, Source, SourceId};

pub const DATA_UNIT_BYTES: u128 = 512_000;

/// `struct nvme_passthru_cmd` from `<linux/nvme_ioctl.h>` (72 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct PassthruCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

const _: () = assert!(std::mem::size_of::<PassthruCmd>() == 72);

/// `_IOWR('N', 0x41, struct nvme_passthru_cmd)`.
const NVME_IOCTL_ADMIN_CMD: u32 = 0xC048_4E41;

const OPC_GET_LOG_PAGE: u8 = 0x02;
const OPC_IDENTIFY: u8 = 0x06;
const LID_SMART: u32 = 0x02;
const CNS_CONTROLLER: u32 = 0x01;
const NSID_ALL: u32 = 0xFFFF_FFFF;

/// Issues one admin command that reads `buf.len()` bytes into `buf`.
fn admin_read(file: &File, mut cmd: PassthruCmd, buf: &mut [u8]) -> Result<(), String> {
    cmd.addr = buf.as_mut_ptr() as u64;
    cmd.data_len = u32::try_from(buf.len()).map_err(|_| "buffer too large".to_string())?;
    cmd.timeout_ms = 10_000;
    // SAFETY: `cmd` is a correctly laid out `nvme_passthru_cmd` (size checked at
    // compile time); `addr`/`data_len` describe `buf`, which is exclusively
    // borrowed and outlives the call, so the kernel writes only into memory we
    // own; the fd is open for the whole call. The kernel does not keep either
    // pointer after the ioctl returns.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            NVME_IOCTL_ADMIN_CMD as _,
            &mut cmd as *mut PassthruCmd,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "permission denied: the NVMe admin ioctl needs CAP_SYS_ADMIN (run as root)".into()
            }
            Some(libc::ENOTTY) | Some(libc::EINVAL) => {
                format!("not an NVMe device (ioctl: {e})")
            }
            _ => format!("NVMe admin ioctl: {e}"),
        });
    }
    if rc > 0 {
        // Positive values are NVMe status codes (SCT/SC), e.g. 0x4002 invalid field.
        return Err(format!("NVMe admin command failed with status 0x{rc:x}"));
    }
    Ok(())
}

pub fn identify_raw(file: &File) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 4096];
    let cmd = PassthruCmd {
        opcode: OPC_IDENTIFY,
        nsid: 0,
        cdw10: CNS_CONTROLLER,
        ..Default::default()
    };
    admin_read(file, cmd, &mut buf)?;
    Ok(buf)
}

pub fn smart_raw(file: &File) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 512];
    let numd = (buf.len() / 4 - 1) as u32;
    let cmd = PassthruCmd {
        opcode: OPC_GET_LOG_PAGE,
        nsid: NSID_ALL,
        // NUMDL (bits 31:16) | LID (7:0); NUMDU in cdw11 is 0 for 512 bytes.
        cdw10: ((numd & 0xFFFF) << 16) | LID_SMART,
        ..Default::default()
    };
    admin_read(file, cmd, &mut buf)?;
    Ok(buf)
}

// ---------------------------------------------------------------- parsing

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u128(b: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}
fn ascii(b: &[u8]) -> String {
    // Identify strings are space-padded ASCII; some controllers pad with NULs.
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .trim_start()
        .to_string()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub vid: u16,
    pub ssvid: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    pub ieee_oui: String,
    /// Max data transfer size as a power of two of the minimum page size (0 = no limit).
    pub mdts: u8,
    pub cntlid: u16,
    /// NVMe version, "major.minor.tertiary" (empty when the controller reports 0).
    pub version: String,
    pub oacs: u16,
    pub warning_temp_k: u16,
    pub critical_temp_k: u16,
    pub total_capacity_bytes: u128,
    pub unallocated_capacity_bytes: u128,
    pub namespaces: u32,
    pub subnqn: String,
}

pub fn parse_identity(b: &[u8]) -> Result<Identity, String> {
    if b.len() < 1024 {
        return Err(format!("identify data is {} bytes, need 4096", b.len()));
    }
    let ver = le_u32(b, 80);
    Ok(Identity {
        vid: le_u16(b, 0),
        ssvid: le_u16(b, 2),
        serial: ascii(&b[4..24]),
        model: ascii(&b[24..64]),
        firmware: ascii(&b[64..72]),
        ieee_oui: format!("{:02x}{:02x}{:02x}", b[75], b[74], b[73]),
        mdts: b[77],
        cntlid: le_u16(b, 78),
        version: if ver == 0 {
            String::new()
        } else {
            format!("{}.{}.{}", ver >> 16, (ver >> 8) & 0xFF, ver & 0xFF)
        },
        oacs: le_u16(b, 256),
        warning_temp_k: le_u16(b, 266),
        critical_temp_k: le_u16(b, 268),
        total_capacity_bytes: le_u128(b, 280),
        unallocated_capacity_bytes: le_u128(b, 296),
        namespaces: le_u32(b, 516),
        subnqn: ascii(&b[768..1024]),
    })
}

/// SMART / Health Information log (log page 0x02), all fields typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmartLog {
    pub critical_warning: u8,
    pub temperature_k: u16,
    pub temperature_c: i32,
    pub available_spare_pct: u8,
    pub available_spare_threshold_pct: u8,
    pub percentage_used: u8,
    pub endurance_group_critical_warning: u8,
    pub data_units_read: u128,
    pub data_units_written: u128,
    pub host_read_commands: u128,
    pub host_write_commands: u128,
    pub controller_busy_time_min: u128,
    pub power_cycles: u128,
    pub power_on_hours: u128,
    pub unsafe_shutdowns: u128,
    pub media_errors: u128,
    pub num_err_log_entries: u128,
    pub warning_temp_time_min: u32,
    pub critical_comp_time_min: u32,
    /// Sensors 1–8 in Kelvin; unimplemented sensors (0) are left out.
    pub temperature_sensors_k: Vec<u16>,
    pub thermal_mgmt_t1_transitions: u32,
    pub thermal_mgmt_t2_transitions: u32,
    pub thermal_mgmt_t1_time_s: u32,
    pub thermal_mgmt_t2_time_s: u32,
}

impl SmartLog {
    pub fn bytes_read_estimate(&self) -> u128 {
        self.data_units_read * DATA_UNIT_BYTES
    }
    pub fn bytes_written_estimate(&self) -> u128 {
        self.data_units_written * DATA_UNIT_BYTES
    }
}

pub fn kelvin_to_c(k: u16) -> i32 {
    i32::from(k) - 273
}

pub fn parse_smart(b: &[u8]) -> Result<SmartLog, String> {
    if b.len() < 512 {
        return Err(format!("SMART log is {} bytes, need 512", b.len()));
    }
    let t = le_u16(b, 1);
    let c = |i: usize| le_u128(b, 32 + 16 * i);
    Ok(SmartLog {
        critical_warning: b[0],
        temperature_k: t,
        temperature_c: kelvin_to_c(t),
        available_spare_pct: b[3],
        available_spare_threshold_pct: b[4],
        percentage_used: b[5],
        endurance_group_critical_warning: b[6],
        data_units_read: c(0),
        data_units_written: c(1),
        host_read_commands: c(2),
        host_write_commands: c(3),
        controller_busy_time_min: c(4),
        power_cycles: c(5),
        power_on_hours: c(6),
        unsafe_shutdowns: c(7),
        media_errors: c(8),
        num_err_log_entries: c(9),
        warning_temp_time_min: le_u32(b, 192),
        critical_comp_time_min: le_u32(b, 196),
        temperature_sensors_k: (0..8)
            .map(|i| le_u16(b, 200 + 2 * i))
            .filter(|&k| k != 0)
            .collect(),
        thermal_mgmt_t1_transitions: le_u32(b, 216),
        thermal_mgmt_t2_transitions: le_u32(b, 220),
        thermal_mgmt_t1_time_s: le_u32(b, 224),
        thermal_mgmt_t2_time_s: le_u32(b, 228),
    })
}

/// What changed between two SMART logs. Bytes are data units × 512,000.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmartDelta {
    pub data_units_read_delta: u128,
    pub data_units_written_delta: u128,
    pub bytes_read_delta: u128,
    pub bytes_written_delta: u128,
    pub mib_read_delta: f64,
    pub mib_written_delta: f64,
    pub host_read_commands_delta: u128,
    pub host_write_commands_delta: u128,
    pub media_errors_delta: u128,
    pub num_err_log_entries_delta: u128,
    pub unsafe_shutdowns_delta: u128,
    pub power_cycles_delta: u128,
    pub power_on_hours_delta: u128,
    pub controller_busy_time_min_delta: u128,
    pub percentage_used_before: u8,
    pub percentage_used_after: u8,
    pub percentage_used_delta: i32,
    pub available_spare_pct_before: u8,
    pub available_spare_pct_after: u8,
    pub temperature_c_before: i32,
    pub temperature_c_after: i32,
    pub critical_warning_before: u8,
    pub critical_warning_after: u8,
    /// A counter went backwards: a different controller, or one that was reset
    /// (emulated ones restart from zero). Deltas then count from zero.
    pub counter_reset: bool,
}

pub fn smart_delta(before: &SmartLog, after: &SmartLog) -> SmartDelta {
    let mut reset = false;
    let mut d = |b: u128, a: u128| {
        if a >= b {
            a - b
        } else {
            reset = true;
            a
        }
    };
    let dur = d(before.data_units_read, after.data_units_read);
    let duw = d(before.data_units_written, after.data_units_written);
    let out = SmartDelta {
        data_units_read_delta: dur,
        data_units_written_delta: duw,
        bytes_read_delta: dur * DATA_UNIT_BYTES,
        bytes_written_delta: duw * DATA_UNIT_BYTES,
        mib_read_delta: crate::common::round6((dur * DATA_UNIT_BYTES) as f64 / crate::common::MIB),
        mib_written_delta: crate::common::round6(
            (duw * DATA_UNIT_BYTES) as f64 / crate::common::MIB,
        ),
        host_read_commands_delta: d(before.host_read_commands, after.host_read_commands),
        host_write_commands_delta: d(before.host_write_commands, after.host_write_commands),
        media_errors_delta: d(before.media_errors, after.media_errors),
        num_err_log_entries_delta: d(before.num_err_log_entries, after.num_err_log_entries),
        unsafe_shutdowns_delta: d(before.unsafe_shutdowns, after.unsafe_shutdowns),
        power_cycles_delta: d(before.power_cycles, after.power_cycles),
        power_on_hours_delta: d(before.power_on_hours, after.power_on_hours),
        controller_busy_time_min_delta: d(
            before.controller_busy_time_min,
            after.controller_busy_time_min,
        ),
        percentage_used_before: before.percentage_used,
        percentage_used_after: after.percentage_used,
        percentage_used_delta: i32::from(after.percentage_used) - i32::from(before.percentage_used),
        available_spare_pct_before: before.available_spare_pct,
        available_spare_pct_after: after.available_spare_pct,
        temperature_c_before: before.temperature_c,
        temperature_c_after: after.temperature_c,
        critical_warning_before: before.critical_warning,
        critical_warning_after: after.critical_warning,
        counter_reset: false,
    };
    SmartDelta {
        counter_reset: reset,
        ..out
    }
}

// ---------------------------------------------------------------- devices

/// An NVMe device as the user named it, resolved to what we open and what
/// `/proc/diskstats` calls its namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NvmeDevice {
    /// What the user gave (`/dev/nvme0`, `/dev/nvme0n1`, `nvme0n1`).
    pub requested: String,
    /// The controller character device (`/dev/nvme0`).
    pub controller: PathBuf,
    /// The namespace block device name (`nvme0n1`), when one was named or exists.
    pub namespace: Option<String>,
}

/// Splits `nvme0n1p2` → ("nvme0", Some("nvme0n1")), `nvme0` → ("nvme0", None).
fn split_name(name: &str) -> Option<(String, Option<String>)> {
    let rest = name.strip_prefix("nvme")?;
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let ctrl = format!("nvme{}", &rest[..digits]);
    let tail = &rest[digits..];
    if tail.is_empty() {
        return Some((ctrl, None));
    }
    let ns_digits = tail
        .strip_prefix('n')?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if ns_digits == 0 {
        return None;
    }
    Some((
        ctrl.clone(),
        Some(format!("{ctrl}n{}", &tail[1..1 + ns_digits])),
    ))
}

pub fn resolve(requested: &str, dev_root: &Path, sys_root: &Path) -> Result<NvmeDevice, String> {
    let name = Path::new(requested)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (ctrl, ns) = split_name(&name).ok_or_else(|| {
        format!("{requested}: not an NVMe device name (want /dev/nvmeN or /dev/nvmeNnM)")
    })?;
    let namespace = ns.or_else(|| first_namespace(&ctrl, sys_root));
    Ok(NvmeDevice {
        requested: requested.to_string(),
        controller: dev_root.join(&ctrl),
        namespace,
    })
}

fn first_namespace(ctrl: &str, sys_root: &Path) -> Option<String> {
    let dir = sys_root.join("class/nvme").join(ctrl);
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{ctrl}n")) && !n.contains('p'))
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Opens the controller, falling back to the namespace block device (the admin
/// ioctl works on both; containers often get only the block device).
pub fn open(dev: &NvmeDevice, dev_root: &Path) -> Result<(File, PathBuf), String> {
    let mut tried = Vec::new();
    let mut candidates = vec![dev.controller.clone()];
    if let Some(ns) = &dev.namespace {
        candidates.push(dev_root.join(ns));
    }
    for p in candidates {
        match OpenOptions::new().read(true).open(&p) {
            Ok(f) => return Ok((f, p)),
            Err(e) => tried.push(crate::common::describe_io_error(&p, &e)),
        }
    }
    Err(tried.join("; "))
}

/// Identity, and the path that answered.
pub fn read_identity(dev: &NvmeDevice, dev_root: &Path) -> Result<(Identity, PathBuf), String> {
    let (f, p) = open(dev, dev_root)?;
    Ok((parse_identity(&identify_raw(&f)?)?, p))
}

/// SMART / health log, and the path that answered.
pub fn read_smart(dev: &NvmeDevice, dev_root: &Path) -> Result<(SmartLog, PathBuf), String> {
    let (f, p) = open(dev, dev_root)?;
    Ok((parse_smart(&smart_raw(&f)?)?, p))
}

// ---------------------------------------------------------------- source

const IDENTIFY: &str = "NVME_IOCTL_ADMIN_CMD Identify Controller (CNS 1)";
const SMART: &str = "NVME_IOCTL_ADMIN_CMD Get Log Page 0x02 (SMART / Health)";

/// `nvme_identity.json` / `nvme_smart_{pre,post}.json` envelope.
#[derive(Serialize)]
struct NvmeFile {
    timestamp_utc: String,
    success: bool,
    error: Option<String>,
    device: String,
    device_used: Option<String>,
    controller: String,
    namespace_block_device: Option<String>,
    method: &'static str,
    #[serde(flatten)]
    payload: BTreeMap<&'static str, serde_json::Value>,
}

impl NvmeFile {
    fn new<T: Serialize>(
        dev: &NvmeDevice,
        r: &Result<(T, PathBuf), String>,
        method: &'static str,
        key: &'static str,
    ) -> Self {
        let payload = serde_json::to_value(r.as_ref().ok().map(|x| &x.0)).unwrap_or_default();
        NvmeFile {
            timestamp_utc: utc_now(),
            success: r.is_ok(),
            error: r.as_ref().err().cloned(),
            device: dev.requested.clone(),
            device_used: r.as_ref().ok().map(|(_, p)| p.display().to_string()),
            controller: dev.controller.display().to_string(),
            namespace_block_device: dev.namespace.clone(),
            method,
            payload: BTreeMap::from([(key, payload)]),
        }
    }
}

/// The shape of an NVMe file when there is no device to ask, so readers need one shape.
fn failure(error: Option<&str>, device: Option<&str>) -> serde_json::Value {
    serde_json::json!({"timestamp_utc": utc_now(), "success": false, "error": error, "device": device})
}

struct Nvme {
    /// The device, when it answered SMART at start.
    dev: Option<NvmeDevice>,
    pre: Option<SmartLog>,
    identity: Option<Identity>,
    enabled: bool,
    /// Why there is no reading (for snapshots and `nvme_smart_post.json`).
    reason: String,
}

/// Reads identity and pre-run SMART now, so the files exist even if the run dies.
pub(crate) fn probe(p: &Probe<'_>) -> Opened {
    let cfg = p.cfg;
    let on = p.on(SourceId::Nvme);
    let mut warnings = Vec::new();
    let mut write = |file: &str, v: &dyn Fn(&Path) -> std::io::Result<()>| {
        if let Err(e) = v(&cfg.run_dir.join(file)) {
            warnings.push(format!("{file}: {e}"));
        }
    };
    let mut source = Nvme {
        dev: None,
        pre: None,
        identity: None,
        enabled: on,
        reason: String::new(),
    };
    let result = match (&cfg.nvme_device, on) {
        (_, false) => Ok(()),
        (None, true) => Err("no NVMe device given".to_string()),
        (Some(d), true) => match resolve(d, &cfg.roots.dev, &cfg.roots.sys) {
            Err(e) => {
                let v = failure(Some(&e), Some(d));
                write("nvme_identity.json", &|p| write_json(p, &v));
                write("nvme_smart_pre.json", &|p| write_json(p, &v));
                Err(e)
            }
            Ok(dev) => {
                let id = read_identity(&dev, &cfg.roots.dev);
                let smart = read_smart(&dev, &cfg.roots.dev);
                let id_file = NvmeFile::new(&dev, &id, IDENTIFY, "identity");
                write("nvme_identity.json", &|p| write_json(p, &id_file));
                let pre_file = NvmeFile::new(&dev, &smart, SMART, "smart");
                write("nvme_smart_pre.json", &|p| write_json(p, &pre_file));
                source.identity = id.ok().map(|x| x.0);
                match smart {
                    Ok((s, _)) => {
                        source.pre = Some(s);
                        source.dev = Some(dev);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        },
    };
    source.reason = Opened::reason(on, &result);
    let mut opened = Opened::new(source, on, result);
    opened.warnings = warnings;
    opened
}

impl Source for Nvme {
    fn id(&self) -> SourceId {
        SourceId::Nvme
    }

    fn read(&self, at: &At<'_>) -> Fill {
        let r = match &self.dev {
            Some(d) => Reading::from_result(read_smart(d, &at.cfg.roots.dev).map(|x| x.0)),
            None => Reading::unavailable(self.reason.clone()),
        };
        Box::new(move |s| s.nvme = r)
    }

    /// `nvme_smart_post.json` with the run's delta, and `nvme_smart_delta.json`.
    fn finish(&self, cfg: &Config, out: &mut Finish) {
        out.nvme_identity = self.identity.clone();
        let Some(dev) = &self.dev else {
            // Pre was written when the device was found; post says why there is no data.
            if self.enabled {
                let v = failure(Some(&self.reason), cfg.nvme_device.as_deref());
                let _ = write_json(&cfg.run_dir.join("nvme_smart_post.json"), &v);
            }
            return;
        };
        let post = read_smart(dev, &cfg.roots.dev);
        let delta = match (&self.pre, &post) {
            (Some(a), Ok((b, _))) => Some(smart_delta(a, b)),
            _ => None,
        };
        let mut v =
            serde_json::to_value(NvmeFile::new(dev, &post, SMART, "smart")).unwrap_or_default();
        v["delta_from_pre"] = serde_json::to_value(&delta).unwrap_or_default();
        if let Err(e) = write_json(&cfg.run_dir.join("nvme_smart_post.json"), &v) {
            out.warnings.push(format!("nvme_smart_post.json: {e}"));
        }
        if let Some(d) = &delta
            && let Err(e) = write_json(&cfg.run_dir.join("nvme_smart_delta.json"), d)
        {
            out.warnings.push(format!("nvme_smart_delta.json: {e}"));
        }
        out.nvme_run_delta = delta;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
        b[at..at + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn identity_fields_at_spec_offsets() {
        let mut b = vec![0u8; 4096];
        put(&mut b, 0, &0x1b36u16.to_le_bytes());
        put(&mut b, 2, &0x1af4u16.to_le_bytes());
        put(&mut b, 4, b"deadbeef            ");
        put(&mut b, 24, format!("{:<40}", "QEMU NVMe Ctrl").as_bytes());
        put(&mut b, 64, b"7.2.22  ");
        put(&mut b, 73, &[0x00, 0x54, 0x52]);
        b[77] = 7;
        put(&mut b, 80, &0x0001_0400u32.to_le_bytes());
        put(&mut b, 266, &343u16.to_le_bytes());
        put(&mut b, 280, &(4_000_787_030_016u128).to_le_bytes());
        put(&mut b, 516, &256u32.to_le_bytes());
        put(&mut b, 768, b"nqn.2019-08.org.qemu:deadbeef");
        let id = parse_identity(&b).unwrap();
        assert_eq!(id.vid, 0x1b36);
        assert_eq!(id.ssvid, 0x1af4);
        assert_eq!(id.serial, "deadbeef");
        assert_eq!(id.model, "QEMU NVMe Ctrl");
        assert_eq!(id.firmware, "7.2.22");
        assert_eq!(id.ieee_oui, "525400");
        assert_eq!(id.mdts, 7);
        assert_eq!(id.version, "1.4.0");
        assert_eq!(id.warning_temp_k, 343);
        assert_eq!(id.total_capacity_bytes, 4_000_787_030_016);
        assert_eq!(id.namespaces, 256);
        assert_eq!(id.subnqn, "nqn.2019-08.org.qemu:deadbeef");
        assert!(parse_identity(&b[..100]).is_err());
    }

    fn smart_bytes(units_written: u128, write_cmds: u128, pct: u8, media: u128) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0;
        put(&mut b, 1, &323u16.to_le_bytes());
        b[3] = 100;
        b[4] = 10;
        b[5] = pct;
        put(&mut b, 32, &1u128.to_le_bytes());
        put(&mut b, 48, &units_written.to_le_bytes());
        put(&mut b, 64, &3u128.to_le_bytes());
        put(&mut b, 80, &write_cmds.to_le_bytes());
        put(&mut b, 112, &7u128.to_le_bytes());
        put(&mut b, 128, &1234u128.to_le_bytes());
        put(&mut b, 160, &media.to_le_bytes());
        put(&mut b, 192, &5u32.to_le_bytes());
        put(&mut b, 200, &320u16.to_le_bytes());
        put(&mut b, 202, &330u16.to_le_bytes());
        b
    }

    #[test]
    fn smart_fields_at_spec_offsets() {
        let s = parse_smart(&smart_bytes(132, 128, 3, 0)).unwrap();
        assert_eq!(s.temperature_k, 323);
        assert_eq!(s.temperature_c, 50);
        assert_eq!(s.available_spare_pct, 100);
        assert_eq!(s.available_spare_threshold_pct, 10);
        assert_eq!(s.percentage_used, 3);
        assert_eq!(s.data_units_read, 1);
        assert_eq!(s.data_units_written, 132);
        assert_eq!(s.host_read_commands, 3);
        assert_eq!(s.host_write_commands, 128);
        assert_eq!(s.power_cycles, 7);
        assert_eq!(s.power_on_hours, 1234);
        assert_eq!(s.warning_temp_time_min, 5);
        assert_eq!(s.temperature_sensors_k, vec![320, 330]);
        assert_eq!(s.bytes_written_estimate(), 132 * 512_000);
    }

    #[test]
    fn smart_delta_counts_bytes_from_data_units() {
        let a = parse_smart(&smart_bytes(0, 0, 3, 0)).unwrap();
        let b = parse_smart(&smart_bytes(132, 128, 4, 2)).unwrap();
        let d = smart_delta(&a, &b);
        assert_eq!(d.data_units_written_delta, 132);
        assert_eq!(d.bytes_written_delta, 67_584_000);
        assert_eq!(d.host_write_commands_delta, 128);
        assert_eq!(d.media_errors_delta, 2);
        assert_eq!(d.percentage_used_delta, 1);
        assert!(!d.counter_reset);
        let back = smart_delta(&b, &a);
        assert!(back.counter_reset);
    }

    #[test]
    fn resolves_controller_and_namespace_names() {
        let dev = Path::new("/dev");
        let sys = Path::new("/nonexistent-sys");
        let a = resolve("/dev/nvme0", dev, sys).unwrap();
        assert_eq!(a.controller, PathBuf::from("/dev/nvme0"));
        assert_eq!(a.namespace, None);
        let b = resolve("/dev/nvme1n2", dev, sys).unwrap();
        assert_eq!(b.controller, PathBuf::from("/dev/nvme1"));
        assert_eq!(b.namespace.as_deref(), Some("nvme1n2"));
        let c = resolve("nvme0n1p2", dev, sys).unwrap();
        assert_eq!(c.namespace.as_deref(), Some("nvme0n1"));
        assert!(resolve("/dev/sda", dev, sys).is_err());
    }

    #[test]
    fn missing_device_is_a_reason_not_a_panic() {
        let d = resolve("/dev/nvme7", Path::new("/dev"), Path::new("/sys")).unwrap();
        let e = read_smart(&d, Path::new("/dev")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn non_nvme_file_is_rejected_by_the_kernel() {
        // /dev/null accepts open but not the NVMe ioctl: ENOTTY, reported as such.
        let f = File::open("/dev/null").unwrap();
        let e = smart_raw(&f).unwrap_err();
        assert!(e.contains("not an NVMe device"), "{e}");
    }

    mod props {
        //! Property tests (FUZZING.md): log pages of any length and content.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_smart_page_decodes_or_is_refused(b in proptest::collection::vec(any::<u8>(), 0..1100)) {
                match parse_smart(&b) {
                    Ok(before) => {
                        prop_assert!(b.len() >= 512);
                        // Counters that went backwards (a reset or a lie) still
                        // give a delta, not a panic.
                        let mut after_bytes = b.clone();
                        after_bytes.reverse();
                        if let Ok(after) = parse_smart(&after_bytes) {
                            let _ = smart_delta(&before, &after);
                            let _ = smart_delta(&after, &before);
                        }
                    }
                    Err(_) => prop_assert!(b.len() < 512),
                }
                let _ = parse_identity(&b);
            }
        }
    }
}
