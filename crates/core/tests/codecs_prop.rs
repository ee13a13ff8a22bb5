//! Property tests of every public wire codec in ferry-core: `Range` / `Content-Range` /
//! `Content-Disposition` (`http_range`), `Upload-Metadata` / `Upload-Checksum` /
//! `Upload-Concat` / `Upload-Offset` (`tus`), chunk ids and handshake JSON (`handshake`),
//! upload ids, extensions and file names (`upload`), algorithm names, hex digests and saved
//! hasher states (`hash`).
//!
//! Two kinds of property:
//! - totality: arbitrary strings (any Unicode, lossy-decoded arbitrary bytes, and strings
//!   over each grammar's own alphabet, which reach much deeper than random Unicode) never
//!   make a parser panic, and whatever it accepts satisfies its documented invariants;
//! - round trips: where an encoder exists, encoding a valid value and parsing it back gives
//!   the same value.

use ferry_core::handshake::{
    Envelope, HandshakeData, HandshakeRequest, MAX_CHUNK_SUFFIX, valid_chunk_id,
};
use ferry_core::hash::{HashAlg, Hasher, digest, parse_hex};
use ferry_core::http_range::{
    ByteRange, ContentRange, ContentRangeError, MAX_RANGES, RangeRequest, content_disposition,
    format_content_range, format_unsatisfied, parse_content_range, parse_range,
};
use ferry_core::tus::{
    CHECKSUM_ALGORITHMS, Checksum, ConcatError, Metadata, UploadConcat, parse_non_negative,
    upload_id_from_url,
};
use ferry_core::upload::{ChunkLayout, UploadId, clean_file_name, validate_ext};
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::collections::BTreeMap;

const ALL_ALGS: [HashAlg; 4] = [
    HashAlg::Md5,
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Blake3,
];

/// Modest case counts (the whole file runs in a few seconds in debug; `PROPTEST_CASES`
/// overrides them for longer hunts), and no regression files written next to the sources:
/// a failure prints its minimal input instead.
fn config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Input generators
// ---------------------------------------------------------------------------------------

/// Arbitrary text: any Unicode, arbitrary bytes decoded lossily (U+FFFD and friends), and
/// strings over `alphabet`, the characters the grammar under test cares about (so that
/// near-valid inputs are common rather than astronomically rare).
fn text(alphabet: &'static str) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop_oneof![
        2 => any::<String>(),
        2 => proptest::collection::vec(any::<u8>(), 0..48)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        6 => proptest::collection::vec(proptest::sample::select(chars), 0..48)
            .prop_map(|cs| cs.into_iter().collect()),
    ]
}

/// Numbers that sit on the boundaries parsers care about, plus anything.
fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=20,
        Just(63u64),
        Just(64u64),
        Just((1u64 << 63) - 1),
        Just(1u64 << 63),
        Just(u64::MAX - 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

/// Decimal spellings that are, or nearly are, u64 values: overflow by one digit, leading
/// zeros, signs, and the boundary numbers.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        interesting_u64().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("9223372036854775808".to_owned()),
        Just("-1".to_owned()),
        Just("+1".to_owned()),
        Just("0000000000000000000001".to_owned()),
        "[0-9]{0,25}",
    ]
}

// ---------------------------------------------------------------------------------------
// http_range: Range
// ---------------------------------------------------------------------------------------

/// The structural promises of `RangeRequest::Partial`: never empty, sorted, disjoint and
/// not even adjacent (coalesced), each range inside the representation, at most
/// `MAX_RANGES` of them.
fn check_partial(ranges: &[ByteRange], len: u64) -> Result<(), TestCaseError> {
    prop_assert!(!ranges.is_empty());
    prop_assert!(ranges.len() <= MAX_RANGES);
    for r in ranges {
        prop_assert!(r.start <= r.end, "{r:?}");
        prop_assert!(r.end < len, "{r:?} past length {len}");
        prop_assert!(r.len() >= 1);
    }
    for w in ranges.windows(2) {
        // `end < len <= u64::MAX`, so `end + 1` cannot overflow.
        prop_assert!(w[0].end + 1 < w[1].start, "not coalesced: {w:?}");
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Spec {
    Int { first: u64, last: Option<u64> },
    Suffix(u64),
}

impl Spec {
    fn text(self) -> String {
        match self {
            Spec::Int { first, last: None } => format!("{first}-"),
            Spec::Int {
                first,
                last: Some(last),
            } => format!("{first}-{last}"),
            Spec::Suffix(n) => format!("-{n}"),
        }
    }

    /// RFC 9110 §14.1.2, written out independently of the implementation: the inclusive
    /// byte range this spec selects from a representation of `len` bytes, if any.
    fn selects(self, len: u64) -> Option<(u64, u64)> {
        if len == 0 {
            return None;
        }
        match self {
            Spec::Int { first, last } => {
                (first < len).then(|| (first, last.unwrap_or(u64::MAX).min(len - 1)))
            }
            Spec::Suffix(0) => None,
            Spec::Suffix(n) => Some((len - n.min(len), len - 1)),
        }
    }
}

/// A valid `range-spec` (last ≥ first), with numbers near `len` as often as not.
fn spec(len: u64) -> impl Strategy<Value = Spec> {
    let near = move || {
        prop_oneof![
            interesting_u64(),
            (0u64..=3).prop_map(move |d| len.saturating_sub(d)),
            (0u64..=3).prop_map(move |d| len.saturating_add(d)),
            0..len.saturating_add(1).max(1),
        ]
    };
    prop_oneof![
        (near(), proptest::option::of(near())).prop_map(|(a, b)| match b {
            Some(b) => Spec::Int {
                first: a.min(b),
                last: Some(a.max(b)),
            },
            None => Spec::Int {
                first: a,
                last: None,
            },
        }),
        near().prop_map(Spec::Suffix),
    ]
}

fn lengths() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..300, 1 => interesting_u64()]
}

