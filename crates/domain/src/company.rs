//! A company (a tenant) as the operator manages it: its name, whether it may act, and whose tokens
//! act for it (its issuer). Checked here; the keys themselves are parsed where tokens are verified.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use super::{bad, check_text, FieldError};

/// A company's id as its tokens name it (`tenant`) and the `tenants` table accepts it.
pub fn check_company_id<'a>(field: &'static str, id: &'a str) -> Result<&'a str, FieldError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(bad(field, format!("{field} must be 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.'")));
    }
    Ok(id)
}

/// A company's id: the `tenant` its tokens carry and the key of its rows, as a type of its own so
/// that no courier, order or call id is taken for it. Checked where it comes in (a token, the
/// operator's path: [`TenantId::parse`]); cheap to clone into the tasks that follow a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(std::sync::Arc<str>);

impl TenantId {
    /// An id as it comes in, checked by [`check_company_id`].
    pub fn parse(field: &'static str, id: &str) -> Result<TenantId, FieldError> {
        check_company_id(field, id).map(|id| TenantId(id.into()))
    }

    /// An id dialback checked and stored before (a row's `tenant_id`), or a test's own.
    pub fn stored(id: impl Into<std::sync::Arc<str>>) -> TenantId {
        TenantId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as the AMI pool and the call tracker key their work (a clone of one allocation).
    pub fn shared(&self) -> std::sync::Arc<str> {
        self.0.clone()
    }
}

impl std::ops::Deref for TenantId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Whether a company's admins and couriers may act. A suspended company's requests are refused;
/// its calls in flight are followed to their end as usual.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, IntoStaticStr, EnumString, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CompanyState {
    #[default]
    Active,
    Suspended,
}

/// Who issues a company's tokens: the `iss` they must carry and the keys they are verified with,
/// fetched from the identity provider's JWKS URL or given as PEM public keys, and optionally an
/// HS256 secret dialback generates for the company (kept apart, encrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    /// The CA that signed the JWKS server's certificate, when it is not publicly trusted (an
    /// identity provider inside the company's network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Tokens signed HS256 with the company's own secret are accepted too.
    #[serde(default)]
    pub hs256: bool,
}

/// At most this many PEM keys per issuer (a rotation needs two or three).
pub const MAX_PUBLIC_KEYS: usize = 8;

impl Issuer {
    pub fn check(&self) -> Result<(), FieldError> {
        let iss = self.iss.trim();
        if iss.is_empty() || iss.len() > 512 || iss != self.iss {
            return Err(bad("issuer.iss", "issuer.iss must be 1-512 characters without surrounding spaces"));
        }
        check_text("issuer.iss", iss)?;
        if let Some(url) = &self.jwks_url {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
                return Err(bad(
                    "issuer.jwks_url",
                    "issuer.jwks_url must be an https:// URL of at most 2048 characters",
                ));
            }
            if !self.public_keys.is_empty() {
                return Err(bad("issuer.public_keys", "give either issuer.jwks_url or issuer.public_keys, not both"));
            }
        }
        if self.ca_pem.is_some() && self.jwks_url.is_none() {
            return Err(bad("issuer.ca_pem", "issuer.ca_pem is the CA of the JWKS server: it needs issuer.jwks_url"));
        }
        if self.public_keys.len() > MAX_PUBLIC_KEYS {
            return Err(bad("issuer.public_keys", format!("issuer.public_keys holds at most {MAX_PUBLIC_KEYS} keys")));
        }
        if self.jwks_url.is_none() && self.public_keys.is_empty() && !self.hs256 {
            return Err(bad(
                "issuer",
                "an issuer needs its keys: issuer.jwks_url, issuer.public_keys, or issuer.hs256: true",
            ));
        }
        Ok(())
    }
}

/// What the operator saves for a company.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanyInput {
    pub name: String,
    #[serde(default)]
    pub state: CompanyState,
    #[serde(default)]
    pub issuer: Option<Issuer>,
}

impl CompanyInput {
    pub fn check(&self) -> Result<(), FieldError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(bad("name", "name must be 1-200 characters"));
        }
        check_text("name", name)?;
        if let Some(issuer) = &self.issuer {
            issuer.check()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_id_is_checked_where_it_comes_in() {
        let id = TenantId::parse("tenant", "acme-couriers.eu_1").unwrap();
        assert_eq!((id.as_str(), id.to_string()), ("acme-couriers.eu_1", "acme-couriers.eu_1".to_owned()));
        assert_eq!(serde_json::to_value(&id).unwrap(), "acme-couriers.eu_1");
        for bad in ["", "acme:b", "acme b", "a\r\nAction: Originate", &"x".repeat(65)] {
            assert_eq!(TenantId::parse("tenant", bad).unwrap_err().field, "tenant", "{bad:?}");
        }
        let keyed: std::collections::HashSet<TenantId> = [id.clone()].into();
        assert!(keyed.contains("acme-couriers.eu_1"), "looked up by its text");
        assert_eq!(id.shared(), TenantId::stored(id.shared()).shared());
    }

    fn issuer(json: serde_json::Value) -> Result<Issuer, String> {
        let issuer: Issuer = serde_json::from_value(json).map_err(|e| e.to_string())?;
        issuer.check().map_err(|e| e.to_string())?;
        Ok(issuer)
    }

    #[test]
    fn an_issuer_names_its_iss_and_one_source_of_keys() {
        assert!(issuer(serde_json::json!({"iss": "https://id.acme.test/realms/acme",
            "jwks_url": "https://id.acme.test/realms/acme/protocol/openid-connect/certs"}))
        .is_ok());
        assert!(issuer(serde_json::json!({"iss": "acme-backend", "hs256": true})).is_ok());
        let refused = [
            (serde_json::json!({"iss": "", "hs256": true}), "issuer.iss"),
            (serde_json::json!({"iss": " x", "hs256": true}), "issuer.iss"),
            (serde_json::json!({"iss": "x"}), "needs its keys"),
            (serde_json::json!({"iss": "x", "jwks_url": "ftp://x"}), "https://"),
            (serde_json::json!({"iss": "x", "jwks_url": "https://x", "public_keys": ["k"]}), "not both"),
            (serde_json::json!({"iss": "x", "public_keys": ["k"], "ca_pem": "c"}), "needs issuer.jwks_url"),
            (serde_json::json!({"iss": "x", "hs256": true, "kid": "1"}), "unknown field"),
        ];
        for (json, why) in refused {
            let err = issuer(json.clone()).expect_err(&json.to_string());
            assert!(err.contains(why), "{json}: {err}");
        }
    }

    #[test]
    fn a_company_has_a_name_and_is_active_unless_said_otherwise() {
        let input: CompanyInput = serde_json::from_value(serde_json::json!({"name": "Acme Couriers"})).unwrap();
        assert_eq!((input.state, input.issuer.is_none()), (CompanyState::Active, true));
        input.check().unwrap();
        let blank: CompanyInput = serde_json::from_value(serde_json::json!({"name": "  "})).unwrap();
        assert_eq!(blank.check().unwrap_err().field, "name");
    }
}
