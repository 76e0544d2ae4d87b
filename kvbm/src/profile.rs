//! Engine profiles: the model's KV geometry, the engine's limits, the timing
//! coefficients and the tier sizes and bandwidths, with their sources.
//!
//! Every built-in figure is explained in `kvbm/README.md`; the comments here
//! name the source next to the number so a reader of either finds it.

use serde::{Deserialize, Serialize};

/// Decimal gigabyte, the unit KVBM's `DYN_KVBM_*_CACHE_GB` variables are read
/// in here. KVBM's own unit was not verified; the `*_num_blocks` overrides
/// (mirroring `DYN_KVBM_*_OVERRIDE_NUM_BLOCKS`) are exact.
pub const GB: f64 = 1e9;

/// O_DIRECT needs sector-aligned sizes; 4 KiB covers every common device.
pub const DISK_ALIGN: u64 = 4096;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error("unknown profile {name:?}; built-in profiles: {known}")]
    Unknown { name: String, known: String },
    #[error("profile field `{field}` = {value} is out of range; allowed: {allowed}")]
    OutOfRange {
        field: &'static str,
        value: String,
        allowed: String,
    },
    #[error("profile TOML: {0}")]
    Toml(String),
}

/// Element type of the KV cache, and so its bytes per element.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KvDtype {
    Fp32,
    Fp16,
    Bf16,
    Fp8,
    /// 4-bit values plus one FP8 scale per 16 elements: 4.5 bits.
    Nvfp4,
}

impl KvDtype {
    pub fn bytes(self) -> f64 {
        match self {
            KvDtype::Fp32 => 4.0,
            KvDtype::Fp16 | KvDtype::Bf16 => 2.0,
            KvDtype::Fp8 => 1.0,
            KvDtype::Nvfp4 => 0.5625,
        }
    }
}

/// One simulated model on one simulated machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile name, recorded with every result.
    pub name: String,
    /// Model id served on `/v1/models` and expected in requests.
    pub model: String,
    pub num_layers: u32,
    pub num_kv_heads: u32,
    pub head_dim: u32,
    pub kv_dtype: KvDtype,
    /// Weight bytes in GB, for the unified-memory budget check.
    pub weights_gb: f64,
    /// Tokens per KV block.
    pub block_size: u32,
    pub max_num_seqs: u32,
    pub max_num_batched_tokens: u32,
    /// Longest prompt + completion, in tokens.
    pub max_model_len: u32,
    /// `max_tokens` when a request gives none (still capped by the model length).
    pub default_max_tokens: u32,
    /// Without `ignore_eos`, a response "stops" (`finish_reason: stop`) after
    /// this many tokens, standing in for an EOS; 0 = never.
    pub natural_stop_tokens: u32,

    /// GPU KV pool size; `gpu_num_blocks` overrides it.
    pub gpu_cache_gb: f64,
    pub gpu_num_blocks: Option<u64>,
    /// Host tier, `DYN_KVBM_CPU_CACHE_GB` / `DYN_KVBM_CPU_CACHE_OVERRIDE_NUM_BLOCKS`.
    pub cpu_cache_gb: f64,
    pub cpu_num_blocks: Option<u64>,
    /// Disk tier, `DYN_KVBM_DISK_CACHE_GB` / `DYN_KVBM_DISK_CACHE_OVERRIDE_NUM_BLOCKS`.
    pub disk_cache_gb: f64,
    pub disk_num_blocks: Option<u64>,
    /// Memory shared by weights, the GPU pool and the host tier (DGX Spark:
    /// unified); 0 disables the budget check.
    pub unified_memory_gb: f64,
    /// Documented only: the figure the timing coefficients were derived from.
    pub memory_bandwidth_gbps: f64,

    /// Fixed cost of every engine step (scheduling, launch).
    pub step_overhead_us: f64,
    /// Prefill cost per uncached token (linear layers).
    pub prefill_us_per_token: f64,
    /// Prefill attention cost per (uncached token × context token).
    pub prefill_ns_per_token_ctx: f64,
    /// Decode step base (weights streamed once per step).
    pub decode_base_us: f64,
    pub decode_us_per_seq: f64,
    /// Decode cost per context token of every running sequence (KV read).
    pub decode_ns_per_ctx_token: f64,

    /// GPU → host offload bandwidth, GB/s.
    pub d2h_gbps: f64,
    /// Host → GPU onboard bandwidth, GB/s.
    pub h2d_gbps: f64,
    /// Per-transfer latency of a host transfer, µs.
    pub host_latency_us: f64,
    pub disk_read_gbps: f64,
    pub disk_write_gbps: f64,
    /// Per-transfer latency of a disk transfer, µs.
    pub disk_latency_us: f64,
    /// Bytes written per disk block = modelled block bytes × this, rounded up
    /// to 4 KiB, so tests can write small files. Timing uses the full bytes.
    pub disk_byte_scale: f64,
    /// `DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER`: offload host → disk without
    /// waiting for a block to be seen twice.
    pub disable_disk_offload_filter: bool,
    /// `DYN_KVBM_CACHE_STATS_MAX_REQUESTS`: hit-rate window, in requests.
    pub cache_stats_max_requests: u32,
}

