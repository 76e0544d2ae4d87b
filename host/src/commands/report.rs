//! `sparkhost report`: (re)writes a run directory's reports offline, with the
//! default generator or one the user built.

use super::Exit;
use crate::cli::ReportArgs;
use crate::report::{ReportOptions, describe_generator, generate_report};
use crate::sandbox::report::ReportLimits;

pub fn report(args: ReportArgs) -> anyhow::Result<Exit> {
    let opts = ReportOptions {
        cache_dir: args.cache_dir.clone(),
        limits: ReportLimits {
            call_timeout: args.timeout,
            memory_bytes: args.memory_mib << 20,
        },
        params: args.params.clone(),
    };
    if args.describe {
        let (path, digest, info) = describe_generator(args.generator.as_deref(), &opts)?;
        // The generator's name, description and params are its own text.
        let mut text = format!(
            "{} {} ({})\nsha256 {digest}\n",
            info.name,
            info.version,
            path.display()
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
    let written = generate_report(&args.run_dir, args.generator.as_deref(), &opts)?;
    for w in &written {
        println!("{}", w.display());
    }
    Ok(Exit::Ok)
}
