//! Content digests (`sha256:<hex>`), the only algorithm the layouts here use.

use sha2::{Digest as _, Sha256};

/// The algorithm prefix of every digest written here.
pub(crate) const SHA256_PREFIX: &str = "sha256:";

/// `sha256:<64 lower-case hex digits>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a well-formed sha256 digest, or `None` (other algorithms, upper
/// case, wrong length, path separators: anything that must not become a file name).
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix(SHA256_PREFIX)?;
    let well_formed = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    well_formed.then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hex_part_only_of_well_formed_digests() {
        let d = sha256_digest(b"x");
        assert_eq!(sha256_hex(&d), Some(&d[7..]));
        assert_eq!(sha256_hex(&d.to_uppercase()), None);
        assert_eq!(sha256_hex("sha512:abcd"), None);
        assert_eq!(sha256_hex("sha256:../../etc/passwd"), None);
        assert_eq!(sha256_hex(&d[..70]), None);
    }
}
