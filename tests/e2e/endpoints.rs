//! How an endpoint is reached: TLS, API keys and headers, base URLs, hosts,
//! and the CLI's exit codes and pipes. The server is an in-test OpenAI
//! lookalike on 127.0.0.1 (TLS with an rcgen certificate when asked; one
//! test binds [::1] when the machine has it) that records every request head.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{dirs, read_json, synthetic, text};

const MODEL: &str = "fake-model";

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Opts {
    /// Serve the API under this path prefix (`/gw` → `/gw/v1/models`).
    prefix: String,
    /// Answer 401 unless `Authorization: Bearer <this>`.
    bearer: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(opts: Opts) -> Self {
        Self::on(
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"),
            opts,
        )
    }

    fn on(listener: TcpListener, opts: Opts) -> Self {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let accept = thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (s, o) = (s.clone(), opts.clone());
                        conns.push(thread::spawn(move || serve_conn(sock, &o, &s)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Server {
            addr,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve_conn(sock: TcpStream, opts: &Opts, seen: &Mutex<Vec<Seen>>) {
    let _ = sock.set_nonblocking(false);
    // A client that goes silent must not pin this thread past the test.
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = sock.set_nodelay(true);
    match &opts.tls {
        Some(cfg) => {
            let Ok(session) = rustls::ServerConnection::new(cfg.clone()) else {
                return;
            };
            serve_stream(rustls::StreamOwned::new(session, sock), opts, seen);
        }
        None => serve_stream(sock, opts, seen),
    }
}

/// Keep-alive request loop on one connection.
fn serve_stream<S: Read + Write>(stream: S, opts: &Opts, seen: &Mutex<Vec<Seen>>) {
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_owned(), path.to_owned());
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let authorized = opts
            .bearer
            .as_ref()
            .is_none_or(|b| headers.get("authorization") == Some(&format!("Bearer {b}")));
        seen.lock().unwrap().push(Seen {
            path: path.clone(),
            headers,
        });
        let w = r.get_mut();
        let api = path.strip_prefix(opts.prefix.as_str()).unwrap_or("");
        let ok = match (method.as_str(), api) {
            _ if !authorized => full(
                w,
                "401 Unauthorized",
                &json!({"error": {"message": "invalid api key", "type": "invalid_request_error"}}),
            ),
            ("GET", "/v1/models") => full(
                w,
                "200 OK",
                &json!({"object": "list", "data": [{"id": MODEL, "object": "model"}]}),
            ),
            ("POST", "/v1/completions" | "/v1/chat/completions") => {
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                complete(w, api == "/v1/chat/completions", &req)
            }
            _ => full(
                w,
                "404 Not Found",
                &json!({"error": {"message": format!("no route {path}")}}),
            ),
        };
        if ok.is_err() {
            return;
        }
    }
}

fn full(w: &mut impl Write, status: &str, body: &Value) -> std::io::Result<()> {
    let b = body.to_string();
    write!(
        w,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
        b.len()
    )?;
    w.flush()
}

/// Four tokens, one per chunk when streamed, with usage.
fn complete(w: &mut impl Write, chat: bool, req: &Value) -> std::io::Result<()> {
    let usage = json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9});
    let piece = |t: &str, last: bool| {
        let fin = if last { json!("length") } else { Value::Null };
        if chat {
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": fin}]})
        } else {
            json!({"id": "c", "choices": [{"index": 0, "text": t, "finish_reason": fin}]})
        }
    };
    if !req["stream"].as_bool().unwrap_or(false) {
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": " a b c d"}, "finish_reason": "length"})
        } else {
            json!({"index": 0, "text": " a b c d", "finish_reason": "length"})
        };
        return full(
            w,
            "200 OK",
            &json!({"id": "c", "choices": [choice], "usage": usage}),
        );
    }
    write!(
        w,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )?;
    let mut event = |data: String| -> std::io::Result<()> {
        let e = format!("data: {data}\n\n");
        write!(w, "{:x}\r\n{e}\r\n", e.len())?;
        // Separate records and segments, so arrivals are separate reads.
        w.flush()?;
        thread::sleep(Duration::from_millis(2));
        Ok(())
    };
    for (i, t) in [" a", " b", " c", " d"].iter().enumerate() {
        event(piece(t, i == 3).to_string())?;
    }
    event(json!({"id": "c", "choices": [], "usage": usage}).to_string())?;
    event("[DONE]".into())?;
    write!(w, "0\r\n\r\n")?;
    w.flush()
}

