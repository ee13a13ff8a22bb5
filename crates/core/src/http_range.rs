//! RFC 9110 byte-range codecs, shared by the server (downloads) and clients (uploads).
//!
//! Everything here is pure string work: no I/O and no `http` crate, so the
//! server and the client can share one implementation and one set of tests.
//!
//! Where the RFC leaves a choice open we behave like nginx:
//! - a `Range` header that does not parse is ignored (the whole file is served);
//! - `bytes=-0`, or ranges that all start at or past the end, are unsatisfiable (416);
//! - a last-byte position past the end is clamped to the last byte;
//! - a number too large for `u64` is still a valid number, just past any end: as a first
//!   position it is unsatisfiable (416), as a last position or a suffix length it reaches
//!   the end (RFC 9110 §14.1.1 puts no bound on `1*DIGIT`);
//! - overlapping or adjacent ranges are coalesced (RFC 9110 §14.6 allows it), so a
//!   request that collapses to one range gets a single-part 206;
//! - more than [`MAX_RANGES`] ranges is treated as abuse and the header is ignored.

use std::fmt::Write as _;

/// Most range-specs accepted in one `Range` header. More than this and the header
/// is ignored (200, whole file): RFC 9110 §14.2 lets a server ignore a `Range` with
/// "many small ranges", which otherwise turns one request into a flood of tiny parts.
pub const MAX_RANGES: usize = 100;

/// An inclusive byte range, numbered like `Content-Range` (`end` is the last byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range: `end - start + 1`.
    ///
    /// Requires `start <= end`, which every range from [`parse_range`] satisfies.
    /// (Saturates at `u64::MAX` for the one range, `0-u64::MAX`, whose length does not fit.)
    // An inclusive range always holds at least one byte, so an `is_empty` would be
    // constant `false`; clippy's len_without_is_empty does not apply.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        (self.end - self.start).saturating_add(1)
    }
}

/// What to do with a `Range` request header, evaluated against the current length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No header, or one that must be ignored: serve the whole representation (200).
    Full,
    /// Serve these ranges (206). Sorted by start, coalesced, clamped, never empty.
    Partial(Vec<ByteRange>),
    /// Syntactically fine but no range overlaps the representation (416).
    Unsatisfiable,
}

/// One `range-spec` as written by the client, before it meets the representation length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RangeSpec {
    /// `int-range = first-pos "-" [ last-pos ]` (RFC 9110 §14.1.1).
    Int { first: u64, last: Option<u64> },
    /// `suffix-range = "-" suffix-length` (RFC 9110 §14.1.1).
    Suffix(u64),
}

/// Evaluate a `Range` header value against a representation of `len` bytes.
///
/// Never fails: anything that does not parse as a `bytes` range set yields
/// [`RangeRequest::Full`], because RFC 9110 §14.2 lets a server ignore `Range`
/// and a plain 200 is always a correct answer.
pub fn parse_range(header: &str, len: u64) -> RangeRequest {
    match parse_range_set(header) {
        Some(specs) => satisfy(&specs, len),
        None => RangeRequest::Full,
    }
}

/// Parse `ranges-specifier = range-unit "=" range-set` (RFC 9110 §14.1.1).
/// `None` means "ignore the header".
fn parse_range_set(header: &str) -> Option<Vec<RangeSpec>> {
    let (unit, set) = header.trim_matches(is_ows).split_once('=')?;
    // RFC 9110 §14.1: range units are case-insensitive. §14.2: a server MUST ignore
    // a Range header with a unit it does not understand ("items=0-1").
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // `range-set = 1#range-spec`: a comma list with OWS around the commas, and
    // RFC 9110 §5.6.1.2 says recipients MUST accept (and skip) empty list elements.
    for element in set.split(',') {
        let element = element.trim_matches(is_ows);
        if element.is_empty() {
            continue;
        }
        if specs.len() == MAX_RANGES {
            return None;
        }
        specs.push(parse_range_spec(element)?);
    }
    // `1#`: at least one range-spec; "bytes=" alone is invalid.
    if specs.is_empty() { None } else { Some(specs) }
}