/// Every [`Profile`] field, optional, plus the profile to start from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileToml {
    base: Option<String>,
    name: Option<String>,
    model: Option<String>,
    num_layers: Option<u32>,
    num_kv_heads: Option<u32>,
    head_dim: Option<u32>,
    kv_dtype: Option<KvDtype>,
    weights_gb: Option<f64>,
    block_size: Option<u32>,
    max_num_seqs: Option<u32>,
    max_num_batched_tokens: Option<u32>,
    max_model_len: Option<u32>,
    default_max_tokens: Option<u32>,
    natural_stop_tokens: Option<u32>,
    gpu_cache_gb: Option<f64>,
    gpu_num_blocks: Option<u64>,
    cpu_cache_gb: Option<f64>,
    cpu_num_blocks: Option<u64>,
    disk_cache_gb: Option<f64>,
    disk_num_blocks: Option<u64>,
    unified_memory_gb: Option<f64>,
    memory_bandwidth_gbps: Option<f64>,
    step_overhead_us: Option<f64>,
    prefill_us_per_token: Option<f64>,
    prefill_ns_per_token_ctx: Option<f64>,
    decode_base_us: Option<f64>,
    decode_us_per_seq: Option<f64>,
    decode_ns_per_ctx_token: Option<f64>,
    d2h_gbps: Option<f64>,
    h2d_gbps: Option<f64>,
    host_latency_us: Option<f64>,
    disk_read_gbps: Option<f64>,
    disk_write_gbps: Option<f64>,
    disk_latency_us: Option<f64>,
    disk_byte_scale: Option<f64>,
    disable_disk_offload_filter: Option<bool>,
    cache_stats_max_requests: Option<u32>,
}

pub const BUILTIN: [&str; 3] = ["tiny", "spark-llama31-8b-fp8", "spark-llama33-70b-nvfp4"];