/// A self-signed certificate for localhost, 127.0.0.1 and ::1: the server's
/// TLS config and the certificate's PEM file.
fn tls_server(dir: &Path) -> (Arc<rustls::ServerConfig>, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .unwrap();
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, ck.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    (Arc::new(cfg), pem)
}

/// The real binary, without any OPENAI_API_KEY of the caller's environment.
fn cli(args: &[&str], cache: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sparkhost"));
    c.args(args)
        .env("SPARKHOST_CACHE_DIR", cache)
        .env("SPARKHOST_LOG", "warn")
        .env_remove("OPENAI_API_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("sparkhost binary runs")
}

fn wait_ready(endpoint: &str, cache: &Path, timeout: &str) -> (Output, Duration) {
    let t = Instant::now();
    let out = cli(
        &[
            "wait-ready",
            "--endpoint",
            endpoint,
            "--timeout",
            timeout,
            "--consecutive",
            "1",
        ],
        cache,
        &[],
    );
    (out, t.elapsed())
}

/// Every file under `dir`, read as bytes.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn https_run_with_a_ca_cert_sends_the_key_and_headers_keeps_kernel_stamps_and_writes_no_secret() {
    let d = dirs();
    let (tls, pem) = tls_server(d.cache.path());
    let server = Server::start(Opts {
        bearer: Some("sk-test-SECRET-1".into()),
        tls: Some(tls),
        ..Opts::default()
    });
    let endpoint = format!("https://localhost:{}/v1", server.port());
    let wasm = synthetic();
    let root = d.results.path();
    let out = cli(
        &[
            "run",
            wasm.to_str().unwrap(),
            "--endpoint",
            &endpoint,
            "--ca-cert",
            pem.to_str().unwrap(),
            "--api-key",
            "sk-test-SECRET-1",
            "--header",
            "X-Tenant: tenant-SECRET-2",
            "--results-root",
            root.to_str().unwrap(),
            "--run-id",
            "tls",
            "--kv-mode",
            "off",
            "--no-telemetry",
            "--stream",
            "--requests",
            "4",
            "--warmup",
            "0",
            "--max-tokens",
            "4",
            "--concurrency",
            "2",
            "--quiet",
        ],
        d.cache.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let seen = server.seen();
    let completions: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path == "/v1/completions")
        .collect();
    assert_eq!(completions.len(), 4, "{seen:?}");
    assert!(seen.iter().any(|s| s.path == "/v1/models"), "{seen:?}");
    for s in &seen {
        assert!(!s.path.contains("/v1/v1"), "{s:?}");
        assert_eq!(
            s.headers.get("authorization").map(String::as_str),
            Some("Bearer sk-test-SECRET-1"),
            "{s:?}"
        );
        assert_eq!(
            s.headers.get("x-tenant").map(String::as_str),
            Some("tenant-SECRET-2"),
            "{s:?}"
        );
    }
    let dir = root.join("tls");
    let summary = read_json(&dir.join("summary.json"));
    let budget = &summary["timing_error_budget"];
    assert_eq!(budget["arrival_clock"], "kernel", "{budget}");
    // Four streamed tokens per request, each stamped by the kernel through TLS.
    assert!(
        budget["chunks_kernel_stamped"].as_u64().unwrap_or(0) >= 16,
        "{budget}"
    );
    assert!(
        budget["read_path_delay_ms"]["count"].as_u64().unwrap_or(0) >= 16,
        "{budget}"
    );
    for (p, bytes) in all_files(&dir) {
        let s = String::from_utf8_lossy(&bytes);
        assert!(
            !s.contains("SECRET-1") && !s.contains("SECRET-2"),
            "a secret is in {}",
            p.display()
        );
    }
    let config = read_json(&dir.join("config.json"));
    assert!(
        config.to_string().contains("X-Tenant: <redacted>"),
        "argv keeps the header name: {config}"
    );
}

#[test]
fn tls_trust_is_checked_and_insecure_accepts_a_self_signed_server() {
    let d = dirs();
    let (tls, _pem) = tls_server(d.cache.path());
    let server = Server::start(Opts {
        tls: Some(tls),
        ..Opts::default()
    });
    let endpoint = format!("https://127.0.0.1:{}", server.port());
    // Not in the system's roots: refused, with the reason.
    let (out, _) = wait_ready(&endpoint, d.cache.path(), "3s");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        text(&out)
    );
    // --insecure: model discovery (reqwest) and every request (h1) over TLS.
    let out = cli(
        &["smoke", "--endpoint", &endpoint, "--insecure"],
        d.cache.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("  ok ").count(), 4, "{}", text(&out));
}

