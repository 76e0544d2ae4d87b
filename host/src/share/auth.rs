//! Registry credentials: `SPARKHOST_REGISTRY_USERNAME` and
//! `SPARKHOST_REGISTRY_PASSWORD`, else the Docker config file
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), else
//! anonymous.
//!
//! Credentials are read, never written, and never reach a message or a log:
//! [`Credentials`] prints as where it came from, not what it holds. Docker
//! credential helpers (`credHelpers`, `credsStore`) run programs sparkhost
//! does not know; a registry that needs one is refused with the two ways that
//! work instead of being tried anonymously behind the user's back.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

pub const USERNAME_ENV: &str = "SPARKHOST_REGISTRY_USERNAME";
pub const PASSWORD_ENV: &str = "SPARKHOST_REGISTRY_PASSWORD";
/// A Docker config is a few kilobytes; a bigger file is not one.
const MAX_DOCKER_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{set} is set but {unset} is not: set both, or neither")]
    HalfSet {
        set: &'static str,
        unset: &'static str,
    },
    #[error("cannot read Docker config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{path} says to get the credentials for {registry} from `docker-credential-{helper}`, which sparkhost does not run; set {USERNAME_ENV} and {PASSWORD_ENV}, or put a base64 `auth` entry for {registry} in the file"
    )]
    Helper {
        path: PathBuf,
        registry: String,
        helper: String,
    },
}

/// Where the credentials for one registry came from, and what they are.
#[derive(Clone)]
pub struct Credentials {
    pub source: Source,
    username: String,
    password: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Anonymous,
    Environment,
    DockerConfig(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Anonymous => write!(f, "no credentials"),
            Source::Environment => write!(f, "credentials from {USERNAME_ENV}/{PASSWORD_ENV}"),
            Source::DockerConfig(p) => write!(f, "credentials from {}", p.display()),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret, whoever formats this.
        write!(f, "Credentials({})", self.source)
    }
}

impl Credentials {
    pub fn anonymous() -> Self {
        Credentials {
            source: Source::Anonymous,
            username: String::new(),
            password: String::new(),
        }
    }

    pub fn to_auth(&self) -> oci_client::secrets::RegistryAuth {
        match self.source {
            Source::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            _ => oci_client::secrets::RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ),
        }
    }

    /// Removes the secret from `text` (a registry's error body may echo it).
    pub fn redact(&self, text: &str) -> String {
        if self.password.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.password, "<redacted>")
        }
    }
}

/// The credentials for `registry` (`host[:port]`), looked up in the process
/// environment and the user's Docker config.
pub fn for_registry(registry: &str) -> Result<Credentials, AuthError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    from_sources(
        registry,
        env(USERNAME_ENV),
        env(PASSWORD_ENV),
        docker_config_path().as_deref(),
    )
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker").join("config.json"))
}

