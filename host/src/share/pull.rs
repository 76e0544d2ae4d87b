//! Pulling a component: a tag resolved to a manifest digest, the manifest,
//! config and layer fetched with every byte counted against a cap and its
//! descriptor's size and hashed against its digest, and kept in a cache
//! keyed by digest (`<cache>/oci/`), so a digest pulled once is there
//! offline.
//!
//! Only verified bytes enter the cache, and what is read back from it is
//! verified again: a cache file is a file anyone with the user's rights
//! could have changed.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use oci_client::manifest::{OciDescriptor, OciImageManifest};

use super::artifact::{self, WasmConfig};
use super::client::Registry;
use super::push::digest_of;
use super::reference::{OciRef, check_digest};
use super::{RegistryOptions, ShareError};
use crate::limits::{OCI_CONFIG_MAX_BYTES, OCI_LAYER_MAX_BYTES, OCI_MANIFEST_MAX_BYTES};

/// A component fetched (or found in the cache) and verified.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The verified component in the cache.
    pub path: PathBuf,
    pub manifest_digest: String,
    /// `sha256:` + the component's sha256.
    pub layer_digest: String,
    pub manifest: OciImageManifest,
    pub config: WasmConfig,
    /// Nothing was fetched: the digest was pinned and cached.
    pub from_cache: bool,
}

/// `<cache>/oci`, from `--cache-dir` or the default cache directory.
pub fn cache_root(cache_dir: Option<&Path>) -> Result<PathBuf, ShareError> {
    cache_dir
        .map(Path::to_path_buf)
        .or_else(crate::sandbox::cache::default_dir)
        .map(|d| d.join("oci"))
        .ok_or_else(|| {
            ShareError::Other(
                "no cache directory for pulled components: set --cache-dir or $SPARKHOST_CACHE_DIR"
                    .into(),
            )
        })
}

struct Cache {
    root: PathBuf,
}

impl Cache {
    fn manifest(&self, digest: &str) -> PathBuf {
        self.root.join("manifests").join(file_name(digest, "json"))
    }
    fn blob(&self, digest: &str, ext: &str) -> PathBuf {
        self.root.join("blobs").join(file_name(digest, ext))
    }

