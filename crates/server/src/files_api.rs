//! The files API (SPEC §9): the caller's own uploads, listed and deleted, whatever dialect
//! made them.
//!
//! - `GET /api/files?limit=N&cursor=C`: `{"files": [...], "next": C | null}`, newest first
//!   (creation time, then id), unfinished uploads included. Each file is `{"id", "name",
//!   "size", "offset", "state", "createdAt", "url"}`: `size` the declared length (`null`
//!   while deferred), `offset` every byte held (all held ranges, so an upload whose chunks
//!   arrive out of order shows its real progress, not only its contiguous prefix), `state`
//!   `incomplete` or `complete`, `createdAt` RFC 3339 in UTC with milliseconds, `url` the
//!   download URL handed to the owner once complete (a signed link with authentication on),
//!   else `null`.
//! - Pages are keyset pages: the cursor is opaque to clients (base64url of
//!   `<created_at ms>.<id>` of the page's last upload), so pages neither repeat nor skip an
//!   upload that exists throughout, whatever is created or deleted in between. `next` is
//!   `null` on the last page (one upload more than `limit` is read to know).
//! - `DELETE /api/files/<id>`: `204`, as a tus termination would (the engine's delete: hooks
//!   report `post-terminate`); another tenant's or an unknown id is `404 not_found`.
//!
//! Who the caller is comes from the bearer token as on every upload route; without
//! authentication configured, the caller is the owner of the uploads that have no owner.
//! Then a request a browser sends from another origin (`Origin` naming another host) is
//! refused with `403 cross_origin_forbidden`: any web page a user has open could otherwise
//! list and delete the uploads of a ferry on their machine. The page ferry serves, the CLI
//! and scripts (no `Origin`) are unaffected; with authentication on, the token decides.

use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiError;
use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_core::EngineError;
use ferry_core::codes::{CROSS_ORIGIN_FORBIDDEN, INVALID_CURSOR, INVALID_LIMIT};
use ferry_core::upload::{Timestamp, Upload, UploadId};
use serde_json::{Value, json};

/// Uploads per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 50;
/// Most uploads one page may ask for.
pub const MAX_LIMIT: usize = 1000;

/// The routes, all of them for an identified caller only (401 otherwise).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/files", get(list))
        .route("/api/files/{id}", delete(remove))
        .route_layer(axum::middleware::from_fn(crate::caller::require))
}

/// What a listing request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    limit: usize,
    after: Option<(Timestamp, UploadId)>,
}

