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

/// Middleware: authenticates the request (if the server has identities configured) and
/// stores its [`Caller`]. Invalid or expired credentials are refused here, on every route.
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
                tracing::info!(%reason, "request with an invalid bearer token refused");
            }
            return unauthorized(&e);
        }
    }
    next.run(req).await
}

/// Middleware for routes that act on uploads: refuses a request without a [`Caller`] (401).
pub async fn require(req: Request, next: Next) -> Response {
    if req.extensions().get::<Caller>().is_none() {
        return unauthorized(&AuthError::Missing);
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
            .ok_or_else(|| unauthorized(&AuthError::Missing))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned())
    }
}
