//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): a secret is `whsec_` and the
//! base64 of its key bytes; a message is signed with HMAC-SHA256 over `{id}.{timestamp}.{body}`,
//! sent as `v1,<base64>`, several space-separated while a rotation overlaps.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

const PREFIX: &str = "whsec_";
/// Key bytes of a new secret (the specification asks for 24 to 64).
const KEY_BYTES: usize = 32;

/// A new random signing secret, `whsec_...`.
pub fn new_secret() -> String {
    let mut key = [0u8; KEY_BYTES];
    SystemRandom::new().fill(&mut key).expect("system randomness");
    format!("{PREFIX}{}", BASE64.encode(key))
}

/// The `webhook-signature` header for `body` sent as message `id` at `timestamp` (Unix seconds),
/// signed with each of `secrets`.
pub fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(id.len() + body.len() + 24);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    secrets
        .iter()
        .filter_map(|secret| key_of(secret))
        .map(|key| format!("v1,{}", BASE64.encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &signed))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The key bytes of a `whsec_` secret (dialback only ever makes well-formed ones).
fn key_of(secret: &str) -> Option<Vec<u8>> {
    BASE64.decode(secret.strip_prefix(PREFIX).unwrap_or(secret)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference implementations (standard-webhooks, its
    /// libraries' test suites): this secret, id, timestamp and payload give this signature.
    #[test]
    fn signs_as_the_reference_implementations_do() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature_header(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn new_secrets_are_prefixed_and_carry_enough_key() {
        let secret = new_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(key_of(&secret).unwrap().len(), KEY_BYTES);
        assert_ne!(secret, new_secret());
        // Two secrets sign side by side during a rotation.
        let header = signature_header(&[&secret, &new_secret()], "msg_1", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
    }
}
