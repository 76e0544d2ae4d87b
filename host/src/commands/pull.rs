//! `sparkhost pull`: a component fetched into the cache, verified by
//! digest; `-o` copies it out.

use anyhow::Context;

use super::Exit;
use crate::cli::PullArgs;
use crate::share::{OciRef, RegistryOptions, block_on, pull::pull as pull_component};

pub fn pull(args: PullArgs) -> anyhow::Result<Exit> {
    let reference = OciRef::parse(&args.reference)?;
    let opts = RegistryOptions {
        plain_http: args.plain_http,
        cache_dir: args.cache_dir.clone(),
    };
    let pulled = block_on(pull_component(&reference, &opts))??;
    if let Some(out) = &args.output {
        std::fs::copy(&pulled.path, out)
            .with_context(|| format!("copying the component to {}", out.display()))?;
    }
    let ann = pulled.manifest.annotations.clone().unwrap_or_default();
    let get = |k: &str| ann.get(k).map(|v| crate::terminal::safe(v).into_owned());
    if let (Some(name), Some(version)) = (
        get(crate::share::artifact::TITLE),
        get(crate::share::artifact::VERSION),
    ) {
        println!("{name} {version}");
    }
    println!(
        "pulled {reference}{}",
        if pulled.from_cache {
            " (from the cache)"
        } else {
            ""
        }
    );
    println!("manifest {}", pulled.manifest_digest);
    println!("component {}", pulled.layer_digest);
    println!("pinned {}", reference.pinned(&pulled.manifest_digest));
    match &args.output {
        Some(out) => println!("wrote {}", out.display()),
        None => println!("cached {}", pulled.path.display()),
    }
    Ok(Exit::Ok)
}
