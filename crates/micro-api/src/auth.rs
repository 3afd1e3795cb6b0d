//! Who may call what (`--auth`), and what services learn about the caller.
//!
//! Every request, with or without `--auth`:
//! - loses any `Micro-User-Id`, `Micro-User-Name` and `Micro-Remote-Ip`
//!   headers it came with: only the gateway sets them;
//! - gains `Micro-Remote-Ip`, the peer address the gateway saw.
//!
//! With `--auth=jwt`, a request whose path matches an `--auth_public_paths`
//! glob passes as it is; any other needs `Authorization: Bearer <JWT>`,
//! verified here (HS256 with `--auth_secret`, or RS256 / ES256 / EdDSA with
//! `--auth_public_key`; `exp` required), and a path an `--auth_paths` glob
//! opens (every path by default, except for the rpc handler, which reaches
//! every endpoint of every service in its namespace, so opens only what the
//! globs name). The verified `sub` and `name` claims reach the service as
//! `Micro-User-Id` and `Micro-User-Name` (metadata, for the api handler
//! `go.api.Request` headers); the token itself goes on unchanged, so a
//! service reachable other than through the gateway verifies it itself.
//!
//! Globs: `*` is any run of characters but `/`, `**` any run at all;
//! matched against the path, case-sensitively.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::Inner;
use crate::error::ApiError;
use crate::serve::RemoteAddr;

/// The caller's user id (the token's `sub`), set by the gateway only.
pub const USER_ID_HEADER: &str = "micro-user-id";
/// The caller's user name (the token's `name`), set by the gateway only.
pub const USER_NAME_HEADER: &str = "micro-user-name";
/// The peer address the gateway saw, set by the gateway only.
pub const REMOTE_IP_HEADER: &str = "micro-remote-ip";

/// Longest claim value passed on as a header.
const MAX_CLAIM_LEN: usize = 256;

/// `--auth=jwt`: how tokens are verified, and which paths need one.
#[derive(Clone)]
pub struct AuthConfig {
    key: Arc<DecodingKey>,
    algorithm: Algorithm,
    public_paths: Vec<Glob>,
    auth_paths: Option<Vec<Glob>>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("public_paths", &self.public_paths)
            .field("auth_paths", &self.auth_paths)
            .finish_non_exhaustive()
    }
}

/// Why `--auth` cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "--auth=jwt needs a key: --auth_secret (MICRO_AUTH_SECRET, HS256) or --auth_public_key FILE (RS256, ES256, EdDSA)"
    )]
    NoKey,
    #[error("give either --auth_secret or --auth_public_key, not both")]
    TwoKeys,
    #[error("cannot read --auth_public_key {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("invalid glob {0:?} (expected a path such as /user/account/login or /greeter/**)")]
    Glob(String),
}

impl AuthConfig {
    /// HS256 tokens signed with `secret` (as user-srv signs them).
    pub fn hs256(secret: &[u8]) -> AuthConfig {
        AuthConfig {
            key: Arc::new(DecodingKey::from_secret(secret)),
            algorithm: Algorithm::HS256,
            public_paths: Vec::new(),
            auth_paths: None,
        }
    }

