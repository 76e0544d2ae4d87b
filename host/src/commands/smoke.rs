//! `sparkhost smoke`: one request of each kind, to check an endpoint end to end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Exit;
use crate::cli::SmokeArgs;
use crate::dispatch::stamp::RxClock;
use crate::dispatch::{Prepared, models, openai};
use crate::plan::{Api, Arrival, ChatMessage, Generation, Prompt};
use crate::prepare::{RequestIdentity, RequestMeta};

pub async fn smoke(args: SmokeArgs) -> anyhow::Result<Exit> {
    // `sim[:PROFILE]`: a simulated engine (B1: no disk tier, so no cache
    // directory to place) for as long as the smoke test runs.
    let sim = match crate::simulate::endpoint_profile(&args.endpoint.endpoint) {
        Some(spec) => {
            let p = crate::simulate::profile(spec, &[], "--endpoint sim:", "--sim-set")?;
            let plan = crate::simulate::SimPlan {
                config: sparkhost_kvbm::SimConfig::new(p, sparkhost_kvbm::TierMode::B1),
                cache_dir: None,
            };
            let run = crate::simulate::SimRun::start(&plan, std::path::Path::new(".")).await?;
            println!("smoke: SIMULATED engine ({})", run.info().profile.name);
            Some(run)
        }
        None => None,
    };
    let base = sim
        .as_ref()
        .map_or_else(|| args.endpoint.endpoint.clone(), |s| s.base_url());
    let exit = smoke_at(&base, &args).await;
    if let Some(s) = sim {
        s.shutdown().await;
    }
    exit
}

async fn smoke_at(base: &str, args: &SmokeArgs) -> anyhow::Result<Exit> {
    let client = args
        .endpoint
        .client_for(base, args.timeout, RxClock::Kernel)?;
    let model = if args.model == "auto" {
        match models::wait_for_model(
            &client,
            None,
            Duration::from_secs(5),
            Duration::from_millis(500),
            1,
            false,
        )
        .await
        {
            Ok(m) => m,
            Err(e) => {
                eprintln!("smoke: {e}");
                return Ok(Exit::Crashed);
            }
        }
    } else {
        args.model.clone()
    };
    let generation = Generation {
        max_tokens: args.max_tokens,
        temperature: Some(0.0),
        top_p: None,
        stop: vec![],
        seed: None,
        ignore_eos: false,
    };
    let prompts = [
        Prompt::Text("Say hello in one short sentence.".into()),
        Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: "Say hello in one short sentence.".into(),
        }]),
    ];
    println!("smoke: {} model {model}", client.base());
    let mut failed = 0;
    for prompt in &prompts {
        for stream in [false, true] {
            let payload = openai::payload(&model, prompt, &generation, stream, true);
            let p = Prepared {
                seq: 0,
                api: prompt.api(),
                stream,
                body: Bytes::from(serde_json::to_vec(&payload)?),
                arrival: Arrival::Asap,
                meta: Arc::new(RequestMeta {
                    request_index: 0,
                    phase: "smoke".into(),
                    phase_request_index: 1,
                    id: "smoke".into(),
                    prompt_set: None,
                    prompt_target_tokens: None,
                    prompt_tokens_est: 0,
                    prompt_chars: prompt.char_len(),
                    identity: RequestIdentity::compute(
                        &model,
                        &prompt.identity_bytes(),
                        &payload,
                        &payload,
                    ),
                    generation_params: generation.clone(),
                    api: prompt.api(),
                    stream,
                    arrival: Arrival::Asap,
                    prefix_hash: None,
                    session_id: None,
                    prompt_metadata: Default::default(),
                    planned_after_start: false,
                }),
            };
            let o = client.execute(&p, Instant::now()).await;
            let route = match prompt.api() {
                Api::Completions => "completions",
                Api::ChatCompletions => "chat",
            };
            let mode = if stream { "stream" } else { "unary" };
            let e2e = o.end.duration_since(o.sent).as_secs_f64() * 1e3;
            match &o.error {
                None => {
                    let ttft = o
                        .first_token
                        .map(|t| format!("{:.1} ms", t.duration_since(o.sent).as_secs_f64() * 1e3))
                        .unwrap_or_else(|| "n/a".into());
                    let tokens = o.usage.and_then(|u| u.completion_tokens);
                    println!(
                        "  ok    {route:11} {mode:6} HTTP {} ttft {ttft:>9}  e2e {e2e:7.1} ms  tokens {:?}  text {:?}",
                        o.status,
                        tokens,
                        o.text.chars().take(40).collect::<String>()
                    );
                }
                Some(err) => {
                    failed += 1;
                    println!(
                        "  FAIL  {route:11} {mode:6} HTTP {} {}: {}",
                        o.status,
                        err.kind.as_str(),
                        err.message
                    );
                    // The other requests would be refused the same way.
                    if matches!(o.status, 401 | 403) {
                        eprintln!(
                            "smoke: {} refused the credentials (HTTP {}): pass --api-key or set OPENAI_API_KEY, or --header 'Name: value'",
                            client.base(),
                            o.status
                        );
                        return Ok(Exit::Crashed);
                    }
                }
            }
        }
    }
    Ok(if failed == 0 { Exit::Ok } else { Exit::Crashed })
}
