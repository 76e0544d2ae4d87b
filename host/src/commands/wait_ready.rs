//! `sparkhost wait-ready`: blocks until the endpoint serves a model.

use super::Exit;
use crate::cli::WaitReadyArgs;
use crate::dispatch::models;
use crate::dispatch::stamp::RxClock;

pub async fn wait_ready(args: WaitReadyArgs) -> anyhow::Result<Exit> {
    let client = args.endpoint.client_for(
        &args.endpoint.endpoint,
        args.poll.max(std::time::Duration::from_secs(5)),
        RxClock::Kernel,
    )?;
    match models::wait_for_model(
        &client,
        args.model.as_deref(),
        args.timeout,
        args.poll,
        args.consecutive.max(1),
        false,
    )
    .await
    {
        Ok(model) => {
            println!("ready: {} serves {model}", client.base());
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("not ready: {e}");
            Ok(Exit::Crashed)
        }
    }
}
