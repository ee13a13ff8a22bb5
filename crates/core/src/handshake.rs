//! Wire messages of the chunk-handshake dialect (SPEC §2.1), shared by the server and the
//! Rust client.

use serde::{Deserialize, Serialize};

/// `POST /api/upload/handshake` body. Every field is optional at the type level so that a
/// missing one gets the dialect's own error (403 for `fileId`, as the original design has it)
/// instead of a generic JSON error.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandshakeRequest {
    pub file_id: Option<String>,
    pub ext: Option<String>,
    pub chunk_ids: Option<Vec<String>>,
    pub size: Option<u64>,
    pub chunk_size: Option<u64>,
    pub file_name: Option<String>,
    pub hash_algorithm: Option<String>,
}

/// The response envelope of the dialect: `{"code": 0, "msg": "", "data": …}`. Errors carry
/// the HTTP status in `code`, a sentence in `msg`, and a stable machine-readable `error`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub code: u16,
    pub msg: String,
    pub data: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `data` of a successful handshake or chunk upload: the file's URL once complete, otherwise
/// the chunk ids still missing, in file order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HandshakeData {
    Url(String),
    Missing(Vec<String>),
}

/// Longest suffix a chunk id may carry after its digest (clients append the chunk index).
pub const MAX_CHUNK_SUFFIX: usize = 64;

/// Checks a chunk id: a hex digest of `hex_len` characters, then an optional suffix of
/// ASCII letters, digits, `-` or `_`.
pub fn valid_chunk_id(id: &str, hex_len: usize) -> bool {
    id.len() >= hex_len
        && id.len() <= hex_len + MAX_CHUNK_SUFFIX
        && id.is_char_boundary(hex_len)
        && id[..hex_len].bytes().all(|b| b.is_ascii_hexdigit())
        && id[hex_len..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ids_are_digest_plus_optional_suffix() {
        let md5 = "0123456789abcdef0123456789abcdef";
        assert!(valid_chunk_id(md5, 32));
        assert!(valid_chunk_id(&format!("{md5}17"), 32));
        assert!(valid_chunk_id(&format!("{md5}-part_3"), 32));
        assert!(!valid_chunk_id(&md5[..31], 32));
        assert!(!valid_chunk_id(&format!("{md5}/../x"), 32));
        assert!(!valid_chunk_id(&format!("z{}", &md5[1..]), 32));
        assert!(!valid_chunk_id(&format!("{md5}{}", "9".repeat(65)), 32));
    }

    #[test]
    fn data_serialises_as_url_or_array() {
        let url =
            serde_json::to_string(&HandshakeData::Url("http://x/upload/a.jpg".into())).unwrap();
        assert_eq!(url, "\"http://x/upload/a.jpg\"");
        let missing = serde_json::to_string(&HandshakeData::Missing(vec!["a".into()])).unwrap();
        assert_eq!(missing, "[\"a\"]");
    }
}
