//! What surrounds the measured phases of a run, so that what they measure
//! is what the run says: a KV reset before them ([`reset`]), a warm-up that
//! primes the KV tiers to steady pressure with prompts the workload never
//! sends ([`prime`]), the server's own build info for the manifest
//! ([`server_build`]), and reuse_verify's identity verdict
//! ([`reuse_verify_identity`]).

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dispatch::Prepared;
use crate::dispatch::client::Client;
use crate::dispatch::openai;
use crate::limits;
use crate::plan::{Arrival, Generation, Prompt};
use crate::prepare::{RequestIdentity, RequestMeta};
use crate::results::documents::{KvResetDoc, PrimeDoc, ReuseIdentityDoc, ServerBuildDoc};
use crate::tokenize::TokenCounter;

#[derive(Debug, thiserror::Error)]
pub enum HygieneError {
    #[error("{flag} {value:?} is not an http:// URL like http://127.0.0.1:8000/reset")]
    Url { flag: &'static str, value: String },
    #[error("{flag} is empty")]
    Empty { flag: &'static str },
    #[error("{flag} {value} is out of range: allowed {min}..={max}")]
    Range {
        flag: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

/// How the KV cache is emptied before the first phase.
#[derive(Debug, Clone, PartialEq)]
pub enum ResetKind {
    /// POST to this URL.
    Url(String),
    /// `sh -c` this command.
    Command(String),
    /// POST `<endpoint>/reset` (the simulator's).
    Sim,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResetPlan {
    pub kind: ResetKind,
    pub timeout: Duration,
}

/// The warm-up before the measured phases.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimePlan {
    pub tokens: u64,
    pub prompt_tokens: u32,
    pub concurrency: u32,
}

fn range(flag: &'static str, value: u64, min: u64, max: u64) -> Result<(), HygieneError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(HygieneError::Range {
            flag,
            value,
            min,
            max,
        })
    }
}

impl ResetPlan {
    /// From the flags (clap keeps them mutually exclusive); `None` when no
    /// reset was asked for.
    pub fn from_args(a: &crate::cli::HygieneArgs) -> Result<Option<Self>, HygieneError> {
        let kind = match (&a.kv_reset_url, &a.kv_reset_command, a.kv_reset_sim) {
            (Some(u), _, _) => {
                let u = u.trim();
                if crate::dispatch::h1::Endpoint::parse(u).is_err() {
                    return Err(HygieneError::Url {
                        flag: "--kv-reset-url",
                        value: u.to_owned(),
                    });
                }
                ResetKind::Url(u.to_owned())
            }
            (None, Some(c), _) if c.trim().is_empty() => {
                return Err(HygieneError::Empty {
                    flag: "--kv-reset-command",
                });
            }
            (None, Some(c), _) => ResetKind::Command(c.clone()),
            (None, None, true) => ResetKind::Sim,
            (None, None, false) => return Ok(None),
        };
        range(
            "--kv-reset-timeout (s)",
            a.kv_reset_timeout.as_secs(),
            1,
            limits::KV_RESET_MAX_TIMEOUT.as_secs(),
        )?;
        Ok(Some(ResetPlan {
            kind,
            timeout: a.kv_reset_timeout,
        }))
    }
}

impl PrimePlan {
    pub fn from_args(a: &crate::cli::HygieneArgs) -> Result<Option<Self>, HygieneError> {
        if a.prime_tokens == 0 {
            return Ok(None);
        }
        range(
            "--prime-tokens",
            a.prime_tokens,
            1,
            limits::PRIME_MAX_TOKENS,
        )?;
        range(
            "--prime-prompt-tokens",
            u64::from(a.prime_prompt_tokens),
            1,
            u64::from(limits::PRIME_MAX_PROMPT_TOKENS),
        )?;
        range(
            "--prime-concurrency",
            u64::from(a.prime_concurrency),
            1,
            u64::from(limits::PRIME_MAX_CONCURRENCY),
        )?;
        Ok(Some(PrimePlan {
            tokens: a.prime_tokens,
            prompt_tokens: a.prime_prompt_tokens,
            concurrency: a.prime_concurrency,
        }))
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Empties the KV cache as planned; `endpoint` is the run's base URL (the
/// simulator's when it is in-process). Never fails: what happened is the
/// document, and the caller decides what a failed reset means.
pub async fn reset(plan: &ResetPlan, endpoint: &str) -> KvResetDoc {
    let start = Instant::now();
    let mut doc = match &plan.kind {
        ResetKind::Url(u) => post_reset("url", u, plan.timeout).await,
        ResetKind::Sim => {
            let u = format!("{}/reset", endpoint.trim_end_matches('/'));
            post_reset("sim", &u, plan.timeout).await
        }
        ResetKind::Command(c) => {
            let (c, t) = (c.clone(), plan.timeout);
            match tokio::task::spawn_blocking(move || run_command(&c, t)).await {
                Ok(d) => d,
                Err(e) => KvResetDoc {
                    method: "command".into(),
                    error: Some(format!("the reset command's thread failed: {e}")),
                    ..Default::default()
                },
            }
        }
    };
    doc.elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    doc
}

async fn post_reset(method: &str, url: &str, timeout: Duration) -> KvResetDoc {
    let mut doc = KvResetDoc {
        method: method.into(),
        target: url.into(),
        ..Default::default()
    };
    let client = match Client::new(url, timeout) {
        Ok(c) => c,
        Err(e) => {
            doc.error = Some(format!("{url}: {e}"));
            return doc;
        }
    };
    // The client puts the URL's path before every request path; a URL
    // without one still needs a request target.
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let has_path = rest
        .split_once('/')
        .is_some_and(|(_, p)| !p.trim_end_matches('/').is_empty());
    let path = if has_path { "" } else { "/" };
    match client.plain("POST", path, b"{}", timeout).await {
        Ok(r) => {
            doc.status = Some(i64::from(r.status.as_u16()));
            doc.output = cut(
                &String::from_utf8_lossy(&r.body),
                limits::KV_RESET_OUTPUT_BYTES,
            );
            doc.ok = r.status.is_success();
            if !doc.ok {
                doc.error = Some(format!("POST {url} answered HTTP {}", r.status.as_u16()));
            }
        }
        Err(e) => doc.error = Some(e),
    }
    doc
}

/// Runs `sh -c command` with stdout and stderr to a temp file (a pipe
/// could fill and stall it), killing it at `timeout`.
fn run_command(command: &str, timeout: Duration) -> KvResetDoc {
    let mut doc = KvResetDoc {
        method: "command".into(),
        target: command.into(),
        ..Default::default()
    };
    let out = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => {
            doc.error = Some(format!("a temp file for the command's output: {e}"));
            return doc;
        }
    };
    let (o, e) = match (out.try_clone(), out.try_clone()) {
        (Ok(o), Ok(e)) => (o, e),
        _ => {
            doc.error = Some("cannot share the output file with the command".into());
            return doc;
        }
    };
    let mut child = match std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            doc.error = Some(format!("sh -c {command:?}: {e}"));
            return doc;
        }
    };
    let status = match sparkhost_collectors::common::wait_with_deadline(&mut child, timeout) {
        Ok(s) => s,
        Err(e) => {
            doc.error = Some(format!("waiting for the reset command: {e}"));
            return doc;
        }
    };
    let mut text = Vec::new();
    let mut f = out;
    use std::io::Seek;
    if f.rewind().is_ok() {
        let _ = (&mut f)
            .take(limits::KV_RESET_OUTPUT_BYTES as u64)
            .read_to_end(&mut text);
    }
    doc.output = cut(
        &String::from_utf8_lossy(&text),
        limits::KV_RESET_OUTPUT_BYTES,
    );
    match status {
        Some(s) => {
            doc.status = s.code().map(i64::from);
            doc.ok = s.success();
            if !doc.ok {
                doc.error = Some(format!("the reset command exited with {s}"));
            }
        }
        None => {
            doc.error = Some(format!(
                "the reset command ran past --kv-reset-timeout {} s and was killed",
                timeout.as_secs()
            ));
        }
    }
    doc
}