/// `GET /api/files`.
async fn list(
    State(state): State<AppState>,
    Caller(actor): Caller,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = foreign_without_auth(&state, &uri, &headers) {
        return refused;
    }
    let page = match parse_query(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // One more than asked: whether it exists says whether there is a next page.
    let mut found = match state
        .engine
        .scoped(&actor)
        .list(page.after, page.limit + 1)
        .await
    {
        Ok(f) => f,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let more = found.len() > page.limit;
    found.truncate(page.limit);
    let next = match found.last() {
        Some(last) if more => Value::String(cursor_of(last)),
        _ => Value::Null,
    };
    let files: Vec<Value> = found.iter().map(|u| entry(&state, &headers, u)).collect();
    let mut resp = Json(json!({ "files": files, "next": next })).into_response();
    // One person's list: never kept by a shared cache.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `DELETE /api/files/<id>`.
async fn remove(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(raw_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = foreign_without_auth(&state, &uri, &headers) {
        return refused;
    }
    let Some(id) = UploadId::parse(&raw_id) else {
        return ApiError::from(EngineError::NotFound).into_response();
    };
    match state.engine.scoped(&actor).delete(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Without authentication, the refusal of a browser request from another origin: its
/// `Origin` names neither the host it was sent to nor `--public-url`'s.
fn foreign_without_auth(state: &AppState, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    if state.auth.enabled() {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host.trim_end_matches('/'));
    let own = |host: &str| {
        let sent_to = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()));
        let public = state
            .public_url
            .as_deref()
            .and_then(|p| p.split_once("://"))
            .map(|(_, rest)| rest.split('/').next().unwrap_or(""));
        sent_to.is_some_and(|h| h.eq_ignore_ascii_case(host))
            || public.is_some_and(|p| p.eq_ignore_ascii_case(host))
    };
    if origin_host.is_some_and(own) {
        return None;
    }
    Some(
        ApiError::new(
            StatusCode::FORBIDDEN,
            CROSS_ORIGIN_FORBIDDEN,
            "this server has no authentication, so its list of files answers only its own \
             page and clients that send no Origin (the CLI, scripts); configure tokens to use \
             it from another origin",
        )
        .into_response(),
    )
}

/// One upload as the API shows it.
fn entry(state: &AppState, headers: &HeaderMap, u: &Upload) -> Value {
    let complete = u.is_complete();
    json!({
        "id": u.id.as_str(),
        "name": u.file_name,
        "size": u.length,
        "offset": if complete { u.length.unwrap_or_else(|| u.held.covered()) } else { u.held.covered() },
        "state": if complete { "complete" } else { "incomplete" },
        "createdAt": rfc3339(u.created_at),
        "url": complete.then(|| state.download_url(headers, u)),
    })
}

/// The cursor that continues after `u`: base64url (no padding) of `<created_at>.<id>`.
fn cursor_of(u: &Upload) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", u.created_at.0, u.id))
}

/// The position a cursor names, or `None` when it is not one this server made.
fn parse_cursor(c: &str) -> Option<(Timestamp, UploadId)> {
    let raw = URL_SAFE_NO_PAD.decode(c).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    let (at, id) = text.split_once('.')?;
    if at.is_empty() || at.len() > 18 || !at.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Timestamp(at.parse().ok()?), UploadId::parse(id)?))
}

/// `limit` and `cursor` from the query string; other parameters are ignored. An empty
/// `cursor` is the first page.
fn parse_query(q: &str) -> Result<Page, ApiError> {
    let mut limit: Option<String> = None;
    let mut cursor: Option<String> = None;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = crate::form::decode_component(v).ok_or(());
        match k {
            "limit" => {
                let v = decoded.map_err(|_| bad_limit())?;
                if limit.replace(v).is_some() {
                    return Err(ApiError::bad_request(
                        INVALID_LIMIT,
                        "limit is given more than once; give it once",
                    ));
                }
            }
            "cursor" => {
                let v = decoded.map_err(|_| bad_cursor())?;
                if cursor.replace(v).is_some() {
                    return Err(ApiError::bad_request(
                        INVALID_CURSOR,
                        "cursor is given more than once; give the `next` of the last page once",
                    ));
                }
            }
            _ => {}
        }
    }
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n) && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(bad_limit)?,
    };
    let after = match cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(bad_cursor)?),
    };
    Ok(Page { limit, after })
}

fn bad_limit() -> ApiError {
    ApiError::bad_request(
        INVALID_LIMIT,
        format!("limit must be a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"),
    )
}

fn bad_cursor() -> ApiError {
    ApiError::bad_request(
        INVALID_CURSOR,
        "cursor is not one this server handed out: pass the `next` of the previous page as it \
         is, or leave it out for the first page",
    )
}

/// A timestamp (milliseconds since the epoch) as RFC 3339 in UTC:
/// `2025-01-31T09:05:03.042Z`.
fn rfc3339(t: Timestamp) -> String {
    let ms = t.0.max(0);
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 23:59:59.999
        assert_eq!(
            rfc3339(Timestamp(951_868_799_999)),
            "2000-02-29T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339(Timestamp(1_735_689_600_042)),
            "2025-01-01T00:00:00.042Z"
        );
        assert_eq!(
            rfc3339(Timestamp(4_107_542_400_000)),
            "2100-03-01T00:00:00.000Z"
        );
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let id = UploadId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let c = URL_SAFE_NO_PAD.encode(format!("1735689600042.{id}"));
        assert_eq!(parse_cursor(&c), Some((Timestamp(1_735_689_600_042), id)));
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("1735689600042"),
            &URL_SAFE_NO_PAD.encode("x.0123456789abcdef0123456789abcdef"),
            &URL_SAFE_NO_PAD.encode("-5.0123456789abcdef0123456789abcdef"),
            &URL_SAFE_NO_PAD.encode("5.0123456789ABCDEF0123456789abcdef"),
            &URL_SAFE_NO_PAD.encode("5.short"),
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn limits_and_cursors_from_the_query() {
        assert_eq!(
            parse_query("").unwrap(),
            Page {
                limit: DEFAULT_LIMIT,
                after: None
            }
        );
        assert_eq!(parse_query("limit=1&cursor=&x=y").unwrap().limit, 1);
        assert_eq!(parse_query("limit=1000").unwrap().limit, MAX_LIMIT);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=+5",
            "limit=",
            "limit=ten",
            "limit=1&limit=2",
        ] {
            assert_eq!(parse_query(bad).unwrap_err().code, INVALID_LIMIT, "{bad}");
        }
        for bad in ["cursor=zz", "cursor=%FF", "cursor=a&cursor=b"] {
            assert_eq!(parse_query(bad).unwrap_err().code, INVALID_CURSOR, "{bad}");
        }
    }
}
