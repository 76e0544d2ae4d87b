//! `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`: parsed and checked before
//! anything is sent, and the rule that plain HTTP is for loopback only.
//!
//! The host is always written out: a registry is never guessed (no
//! `docker.io` default), so a reference means the same on every machine.

use std::fmt;
use std::net::IpAddr;

/// The scheme that marks a component argument as a registry reference.
pub const SCHEME: &str = "oci://";

/// Longest reference accepted (the distribution spec's name limit is 255,
/// plus host, tag and digest).
const MAX_REFERENCE_BYTES: usize = 512;
const MAX_TAG_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad OCI reference {given:?}: {why} (expected oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX])")]
pub struct ReferenceError {
    pub given: String,
    pub why: String,
}

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// `host[:port]`, as written (brackets kept for an IPv6 address).
    pub registry: String,
    pub repository: String,
    /// `None` when only a digest was given; `latest` when neither was.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

/// Whether `arg` is a registry reference rather than a file path.
pub fn is_oci(arg: &str) -> bool {
    arg.starts_with(SCHEME)
}

impl OciRef {
    pub fn parse(given: &str) -> Result<OciRef, ReferenceError> {
        let err = |why: &str| ReferenceError {
            given: given.to_owned(),
            why: why.to_owned(),
        };
        if given.len() > MAX_REFERENCE_BYTES {
            return Err(err(&format!("longer than {MAX_REFERENCE_BYTES} bytes")));
        }
        let rest = given
            .strip_prefix(SCHEME)
            .ok_or_else(|| err("it does not start with oci://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| err("no repository after the host"))?;
        check_registry(registry).map_err(|w| err(&w))?;
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => {
                check_digest(d).map_err(|w| err(&w))?;
                (p, Some(d.to_owned()))
            }
            None => (path, None),
        };
        // A tag follows the last ':' after the last '/'.
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&path[..at], Some(path[at + 1..].to_owned()))
            }
            None => (path, None),
        };
        check_repository(repository).map_err(|w| err(&w))?;
        if let Some(t) = &tag {
            check_tag(t).map_err(|w| err(&w))?;
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(OciRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// The host without its port (and without IPv6 brackets).
    pub fn host(&self) -> &str {
        let r = self.registry.as_str();
        if let Some(inner) = r.strip_prefix('[') {
            return inner.split_once(']').map_or(inner, |(h, _)| h);
        }
        r.rsplit_once(':').map_or(r, |(h, _)| h)
    }

    /// 127.0.0.0/8, ::1 or `localhost`: the only registries plain HTTP may reach.
    pub fn is_loopback(&self) -> bool {
        let h = self.host();
        h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The same repository at `digest`: the reference that fetches exactly
    /// this manifest again, whatever the tag points to later.
    pub fn pinned(&self, digest: &str) -> OciRef {
        OciRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_owned()),
        }
    }

    /// The reference in oci-client's terms.
    pub fn client_ref(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.clone(),
            ),
            (None, tag) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Refuses plain HTTP to anything but a loopback registry: credentials and
/// components would cross the network unprotected.
pub fn check_plain_http(r: &OciRef, plain_http: bool) -> Result<(), ReferenceError> {
    if plain_http && !r.is_loopback() {
        return Err(ReferenceError {
            given: r.to_string(),
            why: format!(
                "--plain-http is only allowed for a loopback registry (127.0.0.1, ::1, localhost), not {}; use HTTPS",
                r.host()
            ),
        });
    }
    Ok(())
}

fn check_registry(r: &str) -> Result<(), String> {
    if r.is_empty() {
        return Err("no registry host".into());
    }
    let (host, port) = if let Some(inner) = r.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or("an IPv6 host needs its closing ']'")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{h:?} is not an IPv6 address"));
        }
        match after {
            "" => (h, None),
            p => (
                h,
                Some(p.strip_prefix(':').ok_or("expected :PORT after ']'")?),
            ),
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    if !r.starts_with('[')
        && (host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return Err(format!(
            "registry host {host:?} may hold only letters, digits, '.' and '-'"
        ));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("registry port {p:?} is not 1-65535"));
    }
    Ok(())
}