#[test]
fn refused_credentials_fail_fast_and_the_environment_key_is_sent() {
    let d = dirs();
    let server = Server::start(Opts {
        bearer: Some("env-key".into()),
        ..Opts::default()
    });
    let endpoint = format!("http://127.0.0.1:{}", server.port());
    let (out, took) = wait_ready(&endpoint, d.cache.path(), "60s");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("GET {endpoint}/v1/models answered HTTP 401"))
            && err.contains("--api-key"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "polled for {took:?}");

    let out = cli(
        &["wait-ready", "--endpoint", &endpoint],
        d.cache.path(),
        &[("OPENAI_API_KEY", "env-key")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Smoke with a named model skips discovery: its first refused request ends it.
    let before = server.seen().len();
    let out = cli(
        &["smoke", "--endpoint", &endpoint, "--model", MODEL],
        d.cache.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused the credentials (HTTP 401)"),
        "{}",
        text(&out)
    );
    assert_eq!(server.seen().len() - before, 1);
}

#[test]
fn base_urls_hostnames_and_ipv6_reach_the_api_root() {
    let d = dirs();
    let plain = Server::start(Opts::default());
    let gw = Server::start(Opts {
        prefix: "/gw".into(),
        ..Opts::default()
    });
    let p = plain.port();
    let g = gw.port();
    for endpoint in [
        format!("http://127.0.0.1:{p}"),
        format!("http://127.0.0.1:{p}/v1"),
        format!("http://127.0.0.1:{p}/v1/"),
        format!("http://localhost:{p}/v1"),
        format!("http://127.0.0.1:{g}/gw/v1"),
        format!("http://127.0.0.1:{g}/gw"),
    ] {
        let (out, _) = wait_ready(&endpoint, d.cache.path(), "60s");
        assert_eq!(out.status.code(), Some(0), "{endpoint}: {}", text(&out));
    }
    let models = |s: &Server| {
        s.seen()
            .iter()
            .filter(|r| r.path.ends_with("/v1/models"))
            .count()
    };
    assert!(plain.seen().iter().all(|r| r.path == "/v1/models"));
    assert!(gw.seen().iter().all(|r| r.path == "/gw/v1/models"));
    assert_eq!((models(&plain), models(&gw)), (4, 2));

    // A wrong prefix: a 404 ends the wait at once, naming the URL requested.
    let (out, took) = wait_ready(
        &format!("http://127.0.0.1:{p}/wrong/v1"),
        d.cache.path(),
        "60s",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "GET http://127.0.0.1:{p}/wrong/v1/models answered HTTP 404"
        )),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "polled for {took:?}");

    match TcpListener::bind("[::1]:0") {
        Err(e) => println!("skipped the IPv6 endpoint: this machine cannot bind [::1] ({e})"),
        Ok(l) => {
            let v6 = Server::on(l, Opts::default());
            let endpoint = format!("http://[::1]:{}/v1", v6.port());
            let out = cli(&["smoke", "--endpoint", &endpoint], d.cache.path(), &[]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            assert_eq!(
                v6.seen()
                    .last()
                    .and_then(|s| s.headers.get("host").cloned()),
                Some(format!("[::1]:{}", v6.port()))
            );
        }
    }
}

#[test]
fn usage_errors_exit_1_and_help_and_version_exit_0() {
    let d = dirs();
    let wasm = synthetic();
    let w = wasm.to_str().unwrap();
    for (args, code) in [
        (vec!["run", w, "--no-such-flag"], 1),
        (vec!["run", w, "--concurrency", "many"], 1),
        (vec!["run"], 1),
        (vec![], 1),
        (vec!["run", w, "--header", "Bad Name: v"], 1),
        (vec!["run", w, "--endpoint", "ftp://h:1"], 1),
        (vec!["--help"], 0),
        (vec!["run", "--help"], 0),
        (vec!["--version"], 0),
    ] {
        let out = cli(&args, d.cache.path(), &[]);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = dirs();
    let wasm = synthetic();
    for args in [
        vec!["run", "--help"],
        vec!["inspect", wasm.to_str().unwrap()],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sparkhost"))
            .args(&args)
            .env("SPARKHOST_CACHE_DIR", d.cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before anything is written, like `| head -0`.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let quiet = out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE);
        assert!(quiet, "{args:?}: {:?} {err}", out.status);
    }
}
