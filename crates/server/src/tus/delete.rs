//! `DELETE /files/<id>`: tus "Termination".

use super::TusError;
use crate::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_core::engine::Actor;
use ferry_core::upload::UploadId;

/// The engine removes the bytes, then the record. "Termination": an existing upload, finished
/// or not, answers 204 No Content; afterwards its URL answers 404. A second DELETE of the
/// same URL is such a later request, so it gets 404 as well — tus-js-client's `terminate()`
/// only ever sends one, and expects exactly 204 from it.
pub async fn handle(state: &AppState, actor: &Actor, id: &UploadId) -> Response {
    match state.engine.scoped(actor).delete(id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => TusError::from(e).into_response(),
    }
}