/// Parse one `range-spec`. `other-range` (any other syntax RFC 9110 reserves for
/// extensions) is not something we can serve, so it is treated as invalid.
///
/// Numbers past `u64::MAX` saturate to it: every representation is shorter, so a first
/// position that large is past the end (unsatisfiable) and a last position or a suffix
/// length that large reaches the end, which is what the number says.
fn parse_range_spec(spec: &str) -> Option<RangeSpec> {
    let (first, last) = spec.split_once('-')?;
    if first.is_empty() {
        return Some(RangeSpec::Suffix(digits(last).ok()?.saturating_u64()));
    }
    let first = digits(first).ok()?;
    let last = if last.is_empty() {
        None
    } else {
        Some(digits(last).ok()?)
    };
    // RFC 9110 §14.1.1: "A range-spec is invalid if the last-pos value is present
    // and less than the first-pos." An invalid spec makes the header invalid (nginx
    // serves 200 for `bytes=5-2`). Compared as numbers of any size, before saturating.
    match last {
        Some(last) if last.cmp_value(first).is_lt() => None,
        _ => Some(RangeSpec::Int {
            first: first.saturating_u64(),
            last: last.map(Digits::saturating_u64),
        }),
    }
}

/// Apply parsed specs to a representation of `len` bytes (RFC 9110 §14.1.1 / §14.1.2).
fn satisfy(specs: &[RangeSpec], len: u64) -> RangeRequest {
    let mut ranges = Vec::with_capacity(specs.len());
    // A non-zero suffix on an empty representation is "satisfiable" per RFC 9110
    // §14.1.1 ("When a selected representation has zero length, the only
    // satisfiable form of range-spec is a suffix-range with a non-zero
    // suffix-length"), yet `Content-Range` cannot express an empty range; the
    // correct answer is then the (empty) full representation.
    let mut empty_suffix = false;
    for spec in specs {
        match *spec {
            // Satisfiable iff first-pos < length; a last-pos at or past the end
            // means "to the end" (§14.1.2), i.e. clamp.
            RangeSpec::Int { first, last } if first < len => {
                let end = last.map_or(len - 1, |last| last.min(len - 1));
                ranges.push(ByteRange { start: first, end });
            }
            RangeSpec::Int { .. } => {}
            // `bytes=-0` asks for nothing: unsatisfiable.
            RangeSpec::Suffix(0) => {}
            RangeSpec::Suffix(_) if len == 0 => empty_suffix = true,
            // A suffix longer than the representation selects all of it (§14.1.1).
            RangeSpec::Suffix(n) => ranges.push(ByteRange {
                start: len.saturating_sub(n),
                end: len - 1,
            }),
        }
    }
    if ranges.is_empty() {
        return if empty_suffix {
            RangeRequest::Full
        } else {
            RangeRequest::Unsatisfiable
        };
    }
    RangeRequest::Partial(coalesce(ranges))
}

/// Sort and merge overlapping or adjacent ranges. RFC 9110 §14.6 allows a server to
/// coalesce ranges "regardless of the order in which the corresponding range-spec
/// appeared", and doing so defeats requests that ask for the same bytes many times.
fn coalesce(mut ranges: Vec<ByteRange>) -> Vec<ByteRange> {
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut out: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            // `end + 1` cannot overflow: `end < len <= u64::MAX`.
            Some(prev) if r.start <= prev.end + 1 => prev.end = prev.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// A parsed `Content-Range: bytes first-last/total` (RFC 9110 §14.4), as sent by
/// upload clients. `total` is `None` for `*` (length not yet known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub total: Option<u64>,
}

/// Why a `Content-Range` value was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentRangeError {
    #[error("Content-Range is not of the form `bytes first-last/total`")]
    Syntax,
    #[error("Content-Range last byte is before its first byte")]
    Order,
    #[error("Content-Range last byte is at or past the complete length")]
    PastTotal,
    #[error("Content-Range number does not fit in 64 bits")]
    Overflow,
}

