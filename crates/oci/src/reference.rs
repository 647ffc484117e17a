//! Image references, normalised the way containerd and Docker do
//! (`hello:latest` -> `docker.io/library/hello:latest`).
//!
//! Grammar and normalisation follow distribution's `reference` package
//! (`ParseNormalizedNamed`): the first path component is a registry domain only
//! if it contains `.` or `:` or is `localhost`; Docker Hub names without a
//! namespace get `library/`; a missing tag is `latest`. Digest references are
//! refused: an archive built here is named by a tag.

use std::fmt;

/// Errors parsing an image reference.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference `{reference}`: {reason}")]
    Invalid {
        reference: String,
        reason: &'static str,
    },
}

/// Docker Hub, where names without a domain live.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's old name, normalised to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Namespace of Docker Hub's official images.
const OFFICIAL_NAMESPACE: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference: `domain/path:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    domain: String,
    path: String,
    tag: String,
}

impl Reference {
    /// Parses and normalises `s` (`hello`, `hello:v1`, `me/app:v1`,
    /// `ghcr.io/me/app:v1`, `localhost:5000/app`).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason| ReferenceError::Invalid {
            reference: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.contains('@') {
            return Err(invalid("digest references are not supported; use a tag"));
        }
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i + 1..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, DEFAULT_TAG),
        };
        if !valid_tag(tag) {
            return Err(invalid(
                "the tag must be 1-128 characters of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
            ));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first, rest.to_owned())
            }
            _ => (DEFAULT_DOMAIN, name.to_owned()),
        };
        let domain = if domain == LEGACY_DEFAULT_DOMAIN {
            DEFAULT_DOMAIN
        } else {
            domain
        };
        if !valid_domain(domain) {
            return Err(invalid(
                "the registry must be a host name with an optional `:port`",
            ));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{path}")
        } else {
            path
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("the repository name must be lower case"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(invalid(
                "each part of the repository name must be lower-case letters and digits, separated by `.`, `_`, `__` or `-`",
            ));
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(invalid("the name is longer than 255 characters"));
        }
        Ok(Self {
            domain: domain.to_owned(),
            path,
            tag: tag.to_owned(),
        })
    }

    /// The registry domain, e.g. `docker.io`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path, e.g. `library/hello`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, e.g. `latest`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// `domain/path` without the tag.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for Reference {
    /// The full reference, `domain/path:tag`, as containerd names images.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.domain, self.path, self.tag)
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    tag.len() <= MAX_TAG_LEN
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-')
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes: Vec<char> = part.chars().collect();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Separators between alphanumeric runs: one `.`, one or two `_`, or any `-`s.
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
        let sep: String = bytes[start..i].iter().collect();
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return false;
        }
    }
    true
}

/// Host name components (letters, digits, inner `-`) joined by `.`, then an
/// optional `:port`.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    host.split('.').all(label_ok) && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_containerd() {
        let cases = [
            ("hello", "docker.io/library/hello:latest", "latest"),
            ("hello:latest", "docker.io/library/hello:latest", "latest"),
            (
                "hello:v1.2-rc_3",
                "docker.io/library/hello:v1.2-rc_3",
                "v1.2-rc_3",
            ),
            ("me/app:v1", "docker.io/me/app:v1", "v1"),
            (
                "docker.io/hello",
                "docker.io/library/hello:latest",
                "latest",
            ),
            (
                "index.docker.io/me/app",
                "docker.io/me/app:latest",
                "latest",
            ),
            ("ghcr.io/me/app:v1", "ghcr.io/me/app:v1", "v1"),
            ("localhost/app", "localhost/app:latest", "latest"),
            ("localhost:5000/a/b/c:9", "localhost:5000/a/b/c:9", "9"),
            (
                "registry.example:443/wasm/hello_world.x-y__z",
                "registry.example:443/wasm/hello_world.x-y__z:latest",
                "latest",
            ),
        ];
        for (input, full, tag) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(format!("{}:{}", r.repository(), r.tag()), full);
        }
    }

    #[test]
    fn refuses_malformed_references_naming_them() {
        let cases = [
            "",
            "Hello",
            "hello:",
            "hello:-x",
            "hello@sha256:abcd",
            "hello/",
            "/hello",
            "hello//x",
            "hel..lo",
            "hello_",
            "hello:a b",
            "hello world",
            "-bad.io/x",
            "bad.io:port/x",
            "UPPER.io/Repo",
        ];
        for input in cases {
            let err = Reference::parse(input).expect_err(input).to_string();
            assert!(
                err.starts_with(&format!("invalid image reference `{input}`")),
                "{err}"
            );
        }
        let long = format!("{}:{}", "a".repeat(10), "t".repeat(129));
        assert!(Reference::parse(&long).is_err());
        let long = "a".repeat(250);
        assert!(Reference::parse(&long).is_err(), "library/ + 250 > 255");
    }
}
