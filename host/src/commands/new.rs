//! `sparkhost new workload NAME --lang rust|js|python [--from …] [--dir …]`.

use super::Exit;
use crate::cli::{NewArgs, NewFrom, NewLang, NewWhat};
use crate::scaffold::{self, Lang, Options, Origin};

pub fn new(args: NewArgs) -> anyhow::Result<Exit> {
    let NewWhat::Workload(a) = args.what;
    let opts = Options {
        dir: a.dir.clone().unwrap_or_else(|| a.name.clone().into()),
        name: a.name,
        lang: match a.lang {
            NewLang::Rust => Lang::Rust,
            NewLang::Js => Lang::Js,
            NewLang::Python => Lang::Python,
        },
        from: a.from.map(|f| match f {
            NewFrom::ReuseVerify => Origin::ReuseVerify,
            NewFrom::LocalCopilotBurst => Origin::LocalCopilotBurst,
        }),
    };
    let made = scaffold::create(&opts)?;
    let dir = made.dir.display();
    println!(
        "created {dir} ({} files): a {} workload `{}`\n\n  cd {dir}\n  ./build.sh    # builds {}.wasm\n  ./test.sh     # runs it with `sparkhost run` against the in-process simulator and checks the run",
        made.files,
        opts.lang.as_str(),
        opts.name,
        opts.name
    );
    Ok(Exit::Ok)
}
