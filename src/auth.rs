//! JWT claims and minting. Verification (with roles and key rotation) lives beside the API.

use jsonwebtoken::{encode, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Courier,
    Admin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub role: Role,
    pub aud: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Mints an HS256 token with the configured secret, audience and issuer.
pub fn mint(config: &Config, tenant: &str, role: Role, sub: &str, ttl_s: u64) -> anyhow::Result<String> {
    let now = now();
    let claims = Claims {
        sub: sub.to_owned(),
        tenant: tenant.to_owned(),
        role,
        aud: config.jwt_audience.clone(),
        iss: config.jwt_issuer.clone(),
        iat: now,
        nbf: now,
        exp: now + ttl_s,
    };
    Ok(encode(&Header::default(), &claims, &EncodingKey::from_secret(config.jwt_secret.expose_secret().as_bytes()))?)
}