impl Profile {
    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        let p = match name {
            "tiny" => tiny(),
            "spark-llama31-8b-fp8" => spark_llama31_8b_fp8(),
            "spark-llama33-70b-nvfp4" => spark_llama33_70b_nvfp4(),
            _ => {
                return Err(ProfileError::Unknown {
                    name: name.to_owned(),
                    known: BUILTIN.join(", "),
                });
            }
        };
        p.validate()?;
        Ok(p)
    }

    /// A profile from TOML: `base = "<built-in>"` (default `tiny`) and any
    /// fields to override. Unknown fields are errors.
    pub fn from_toml(text: &str) -> Result<Profile, ProfileError> {
        let t: ProfileToml = toml::from_str(text).map_err(|e| ProfileError::Toml(e.to_string()))?;
        let base = t.base.as_deref().unwrap_or("tiny");
        let mut p = Profile::builtin(base)?;
        p.apply(t);
        p.validate()?;
        Ok(p)
    }

    /// This profile with the fields of a TOML fragment overridden (no `base`).
    pub fn with_toml(mut self, text: &str) -> Result<Profile, ProfileError> {
        let t: ProfileToml = toml::from_str(text).map_err(|e| ProfileError::Toml(e.to_string()))?;
        if t.base.is_some() {
            return Err(ProfileError::Toml(
                "`base` only applies to Profile::from_toml".into(),
            ));
        }
        self.apply(t);
        self.validate()?;
        Ok(self)
    }

    /// A built-in name, or a path to a profile TOML (anything ending in
    /// `.toml` or naming an existing file), so one flag takes either.
    pub fn load(spec: &str) -> Result<Profile, ProfileError> {
        let path = std::path::Path::new(spec);
        if spec.ends_with(".toml") || (!BUILTIN.contains(&spec) && path.is_file()) {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ProfileError::Toml(format!("cannot read {spec}: {e}")))?;
            return Profile::from_toml(&text)
                .map_err(|e| ProfileError::Toml(format!("{spec}: {e}")));
        }
        Profile::builtin(spec)
    }

    /// One `key=value` override as a command line gives it: the value as a
    /// TOML value, or as a string when it is not one (`model=my-model`).
    pub fn with_set(self, key: &str, value: &str) -> Result<Profile, ProfileError> {
        self.with_sets(&[(key.to_owned(), value.to_owned())])
    }

    /// Several [`Profile::with_set`] overrides, validated together, so one
    /// may rely on another (`max_model_len` lowered with `gpu_num_blocks`).
    pub fn with_sets(self, sets: &[(String, String)]) -> Result<Profile, ProfileError> {
        let mut fragment = String::new();
        for (key, value) in sets {
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ProfileError::Toml(format!(
                    "{key:?} is not a profile field name"
                )));
            }
            let value = value.trim();
            let raw = format!("{key} = {value}");
            if toml::from_str::<toml::Table>(&raw).is_ok() {
                fragment.push_str(&raw);
            } else {
                let quoted = toml::Value::String(value.to_owned()).to_string();
                fragment.push_str(&format!("{key} = {quoted}"));
            }
            fragment.push('\n');
        }
        self.with_toml(&fragment)
    }

    fn apply(&mut self, t: ProfileToml) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = t.$f { self.$f = v; } )* };
        }
        macro_rules! set_opt {
            ($($f:ident),*) => { $( if t.$f.is_some() { self.$f = t.$f; } )* };
        }
        set!(
            name,
            model,
            num_layers,
            num_kv_heads,
            head_dim,
            kv_dtype,
            weights_gb,
            block_size,
            max_num_seqs,
            max_num_batched_tokens,
            max_model_len,
            default_max_tokens,
            natural_stop_tokens,
            gpu_cache_gb,
            cpu_cache_gb,
            disk_cache_gb,
            unified_memory_gb,
            memory_bandwidth_gbps,
            step_overhead_us,
            prefill_us_per_token,
            prefill_ns_per_token_ctx,
            decode_base_us,
            decode_us_per_seq,
            decode_ns_per_ctx_token,
            d2h_gbps,
            h2d_gbps,
            host_latency_us,
            disk_read_gbps,
            disk_write_gbps,
            disk_latency_us,
            disk_byte_scale,
            disable_disk_offload_filter,
            cache_stats_max_requests
        );
        set_opt!(gpu_num_blocks, cpu_num_blocks, disk_num_blocks);
    }

    /// KV bytes per token: layers × KV heads × head dim × 2 (K and V) × dtype bytes.
    pub fn kv_bytes_per_token(&self) -> u64 {
        (f64::from(self.num_layers)
            * f64::from(self.num_kv_heads)
            * f64::from(self.head_dim)
            * 2.0
            * self.kv_dtype.bytes())
        .ceil() as u64
    }

    /// Modelled bytes of one full block (timing uses these).
    pub fn block_bytes(&self) -> u64 {
        self.kv_bytes_per_token() * u64::from(self.block_size)
    }

    /// Bytes really written per disk block: scaled, rounded up to 4 KiB.
    pub fn disk_slot_bytes(&self) -> u64 {
        let scaled = (self.block_bytes() as f64 * self.disk_byte_scale).ceil() as u64;
        scaled.max(1).div_ceil(DISK_ALIGN) * DISK_ALIGN
    }

    fn blocks(&self, gb: f64, over: Option<u64>) -> u64 {
        over.unwrap_or_else(|| (gb * GB / self.block_bytes() as f64).floor() as u64)
    }

    pub fn gpu_blocks(&self) -> u64 {
        self.blocks(self.gpu_cache_gb, self.gpu_num_blocks)
    }
    pub fn cpu_blocks(&self) -> u64 {
        self.blocks(self.cpu_cache_gb, self.cpu_num_blocks)
    }
    pub fn disk_blocks(&self) -> u64 {
        self.blocks(self.disk_cache_gb, self.disk_num_blocks)
    }

    /// Checks every field against its allowed range, naming the first bad one.
    pub fn validate(&self) -> Result<(), ProfileError> {
        fn int(field: &'static str, v: u64, lo: u64, hi: u64) -> Result<(), ProfileError> {
            if v < lo || v > hi {
                return Err(ProfileError::OutOfRange {
                    field,
                    value: v.to_string(),
                    allowed: format!("{lo} ..= {hi}"),
                });
            }
            Ok(())
        }
        fn real(
            field: &'static str,
            v: f64,
            lo: f64,
            hi: f64,
            open_lo: bool,
        ) -> Result<(), ProfileError> {
            let low_ok = if open_lo { v > lo } else { v >= lo };
            if !v.is_finite() || !low_ok || v > hi {
                let l = if open_lo { "(" } else { "[" };
                return Err(ProfileError::OutOfRange {
                    field,
                    value: v.to_string(),
                    allowed: format!("{l}{lo}, {hi}]"),
                });
            }
            Ok(())
        }
        fn text(field: &'static str, v: &str) -> Result<(), ProfileError> {
            let ok = !v.is_empty() && v.len() <= 200 && v.chars().all(|c| c.is_ascii_graphic());
            if !ok {
                return Err(ProfileError::OutOfRange {
                    field,
                    value: format!("{v:?}"),
                    allowed: "1 to 200 printable ASCII characters, no spaces".into(),
                });
            }
            Ok(())
        }
        text("name", &self.name)?;
        text("model", &self.model)?;
        int("num_layers", self.num_layers.into(), 1, 1024)?;
        int("num_kv_heads", self.num_kv_heads.into(), 1, 1024)?;
        int("head_dim", self.head_dim.into(), 1, 4096)?;
        real("weights_gb", self.weights_gb, 0.0, 4096.0, false)?;
        int("block_size", self.block_size.into(), 1, 1024)?;
        int("max_num_seqs", self.max_num_seqs.into(), 1, 65_536)?;
        int(
            "max_num_batched_tokens",
            self.max_num_batched_tokens.into(),
            1,
            1 << 22,
        )?;
        int("max_model_len", self.max_model_len.into(), 2, 1 << 24)?;
        int(
            "default_max_tokens",
            self.default_max_tokens.into(),
            1,
            self.max_model_len.into(),
        )?;
        int(
            "natural_stop_tokens",
            self.natural_stop_tokens.into(),
            0,
            self.max_model_len.into(),
        )?;
        real("gpu_cache_gb", self.gpu_cache_gb, 0.0, 4096.0, false)?;
        real("cpu_cache_gb", self.cpu_cache_gb, 0.0, 4096.0, false)?;
        real("disk_cache_gb", self.disk_cache_gb, 0.0, 1e6, false)?;
        // A sequence's blocks must fit in the GPU pool at once (admission
        // reserves them), or a maximal request could never run.
        let per_seq = u64::from(self.max_model_len).div_ceil(self.block_size.into());
        int(
            "gpu_num_blocks (or gpu_cache_gb)",
            self.gpu_blocks(),
            per_seq,
            1 << 32,
        )?;
        int(
            "cpu_num_blocks (or cpu_cache_gb)",
            self.cpu_blocks(),
            0,
            1 << 32,
        )?;
        int(
            "disk_num_blocks (or disk_cache_gb)",
            self.disk_blocks(),
            0,
            1 << 32,
        )?;
        real("unified_memory_gb", self.unified_memory_gb, 0.0, 1e6, false)?;
        if self.unified_memory_gb > 0.0 {
            let gpu = self.gpu_blocks() as f64 * self.block_bytes() as f64 / GB;
            let cpu = self.cpu_blocks() as f64 * self.block_bytes() as f64 / GB;
            let used = self.weights_gb + gpu + cpu;
            if used > self.unified_memory_gb {
                return Err(ProfileError::OutOfRange {
                    field: "weights_gb + gpu tier + cpu tier",
                    value: format!("{used:.1} GB"),
                    allowed: format!("at most unified_memory_gb = {} GB", self.unified_memory_gb),
                });
            }
        }
        real(
            "memory_bandwidth_gbps",
            self.memory_bandwidth_gbps,
            0.0,
            1e5,
            true,
        )?;
        real("step_overhead_us", self.step_overhead_us, 0.0, 1e6, false)?;
        real(
            "prefill_us_per_token",
            self.prefill_us_per_token,
            0.0,
            1e6,
            false,
        )?;
        real(
            "prefill_ns_per_token_ctx",
            self.prefill_ns_per_token_ctx,
            0.0,
            1e6,
            false,
        )?;
        real("decode_base_us", self.decode_base_us, 0.0, 1e7, false)?;
        real("decode_us_per_seq", self.decode_us_per_seq, 0.0, 1e6, false)?;
        real(
            "decode_ns_per_ctx_token",
            self.decode_ns_per_ctx_token,
            0.0,
            1e6,
            false,
        )?;
        if self.step_overhead_us + self.decode_base_us <= 0.0 {
            return Err(ProfileError::OutOfRange {
                field: "step_overhead_us + decode_base_us",
                value: "0".into(),
                allowed: "> 0 (a step must take time)".into(),
            });
        }
        real("d2h_gbps", self.d2h_gbps, 0.0, 1e5, true)?;
        real("h2d_gbps", self.h2d_gbps, 0.0, 1e5, true)?;
        real("host_latency_us", self.host_latency_us, 0.0, 1e7, false)?;
        real("disk_read_gbps", self.disk_read_gbps, 0.0, 1e5, true)?;
        real("disk_write_gbps", self.disk_write_gbps, 0.0, 1e5, true)?;
        real("disk_latency_us", self.disk_latency_us, 0.0, 1e7, false)?;
        real("disk_byte_scale", self.disk_byte_scale, 0.0, 1.0, true)?;
        int(
            "disk slot bytes",
            self.disk_slot_bytes(),
            DISK_ALIGN,
            1 << 30,
        )?;
        int(
            "cache_stats_max_requests",
            self.cache_stats_max_requests.into(),
            1,
            1_000_000,
        )?;
        Ok(())
    }
}

