//! `sparkhost push`: a workload or report generator, described by itself,
//! uploaded as a Wasm OCI artifact; prints the digest to pin it by.

use anyhow::Context;

use super::Exit;
use crate::cli::PushArgs;
use crate::share::push::{PushOptions, push as push_component};
use crate::share::{OciRef, block_on, describe};

pub fn push(args: PushArgs) -> anyhow::Result<Exit> {
    let reference = OciRef::parse(&args.reference)?;
    crate::share::reference::check_plain_http(&reference, args.plain_http)?;
    let facts = describe::facts(&args.file, args.cache_dir.clone())
        .with_context(|| format!("describing {}", args.file.display()))?;
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let opts = PushOptions {
        plain_http: args.plain_http,
        source: args.source.clone(),
        revision: args.revision.clone(),
        annotations: args.annotations.clone(),
    };
    let pushed = block_on(push_component(wasm, &facts, &reference, &opts))??;
    // The component's own name and version are its text.
    let safe = |t: &str| crate::terminal::safe(t).into_owned();
    println!(
        "pushed {} {} to {}",
        safe(&facts.name),
        safe(&facts.version),
        pushed.reference
    );
    println!("manifest {}", pushed.manifest_digest);
    println!("component {}", pushed.layer_digest);
    println!("pinned {}", pushed.pinned);
    Ok(Exit::Ok)
}
