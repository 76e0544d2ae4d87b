//! The Wasm OCI artifact (CNCF TAG Runtime guidance, as `oci-wasm` and
//! `wkg` write it): an OCI image manifest whose config is
//! `application/vnd.wasm.config.v0+json` and whose one layer is the
//! component as `application/wasm`; and the annotations sparkhost takes
//! from the component itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";

pub const TITLE: &str = "org.opencontainers.image.title";
pub const VERSION: &str = "org.opencontainers.image.version";
pub const DESCRIPTION: &str = "org.opencontainers.image.description";
pub const SOURCE: &str = "org.opencontainers.image.source";
pub const REVISION: &str = "org.opencontainers.image.revision";
pub const CREATED: &str = "org.opencontainers.image.created";
/// The WIT world the component targets (`sparkhost:workload/workload`);
/// the image-spec has no key for it, so it has sparkhost's reverse-DNS one.
pub const WIT_WORLD: &str = "dev.sparkhost.wit.world";
/// The WIT package version of that world (`0.1.0`).
pub const WIT_VERSION: &str = "dev.sparkhost.wit.version";

/// The config document (camelCase, as the guidance spells it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    pub created: String,
    #[serde(default)]
    pub author: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip2` for a component.
    pub os: String,
    /// The layers' digests, so that the config (and so the manifest) differs
    /// whenever the component does.
    #[serde(default)]
    pub layer_digests: Vec<String>,
    #[serde(default)]
    pub component: Option<ComponentConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentConfig {
    #[serde(default)]
    pub exports: Vec<String>,
    #[serde(default)]
    pub imports: Vec<String>,
    #[serde(default)]
    pub target: Option<String>,
}

/// Which sparkhost world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Workload,
    ReportGenerator,
}

impl Kind {
    /// The WIT world, without its version.
    pub fn world(self) -> &'static str {
        match self {
            Kind::Workload => "sparkhost:workload/workload",
            Kind::ReportGenerator => "sparkhost:report/report-generator",
        }
    }
}

/// What the component says about itself (its `describe`) and what its type
/// says it imports and exports.
#[derive(Debug, Clone)]
pub struct ComponentFacts {
    pub kind: Kind,
    pub name: String,
    pub version: String,
    pub description: String,
    pub wit_version: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl ComponentFacts {
    /// `sparkhost:workload/workload@0.1.0`.
    pub fn target(&self) -> String {
        format!("{}@{}", self.kind.world(), self.wit_version)
    }

    pub fn config(&self, layer_digest: &str, created: &str) -> WasmConfig {
        WasmConfig {
            created: created.to_owned(),
            author: None,
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![layer_digest.to_owned()],
            component: Some(ComponentConfig {
                exports: self.exports.clone(),
                imports: self.imports.clone(),
                target: Some(self.target()),
            }),
        }
    }

    /// The manifest's annotations: the component's own name, version,
    /// description and world, then `extra` (source, revision and the user's
    /// `--annotation`s, which win on a clash: the user asked for them).
    pub fn annotations(
        &self,
        created: &str,
        extra: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert(TITLE.to_owned(), self.name.clone());
        a.insert(VERSION.to_owned(), self.version.clone());
        if !self.description.is_empty() {
            a.insert(DESCRIPTION.to_owned(), self.description.clone());
        }
        a.insert(CREATED.to_owned(), created.to_owned());
        a.insert(WIT_WORLD.to_owned(), self.kind.world().to_owned());
        a.insert(WIT_VERSION.to_owned(), self.wit_version.clone());
        for (k, v) in extra {
            a.insert(k.clone(), v.clone());
        }
        a
    }

    /// The layer's title, as wkg names it: `<name>.wasm`.
    pub fn layer_title(&self) -> String {
        let safe: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{safe}.wasm")
    }
}

/// Checks an `--annotation` key: the image-spec asks for reverse-DNS keys;
/// anything printable without spaces is accepted, bounded.
pub fn check_annotation(key: &str, value: &str) -> Result<(), String> {
    const MAX_KEY: usize = 256;
    const MAX_VALUE: usize = 8192;
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "annotation key {key:?} must be 1-{MAX_KEY} printable ASCII characters without spaces"
        ));
    }
    if value.len() > MAX_VALUE || value.chars().any(char::is_control) {
        return Err(format!(
            "annotation {key}'s value must be at most {MAX_VALUE} bytes without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ComponentFacts {
        ComponentFacts {
            kind: Kind::Workload,
            name: "synthetic".into(),
            version: "0.3.0".into(),
            description: "mixed prompts".into(),
            wit_version: "0.1.0".into(),
            imports: vec!["sparkhost:workload/host@0.1.0".into()],
            exports: vec!["sparkhost:workload/planner@0.1.0".into()],
        }
    }

    #[test]
    fn the_config_is_the_wasm_oci_layout() {
        let c = facts().config("sha256:ab", "2026-12-01T00:00:00Z");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["architecture"], "wasm");
        assert_eq!(v["os"], "wasip2");
        assert_eq!(v["layerDigests"][0], "sha256:ab");
        assert_eq!(
            v["component"]["target"],
            "sparkhost:workload/workload@0.1.0"
        );
        assert_eq!(
            v["component"]["exports"][0],
            "sparkhost:workload/planner@0.1.0"
        );
        assert_eq!(serde_json::from_value::<WasmConfig>(v).unwrap(), c);
    }

    #[test]
    fn annotations_come_from_the_component_and_the_user_wins() {
        let extra = BTreeMap::from([
            (SOURCE.to_owned(), "https://example.com/w".to_owned()),
            (VERSION.to_owned(), "override".to_owned()),
        ]);
        let a = facts().annotations("t", &extra);
        assert_eq!(a[TITLE], "synthetic");
        assert_eq!(a[DESCRIPTION], "mixed prompts");
        assert_eq!(a[WIT_WORLD], "sparkhost:workload/workload");
        assert_eq!(a[WIT_VERSION], "0.1.0");
        assert_eq!(a[SOURCE], "https://example.com/w");
        assert_eq!(a[VERSION], "override");
        assert_eq!(facts().layer_title(), "synthetic.wasm");
    }

    #[test]
    fn annotation_keys_and_values_are_bounded() {
        check_annotation("com.example.team", "kv").unwrap();
        assert!(check_annotation("", "v").is_err());
        assert!(check_annotation("a b", "v").is_err());
        assert!(check_annotation("k", "line\nbreak").is_err());
        assert!(check_annotation("k", &"x".repeat(9000)).is_err());
    }
}