    /// The bytes at `path` if they hash to `digest`; a stale or changed
    /// file is removed, so the caller fetches it again.
    fn read(&self, path: &Path, digest: &str, cap: u64) -> Option<Vec<u8>> {
        let len = std::fs::metadata(path).ok()?.len();
        if len > cap {
            let _ = std::fs::remove_file(path);
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        if digest_of(&bytes) == digest {
            Some(bytes)
        } else {
            tracing::warn!(path = %path.display(), "cached blob does not match its digest; fetching it again");
            let _ = std::fs::remove_file(path);
            None
        }
    }

    /// Writes verified bytes whole (a temporary file renamed into place),
    /// so a reader never sees half a blob.
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), ShareError> {
        let dir = path.parent().unwrap_or(&self.root);
        let io = |source| ShareError::Cache {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

fn file_name(digest: &str, ext: &str) -> String {
    // Digests are checked before they name a file: `sha256:<64 hex>`.
    format!("{}.{ext}", digest.replace(':', "-"))
}

/// Resolves, fetches and verifies `reference` into the cache.
pub async fn pull(reference: &OciRef, opts: &RegistryOptions) -> Result<Pulled, ShareError> {
    let cache = Cache {
        root: cache_root(opts.cache_dir.as_deref())?,
    };
    // A pinned digest already cached needs no registry at all.
    if let Some(d) = &reference.digest
        && let Some(p) = from_cache(&cache, reference, d)?
    {
        return Ok(p);
    }
    let reg = Registry::new(reference, opts.plain_http)?;
    let digest = match &reference.digest {
        Some(d) => d.clone(),
        None => {
            let d = reg
                .client
                .fetch_manifest_digest(&reference.client_ref(), &reg.auth)
                .await
                .map_err(|e| reg.explain("resolving the tag of", e))?;
            check_digest(&d).map_err(|why| {
                ShareError::Other(format!("{reference}: the registry answered {why}"))
            })?;
            if let Some(p) = from_cache(&cache, reference, &d)? {
                return Ok(p);
            }
            d
        }
    };
    let pinned = reference.pinned(&digest);
    let image = pinned.client_ref();
    let (bytes, _) = reg
        .client
        .pull_manifest_raw(&image, &reg.auth, &[artifact::MANIFEST_MEDIA_TYPE])
        .await
        .map_err(|e| reg.explain("pulling the manifest of", e))?;
    check_size(
        reference,
        "the manifest",
        bytes.len() as u64,
        OCI_MANIFEST_MAX_BYTES,
    )?;
    verify(reference, "the manifest", &digest, &bytes)?;
    let manifest = parse_manifest(reference, &bytes)?;
    let config_bytes = match cache.read(
        &cache.blob(&manifest.config.digest, "json"),
        &manifest.config.digest,
        OCI_CONFIG_MAX_BYTES,
    ) {
        Some(b) => b,
        None => {
            fetch_blob(
                &reg,
                &image,
                &manifest.config,
                "the config",
                OCI_CONFIG_MAX_BYTES,
            )
            .await?
        }
    };
    let config = parse_config(reference, &config_bytes)?;
    let layer = &manifest.layers[0];
    let layer_path = cache.blob(&layer.digest, "wasm");
    if cache
        .read(&layer_path, &layer.digest, OCI_LAYER_MAX_BYTES)
        .is_none()
    {
        let wasm = fetch_blob(&reg, &image, layer, "the component", OCI_LAYER_MAX_BYTES).await?;
        cache.write(&layer_path, &wasm)?;
    }
    cache.write(&cache.blob(&manifest.config.digest, "json"), &config_bytes)?;
    // The manifest last: its presence means everything it names is cached.
    cache.write(&cache.manifest(&digest), &bytes)?;
    Ok(Pulled {
        path: layer_path,
        manifest_digest: digest,
        layer_digest: layer.digest.clone(),
        manifest,
        config,
        from_cache: false,
    })
}

fn from_cache(
    cache: &Cache,
    reference: &OciRef,
    digest: &str,
) -> Result<Option<Pulled>, ShareError> {
    let Some(bytes) = cache.read(&cache.manifest(digest), digest, OCI_MANIFEST_MAX_BYTES) else {
        return Ok(None);
    };
    let manifest = parse_manifest(reference, &bytes)?;
    let c = &manifest.config;
    let Some(config) = cache.read(
        &cache.blob(&c.digest, "json"),
        &c.digest,
        OCI_CONFIG_MAX_BYTES,
    ) else {
        return Ok(None);
    };
    let config = parse_config(reference, &config)?;
    let layer = &manifest.layers[0];
    let path = cache.blob(&layer.digest, "wasm");
    if cache
        .read(&path, &layer.digest, OCI_LAYER_MAX_BYTES)
        .is_none()
    {
        return Ok(None);
    }
    Ok(Some(Pulled {
        path,
        manifest_digest: digest.to_owned(),
        layer_digest: layer.digest.clone(),
        manifest,
        config,
        from_cache: true,
    }))
}

/// An OCI image manifest of the Wasm layout: the Wasm config and one
/// `application/wasm` layer, each descriptor's digest and size in bounds.
fn parse_manifest(reference: &OciRef, bytes: &[u8]) -> Result<OciImageManifest, ShareError> {
    let not = |why: String| ShareError::NotWasm {
        reference: reference.to_string(),
        why,
    };
    let m: OciImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| not(format!("its manifest is not an OCI image manifest ({e})")))?;
    if m.config.media_type != artifact::CONFIG_MEDIA_TYPE {
        return Err(not(format!(
            "its config is {:?}, not {}",
            m.config.media_type,
            artifact::CONFIG_MEDIA_TYPE
        )));
    }
    if m.layers.len() != 1 || m.layers[0].media_type != artifact::LAYER_MEDIA_TYPE {
        let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
        return Err(not(format!(
            "it has layers {types:?}; a Wasm artifact has one {} layer",
            artifact::LAYER_MEDIA_TYPE
        )));
    }
    for (what, d, cap) in [
        ("the config", &m.config, OCI_CONFIG_MAX_BYTES),
        ("the component", &m.layers[0], OCI_LAYER_MAX_BYTES),
    ] {
        check_digest(&d.digest).map_err(|why| not(format!("{what}'s descriptor: {why}")))?;
        if d.size < 0 {
            return Err(not(format!("{what}'s descriptor has size {}", d.size)));
        }
        check_size(reference, what, d.size as u64, cap)?;
    }
    Ok(m)
}

fn parse_config(reference: &OciRef, bytes: &[u8]) -> Result<WasmConfig, ShareError> {
    let not = |why: String| ShareError::NotWasm {
        reference: reference.to_string(),
        why,
    };
    let c: WasmConfig = serde_json::from_slice(bytes)
        .map_err(|e| not(format!("its Wasm config does not parse ({e})")))?;
    if c.architecture != "wasm" || c.os != "wasip2" {
        return Err(not(format!(
            "its config says architecture {:?}, os {:?}; a component is wasm, wasip2",
            c.architecture, c.os
        )));
    }
    Ok(c)
}

fn check_size(reference: &OciRef, what: &str, size: u64, cap: u64) -> Result<(), ShareError> {
    if size > cap {
        return Err(ShareError::TooLarge {
            reference: reference.to_string(),
            what: what.to_owned(),
            size,
            cap,
        });
    }
    Ok(())
}

fn verify(reference: &OciRef, what: &str, expected: &str, bytes: &[u8]) -> Result<(), ShareError> {
    let actual = digest_of(bytes);
    if actual != expected {
        return Err(ShareError::Digest {
            reference: reference.to_string(),
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// One blob, read as a stream: never more than its descriptor's size (which
/// is within `cap`), then hashed against its digest.
async fn fetch_blob(
    reg: &Registry,
    image: &oci_client::Reference,
    desc: &OciDescriptor,
    what: &str,
    cap: u64,
) -> Result<Vec<u8>, ShareError> {
    let reference = &reg.reference;
    let size = desc.size as u64;
    let mut stream = reg
        .client
        .pull_blob_stream(image, desc)
        .await
        .map_err(|e| reg.explain(&format!("pulling {what} of"), e))?;
    if let Some(n) = stream.content_length
        && n > size
    {
        return Err(ShareError::Other(format!(
            "{reference}: the registry offers {n} bytes of {what}, whose descriptor says {size}"
        )));
    }
    let mut out = Vec::with_capacity(size.min(cap) as usize);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                if (out.len() + b.len()) as u64 > size {
                    return Err(ShareError::Other(format!(
                        "{reference}: the registry sent more than the {size} bytes {what}'s descriptor says"
                    )));
                }
                out.extend_from_slice(&b);
            }
            // oci-client's own check fires at the end of the stream; the
            // bytes are all here, so say it with both digests.
            Err(_) if out.len() as u64 == size => break,
            Err(e) => {
                return Err(ShareError::Registry(format!(
                    "pulling {what} of {reference}: the transfer failed after {} of {size} bytes: {e}",
                    out.len()
                )));
            }
        }
    }
    if out.len() as u64 != size {
        return Err(ShareError::Other(format!(
            "{reference}: the registry sent {} bytes of {what}, whose descriptor says {size}",
            out.len()
        )));
    }
    verify(reference, what, &desc.digest, &out)?;
    Ok(out)
}
