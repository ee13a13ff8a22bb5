//! Who a request acts for (SPEC §6): static bearer tokens naming tenants, and JWT bearer
//! tokens signed by the application that owns the users. See docs/SECURITY.md.
//!
//! [`Auth::from_args`] reads the identities once at start-up:
//! - `--auth-token T`: one token of tenant `default`;
//! - `--auth-tokens-file PATH`: one `TOKEN [TENANT]` per line, fields separated by
//!   whitespace, `#` starting a comment (so tokens cannot contain `#`), blank lines ignored;
//!   a token alone is its own tenant (named `token-<16 hex of its BLAKE3>`, so the token
//!   itself is never stored or logged). A token configured twice is an error;
//! - `--auth-jwt-secret S`: JWTs signed with HS256 and this secret;
//! - `--auth-jwt-public-key PATH`: JWTs signed with the PEM public key in PATH, RS256 for an
//!   RSA key, ES256 for an EC P-256 key.
//!
//! Any of them switches authentication on ([`Auth::enabled`]); then every request needs
//! `Authorization: Bearer <token>` ([`Auth::authenticate`]). A presented token is first
//! compared with every static token, then, if it has the three parts of a JWT, verified with
//! the configured key of the algorithm its header names. A JWT's `sub` is the tenant; its
//! `exp` and `nbf` are honoured when present (30 s leeway for clock skew) but not required;
//! its optional `max_upload_size`, `max_incomplete_uploads` and `max_stored_bytes` claims
//! can only lower the server-wide limits (`--max-upload-size`, `--max-incomplete-uploads`,
//! `--max-stored-bytes`).
//!
//! Only BLAKE3 hashes of the static tokens are kept after start-up. No error, log line or
//! `Debug` output repeats a token, a secret or a key.

use crate::config::ServeArgs;
use anyhow::{Context, bail};
use axum::http::{HeaderMap, header};
use ferry_core::codes;
use ferry_core::engine::{Actor, TenantLimits};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::fmt;
use std::path::Path;

/// The tenant of `--auth-token`.
const DEFAULT_TENANT: &str = "default";

/// Tenant names are stamped on uploads and keys and written to logs; a bound keeps them
/// reasonable there.
const MAX_TENANT_LEN: usize = 200;

/// Clock skew tolerated on a JWT's `exp` and `nbf`, in seconds. Small, because an expired
/// token must stop working soon after its issuer says so.
const JWT_LEEWAY_SECS: u64 = 30;

/// HS256 secrets shorter than the hash output can be brute-forced offline from one token.
const MIN_JWT_SECRET_LEN: usize = 32;

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
            AuthError::Missing => codes::UNAUTHORIZED,
            AuthError::Invalid(_) => codes::INVALID_TOKEN,
            AuthError::Expired => codes::TOKEN_EXPIRED,
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

fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::Invalid(reason.into())
}

/// A static token, kept only as its hash: comparing hashes with `blake3::Hash`'s
/// constant-time `==` reveals nothing about how much of a guess was right.
struct StaticToken {
    hash: blake3::Hash,
    tenant: String,
}

/// A key that verifies JWTs of exactly one algorithm.
struct JwtKey {
    alg: Algorithm,
    key: DecodingKey,
}

/// The configured identities.
pub struct Auth {
    server_limits: TenantLimits,
    tokens: Vec<StaticToken>,
    jwt_keys: Vec<JwtKey>,
}

// Written by hand so that no field holding key material can ever be printed.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algs: Vec<Algorithm> = self.jwt_keys.iter().map(|k| k.alg).collect();
        f.debug_struct("Auth")
            .field("server_limits", &self.server_limits)
            .field("static_tokens", &self.tokens.len())
            .field("jwt_algorithms", &algs)
            .finish()
    }
}

