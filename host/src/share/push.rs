//! Pushing a component as a Wasm OCI artifact: the component as the one
//! `application/wasm` layer, the Wasm config, and a manifest whose
//! annotations are the component's own description.

use std::collections::BTreeMap;

use oci_client::client::ImageLayer;
use oci_client::manifest::{OciDescriptor, OciImageManifest};

use super::ShareError;
use super::artifact::{self, ComponentFacts};
use super::client::Registry;
use super::reference::OciRef;

/// What to push, besides the component.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub plain_http: bool,
    /// `org.opencontainers.image.source`.
    pub source: Option<String>,
    /// `org.opencontainers.image.revision`.
    pub revision: Option<String>,
    /// The user's own `--annotation key=value`s.
    pub annotations: Vec<(String, String)>,
}

/// What the registry now holds.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub reference: OciRef,
    pub manifest_digest: String,
    /// `sha256:` + the component's sha256.
    pub layer_digest: String,
    /// `oci://host/repo@sha256:…`.
    pub pinned: OciRef,
    pub annotations: BTreeMap<String, String>,
}

/// An artifact ready to upload, besides the component itself.
pub struct Built {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

/// The manifest and config bytes of `wasm` as an artifact. The manifest is
/// serialized here, once, so that its digest is known without asking the
/// registry.
pub fn build(
    wasm: &[u8],
    facts: &ComponentFacts,
    opts: &PushOptions,
    created: &str,
) -> Result<Built, ShareError> {
    let mut extra = BTreeMap::new();
    if let Some(s) = &opts.source {
        extra.insert(artifact::SOURCE.to_owned(), s.clone());
    }
    if let Some(r) = &opts.revision {
        extra.insert(artifact::REVISION.to_owned(), r.clone());
    }
    for (k, v) in &opts.annotations {
        artifact::check_annotation(k, v).map_err(ShareError::Other)?;
        extra.insert(k.clone(), v.clone());
    }
    let layer_digest = digest_of(wasm);
    let config = serde_json::to_vec(&facts.config(&layer_digest, created))
        .map_err(|e| ShareError::Other(format!("cannot encode the Wasm config: {e}")))?;
    let annotations = facts.annotations(created, &extra);
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(artifact::MANIFEST_MEDIA_TYPE.to_owned()),
        config: OciDescriptor {
            media_type: artifact::CONFIG_MEDIA_TYPE.to_owned(),
            digest: digest_of(&config),
            size: config.len() as i64,
            ..Default::default()
        },
        layers: vec![OciDescriptor {
            media_type: artifact::LAYER_MEDIA_TYPE.to_owned(),
            digest: layer_digest,
            size: wasm.len() as i64,
            annotations: Some(BTreeMap::from([(
                artifact::TITLE.to_owned(),
                facts.layer_title(),
            )])),
            ..Default::default()
        }],
        annotations: Some(annotations.clone()),
        ..Default::default()
    };
    let manifest = serde_json::to_vec(&manifest)
        .map_err(|e| ShareError::Other(format!("cannot encode the manifest: {e}")))?;
    Ok(Built {
        manifest,
        config,
        annotations,
    })
}

/// Uploads `wasm` (whose facts are `facts`) to `reference`.
pub async fn push(
    wasm: Vec<u8>,
    facts: &ComponentFacts,
    reference: &OciRef,
    opts: &PushOptions,
) -> Result<Pushed, ShareError> {
    if reference.digest.is_some() {
        return Err(ShareError::Other(format!(
            "cannot push to {reference}: a push names a tag (oci://HOST/REPO:TAG); the digest is what the push prints"
        )));
    }
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let Built {
        manifest,
        config,
        annotations,
    } = build(&wasm, facts, opts, &created)?;
    let reg = Registry::new(reference, opts.plain_http)?;
    let image = reference.client_ref();
    reg.client
        .auth(&image, &reg.auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| reg.explain("authenticating to push", e))?;
    let layer = ImageLayer::new(wasm, artifact::LAYER_MEDIA_TYPE.to_owned(), None);
    let layer_digest = layer.sha256_digest();
    reg.client
        .push_blob(&image, &layer.data, &layer_digest)
        .await
        .map_err(|e| reg.explain("uploading the component to", e))?;
    reg.client
        .push_blob(&image, &config, &digest_of(&config))
        .await
        .map_err(|e| reg.explain("uploading the config to", e))?;
    let manifest_digest = digest_of(&manifest);
    reg.client
        .push_manifest_raw(
            &image,
            manifest,
            http::HeaderValue::from_static(artifact::MANIFEST_MEDIA_TYPE),
        )
        .await
        .map_err(|e| reg.explain("uploading the manifest to", e))?;
    Ok(Pushed {
        reference: reference.clone(),
        pinned: reference.pinned(&manifest_digest),
        manifest_digest,
        layer_digest,
        annotations,
    })
}

pub(crate) fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::digest::sha256_hex(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::artifact::Kind;

    #[test]
    fn the_manifest_names_one_wasm_layer_and_the_wasm_config() {
        let facts = ComponentFacts {
            kind: Kind::ReportGenerator,
            name: "report-default".into(),
            version: "0.2.0".into(),
            description: String::new(),
            wit_version: "0.1.0".into(),
            imports: vec![],
            exports: vec!["sparkhost:report/generator@0.1.0".into()],
        };
        let wasm = b"\0asm\x0d\0\x01\0".to_vec();
        let opts = PushOptions {
            source: Some("https://example.com/r".into()),
            revision: Some("abc123".into()),
            annotations: vec![("com.example.k".into(), "v".into())],
            ..Default::default()
        };
        let Built {
            manifest,
            config,
            annotations: ann,
        } = build(&wasm, &facts, &opts, "2026-12-01T00:00:00Z").unwrap();
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["mediaType"], artifact::MANIFEST_MEDIA_TYPE);
        assert_eq!(m["config"]["mediaType"], artifact::CONFIG_MEDIA_TYPE);
        assert_eq!(m["config"]["digest"], digest_of(&config));
        assert_eq!(m["config"]["size"], config.len());
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], artifact::LAYER_MEDIA_TYPE);
        assert_eq!(layers[0]["digest"], digest_of(&wasm));
        assert_eq!(
            layers[0]["annotations"][artifact::TITLE],
            "report-default.wasm"
        );
        assert_eq!(m["annotations"][artifact::SOURCE], "https://example.com/r");
        assert_eq!(m["annotations"][artifact::REVISION], "abc123");
        assert_eq!(m["annotations"]["com.example.k"], "v");
        assert_eq!(
            m["annotations"][artifact::WIT_WORLD],
            "sparkhost:report/report-generator"
        );
        assert!(
            !ann.contains_key(artifact::DESCRIPTION),
            "an empty description is left out"
        );
        let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["layerDigests"][0], digest_of(&wasm));
        let bad = PushOptions {
            annotations: vec![("bad key".into(), "v".into())],
            ..Default::default()
        };
        assert!(build(&wasm, &facts, &bad, "t").is_err());
    }
}
