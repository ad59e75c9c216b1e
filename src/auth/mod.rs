//! Who may call: JWT claims and roles, minting (the demo's and the tests' tokens), and
//! verification with the right keys for each token.
//!
//! - [`keys`]: a set of verification keys (HS256 secrets, PEM public keys, a JWKS) and how a token
//!   is checked against them (only keys of its algorithm's family, by `kid` where keys have one).
//! - [`issuers`]: whose keys a token is checked with: an operator's with the deployment's own, a
//!   company's with that company's issuer (cached, its JWKS fetched and refreshed), and whether
//!   the company may act at all.

pub mod issuers;
pub mod keys;

use jsonwebtoken::{encode, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use crate::config::Config;

pub use issuers::Verifier;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, IntoStaticStr, EnumString, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Courier,
    Admin,
    /// Runs the deployment: creates companies and says how their tokens are verified. Verified
    /// only with the deployment's own keys; acts for no company.
    Operator,
}

crate::domain::enum_names!(Role);

/// `aud` as JWTs carry it: one string, or several (identity providers such as Keycloak send an
/// array once a token has more than one audience).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// The company the token acts for; an operator's token names none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    pub role: Role,
    pub aud: Audience,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub exp: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Mints an HS256 token with the deployment's secret, audience and issuer: for the operator, the
/// demo and the tests. A company's own tokens come from its issuer.
pub fn mint(config: &Config, tenant: &str, role: Role, sub: &str, ttl_s: u64) -> anyhow::Result<String> {
    let now = now();
    let claims = Claims {
        sub: sub.to_owned(),
        tenant: tenant.to_owned(),
        role,
        aud: Audience::One(config.jwt_audience.clone()),
        iss: config.jwt_issuer.clone(),
        iat: Some(now),
        nbf: Some(now),
        exp: now + ttl_s,
    };
    Ok(encode(&Header::default(), &claims, &EncodingKey::from_secret(config.jwt_secret.expose_secret().as_bytes()))?)
}

/// Why a token was refused. The client sees a generic 401 for most (the log has this), a 403 for
/// a suspended company and a 503 when the keys cannot be had right now.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token or unsupported algorithm")]
    Malformed,
    #[error("no key accepts this token's algorithm ({0:?})")]
    NoKeyForAlgorithm(jsonwebtoken::Algorithm),
    #[error("no key of the issuer has this token's kid {0:?}")]
    UnknownKey(String),
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("company {0:?} has no token issuer of its own, and this server's keys act only for the operator")]
    NoIssuer(String),
    #[error("company {0:?} is suspended")]
    Suspended(String),
    #[error("the keys of company {tenant:?}'s token issuer cannot be had: {why}")]
    IssuerUnavailable { tenant: String, why: String },
    #[error("the company's token issuer could not be read")]
    Store(#[from] crate::store::StoreError),
}
