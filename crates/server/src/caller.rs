//! The actor of each request (SPEC §6), found once per request by [`identify`] and handed to
//! handlers by the [`Caller`] extractor. Fronts act through `state.engine.scoped(&actor)`, so
//! ownership is checked in one place, the engine's [`ferry_core::tenant::Scoped`].

use crate::AppState;
use crate::auth::AuthError;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_core::engine::Actor;

/// Who the request acts for. Absent from a request with authentication configured and no
/// credentials: routes that need an actor answer 401, downloads may still pass with a
/// signed link.
#[derive(Clone, Debug)]
pub struct Caller(pub Actor);

/// Why a request that presented credentials has no [`Caller`]: routes that need one answer
/// with this (`invalid_token`, `token_expired`) rather than `unauthorized`.
#[derive(Clone, Debug)]
struct Refused(AuthError);

/// Middleware: authenticates the request (if the server has identities configured) and
/// stores its [`Caller`]. Credentials that do not verify leave the request without one, so
/// routes that act on uploads refuse it (401 with the reason), while routes that need no
/// identity still answer: `/healthz`, `/metrics` with its own token, the page, and a
/// download by a signed link (a stale token beside a valid link does not void the link).
pub async fn identify(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match state.auth.authenticate(req.headers()) {
        Ok(Some(actor)) => {
            req.extensions_mut().insert(Caller(actor));
        }
        Ok(None) => {
            req.extensions_mut().insert(Caller(Actor::anonymous()));
        }
        Err(AuthError::Missing) => {}
        Err(e) => {
            if let AuthError::Invalid(reason) = &e {
                tracing::info!(%reason, "request with a bearer token that does not verify");
            }
            req.extensions_mut().insert(Refused(e));
        }
    }
    next.run(req).await
}

/// The 401 for a request without a [`Caller`]: the stored reason, or "no credentials".
pub fn refusal(extensions: &axum::http::Extensions) -> Response {
    match extensions.get::<Refused>() {
        Some(Refused(e)) => unauthorized(e),
        None => unauthorized(&AuthError::Missing),
    }
}

/// Middleware for routes that act on uploads: refuses a request without a [`Caller`] (401).
pub async fn require(req: Request, next: Next) -> Response {
    if req.extensions().get::<Caller>().is_none() {
        return refusal(req.extensions());
    }
    next.run(req).await
}

/// 401 with `WWW-Authenticate: Bearer`, a stable code and a sentence.
pub fn unauthorized(e: &AuthError) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.message()).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| refusal(&parts.extensions))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned())
    }
}