/// The distribution spec's name grammar: lowercase path components
/// separated by '/', each `[a-z0-9]+` joined by '.', '_', '__' or '-'s.
fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("no repository name".into());
    }
    if repo.len() > 255 {
        return Err("the repository name is longer than 255 bytes".into());
    }
    for part in repo.split('/') {
        let ok = !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && part.as_bytes()[0].is_ascii_alphanumeric()
            && part.as_bytes()[part.len() - 1].is_ascii_alphanumeric();
        if !ok {
            return Err(format!(
                "repository component {part:?} must be lowercase letters and digits, joined by '.', '_' or '-'"
            ));
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_BYTES
        && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.as_bytes()[0] == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1-{MAX_TAG_BYTES} of letters, digits, '_', '.', '-' (not starting with '.' or '-')"
        ))
    }
}

/// `sha256:` and 64 lowercase hex digits, the only digest sparkhost verifies.
pub fn check_digest(d: &str) -> Result<(), String> {
    match d.strip_prefix("sha256:") {
        Some(hex) if is_sha256_hex(hex) => Ok(()),
        _ => Err(format!(
            "digest {d:?} is not sha256: followed by 64 lowercase hex digits"
        )),
    }
}

pub fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_with_tag_digest_port_and_nested_repos() {
        let r = OciRef::parse("oci://127.0.0.1:5000/sparkhost/synthetic:0.1.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "sparkhost/synthetic");
        assert_eq!(r.tag.as_deref(), Some("0.1.0"));
        assert_eq!(r.digest, None);
        assert_eq!(r.host(), "127.0.0.1");
        assert!(r.is_loopback());
        assert_eq!(
            r.to_string(),
            "oci://127.0.0.1:5000/sparkhost/synthetic:0.1.0"
        );

        let r = OciRef::parse(&format!("oci://[::1]:5000/w@{D}")).unwrap();
        assert_eq!(r.host(), "::1");
        assert!(r.is_loopback());
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));

        let r = OciRef::parse("oci://ghcr.io/org/w").unwrap();
        assert_eq!(r.tag.as_deref(), Some("latest"), "no tag means latest");
        assert!(!r.is_loopback());
        assert_eq!(r.pinned(D).to_string(), format!("oci://ghcr.io/org/w@{D}"));

        let r = OciRef::parse(&format!("oci://localhost:5000/a/b:v1@{D}")).unwrap();
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (Some("v1"), Some(D))
        );
        assert!(r.is_loopback());
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (given, says) in [
            ("ghcr.io/org/w:1", "oci://"),
            ("oci://ghcr.io", "no repository"),
            ("oci://ghcr.io/", "no repository name"),
            ("oci://ghcr.io/Org/w:1", "lowercase"),
            ("oci://ghcr.io/org//w:1", "lowercase"),
            ("oci://ghcr.io/org/w:-x", "tag"),
            ("oci://ghcr.io/org/w@sha256:abc", "64 lowercase hex"),
            ("oci://ghcr.io/org/w@md5:abc", "sha256:"),
            ("oci://gh cr.io/org/w:1", "letters, digits"),
            ("oci://host:0/w:1", "port"),
            ("oci://host:99999/w:1", "port"),
            ("oci://[::1/w:1", "']'"),
        ] {
            let e = OciRef::parse(given).unwrap_err().to_string();
            assert!(e.contains(says), "{given}: {e}");
        }
        let long = format!("oci://h/{}", "a".repeat(600));
        assert!(
            OciRef::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        for ok in [
            "oci://127.0.0.1:5000/w:1",
            "oci://localhost/w:1",
            "oci://[::1]:1/w:1",
            "oci://127.1.2.3/w:1",
        ] {
            check_plain_http(&OciRef::parse(ok).unwrap(), true).unwrap();
        }
        let remote = OciRef::parse("oci://registry.example.com:5000/w:1").unwrap();
        let e = check_plain_http(&remote, true).unwrap_err().to_string();
        assert!(e.contains("only allowed for a loopback registry"), "{e}");
        assert!(e.contains("registry.example.com"), "{e}");
        check_plain_http(&remote, false).unwrap();
    }
}
