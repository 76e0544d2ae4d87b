//! What an endpoint needs besides its URL: TLS trust and extra request
//! headers (an API key among them), validated once and shared by the timed
//! client ([`super::h1`]) and the untimed one ([`super::untimed`]), so both
//! reach the server the same way.
//!
//! Header values are secrets as far as sparkhost knows (`x-api-key`,
//! cookies, tenant tokens): nothing here prints them, error messages name
//! the header only, and [`redact_argv`] keeps them out of run documents.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::limits::{MAX_HEADER_FLAGS, MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_BYTES};

/// Stands in for every secret in documents and messages.
pub const REDACTED: &str = "<redacted>";

/// Headers the clients write themselves: a second copy would make the
/// request ambiguous (or, for the framing ones, unreadable).
const RESERVED: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "accept",
    "te",
    "upgrade",
    "expect",
];

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("--header {shown:?}: {why}")]
    Header { shown: String, why: String },
    #[error("--header is given {given} times; at most {MAX_HEADER_FLAGS} are allowed")]
    TooManyHeaders { given: usize },
    #[error("--api-key / OPENAI_API_KEY: {0}")]
    ApiKey(String),
    #[error(
        "--api-key and --header 'Authorization: …' both set the Authorization header; give one"
    )]
    TwoAuthorizations,
    #[error("--ca-cert {path}: {why}")]
    CaCert { path: String, why: String },
    #[error("TLS set-up: {0}")]
    Tls(#[from] rustls::Error),
}

/// How https:// endpoints are trusted.
#[derive(Debug, Clone, Default)]
pub struct TlsTrust {
    /// PEM certificates trusted in addition to the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// Accept any certificate: for self-signed test servers only.
    pub insecure: bool,
}

/// Extra headers and TLS trust for one endpoint.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Lower-case name and value, in flag order.
    headers: Vec<(String, String)>,
    pub tls: TlsTrust,
}

