//! Engine-config templates rendered per tier mode: the TensorRT-LLM engine
//! arguments with the KVBM connector (the seed's `kvbm_llm_api_config.yaml`)
//! and the Dynamo mocker's engine-args JSON with its host tier.
//!
//! A template is plain text with `{{name}}` values and `{{#section}}` …
//! `{{/section}}` blocks that are kept or dropped by the tier mode:
//! `kvbm` (B1, B2), `host_tier` (B1, B2) and `disk_tier` (B2). Nothing else is
//! conditional, so what differs between modes is visible in the template.
//! Values are restricted to a conservative character set: a value is pasted
//! into YAML or JSON, and a quote or newline there would change its structure.

use std::collections::BTreeMap;

use crate::TierMode;

/// Built-in templates, compiled in so a rendered stack never depends on
/// where the binary was started.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "trtllm-kvbm",
        include_str!("../templates/kvbm_llm_api_config.yaml"),
    ),
    (
        "mocker-engine-args",
        include_str!("../templates/mocker_engine_args.json"),
    ),
];

/// Longest value and most values a template may take.
pub const MAX_VALUE_BYTES: usize = 256;
pub const MAX_VALUES: usize = 64;
/// Largest template accepted from a file.
pub const MAX_TEMPLATE_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("no built-in engine-config template {0:?} (built in: trtllm-kvbm, mocker-engine-args)")]
    UnknownBuiltin(String),
    #[error(
        "template {template}: {{{{{name}}}}} has no value (set it in the profile's [vars] or with --var {name}=...)"
    )]
    Missing { template: String, name: String },
    #[error(
        "template {template}: value {name}={value:?} is not allowed: at most {MAX_VALUE_BYTES} bytes of A-Z a-z 0-9 . _ - / : +"
    )]
    BadValue {
        template: String,
        name: String,
        value: String,
    },
    #[error("template {template}: {what} (line {line})")]
    Syntax {
        template: String,
        what: String,
        line: usize,
    },
    #[error("template {template}: {size} bytes, more than {MAX_TEMPLATE_BYTES}")]
    TooLarge { template: String, size: usize },
    #[error("template {template}: more than {MAX_VALUES} values")]
    TooManyValues { template: String },
    #[error("template {template}: the rendered JSON does not parse: {error}")]
    BadJson { template: String, error: String },
}

/// Which sections a tier mode keeps.
pub fn sections(mode: TierMode) -> BTreeMap<&'static str, bool> {
    BTreeMap::from([
        ("kvbm", mode != TierMode::B0),
        ("host_tier", mode != TierMode::B0),
        ("disk_tier", mode == TierMode::B2),
    ])
}

pub fn builtin(name: &str) -> Result<&'static str, TemplateError> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| TemplateError::UnknownBuiltin(name.to_string()))
}

fn value_ok(v: &str) -> bool {
    v.len() <= MAX_VALUE_BYTES
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:+".contains(&b))
}