/// A filler prompt that shares no prefix with any other: it opens with a
/// per-request random tag, then random words, fitted to `tokens`.
fn prime_prompt(rng: &mut ChaCha8Rng, i: u64, tokens: u32, counter: &TokenCounter) -> String {
    let tag: u64 = rng.random();
    let mut text = format!("prime {i:x}-{tag:016x}:");
    // Enough words for the heuristic (one token each) and for a real
    // tokenizer (a few tokens each); `fit` then cuts to the target.
    for _ in 0..tokens {
        let len = rng.random_range(3..9);
        text.push(' ');
        for _ in 0..len {
            text.push(char::from(b'a' + rng.random_range(0..26u8)));
        }
    }
    counter.fit(&text, tokens, "lorem")
}

/// Sends the warm-up: distinct filler prompts totalling `plan.tokens`
/// prompt tokens, `plan.concurrency` at a time, one output token each.
pub async fn prime(
    client: &Client,
    model: &str,
    plan: &PrimePlan,
    counter: Arc<TokenCounter>,
    seed: u64,
) -> PrimeDoc {
    let start = Instant::now();
    let mut doc = PrimeDoc {
        target_prompt_tokens: plan.tokens,
        prompt_tokens_per_request: plan.prompt_tokens,
        concurrency: plan.concurrency,
        ..Default::default()
    };
    let requests = plan.tokens.div_ceil(u64::from(plan.prompt_tokens));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..plan.concurrency {
        let (client, model, counter, next) = (
            client.clone(),
            model.to_owned(),
            counter.clone(),
            next.clone(),
        );
        let prompt_tokens = plan.prompt_tokens;
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5052_494d_4500_0000 ^ u64::from(w));
            let (mut ok, mut failed, mut sent_tokens) = (0u64, 0u64, 0u64);
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let text = prime_prompt(&mut rng, i, prompt_tokens, &counter);
                sent_tokens += u64::from(counter.count(&text));
                let p = prime_request(&model, text);
                let o = client.execute(&p, Instant::now()).await;
                match o.error {
                    None => ok += 1,
                    Some(e) => {
                        failed += 1;
                        if errors.len() < 5 {
                            errors.push(format!("{}: {}", e.kind.as_str(), e.message));
                        }
                    }
                }
            }
            (ok, failed, sent_tokens, errors)
        }));
    }
    for t in tasks {
        match t.await {
            Ok((ok, failed, tokens, errors)) => {
                doc.ok += ok;
                doc.failed += failed;
                doc.prompt_tokens_sent += tokens;
                for e in errors {
                    if doc.errors.len() < 5 {
                        doc.errors.push(e);
                    }
                }
            }
            Err(e) => doc.errors.push(format!("a warm-up task failed: {e}")),
        }
    }
    doc.requests = doc.ok + doc.failed;
    doc.elapsed_s = start.elapsed().as_secs_f64();
    doc
}

