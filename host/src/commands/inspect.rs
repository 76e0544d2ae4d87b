//! `sparkhost inspect`: what a workload component is, without running it.

use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use super::Exit;
use crate::cli::InspectArgs;
use crate::sandbox::{Limits, Sandbox, WorkloadInfo};
use crate::tokenize::TokenCounter;

#[derive(Serialize)]
struct Inspection<'a> {
    path: String,
    sha256: &'a str,
    size_bytes: usize,
    wit: String,
    compiled_from_cache: bool,
    /// Where an `oci://` workload came from, and its digests.
    #[serde(skip_serializing_if = "Option::is_none")]
    oci: Option<crate::results::documents::OciSourceDoc>,
    #[serde(flatten)]
    info: &'a WorkloadInfo,
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<Exit> {
    let sandbox = Sandbox::new(args.sandbox.cache_dir.clone(), Limits::from(&args.sandbox))?;
    let registry = args.sandbox.registry();
    crate::share::check_plain_http_used(registry.plain_http, &[Some(args.workload.as_path())])?;
    let source = crate::share::resolve(&args.workload, &registry)
        .with_context(|| format!("workload {}", args.workload.display()))?;
    let loaded = sandbox.load(&source.path)?;
    let inst = sandbox
        .instantiate(
            &loaded,
            Arc::new(TokenCounter::Heuristic),
            0,
            &Default::default(),
        )
        .with_context(|| format!("starting {}", args.workload.display()))?;
    let mut inst = inst;
    let info = inst.describe()?;
    let out = Inspection {
        path: args.workload.display().to_string(),
        sha256: &loaded.digest,
        size_bytes: loaded.size_bytes,
        wit: format!("sparkhost:workload@{}", loaded.wit_version),
        compiled_from_cache: loaded.from_cache,
        oci: source.oci.clone(),
        info: &info,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(Exit::Ok);
    }
    // Everything but the digest is the component's own text: shown
    // escaped, so a workload cannot drive the terminal.
    let safe = |t: &str| crate::terminal::safe(t).into_owned();
    println!("name:        {}", safe(&info.name));
    println!("version:     {}", safe(&info.version));
    println!("description: {}", safe(&info.description));
    println!("wit:         {}", out.wit);
    println!("sha256:      {}", loaded.digest);
    println!("size:        {} bytes", loaded.size_bytes);
    if let Some(o) = &out.oci {
        println!("manifest:    {}", o.manifest_digest);
        println!("pinned:      {}", o.pinned);
    }
    if info.params.is_empty() {
        println!("params:      none");
    } else {
        println!("params:");
        let width = info.params.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &info.params {
            println!(
                "  {:width$}  default {:?}\n  {:width$}  {}",
                safe(&p.name),
                p.default_value,
                "",
                safe(&p.description)
            );
        }
    }
    Ok(Exit::Ok)
}