fn from_sources(
    registry: &str,
    user: Option<String>,
    pass: Option<String>,
    docker_config: Option<&Path>,
) -> Result<Credentials, AuthError> {
    match (user, pass) {
        (Some(username), Some(password)) => {
            return Ok(Credentials {
                source: Source::Environment,
                username,
                password,
            });
        }
        (Some(_), None) => {
            return Err(AuthError::HalfSet {
                set: USERNAME_ENV,
                unset: PASSWORD_ENV,
            });
        }
        (None, Some(_)) => {
            return Err(AuthError::HalfSet {
                set: PASSWORD_ENV,
                unset: USERNAME_ENV,
            });
        }
        (None, None) => {}
    }
    match docker_config {
        Some(p) if p.is_file() => from_docker_config(registry, p),
        _ => Ok(Credentials::anonymous()),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

fn from_docker_config(registry: &str, path: &Path) -> Result<Credentials, AuthError> {
    let cfg_err = |message: String| AuthError::Config {
        path: path.to_owned(),
        message,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| cfg_err(e.to_string()))?
        .len();
    if len > MAX_DOCKER_CONFIG_BYTES {
        return Err(cfg_err(format!(
            "{len} bytes is more than the {MAX_DOCKER_CONFIG_BYTES} a Docker config may have"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| cfg_err(e.to_string()))?;
    // serde_json's message names a line and column, never the value.
    let cfg: DockerConfig =
        serde_json::from_str(&text).map_err(|e| cfg_err(format!("not a Docker config: {e}")))?;
    let helper = |helper: &str| AuthError::Helper {
        path: path.to_owned(),
        registry: registry.to_owned(),
        helper: helper.to_owned(),
    };
    if let Some(h) = cfg.cred_helpers.get(registry) {
        return Err(helper(h));
    }
    // Docker writes keys as `host[:port]`, older versions as URLs.
    let entry = cfg.auths.iter().find(|(k, _)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k == registry
            || k.strip_suffix("/v1/")
                .or(k.strip_suffix("/v2/"))
                .or(k.strip_suffix('/'))
                == Some(registry)
    });
    match entry {
        Some((_, a)) => {
            if let Some(b64) = &a.auth {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| cfg_err(format!("the `auth` of {registry} is not base64")))?;
                let raw = String::from_utf8(raw)
                    .map_err(|_| cfg_err(format!("the `auth` of {registry} is not UTF-8")))?;
                let (u, p) = raw.split_once(':').ok_or_else(|| {
                    cfg_err(format!(
                        "the `auth` of {registry} is not base64 of user:password"
                    ))
                })?;
                return Ok(Credentials {
                    source: Source::DockerConfig(path.to_owned()),
                    username: u.to_owned(),
                    password: p.to_owned(),
                });
            }
            if let (Some(u), Some(p)) = (&a.username, &a.password) {
                return Ok(Credentials {
                    source: Source::DockerConfig(path.to_owned()),
                    username: u.clone(),
                    password: p.clone(),
                });
            }
            // An empty entry is what `docker login` leaves when a store
            // holds the secret.
            match &cfg.creds_store {
                Some(store) => Err(helper(store)),
                None => Err(cfg_err(format!(
                    "the entry for {registry} has neither `auth` nor username and password"
                ))),
            }
        }
        None => Ok(Credentials::anonymous()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn the_environment_wins_and_must_be_whole() {
        let c = from_sources("h:1", Some("u".into()), Some("s3cret".into()), None).unwrap();
        assert_eq!(c.source, Source::Environment);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.redact("bad s3cret here"), "bad <redacted> here");
        let e = from_sources("h:1", Some("u".into()), None, None).unwrap_err();
        assert!(e.to_string().contains(PASSWORD_ENV), "{e}");
        let e = from_sources("h:1", None, Some("p".into()), None).unwrap_err();
        assert!(e.to_string().contains(USERNAME_ENV), "{e}");
        assert_eq!(
            from_sources("h:1", None, None, None).unwrap().source,
            Source::Anonymous
        );
    }

    #[test]
    fn docker_config_auth_entries_decode() {
        let f = config(&format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}, "https://other.io/v1/": {{"auth": "{}"}}}}}}"#,
            b64("alice:pa:ss"),
            b64("bob:x")
        ));
        let c = from_sources("127.0.0.1:5000", None, None, Some(f.path())).unwrap();
        assert_eq!(c.source, Source::DockerConfig(f.path().to_owned()));
        match c.to_auth() {
            oci_client::secrets::RegistryAuth::Basic(u, p) => {
                assert_eq!((u.as_str(), p.as_str()), ("alice", "pa:ss"))
            }
            _ => panic!("basic auth expected"),
        }
        let c = from_sources("other.io", None, None, Some(f.path())).unwrap();
        assert!(
            matches!(c.to_auth(), oci_client::secrets::RegistryAuth::Basic(u, _) if u == "bob")
        );
        let c = from_sources("unlisted:1", None, None, Some(f.path())).unwrap();
        assert_eq!(c.source, Source::Anonymous);
    }

    #[test]
    fn helpers_and_broken_entries_are_refused_clearly() {
        let f = config(
            r#"{"credHelpers": {"ghcr.io": "gh"}, "credsStore": "desktop", "auths": {"quay.io": {}}}"#,
        );
        let e = from_sources("ghcr.io", None, None, Some(f.path()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker-credential-gh") && e.contains(USERNAME_ENV),
            "{e}"
        );
        let e = from_sources("quay.io", None, None, Some(f.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker-credential-desktop"), "{e}");
        assert_eq!(
            from_sources("docker.io", None, None, Some(f.path()))
                .unwrap()
                .source,
            Source::Anonymous
        );

        let f = config(r#"{"auths": {"h": {"auth": "!!!"}}}"#);
        let e = from_sources("h", None, None, Some(f.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not base64"), "{e}");
        let f = config("not json");
        let e = from_sources("h", None, None, Some(f.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Docker config"), "{e}");
    }
}
