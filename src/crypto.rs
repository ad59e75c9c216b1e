//! Encryption of stored secrets (AMI secret, FTP password) with AES-256-GCM.
//!
//! The stored form is `v1:` + hex(nonce || ciphertext || tag). The tenant id is bound as associated
//! data, so a ciphertext copied to another tenant's row does not decrypt.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

#[derive(Clone)]
pub struct SecretsKey([u8; 32]);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey([REDACTED])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("must be 64 hexadecimal digits (32 bytes); generate one with `openssl rand -hex 32`")]
    BadKey,
    #[error("stored secret is malformed or was encrypted with another key")]
    Undecryptable,
}

impl SecretsKey {
    pub fn from_hex(digits: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(digits.trim()).map_err(|_| CryptoError::BadKey)?;
        Ok(Self(bytes.try_into().map_err(|_| CryptoError::BadKey)?))
    }

    fn key(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-byte key"))
    }

    pub fn encrypt(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("system randomness");
        let mut buf = plaintext.as_bytes().to_vec();
        self.key()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buf)
            .expect("sealing cannot fail for in-memory buffers");
        let mut out = String::from("v1:");
        out.push_str(&hex::encode(nonce));
        out.push_str(&hex::encode(&buf));
        out
    }

    pub fn decrypt(&self, stored: &str, context: &str) -> Result<String, CryptoError> {
        let bytes = stored.strip_prefix("v1:").and_then(|h| hex::decode(h).ok()).ok_or(CryptoError::Undecryptable)?;
        if bytes.len() < NONCE_LEN {
            return Err(CryptoError::Undecryptable);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Undecryptable)?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key()
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| CryptoError::Undecryptable)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Undecryptable)
    }
}

impl SecretsKey {
    /// A key for one purpose, so a signature made for one thing never verifies another.
    fn hmac_key(&self, purpose: &str) -> hmac::Key {
        let master = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&master, purpose.as_bytes()).as_ref())
    }

    /// HMAC-SHA256 of `message` for `purpose`, in hex.
    pub fn sign(&self, purpose: &str, message: &str) -> String {
        hex::encode(hmac::sign(&self.hmac_key(purpose), message.as_bytes()).as_ref())
    }

    /// Checks a signature from [`sign`](Self::sign) in constant time.
    pub fn verify(&self, purpose: &str, message: &str, signature_hex: &str) -> bool {
        hex::decode(signature_hex)
            .is_ok_and(|sig| hmac::verify(&self.hmac_key(purpose), message.as_bytes(), &sig).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_round_trips_only_with_its_key_and_context() {
        let key = SecretsKey::from_hex(&"11".repeat(32)).unwrap();
        let sealed = key.encrypt("s3cret", "tenant-a");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.decrypt(&sealed, "tenant-a").unwrap(), "s3cret");
        assert!(key.decrypt(&sealed, "tenant-b").is_err());
        let other = SecretsKey::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.decrypt(&sealed, "tenant-a").is_err());
    }

    #[test]
    fn signatures_verify_only_for_their_purpose_message_and_key() {
        let key = SecretsKey::from_hex(&"11".repeat(32)).unwrap();
        let sig = key.sign("audio", "acme\n1\n99");
        assert!(key.verify("audio", "acme\n1\n99", &sig));
        assert!(!key.verify("audio", "acme\n1\n100", &sig));
        assert!(!key.verify("other", "acme\n1\n99", &sig));
        assert!(!SecretsKey::from_hex(&"22".repeat(32)).unwrap().verify("audio", "acme\n1\n99", &sig));
        assert!(!key.verify("audio", "acme\n1\n99", "zz"));
    }

    #[test]
    fn keys_must_be_32_hex_bytes() {
        assert!(SecretsKey::from_hex("abc").is_err());
        assert!(SecretsKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(format!("{:?}", SecretsKey::from_hex(&"11".repeat(32)).unwrap()).contains("REDACTED"));
    }
}
