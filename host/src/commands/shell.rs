//! `sparkhost completions SHELL` and `sparkhost man [COMMAND]`: generated
//! from the clap definition at run time, so they can never disagree with
//! the binary that prints them.

use anyhow::{Context, bail};

use super::Exit;
use crate::cli::{Cli, CompletionsArgs, ManArgs};

pub fn completions(args: CompletionsArgs) -> anyhow::Result<Exit> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "sparkhost", &mut std::io::stdout());
    Ok(Exit::Ok)
}

pub fn man(args: ManArgs) -> anyhow::Result<Exit> {
    use clap::CommandFactory;
    let mut root = Cli::command();
    root.build();
    let (cmd, title) = match &args.command {
        None => (root, "sparkhost".to_owned()),
        Some(name) => {
            let Some(sub) = root.find_subcommand(name).cloned() else {
                let names: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).collect();
                bail!(
                    "no subcommand {:?}; one of: {}",
                    crate::terminal::safe(name),
                    names.join(", ")
                );
            };
            let title = format!("sparkhost-{}", sub.get_name());
            (sub, title)
        }
    };
    clap_mangen::Man::new(cmd)
        .title(title)
        .render(&mut std::io::stdout())
        .context("writing the man page")?;
    Ok(Exit::Ok)
}
