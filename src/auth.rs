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

/// Why a token was refused (the client sees a generic 401 with this as the description).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token or unsupported algorithm")]
    Malformed,
    #[error("no key accepts this token's algorithm ({0:?})")]
    NoKeyForAlgorithm(jsonwebtoken::Algorithm),
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies tokens: HS256 with the configured secret(s), and RS/PS/ES/EdDSA with configured public
/// keys. A token is only ever checked with keys of its own algorithm family, so an HS256 token
/// "signed" with a public key (algorithm confusion) fails, and `alg: none` never parses.
pub struct Verifier {
    hmac: Vec<jsonwebtoken::DecodingKey>,
    rsa: Vec<jsonwebtoken::DecodingKey>,
    ec: Vec<jsonwebtoken::DecodingKey>,
    ed: Vec<jsonwebtoken::DecodingKey>,
    audience: String,
    issuer: Option<String>,
}

impl Verifier {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        use jsonwebtoken::DecodingKey;
        let mut v = Self {
            hmac: vec![DecodingKey::from_secret(config.jwt_secret.expose_secret().as_bytes())],
            rsa: Vec::new(),
            ec: Vec::new(),
            ed: Vec::new(),
            audience: config.jwt_audience.clone(),
            issuer: config.jwt_issuer.clone(),
        };
        if let Some(previous) = &config.jwt_previous_secret {
            v.hmac.push(DecodingKey::from_secret(previous.expose_secret().as_bytes()));
        }
        for path in &config.jwt_public_keys {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("jwt_public_keys: cannot read {}: {e}", path.display()))?;
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                v.rsa.push(key);
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                v.ec.push(key);
            } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
                v.ed.push(key);
            } else {
                anyhow::bail!("jwt_public_keys: {} is not an RSA, EC or Ed25519 public key in PEM", path.display());
            }
        }
        Ok(v)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::Algorithm::*;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let keys = match header.alg {
            HS256 => &self.hmac,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => &self.rsa,
            ES256 | ES384 => &self.ec,
            EdDSA => &self.ed,
            other => return Err(AuthError::NoKeyForAlgorithm(other)),
        };
        if keys.is_empty() {
            return Err(AuthError::NoKeyForAlgorithm(header.alg));
        }
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let mut last = None;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = Some(e),
            }
        }
        Err(AuthError::Invalid(last.map(|e| e.to_string()).unwrap_or_default()))
    }
}