/// Parse a `Content-Range` request value (`bytes 0-99/1000` or `bytes 0-99/*`).
///
/// The `unsatisfied-range` form (`bytes */1000`) only makes sense in a 416 response,
/// so it is a [`ContentRangeError::Syntax`] here. Syntax is checked for all three
/// numbers before any is converted, so a malformed value is always `Syntax`, never
/// `Overflow`.
pub fn parse_content_range(header: &str) -> Result<ContentRange, ContentRangeError> {
    use ContentRangeError as E;
    // `Content-Range = range-unit SP ( range-resp / unsatisfied-range )`.
    let (unit, rest) = header
        .trim_matches(is_ows)
        .split_once(' ')
        .ok_or(E::Syntax)?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return Err(E::Syntax);
    }
    // Tolerate extra spaces after the unit (never inside numbers).
    let (range, total) = rest
        .trim_start_matches(is_ows)
        .split_once('/')
        .ok_or(E::Syntax)?;
    let (first, last) = range.split_once('-').ok_or(E::Syntax)?;
    let first = digits(first)?;
    let last = digits(last)?;
    let total = if total == "*" {
        None
    } else {
        Some(digits(total)?)
    };

    let first = first.parse_u64()?;
    let last = last.parse_u64()?;
    let total = total.map(Digits::parse_u64).transpose()?;
    // RFC 9110 §14.4: "A Content-Range field value is invalid if it contains a
    // range-resp that has a last-pos value less than its first-pos value, or a
    // complete-length value less than or equal to its last-pos value."
    if last < first {
        return Err(E::Order);
    }
    if total.is_some_and(|total| last >= total) {
        return Err(E::PastTotal);
    }
    Ok(ContentRange { first, last, total })
}

/// `Content-Range` value for a 206 part: `bytes 0-99/1000` (RFC 9110 §14.4).
pub fn format_content_range(r: ByteRange, total: u64) -> String {
    format!("bytes {}-{}/{}", r.start, r.end, total)
}

/// `Content-Range` value for a 416: `bytes */1000` (RFC 9110 §14.4, §15.5.17).
pub fn format_unsatisfied(total: u64) -> String {
    format!("bytes */{total}")
}

/// `Content-Disposition` value for a download (RFC 6266), e.g.
/// `attachment; filename="__ 2026.pdf"; filename*=UTF-8''%E6%8A%A5%E5%91%8A%202026.pdf`.
///
/// `filename` is a quoted ASCII fallback with every unsafe character replaced by `_`;
/// `filename*` (RFC 8187) carries the exact UTF-8 name and is added only when the
/// name is not plain ASCII-safe. RFC 6266 §4.3 recommends this order: clients that
/// understand `filename*` prefer it, older ones fall back to `filename`.
/// `disposition` should be `attachment` or `inline`; anything that is not an HTTP
/// token is replaced by `attachment`, the safe choice. An empty name yields just the
/// disposition type.
pub fn content_disposition(disposition: &str, file_name: &str) -> String {
    let disposition = if !disposition.is_empty() && disposition.chars().all(is_tchar) {
        disposition
    } else {
        "attachment"
    };
    if file_name.is_empty() {
        return disposition.to_owned();
    }
    let fallback: String = file_name
        .chars()
        .map(|c| if is_fallback_safe(c) { c } else { '_' })
        .collect();
    let mut out = format!("{disposition}; filename=\"{fallback}\"");
    if fallback != file_name {
        out.push_str("; filename*=UTF-8''");
        for &b in file_name.as_bytes() {
            if is_attr_char(b) {
                out.push(char::from(b));
            } else {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Characters kept verbatim in the quoted `filename="…"` fallback: printable ASCII
/// except `"` and `\` (quoted-string escapes some clients mishandle), `%` (some
/// clients percent-decode `filename`, RFC 6266 §4.3) and `/` (a path separator).
fn is_fallback_safe(c: char) -> bool {
    matches!(c, ' '..='~') && !matches!(c, '"' | '\\' | '%' | '/')
}

/// RFC 8187 §3.2.1 `attr-char`: the bytes that need no percent-encoding in `filename*`.
fn is_attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#'
                | '$'
                | '%'
                | '&'
                | '\''
                | '*'
                | '+'
                | '-'
                | '.'
                | '^'
                | '_'
                | '`'
                | '|'
                | '~'
        )
}

/// RFC 9110 §5.6.3 `OWS = *( SP / HTAB )`.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A non-empty run of ASCII digits: `1*DIGIT`. Signs, whitespace and anything else
/// are rejected before conversion, unlike `str::parse::<u64>` which accepts `+5`.
#[derive(Clone, Copy)]
struct Digits<'a>(&'a str);

fn digits(s: &str) -> Result<Digits<'_>, ContentRangeError> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(Digits(s))
    } else {
        Err(ContentRangeError::Syntax)
    }
}

