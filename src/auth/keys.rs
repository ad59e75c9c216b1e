//! A set of keys tokens are verified with. A token is only ever checked with keys of its own
//! algorithm's family, so an HS256 token "signed" with a public key (algorithm confusion) fails
//! and `alg: none` never parses; where keys carry a `kid` (a JWKS), only the key the token names.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};

use super::{AuthError, Claims};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        HS256 => Some(Family::Hmac),
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Ed),
        _ => None,
    }
}

#[derive(Clone)]
struct Key {
    family: Family,
    /// The key's id in its JWKS; PEM keys and secrets have none.
    kid: Option<String>,
    /// The one algorithm the JWKS says the key is for, when it says.
    alg: Option<String>,
    key: DecodingKey,
}

#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn add_secret(&mut self, secret: &[u8]) {
        self.keys.push(Key { family: Family::Hmac, kid: None, alg: None, key: DecodingKey::from_secret(secret) });
    }

    /// Adds an RSA, EC or Ed25519 public key in PEM.
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<(), String> {
        let (family, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (Family::Rsa, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (Family::Ec, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (Family::Ed, key)
        } else {
            return Err("not an RSA, EC or Ed25519 public key in PEM".into());
        };
        self.keys.push(Key { family, kid: None, alg: None, key });
        Ok(())
    }

    /// The public keys of a JWKS. Symmetric (`oct`) keys are never taken from one: whoever can
    /// read the URL could sign with them. Returns the set and why any key was skipped.
    pub fn from_jwks(jwks: &JwkSet) -> (KeySet, Vec<String>) {
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for jwk in &jwks.keys {
            let kid = jwk.common.key_id.clone();
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                _ => {
                    skipped.push(format!("key {kid:?}: not a public key (RSA, EC or OKP)"));
                    continue;
                }
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    let alg = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
                    set.keys.push(Key { family, kid, alg, key });
                }
                Err(e) => skipped.push(format!("key {kid:?}: {e}")),
            }
        }
        (set, skipped)
    }

    /// Whether a key has this id (a token naming another needs a fresher JWKS).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Verifies `token` (its header already read) with the keys of its algorithm's family that
    /// its `kid` may name, under `validation` (audience, issuer, times).
    pub fn verify(&self, token: &str, header: &Header, validation: &Validation) -> Result<Claims, AuthError> {
        let family = family(header.alg).ok_or(AuthError::NoKeyForAlgorithm(header.alg))?;
        let alg_name = format!("{:?}", header.alg);
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.family == family)
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg_name))
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(match &header.kid {
                Some(kid) if self.keys.iter().any(|k| k.kid.is_some()) => AuthError::UnknownKey(kid.clone()),
                _ => AuthError::NoKeyForAlgorithm(header.alg),
            });
        }
        let mut validation = validation.clone();
        validation.algorithms = vec![header.alg];
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = Some(e),
            }
        }
        Err(AuthError::Invalid(last.map(|e| e.to_string()).unwrap_or_default()))
    }
}
