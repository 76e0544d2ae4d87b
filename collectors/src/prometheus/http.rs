//! Scraping `/metrics` over plain HTTP/1.1 with std's `TcpStream`: one GET,
//! `Connection: close`, content-length or chunked bodies, one deadline for the
//! whole exchange. Metrics ports on this stack are loopback HTTP; TLS is not
//! supported and says so.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Exposition, ParseError, parse_lenient};
use crate::common::{round3, utc_now};

const MAX_BODY: usize = 64 << 20;

/// One scrape as recorded: when, whether it worked, and what came back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scrape {
    pub url: String,
    pub timestamp_utc: String,
    pub success: bool,
    pub error: Option<String>,
    pub status: Option<u16>,
    pub elapsed_ms: f64,
    #[serde(skip)]
    pub body: Option<String>,
    #[serde(skip)]
    pub expo: Option<Exposition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parse_errors: Vec<ParseError>,
}

struct Url {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url}: https is not supported (metrics ports are plain HTTP)"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: expected an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let end = r.find(']').ok_or_else(|| format!("{url}: bad IPv6 host"))?;
        let port = r[end + 1..].strip_prefix(':');
        (r[..end].to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
        None => 80,
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok(Url {
        host,
        port,
        path: path.to_string(),
    })
}

/// GETs `url`; returns the status and body. Non-2xx statuses are returned, not errors.
pub fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let u = parse_url(url)?;
    let deadline = Instant::now() + timeout;
    let addrs: Vec<_> = (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map_err(|e| format!("{url}: resolve {}: {e}", u.host))?
        .collect();
    let mut last = format!("{url}: no address for {}", u.host);
    let mut stream = None;
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = format!("{url}: timed out connecting");
            break;
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{url}: connect {a}: {e}"),
        }
    }
    let mut s = stream.ok_or(last)?;
    let host_hdr = if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host_hdr}\r\nUser-Agent: sparkhost-collectors\r\nAccept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        u.path
    );
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("{url}: timed out after {timeout:?}")
        } else {
            format!("{url}: {e}")
        }
    };
    s.set_write_timeout(Some(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    ))
    .map_err(io)?;
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{url}: timed out after {timeout:?}"));
        }
        s.set_read_timeout(Some(left)).map_err(io)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_BODY {
                    return Err(format!(
                        "{url}: response larger than {} MiB",
                        MAX_BODY >> 20
                    ));
                }
                if let Some(done) = complete_response(&raw) {
                    raw.truncate(done);
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    parse_response(&raw).map_err(|e| format!("{url}: {e}"))
}

fn header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Where the body starts, the headers (names lowercased) and the status.
type Head = (usize, Vec<(String, String)>, u16);

fn headers(raw: &[u8]) -> Option<Head> {
    let end = header_end(raw)?;
    let text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let hs = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    Some((end, hs, status))
}

/// Length of a complete response in `raw`, when we can tell before EOF (some
/// servers ignore `Connection: close` and keep the socket open).
fn complete_response(raw: &[u8]) -> Option<usize> {
    let (end, hs, _) = headers(raw)?;
    let get = |k: &str| hs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let n = dechunk(&raw[end..]).ok()?.1;
        return Some(end + n);
    }
    let len: usize = get("content-length")?.parse().ok()?;
    (raw.len() >= end + len).then_some(end + len)
}