    /// Tokens signed with the private half of the PEM public key in `path`:
    /// RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA).
    pub fn public_key_file(path: &Path) -> Result<AuthConfig, AuthError> {
        let pem = std::fs::read(path).map_err(|e| AuthError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::public_key_pem(&pem).map_err(|reason| AuthError::KeyFile {
            path: path.display().to_string(),
            reason,
        })
    }

    /// As [`AuthConfig::public_key_file`], from the PEM text.
    pub fn public_key_pem(pem: &[u8]) -> Result<AuthConfig, String> {
        let (key, algorithm) = if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, Algorithm::EdDSA)
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, Algorithm::ES256)
        } else {
            return Err("not a PEM RSA, P-256 or Ed25519 public key".into());
        };
        Ok(AuthConfig {
            key: Arc::new(key),
            algorithm,
            public_paths: Vec::new(),
            auth_paths: None,
        })
    }

    /// From the command line's values: exactly one of `secret` and
    /// `public_key`.
    pub fn from_flags(
        secret: Option<&str>,
        public_key: Option<&Path>,
        public_paths: &[String],
        auth_paths: Option<&[String]>,
    ) -> Result<AuthConfig, AuthError> {
        let secret = secret.filter(|s| !s.is_empty());
        let config = match (secret, public_key) {
            (Some(_), Some(_)) => return Err(AuthError::TwoKeys),
            (Some(secret), None) => AuthConfig::hs256(secret.as_bytes()),
            (None, Some(path)) => AuthConfig::public_key_file(path)?,
            (None, None) => return Err(AuthError::NoKey),
        };
        let config = config.public_paths(public_paths)?;
        match auth_paths {
            Some(paths) => config.auth_paths(paths),
            None => Ok(config),
        }
    }

    /// Paths served without a token.
    pub fn public_paths(mut self, globs: &[impl AsRef<str>]) -> Result<AuthConfig, AuthError> {
        self.public_paths = parse_globs(globs)?;
        Ok(self)
    }

    /// Paths a valid token opens (default: every path, except for the rpc
    /// handler: none).
    pub fn auth_paths(mut self, globs: &[impl AsRef<str>]) -> Result<AuthConfig, AuthError> {
        self.auth_paths = Some(parse_globs(globs)?);
        Ok(self)
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn is_public(&self, path: &str) -> bool {
        // `/` only answers the gateway's version.
        path == "/" || self.public_paths.iter().any(|g| g.matches(path))
    }

    fn opens(&self, path: &str, rpc: bool) -> bool {
        match &self.auth_paths {
            Some(globs) => globs.iter().any(|g| g.matches(path)),
            None => !rpc,
        }
    }

    /// The claims of a valid token.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 30;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_string(),
                _ => "invalid token".to_string(),
            })
    }
}

fn parse_globs(globs: &[impl AsRef<str>]) -> Result<Vec<Glob>, AuthError> {
    globs
        .iter()
        .map(|g| g.as_ref().trim())
        .filter(|g| !g.is_empty())
        .map(Glob::parse)
        .collect()
}

/// What the gateway reads from a token.
#[derive(Clone, Debug, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// A path pattern: `*` within a segment, `**` across segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn parse(text: &str) -> Result<Glob, AuthError> {
        if !text.starts_with('/') || text.contains("***") || text.len() > 1024 {
            return Err(AuthError::Glob(text.to_string()));
        }
        Ok(Glob(text.to_string()))
    }

    pub fn matches(&self, path: &str) -> bool {
        glob_match(self.0.as_bytes(), path.as_bytes())
    }
}

/// Glob matching by dynamic programming over the pattern: time
/// O(path × pattern), never exponential.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Byte(u8),
        Star,
        AnyStar,
    }
    let mut toks = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        if pattern[i] == b'*' {
            if pattern.get(i + 1) == Some(&b'*') {
                toks.push(Tok::AnyStar);
                i += 2;
            } else {
                toks.push(Tok::Star);
                i += 1;
            }
        } else {
            toks.push(Tok::Byte(pattern[i]));
            i += 1;
        }
    }
    // matched[j]: the first j tokens match the text read so far.
    let mut matched = vec![false; toks.len() + 1];
    matched[0] = true;
    for (j, tok) in toks.iter().enumerate() {
        matched[j + 1] = matched[j] && !matches!(tok, Tok::Byte(_));
    }
    let mut next = vec![false; toks.len() + 1];
    for &c in text {
        next[0] = false;
        for (j, tok) in toks.iter().enumerate() {
            next[j + 1] = match tok {
                Tok::Byte(b) => matched[j] && *b == c,
                Tok::Star => next[j] || (matched[j + 1] && c != b'/'),
                Tok::AnyStar => next[j] || matched[j + 1],
            };
        }
        std::mem::swap(&mut matched, &mut next);
        if !matched.iter().any(|m| *m) {
            return false;
        }
    }
    matched[toks.len()]
}

