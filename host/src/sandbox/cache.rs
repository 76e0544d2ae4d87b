//! Compiled components on disk.
//!
//! Cranelift needs 10–20 s for a 12–18 MB JavaScript or Python component;
//! loading the precompiled form takes milliseconds. Entries are keyed by the
//! sha256 of the `.wasm` and a hash of everything about the engine that
//! affects compiled code, so a different wasmtime or config never loads a
//! stale entry. Only files this cache wrote are ever deserialized.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

/// `$SPARKHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/sparkhost`, else `~/.cache/sparkhost`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SPARKHOST_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("sparkhost"))
}

impl ComponentCache {
    /// `dir = None` uses [`default_dir`]; an unusable directory disables caching.
    pub fn new(dir: Option<PathBuf>, engine: &Engine) -> Self {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("wasmtime{}-{:016x}", wasmtime_version(), h.finish());
        ComponentCache {
            dir: dir.or_else(default_dir).map(|d| d.join("components")),
            engine_key,
        }
    }

    fn entry(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_key)))
    }

    /// Whether a compiled form of `digest` is cached for this engine.
    pub fn contains(&self, digest: &str) -> bool {
        self.entry(digest).is_some_and(|p| p.is_file())
    }

    /// Returns the component and whether it came from the cache.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(Component, bool), String> {
        let entry = self.entry(digest);
        if let Some(path) = &entry
            && path.is_file()
        {
            match load(engine, path) {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!("ignoring unusable cache entry {}: {e}", path.display())
                }
            }
        }
        let compiled = engine
            .precompile_component(wasm)
            .map_err(|e| format!("{e:#}"))?;
        if let Some(path) = &entry
            && let Err(e) = store(path, &compiled)
        {
            tracing::warn!("cannot cache compiled component at {}: {e}", path.display());
        }
        let component = deserialize(engine, &compiled)?;
        Ok((component, false))
    }
}

// Part of the key in case two wasmtime versions share a compatibility hash.
fn wasmtime_version() -> &'static str {
    super::WASMTIME_VERSION
}

fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::results::rundir::write_atomic(path, bytes)
}

#[allow(unsafe_code)]
fn load(engine: &Engine, path: &Path) -> Result<Component, String> {
    // SAFETY: the file was written by `store` from `precompile_component` of an
    // engine with the same compatibility hash (it is in the file name), and is
    // replaced only by rename, so it is never partially written. wasmtime still
    // checks the header and refuses incompatible artifacts.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| format!("{e:#}"))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    // SAFETY: `bytes` come straight from `precompile_component` on this engine.
    unsafe { Component::deserialize(engine, bytes) }.map_err(|e| format!("{e:#}"))
}