impl Access {
    /// Validates `--api-key` (sent as `Authorization: Bearer`) and each
    /// `--header 'Name: value'`.
    pub fn new(
        api_key: Option<&str>,
        headers: &[String],
        tls: TlsTrust,
    ) -> Result<Self, AccessError> {
        if headers.len() > MAX_HEADER_FLAGS {
            return Err(AccessError::TooManyHeaders {
                given: headers.len(),
            });
        }
        let mut out = Vec::with_capacity(headers.len() + 1);
        for h in headers {
            out.push(parse_header(h)?);
        }
        if let Some(key) = api_key {
            // An empty OPENAI_API_KEY is how shells unset it: no header.
            if !key.is_empty() {
                check_value(key).map_err(AccessError::ApiKey)?;
                if out.iter().any(|(n, _)| n == "authorization") {
                    return Err(AccessError::TwoAuthorizations);
                }
                out.push(("authorization".into(), format!("Bearer {key}")));
            }
        }
        if let Some(p) = &tls.ca_cert {
            // Read now, so a bad file is a flag error even for http://.
            read_pem(p)?;
        }
        Ok(Access { headers: out, tls })
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The headers as request-head lines, each ending in CRLF.
    pub fn head_lines(&self) -> String {
        self.headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect()
    }

    /// The rustls configuration both clients use for https://: the system's
    /// roots plus `--ca-cert`, or no verification with `--insecure`; HTTP/1.1
    /// only, since the timed path frames HTTP/1.1.
    pub fn tls_config(&self) -> Result<Arc<ClientConfig>, AccessError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let mut config = if self.tls.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            // Unreadable system stores are not fatal: --ca-cert may be all
            // that is needed, and a handshake without a root says so.
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::debug!("system CA certificates: {e}");
            }
            roots.add_parsable_certificates(native.certs);
            if let Some(p) = &self.tls.ca_cert {
                for c in read_pem(p)? {
                    roots.add(c).map_err(|e| AccessError::CaCert {
                        path: p.display().to_string(),
                        why: e.to_string(),
                    })?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificates of a PEM file; at least one.
fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, AccessError> {
    let bad = |why: String| AccessError::CaCert {
        path: path.display().to_string(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

/// `Name: value` → lower-case name and trimmed value. Messages show the name
/// only, never the value.
fn parse_header(h: &str) -> Result<(String, String), AccessError> {
    let Some((name, value)) = h.split_once(':') else {
        return Err(AccessError::Header {
            shown: shown(h),
            why: "expected 'Name: value'".into(),
        });
    };
    let name = name.trim();
    let err = |why: String| AccessError::Header {
        shown: format!("{name}: {REDACTED}"),
        why,
    };
    if name.is_empty() || name.len() > MAX_HEADER_NAME_BYTES {
        return Err(err(format!(
            "the name must be 1..={MAX_HEADER_NAME_BYTES} bytes"
        )));
    }
    if !name.bytes().all(is_tchar) {
        return Err(err(
            "the name must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)".into(),
        ));
    }
    let name = name.to_ascii_lowercase();
    if RESERVED.contains(&name.as_str()) {
        return Err(err(format!(
            "sparkhost writes {name} itself; reserved: {}",
            RESERVED.join(", ")
        )));
    }
    let value = value.trim_matches([' ', '\t']);
    check_value(value).map_err(err)?;
    Ok((name, value.to_owned()))
}

/// A value may hold visible ASCII, spaces and tabs: CR or LF would end the
/// header early and let a value write headers of its own.
fn check_value(v: &str) -> Result<(), String> {
    if v.len() > MAX_HEADER_VALUE_BYTES {
        return Err(format!(
            "the value is {} bytes; at most {MAX_HEADER_VALUE_BYTES} are allowed",
            v.len()
        ));
    }
    if v.contains(['\r', '\n']) {
        return Err("the value must not contain CR or LF".into());
    }
    if !v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return Err("the value may hold only visible ASCII, spaces and tabs".into());
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header flag as it may be shown: its name, if it has one, and no value.
fn shown(h: &str) -> String {
    match h.split_once(':') {
        Some((n, _)) => format!("{}: {REDACTED}", n.trim()),
        None if h.len() <= 64 && h.bytes().all(is_tchar) => h.to_owned(),
        None => REDACTED.into(),
    }
}

/// The command line with `--api-key` and `--header` values replaced, as it
/// goes into `config.json` and `manifest.json`.
pub fn redact_argv(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut next_is: Option<&str> = None;
    for a in args {
        match next_is.take() {
            Some("--api-key") => out.push(REDACTED.to_owned()),
            Some(_) => out.push(shown(&a)),
            None if a == "--api-key" || a == "--header" => {
                next_is = Some(if a == "--api-key" {
                    "--api-key"
                } else {
                    "--header"
                });
                out.push(a);
            }
            None if a.starts_with("--api-key=") => out.push(format!("--api-key={REDACTED}")),
            None if a.starts_with("--header=") => {
                out.push(format!("--header={}", shown(&a["--header=".len()..])))
            }
            None => out.push(a),
        }
    }
    out
}

/// `--insecure`: every certificate is accepted, while the handshake's
/// signatures are still checked, so the session is encrypted with whoever
/// holds the key of the certificate shown.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(h: &[&str]) -> Result<Access, AccessError> {
        let h: Vec<String> = h.iter().map(|s| s.to_string()).collect();
        Access::new(None, &h, TlsTrust::default())
    }

    #[test]
    fn headers_are_validated_and_errors_never_show_the_value() {
        let a = headers(&["X-Team:  blue ", "x-trace: a\tb"]).unwrap();
        assert_eq!(a.head_lines(), "x-team: blue\r\nx-trace: a\tb\r\n");
        for (bad, says) in [
            ("no colon", "expected 'Name: value'"),
            ("Bad Name: s3cret", "HTTP token"),
            (": s3cret", "1..=256"),
            ("x-a: s3cret\r\nx-b: 1", "CR or LF"),
            ("x-a: s3cret\u{7f}", "visible ASCII"),
            ("Content-Length: 0", "reserved"),
            ("Host: s3cret", "reserved"),
        ] {
            let e = headers(&[bad]).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?} → {e}");
            assert!(e.starts_with("--header"), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let long = format!("x-a: {}", "v".repeat(MAX_HEADER_VALUE_BYTES + 1));
        assert!(headers(&[&long]).unwrap_err().to_string().contains("8192"));
        let many: Vec<String> = (0..=MAX_HEADER_FLAGS)
            .map(|i| format!("x-{i}: v"))
            .collect();
        let e = Access::new(None, &many, TlsTrust::default()).unwrap_err();
        assert!(e.to_string().contains("at most 32"), "{e}");
    }

    #[test]
    fn the_api_key_is_a_bearer_token_and_conflicts_with_an_authorization_header() {
        let a = Access::new(Some("k-1"), &[], TlsTrust::default()).unwrap();
        assert_eq!(a.head_lines(), "authorization: Bearer k-1\r\n");
        assert!(
            Access::new(Some(""), &[], TlsTrust::default())
                .unwrap()
                .headers()
                .is_empty()
        );
        let e = Access::new(Some("k\n"), &[], TlsTrust::default()).unwrap_err();
        assert!(e.to_string().contains("CR or LF"), "{e}");
        let e = Access::new(
            Some("k"),
            &["Authorization: Basic x".into()],
            TlsTrust::default(),
        )
        .unwrap_err();
        assert!(matches!(e, AccessError::TwoAuthorizations));
    }

    #[test]
    fn argv_loses_every_secret() {
        let argv = [
            "sparkhost",
            "run",
            "--api-key",
            "sk-1",
            "--api-key=sk-2",
            "--header",
            "X-Team: tok-3",
            "--header=Cookie: tok-4",
            "--header",
            "garbled tok-5",
            "--endpoint",
            "http://h:1",
        ]
        .map(String::from);
        let out = redact_argv(argv).join(" ");
        for secret in ["sk-1", "sk-2", "tok-3", "tok-4", "tok-5"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("X-Team: <redacted>") && out.contains("--endpoint http://h:1"));
    }

    #[test]
    fn a_ca_cert_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not pem").unwrap();
        let trust = TlsTrust {
            ca_cert: Some(p),
            insecure: false,
        };
        let e = Access::new(None, &[], trust).unwrap_err().to_string();
        assert!(e.starts_with("--ca-cert") && e.contains("no PEM"), "{e}");
    }
}
