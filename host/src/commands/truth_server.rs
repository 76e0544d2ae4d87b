//! `sparkhost truth-server`: the ground-truth endpoint for benchmarks.

use anyhow::Context;
use tokio::net::TcpListener;

use super::Exit;
use crate::cli::TruthServerArgs;
use crate::truth::{TruthConfig, TruthServer};

pub async fn truth_server(args: TruthServerArgs) -> anyhow::Result<Exit> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // The benchmark reads this line to learn the port.
    println!("listening on http://{}", listener.local_addr()?);
    let server = TruthServer::new(TruthConfig {
        ttft: args.ttft,
        itl: args.itl,
    });
    server
        .serve(listener)
        .await
        .context("truth server stopped")?;
    Ok(Exit::Ok)
}