impl Auth {
    /// Reads the identities configured by `args` (see the module docs). Errors name the flag
    /// at fault and never contain a token or secret.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Auth> {
        let mut tokens: Vec<StaticToken> = Vec::new();
        if let Some(t) = &args.auth_token {
            check_token(t).map_err(|why| anyhow::anyhow!("--auth-token {why}"))?;
            tokens.push(StaticToken {
                hash: blake3::hash(t.as_bytes()),
                tenant: DEFAULT_TENANT.to_owned(),
            });
        }
        if let Some(path) = &args.auth_tokens_file {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("--auth-tokens-file {}: cannot read it", path.display())
            })?;
            warn_if_readable_by_others(path, "--auth-tokens-file");
            let from_file = parse_tokens_file(&text)
                .map_err(|e| anyhow::anyhow!("--auth-tokens-file {}: {e}", path.display()))?;
            if from_file.is_empty() {
                bail!(
                    "--auth-tokens-file {}: holds no tokens (the server would accept none)",
                    path.display()
                );
            }
            for (line, entry) in from_file {
                if tokens.iter().any(|t| t.hash == entry.hash) {
                    bail!(
                        "--auth-tokens-file {}: line {line}: this token is configured already \
                         (each token must name exactly one tenant)",
                        path.display()
                    );
                }
                tokens.push(entry);
            }
        }

        let mut jwt_keys = Vec::new();
        if let Some(secret) = &args.auth_jwt_secret {
            if secret.is_empty() {
                bail!("--auth-jwt-secret is empty: give a long random secret (32 bytes or more)");
            }
            if secret.len() < MIN_JWT_SECRET_LEN {
                tracing::warn!(
                    "--auth-jwt-secret is shorter than {MIN_JWT_SECRET_LEN} bytes; \
                     tokens signed with it can be forged by guessing it offline"
                );
            }
            jwt_keys.push(JwtKey {
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(path) = &args.auth_jwt_public_key {
            let pem = std::fs::read(path).with_context(|| {
                format!("--auth-jwt-public-key {}: cannot read it", path.display())
            })?;
            let (alg, key) = public_key_from_pem(&pem).map_err(|why| {
                anyhow::anyhow!("--auth-jwt-public-key {}: {why}", path.display())
            })?;
            jwt_keys.push(JwtKey { alg, key });
        }

        Ok(Auth {
            server_limits: TenantLimits {
                max_upload_size: Some(args.max_upload_size),
                max_incomplete_uploads: args.max_incomplete_uploads,
                max_stored_bytes: args.max_stored_bytes,
            },
            tokens,
            jwt_keys,
        })
    }

    /// Whether any token or JWT key is configured, i.e. whether requests must authenticate.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.jwt_keys.is_empty()
    }

    /// The actor of a request: `Ok(None)` when authentication is off, the tenant of its
    /// bearer token when on. A request without a bearer token is [`AuthError::Missing`]
    /// (it may still carry a signed download link); one whose token nobody accepts is
    /// [`AuthError::Invalid`] or [`AuthError::Expired`].
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Actor>, AuthError> {
        if !self.enabled() {
            return Ok(None);
        }
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next().ok_or(AuthError::Missing)?;
        // Two credentials are ambiguous: which one a proxy or the server looked at could
        // differ (SPEC §6 refuses duplicate control headers).
        if values.next().is_some() {
            return Err(invalid("several Authorization headers"));
        }
        let token = bearer_token(value.as_bytes()).ok_or(AuthError::Missing)?;
        if let Some(tenant) = self.static_tenant(token) {
            return Ok(Some(Actor::tenant(tenant, self.server_limits.clone())));
        }
        if !self.jwt_keys.is_empty() && looks_like_jwt(token) {
            return self.verify_jwt(token).map(Some);
        }
        Err(invalid("unknown token"))
    }

    /// The tenant of the static token `presented`, comparing it with every configured token
    /// so that the time taken does not depend on which one (if any) matches.
    fn static_tenant(&self, presented: &[u8]) -> Option<&str> {
        let presented = blake3::hash(presented);
        let mut found = None;
        for t in &self.tokens {
            if t.hash == presented {
                found = Some(t.tenant.as_str());
            }
        }
        found
    }

    fn verify_jwt(&self, token: &[u8]) -> Result<Actor, AuthError> {
        // `alg: none` and algorithms jsonwebtoken does not know fail to parse here.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("JWT header unreadable, or its alg is not supported"))?;
        let mut result = Err(invalid(format!(
            "JWT alg {:?} has no key configured on this server",
            header.alg
        )));
        for k in self.jwt_keys.iter().filter(|k| k.alg == header.alg) {
            result = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &k.key,
                &validation(k.alg),
            )
            .map_err(|e| jwt_error(e.kind()))
            .and_then(|data| self.actor_from_claims(&data.claims));
            if result.is_ok() {
                break;
            }
        }
        result
    }

    /// The actor named by a verified JWT's claims.
    fn actor_from_claims(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Actor, AuthError> {
        let tenant = match claims.get("sub") {
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err(invalid("JWT sub is not a string")),
            None => return Err(invalid("JWT has no sub (the tenant)")),
        };
        check_tenant(tenant).map_err(|why| invalid(format!("JWT sub {why}")))?;
        let limit = |name: &str| match claims.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| invalid(format!("JWT {name} is not a non-negative integer"))),
        };
        let claimed = TenantLimits {
            max_upload_size: limit("max_upload_size")?,
            max_incomplete_uploads: limit("max_incomplete_uploads")?,
            max_stored_bytes: limit("max_stored_bytes")?,
        };
        Ok(Actor::tenant(
            tenant.clone(),
            self.server_limits.lowered_by(&claimed),
        ))
    }
}

