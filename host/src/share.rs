//! Sharing components through OCI registries: `sparkhost push` and `pull`,
//! and `oci://` references wherever a component path is taken (`run`,
//! `inspect`, `report --generator`, `run --report-generator`, matrix files).
//!
//! Layout:
//! - [`reference`]: `oci://HOST[:PORT]/REPO[:TAG][@sha256:…]` parsed and
//!   checked; plain HTTP for loopback registries only.
//! - [`auth`]: credentials from the environment or the Docker config file,
//!   never written or logged.
//! - [`artifact`]: the Wasm OCI layout (media types, the config document)
//!   and the annotations a component gives itself.
//! - [`describe`]: a component's own name, version, description, world and
//!   interfaces, read through the sandbox.
//! - [`client`]: `oci-client` set up for one registry, its errors in words.
//! - [`push`]: a component uploaded as an artifact.
//! - [`pull`]: a reference resolved, fetched, verified and cached by digest.
//! - this module: [`resolve`], the one place a component argument (a path
//!   or a reference) becomes a local, verified file and its provenance.

pub mod artifact;
pub mod auth;
pub mod client;
pub mod describe;
pub mod pull;
pub mod push;
pub mod reference;

use std::path::{Path, PathBuf};

pub use reference::{OciRef, ReferenceError, is_oci};

use crate::results::documents::OciSourceDoc;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("{0}")]
    Registry(String),
    #[error(
        "{what} of {reference} is not what its digest says: expected {expected}, got {actual}; refusing it"
    )]
    Digest {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} of {reference} is {size} bytes, more than the {cap} allowed")]
    TooLarge {
        reference: String,
        what: String,
        size: u64,
        cap: u64,
    },
    #[error("{reference} is not a Wasm component artifact: {why}")]
    NotWasm { reference: String, why: String },
    #[error("cannot write the component cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("{0}")]
    Other(String),
}

/// How components are fetched from registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Speak plain HTTP (loopback registries only).
    pub plain_http: bool,
    /// The cache root (`--cache-dir`); `None`: the default cache directory.
    pub cache_dir: Option<PathBuf>,
}

/// A component argument resolved to a local file.
#[derive(Debug, Clone)]
pub struct ComponentSource {
    /// The file to load: the argument itself, or the verified cached layer.
    pub path: PathBuf,
    /// The argument as given, for documents and messages.
    pub given: String,
    /// Where it came from, when it was a registry reference.
    pub oci: Option<OciSourceDoc>,
}

impl ComponentSource {
    /// A plain file path, as given.
    pub fn local(path: &Path) -> Self {
        ComponentSource {
            path: path.to_owned(),
            given: path.display().to_string(),
            oci: None,
        }
    }

    /// Refuses to go on unless the component's sha256 is `pinned` (64 hex
    /// digits, optionally `sha256:`-prefixed), naming both digests.
    pub fn check_pin(&self, actual_sha256: &str, pinned: &str) -> Result<(), ShareError> {
        let want = pinned.strip_prefix("sha256:").unwrap_or(pinned);
        if want != actual_sha256 {
            return Err(ShareError::Other(format!(
                "{} has sha256 {actual_sha256}, but it is pinned to sha256 {want}; refusing to run a different component",
                self.given
            )));
        }
        Ok(())
    }
}

/// A component argument (a path or an `oci://` reference) as a local file:
/// a reference is resolved to a digest, pulled (or found in the cache) and
/// verified; a path is left as it is.
pub fn resolve(given: &Path, opts: &RegistryOptions) -> Result<ComponentSource, ShareError> {
    let Some(text) = given.to_str().filter(|t| is_oci(t)) else {
        return Ok(ComponentSource::local(given));
    };
    let reference = OciRef::parse(text)?;
    let pulled = block_on(pull::pull(&reference, opts))??;
    let pinned = reference.pinned(&pulled.manifest_digest);
    Ok(ComponentSource {
        path: pulled.path,
        given: text.to_owned(),
        oci: Some(OciSourceDoc {
            reference: text.to_owned(),
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            tag: reference.tag.clone(),
            manifest_digest: pulled.manifest_digest,
            layer_digest: pulled.layer_digest,
            pinned: pinned.to_string(),
        }),
    })
}

/// Refuses `--plain-http` when no component argument is a registry
/// reference: a flag the user gave is never silently ignored.
pub fn check_plain_http_used(plain_http: bool, args: &[Option<&Path>]) -> Result<(), ShareError> {
    let any = args
        .iter()
        .flatten()
        .any(|p| p.to_str().is_some_and(is_oci));
    if plain_http && !any {
        return Err(ShareError::Other(
            "--plain-http applies to oci:// components only, and none was given".into(),
        ));
    }
    Ok(())
}

/// Runs registry I/O to completion from synchronous code, inside or
/// outside a tokio runtime: on a thread of its own with its own runtime,
/// so neither a current-thread runtime nor a worker is blocked by it.
pub fn block_on<F>(f: F) -> Result<F::Output, ShareError>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(f))
                .map_err(|e| {
                    ShareError::Other(format!("cannot start the registry client's runtime: {e}"))
                })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(ShareError::Other(
                "the registry client thread panicked".into(),
            ))
        })
    })
}
