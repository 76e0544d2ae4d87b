//! What a component says about itself, for the annotations and config of
//! the artifact it is pushed as: a workload's or a report generator's
//! `describe`, and the interfaces its type imports and exports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ShareError;
use super::artifact::{ComponentFacts, Kind};
use crate::report::{ReportOptions, describe_generator};
use crate::sandbox::{Limits, Sandbox, SandboxError};
use crate::tokenize::TokenCounter;

const WORKLOAD_EXPORT: &str = "sparkhost:workload/planner@";
const GENERATOR_EXPORT: &str = "sparkhost:report/generator@";

/// The facts of the workload or report generator at `path`; anything else
/// is refused with the sandbox's own reason.
pub fn facts(path: &Path, cache_dir: Option<PathBuf>) -> Result<ComponentFacts, ShareError> {
    let sandbox = Sandbox::new(cache_dir.clone(), Limits::default())?;
    let (imports, exports) = sandbox.interfaces(path)?;
    let version_of = |prefix: &str| {
        exports
            .iter()
            .find_map(|n| n.strip_prefix(prefix))
            .map(str::to_owned)
    };
    if let Some(wit_version) = version_of(GENERATOR_EXPORT) {
        let opts = ReportOptions {
            cache_dir,
            ..Default::default()
        };
        let (_, _, info) = describe_generator(Some(path), &opts)
            .map_err(|e| ShareError::Other(format!("{e:#}")))?;
        return Ok(ComponentFacts {
            kind: Kind::ReportGenerator,
            name: info.name,
            version: info.version,
            description: info.description,
            wit_version,
            imports,
            exports,
        });
    }
    // Not a generator: it must be a workload, and the sandbox says why not.
    let loaded = sandbox.load(path)?;
    let mut inst = sandbox.instantiate(
        &loaded,
        Arc::new(TokenCounter::Heuristic),
        0,
        &Default::default(),
    )?;
    let info = inst.describe()?;
    let wit_version = version_of(WORKLOAD_EXPORT).ok_or_else(|| SandboxError::NotAWorkload {
        path: path.to_owned(),
        exports: exports.join(", "),
    })?;
    Ok(ComponentFacts {
        kind: Kind::Workload,
        name: info.name,
        version: info.version,
        description: info.description,
        wit_version,
        imports,
        exports,
    })
}