/// A `Range` header made of valid specs, with the liberties RFC 9110 allows: any case of the
/// unit, OWS around it and around commas, and empty list elements.
fn range_header() -> impl Strategy<Value = (String, u64, Vec<Spec>)> {
    lengths().prop_flat_map(|len| {
        (
            proptest::collection::vec(spec(len), 1..=MAX_RANGES),
            proptest::sample::select(vec!["bytes", "BYTES", "Bytes", "bYtEs"]),
            proptest::collection::vec(
                proptest::sample::select(vec!["", " ", "\t", " \t "]),
                MAX_RANGES * 2 + 2,
            ),
            proptest::collection::vec(any::<bool>(), MAX_RANGES + 1),
        )
            .prop_map(move |(specs, unit, ows, empties)| {
                let mut h = format!("{}{unit}=", ows[0]);
                for (i, s) in specs.iter().enumerate() {
                    if i > 0 {
                        h.push(',');
                    }
                    if empties[i] {
                        h.push_str(" ,");
                    }
                    h.push_str(ows[2 * i + 1]);
                    h.push_str(&s.text());
                    h.push_str(ows[2 * i + 2]);
                }
                if empties[specs.len()] {
                    h.push(',');
                }
                (h, len, specs)
            })
    })
}

/// The expected answer, computed from `Spec::selects` with a plain interval merge.
fn expected_range(specs: &[Spec], len: u64) -> RangeRequest {
    let mut sel: Vec<(u64, u64)> = specs.iter().filter_map(|s| s.selects(len)).collect();
    if sel.is_empty() {
        let non_zero_suffix = specs.iter().any(|s| matches!(s, Spec::Suffix(n) if *n > 0));
        return if len == 0 && non_zero_suffix {
            RangeRequest::Full
        } else {
            RangeRequest::Unsatisfiable
        };
    }
    sel.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in sel {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    RangeRequest::Partial(
        merged
            .into_iter()
            .map(|(start, end)| ByteRange { start, end })
            .collect(),
    )
}

proptest! {
    #![proptest_config(config(512))]

    /// Any text at all, against any length: no panic, and a `Partial` answer is well formed.
    #[test]
    fn range_never_panics(
        header in text("bytes=BYTES-,0123456789 \t;*+x9"),
        len in lengths(),
    ) {
        if let RangeRequest::Partial(r) = parse_range(&header, len) {
            check_partial(&r, len)?;
        }
    }

    /// Numbers of any size in every position, including ones that overflow u64.
    #[test]
    fn range_numbers_never_panic(
        a in number_text(),
        b in number_text(),
        shape in 0usize..4,
        len in lengths(),
    ) {
        let header = match shape {
            0 => format!("bytes={a}-{b}"),
            1 => format!("bytes={a}-"),
            2 => format!("bytes=-{a}"),
            _ => format!("bytes={a}-{b},-{b},{b}-"),
        };
        if let RangeRequest::Partial(r) = parse_range(&header, len) {
            check_partial(&r, len)?;
        }
    }

    /// A list of valid range-specs always parses (never `Full`, except a suffix of an empty
    /// representation), and selects exactly the bytes RFC 9110 says, coalesced and sorted.
    #[test]
    fn valid_range_sets_select_what_rfc_9110_says((header, len, specs) in range_header()) {
        let got = parse_range(&header, len);
        if let RangeRequest::Partial(r) = &got {
            check_partial(r, len)?;
        }
        prop_assert_eq!(got, expected_range(&specs, len), "{:?}", header);
    }

    /// One range-spec more than `MAX_RANGES` and the header is ignored.
    #[test]
    fn too_many_ranges_are_ignored(extra in 1usize..5, len in 1u64..10_000) {
        let specs: Vec<String> = (0..MAX_RANGES + extra).map(|i| format!("{i}-{i}")).collect();
        let header = format!("bytes={}", specs.join(","));
        prop_assert_eq!(parse_range(&header, len), RangeRequest::Full);
    }
}

// ---------------------------------------------------------------------------------------
// http_range: Content-Range, Content-Disposition
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    /// Anything: no panic, and what is accepted obeys RFC 9110 §14.4.
    #[test]
    fn content_range_never_panics(header in text("bytes */0123456789-+ \tx")) {
        if let Ok(cr) = parse_content_range(&header) {
            prop_assert!(cr.first <= cr.last, "{:?}", cr);
            if let Some(total) = cr.total {
                prop_assert!(cr.last < total, "{:?}", cr);
            }
        }
    }

    /// Numbers of any size, including overflowing ones: `Overflow`, never a panic; any other
    /// error is about syntax or order, and an accepted value is in order.
    #[test]
    fn content_range_numbers_never_panic(
        a in number_text(),
        b in number_text(),
        t in prop_oneof![number_text(), Just("*".to_owned())],
    ) {
        let header = format!("bytes {a}-{b}/{t}");
        match parse_content_range(&header) {
            Ok(cr) => {
                prop_assert!(cr.first <= cr.last);
                prop_assert!(cr.total.is_none_or(|t| cr.last < t));
            }
            Err(
                ContentRangeError::Syntax
                | ContentRangeError::Order
                | ContentRangeError::PastTotal
                | ContentRangeError::Overflow,
            ) => {}
        }
    }

    /// What the server formats for a 206 part, a client parses back unchanged (with the
    /// known total or `*`).
    #[test]
    fn content_range_round_trips(
        a in interesting_u64(),
        b in interesting_u64(),
        t in interesting_u64(),
        unknown_total in any::<bool>(),
    ) {
        let (start, end) = (a.min(b), a.max(b));
        if unknown_total {
            let text = format!("bytes {start}-{end}/*");
            prop_assert_eq!(
                parse_content_range(&text),
                Ok(ContentRange { first: start, last: end, total: None })
            );
        } else if end < u64::MAX {
            // Any total past the last byte.
            let t = end + 1 + t % (u64::MAX - end);
            let text = format_content_range(ByteRange { start, end }, t);
            prop_assert_eq!(
                parse_content_range(&text),
                Ok(ContentRange { first: start, last: end, total: Some(t) })
            );
        }
        // The 416 form is never a valid request value.
        prop_assert_eq!(
            parse_content_range(&format_unsatisfied(t)),
            Err(ContentRangeError::Syntax)
        );
    }

    /// `Content-Disposition` for any name: a valid header value (visible ASCII and spaces,
    /// so no CR/LF injection), the disposition type a token, and `filename*` carrying the
    /// exact name back.
    #[test]
    fn content_disposition_is_a_safe_header_for_any_name(
        disposition in prop_oneof![
            Just("attachment".to_owned()),
            Just("inline".to_owned()),
            any::<String>(),
        ],
        name in prop_oneof![any::<String>(), text("a.\"\\%/ \r\n\t;=*'报告é")],
    ) {
        let v = content_disposition(&disposition, &name);
        prop_assert!(v.bytes().all(|b| (b' '..=b'~').contains(&b)), "{:?}", v);
        let token_ok = !disposition.is_empty()
            && disposition.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let kind = v.split(';').next().unwrap_or_default();
        if token_ok {
            prop_assert_eq!(kind, disposition.as_str());
        } else {
            prop_assert_eq!(kind, "attachment");
        }
        if name.is_empty() {
            prop_assert_eq!(v.as_str(), kind);
            return Ok(());
        }
        // The quoted fallback: one character per character of the name, none that would end
        // or escape the quoted string.
        let start = v.find("; filename=\"").expect("fallback present") + "; filename=\"".len();
        let fallback_len = v[start..].find('"').expect("closing quote");
        let fallback = &v[start..start + fallback_len];
        prop_assert_eq!(fallback.chars().count(), name.chars().count());
        prop_assert!(!fallback.contains(['\\', '%', '/']));
        match v.find("; filename*=UTF-8''") {
            Some(i) => {
                let encoded = &v[i + "; filename*=UTF-8''".len()..];
                prop_assert_eq!(percent_decode(encoded), name.as_bytes());
            }
            None => prop_assert_eq!(fallback, name.as_str()),
        }
    }
}

