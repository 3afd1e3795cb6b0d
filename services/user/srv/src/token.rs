//! Login tokens: HS256 JWTs with an expiry.
//!
//! The signing key comes from `--auth_secret` (`MICRO_AUTH_SECRET`). Without
//! one, a random key is generated and a warning says that every instance must
//! share a key, or tokens from one are refused by the others.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

const ISSUER: &str = "go.micro.srv.user";

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user name.
    pub name: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    /// The user's token version when issued; a password change bumps it,
    /// refusing every earlier token.
    #[serde(default)]
    pub ver: i64,
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("missing token: send Authorization: Bearer <token> from login")]
    Missing,
    #[error("token expired: log in again")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("invalid Authorization header: send Authorization: Bearer <token> from login")]
    NotBearer,
    #[error("token revoked (password changed or user deleted): log in again")]
    Revoked,
    #[error("cannot sign token: {0}")]
    Sign(String),
}

impl Tokens {
    /// Keys from `secret` (at least 32 bytes recommended).
    pub fn new(secret: &[u8], ttl: Duration) -> Tokens {
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl,
        }
    }

    /// A random key: for a single instance only.
    pub fn generated(ttl: Duration) -> Result<Tokens, TokenError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(Tokens::new(&secret, ttl))
    }

    /// A token for user `id` named `name` at token version `ver`, and when
    /// it expires (Unix seconds).
    pub fn issue(&self, id: i64, name: &str, ver: i64) -> Result<(String, i64), TokenError> {
        let iat = crate::now_unix();
        let exp = iat.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX));
        let claims = Claims {
            sub: id.to_string(),
            name: name.to_string(),
            iss: ISSUER.to_string(),
            iat,
            exp,
            ver,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok((token, exp))
    }

    /// The claims of a valid, unexpired token of ours.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// The user id a token stands for, from gRPC metadata
    /// `authorization: Bearer <token>` (the scheme is required). The
    /// caller checks `ver` against the user's current token version.
    pub fn user_from_metadata(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(i64, Claims), TokenError> {
        let value = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(TokenError::Missing)?;
        let (scheme, token) = value.split_once(' ').ok_or(TokenError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::NotBearer);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let claims = self.verify(token)?;
        let id = claims.sub.parse().map_err(|_| TokenError::Invalid)?;
        Ok((id, claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let (token, exp) = tokens.issue(42, "huohuo", 3).expect("issue");
        let claims = tokens.verify(&token).expect("verify");
        assert_eq!(claims.sub, "42");
        assert_eq!(claims.name, "huohuo");
        assert_eq!(claims.exp, exp);
        assert_eq!(claims.ver, 3);

        let other = Tokens::new(
            b"another key, another key, another",
            Duration::from_secs(60),
        );
        assert!(matches!(other.verify(&token), Err(TokenError::Invalid)));
        assert!(matches!(tokens.verify("garbage"), Err(TokenError::Invalid)));
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(tokens.verify(&tampered).is_err());
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let (token, _) = tokens.issue(7, "bob", 0).expect("issue");
        let with = |value: String| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("authorization", value.parse().expect("ascii"));
            tokens.user_from_metadata(&metadata).map(|(id, _)| id)
        };
        assert_eq!(with(format!("Bearer {token}")).expect("bearer"), 7);
        assert_eq!(with(format!("bearer {token}")).expect("bearer"), 7);
        assert!(matches!(with(token.clone()), Err(TokenError::NotBearer)));
        assert!(matches!(
            with(format!("Basic {token}")),
            Err(TokenError::NotBearer)
        ));
        assert!(matches!(
            tokens.user_from_metadata(&tonic::metadata::MetadataMap::new()),
            Err(TokenError::Missing)
        ));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef", Duration::ZERO);
        let (token, _) = tokens.issue(1, "a", 0).expect("issue");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(matches!(tokens.verify(&token), Err(TokenError::Expired)));
    }
}
