//! Who is connecting (JWT verification) and what they may do (channel authorization).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{JwtConfig, Policy};
use crate::time::now_secs;

/// The JWT claims Tidings reads. Other claims are kept in `extra` for authorizers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (a JSON string or number in the token).
    #[serde(deserialize_with = "string_or_number")]
    pub sub: String,
    /// Expiry, seconds since the Unix epoch; the connection is closed with 4001 then.
    pub exp: u64,
    /// Channels the token allows (exact names, or prefixes ending in `*` like `ticket:*`).
    /// When present, nothing else may be subscribed or published to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Every other claim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sub {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Sub::deserialize(d)? {
        Sub::Text(s) => s,
        Sub::Number(n) => n.to_string(),
    })
}

/// Why a token was refused; every variant closes the connection with 4001.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token in `?token=`, `Authorization: Bearer` or the subprotocol list.
    #[error(
        "missing token: pass ?token=, an Authorization: Bearer header or a tidings.token.<jwt> subprotocol"
    )]
    Missing,
    /// The token's `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// Bad signature, wrong algorithm, malformed, wrong audience or issuer, empty `sub`.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The server has no key configured to verify tokens.
    #[error("the server has no JWT key configured")]
    NotConfigured,
}

/// Why the server's JWT settings could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM is neither an RSA nor an EC public key.
    #[error("{path} holds no RSA or EC public key in PEM")]
    Pem {
        /// The file.
        path: String,
    },
}

/// Verifies client tokens. Built once from [`JwtConfig`].
#[derive(Clone)]
pub(crate) struct Authenticator {
    key: Option<(DecodingKey, Validation)>,
    /// `jwt.user_id_claim`, when it is not `sub`.
    user_id_claim: Option<String>,
}

impl Authenticator {
    pub(crate) fn new(config: &JwtConfig) -> Result<Authenticator, KeyError> {
        let key = if let Some(path) = &config.public_key_pem_file {
            let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.clone(),
                source,
            })?;
            let (key, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                (key, Algorithm::RS256)
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                (key, Algorithm::ES256)
            } else {
                return Err(KeyError::Pem { path: path.clone() });
            };
            Some((key, validation(algorithm, config)))
        } else {
            config.secret.as_ref().map(|secret| {
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    validation(Algorithm::HS256, config),
                )
            })
        };
        let user_id_claim = config.user_id_claim.clone().filter(|claim| claim != "sub");
        Ok(Authenticator { key, user_id_claim })
    }

    pub(crate) fn verify(&self, token: Option<&str>) -> Result<Claims, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let (key, validation) = self.key.as_ref().ok_or(AuthError::NotConfigured)?;
        let refused = |e: jsonwebtoken::errors::Error| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        };
        let claims = match &self.user_id_claim {
            None => {
                jsonwebtoken::decode::<Claims>(token, key, validation)
                    .map_err(refused)?
                    .claims
            }
            Some(claim) => {
                let mut map = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                    token, key, validation,
                )
                .map_err(refused)?
                .claims;
                let user_id = match map.remove(claim) {
                    Some(serde_json::Value::String(id)) => id,
                    Some(serde_json::Value::Number(id)) => id.to_string(),
                    Some(_) => {
                        return Err(AuthError::Invalid(format!(
                            "the {claim} claim is neither a string nor a number"
                        )));
                    }
                    None => return Err(AuthError::Invalid(format!("no {claim} claim"))),
                };
                if let Some(sub) = map.remove("sub") {
                    map.insert("token_sub".to_owned(), sub);
                }
                map.insert("sub".to_owned(), serde_json::Value::String(user_id));
                serde_json::from_value::<Claims>(serde_json::Value::Object(map))
                    .map_err(|e| AuthError::Invalid(e.to_string()))?
            }
        };
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty user id".to_owned()));
        }
        Ok(claims)
    }
}