/// Run by [`crate::edge::edge`] on every request: strips and sets the
/// gateway's headers; with `--auth`, checks the token and the path rules.
/// `Some(answer)` refuses the request.
pub(crate) fn authenticate(inner: &Inner, request: &mut Request) -> Option<Response> {
    // Names as constants: a `&str` key is parsed on every lookup.
    const GATEWAY_HEADERS: [HeaderName; 3] = [
        HeaderName::from_static(USER_ID_HEADER),
        HeaderName::from_static(USER_NAME_HEADER),
        HeaderName::from_static(REMOTE_IP_HEADER),
    ];
    let headers = request.headers_mut();
    for name in &GATEWAY_HEADERS {
        headers.remove(name);
    }
    let remote: Option<IpAddr> = request.extensions().get::<RemoteAddr>().map(|r| r.0.ip());
    if let Some(ip) = remote {
        // Written on the stack, copied once into the value.
        let mut text = [0u8; crate::serve::IP_TEXT_LEN];
        if let Ok(value) = HeaderValue::from_str(crate::serve::ip_text(ip, &mut text)) {
            request
                .headers_mut()
                .insert(GATEWAY_HEADERS[2].clone(), value);
        }
    }
    let auth = inner.options.auth.as_ref()?;
    let path = request.uri().path().to_string();
    let public = auth.is_public(&path);
    let claims = match bearer(request.headers()) {
        Some(Ok(token)) => auth.verify(token),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("missing token: send Authorization: Bearer <token>".to_string()),
    };
    match claims {
        Ok(claims) => {
            if !public && !auth.opens(&path, inner.options.handler == crate::HandlerKind::Rpc) {
                return Some(
                    ApiError::new(
                        403,
                        "no --auth_paths or --auth_public_paths rule opens this path",
                    )
                    .into_response(),
                );
            }
            set_claim(request, USER_ID_HEADER, &claims.sub);
            if let Some(name) = &claims.name {
                set_claim(request, USER_NAME_HEADER, name);
            }
        }
        Err(_) if public => {}
        Err(reason) => {
            let mut response = ApiError::new(401, reason).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Some(response);
        }
    }
    None
}

fn set_claim(request: &mut Request, name: &'static str, value: &str) {
    if value.len() <= MAX_CLAIM_LEN
        && let Ok(value) = HeaderValue::from_str(value)
    {
        request
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

/// The token of `Authorization: Bearer <token>`; the scheme is required.
fn bearer(headers: &http::HeaderMap) -> Option<Result<&str, &'static str>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err("invalid Authorization header"));
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return Some(Err("send Authorization: Bearer <token>"));
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Some(Err("send Authorization: Bearer <token>"));
    }
    Some(Ok(token.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_and_across_segments() {
        let g = |p: &str| Glob::parse(p).expect("glob");
        assert!(g("/user/account/login").matches("/user/account/login"));
        assert!(!g("/user/account/login").matches("/user/account/login2"));
        assert!(g("/user/say/*").matches("/user/say/hello"));
        assert!(!g("/user/say/*").matches("/user/say/hello/x"));
        assert!(g("/greeter/**").matches("/greeter/a/b/c"));
        assert!(g("/**").matches("/anything/at/all"));
        assert!(g("/user/*/get").matches("/user/account/get"));
        assert!(!g("/user/*/get").matches("/user/a/b/get"));
        assert!(!g("/user/*").matches("/other/x"));
        assert!(Glob::parse("user").is_err());
        // No blow-up on adversarial input.
        let long = format!("/{}", "a".repeat(10_000));
        assert!(!g("/*a*a*a*a*a*a*b").matches(&long));
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        let mut headers = http::HeaderMap::new();
        assert!(bearer(&headers).is_none());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("abc.def.ghi"),
        );
        assert!(matches!(bearer(&headers), Some(Err(_))));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&headers), Some(Ok("abc")));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&headers), Some(Ok("abc")));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer(&headers), Some(Err(_))));
    }
}