/// RFC 8187 percent-decoding of a `filename*` value (test oracle).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// tus: Upload-Offset / Upload-Length, Upload-Metadata, Upload-Checksum, Upload-Concat
// ---------------------------------------------------------------------------------------

/// A key `Metadata::insert` accepts: non-empty, no space, comma or control character.
fn metadata_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.-]{1,12}",
        "[!-+\\--~]{1,12}",
        any::<String>().prop_filter_map("valid key", |k| {
            let k: String = k
                .chars()
                .filter(|c| *c != ' ' && *c != ',' && !c.is_control())
                .collect();
            (!k.is_empty()).then_some(k)
        }),
    ]
}

fn metadata_pairs() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(
        (
            metadata_key(),
            prop_oneof![
                Just(Vec::new()),
                proptest::collection::vec(any::<u8>(), 0..40)
            ],
        ),
        0..8,
    )
}

proptest! {
    #![proptest_config(config(512))]

    /// `Upload-Offset` / `Upload-Length`: accepted exactly when the text is 1 to 19 ASCII
    /// digits (so no long runs of leading zeros) worth less than 2^63, and then it is that
    /// number.
    #[test]
    fn non_negative_accepts_exactly_small_decimals(s in prop_oneof![
        text("0123456789-+ e.x"),
        number_text(),
    ]) {
        let expected = (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u128>().ok())
            .flatten()
            .filter(|n| *n < 1 << 63)
            .map(|n| n as u64);
        prop_assert_eq!(parse_non_negative(&s), expected, "{:?}", s);
    }

    #[test]
    fn non_negative_round_trips(n in interesting_u64()) {
        let want = (n < 1 << 63).then_some(n);
        prop_assert_eq!(parse_non_negative(&n.to_string()), want);
    }

    /// Any text: no panic; an accepted header re-encodes to one that parses to the same
    /// value (Display is a faithful encoder for everything `parse` produces).
    #[test]
    fn metadata_never_panics_and_reencodes(header in prop_oneof![
        text("ab YQ==Zm9v,\t =+/!é"),
        metadata_pairs().prop_map(|pairs| {
            pairs.iter().map(|(k, v)| {
                use base64::Engine as _;
                format!("{k} {}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(v))
            }).collect::<Vec<_>>().join(" ,")
        }),
    ]) {
        if let Ok(m) = Metadata::parse(&header) {
            let again = Metadata::parse(&m.to_string());
            prop_assert_eq!(again.as_ref(), Ok(&m), "{:?}", header);
            for (k, v) in m.iter() {
                prop_assert!(!k.is_empty() && !k.contains([' ', ',']));
                prop_assert_eq!(m.get(k), Some(v));
            }
        }
    }

    /// Any set of valid keys with any binary values survives encode → decode, in order.
    #[test]
    fn metadata_round_trips(pairs in metadata_pairs()) {
        let mut m = Metadata::default();
        let mut model: Vec<(String, Vec<u8>)> = Vec::new();
        for (k, v) in pairs {
            m.insert(&k, v.clone()).expect("generated keys are valid");
            match model.iter_mut().find(|(mk, _)| *mk == k) {
                Some((_, mv)) => *mv = v,
                None => model.push((k, v)),
            }
        }
        let header = m.to_string();
        let parsed = Metadata::parse(&header);
        prop_assert_eq!(parsed.as_ref(), Ok(&m), "{:?}", header);
        let got: Vec<(String, Vec<u8>)> = parsed
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect();
        prop_assert_eq!(got, model);
    }

    /// Keys `insert` refuses are exactly the invalid ones.
    #[test]
    fn metadata_insert_validates_keys(key in any::<String>()) {
        let valid = !key.is_empty() && !key.chars().any(|c| c == ' ' || c == ',' || c.is_control());
        prop_assert_eq!(Metadata::default().insert(&key, "v").is_ok(), valid);
    }

    /// Any text: no panic; an accepted checksum has a supported algorithm and a digest of
    /// that algorithm's length.
    #[test]
    fn checksum_never_panics(header in prop_oneof![
        text("sha1md5256 Kq5sNclPz7QV2+lfQIuc6R7oRu0=\t/"),
        (proptest::sample::select(vec!["md5", "sha1", "sha256", "SHA1", "blake3", ""]),
         "[A-Za-z0-9+/=]{0,60}")
            .prop_map(|(a, d)| format!("{a} {d}")),
    ]) {
        if let Ok(c) = Checksum::parse(&header) {
            prop_assert!(CHECKSUM_ALGORITHMS.contains(&c.alg));
            prop_assert_eq!(c.digest.len(), c.alg.digest_len());
        }
    }

    /// Every digest of every supported algorithm round-trips, padded or not.
    #[test]
    fn checksum_round_trips(
        alg in proptest::sample::select(CHECKSUM_ALGORITHMS.to_vec()),
        seed in proptest::collection::vec(any::<u8>(), 32),
        unpadded in any::<bool>(),
        ws in proptest::sample::select(vec!["", " ", "\t", "  "]),
    ) {
        let c = Checksum { alg, digest: seed[..alg.digest_len()].to_vec() };
        let mut text = c.to_string();
        if unpadded {
            text = text.trim_end_matches('=').to_owned();
        }
        let text = format!("{ws}{text}{ws}");
        prop_assert_eq!(Checksum::parse(&text), Ok(c));
    }

    /// Any text: no panic; `final;` with no URL is `NoParts`, an accepted final lists
    /// non-empty URLs without whitespace.
    #[test]
    fn concat_never_panics(header in prop_oneof![
        text("final;partial /files/ab \t:"),
        any::<String>().prop_map(|s| format!("final;{s}")),
    ]) {
        match UploadConcat::parse(&header) {
            Ok(UploadConcat::Final(urls)) => {
                prop_assert!(!urls.is_empty());
                for u in &urls {
                    prop_assert!(!u.is_empty() && !u.contains(|c: char| c.is_ascii_whitespace()));
                }
            }
            Ok(UploadConcat::Partial) => prop_assert_eq!(header.trim(), "partial"),
            Err(ConcatError::NoParts) => {
                prop_assert!(header.trim().starts_with("final;"));
            }
            Err(ConcatError::Malformed) => {}
        }
    }

    /// Partial and any final list of URLs (visible ASCII, as in a header) round-trip.
    #[test]
    fn concat_round_trips(urls in proptest::collection::vec("[!-~]{1,30}", 0..6)) {
        let c = if urls.is_empty() { UploadConcat::Partial } else { UploadConcat::Final(urls) };
        prop_assert_eq!(UploadConcat::parse(&c.to_string()), Ok(c));
    }

    /// Any URL: no panic, and an id found is a valid id that the URL ends with.
    #[test]
    fn upload_id_from_url_never_panics(url in prop_oneof![
        text("https://h/files/0123456789abcdef?#:é"),
        "[0-9a-f]{32}".prop_map(|id| format!("http://h:1/files/{id}/?x#y")),
    ]) {
        if let Some(id) = upload_id_from_url(&url) {
            let again = UploadId::parse(id.as_str());
            prop_assert_eq!(again.as_ref(), Some(&id));
            prop_assert!(url.contains(id.as_str()));
        }
    }

    /// An id is found in every URL form a client may send it in.
    #[test]
    fn upload_id_from_url_finds_generated_ids(
        id in "[0-9a-f]{32}",
        form in 0usize..6,
    ) {
        let url = match form {
            0 => id.clone(),
            1 => format!("/files/{id}"),
            2 => format!("/files/{id}/"),
            3 => format!("http://127.0.0.1:8080/files/{id}"),
            4 => format!("https://up.example/a/b/files/{id}?q=1#f"),
            _ => format!("files/{id}#frag/ment"),
        };
        prop_assert_eq!(upload_id_from_url(&url).map(|i| i.to_string()), Some(id));
    }
}

// ---------------------------------------------------------------------------------------
// handshake: chunk ids and JSON messages
// ---------------------------------------------------------------------------------------

/// Arbitrary JSON, shaped like a handshake often enough to reach every field's decoder.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[0-9a-f]{32}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        let keys = prop_oneof![
            Just("fileId".to_owned()),
            Just("ext".to_owned()),
            Just("chunkIds".to_owned()),
            Just("size".to_owned()),
            Just("chunkSize".to_owned()),
            Just("fileName".to_owned()),
            Just("hashAlgorithm".to_owned()),
            Just("code".to_owned()),
            Just("msg".to_owned()),
            Just("data".to_owned()),
            Just("error".to_owned()),
            any::<String>(),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(keys, inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn handshake_request() -> impl Strategy<Value = HandshakeRequest> {
    (
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(proptest::collection::vec(any::<String>(), 0..5)),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
    )
        .prop_map(
            |(file_id, ext, chunk_ids, size, chunk_size, file_name, hash_algorithm)| {
                HandshakeRequest {
                    file_id,
                    ext,
                    chunk_ids,
                    size,
                    chunk_size,
                    file_name,
                    hash_algorithm,
                }
            },
        )
}

proptest! {
    #![proptest_config(config(512))]

    /// Any text and any digest length: no panic (no slicing inside a UTF-8 character), and
    /// an accepted id is a hex digest of that length plus a short `[A-Za-z0-9_-]` suffix.
    #[test]
    fn chunk_id_check_never_panics(
        id in text("0123456789abcdefABCDEFxyz-_/.é报"),
        hex_len in prop_oneof![Just(32usize), Just(64usize), 0usize..80],
    ) {
        if valid_chunk_id(&id, hex_len) {
            prop_assert!(id.len() >= hex_len && id.len() <= hex_len + MAX_CHUNK_SUFFIX);
            let (digest, suffix) = id.split_at(hex_len);
            prop_assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
            prop_assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }

    /// Every well-formed id is accepted, at both digest lengths the dialect uses.
    #[test]
    fn well_formed_chunk_ids_are_accepted(
        md5 in "[0-9a-fA-F]{32}",
        sha256 in "[0-9a-fA-F]{64}",
        suffix in "[A-Za-z0-9_-]{0,64}",
    ) {
        let short = format!("{md5}{suffix}");
        let long = format!("{sha256}{suffix}");
        let too_long = format!("{md5}{suffix}{}", "x".repeat(MAX_CHUNK_SUFFIX + 1 - suffix.len()));
        prop_assert!(valid_chunk_id(&short, 32));
        prop_assert!(valid_chunk_id(&long, 64));
        prop_assert!(!valid_chunk_id(&too_long, 32));
    }

    /// The server's decoder on arbitrary bytes: an error or a value, never a panic.
    #[test]
    fn handshake_json_from_arbitrary_bytes(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            text("{}[]\":,0123456789.-eE truefalsnl\\u").prop_map(String::into_bytes),
        ],
    ) {
        let _ = serde_json::from_slice::<HandshakeRequest>(&body);
        let _ = serde_json::from_slice::<Envelope<HandshakeData>>(&body);
        let _ = serde_json::from_slice::<Envelope<Option<()>>>(&body);
    }

    /// Arbitrary JSON documents (wrong types, negative and fractional sizes, nested junk):
    /// an error or a value, never a panic; a decoded request re-encodes to an equal one.
    #[test]
    fn handshake_json_from_arbitrary_values(v in json_value()) {
        let text = serde_json::to_vec(&v).expect("serialisable");
        if let Ok(req) = serde_json::from_slice::<HandshakeRequest>(&text) {
            let again: HandshakeRequest =
                serde_json::from_value(serde_json::to_value(&req).unwrap()).unwrap();
            prop_assert_eq!(
                serde_json::to_value(&again).unwrap(),
                serde_json::to_value(&req).unwrap()
            );
        }
        if let Ok(env) = serde_json::from_slice::<Envelope<HandshakeData>>(&text) {
            let again: Envelope<HandshakeData> =
                serde_json::from_slice(&serde_json::to_vec(&env).unwrap()).unwrap();
            prop_assert_eq!(again.data, env.data);
        }
    }

    /// Any request a client builds survives the wire.
    #[test]
    fn handshake_request_round_trips(req in handshake_request()) {
        let text = serde_json::to_string(&req).unwrap();
        let back: HandshakeRequest = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&req).unwrap()
        );
    }

    /// Both shapes of `data` survive the wire, in an envelope with or without `error`.
    #[test]
    fn handshake_envelope_round_trips(
        url in any::<String>(),
        ids in proptest::collection::vec(any::<String>(), 0..5),
        as_url in any::<bool>(),
        code in any::<u16>(),
        msg in any::<String>(),
        error in proptest::option::of(any::<String>()),
    ) {
        let data = if as_url { HandshakeData::Url(url) } else { HandshakeData::Missing(ids) };
        let env = Envelope { code, msg: msg.clone(), data: data.clone(), error: error.clone() };
        let back: Envelope<HandshakeData> =
            serde_json::from_str(&serde_json::to_string(&env).unwrap()).unwrap();
        prop_assert_eq!(back.code, code);
        prop_assert_eq!(back.msg, msg);
        prop_assert_eq!(back.data, data);
        prop_assert_eq!(back.error, error);
    }
}