fn prime_request(model: &str, text: String) -> Prepared {
    let generation = Generation {
        max_tokens: 1,
        temperature: Some(0.0),
        top_p: None,
        stop: vec![],
        seed: None,
        ignore_eos: false,
    };
    let prompt = Prompt::Text(text);
    let payload = openai::payload(model, &prompt, &generation, false, false);
    // A `Value` has string keys and finite numbers only, so it always encodes.
    let body = serde_json::to_vec(&payload).expect("a JSON value encodes");
    Prepared {
        seq: 0,
        api: prompt.api(),
        stream: false,
        body: Bytes::from(body),
        arrival: Arrival::Asap,
        meta: Arc::new(RequestMeta {
            request_index: 0,
            phase: "prime".into(),
            phase_request_index: 0,
            id: "prime".into(),
            prompt_set: None,
            prompt_target_tokens: None,
            prompt_tokens_est: 0,
            prompt_chars: prompt.char_len(),
            identity: RequestIdentity::compute(model, &prompt.identity_bytes(), &payload, &payload),
            generation_params: generation,
            api: prompt.api(),
            stream: false,
            arrival: Arrival::Asap,
            prefix_hash: None,
            session_id: None,
            prompt_metadata: Default::default(),
            planned_after_start: false,
        }),
    }
}

/// What the server says about its build: the `Server` header of
/// `/v1/models` and a 2xx `/version` (Dynamo's frontend and vLLM serve
/// one); `None` when neither said anything.
pub async fn server_build(client: &Client) -> Option<ServerBuildDoc> {
    let limit = limits::SERVER_INFO_TIMEOUT;
    let models = tokio::time::timeout(limit, client.plain("GET", "/v1/models", b"", limit)).await;
    let version = tokio::time::timeout(limit, client.plain("GET", "/version", b"", limit)).await;
    let mut doc = ServerBuildDoc {
        server_header: models
            .ok()
            .and_then(Result::ok)
            .and_then(|r| r.server)
            .map(|s| cut(&s, 256)),
        ..Default::default()
    };
    if let Ok(Ok(r)) = version {
        doc.version_status = Some(r.status.as_u16());
        if r.status.is_success() && r.body.len() <= limits::SERVER_INFO_BYTES {
            doc.version = Some(serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&r.body).into_owned())
            }));
        } else if r.status.is_success() {
            doc.version = Some(serde_json::Value::String(cut(
                &String::from_utf8_lossy(&r.body),
                limits::SERVER_INFO_BYTES,
            )));
        }
    }
    let seen = doc.server_header.is_some() || doc.version.is_some();
    seen.then_some(doc)
}

