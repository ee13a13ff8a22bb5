//! The protocol fronts this server speaks, in one list.
//!
//! A front is a module that parses its dialect's requests, calls the engine and renders the
//! answers. It describes itself with a [`Front`]: its routes, the dialect its uploads are
//! counted under, the route groups of the request metrics, and the headers browsers need
//! CORS to let through. Metrics labels and the CORS headers are computed from this list, so
//! a new dialect is a new module plus one line in [`all`]: nothing in `ferry_core` and no
//! other front changes.

use crate::AppState;
use axum::Router;
use ferry_core::upload::Dialect;

/// What the rest of the server needs to know about one front.
pub struct Front {
    /// The dialect its uploads are created in (the `dialect` label of the upload counters).
    pub dialect: Dialect,
    /// Its routes (authentication applied by the front itself).
    pub routes: fn(AppState) -> Router<AppState>,
    /// Route groups of the HTTP metrics: (route path as registered, group name).
    pub metric_routes: &'static [(&'static str, &'static str)],
    /// Request headers its browser clients send (allowed in CORS preflights).
    pub request_headers: &'static [&'static str],
    /// Response headers its browser clients' scripts read (exposed by CORS).
    pub response_headers: &'static [&'static str],
}

/// Every front, in the order their routes are merged.
pub fn all() -> &'static [&'static Front] {
    static ALL: &[&Front] = &[
        &crate::chunked::FRONT,
        &crate::offset::FRONT,
        &crate::tus::FRONT,
        &crate::resumable::FRONT,
    ];
    ALL
}

/// The route groups of the HTTP metrics: the fronts' groups (first use order), then the
/// server's own (`download`, `ops`, `other`, always last).
pub fn metric_groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for f in all() {
        for (_, g) in f.metric_routes {
            if !groups.contains(g) {
                groups.push(g);
            }
        }
    }
    for g in ["download", "ops", "other"] {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

/// The group of a route path a front registered, if any.
pub fn metric_group_of(path: &str) -> Option<&'static str> {
    all()
        .iter()
        .flat_map(|f| f.metric_routes.iter())
        .find(|(p, _)| *p == path)
        .map(|(_, g)| *g)
}

/// `base` and every front's headers of one kind, each once, comma-separated.
pub fn header_list(base: &[&str], of: fn(&Front) -> &'static [&'static str]) -> String {
    let mut names: Vec<&str> = base.to_vec();
    for f in all() {
        for h in of(f) {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(h)) {
                names.push(h);
            }
        }
    }
    names.join(", ")
}