/// What a JWT of `alg` must satisfy besides its signature.
fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    // Applications issue long-lived service tokens without `exp`; one that has it is held
    // to it.
    v.required_spec_claims.clear();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = JWT_LEEWAY_SECS;
    // `validate_aud` stays on: a token carrying an `aud` was meant for some other service,
    // and this server has no audience of its own to match (RFC 7519 §4.1.3).
    v
}

/// A log-only reason for a refused JWT. Fixed sentences rather than the error's `Display`,
/// which may quote parts of the token.
fn jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => invalid("JWT signature does not verify"),
        ErrorKind::ImmatureSignature => invalid("JWT is not valid yet (nbf)"),
        ErrorKind::InvalidAudience => {
            invalid("JWT has an aud claim; this server accepts only tokens without one")
        }
        ErrorKind::InvalidClaimFormat(claim) => invalid(format!("JWT {claim} is malformed")),
        ErrorKind::InvalidAlgorithm => invalid("JWT alg does not match the key"),
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            invalid("the configured JWT key cannot verify this token")
        }
        _ => invalid("JWT malformed"),
    }
}

/// The token of `Authorization: Bearer <token>`: the scheme in any case, then one or more
/// spaces (RFC 7235 §2.1). `None` for another scheme or an empty token.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Three dot-separated parts: the compact serialisation of a JWS (RFC 7515 §7.1).
fn looks_like_jwt(token: &[u8]) -> bool {
    token.iter().filter(|&&b| b == b'.').count() == 2
}

/// Why `token` can never be presented, if so. The message never contains the token.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("is empty: give a long random token".into());
    }
    if token.trim() != token {
        return Err("has leading or trailing whitespace, which a request cannot carry".into());
    }
    if token.chars().any(char::is_control) {
        return Err("contains a control character, which a request cannot carry".into());
    }
    Ok(())
}

/// Why `name` is not a usable tenant name, if so. Tenant names are not secret.
fn check_tenant(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_TENANT_LEN {
        return Err(format!("is longer than {MAX_TENANT_LEN} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(())
}

/// The tokens of a tokens file with the line each came from. Errors name the line, never
/// its content.
fn parse_tokens_file(text: &str) -> Result<Vec<(usize, StaticToken)>, String> {
    let mut out: Vec<(usize, StaticToken)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let content = line.split('#').next().unwrap_or_default();
        let fields: Vec<&str> = content.split_whitespace().collect();
        // A token alone is its own tenant, named after a digest of it: the name is stored
        // with every upload and written to logs, where the token itself must never be.
        let derived;
        let (token, tenant) = match fields[..] {
            [] => continue,
            [token] => {
                derived = lone_tenant(token);
                (token, derived.as_str())
            }
            [token, tenant] => (token, tenant),
            _ => {
                return Err(format!(
                    "line {n}: expected `TOKEN TENANT`, found {} fields",
                    fields.len()
                ));
            }
        };
        check_token(token).map_err(|why| format!("line {n}: the token {why}"))?;
        check_tenant(tenant).map_err(|why| {
            if fields.len() == 1 {
                format!(
                    "line {n}: the token stands for its own tenant, and as a tenant name it {why}"
                )
            } else {
                format!("line {n}: the tenant name {why}")
            }
        })?;
        let hash = blake3::hash(token.as_bytes());
        if let Some((first, _)) = out.iter().find(|(_, t)| t.hash == hash) {
            return Err(format!(
                "line {n}: the same token as on line {first} (each token must name exactly one tenant)"
            ));
        }
        out.push((
            n,
            StaticToken {
                hash,
                tenant: tenant.to_owned(),
            },
        ));
    }
    Ok(out)
}

/// The algorithm and key of a PEM public key: RS256 for RSA (PKCS#1 or SPKI), ES256 for EC
/// P-256 (SPKI).
fn public_key_from_pem(pem: &[u8]) -> Result<(Algorithm, DecodingKey), String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_owned())?;
    let label = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or_else(|| "not a PEM file (no -----BEGIN line)".to_owned())?;
    match label {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        l if l.contains("PRIVATE KEY") => {
            return Err("holds a private key; give only the public key \
                        (openssl pkey -in KEY -pubout)"
                .into());
        }
        _ => return Err(format!("holds a {label}, not a PUBLIC KEY")),
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // jsonwebtoken reads any curve's point here; the ES256 verifier accepts only a point
        // on P-256. Building it now, on an empty signature, catches another curve at
        // start-up rather than on every request.
        return match jsonwebtoken::crypto::verify("", b"", &key, Algorithm::ES256) {
            Ok(_) => Ok((Algorithm::ES256, key)),
            Err(_) => Err("holds an EC key that is not on P-256 (only ES256 is supported)".into()),
        };
    }
    Err("holds neither an RSA nor an EC public key (RS256 or ES256)".into())
}