// ---------------------------------------------------------------------------------------
// upload: ids, extensions, file names, chunk layouts
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    /// An id is accepted exactly when it is 32 lowercase hex characters, and then it is
    /// kept verbatim (as text, through Display and through serde).
    #[test]
    fn upload_id_parse(s in prop_oneof![
        text("0123456789abcdefABCDEF./é"),
        "[0-9a-f]{32}",
        "[0-9a-fA-F]{31,33}",
    ]) {
        let valid = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match UploadId::parse(&s) {
            Some(id) => {
                prop_assert!(valid);
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert_eq!(id.to_string(), s.clone());
                let json = serde_json::to_string(&id).unwrap();
                prop_assert_eq!(serde_json::from_str::<UploadId>(&json).unwrap(), id);
            }
            None => prop_assert!(!valid, "{:?} refused", s),
        }
    }

    /// Any text: no panic; an accepted extension is empty or a dot and 1–16 lowercase ASCII
    /// alphanumerics, and validating it again changes nothing.
    #[test]
    fn ext_validation(ext in prop_oneof![
        text(".jpgJPG0/\\.. \0é"),
        "\\.[A-Za-z0-9]{0,18}",
    ]) {
        if let Ok(e) = validate_ext(&ext) {
            prop_assert!(
                e.is_empty()
                    || (e.starts_with('.')
                        && (2..=17).contains(&e.len())
                        && e[1..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())),
                "{:?} -> {:?}", ext, e
            );
            prop_assert_eq!(e.clone(), ext.to_ascii_lowercase());
            prop_assert_eq!(validate_ext(&e), Ok(e));
        }
    }

    /// Any text: no panic; a cleaned name has no path separator, no control character, at
    /// most 255 characters, no surrounding whitespace, is not `.` or `..`, and is a fixpoint.
    #[test]
    fn file_name_cleaning(name in prop_oneof![
        any::<String>(),
        text("a./\\..\0\r\n\t 报告é\u{202e}"),
    ]) {
        if let Some(n) = clean_file_name(&name) {
            prop_assert!(!n.is_empty() && n != "." && n != "..");
            prop_assert!(!n.contains(['/', '\\']));
            prop_assert!(!n.chars().any(char::is_control));
            prop_assert!(n.chars().count() <= 255);
            prop_assert_eq!(n.trim(), n.as_str());
            prop_assert_eq!(clean_file_name(&n), Some(n.clone()));
        }
    }

    /// Chunk spans: never a panic (sizes near u64::MAX overflow into `None`), and the spans
    /// of a fixed chunk size tile the file in order.
    #[test]
    fn chunk_spans_never_panic(
        n in 0usize..6,
        chunk_size in proptest::option::of(interesting_u64()),
        length in proptest::option::of(interesting_u64()),
        index in 0usize..8,
    ) {
        let layout = ChunkLayout {
            ids: (0..n).map(|i| i.to_string()).collect(),
            chunk_size,
            alg: HashAlg::Md5,
            staged: BTreeMap::new(),
        };
        let span = layout.span(index, length);
        if index >= n {
            prop_assert_eq!(span.clone(), None);
        }
        if let (Some(span), true) = (span.clone(), index + 1 < n) {
            let cs = chunk_size.expect("interior span needs a chunk size");
            prop_assert_eq!(span.end - span.start, cs);
            if let Some(next) = layout.span(index + 1, length) {
                prop_assert_eq!(span.end, next.start);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// hash: algorithm names, hex digests, saved states
// ---------------------------------------------------------------------------------------

fn alg() -> impl Strategy<Value = HashAlg> {
    proptest::sample::select(ALL_ALGS.to_vec())
}

proptest! {
    #![proptest_config(config(512))]

    /// Any text: no panic; an accepted name is one of the documented spellings.
    #[test]
    fn alg_names(s in prop_oneof![
        text("mdshablake0123456789-SHAMD "),
        proptest::sample::select(vec!["md5", "SHA-1", "sha256", "Sha-256", "BLAKE3", "sha1 "])
            .prop_map(str::to_owned),
    ]) {
        if let Some(a) = HashAlg::parse(&s) {
            let spellings = ["md5", "sha1", "sha-1", "sha256", "sha-256", "blake3"];
            prop_assert!(spellings.iter().any(|n| n.eq_ignore_ascii_case(&s)), "{:?}", s);
            prop_assert_eq!(HashAlg::parse(a.name()), Some(a));
            prop_assert_eq!(HashAlg::parse(&a.name().to_ascii_uppercase()), Some(a));
            // The canonical name is also the serde spelling.
            prop_assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{}\"", a.name()));
        }
    }

    /// Any text: no panic; an accepted digest has the algorithm's length, and hex of any
    /// digest (either case) parses back.
    #[test]
    fn hex_digests(
        a in alg(),
        s in text("0123456789abcdefABCDEFgé"),
        bytes in proptest::collection::vec(any::<u8>(), 32),
        upper in any::<bool>(),
    ) {
        if let Some(d) = parse_hex(a, &s) {
            prop_assert_eq!(d.len(), a.digest_len());
        }
        let d = &bytes[..a.digest_len()];
        let mut h = hex::encode(d);
        if upper {
            h = h.to_ascii_uppercase();
        }
        prop_assert_eq!(parse_hex(a, &h), Some(d.to_vec()));
    }

    /// A saved state of any length and content is refused or restored, never a panic.
    #[test]
    fn hash_restore_arbitrary_bytes(
        tag in prop_oneof![Just(None), (0u8..6).prop_map(Some)],
        body in proptest::collection::vec(any::<u8>(), 0..140),
    ) {
        let saved = match tag {
            Some(t) => [vec![1, t], body].concat(),
            None => body,
        };
        if let Ok(mut h) = Hasher::restore(&saved) {
            h.update(b"x");
            let _ = h.finalize();
        }
    }

    /// A genuine saved state with corrupted bytes (bit flips, truncation, extension) is
    /// refused or restored, never a panic, and a restored one can go on hashing.
    #[test]
    fn hash_restore_corrupted_states(
        a in alg(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<usize>()),
        extra in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let mut h = Hasher::new(a);
        h.update(&data);
        let mut saved = h.save();
        for (i, x) in flips {
            let n = saved.len();
            saved[i % n] ^= x;
        }
        if let Some(c) = cut {
            saved.truncate(c % (saved.len() + 1));
        }
        saved.extend(extra);
        if let Ok(mut r) = Hasher::restore(&saved) {
            r.update(b"more");
            let _ = r.finalize();
        }
    }

    /// save → restore → feed the rest gives the one-shot digest, wherever the save happened.
    #[test]
    fn hash_state_round_trips(
        a in alg(),
        data in proptest::collection::vec(any::<u8>(), 0..700),
        split in any::<usize>(),
    ) {
        let split = split % (data.len() + 1);
        let mut h = Hasher::new(a);
        h.update(&data[..split]);
        prop_assert_eq!(h.position(), split as u64);
        let saved = h.save();
        prop_assert_eq!(saved[0], 1, "format version");
        let mut r = Hasher::restore(&saved).expect("own state restores");
        prop_assert_eq!(r.alg(), a);
        let from = r.durable_position() as usize;
        prop_assert!(from <= split);
        r.update(&data[from..]);
        prop_assert_eq!(r.finalize(), digest(a, &data));
    }
}

// ---------------------------------------------------------------------------------------
// Targeted edge cases
// ---------------------------------------------------------------------------------------

#[test]
fn range_edge_cases() {
    use RangeRequest::*;
    assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
    assert_eq!(parse_range("bytes=-0", 0), Unsatisfiable);
    assert_eq!(parse_range("bytes=-0", u64::MAX), Unsatisfiable);
    assert_eq!(
        parse_range("bytes=0-", u64::MAX),
        Partial(vec![ByteRange {
            start: 0,
            end: u64::MAX - 1
        }])
    );
    assert_eq!(
        parse_range("bytes=-18446744073709551615", u64::MAX),
        Partial(vec![ByteRange {
            start: 0,
            end: u64::MAX - 1
        }])
    );
    assert_eq!(
        parse_range("bytes=18446744073709551614-18446744073709551615", u64::MAX),
        Partial(vec![ByteRange {
            start: u64::MAX - 1,
            end: u64::MAX - 1
        }])
    );
    assert_eq!(
        parse_range("bytes=18446744073709551615-", u64::MAX),
        Unsatisfiable
    );
    // Numbers past u64::MAX: whether such a header is ignored or read as "past any end" is
    // the module's choice; either way it never selects bytes that are not there.
    for len in [0, 10, u64::MAX] {
        let whole = ByteRange {
            start: 0,
            end: len.saturating_sub(1),
        };
        for h in [
            "bytes=18446744073709551616-",
            "bytes=99999999999999999999999-99999999999999999999999",
        ] {
            assert!(
                matches!(parse_range(h, len), Full | Unsatisfiable),
                "{h} / {len}"
            );
        }
        for h in [
            "bytes=0-18446744073709551616",
            "bytes=-18446744073709551616",
        ] {
            let got = parse_range(h, len);
            let ok = match len {
                0 => !matches!(got, Partial(_)),
                _ => got == Full || got == Partial(vec![whole]),
            };
            assert!(ok, "{h} / {len}: {got:?}");
        }
        assert_eq!(
            parse_range("bytes=18446744073709551617-18446744073709551616", len),
            Full
        );
    }
    assert_eq!(parse_range("bytes=0-0,-0", 0), Unsatisfiable);
    assert_eq!(parse_range("bytes=,,,", 10), Full);
    assert_eq!(
        parse_range(&format!("bytes={}", ",".repeat(10_000)), 10),
        Full
    );
    assert_eq!(
        parse_range(&format!("bytes={}0-0", ", ".repeat(10_000)), 10),
        Partial(vec![ByteRange { start: 0, end: 0 }])
    );
    assert_eq!(
        ByteRange {
            start: 0,
            end: u64::MAX
        }
        .len(),
        u64::MAX
    );
}

#[test]
fn content_range_edge_cases() {
    // Ranges ending at u64::MAX: parsed exactly, or refused as too large (a range of 2^64
    // bytes has no u64 length); never anything else. Callers computing `last - first + 1`
    // must not overflow on the accepted ones.
    for (text, first, last) in [
        ("bytes 0-18446744073709551615/*", 0, u64::MAX),
        ("bytes 1-18446744073709551615/*", 1, u64::MAX),
        (
            "bytes 18446744073709551615-18446744073709551615/*",
            u64::MAX,
            u64::MAX,
        ),
    ] {
        match parse_content_range(text) {
            Ok(cr) => assert_eq!(
                cr,
                ContentRange {
                    first,
                    last,
                    total: None
                },
                "{text}"
            ),
            Err(e) => assert_eq!(e, ContentRangeError::Overflow, "{text}"),
        }
    }
    assert_eq!(
        parse_content_range("bytes 0-18446744073709551615/18446744073709551615"),
        Err(ContentRangeError::PastTotal)
    );
    assert_eq!(
        parse_content_range("bytes 0-0/18446744073709551616"),
        Err(ContentRangeError::Overflow)
    );
    assert_eq!(
        parse_content_range("bytes -1-5/10"),
        Err(ContentRangeError::Syntax)
    );
    assert_eq!(
        parse_content_range("bytes 1--5/10"),
        Err(ContentRangeError::Syntax)
    );
}

#[test]
fn metadata_keys_of_unicode_whitespace_round_trip() {
    // `insert` accepts any key without space, comma or control character, so a key made of
    // non-ASCII whitespace is valid; alone and with an empty value it is the whole header.
    for key in ["\u{3000}", "\u{a0}", "\u{2028}", "\u{200b}"] {
        let mut m = Metadata::default();
        m.insert(key, "").unwrap();
        assert_eq!(Metadata::parse(&m.to_string()), Ok(m), "{key:?}");
    }
}

#[test]
fn number_edge_cases() {
    assert_eq!(
        parse_non_negative("9223372036854775807"),
        Some(i64::MAX as u64)
    );
    for bad in [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-0",
        "-1",
        "1_000",
        "٣",
        "１",
        "00000000000000000000",
    ] {
        assert_eq!(parse_non_negative(bad), None, "{bad:?}");
    }
}

#[test]
fn handshake_json_edge_cases() {
    // Deep nesting hits serde_json's recursion limit: an error, not a stack overflow.
    for depth in [200, 10_000, 100_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(serde_json::from_str::<HandshakeRequest>(&arrays).is_err());
        let objects = format!("{}1{}", r#"{"chunkIds":"#.repeat(depth), "}".repeat(depth));
        assert!(serde_json::from_str::<HandshakeRequest>(&objects).is_err());
        let unclosed = "{\"a\":".repeat(depth);
        assert!(serde_json::from_str::<HandshakeRequest>(&unclosed).is_err());
    }
    for bad in [
        r#"{"size":-1}"#,
        r#"{"size":1.5}"#,
        r#"{"size":18446744073709551616}"#,
        r#"{"chunkSize":-1}"#,
        r#"{"chunkIds":"abc"}"#,
        r#"{"chunkIds":[1]}"#,
        r#"{"fileId":7}"#,
        r#"[]"#,
        "",
        "\u{feff}{}",
    ] {
        assert!(
            serde_json::from_str::<HandshakeRequest>(bad).is_err(),
            "{bad:?}"
        );
    }
    let max: HandshakeRequest = serde_json::from_str(r#"{"size":18446744073709551615}"#).unwrap();
    assert_eq!(max.size, Some(u64::MAX));
    let empty: HandshakeRequest = serde_json::from_str(r#"{"chunkIds":[]}"#).unwrap();
    assert_eq!(empty.chunk_ids, Some(vec![]));
    let ids: Vec<String> = (0..10_000).map(|i| format!("{:032x}{i}", i)).collect();
    let many: HandshakeRequest =
        serde_json::from_value(serde_json::json!({ "chunkIds": ids })).unwrap();
    let many = many.chunk_ids.unwrap();
    assert_eq!(many.len(), 10_000);
    assert!(many.iter().all(|id| valid_chunk_id(id, 32)));
}

#[test]
fn blake3_state_survives_a_restore_past_several_subtrees() {
    // Enough data to save chaining values of complete 1 MiB subtrees (the tree code path).
    let data: Vec<u8> = (0..(3 << 20) + 12_345u32)
        .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
        .collect();
    for split in [1 << 20, (2 << 20) + 1, (3 << 20) + 7] {
        let mut h = Hasher::new(HashAlg::Blake3);
        h.update(&data[..split]);
        let saved = h.save();
        let mut r = Hasher::restore(&saved).expect("restores");
        let from = r.durable_position() as usize;
        assert!(from <= split && split - from <= 2 << 20);
        r.update(&data[from..]);
        assert_eq!(
            r.finalize(),
            digest(HashAlg::Blake3, &data),
            "split {split}"
        );
        // Every single-byte corruption of that state is refused or restorable, never a panic.
        for i in 0..saved.len() {
            let mut bad = saved.clone();
            bad[i] ^= 0x80;
            if let Ok(mut r) = Hasher::restore(&bad) {
                r.update(b"x");
                let _ = r.finalize();
            }
        }
    }
}

/// `Hasher::restore` checks a saved state's position against the state itself, but not
/// against what a hasher can ever reach: it accepts positions near 2^64 (uploads stop at
/// 2^62), and the next `update` then overflows. Only a corrupted or forged stored state can
/// carry such a position, but `restore` is the gate that is meant to refuse bad states.
#[test]
fn restored_states_can_take_more_bytes() {
    // MD5 (RustCrypto layout, see hash.rs): 2^58 - 1 compressed blocks and 63 buffered bytes,
    // i.e. position u64::MAX, consistent with the state.
    let mut md5 = Hasher::new(HashAlg::Md5).save();
    let blocks = u64::MAX / 64;
    md5[2..10].copy_from_slice(&(blocks * 64 + 63).to_le_bytes());
    md5[26..34].copy_from_slice(&blocks.to_le_bytes());
    md5[34] = 63;
    // BLAKE3: saved subtrees of every size from 2^63 down to 1 MiB, position 2^64 - 2^20.
    let mut blake3 = vec![1u8, 4];
    let sizes: Vec<u64> = (20..64).rev().map(|e| 1u64 << e).collect();
    blake3.extend_from_slice(&sizes.iter().sum::<u64>().to_le_bytes());
    blake3.push(sizes.len() as u8);
    for len in &sizes {
        blake3.extend_from_slice(&len.to_le_bytes());
        blake3.extend_from_slice(&[7u8; 32]);
    }
    let panicked: Vec<&str> = [("md5", md5, 1usize), ("blake3", blake3, 1 << 20)]
        .into_iter()
        .filter(|(_, saved, more)| {
            std::panic::catch_unwind(|| {
                if let Ok(mut h) = Hasher::restore(saved) {
                    h.update(&vec![0u8; *more]);
                    let _ = h.finalize();
                }
            })
            .is_err()
        })
        .map(|(name, _, _)| name)
        .collect();
    assert!(
        panicked.is_empty(),
        "{panicked:?}: a state restore accepted (position near 2^64) panics on the next \
         update (hash.rs `Hasher::update` / `Blake3Tree::update`, add with overflow); restore \
         should refuse it"
    );
}
