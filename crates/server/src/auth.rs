//! Who a request acts for (SPEC §6): static bearer tokens naming tenants, and JWT bearer
//! tokens signed by the application that owns the users. See docs/SECURITY.md.
//!
//! INTERFACE (implemented by the auth helper; the rest of the server relies on exactly this):
//! - `Auth::from_args(&ServeArgs) -> anyhow::Result<Auth>`: reads `--auth-token` (tenant
//!   `default`), `--auth-tokens-file` (`TOKEN TENANT` per line, `#` comments, a token alone
//!   is its own tenant), `--auth-jwt-secret` (HS256), `--auth-jwt-public-key` (PEM, RS256 or
//!   ES256). Empty tokens, an empty secret, an unreadable file or key: an error naming the
//!   flag. Server-wide tenant limits come from `--max-upload-size`,
//!   `--max-incomplete-uploads`, `--max-stored-bytes`.
//! - `Auth::enabled(&self) -> bool`: any token or JWT key configured.
//! - `Auth::authenticate(&self, &HeaderMap) -> Result<Option<Actor>, AuthError>`:
//!   `Ok(None)` when auth is off; with auth on, a missing `Authorization` header is
//!   `Err(AuthError::Missing)`. The scheme `Bearer` is case-insensitive; static tokens are
//!   compared in constant time (over all configured tokens); a JWT is accepted when its
//!   signature verifies with a configured key, `exp` (if present) is in the future, and `sub`
//!   is a non-empty string; its optional claims `max_upload_size`, `max_incomplete_uploads`,
//!   `max_stored_bytes` (non-negative integers) can only lower the server's limits.

use crate::config::ServeArgs;
use axum::http::HeaderMap;
use ferry_core::engine::Actor;

/// Why a request is not authenticated. The server answers 401 with `WWW-Authenticate: Bearer`
/// and the code below; the message never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that no configured token or key accepts (`reason` is for the log only).
    Invalid(String),
    /// A JWT whose `exp` has passed.
    Expired,
}

impl AuthError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthorized",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::Expired => "token_expired",
        }
    }

    /// A sentence a person can act on.
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::Missing => {
                "this server needs Authorization: Bearer <token> (a configured token or a JWT)"
            }
            AuthError::Invalid(_) => "the bearer token is not valid on this server",
            AuthError::Expired => "the bearer token has expired; get a new one",
        }
    }
}

/// The configured identities.
pub struct Auth {
    default_limits: ferry_core::engine::TenantLimits,
    tokens: Vec<(String, String)>,
}

impl Auth {
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Auth> {
        let mut tokens = Vec::new();
        if let Some(t) = &args.auth_token {
            tokens.push((t.clone(), "default".to_owned()));
        }
        Ok(Auth {
            default_limits: ferry_core::engine::TenantLimits {
                max_upload_size: Some(args.max_upload_size),
                max_incomplete_uploads: args.max_incomplete_uploads,
                max_stored_bytes: args.max_stored_bytes,
            },
            tokens,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Actor>, AuthError> {
        if !self.enabled() {
            return Ok(None);
        }
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(AuthError::Missing)?;
        self.tokens
            .iter()
            .find(|(t, _)| t == presented)
            .map(|(_, tenant)| {
                Some(Actor {
                    tenant: Some(tenant.clone()),
                    limits: self.default_limits.clone(),
                })
            })
            .ok_or_else(|| AuthError::Invalid("unknown token".into()))
    }
}
