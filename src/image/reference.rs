//! Image references as Docker normalizes them: `busybox` is
//! `docker.io/library/busybox:latest`, served by `registry-1.docker.io`; `host:port/repo:tag`
//! and `name@sha256:<hex>` name other registries and exact manifests.

use std::fmt;

use super::{digest, ImageError};

pub const DOCKER_HUB_DOMAIN: &str = "docker.io";
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry domain as written in the reference, e.g. "docker.io" or "127.0.0.1:5000".
    pub domain: String,
    /// Repository path inside the registry, e.g. "library/busybox".
    pub path: String,
    pub tag: Option<String>,
    /// "sha256:<hex>" when the reference pins a manifest.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                digest::hex_of(digest)
                    .map_err(|_| bad("digest must be sha256:<64 lowercase hex>"))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that comes after the last '/', so "host:5000/repo" has none.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(bad(
                    "tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        if name.is_empty() {
            return Err(bad("missing repository name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad(
                "repository name must not be longer than 255 characters",
            ));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_domain(first) {
                    return Err(bad("invalid registry host"));
                }
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB_DOMAIN.to_string(), name.to_string()),
        };
        let path = if domain == DOCKER_HUB_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(bad(
                "repository path components must be [a-z0-9] separated by '.', '_', '__' or '-'",
            ));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// Host (and port) to talk to: Docker Hub's API lives on a different name than its images.
    pub fn registry_host(&self) -> &str {
        if self.domain == DOCKER_HUB_DOMAIN || self.domain == "index.docker.io" {
            DOCKER_HUB_REGISTRY
        } else {
            &self.domain
        }
    }

    /// The tag to use when none was given and no digest pins the manifest.
    pub fn tag_or_default(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .unwrap_or_else(|| self.tag_or_default())
    }

    /// The fully qualified repository, e.g. "docker.io/library/busybox".
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as Docker shows it: "busybox", "user/app", "127.0.0.1:5000/x".
    pub fn familiar_name(&self) -> String {
        if self.domain == DOCKER_HUB_DOMAIN {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.full_name()
        }
    }

    /// Fully qualified name with a tag (":latest" when none was given), e.g. the key the store
    /// records tags under.
    pub fn full_tagged(&self) -> String {
        format!("{}:{}", self.full_name(), self.tag_or_default())
    }

    /// Familiar name with tag, e.g. "busybox:latest" (what `husk images` prints).
    pub fn familiar_tagged(&self) -> String {
        format!("{}:{}", self.familiar_name(), self.tag_or_default())
    }

    /// The same repository at a different tag, without any digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    /// Docker's familiar form: "busybox:latest", "busybox@sha256:..", "x:y@sha256:..".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.familiar_name())?;
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => write!(f, ":{tag}@{digest}"),
            (None, Some(digest)) => write!(f, "@{digest}"),
            (tag, None) => write!(f, ":{}", tag.as_deref().unwrap_or(DEFAULT_TAG)),
        }
    }
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]` where host is dotted labels of `[A-Za-z0-9-]` (or "localhost").
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_official_image_defaults() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.domain, "docker.io");
        assert_eq!(r.path, "library/busybox");
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_default(), "latest");
        assert_eq!(r.registry_host(), "registry-1.docker.io");
        assert_eq!(r.full_tagged(), "docker.io/library/busybox:latest");
        assert_eq!(r.to_string(), "busybox:latest");
    }

    #[test]
    fn docker_hub_user_repo_and_explicit_domain() {
        let r = Reference::parse("user/app:1.0").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str()),
            ("docker.io", "user/app")
        );
        assert_eq!(r.familiar_name(), "user/app");
        let r = Reference::parse("docker.io/library/busybox:1.36").unwrap();
        assert_eq!(r.familiar_tagged(), "busybox:1.36");
        assert_eq!(r, Reference::parse("busybox:1.36").unwrap());
    }

    #[test]
    fn host_port_is_not_a_tag() {
        let r = Reference::parse("127.0.0.1:5000/x").unwrap();
        assert_eq!(r.domain, "127.0.0.1:5000");
        assert_eq!(r.path, "x");
        assert_eq!(r.tag, None);
        assert_eq!(r.registry_host(), "127.0.0.1:5000");
        let r = Reference::parse("localhost:5000/a/b:v2").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str(), r.tag.as_deref()),
            ("localhost:5000", "a/b", Some("v2"))
        );
        assert_eq!(r.to_string(), "localhost:5000/a/b:v2");
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!(r.domain, "localhost");
    }

    #[test]
    fn digest_references() {
        let input = format!("busybox@sha256:{HEX}");
        let r = Reference::parse(&input).unwrap();
        assert_eq!(r.digest.as_deref(), Some(format!("sha256:{HEX}").as_str()));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(r.to_string(), input);
        let r = Reference::parse(&format!("busybox:1.36@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
    }

    #[test]
    fn malformed_references_are_rejected_with_a_reason() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-tag",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "/busybox",
            "busybox/",
            "bus..ybox",
            "bus ybox",
            "host:port/x",
            "x:tag:more",
        ] {
            let err = Reference::parse(bad);
            match err {
                Err(ImageError::InvalidReference { ref input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad:?} should be rejected, got {other:?}"),
            }
        }
        let long_tag = format!("busybox:{}", "a".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        let msg = Reference::parse("Busybox").unwrap_err().to_string();
        assert!(msg.contains("must be lowercase"), "{msg}");
    }

    #[test]
    fn separators_in_path_components() {
        for good in ["a.b", "a_b", "a__b", "a---b", "a-b.c_d"] {
            assert!(Reference::parse(good).is_ok(), "{good}");
        }
        for bad in ["a___b", "a.-b", "-a", "a-", "a._b"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