/// Small and fast: for tests. Its figures are chosen, not measured.
fn tiny() -> Profile {
    Profile {
        name: "tiny".into(),
        model: "sim-tiny".into(),
        num_layers: 2,
        num_kv_heads: 2,
        head_dim: 32,
        kv_dtype: KvDtype::Fp16,
        weights_gb: 0.0,
        block_size: 16,
        max_num_seqs: 64,
        max_num_batched_tokens: 2048,
        max_model_len: 512,
        default_max_tokens: 16,
        natural_stop_tokens: 0,
        gpu_cache_gb: 0.0,
        gpu_num_blocks: Some(64),
        cpu_cache_gb: 0.0,
        cpu_num_blocks: Some(128),
        disk_cache_gb: 0.0,
        disk_num_blocks: Some(1024),
        unified_memory_gb: 0.0,
        memory_bandwidth_gbps: 273.0,
        step_overhead_us: 20.0,
        prefill_us_per_token: 2.0,
        prefill_ns_per_token_ctx: 0.5,
        decode_base_us: 200.0,
        decode_us_per_seq: 2.0,
        decode_ns_per_ctx_token: 0.1,
        d2h_gbps: 10.0,
        h2d_gbps: 10.0,
        host_latency_us: 5.0,
        disk_read_gbps: 2.0,
        disk_write_gbps: 1.0,
        disk_latency_us: 50.0,
        disk_byte_scale: 1.0,
        disable_disk_offload_filter: false,
        cache_stats_max_requests: 1000,
    }
}