fn validation(algorithm: Algorithm, config: &JwtConfig) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = 0;
    // A token not valid yet (`nbf` in the future) is refused.
    validation.validate_nbf = true;
    let user_id_elsewhere = config
        .user_id_claim
        .as_deref()
        .is_some_and(|claim| claim != "sub");
    // With `user_id_claim`, `verify` checks that claim itself.
    // A configured audience or issuer must be in the token: jsonwebtoken checks them only
    // when present otherwise.
    let mut required = vec!["exp"];
    if !user_id_elsewhere {
        required.push("sub");
    }
    if config.audience.is_some() {
        required.push("aud");
    }
    if config.issuer.is_some() {
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    if let Some(aud) = &config.audience {
        validation.set_audience(&[aud]);
    } else {
        validation.validate_aud = false;
    }
    if let Some(iss) = &config.issuer {
        validation.set_issuer(&[iss]);
    }
    validation
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whether `presented` is the HTTP API's key, compared in constant time so that timing does
/// not reveal how much of a key matched. False when no key is configured.
pub(crate) fn is_api_key(expected: Option<&str>, presented: Option<&str>) -> bool {
    match (expected, presented) {
        (Some(key), Some(given)) => bool::from(key.as_bytes().ct_eq(given.as_bytes())),
        _ => false,
    }
}

/// Makes an HS256 token for `sub` valid for `ttl_secs` (used by `tidings token`, `--dev` and
/// tests; production tokens come from your identity provider).
pub fn mint_token(
    secret: &str,
    sub: &str,
    ttl_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: sub.to_owned(),
        exp: now_secs().saturating_add(ttl_secs),
        channels: None,
        extra: serde_json::Map::new(),
    };
    mint_claims(secret, &claims)
}

/// Makes an HS256 token with the given claims.
pub fn mint_claims(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// What a user wants to do with a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Join it (also covers `presence` and `typing`).
    Subscribe,
    /// Publish to it from a client connection.
    Publish,
}

/// One access question put to the authorizer.
#[derive(Debug, Clone)]
pub struct AccessRequest {
    /// The authenticated user.
    pub user_id: Arc<str>,
    /// The token's claims.
    pub claims: Arc<Claims>,
    /// The channel.
    pub channel: String,
    /// What the user wants.
    pub action: Action,
}

/// The boxed future an authorizer returns.
pub type AccessFuture = Pin<Box<dyn Future<Output = bool> + Send + 'static>>;

/// An async hook deciding channel access: `true` allows.
pub type AuthorizeFn = Arc<dyn Fn(AccessRequest) -> AccessFuture + Send + Sync>;

/// The built-in checks every request passes before the application's hook.
pub(crate) fn default_policy(policy: &Policy, request: &AccessRequest) -> bool {
    if request.action == Action::Publish && !policy.client_publish {
        return false;
    }
    if let Some(owner) = request.channel.strip_prefix("user:")
        && owner != &*request.user_id
        && !policy.foreign_user_channels
    {
        return false;
    }
    match &request.claims.channels {
        None => true,
        Some(allowed) => allowed
            .iter()
            .any(|pattern| channel_matches(pattern, &request.channel)),
    }
}

