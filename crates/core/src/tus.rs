//! tus 1.0.0 header codecs, shared by the server and by clients: `Upload-Metadata`,
//! `Upload-Checksum`, `Upload-Concat`, and the non-negative integers of `Upload-Offset` and
//! `Upload-Length`.
//!
//! Everything here works on `&str` and knows nothing about HTTP types: a caller hands in a
//! header's text and gets a typed value or an error whose message a person can act on.
//! Section names in comments refer to the tus 1.0.0 protocol text ("Core Protocol",
//! "Creation", "Checksum", "Concatenation").

use crate::hash::HashAlg;
use crate::upload::UploadId;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::fmt;

/// The protocol version this crate speaks (`Tus-Resumable`, `Tus-Version`).
pub const VERSION: &str = "1.0.0";

/// Checksum algorithms the server verifies, in the order `Tus-Checksum-Algorithm` lists them.
/// tus "Checksum": a server MUST support at least `sha1`.
pub const CHECKSUM_ALGORITHMS: [HashAlg; 3] = [HashAlg::Md5, HashAlg::Sha1, HashAlg::Sha256];

/// Standard base64 (RFC 4648 §4). Decoding accepts values with or without `=` padding:
/// clients disagree on padding and nothing is ambiguous either way.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses `Upload-Offset` / `Upload-Length`: tus "Core Protocol" says the value MUST be a
/// non-negative integer. Only ASCII digits are accepted (no sign, spaces or exponent), and
/// values of 2^63 or more are refused so that sums of offsets and lengths cannot overflow.
pub fn parse_non_negative(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|n| *n < 1 << 63)
}

// ---------------------------------------------------------------------------------------
// Upload-Metadata (tus "Creation")
// ---------------------------------------------------------------------------------------

/// Why an `Upload-Metadata` header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("Upload-Metadata has an empty pair; send comma-separated \"key base64value\" pairs")]
    EmptyPair,
    #[error(
        "Upload-Metadata key {0:?} is not allowed: keys must be non-empty, without spaces or commas"
    )]
    BadKey(String),
    #[error("Upload-Metadata key {0:?} appears more than once; keys must be unique")]
    DuplicateKey(String),
    #[error("the Upload-Metadata value of {0:?} is not valid base64")]
    BadValue(String),
}

/// Parsed `Upload-Metadata`: key/value pairs in the order the client sent them. Values are
/// raw bytes, since tus lets them be arbitrary binary data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pairs: Vec<(String, Vec<u8>)>,
}

impl Metadata {
    /// Parses the header value. tus "Creation" / Upload-Metadata: one or more comma-separated
    /// pairs; key and value separated by a space; the key non-empty, without spaces or commas,
    /// and unique; the value base64, possibly empty, in which case the space may be left out.
    /// An empty header is taken as no metadata.
    pub fn parse(header: &str) -> Result<Metadata, MetadataError> {
        let mut out = Metadata::default();
        if header.trim_matches([' ', '\t']).is_empty() {
            return Ok(out);
        }
        for pair in header.split(',') {
            let pair = pair.trim_matches([' ', '\t']);
            if pair.is_empty() {
                return Err(MetadataError::EmptyPair);
            }
            let (key, value) = match pair.split_once(' ') {
                Some((k, v)) => (k, v.trim_matches([' ', '\t'])),
                None => (pair, ""),
            };
            if !valid_key(key) {
                return Err(MetadataError::BadKey(key.to_owned()));
            }
            if out.get(key).is_some() {
                return Err(MetadataError::DuplicateKey(key.to_owned()));
            }
            let value = BASE64
                .decode(value)
                .map_err(|_| MetadataError::BadValue(key.to_owned()))?;
            out.pairs.push((key.to_owned(), value));
        }
        Ok(out)
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `key` when it is UTF-8 text.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Sets `key` (replacing an earlier value), for clients building the header.
    pub fn insert(&mut self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), MetadataError> {
        if !valid_key(key) {
            return Err(MetadataError::BadKey(key.to_owned()));
        }
        let value = value.into();
        match self.pairs.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.pairs.push((key.to_owned(), value)),
        }
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && !key.chars().any(|c| c == ' ' || c == ',' || c.is_control())
}

/// Formats as the header value; an empty value is sent as the bare key.
impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(k)?;
            if !v.is_empty() {
                write!(f, " {}", BASE64.encode(v))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Upload-Checksum (tus "Checksum")
// ---------------------------------------------------------------------------------------

/// Why an `Upload-Checksum` header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error(
        "Upload-Checksum must be an algorithm name, a space and a base64 digest, like \"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=\""
    )]
    Malformed,
    #[error("checksum algorithm {0:?} is not supported; use one of md5, sha1, sha256")]
    UnsupportedAlgorithm(String),
    #[error("the Upload-Checksum digest is not valid base64")]
    BadBase64,
    #[error("a {alg} digest has {expected} bytes, but the Upload-Checksum digest has {got}")]
    WrongLength {
        alg: HashAlg,
        expected: usize,
        got: usize,
    },
}

