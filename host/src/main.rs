use clap::{CommandFactory, FromArgMatches};
use sparkhost::cli::{Cli, Command};
use sparkhost::commands::{self, Exit};

fn main() -> std::process::ExitCode {
    sparkhost::harness::mark_start();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    if prints_only(&cli.command) {
        restore_sigpipe();
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
        // oci-client logs registry token responses at debug level: never
        // let a log carry a credential.
        .add_directive("oci_client=info".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(Exit::Crashed as u8);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(*args).await,
            Command::Inspect(args) => commands::inspect::inspect(args),
            Command::WaitReady(args) => commands::wait_ready::wait_ready(args).await,
            Command::Smoke(args) => commands::smoke::smoke(args).await,
            Command::Report(args) => commands::report::report(args),
            Command::Summarize(args) => commands::summarize::summarize(args),
            Command::Compare(args) => commands::compare::compare(args),
            Command::Matrix(args) => commands::matrix::matrix(args).await,
            Command::Search(args) => commands::search::search(*args).await,
            Command::Sim(args) => commands::sim::sim(*args).await,
            Command::CalibrateDisk(args) => commands::calibrate_disk::calibrate_disk(args).await,
            Command::Stack(args) => commands::stack::stack(args),
            Command::Health(args) => commands::health::health(args),
            Command::Bench(args) => commands::bench::bench(args).await,
            Command::TruthServer(args) => commands::truth_server::truth_server(args).await,
            Command::New(args) => commands::new::new(args),
            Command::Completions(args) => commands::shell::completions(args),
            Command::Man(args) => commands::shell::man(args),
            Command::Recover(args) => commands::recover::recover(args),
            Command::Push(args) => commands::push::push(args),
            Command::Pull(args) => commands::pull::pull(args),
        }
    });
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            // Messages carry guest and server text.
            eprintln!("error: {}", sparkhost::terminal::safe(&format!("{e:#}")));
            Exit::Crashed
        }
    };
    // Request tasks still waiting on a dead server must not hold the process.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::ExitCode::from(exit as u8)
}

/// The command line, plus what clap knows and the derived types do not:
/// whether `run --endpoint` was typed (a server may be starting there) or
/// is its default (nothing listening ends the run at once).
fn parse() -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Command::Run(args) = &mut cli.command {
        args.endpoint.endpoint_given = matches
            .subcommand_matches("run")
            .and_then(|m| m.value_source("endpoint"))
            == Some(clap::parser::ValueSource::CommandLine);
    }
    Ok(cli)
}

/// `--help` and `--version` succeed; any other parse error is a usage error,
/// which fails before producing results (1): clap's own 2 would read as "the
/// run is invalid, its artifacts are written".
fn usage(e: &clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    // A closed stdout (`--help | head -1`) is not worth a message.
    let _ = e.print();
    let exit = match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Ok,
        _ => Exit::Crashed,
    };
    std::process::ExitCode::from(exit as u8)
}

/// Commands that only read files and print: like any Unix filter, they end
/// quietly when their reader goes away (`inspect … | head -1`). Rust ignores
/// SIGPIPE, which turns that into a panic in `println!`. Commands that talk
/// to servers keep it ignored, so a peer's close is an error on that socket,
/// not the end of the process.
fn prints_only(c: &Command) -> bool {
    matches!(
        c,
        Command::Inspect(_)
            | Command::Summarize(_)
            | Command::Compare(_)
            | Command::Completions(_)
            | Command::Man(_)
            | Command::New(_)
    )
}

#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called before any thread starts; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