/// Secrets in a file anyone on the machine can read are not secret; say so, once, at start.
fn warn_if_readable_by_others(path: &Path, flag: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "{flag} {}: readable by other users (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
}

/// The tenant of a token listed alone: `token-` and 16 hex digits of its BLAKE3 digest, so
/// the same token is always the same tenant and the name reveals nothing of the token.
fn lone_tenant(token: &str) -> String {
    let hex = blake3::hash(token.as_bytes()).to_hex();
    format!("token-{}", &hex[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::time::{SystemTime, UNIX_EPOCH};

    const SECRET: &str = "an HS256 secret of thirty-two bytes or more, for tests";

    // Generated on this machine with `openssl ecparam -name prime256v1 -genkey`,
    // `openssl pkcs8 -topk8 -nocrypt` and `openssl ec -pubout`; for tests only.
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGyvztEYW/xEoRR+K
R2BPwFQe1ukaG1NbF6RiIcMhUyChRANCAAT96e00QHfPz11rRXyHfnQ6M+ckiuIK
TIqPbWpg57iNosuqANSpgxfgYrSPTHc+oAb5coLp5MUsi5byzp0foWB+
-----END PRIVATE KEY-----
";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE/entNEB3z89da0V8h350OjPnJIri
CkyKj21qYOe4jaLLqgDUqYMX4GK0j0x3PqAG+XKC6eTFLIuW8s6dH6Fgfg==
-----END PUBLIC KEY-----
";
    // `openssl ecparam -name secp384r1 -genkey | openssl ec -pubout`.
    const EC_P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEB033bfiUKeSb6HCyeFoUM7ETxe3qSrFp
xUBEJWwjMacqXzB+U3woqz5rbySHcCFHKN2TheT4f4alZuA5dwISY7By0YcUFv+E
sm7xpTM7idV5NLA57bkvaMYwIS86iK4L
-----END PUBLIC KEY-----
";
    // `openssl genrsa 2048` and `openssl rsa -pubout`; for tests only.
    const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDAZ5tfR1pJ2+oT
OR8qxwUaLfLPoHfN8E/Lv3PZ5NyBk3+DBfFFhA2yNN5s5Ha+sBsCpeRaPzTYOvtk
4PXcI2usNLzhbqc6T1ATnxuNyB2IP97EtjZPc+0TnBCyE26hFfPTldYwBXaEi2UC
nV3SwEP2KyxfI7d2zuVM4gAD00Klcy0lwlG/8sfu1j/yl1p2E4sV1iiFbaHEzlhW
aiklfWsu1wv8l2VXYFFGWKr7ie8IaGQsxNMHOXuVCF2EDGz0kAvhe1QUbrgig5V/
jFBE1OhOfYGWGi+qdH5XIr29usQMIEm/ZanU0EZSngEQb5aQaVA/PdInyFcjChdr
G0shzOtlAgMBAAECggEAAet0cHZcdis+zMBluhIEMa7d+DTBfUM1tlQOs6wnY0dm
bh1jKM0SmbiYXsmVu9J8e6ZH5ob/38q7cCthf3rmbILHJooyxSUHWZuICqjHvI8l
D8fg4ndldHU0qHze3MJQ1pba/3w8LuCpwGV/qZWE84EsrbA+HVW9bX09sOR1+KHD
9lMLxg7VV5iKExUlq8UyzzLU2Vs9/jBcpPkziFD4Xv1uxRraJ/W0kXE+FT1gcj49
IDnJ3I82w3LJUw/PCJCMI9w1gkm5LdiAzmNkmybMSofmKBdreUKhAbB0wULKd8kA
4ByAvKIepKjiLapJImxuV41MHsFpHqUGnrfmqOtBcQKBgQD5wsBtReVyWo2DRBRL
kK3OqnJ5t4yynOquNceE7+ZIsSsx60KzuqrkuT3kjaj/UV9vWEScLu4v5nvHrpow
z0bNoUVgflPpNB36xNc4r6zqVRTolfUDn+RcI+wZE+3DMZPgE/AevBjCZFgE+BHl
GgeHnWwudmrwP28F6woIeWdXpwKBgQDFNg6RfsX7Sv2WWfSh0DbwnMih55HYmOkx
LHDHjuDDzVoa2GUqNcgCUubpLTbHJf0MZh1DMv9/u8/+GvMXrwhQla5LRd6KWJj9
OSzfep5nfjfur4OZZLc3QOI9+pbSgaTWQVPz8fDFNdKOrA6r0NHJdYQj28rrhzGA
7xXKpsCGEwKBgBF7IxLC4KNXWS5F1pHPZ4refTKtuShLOVXGJ9fTHrAZzmcpCzsf
JpTprj5P9/Me0+osKGkyE7PAkwtP2jTuXQtJbVyqmt7oqeyCWHn8OcMQ/2ykCkkd
qNMWJJFAxtRxpOL7IkRUb/szIMIARuhdIQfJ6ed6nFOCbRfh8orTTHtjAoGBAJh6
HjNyMEMGDSFlddZydTf+EMXVlJdCSvJBKQWyO6hIKsWc0EMdiAH79RsOYU8C2S7v
+OoPESrCnKMcVR3Xr/cWc8cxQ0n2DHuk7EPxu23LUhWS0I4WJ+5plUNUb65cnIUn
x3BSfNUNszmqYEGJ19oKqVtMQg1u3uCQemnQGgTPAoGADSgPp+zcB7l8AV8zvrBu
dujv0YSvnhUh5VYQSWeVU0dg4DA+S8vXcS5kR/cFiINMtPjfEB5iGCin8IhD1lZ3
aRDoVDISqnh2mwXt8hIU3Q8dO9hp1MkunFLega70FlqQaZyt7xY4M2IM0vx6BAWx
tCd/4subYBJXENKFv1e/9xw=
-----END PRIVATE KEY-----
";
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwGebX0daSdvqEzkfKscF
Gi3yz6B3zfBPy79z2eTcgZN/gwXxRYQNsjTebOR2vrAbAqXkWj802Dr7ZOD13CNr
rDS84W6nOk9QE58bjcgdiD/exLY2T3PtE5wQshNuoRXz05XWMAV2hItlAp1d0sBD
9issXyO3ds7lTOIAA9NCpXMtJcJRv/LH7tY/8pdadhOLFdYohW2hxM5YVmopJX1r
LtcL/JdlV2BRRliq+4nvCGhkLMTTBzl7lQhdhAxs9JAL4XtUFG64IoOVf4xQRNTo
Tn2BlhovqnR+VyK9vbrEDCBJv2Wp1NBGUp4BEG+WkGlQPz3SJ8hXIwoXaxtLIczr
ZQIDAQAB
-----END PUBLIC KEY-----
";

    struct Setup {
        dir: tempfile::TempDir,
        args: ServeArgs,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs::for_dir(dir.path());
        Setup { dir, args }
    }

    impl Setup {
        fn file(&self, name: &str, content: &str) -> std::path::PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            p
        }

        fn tokens_file(mut self, content: &str) -> Self {
            self.args.auth_tokens_file = Some(self.file("tokens", content));
            self
        }

        fn jwt_secret(mut self) -> Self {
            self.args.auth_jwt_secret = Some(SECRET.into());
            self
        }

        fn public_key(mut self, pem: &str) -> Self {
            self.args.auth_jwt_public_key = Some(self.file("key.pem", pem));
            self
        }

        fn auth(&self) -> Auth {
            Auth::from_args(&self.args).unwrap()
        }

        fn error(&self) -> String {
            format!("{:#}", Auth::from_args(&self.args).unwrap_err())
        }
    }

    fn with_authorization(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn bearer(token: &str) -> HeaderMap {
        with_authorization(&format!("Bearer {token}"))
    }

    fn tenant_of(auth: &Auth, headers: &HeaderMap) -> Result<String, AuthError> {
        auth.authenticate(headers)
            .map(|a| a.expect("auth is on").tenant.expect("a tenant"))
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn parsed(text: &str) -> Result<Vec<(usize, String)>, String> {
        parse_tokens_file(text).map(|v| v.into_iter().map(|(n, t)| (n, t.tenant)).collect())
    }

    #[test]
    fn tokens_file_reads_pairs_lone_tokens_comments_and_blank_lines() {
        let text = "# tenants of this server\n\
                    \n\
                    tok-a   alice\n\
                    \ttok-b\tbob   # the second one\n\
                    tok-self\n\
                    \x20\x20 # indented comment\n\
                    tok-c alice\n";
        assert_eq!(
            parsed(text).unwrap(),
            vec![
                (3, "alice".to_owned()),
                (4, "bob".to_owned()),
                (5, lone_tenant("tok-self")),
                (7, "alice".to_owned()),
            ]
        );
        let own = lone_tenant("tok-self");
        assert!(
            own.starts_with("token-") && !own.contains("tok-self"),
            "{own}"
        );
        assert_ne!(own, lone_tenant("tok-other"));
        assert_eq!(parsed("").unwrap(), vec![]);
    }

    #[test]
    fn tokens_file_refuses_bad_lines_naming_the_line_not_the_token() {
        let e = parsed("tok-a alice\ntok-b bob extra\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("3 fields"), "{e}");
        assert!(!e.contains("tok-b"), "{e}");

        let e = parsed("tok-a alice\n\ntok-a bob\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("line 1"), "{e}");
        assert!(!e.contains("tok-a"), "{e}");

        let long = "t".repeat(MAX_TENANT_LEN + 1);
        let e = parsed(&format!("tok-a {long}\n")).unwrap_err();
        assert!(e.contains("line 1") && e.contains("longer"), "{e}");
        // A long token alone is fine: its tenant is named after its digest.
        assert!(parsed(&format!("{long}\n")).is_ok());
        assert!(parsed("tok-a al\u{1}ice\n").is_err());
        assert!(parsed(&format!("tok-a {}\n", "t".repeat(MAX_TENANT_LEN))).is_ok());
    }

    #[test]
    fn from_args_errors_name_the_flag_and_never_the_secret() {
        let mut s = setup();
        s.args.auth_token = Some(String::new());
        assert!(s.error().contains("--auth-token is empty"), "{}", s.error());

        let mut s = setup();
        s.args.auth_token = Some(" padded-token ".into());
        let e = s.error();
        assert!(
            e.contains("--auth-token") && !e.contains("padded-token"),
            "{e}"
        );

        let mut s = setup();
        s.args.auth_jwt_secret = Some(String::new());
        assert!(
            s.error().contains("--auth-jwt-secret is empty"),
            "{}",
            s.error()
        );

        let mut s = setup();
        s.args.auth_tokens_file = Some(s.dir.path().join("missing"));
        let e = s.error();
        assert!(
            e.contains("--auth-tokens-file") && e.contains("missing"),
            "{e}"
        );

        let s = setup().tokens_file("# nobody yet\n\n");
        assert!(s.error().contains("no tokens"), "{}", s.error());

        let s = setup().tokens_file("secret-one alice\nsecret-two bob carol\n");
        let e = s.error();
        assert!(
            e.contains("--auth-tokens-file") && e.contains("line 2"),
            "{e}"
        );
        assert!(!e.contains("secret-"), "{e}");

        let mut s = setup().tokens_file("the-same-token bob\n");
        s.args.auth_token = Some("the-same-token".into());
        let e = s.error();
        assert!(e.contains("line 1") && e.contains("already"), "{e}");
        assert!(!e.contains("the-same-token"), "{e}");

        let mut s = setup();
        s.args.auth_jwt_public_key = Some(s.dir.path().join("nokey.pem"));
        assert!(s.error().contains("--auth-jwt-public-key"), "{}", s.error());
    }

    #[test]
    fn public_keys_other_than_rsa_or_p256_are_refused_at_start() {
        let e = setup().public_key(EC_P384_PUBLIC).error();
        assert!(
            e.contains("--auth-jwt-public-key") && e.contains("P-256"),
            "{e}"
        );
        let e = setup().public_key(EC_PRIVATE).error();
        assert!(e.contains("private key") && !e.contains("MIGH"), "{e}");
        let e = setup().public_key("not a key at all\n").error();
        assert!(
            e.contains("--auth-jwt-public-key") && e.contains("PEM"),
            "{e}"
        );
        let e = setup()
            .public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .error();
        assert!(e.contains("neither an RSA nor an EC"), "{e}");
        assert_eq!(
            setup().public_key(EC_PUBLIC).auth().jwt_keys[0].alg,
            Algorithm::ES256
        );
        assert_eq!(
            setup().public_key(RSA_PUBLIC).auth().jwt_keys[0].alg,
            Algorithm::RS256
        );
    }

    #[test]
    fn without_identities_auth_is_off_and_every_request_is_anonymous() {
        let auth = setup().auth();
        assert!(!auth.enabled());
        assert_eq!(auth.authenticate(&HeaderMap::new()), Ok(None));
        assert_eq!(auth.authenticate(&bearer("anything")), Ok(None));
    }

    #[test]
    fn each_static_token_authenticates_as_its_own_tenant() {
        let mut s = setup().tokens_file("tok-a alice\ntok-b bob\ntok-c alice\ntok-self\n");
        s.args.auth_token = Some("tok-default".into());
        let auth = s.auth();
        assert!(auth.enabled());
        for (token, tenant) in [
            ("tok-default", "default"),
            ("tok-a", "alice"),
            ("tok-b", "bob"),
            ("tok-c", "alice"),
            ("tok-self", lone_tenant("tok-self").as_str()),
        ] {
            assert_eq!(tenant_of(&auth, &bearer(token)).as_deref(), Ok(tenant));
        }
        let actor = auth.authenticate(&bearer("tok-b")).unwrap().unwrap();
        assert_eq!(actor.limits, auth.server_limits);
        assert!(matches!(
            auth.authenticate(&bearer("tok-d")),
            Err(AuthError::Invalid(_))
        ));
        // A prefix or an extension of a token is a different token.
        assert!(auth.authenticate(&bearer("tok-")).is_err());
        assert!(auth.authenticate(&bearer("tok-aa")).is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_missing() {
        let mut s = setup();
        s.args.auth_token = Some("tok".into());
        let auth = s.auth();
        for ok in ["bearer tok", "BEARER tok", "Bearer    tok", "Bearer tok  "] {
            assert_eq!(
                tenant_of(&auth, &with_authorization(ok)).as_deref(),
                Ok("default"),
                "{ok}"
            );
        }
        for missing in [
            "Basic dXNlcjpwYXNz",
            "Bearertok",
            "Bearer",
            "Bearer   ",
            "tok",
        ] {
            assert_eq!(
                auth.authenticate(&with_authorization(missing)),
                Err(AuthError::Missing),
                "{missing}"
            );
        }
        assert_eq!(
            auth.authenticate(&HeaderMap::new()),
            Err(AuthError::Missing)
        );

        let mut two = bearer("tok");
        two.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert!(matches!(
            auth.authenticate(&two),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn hs256_jwt_names_its_tenant_in_sub() {
        let auth = setup().jwt_secret().auth();
        assert!(auth.enabled());
        let token = hs256(json!({ "sub": "alice", "exp": now() + 600 }));
        assert_eq!(tenant_of(&auth, &bearer(&token)).as_deref(), Ok("alice"));
        // `exp` is optional.
        let token = hs256(json!({ "sub": "bob" }));
        assert_eq!(tenant_of(&auth, &bearer(&token)).as_deref(), Ok("bob"));
    }

    #[test]
    fn expired_jwt_is_expired_and_future_nbf_is_invalid() {
        let auth = setup().jwt_secret().auth();
        let token = hs256(json!({ "sub": "alice", "exp": now() - 120 }));
        assert_eq!(auth.authenticate(&bearer(&token)), Err(AuthError::Expired));
        let token = hs256(json!({ "sub": "alice", "nbf": now() + 600 }));
        assert!(matches!(
            auth.authenticate(&bearer(&token)),
            Err(AuthError::Invalid(_))
        ));
        let token = hs256(json!({ "sub": "alice", "exp": "tomorrow" }));
        assert!(matches!(
            auth.authenticate(&bearer(&token)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn jwt_with_a_wrong_secret_or_tampered_claims_is_invalid() {
        let auth = setup().jwt_secret().auth();
        let other = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": "alice" }),
            &EncodingKey::from_secret(b"another secret of thirty-two bytes or more"),
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(&bearer(&other)),
            Err(AuthError::Invalid("JWT signature does not verify".into()))
        );
        // The claims of a token for bob with the signature of one for alice.
        let alice = hs256(json!({ "sub": "alice" }));
        let bob = hs256(json!({ "sub": "bob" }));
        let forged = format!(
            "{}.{}",
            bob.rsplit_once('.').unwrap().0,
            alice.rsplit_once('.').unwrap().1
        );
        assert!(matches!(
            auth.authenticate(&bearer(&forged)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn jwt_with_alg_none_or_another_alg_is_invalid() {
        let auth = setup().jwt_secret().auth();
        // {"alg":"none","typ":"JWT"}.{"sub":"alice"}. with no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.";
        assert!(matches!(
            auth.authenticate(&bearer(none)),
            Err(AuthError::Invalid(_))
        ));
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &json!({ "sub": "alice" }),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            auth.authenticate(&bearer(&hs512)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn jwt_without_a_usable_sub_is_invalid() {
        let auth = setup().jwt_secret().auth();
        for claims in [
            json!({ "exp": now() + 600 }),
            json!({ "sub": "" }),
            json!({ "sub": 42 }),
            json!({ "sub": "x".repeat(MAX_TENANT_LEN + 1) }),
            json!({ "sub": "al\nice" }),
        ] {
            let token = hs256(claims.clone());
            assert!(
                matches!(
                    auth.authenticate(&bearer(&token)),
                    Err(AuthError::Invalid(_))
                ),
                "{claims}"
            );
        }
    }

    #[test]
    fn jwt_with_an_audience_is_invalid() {
        let auth = setup().jwt_secret().auth();
        let token = hs256(json!({ "sub": "alice", "aud": "another-service" }));
        assert!(matches!(
            auth.authenticate(&bearer(&token)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn jwt_claims_lower_the_server_limits_but_never_raise_them() {
        let mut s = setup().jwt_secret();
        s.args.max_upload_size = 1000;
        s.args.max_incomplete_uploads = Some(10);
        s.args.max_stored_bytes = None;
        let auth = s.auth();
        let limits = |claims| {
            auth.authenticate(&bearer(&hs256(claims)))
                .map(|a| a.unwrap().limits)
        };
        assert_eq!(
            limits(json!({ "sub": "a" })),
            Ok(TenantLimits {
                max_upload_size: Some(1000),
                max_incomplete_uploads: Some(10),
                max_stored_bytes: None,
            })
        );
        assert_eq!(
            limits(json!({
                "sub": "a",
                "max_upload_size": 10,
                "max_incomplete_uploads": 2,
                "max_stored_bytes": 5000,
            })),
            Ok(TenantLimits {
                max_upload_size: Some(10),
                max_incomplete_uploads: Some(2),
                max_stored_bytes: Some(5000),
            })
        );
        assert_eq!(
            limits(json!({
                "sub": "a",
                "max_upload_size": 1_000_000,
                "max_incomplete_uploads": 50,
            })),
            Ok(TenantLimits {
                max_upload_size: Some(1000),
                max_incomplete_uploads: Some(10),
                max_stored_bytes: None,
            })
        );
        for bad in [
            json!({ "sub": "a", "max_upload_size": -1 }),
            json!({ "sub": "a", "max_stored_bytes": 1.5 }),
            json!({ "sub": "a", "max_incomplete_uploads": "3" }),
        ] {
            assert!(
                matches!(limits(bad.clone()), Err(AuthError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn es256_jwt_verifies_with_a_pem_public_key() {
        let auth = setup().public_key(EC_PUBLIC).auth();
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &json!({ "sub": "carol", "exp": now() + 600 }),
            &key,
        )
        .unwrap();
        assert_eq!(tenant_of(&auth, &bearer(&token)).as_deref(), Ok("carol"));
        // No HS256 secret is configured, so an HS256 token has no key to verify it.
        let hs = hs256(json!({ "sub": "carol" }));
        assert!(matches!(
            auth.authenticate(&bearer(&hs)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn rs256_jwt_verifies_with_a_pem_public_key_beside_an_hs256_secret() {
        let auth = setup().jwt_secret().public_key(RSA_PUBLIC).auth();
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({ "sub": "dave" }),
            &key,
        )
        .unwrap();
        assert_eq!(tenant_of(&auth, &bearer(&token)).as_deref(), Ok("dave"));
        let hs = hs256(json!({ "sub": "erin" }));
        assert_eq!(tenant_of(&auth, &bearer(&hs)).as_deref(), Ok("erin"));
    }

    #[test]
    fn hs256_token_signed_with_the_public_key_is_invalid() {
        // The classic confusion: an attacker signs with the (public) RSA key as HMAC secret.
        let auth = setup().public_key(RSA_PUBLIC).auth();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": "mallory" }),
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            auth.authenticate(&bearer(&token)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn debug_and_errors_never_show_tokens_or_secrets() {
        let mut s = setup().jwt_secret().tokens_file("file-token-xyz alice\n");
        s.args.auth_token = Some("flag-token-xyz".into());
        let auth = s.auth();
        let debug = format!("{auth:?}");
        for secret in ["file-token-xyz", "flag-token-xyz", SECRET] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let Err(AuthError::Invalid(reason)) = auth.authenticate(&bearer("guess-token-xyz")) else {
            panic!("an unknown token is invalid");
        };
        assert!(!reason.contains("guess-token-xyz"), "{reason}");
    }
}
