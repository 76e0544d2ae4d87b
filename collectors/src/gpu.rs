//! GPUs through NVML (`nvml-wrapper`, feature `nvml`): utilization, memory,
//! power, energy, clocks, temperature and per-process GPU memory.
//!
//! NVML is loaded with dlopen when a collector starts, so the crate builds and
//! runs without a driver; then every reading is "unavailable" with NVML's own
//! reason. Each field is read on its own: GB10 (DGX Spark) reports no dedicated
//! framebuffer memory, and one unsupported query must not hide the others.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::common::{Cell, Reading, mib_cell};
use crate::session::Config;
use crate::source::{
    At, Column, DISABLED, Fill, GpuTimeline, Opened, Probe, Rows, Sampler, Source, SourceId,
    Timeline, cells,
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
    /// "compute" or "graphics".
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub utilization_gpu_pct: Option<u32>,
    pub utilization_memory_pct: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub power_w: Option<f64>,
    /// Energy since the driver loaded (mJ); its delta over a phase is the phase's energy.
    pub energy_mj: Option<u64>,
    pub clock_graphics_mhz: Option<u32>,
    pub clock_sm_mhz: Option<u32>,
    pub clock_memory_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
    pub processes: Vec<GpuProcess>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSnapshot {
    pub driver_version: Option<String>,
    pub devices: Vec<GpuSample>,
}

/// Summary of a phase from the timeline samples that fell inside it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuPhaseStats {
    pub index: u32,
    pub samples: usize,
    pub utilization_gpu_pct_mean: Option<f64>,
    pub utilization_gpu_pct_max: Option<u32>,
    pub memory_used_bytes_max: Option<u64>,
    pub power_w_mean: Option<f64>,
    pub power_w_max: Option<f64>,
    pub temperature_c_max: Option<u32>,
    pub clock_sm_mhz_min: Option<u32>,
    /// Joules, from the energy counter at the phase's start and end snapshots.
    pub energy_j_delta: Option<f64>,
}

pub fn phase_stats(
    samples: &[&GpuSample],
    start: Option<&GpuSample>,
    end: Option<&GpuSample>,
    index: u32,
) -> GpuPhaseStats {
    let mine: Vec<&&GpuSample> = samples.iter().filter(|s| s.index == index).collect();
    let mean = |v: Vec<f64>| {
        (!v.is_empty()).then(|| crate::common::round3(v.iter().sum::<f64>() / v.len() as f64))
    };
    GpuPhaseStats {
        index,
        samples: mine.len(),
        utilization_gpu_pct_mean: mean(
            mine.iter()
                .filter_map(|s| s.utilization_gpu_pct.map(f64::from))
                .collect(),
        ),
        utilization_gpu_pct_max: mine.iter().filter_map(|s| s.utilization_gpu_pct).max(),
        memory_used_bytes_max: mine.iter().filter_map(|s| s.memory_used_bytes).max(),
        power_w_mean: mean(mine.iter().filter_map(|s| s.power_w).collect()),
        power_w_max: mine.iter().filter_map(|s| s.power_w).reduce(f64::max),
        temperature_c_max: mine.iter().filter_map(|s| s.temperature_c).max(),
        clock_sm_mhz_min: mine.iter().filter_map(|s| s.clock_sm_mhz).min(),
        energy_j_delta: match (
            start.and_then(|s| s.energy_mj),
            end.and_then(|s| s.energy_mj),
        ) {
            (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1000.0),
            _ => None,
        },
    }
}

#[cfg(feature = "nvml")]
mod imp {
    use super::*;
    use nvml_wrapper::Nvml;
    use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
    use nvml_wrapper::enums::device::UsedGpuMemory;

    pub struct Gpu {
        nvml: Nvml,
    }