/// Decodes a chunked body; returns the data and how many raw bytes it used.
fn dechunk(mut b: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let start = b.len();
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_txt = String::from_utf8_lossy(&b[..nl]);
        let size_hex = size_txt.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        b = &b[nl + 2..];
        if size == 0 {
            // Trailers, then the final CRLF.
            loop {
                let nl = b
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .ok_or("truncated trailer")?;
                b = &b[nl + 2..];
                if nl == 0 {
                    return Ok((out, start - b.len()));
                }
            }
        }
        if b.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let (end, hs, status) = headers(raw).ok_or("malformed HTTP response (no header end)")?;
    let get = |k: &str| hs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let body =
        if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            dechunk(&raw[end..])?.0
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if raw.len() < end + len {
                return Err(format!(
                    "body truncated: {} of {len} bytes",
                    raw.len() - end
                ));
            }
            raw[end..end + len].to_vec()
        } else {
            raw[end..].to_vec()
        };
    if get("content-encoding").is_some_and(|v| !v.eq_ignore_ascii_case("identity")) {
        return Err(format!(
            "unsupported content-encoding {:?}",
            get("content-encoding")
        ));
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Scrapes and parses; never fails, the result says what went wrong.
pub fn scrape(url: &str, timeout: Duration) -> Scrape {
    let t0 = Instant::now();
    let mut out = Scrape {
        url: url.to_string(),
        timestamp_utc: utc_now(),
        ..Default::default()
    };
    match get(url, timeout) {
        Ok((status, body)) => {
            out.status = Some(status);
            if (200..300).contains(&status) {
                let (expo, errors) = parse_lenient(&body);
                out.success = true;
                out.parse_errors = errors;
                out.expo = Some(expo);
            } else {
                out.error = Some(format!("HTTP {status}"));
            }
            out.body = Some(body);
        }
        Err(e) => out.error = Some(e),
    }
    out.elapsed_ms = round3(t0.elapsed().as_secs_f64() * 1000.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// Serves `responses` one per connection, then stops.
    fn serve(responses: Vec<Vec<u8>>) -> (String, thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = thread::spawn(move || {
            for r in responses {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                s.write_all(&r).unwrap();
            }
        });
        (format!("http://{addr}/metrics"), h)
    }

    #[test]
    fn content_length_chunked_and_eof_bodies() {
        let body = "# TYPE a counter\na 1\n";
        let cl = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n# TYP\r\n10\r\nE a counter\na 1\n\r\n0\r\n\r\n".to_string();
        let eof = format!("HTTP/1.0 200 OK\r\n\r\n{body}");
        let (url, h) = serve(vec![cl.into(), chunked.into(), eof.into()]);
        for _ in 0..3 {
            let (status, got) = get(&url, Duration::from_secs(5)).unwrap();
            assert_eq!(status, 200);
            assert_eq!(got, body);
        }
        h.join().unwrap();
    }

    #[test]
    fn keep_alive_server_does_not_stall_until_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", l.local_addr().unwrap());
        let h = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\na 1\n")
                .unwrap();
            thread::sleep(Duration::from_millis(1500)); // keeps the socket open
        });
        let t = Instant::now();
        let s = scrape(&url, Duration::from_secs(10));
        assert!(s.success, "{:?}", s.error);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(s.expo.unwrap().len(), 1);
        h.join().unwrap();
    }

    #[test]
    fn refused_and_http_errors_are_reasons() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", l.local_addr().unwrap());
        drop(l);
        let s = scrape(&url, Duration::from_secs(2));
        assert!(!s.success);
        assert!(s.error.unwrap().contains("connect"));
        let (url, h) = serve(vec![
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ]);
        let s = scrape(&url, Duration::from_secs(2));
        assert_eq!((s.success, s.status), (false, Some(404)));
        h.join().unwrap();
        assert!(
            scrape("https://x/metrics", Duration::from_secs(1))
                .error
                .unwrap()
                .contains("https")
        );
    }

    #[test]
    fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metrics", l.local_addr().unwrap());
        let t = Instant::now();
        let s = scrape(&url, Duration::from_millis(300));
        assert!(s.error.unwrap().contains("timed out"));
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(l);
    }

    #[test]
    fn url_forms() {
        let u = parse_url("http://127.0.0.1:6880/metrics").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 6880, "/metrics")
        );
        let u = parse_url("http://[::1]:8081").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8081, "/")
        );
        assert_eq!(parse_url("http://localhost/x?y=1").unwrap().port, 80);
        assert!(parse_url("ftp://x").is_err());
    }
}
