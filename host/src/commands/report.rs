//! `sparkhost report`: (re)writes a run directory's reports offline, with the
//! default generator or one the user built (a file or an `oci://` reference;
//! a pinned digest already pulled needs no registry).

use anyhow::Context;

use super::Exit;
use crate::cli::ReportArgs;
use crate::report::{ReportOptions, describe_generator, generate_report};
use crate::sandbox::report::ReportLimits;
use crate::share::{RegistryOptions, check_plain_http_used, resolve};

pub fn report(args: ReportArgs) -> anyhow::Result<Exit> {
    let opts = ReportOptions {
        cache_dir: args.cache_dir.clone(),
        limits: ReportLimits {
            call_timeout: args.timeout,
            memory_bytes: args.memory_mib << 20,
        },
        params: args.params.clone(),
    };
    check_plain_http_used(args.plain_http, &[args.generator.as_deref()])?;
    let registry = RegistryOptions {
        plain_http: args.plain_http,
        cache_dir: args.cache_dir.clone(),
    };
    let generator = match &args.generator {
        Some(g) => Some(
            resolve(g, &registry).with_context(|| format!("report generator {}", g.display()))?,
        ),
        None => None,
    };
    if args.describe {
        let (path, digest, info) =
            describe_generator(generator.as_ref().map(|g| g.path.as_path()), &opts)?;
        let shown = generator
            .as_ref()
            .map_or_else(|| path.display().to_string(), |g| g.given.clone());
        // The generator's name, description and params are its own text.
        let mut text = format!(
            "{} {} ({shown})\nsha256 {digest}\n",
            info.name, info.version,
        );
        if !info.description.is_empty() {
            text.push_str(&format!("{}\n", info.description));
        }
        for p in &info.params {
            text.push_str(&format!(
                "  --param {}=…  {} (default {:?})\n",
                p.name, p.description, p.default_value
            ));
        }
        use std::io::Write;
        let _ = std::io::stdout()
            .lock()
            .write_all(crate::terminal::safe(&text).as_bytes());
        return Ok(Exit::Ok);
    }
    let written = generate_report(&args.run_dir, generator.as_ref(), &opts)?;
    for w in &written {
        println!("{}", w.display());
    }
    Ok(Exit::Ok)
}