/// The fields of a `request_manifest.jsonl` row the identity verdict uses.
#[derive(serde::Deserialize)]
struct IdentityRow {
    #[serde(default)]
    phase: String,
    #[serde(default)]
    prompt_sha256: String,
    #[serde(default)]
    generation_params_sha256: String,
    #[serde(default)]
    request_identity_sha256: String,
}

pub const IDENTICAL_INPUTS_CONFIRMED: &str = "identical_inputs_confirmed";
pub const IDENTITY_MISMATCH_DETECTED: &str = "identity_mismatch_detected";

/// The seed's `reuse_verify_identity` over the `reuse*` phases of a
/// manifest, streamed row by row.
pub fn reuse_verify_identity(manifest: &Path) -> std::io::Result<ReuseIdentityDoc> {
    let f = std::io::BufReader::new(std::fs::File::open(manifest)?);
    let (mut ids, mut prompts, mut params) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut n = 0u64;
    for line in f.lines() {
        let line = line?;
        let Ok(r) = serde_json::from_str::<IdentityRow>(&line) else {
            continue;
        };
        if !r.phase.starts_with("reuse") {
            continue;
        }
        n += 1;
        // Three sets of at most a handful each: reuse_verify plans ≤ 3 rows.
        if ids.len() < 2 {
            ids.insert(r.request_identity_sha256);
        }
        if prompts.len() < 2 {
            prompts.insert(r.prompt_sha256);
        }
        if params.len() < 2 {
            params.insert(r.generation_params_sha256);
        }
    }
    let one = |s: &HashSet<String>| s.len() == 1 && !s.iter().any(String::is_empty);
    let confirmed = n >= 2 && one(&ids) && one(&prompts) && one(&params);
    Ok(ReuseIdentityDoc {
        verdict: if confirmed {
            IDENTICAL_INPUTS_CONFIRMED
        } else {
            IDENTITY_MISMATCH_DETECTED
        }
        .into(),
        reuse_requests: n,
        unique_request_identity_sha256: ids.len() as u64,
        unique_prompt_sha256: prompts.len() as u64,
        unique_generation_params_sha256: params.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> crate::cli::HygieneArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            h: crate::cli::HygieneArgs,
        }
        T::try_parse_from(std::iter::once("t").chain(extra.iter().copied()))
            .unwrap()
            .h
    }

    #[test]
    fn reset_flags_are_checked_by_name() {
        assert_eq!(ResetPlan::from_args(&args(&[])).unwrap(), None);
        let e = ResetPlan::from_args(&args(&["--kv-reset-url", "ftp://x/reset"])).unwrap_err();
        assert!(e.to_string().contains("--kv-reset-url"), "{e}");
        let e = ResetPlan::from_args(&args(&["--kv-reset-command", " "])).unwrap_err();
        assert!(e.to_string().contains("--kv-reset-command is empty"), "{e}");
        let e = ResetPlan::from_args(&args(&["--kv-reset-sim", "--kv-reset-timeout", "0s"]))
            .unwrap_err();
        assert!(e.to_string().contains("1..=3600"), "{e}");
        let p = ResetPlan::from_args(&args(&["--kv-reset-url", "http://127.0.0.1:1/reset"]))
            .unwrap()
            .unwrap();
        assert_eq!(p.kind, ResetKind::Url("http://127.0.0.1:1/reset".into()));
    }

    #[test]
    fn prime_flags_are_bounded() {
        assert_eq!(PrimePlan::from_args(&args(&[])).unwrap(), None);
        let e = PrimePlan::from_args(&args(&["--prime-tokens", "1000000000"])).unwrap_err();
        assert!(e.to_string().contains("--prime-tokens"), "{e}");
        let e = PrimePlan::from_args(&args(&["--prime-tokens", "10", "--prime-concurrency", "0"]))
            .unwrap_err();
        assert!(e.to_string().contains("--prime-concurrency 0"), "{e}");
    }

    #[test]
    fn a_command_reset_records_status_and_output_and_times_out() {
        let ok = run_command("echo flushed; exit 0", Duration::from_secs(10));
        assert!(
            ok.ok && ok.status == Some(0) && ok.output.contains("flushed"),
            "{ok:?}"
        );
        let bad = run_command("echo nope >&2; exit 3", Duration::from_secs(10));
        assert!(!bad.ok && bad.status == Some(3) && bad.output.contains("nope"));
        let slow = run_command("sleep 5", Duration::from_millis(200));
        assert!(!slow.ok && slow.error.unwrap().contains("--kv-reset-timeout"));
    }

    #[test]
    fn prime_prompts_are_distinct_from_the_first_token() {
        let c = TokenCounter::Heuristic;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a = prime_prompt(&mut rng, 0, 64, &c);
        let b = prime_prompt(&mut rng, 1, 64, &c);
        assert_eq!(c.count(&a), 64);
        assert_ne!(a.split(':').next(), b.split(':').next());
    }

    /// A one-shot-per-connection server: `Server` header on every answer,
    /// `/version` JSON when `version` is set, 404 otherwise.
    async fn serve(version: Option<&'static str>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let (status, body) = match (head.starts_with("GET /version "), version) {
                        (true, Some(v)) => ("200 OK", v),
                        (true, None) => ("404 Not Found", "no"),
                        _ => ("200 OK", r#"{"data":[]}"#),
                    };
                    let r = format!(
                        "HTTP/1.1 {status}\r\nserver: test-engine/1.2\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(r.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn server_build_records_what_was_seen() {
        let url = serve(Some(r#"{"version":"1.6.1"}"#)).await;
        let c = Client::new(&url, Duration::from_secs(5)).unwrap();
        let b = server_build(&c).await.unwrap();
        assert_eq!(b.server_header.as_deref(), Some("test-engine/1.2"));
        assert_eq!(b.version_status, Some(200));
        assert_eq!(b.version.unwrap()["version"], "1.6.1");
        let url = serve(None).await;
        let c = Client::new(&url, Duration::from_secs(5)).unwrap();
        let b = server_build(&c).await.unwrap();
        assert_eq!((b.version_status, b.version), (Some(404), None));
        // Nothing there at all: nothing seen, nothing recorded.
        let c = Client::new("http://127.0.0.1:9", Duration::from_secs(1)).unwrap();
        assert_eq!(server_build(&c).await, None);
    }

    #[tokio::test]
    async fn a_url_reset_needs_a_2xx() {
        let url = serve(None).await;
        let ok = post_reset("url", &format!("{url}/reset"), Duration::from_secs(5)).await;
        assert!(ok.ok && ok.status == Some(200), "{ok:?}");
        let bad = post_reset("url", "http://127.0.0.1:9/reset", Duration::from_secs(2)).await;
        assert!(!bad.ok && bad.error.is_some(), "{bad:?}");
    }

    #[test]
    fn identity_verdict_uses_the_seed_names() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("m.jsonl");
        let row = |phase: &str, p: &str| {
            format!(
                "{{\"phase\":\"{phase}\",\"prompt_sha256\":\"{p}\",\"generation_params_sha256\":\"g\",\"request_identity_sha256\":\"i{p}\"}}\n"
            )
        };
        std::fs::write(&f, row("reuse_1", "a") + &row("reuse_2", "a")).unwrap();
        let v = reuse_verify_identity(&f).unwrap();
        assert_eq!(v.verdict, IDENTICAL_INPUTS_CONFIRMED);
        assert_eq!(v.reuse_requests, 2);
        std::fs::write(&f, row("reuse_1", "a") + &row("reuse_2", "b")).unwrap();
        assert_eq!(
            reuse_verify_identity(&f).unwrap().verdict,
            IDENTITY_MISMATCH_DETECTED
        );
        std::fs::write(&f, row("reuse_1", "a") + &row("other", "a")).unwrap();
        assert_eq!(
            reuse_verify_identity(&f).unwrap().verdict,
            IDENTITY_MISMATCH_DETECTED,
            "one reuse row proves nothing"
        );
    }
}