    impl Gpu {
        /// Loads NVML. Tries the versioned soname first: driver installs ship
        /// `libnvidia-ml.so.1`, and the unversioned link exists only with dev packages.
        pub fn open() -> Result<Self, String> {
            let mut errors = Vec::new();
            for lib in ["libnvidia-ml.so.1", "libnvidia-ml.so"] {
                match Nvml::builder().lib_path(std::ffi::OsStr::new(lib)).init() {
                    Ok(nvml) => return Ok(Gpu { nvml }),
                    Err(e) => errors.push(format!("{lib}: {e}")),
                }
            }
            Err(format!("NVML unavailable ({})", errors.join("; ")))
        }

        pub fn snapshot(&self) -> Result<GpuSnapshot, String> {
            let n = self
                .nvml
                .device_count()
                .map_err(|e| format!("NVML device count: {e}"))?;
            let mut devices = Vec::new();
            for i in 0..n {
                let d = match self.nvml.device_by_index(i) {
                    Ok(d) => d,
                    Err(e) => {
                        devices.push(GpuSample {
                            index: i,
                            name: Some(format!("unreadable: {e}")),
                            ..Default::default()
                        });
                        continue;
                    }
                };
                let util = d.utilization_rates().ok();
                let mem = d.memory_info().ok();
                let mut processes = Vec::new();
                for (kind, list) in [
                    ("compute", d.running_compute_processes()),
                    ("graphics", d.running_graphics_processes()),
                ] {
                    for p in list.unwrap_or_default() {
                        processes.push(GpuProcess {
                            pid: p.pid,
                            used_memory_bytes: match p.used_gpu_memory {
                                UsedGpuMemory::Used(b) => Some(b),
                                UsedGpuMemory::Unavailable => None,
                            },
                            kind: kind.to_string(),
                        });
                    }
                }
                devices.push(GpuSample {
                    index: i,
                    name: d.name().ok(),
                    uuid: d.uuid().ok(),
                    utilization_gpu_pct: util.as_ref().map(|u| u.gpu),
                    utilization_memory_pct: util.as_ref().map(|u| u.memory),
                    memory_used_bytes: mem.as_ref().map(|m| m.used),
                    memory_total_bytes: mem.as_ref().map(|m| m.total),
                    power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                    energy_mj: d.total_energy_consumption().ok(),
                    clock_graphics_mhz: d.clock_info(Clock::Graphics).ok(),
                    clock_sm_mhz: d.clock_info(Clock::SM).ok(),
                    clock_memory_mhz: d.clock_info(Clock::Memory).ok(),
                    temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                    processes,
                });
            }
            Ok(GpuSnapshot {
                driver_version: self.nvml.sys_driver_version().ok(),
                devices,
            })
        }
    }
}

#[cfg(not(feature = "nvml"))]
mod imp {
    use super::*;

    pub struct Gpu;

    impl Gpu {
        pub fn open() -> Result<Self, String> {
            Err("built without the `nvml` feature".into())
        }

        pub fn snapshot(&self) -> Result<GpuSnapshot, String> {
            Err("built without the `nvml` feature".into())
        }
    }
}

pub use imp::Gpu;

// ---------------------------------------------------------------- source

/// The `gpu.csv` columns after the timestamp, one row per GPU.
const GPU_COLUMNS: &[Column<GpuSample>] = &[
    ("index", |d| u64::from(d.index).into()),
    ("name", |d| d.name.clone().unwrap_or_default().into()),
    ("util_gpu_pct", |d| d.utilization_gpu_pct.into()),
    ("util_mem_pct", |d| d.utilization_memory_pct.into()),
    ("mem_used_mib", |d| mib_cell(d.memory_used_bytes)),
    ("mem_total_mib", |d| mib_cell(d.memory_total_bytes)),
    ("power_w", |d| d.power_w.into()),
    ("energy_j", |d| {
        Cell::F(d.energy_mj.map(|e| e as f64 / 1000.0))
    }),
    ("clock_graphics_mhz", |d| d.clock_graphics_mhz.into()),
    ("clock_sm_mhz", |d| d.clock_sm_mhz.into()),
    ("clock_mem_mhz", |d| d.clock_memory_mhz.into()),
    ("temp_c", |d| d.temperature_c.into()),
    ("processes", |d| Cell::U(Some(d.processes.len() as u64))),
];

