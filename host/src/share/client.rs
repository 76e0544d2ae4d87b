//! The OCI registry client (`oci-client`) set up for one reference:
//! protocol, timeouts and credentials, and its errors said in words that
//! name the registry, what was being done, and what to try.

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::ShareError;
use super::auth::{self, Credentials, Source};
use super::reference::{OciRef, check_plain_http};
use crate::limits::{REGISTRY_CA_MAX_BYTES, REGISTRY_CONNECT_TIMEOUT, REGISTRY_READ_TIMEOUT};

/// A PEM file of extra roots a registry's TLS certificate may chain to (a
/// private registry's own CA), for every command that talks to registries.
/// The bundled Mozilla roots are trusted as well.
pub const CA_CERT_ENV: &str = "SPARKHOST_REGISTRY_CA_CERT";

/// The certificates of [`CA_CERT_ENV`], one per PEM block; none when unset.
fn extra_roots() -> Result<Vec<Certificate>, ShareError> {
    let Some(path) = std::env::var_os(CA_CERT_ENV) else {
        return Ok(Vec::new());
    };
    let path = std::path::PathBuf::from(path);
    let bad =
        |why: String| ShareError::Registry(format!("{CA_CERT_ENV}={}: {why}", path.display()));
    let len = std::fs::metadata(&path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > REGISTRY_CA_MAX_BYTES {
        return Err(bad(format!(
            "{len} bytes, more than the {REGISTRY_CA_MAX_BYTES} a CA bundle may have"
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    const END: &str = "-----END CERTIFICATE-----";
    let certs: Vec<Certificate> = text
        .split_inclusive(END)
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----") && b.ends_with(END))
        .map(|b| Certificate {
            encoding: CertificateEncoding::Pem,
            data: format!("{}\n", b.trim()).into_bytes(),
        })
        .collect();
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// One registry, one repository, one set of credentials.
pub struct Registry {
    pub client: oci_client::Client,
    pub reference: OciRef,
    pub auth: oci_client::secrets::RegistryAuth,
    creds: Credentials,
    plain_http: bool,
}

impl Registry {
    pub fn new(reference: &OciRef, plain_http: bool) -> Result<Self, ShareError> {
        check_plain_http(reference, plain_http)?;
        let creds = auth::for_registry(&reference.registry)?;
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(REGISTRY_CONNECT_TIMEOUT),
            read_timeout: Some(REGISTRY_READ_TIMEOUT),
            // A Wasm artifact is one manifest: there is no platform to pick.
            platform_resolver: None,
            extra_root_certificates: extra_roots()?,
            ..Default::default()
        };
        Ok(Registry {
            client: oci_client::Client::new(config),
            reference: reference.clone(),
            auth: creds.to_auth(),
            creds,
            plain_http,
        })
    }

    /// `e`, from `doing` (e.g. "pulling the manifest of"), in words; any
    /// echo of the secret is removed.
    pub fn explain(&self, doing: &str, e: OciDistributionError) -> ShareError {
        use OciDistributionError as E;
        let at = &self.reference;
        let creds_hint = match self.creds.source {
            Source::Anonymous => format!(
                "; sparkhost sent no credentials: set {} and {}, or add the registry to your Docker config",
                auth::USERNAME_ENV,
                auth::PASSWORD_ENV
            ),
            _ => format!(" (it refused the {})", self.creds.source),
        };
        let msg = match &e {
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
                format!("{doing} {at}: the registry answered 401 Unauthorized{creds_hint}")
            }
            E::RegistryError { envelope, .. } => {
                let codes: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|err| {
                        let what = match err.code {
                            OciErrorCode::ManifestUnknown => "no such tag or manifest (404)",
                            OciErrorCode::NameUnknown => "no such repository (404)",
                            OciErrorCode::BlobUnknown => "no such blob (404)",
                            OciErrorCode::Unauthorized => "401 Unauthorized",
                            OciErrorCode::Denied => "access denied",
                            _ => "refused",
                        };
                        format!("{what}: {:?} {}", err.code, err.message)
                    })
                    .collect();
                let unauthorized = envelope
                    .errors
                    .iter()
                    .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
                format!(
                    "{doing} {at}: the registry says {}{}",
                    codes.join("; "),
                    if unauthorized {
                        creds_hint.as_str()
                    } else {
                        ""
                    }
                )
            }
            E::ServerError { code, message, .. } => {
                let mut m: String = message.chars().take(300).collect();
                if m.trim().is_empty() {
                    m = "no message".into();
                }
                let what = match code {
                    404 => "404 Not Found",
                    401 => "401 Unauthorized",
                    _ => "an error",
                };
                format!(
                    "{doing} {at}: the registry answered {what} (HTTP {code}): {}{}",
                    crate::terminal::safe(m.trim()),
                    if *code == 401 {
                        creds_hint.as_str()
                    } else {
                        ""
                    }
                )
            }
            E::RequestError(re) => {
                let mut chain = re.to_string();
                let mut src = std::error::Error::source(re);
                while let Some(s) = src {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    src = s.source();
                }
                let tls = chain.to_ascii_lowercase().contains("certificate");
                let hint = if tls {
                    format!(
                        "; if the registry's certificate comes from a private CA, set {CA_CERT_ENV} to that CA's PEM file"
                    )
                } else if re.is_connect() {
                    "; is the registry running and listening there?".into()
                } else if re.is_timeout() {
                    "; the registry did not answer in time".into()
                } else {
                    String::new()
                };
                let plain = if !self.plain_http && self.reference.is_loopback() {
                    " (a plain-HTTP loopback registry needs --plain-http)"
                } else {
                    ""
                };
                format!(
                    "{doing} {at}: cannot reach registry {}: {chain}{hint}{plain}",
                    self.reference.registry
                )
            }
            E::DigestError(d) => {
                format!("{doing} {at}: what the registry sent does not match its digest: {d}")
            }
            other => format!("{doing} {at}: {other}"),
        };
        ShareError::Registry(self.creds.redact(&msg))
    }
}
