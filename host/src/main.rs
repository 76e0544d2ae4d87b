use clap::Parser;
use sparkhost::cli::{Cli, Command};
use sparkhost::commands::{self, Exit};

fn main() -> std::process::ExitCode {
    sparkhost::harness::mark_start();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
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
            Command::Stack(args) => commands::stack::stack(args),
            Command::Health(args) => commands::health::health(args),
            Command::Bench(args) => commands::bench::bench(args).await,
            Command::TruthServer(args) => commands::truth_server::truth_server(args).await,
        }
    });
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Crashed
        }
    };
    // Request tasks still waiting on a dead server must not hold the process.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::ExitCode::from(exit as u8)
}