/// DGX Spark (GB10) figures shared by both Spark profiles; see README
/// "Assumed figures" for each source.
fn spark_base() -> Profile {
    Profile {
        unified_memory_gb: 128.0, // 128 GB LPDDR5x, unified (NVIDIA spec; peers-2026 §6)
        memory_bandwidth_gbps: 273.0, // NVIDIA spec; peers-2026 §6
        // A host<->GPU "copy" reads and writes the same LPDDR5x: 273 / 2
        // (peers-2026 §6, inferred).
        d2h_gbps: 136.5,
        h2d_gbps: 136.5,
        host_latency_us: 10.0,
        // PCIe Gen4 x4 link ceiling 7.88 GB/s; good Gen4 client drives read
        // ~7 GB/s; sustained writes lower (peers-2026 §6, an estimate: measure
        // with fio and override).
        disk_read_gbps: 7.0,
        disk_write_gbps: 5.0,
        // aisimulate-core's g3_offload default latency_to_first_byte_ms 0.1
        // (peers-2026 §3.5).
        disk_latency_us: 100.0,
        // Keeps a demo's disk files to a few MB; the factor is recorded.
        disk_byte_scale: 1.0 / 64.0,
        ..tiny()
    }
}

/// Llama 3.1 8B Instruct, FP8 weights and FP8 KV cache, on a DGX Spark.
fn spark_llama31_8b_fp8() -> Profile {
    Profile {
        name: "spark-llama31-8b-fp8".into(),
        model: "meta-llama/Llama-3.1-8B-Instruct".into(),
        // config.json of meta-llama/Llama-3.1-8B: num_hidden_layers 32,
        // num_key_value_heads 8, hidden 4096 / 32 heads = head_dim 128.
        num_layers: 32,
        num_kv_heads: 8,
        head_dim: 128,
        kv_dtype: KvDtype::Fp8,
        weights_gb: 8.5, // 8.03 B params × 1 B (FP8) + BF16 embeddings/head
        block_size: 32,  // TensorRT-LLM's default tokens_per_block
        max_num_seqs: 64,
        max_num_batched_tokens: 8192,
        max_model_len: 131_072, // Llama 3.1's 128k context
        default_max_tokens: 256,
        gpu_cache_gb: 24.0,
        gpu_num_blocks: None,
        cpu_cache_gb: 24.0, // the KVBM guide's write-through rule: CPU >= GPU
        cpu_num_blocks: None,
        disk_cache_gb: 64.0,
        disk_num_blocks: None,
        step_overhead_us: 300.0,
        // 2 × 8.03e9 FLOP/token at 125 TFLOPS (FP8 dense ~250 TFLOPS × 50 %).
        prefill_us_per_token: 128.0,
        // 4 × 32 layers × 32 q-heads × 128 FLOP per token pair at 125 TFLOPS.
        prefill_ns_per_token_ctx: 0.0042,
        // 8.5 GB of weights streamed at 80 % of 273 GB/s.
        decode_base_us: 38_900.0,
        decode_us_per_seq: 50.0,
        // 65,536 KV bytes per context token at 80 % of 273 GB/s.
        decode_ns_per_ctx_token: 0.30,
        ..spark_base()
    }
}