/// The `gpu_processes.csv` columns after the timestamp: (GPU index, process).
const PROCESS_COLUMNS: &[Column<(u32, GpuProcess)>] = &[
    ("index", |(i, _)| u64::from(*i).into()),
    ("pid", |(_, p)| u64::from(p.pid).into()),
    ("kind", |(_, p)| p.kind.as_str().into()),
    ("used_mib", |(_, p)| mib_cell(p.used_memory_bytes)),
];

struct Gpus {
    gpu: Option<Arc<Gpu>>,
    reason: String,
    timeline: GpuTimeline,
}

pub(crate) fn probe(p: &Probe<'_>) -> Opened {
    let on = p.on(SourceId::Gpu);
    let gpu = if on {
        Gpu::open().and_then(|g| g.snapshot().map(|_| g))
    } else {
        Err(DISABLED.to_string())
    };
    let result = gpu.as_ref().map(|_| ()).map_err(Clone::clone);
    let source = Gpus {
        reason: Opened::reason(on, &result),
        gpu: gpu.ok().map(Arc::new),
        timeline: p.gpu_timeline.clone(),
    };
    Opened::new(source, on, if on { result } else { Ok(()) })
}

impl Source for Gpus {
    fn id(&self) -> SourceId {
        SourceId::Gpu
    }

    fn read(&self, _at: &At<'_>) -> Fill {
        let r = match &self.gpu {
            Some(g) => Reading::from_result(g.snapshot()),
            None => Reading::unavailable(self.reason.clone()),
        };
        Box::new(move |s| s.gpu = r)
    }

    fn sampler(&self) -> Option<Box<dyn Sampler>> {
        let gpu = self.gpu.clone()?;
        Some(Box::new(GpuSampler {
            gpu,
            timeline: self.timeline.clone(),
        }))
    }
}

struct GpuSampler {
    gpu: Arc<Gpu>,
    timeline: GpuTimeline,
}

impl Sampler for GpuSampler {
    fn timelines(&self) -> Vec<Timeline> {
        vec![
            Timeline::new("gpu.csv", GPU_COLUMNS),
            Timeline::new("gpu_processes.csv", PROCESS_COLUMNS),
        ]
    }

    fn sample(&mut self, _cfg: &Config, elapsed_s: f64, rows: &mut Rows) -> Result<(), String> {
        let snap = self.gpu.snapshot()?;
        for d in &snap.devices {
            rows.push((0, cells(GPU_COLUMNS, d)));
            for p in &d.processes {
                rows.push((1, cells(PROCESS_COLUMNS, &(d.index, p.clone()))));
            }
        }
        if let Ok(mut t) = self.timeline.lock() {
            t.extend(snap.devices.into_iter().map(|d| (elapsed_s, d)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_stats_from_samples() {
        let s = |u: u32, p: f64, e: u64| GpuSample {
            index: 0,
            utilization_gpu_pct: Some(u),
            power_w: Some(p),
            energy_mj: Some(e),
            ..Default::default()
        };
        let a = s(10, 50.0, 1_000);
        let b = s(90, 150.0, 101_000);
        let st = phase_stats(&[&a, &b], Some(&a), Some(&b), 0);
        assert_eq!(st.samples, 2);
        assert_eq!(st.utilization_gpu_pct_mean, Some(50.0));
        assert_eq!(st.utilization_gpu_pct_max, Some(90));
        assert_eq!(st.power_w_max, Some(150.0));
        assert_eq!(st.energy_j_delta, Some(100.0));
        assert_eq!(phase_stats(&[&a], None, None, 1).samples, 0);
    }
}