/// `ticket:*` matches every channel starting with `ticket:`; anything else matches exactly.
pub(crate) fn channel_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user: &str, channel: &str, channels: Option<Vec<String>>) -> AccessRequest {
        AccessRequest {
            user_id: user.into(),
            claims: Arc::new(Claims {
                sub: user.into(),
                exp: 0,
                channels,
                extra: serde_json::Map::new(),
            }),
            channel: channel.into(),
            action: Action::Subscribe,
        }
    }

    #[test]
    fn foreign_user_channels_are_refused_by_default() {
        let policy = Policy::default();
        assert!(default_policy(&policy, &request("7", "user:7", None)));
        assert!(!default_policy(&policy, &request("7", "user:8", None)));
        assert!(default_policy(&policy, &request("7", "ticket:1", None)));
    }

    #[test]
    fn claim_channel_lists_restrict() {
        let policy = Policy::default();
        let only = Some(vec!["ticket:*".to_owned(), "lobby".to_owned()]);
        assert!(default_policy(
            &policy,
            &request("7", "ticket:9", only.clone())
        ));
        assert!(default_policy(
            &policy,
            &request("7", "lobby", only.clone())
        ));
        assert!(!default_policy(&policy, &request("7", "lobby2", only)));
    }

    #[test]
    fn tokens_verify_and_fail_with_reasons() -> Result<(), jsonwebtoken::errors::Error> {
        let auth = Authenticator::new(&JwtConfig {
            secret: Some("s3cret".into()),
            ..JwtConfig::default()
        })
        .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let good = mint_token("s3cret", "42", 60)?;
        assert_eq!(auth.verify(Some(&good)).map(|c| c.sub), Ok("42".to_owned()));
        assert_eq!(auth.verify(None).err(), Some(AuthError::Missing));
        let forged = mint_token("other", "42", 60)?;
        assert!(matches!(
            auth.verify(Some(&forged)),
            Err(AuthError::Invalid(_))
        ));
        let mut old = Claims {
            sub: "42".into(),
            exp: now_secs() - 10,
            channels: None,
            extra: serde_json::Map::new(),
        };
        let expired = mint_claims("s3cret", &old)?;
        assert_eq!(auth.verify(Some(&expired)).err(), Some(AuthError::Expired));
        old.exp = now_secs() + 60;
        old.sub = String::new();
        let empty = mint_claims("s3cret", &old)?;
        assert!(matches!(
            auth.verify(Some(&empty)),
            Err(AuthError::Invalid(_))
        ));
        Ok(())
    }

    #[test]
    fn the_user_id_can_come_from_another_claim() -> Result<(), Box<dyn std::error::Error>> {
        let config = JwtConfig {
            secret: Some("s3cret".into()),
            user_id_claim: Some("user_id".into()),
            ..JwtConfig::default()
        };
        let auth = Authenticator::new(&config)?;
        let exp = now_secs() + 60;
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"s3cret"),
            )
        };
        // A number, as FastAPI back ends often issue, and no `sub` at all.
        let claims = auth.verify(Some(&sign(serde_json::json!({"user_id": 42, "exp": exp}))?))?;
        assert_eq!(claims.sub, "42");
        // The token's own `sub` is kept aside, not taken for the user.
        let claims = auth.verify(Some(&sign(
            serde_json::json!({"user_id": "u-7", "sub": "session-9", "exp": exp, "role": "agent"}),
        )?))?;
        assert_eq!(claims.sub, "u-7");
        assert_eq!(
            claims.extra.get("token_sub"),
            Some(&serde_json::json!("session-9"))
        );
        assert_eq!(claims.extra.get("role"), Some(&serde_json::json!("agent")));
        for refused in [
            serde_json::json!({"sub": "7", "exp": exp}),
            serde_json::json!({"user_id": "", "exp": exp}),
            serde_json::json!({"user_id": ["7"], "exp": exp}),
        ] {
            let token = sign(refused.clone())?;
            assert!(
                matches!(auth.verify(Some(&token)), Err(AuthError::Invalid(_))),
                "{refused}"
            );
        }
        let expired = sign(serde_json::json!({"user_id": 42, "exp": now_secs() - 10}))?;
        assert_eq!(auth.verify(Some(&expired)).err(), Some(AuthError::Expired));
        Ok(())
    }

    #[test]
    fn a_configured_audience_and_issuer_must_be_in_the_token()
    -> Result<(), Box<dyn std::error::Error>> {
        let config = JwtConfig {
            secret: Some("s3cret".into()),
            audience: Some("app".into()),
            issuer: Some("auth.example".into()),
            ..JwtConfig::default()
        };
        let auth = Authenticator::new(&config)?;
        let exp = now_secs() + 60;
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"s3cret"),
            )
        };
        let full =
            sign(serde_json::json!({"sub": "7", "exp": exp, "aud": "app", "iss": "auth.example"}))?;
        assert_eq!(auth.verify(Some(&full))?.sub, "7");
        for missing in [
            serde_json::json!({"sub": "7", "exp": exp, "iss": "auth.example"}),
            serde_json::json!({"sub": "7", "exp": exp, "aud": "app"}),
        ] {
            let token = sign(missing.clone())?;
            assert!(
                matches!(auth.verify(Some(&token)), Err(AuthError::Invalid(_))),
                "{missing}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let config = JwtConfig {
            secret: Some("s3cret".into()),
            ..JwtConfig::default()
        };
        let auth = Authenticator::new(&config)?;
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"s3cret"),
            )
        };
        let now = now_secs();
        let later = sign(serde_json::json!({"sub": "7", "exp": now + 600, "nbf": now + 300}))?;
        assert!(matches!(
            auth.verify(Some(&later)),
            Err(AuthError::Invalid(_))
        ));
        let valid = sign(serde_json::json!({"sub": "7", "exp": now + 600, "nbf": now - 1}))?;
        assert_eq!(auth.verify(Some(&valid))?.sub, "7");
        Ok(())
    }
}