/// Llama 3.3 70B Instruct, NVFP4 weights and FP8 KV cache, on a DGX Spark.
fn spark_llama33_70b_nvfp4() -> Profile {
    Profile {
        name: "spark-llama33-70b-nvfp4".into(),
        model: "meta-llama/Llama-3.3-70B-Instruct".into(),
        // config.json of meta-llama/Llama-3.3-70B-Instruct: 80 layers, 8 KV
        // heads, hidden 8192 / 64 heads = head_dim 128.
        num_layers: 80,
        num_kv_heads: 8,
        head_dim: 128,
        // NVFP4 checkpoints are commonly served with an FP8 KV cache; an
        // assumption, overridable (`kv_dtype`).
        kv_dtype: KvDtype::Fp8,
        weights_gb: 39.7, // 70.6 B params × 4.5 bits
        block_size: 32,
        max_num_seqs: 32,
        max_num_batched_tokens: 8192,
        max_model_len: 131_072,
        default_max_tokens: 256,
        gpu_cache_gb: 24.0,
        gpu_num_blocks: None,
        cpu_cache_gb: 24.0,
        cpu_num_blocks: None,
        disk_cache_gb: 128.0,
        disk_num_blocks: None,
        step_overhead_us: 300.0,
        // 2 × 70.6e9 FLOP/token at 250 TFLOPS (FP4 dense ~500 TFLOPS × 50 %).
        prefill_us_per_token: 565.0,
        // 4 × 80 × 64 × 128 FLOP per token pair at 250 TFLOPS.
        prefill_ns_per_token_ctx: 0.0105,
        // 39.7 GB of weights at 80 % of 273 GB/s.
        decode_base_us: 181_800.0,
        decode_us_per_seq: 100.0,
        // 163,840 KV bytes per context token at 80 % of 273 GB/s.
        decode_ns_per_ctx_token: 0.75,
        ..spark_base()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_sets_take_toml_values_or_strings() {
        let p = Profile::builtin("tiny").unwrap();
        let p = p.with_set("gpu_num_blocks", "32").unwrap();
        assert_eq!(p.gpu_blocks(), 32);
        let p = p.with_set("model", "my-model").unwrap();
        assert_eq!(p.model, "my-model");
        let p = p.with_set("disable_disk_offload_filter", "true").unwrap();
        assert!(p.disable_disk_offload_filter);
        let e = p.clone().with_set("no_such_field", "1").unwrap_err();
        assert!(e.to_string().contains("no_such_field"), "{e}");
        let e = p.clone().with_set("block_size", "0").unwrap_err();
        assert!(e.to_string().contains("block_size"), "{e}");
        assert!(p.clone().with_set("a b", "1").is_err());
        // Validated together: the GPU tier may shrink with the model length.
        let p = Profile::builtin("spark-llama31-8b-fp8").unwrap();
        let sets = [("gpu_num_blocks", "1024"), ("max_model_len", "16384")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(p.with_sets(&sets).unwrap().gpu_blocks(), 1024);
    }

    #[test]
    fn load_takes_a_name_or_a_toml_file() {
        assert_eq!(Profile::load("tiny").unwrap().name, "tiny");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(&f, "base = \"tiny\"\nname = \"t2\"\ngpu_num_blocks = 40\n").unwrap();
        let p = Profile::load(f.to_str().unwrap()).unwrap();
        assert_eq!((p.name.as_str(), p.gpu_blocks()), ("t2", 40));
        let e = Profile::load("nope").unwrap_err();
        assert!(e.to_string().contains("tiny"), "{e}");
        let e = Profile::load("/nonexistent/x.toml").unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn kv_bytes_follow_the_model_geometry() {
        let p = Profile::builtin("spark-llama31-8b-fp8").unwrap();
        assert_eq!(p.kv_bytes_per_token(), 32 * 8 * 128 * 2);
        let p = Profile::builtin("spark-llama33-70b-nvfp4").unwrap();
        assert_eq!(p.kv_bytes_per_token(), 80 * 8 * 128 * 2);
        let p = Profile::builtin("tiny").unwrap();
        assert_eq!(p.kv_bytes_per_token(), 2 * 2 * 32 * 2 * 2);
        assert_eq!(p.disk_slot_bytes(), 8192);
    }

    #[test]
    fn spark_tier_sizes_match_the_readme() {
        let p = Profile::builtin("spark-llama31-8b-fp8").unwrap();
        assert_eq!(
            (p.gpu_blocks(), p.cpu_blocks(), p.disk_blocks()),
            (11_444, 11_444, 30_517)
        );
        assert_eq!(p.disk_slot_bytes(), 32_768);
        let p = Profile::builtin("spark-llama33-70b-nvfp4").unwrap();
        assert_eq!(
            (p.gpu_blocks(), p.cpu_blocks(), p.disk_blocks()),
            (4_577, 4_577, 24_414)
        );
        assert_eq!(p.disk_slot_bytes(), 81_920);
    }

    #[test]
    fn every_builtin_validates() {
        for n in BUILTIN {
            Profile::builtin(n).unwrap();
        }
        assert!(matches!(
            Profile::builtin("nope"),
            Err(ProfileError::Unknown { .. })
        ));
    }

    #[test]
    fn toml_overrides_and_names_the_bad_field() {
        let p =
            Profile::from_toml("base = \"spark-llama31-8b-fp8\"\ndisk_read_gbps = 3.5\n").unwrap();
        assert_eq!(p.disk_read_gbps, 3.5);
        let e = Profile::from_toml("block_size = 0").unwrap_err();
        assert!(e.to_string().contains("`block_size`"), "{e}");
        assert!(e.to_string().contains("1 ..= 1024"), "{e}");
        let e = Profile::from_toml("disk_byte_scale = 2.0").unwrap_err();
        assert!(e.to_string().contains("disk_byte_scale"), "{e}");
        let e = Profile::from_toml("bogus = 1").unwrap_err();
        assert!(matches!(e, ProfileError::Toml(_)), "{e}");
        let e = Profile::from_toml("h2d_gbps = nan").unwrap_err();
        assert!(e.to_string().contains("h2d_gbps"), "{e}");
        let e = Profile::from_toml("gpu_num_blocks = 2").unwrap_err();
        assert!(e.to_string().contains("gpu_num_blocks"), "{e}");
    }

    #[test]
    fn unified_memory_budget_is_enforced() {
        let e = Profile::from_toml("base = \"spark-llama33-70b-nvfp4\"\ncpu_cache_gb = 80.0")
            .unwrap_err();
        assert!(e.to_string().contains("unified_memory_gb"), "{e}");
    }
}