/// A parsed `Upload-Checksum`: the digest the request body must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub alg: HashAlg,
    pub digest: Vec<u8>,
}

impl Checksum {
    /// Parses `<algorithm> <base64 digest>`. tus "Checksum": algorithm names are lowercase
    /// ASCII, so `SHA1` or `sha-1` are unsupported names rather than spellings of `sha1`.
    pub fn parse(header: &str) -> Result<Checksum, ChecksumError> {
        let (name, digest) = header
            .trim()
            .split_once(' ')
            .ok_or(ChecksumError::Malformed)?;
        let digest = digest.trim();
        if name.is_empty() || digest.is_empty() || digest.contains(' ') {
            return Err(ChecksumError::Malformed);
        }
        let alg = CHECKSUM_ALGORITHMS
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| ChecksumError::UnsupportedAlgorithm(name.to_owned()))?;
        let digest = BASE64
            .decode(digest)
            .map_err(|_| ChecksumError::BadBase64)?;
        if digest.len() != alg.digest_len() {
            return Err(ChecksumError::WrongLength {
                alg,
                expected: alg.digest_len(),
                got: digest.len(),
            });
        }
        Ok(Checksum { alg, digest })
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.alg.name(), BASE64.encode(&self.digest))
    }
}

// ---------------------------------------------------------------------------------------
// Upload-Concat (tus "Concatenation")
// ---------------------------------------------------------------------------------------

/// Why an `Upload-Concat` header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConcatError {
    #[error(
        "Upload-Concat must be \"partial\" or \"final;\" followed by space-separated upload URLs"
    )]
    Malformed,
    #[error("a final upload needs at least one partial upload URL after \"final;\"")]
    NoParts,
}

/// A parsed `Upload-Concat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadConcat {
    /// `partial`: this upload is one piece of later final uploads.
    Partial,
    /// `final;<url> <url>…`: the concatenation of these partial uploads, in order. URLs are
    /// kept as sent (absolute or relative); [`upload_id_from_url`] finds their ids.
    Final(Vec<String>),
}

impl UploadConcat {
    /// tus "Concatenation" / Upload-Concat: `partial`, or `final` followed by a semicolon and
    /// a space-separated list of partial upload URLs, which may be absolute or relative and
    /// contain no spaces.
    pub fn parse(header: &str) -> Result<UploadConcat, ConcatError> {
        let header = header.trim();
        if header == "partial" {
            return Ok(UploadConcat::Partial);
        }
        let list = header
            .strip_prefix("final;")
            .ok_or(ConcatError::Malformed)?;
        let urls: Vec<String> = list.split_ascii_whitespace().map(str::to_owned).collect();
        if urls.is_empty() {
            return Err(ConcatError::NoParts);
        }
        Ok(UploadConcat::Final(urls))
    }
}

impl fmt::Display for UploadConcat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadConcat::Partial => f.write_str("partial"),
            UploadConcat::Final(urls) => write!(f, "final;{}", urls.join(" ")),
        }
    }
}