impl Digits<'_> {
    /// The value, or `u64::MAX` when it does not fit.
    fn saturating_u64(self) -> u64 {
        self.parse_u64().unwrap_or(u64::MAX)
    }

    /// Compares the values, whatever their size (leading zeros allowed).
    fn cmp_value(self, other: Digits<'_>) -> std::cmp::Ordering {
        let a = self.0.trim_start_matches('0');
        let b = other.0.trim_start_matches('0');
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }

    fn parse_u64(self) -> Result<u64, ContentRangeError> {
        self.0.bytes().try_fold(0u64, |acc, b| {
            acc.checked_mul(10)
                .and_then(|acc| acc.checked_add(u64::from(b - b'0')))
                .ok_or(ContentRangeError::Overflow)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn br(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn partial(ranges: &[(u64, u64)]) -> RangeRequest {
        RangeRequest::Partial(ranges.iter().map(|&(s, e)| br(s, e)).collect())
    }

    #[test]
    fn byte_range_len_is_inclusive() {
        assert_eq!(br(0, 0).len(), 1);
        assert_eq!(br(10, 19).len(), 10);
        assert_eq!(br(0, u64::MAX).len(), u64::MAX);
    }

    #[test]
    fn single_closed_range() {
        assert_eq!(parse_range("bytes=0-99", 1000), partial(&[(0, 99)]));
    }

    #[test]
    fn unit_is_case_insensitive() {
        assert_eq!(parse_range("Bytes=1-2", 10), partial(&[(1, 2)]));
        assert_eq!(parse_range("BYTES=1-2", 10), partial(&[(1, 2)]));
    }

    #[test]
    fn open_ended_runs_to_the_end() {
        assert_eq!(parse_range("bytes=10-", 100), partial(&[(10, 99)]));
    }

    #[test]
    fn suffix_selects_the_tail() {
        assert_eq!(parse_range("bytes=-10", 100), partial(&[(90, 99)]));
        assert_eq!(parse_range("bytes=-1000", 100), partial(&[(0, 99)]));
    }

    #[test]
    fn suffix_zero_is_unsatisfiable() {
        assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn last_pos_past_end_is_clamped() {
        assert_eq!(parse_range("bytes=90-500", 100), partial(&[(90, 99)]));
        assert_eq!(
            parse_range("bytes=0-18446744073709551615", 100),
            partial(&[(0, 99)])
        );
    }

    #[test]
    fn first_pos_at_or_past_end_is_unsatisfiable() {
        assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=100-200", 100),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn unsatisfiable_specs_are_dropped_when_others_fit() {
        assert_eq!(parse_range("bytes=200-300,0-1", 100), partial(&[(0, 1)]));
        assert_eq!(parse_range("bytes=-0,5-6", 100), partial(&[(5, 6)]));
    }

    #[test]
    fn reversed_range_is_ignored() {
        assert_eq!(parse_range("bytes=5-2", 100), RangeRequest::Full);
        assert_eq!(parse_range("bytes=0-1,5-2", 100), RangeRequest::Full);
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for h in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=1",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=-+2",
            "bytes=1 -2",
            "bytes=1- 2",
            "bytes=1 0-20",
            "bytes = 0-1",
            "bytes=0-1;x",
            "bytes=0x10-20",
            "items=0-1",
            "=0-1",
            "bytes=١-٢",
        ] {
            assert_eq!(parse_range(h, 100), RangeRequest::Full, "{h:?}");
        }
    }

    #[test]
    fn overflowing_first_pos_is_unsatisfiable() {
        for h in [
            "bytes=99999999999999999999999-",
            "bytes=18446744073709551616-",
            "bytes=18446744073709551616-18446744073709551617",
            "bytes=99999999999999999999999-99999999999999999999999",
            "bytes=00099999999999999999999999-",
        ] {
            assert_eq!(parse_range(h, 100), RangeRequest::Unsatisfiable, "{h}");
            assert_eq!(parse_range(h, u64::MAX), RangeRequest::Unsatisfiable, "{h}");
        }
        // Other specs still count.
        assert_eq!(
            parse_range("bytes=99999999999999999999999-,0-1", 100),
            partial(&[(0, 1)])
        );
    }

    #[test]
    fn overflowing_last_pos_and_suffix_reach_the_end() {
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999", 100),
            partial(&[(0, 99)])
        );
        assert_eq!(
            parse_range("bytes=90-18446744073709551616", 100),
            partial(&[(90, 99)])
        );
        assert_eq!(
            parse_range("bytes=-18446744073709551616", 100),
            partial(&[(0, 99)])
        );
        assert_eq!(
            parse_range("bytes=-99999999999999999999999", 0),
            RangeRequest::Full
        );
    }

    #[test]
    fn reversed_overflowing_range_is_still_invalid() {
        assert_eq!(
            parse_range("bytes=99999999999999999999999-5", 100),
            RangeRequest::Full
        );
        assert_eq!(
            parse_range("bytes=99999999999999999999999-99999999999999999999998", 100),
            RangeRequest::Full
        );
        assert_eq!(
            parse_range("bytes=18446744073709551616-18446744073709551615", 100),
            RangeRequest::Full
        );
    }

    #[test]
    fn whitespace_around_commas_and_empty_elements_are_accepted() {
        assert_eq!(
            parse_range(" bytes=0-1 ,\t4-5 , ,8-9\t", 100),
            partial(&[(0, 1), (4, 5), (8, 9)])
        );
        assert_eq!(parse_range("bytes=, 0-1", 100), partial(&[(0, 1)]));
        assert_eq!(parse_range("bytes=1-2,", 100), partial(&[(1, 2)]));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_coalesce() {
        assert_eq!(parse_range("bytes=0-5,3-10", 100), partial(&[(0, 10)]));
        assert_eq!(parse_range("bytes=0-4,5-9", 100), partial(&[(0, 9)]));
        assert_eq!(parse_range("bytes=5-9,0-4", 100), partial(&[(0, 9)]));
        assert_eq!(parse_range("bytes=0-50,10-20", 100), partial(&[(0, 50)]));
        assert_eq!(parse_range("bytes=-10,80-", 100), partial(&[(80, 99)]));
    }

    #[test]
    fn disjoint_ranges_are_sorted() {
        assert_eq!(
            parse_range("bytes=50-59,0-9,-5", 100),
            partial(&[(0, 9), (50, 59), (95, 99)])
        );
    }

    #[test]
    fn too_many_ranges_are_ignored() {
        let at_cap: Vec<String> = (0..MAX_RANGES)
            .map(|i| format!("{}-{}", i * 3, i * 3))
            .collect();
        let header = format!("bytes={}", at_cap.join(","));
        match parse_range(&header, 10_000) {
            RangeRequest::Partial(r) => assert_eq!(r.len(), MAX_RANGES),
            other => panic!("expected Partial, got {other:?}"),
        }
        let header = format!("{header},9000-9001");
        assert_eq!(parse_range(&header, 10_000), RangeRequest::Full);
    }

    #[test]
    fn zero_length_representation() {
        assert_eq!(parse_range("bytes=0-0", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), RangeRequest::Full);
    }

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Ok(ContentRange {
                first: 0,
                last: 99,
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Ok(ContentRange {
                first: 100,
                last: 199,
                total: None
            })
        );
        assert_eq!(
            parse_content_range(" Bytes  5-5/6 "),
            Ok(ContentRange {
                first: 5,
                last: 5,
                total: Some(6)
            })
        );
        assert_eq!(
            parse_content_range("bytes 0-18446744073709551614/18446744073709551615"),
            Ok(ContentRange {
                first: 0,
                last: u64::MAX - 1,
                total: Some(u64::MAX)
            })
        );
    }

    #[test]
    fn content_range_rejects_bad_syntax() {
        for h in [
            "",
            "bytes",
            "bytes=0-1/2",
            "bytes 0-1",
            "bytes */100",
            "bytes 0-/100",
            "bytes -1/100",
            "bytes +0-1/100",
            "bytes 0-1/+2",
            "bytes 0 -1/2",
            "bytes 0-1 /2",
            "bytes 0-1/ 2",
            "bytes 0-1/2/3",
            "bytes 0-1/**",
            "items 0-1/2",
            "bytes 0-99999999999999999999999/x",
        ] {
            assert_eq!(
                parse_content_range(h),
                Err(ContentRangeError::Syntax),
                "{h:?}"
            );
        }
    }

    #[test]
    fn content_range_rejects_bad_order_and_total() {
        assert_eq!(
            parse_content_range("bytes 5-4/10"),
            Err(ContentRangeError::Order)
        );
        assert_eq!(
            parse_content_range("bytes 0-10/10"),
            Err(ContentRangeError::PastTotal)
        );
        assert_eq!(
            parse_content_range("bytes 0-0/0"),
            Err(ContentRangeError::PastTotal)
        );
        assert_eq!(
            parse_content_range("bytes 0-18446744073709551616/*"),
            Err(ContentRangeError::Overflow)
        );
        assert_eq!(
            parse_content_range("bytes 0-1/99999999999999999999999"),
            Err(ContentRangeError::Overflow)
        );
    }

    #[test]
    fn content_range_round_trips() {
        let s = format_content_range(br(0, 99), 1000);
        assert_eq!(s, "bytes 0-99/1000");
        assert_eq!(
            parse_content_range(&s),
            Ok(ContentRange {
                first: 0,
                last: 99,
                total: Some(1000)
            })
        );
        assert_eq!(format_unsatisfied(1000), "bytes */1000");
    }

    #[test]
    fn disposition_plain_ascii_has_only_filename() {
        assert_eq!(
            content_disposition("attachment", "report 2026.pdf"),
            r#"attachment; filename="report 2026.pdf""#
        );
        assert_eq!(
            content_disposition("inline", "a.png"),
            r#"inline; filename="a.png""#
        );
    }

    #[test]
    fn disposition_non_ascii_adds_rfc8187_form() {
        assert_eq!(
            content_disposition("attachment", "报告 2026.pdf"),
            "attachment; filename=\"__ 2026.pdf\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A%202026.pdf"
        );
    }

    #[test]
    fn disposition_escapes_unsafe_ascii() {
        assert_eq!(
            content_disposition("attachment", "a\"b\\c%d/e\r\nf.txt"),
            "attachment; filename=\"a_b_c_d_e__f.txt\"; \
             filename*=UTF-8''a%22b%5Cc%25d%2Fe%0D%0Af.txt"
        );
    }

    #[test]
    fn disposition_type_must_be_a_token() {
        assert_eq!(
            content_disposition("in line", "a"),
            r#"attachment; filename="a""#
        );
        assert_eq!(content_disposition("", ""), "attachment");
        assert_eq!(content_disposition("inline", ""), "inline");
    }
}
