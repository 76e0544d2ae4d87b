//! The HTTP client for everything that is not timed: model discovery,
//! health and readiness probes. It is `reqwest` (hyper underneath, rustls
//! for https://) with the timed path's headers and TLS trust; timed requests
//! go through [`super::h1`], which reads each socket in the request's own
//! task with kernel receive stamps, something no general client offers.

use std::time::Duration;

use bytes::Bytes;

use super::access::Access;
use super::h1::Endpoint;
use crate::limits::MAX_UNTIMED_BODY;

#[derive(Debug, thiserror::Error)]
pub enum UntimedError {
    #[error("building the HTTP client: {0}")]
    Build(String),
    #[error("GET {url}: {why}")]
    Get { url: String, why: String },
    /// Nothing listens there (the connection was refused).
    #[error("GET {url}: {why}")]
    Refused { url: String, why: String },
}

/// One endpoint's untimed client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Untimed {
    http: reqwest::Client,
    root: String,
}

impl Untimed {
    pub fn new(
        endpoint: &Endpoint,
        access: &Access,
        timeout: Duration,
    ) -> Result<Self, UntimedError> {
        let build = |e: &dyn std::error::Error| UntimedError::Build(error_chain(e));
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in access.headers() {
            let name =
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| build(&e))?;
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|e| build(&e))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut b = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            // The timed path connects directly; a proxy from the environment
            // would make the two clients talk to different servers.
            .no_proxy()
            // A redirect would carry the Authorization header elsewhere, and
            // discovery must report the URL that answered.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(config) = endpoint.tls_config() {
            // reqwest takes the config by value (an `Any` it downcasts).
            let config: rustls::ClientConfig = config.as_ref().clone();
            b = b.use_preconfigured_tls(config);
        }
        Ok(Untimed {
            http: b.build().map_err(|e| build(&e))?,
            root: endpoint.root(),
        })
    }

    /// The URL `path` is requested at.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    /// GET `path` under the API root: status and body (at most
    /// [`MAX_UNTIMED_BODY`] bytes).
    pub async fn get(&self, path: &str) -> Result<(u16, Bytes), UntimedError> {
        let url = self.url(path);
        let fail = |why: String| UntimedError::Get {
            url: url.clone(),
            why,
        };
        let mut resp = self.http.get(&url).send().await.map_err(|e| {
            if refused(&e) {
                UntimedError::Refused {
                    url: url.clone(),
                    why: error_chain(&e),
                }
            } else {
                fail(error_chain(&e))
            }
        })?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(error_chain(&e)))? {
            if body.len() + chunk.len() > MAX_UNTIMED_BODY {
                return Err(fail(format!(
                    "the body is longer than {MAX_UNTIMED_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body.into()))
    }
}

/// The connection was refused: an `io::Error` of that kind down the chain.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// reqwest's own message is "error sending request"; the cause (refused,
/// certificate unknown, timed out) is further down the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}