/// The upload id an upload URL ends with: `https://host/files/<id>`, `/files/<id>` or
/// `<id>`, ignoring a query, a fragment and a trailing slash. `None` when the last path
/// segment is not an id this server could have generated.
pub fn upload_id_from_url(url: &str) -> Option<UploadId> {
    let path = match url.split_once("://") {
        // Absolute URL: drop the scheme and the authority.
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    UploadId::parse(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hasher;

    #[test]
    fn metadata_parses_the_spec_example() {
        let m = Metadata::parse("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(m.get_str("filename"), Some("world_domination_plan.pdf"));
        assert_eq!(m.get("is_confidential"), Some(&b""[..]));
        assert_eq!(m.get("missing"), None);
    }

    #[test]
    fn metadata_round_trips_binary_and_empty_values() {
        let mut m = Metadata::default();
        m.insert("name", "报告 2026.pdf").unwrap();
        m.insert("blob", vec![0u8, 255, 10, 13]).unwrap();
        m.insert("flag", "").unwrap();
        let text = m.to_string();
        assert!(text.ends_with(",flag"), "{text}");
        assert_eq!(Metadata::parse(&text).unwrap(), m);
    }

    #[test]
    fn metadata_accepts_what_clients_send() {
        // tus-js-client sends "key " for an empty value; spaces after commas are common.
        let m = Metadata::parse("relativePath , filetype dGV4dC9wbGFpbg, name YQ==").unwrap();
        assert_eq!(m.get("relativePath"), Some(&b""[..]));
        assert_eq!(m.get_str("filetype"), Some("text/plain"), "unpadded base64");
        assert_eq!(m.get_str("name"), Some("a"));
        assert!(Metadata::parse("").unwrap().is_empty());
    }

    #[test]
    fn metadata_refuses_malformed_headers() {
        for (bad, want) in [
            ("a YQ==,,b", MetadataError::EmptyPair),
            ("a YQ==,", MetadataError::EmptyPair),
            ("a YQ==,a Yg==", MetadataError::DuplicateKey("a".into())),
            ("a not*base64", MetadataError::BadValue("a".into())),
            ("a YQ== Yg==", MetadataError::BadValue("a".into())),
        ] {
            assert_eq!(Metadata::parse(bad), Err(want), "{bad:?}");
        }
        assert!(Metadata::default().insert("a b", "x").is_err());
        assert!(Metadata::default().insert("", "x").is_err());
    }

    #[test]
    fn checksum_parses_the_spec_example() {
        let c = Checksum::parse("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        let mut h = Hasher::new(HashAlg::Sha1);
        h.update(b"hello world");
        assert_eq!(c.alg, HashAlg::Sha1);
        assert_eq!(c.digest, h.finalize());
        assert_eq!(c.to_string(), "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
    }

    #[test]
    fn checksum_refuses_unknown_algorithms_and_bad_digests() {
        assert_eq!(
            Checksum::parse("crc32 AAAAAA=="),
            Err(ChecksumError::UnsupportedAlgorithm("crc32".into()))
        );
        assert_eq!(
            Checksum::parse("SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            Err(ChecksumError::UnsupportedAlgorithm("SHA1".into()))
        );
        assert_eq!(Checksum::parse("sha1"), Err(ChecksumError::Malformed));
        assert_eq!(Checksum::parse("sha1 a b"), Err(ChecksumError::Malformed));
        assert_eq!(Checksum::parse("md5 !!!"), Err(ChecksumError::BadBase64));
        assert!(matches!(
            Checksum::parse("sha256 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            Err(ChecksumError::WrongLength {
                expected: 32,
                got: 20,
                ..
            })
        ));
    }

    #[test]
    fn concat_parses_partial_and_final() {
        assert_eq!(UploadConcat::parse("partial"), Ok(UploadConcat::Partial));
        let f = UploadConcat::parse("final;/files/a https://h/files/b").unwrap();
        assert_eq!(
            f,
            UploadConcat::Final(vec!["/files/a".into(), "https://h/files/b".into()])
        );
        assert_eq!(f.to_string(), "final;/files/a https://h/files/b");
        assert_eq!(UploadConcat::parse("final;"), Err(ConcatError::NoParts));
        for bad in ["", "partial;x", "final /files/a", "complete"] {
            assert_eq!(
                UploadConcat::parse(bad),
                Err(ConcatError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn upload_ids_are_found_in_absolute_and_relative_urls() {
        let id = UploadId::generate();
        for url in [
            format!("http://127.0.0.1:8080/files/{id}"),
            format!("https://up.example/prefix/files/{id}/?x=1#y"),
            format!("/files/{id}"),
            id.to_string(),
        ] {
            assert_eq!(upload_id_from_url(&url), Some(id.clone()), "{url}");
        }
        for bad in ["http://host", "/files/", "/files/../../etc/passwd", ""] {
            assert_eq!(upload_id_from_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_are_plain_non_negative_integers() {
        assert_eq!(parse_non_negative("0"), Some(0));
        assert_eq!(parse_non_negative("1048576"), Some(1 << 20));
        for bad in ["", "-1", "+1", " 1", "1e3", "9223372036854775808", "0x10"] {
            assert_eq!(parse_non_negative(bad), None, "{bad:?}");
        }
    }
}