/// Renders `text` for `mode` with `values`. `name` is only for messages. A
/// `.json` name also checks that the result parses, so a template edit that
/// leaves a trailing comma in one mode fails at render, not in the engine.
pub fn render(
    name: &str,
    text: &str,
    mode: TierMode,
    values: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLarge {
            template: name.into(),
            size: text.len(),
        });
    }
    if values.len() > MAX_VALUES {
        return Err(TemplateError::TooManyValues {
            template: name.into(),
        });
    }
    let keep = sections(mode);
    let syntax = |what: String, line: usize| TemplateError::Syntax {
        template: name.into(),
        what,
        line,
    };
    let mut out = String::with_capacity(text.len());
    // Open sections, innermost last; a line is kept when all of them are.
    let mut open: Vec<(&str, bool)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let t = line.trim();
        if let Some(s) = t.strip_prefix("{{#").and_then(|r| r.strip_suffix("}}")) {
            let (&key, &k) = keep.get_key_value(s).ok_or_else(|| {
                syntax(
                    format!("unknown section {s:?} (kvbm, host_tier, disk_tier)"),
                    lineno,
                )
            })?;
            if open.iter().any(|(o, _)| *o == s) {
                return Err(syntax(format!("section {s:?} opened twice"), lineno));
            }
            open.push((key, k));
            continue;
        }
        if let Some(s) = t.strip_prefix("{{/").and_then(|r| r.strip_suffix("}}")) {
            match open.pop() {
                Some((o, _)) if o == s => continue,
                Some((o, _)) => {
                    return Err(syntax(format!("{{{{/{s}}}}} closes {o:?}"), lineno));
                }
                None => return Err(syntax(format!("{{{{/{s}}}}} closes nothing"), lineno)),
            }
        }
        if !open.iter().all(|(_, k)| *k) {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| syntax("unclosed {{".into(), lineno))?;
            let key = after[..end].trim();
            if key.starts_with('#') || key.starts_with('/') {
                return Err(syntax(
                    format!("section marker {key:?} must be alone on its line"),
                    lineno,
                ));
            }
            let v = values.get(key).ok_or_else(|| TemplateError::Missing {
                template: name.into(),
                name: key.into(),
            })?;
            if !value_ok(v) {
                return Err(TemplateError::BadValue {
                    template: name.into(),
                    name: key.into(),
                    value: v.chars().take(80).collect(),
                });
            }
            out.push_str(v);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    if let Some((o, _)) = open.pop() {
        return Err(syntax(
            format!("section {o:?} is never closed"),
            text.lines().count(),
        ));
    }
    if name.ends_with(".json")
        && let Err(e) = serde_json::from_str::<serde_json::Value>(&out)
    {
        return Err(TemplateError::BadJson {
            template: name.into(),
            error: e.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trtllm(mode: TierMode) -> String {
        let v = BTreeMap::from([("free_gpu_memory_fraction".to_string(), "0.60".to_string())]);
        render(
            "kvbm_llm_api_config.yaml",
            builtin("trtllm-kvbm").unwrap(),
            mode,
            &v,
        )
        .unwrap()
    }

    fn mocker(mode: TierMode) -> serde_json::Value {
        let v: BTreeMap<String, String> = [
            ("num_host_blocks", "1024"),
            ("kv_bytes_per_token", "4096"),
            ("block_size", "16"),
            ("num_gpu_blocks", "256"),
            ("max_model_len", "8192"),
            ("speedup_ratio", "1.0"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let s = render(
            "engine.json",
            builtin("mocker-engine-args").unwrap(),
            mode,
            &v,
        )
        .unwrap();
        serde_json::from_str(&s).unwrap()
    }

    /// The seed's B0 confound: B0 must keep the memory fraction and partial
    /// reuse of B1/B2 and lose only the connector block.
    #[test]
    fn trtllm_b0_differs_from_b1_b2_only_in_the_connector_block() {
        let b0 = trtllm(TierMode::B0);
        let b1 = trtllm(TierMode::B1);
        let b2 = trtllm(TierMode::B2);
        assert_eq!(
            b1, b2,
            "B1 and B2 differ only in the worker's DYN_KVBM_* env"
        );
        let extra: Vec<&str> = b1
            .lines()
            .filter(|l| !b0.lines().any(|m| m == *l))
            .collect();
        assert_eq!(
            extra,
            [
                "kv_connector_config:",
                "  connector_module: kvbm.trtllm_integration.connector",
                "  connector_scheduler_class: DynamoKVBMConnectorLeader",
                "  connector_worker_class: DynamoKVBMConnectorWorker",
            ]
        );
        assert!(
            b0.lines().all(|l| b1.lines().any(|m| m == l)),
            "B0 has a line B1 lacks"
        );
        for f in [&b0, &b1] {
            assert!(f.contains("  free_gpu_memory_fraction: 0.60\n"), "{f}");
            assert!(f.contains("  enable_partial_reuse: false\n"), "{f}");
            assert!(f.contains("backend: pytorch\n"), "{f}");
        }
    }

    #[test]
    fn mocker_b1_adds_only_the_host_tier() {
        let mut b0 = mocker(TierMode::B0);
        let mut b1 = mocker(TierMode::B1);
        assert_eq!(b1["engine"]["native_host_offload"]["num_host_blocks"], 1024);
        assert!(b0["engine"].get("native_host_offload").is_none());
        let e1 = b1["engine"].as_object_mut().unwrap();
        e1.remove("native_host_offload");
        e1.remove("kv_cache_bytes_per_token");
        assert_eq!(b0["engine"].take(), b1["engine"].take());
    }

    #[test]
    fn values_that_could_change_the_structure_are_refused() {
        for bad in [
            "0.6\nkv_connector_config: {}",
            "\"x\"",
            "a b",
            &"9".repeat(300),
        ] {
            let v = BTreeMap::from([("free_gpu_memory_fraction".to_string(), bad.to_string())]);
            let e =
                render("t.yaml", builtin("trtllm-kvbm").unwrap(), TierMode::B1, &v).unwrap_err();
            assert!(
                matches!(&e, TemplateError::BadValue { name, .. } if name == "free_gpu_memory_fraction"),
                "{e}"
            );
        }
        let e = render("t.yaml", "a: {{b}}\n", TierMode::B0, &BTreeMap::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "template t.yaml: {{b}} has no value (set it in the profile's [vars] or with --var b=...)"
        );
    }

    #[test]
    fn malformed_sections_are_errors_with_line_numbers() {
        let v = BTreeMap::new();
        for (t, want) in [
            ("{{#kvbm}}\nx\n", "never closed"),
            ("{{/kvbm}}\n", "closes nothing"),
            ("{{#gpu}}\n{{/gpu}}\n", "unknown section"),
            (
                "{{#kvbm}}\n{{#disk_tier}}\n{{/kvbm}}\n",
                "closes \"disk_tier\"",
            ),
            ("a {{#kvbm}}\n", "alone on its line"),
            ("a {{b\n", "unclosed"),
        ] {
            let e = render("t", t, TierMode::B2, &v).unwrap_err().to_string();
            assert!(e.contains(want), "{t:?}: {e}");
        }
        let e = render(
            "t.json",
            "{\n{{#disk_tier}}\n\"a\": 1,\n{{/disk_tier}}\n}\n",
            TierMode::B2,
            &v,
        )
        .unwrap_err();
        assert!(matches!(e, TemplateError::BadJson { .. }), "{e}");
        assert!(
            render(
                "t.json",
                "{\n{{#disk_tier}}\n\"a\": 1,\n{{/disk_tier}}\n\"b\": 2}\n",
                TierMode::B1,
                &v
            )
            .is_ok()
        );
    }
}
