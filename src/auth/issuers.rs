//! Whose keys a token is verified with. A token that says it is the operator's is checked with
//! the deployment's own keys (`jwt_secret`, `jwt_public_keys`). Any other names its company
//! (`tenant`), and is checked with that company's issuer only: its `iss`, and its PEM keys, its
//! JWKS or its own HS256 secret. A company the operator has given no issuer is checked with the
//! deployment's keys while `issuers.global_keys` allows it (how every company worked before).
//! So a key of company A never verifies a token for company B, whatever the token's `kid`, `iss`
//! or `alg` say.
//!
//! Companies are cached per process for `db.cache_ttl_s` and dropped at once when the operator
//! changes one (store/notify.rs). A JWKS is kept apart from that cache: fetched when first
//! needed, again after `issuers.jwks_max_age_s` and when a token names a key it lacks (at most
//! every `jwks_refresh_min_interval_s`), through the same address rules as webhooks (outbound.rs),
//! and served from what was last fetched for as long as the provider cannot be reached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Header, Validation};
use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::keys::KeySet;
use super::{AuthError, Claims, Role};
use crate::config::{Config, GlobalKeys, IssuersConfig};
use crate::crypto::SecretsKey;
use crate::domain::company::{CompanyState, Issuer, TenantId};
use crate::outbound::Policy;
use crate::store;

/// What the secrets key binds a company's HS256 secret to (crypto.rs contexts).
pub fn hs256_secret_context(tenant: &TenantId) -> String {
    format!("company-hs256:{tenant}")
}

/// A company as verification needs it.
struct Company {
    state: CompanyState,
    issuer: Option<Issuer>,
    /// Its PEM keys and its own HS256 secret.
    fixed: KeySet,
}

/// A company's JWKS as last fetched.
#[derive(Default)]
struct Jwks {
    /// Shared with the requests verifying with them, so none copies the keys.
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    last_error: Option<String>,
}

type SharedJwks = Arc<tokio::sync::Mutex<Jwks>>;

pub struct Verifier {
    global: KeySet,
    audience: String,
    global_iss: Option<String>,
    config: IssuersConfig,
    policy: Policy,
    db: Option<deadpool_postgres::Pool>,
    secrets: SecretsKey,
    companies: moka::sync::Cache<TenantId, Arc<Option<Company>>>,
    /// By company and URL; a tokio mutex per entry so that one fetch serves every waiting request.
    jwks: Mutex<HashMap<(TenantId, String), SharedJwks>>,
}

impl Verifier {
    /// The deployment's keys from `config`; companies' issuers read from `db` (None: the
    /// deployment's keys only, for tools that have no database).
    pub fn new(config: &Config, db: Option<deadpool_postgres::Pool>) -> anyhow::Result<Self> {
        let mut global = KeySet::default();
        global.add_secret(config.jwt_secret.expose_secret().as_bytes());
        if let Some(previous) = &config.jwt_previous_secret {
            global.add_secret(previous.expose_secret().as_bytes());
        }
        for path in &config.jwt_public_keys {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("jwt_public_keys: cannot read {}: {e}", path.display()))?;
            global.add_pem(&pem).map_err(|e| anyhow::anyhow!("jwt_public_keys: {}: {e}", path.display()))?;
        }
        Ok(Self {
            global,
            audience: config.jwt_audience.clone(),
            global_iss: config.jwt_issuer.clone(),
            config: config.issuers.clone(),
            policy: Policy {
                allow_http: config.issuers.allow_http,
                allow_private: config.issuers.allow_private_targets,
            },
            db,
            secrets: config.secrets_key(),
            companies: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(config.db.cache_ttl_s.max(1)))
                .build(),
            jwks: Mutex::default(),
        })
    }

    /// The address rules a JWKS URL must meet (checked when the operator saves it, too).
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Drops what is cached of `tenant` (the operator changed it), or of every company.
    pub fn forget(&self, tenant: Option<&TenantId>) {
        match tenant {
            Some(tenant) => self.companies.invalidate(tenant),
            None => self.companies.invalidate_all(),
        }
    }

    fn validation(&self) -> Validation {
        // The algorithm is set per key (keys.rs); this one is replaced.
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        validation
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        // Read unverified only to choose the keys; what is returned is what those keys verified.
        let said: Said = jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| AuthError::Malformed)?;
        let mut validation = self.validation();
        if said.role == Some(Role::Operator) {
            if let Some(iss) = &self.global_iss {
                validation.set_issuer(&[iss]);
            }
            return self.global.verify(token, &header, &validation);
        }
        let tenant = said
            .tenant
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Invalid("the token names no company (tenant) and is not an operator's".into()))?;
        // A malformed id names no company; the token is refused for it once its signature is
        // checked (http/extract.rs `verified`).
        let id = TenantId::parse("tenant", &tenant).ok();
        let company = match &id {
            Some(id) => self.company(id).await?,
            None => Arc::new(None),
        };
        let claims = match (&id, company.as_ref().as_ref().and_then(|c| c.issuer.as_ref().map(|i| (c, i)))) {
            (Some(id), Some((company, issuer))) => {
                validation.set_issuer(&[&issuer.iss]);
                self.verify_with_issuer(token, &header, &validation, id, company, issuer).await?
            }
            _ if self.config.global_keys == GlobalKeys::Operator => return Err(AuthError::NoIssuer(tenant)),
            _ => {
                if let Some(iss) = &self.global_iss {
                    validation.set_issuer(&[iss]);
                }
                self.global.verify(token, &header, &validation)?
            }
        };
        if claims.role == Role::Operator || claims.tenant != tenant {
            return Err(AuthError::Invalid("the token's role or company changed under verification".into()));
        }
        if company.as_ref().as_ref().is_some_and(|c| c.state == CompanyState::Suspended) {
            return Err(AuthError::Suspended(tenant));
        }
        Ok(claims)
    }

    async fn verify_with_issuer(
        &self,
        token: &str,
        header: &Header,
        validation: &Validation,
        tenant: &TenantId,
        company: &Company,
        issuer: &Issuer,
    ) -> Result<Claims, AuthError> {
        let uses_jwks = header.alg != jsonwebtoken::Algorithm::HS256;
        let Some(url) = issuer.jwks_url.as_deref().filter(|_| uses_jwks) else {
            return company.fixed.verify(token, header, validation);
        };
        let keys = self.jwks_keys(tenant, url, issuer.ca_pem.as_deref(), header.kid.as_deref()).await?;
        keys.verify(token, header, validation)
    }

    async fn company(&self, tenant: &TenantId) -> Result<Arc<Option<Company>>, AuthError> {
        if let Some(cached) = self.companies.get(tenant) {
            return Ok(cached);
        }
        let Some(pool) = &self.db else { return Ok(Arc::new(None)) };
        let db = store::client(pool).await?;
        let row = store::companies::get(&db, tenant).await?;
        let company = row.map(|row| {
            let mut fixed = KeySet::default();
            if let Some(issuer) = &row.issuer {
                for pem in &issuer.public_keys {
                    if let Err(e) = fixed.add_pem(pem.as_bytes()) {
                        // Checked when saved; a key that no longer parses verifies nothing.
                        tracing::warn!(%tenant, error = e, "a public key of the company's issuer is unusable");
                    }
                }
            }
            if let Some(enc) = row.hs256_secret_enc.as_deref().filter(|_| row.issuer.as_ref().is_some_and(|i| i.hs256))
            {
                match self.secrets.decrypt(enc, &hs256_secret_context(tenant)) {
                    Ok(secret) => fixed.add_secret(secret.as_bytes()),
                    Err(e) => tracing::error!(%tenant, error = %crate::telemetry::Chain(&e),
                        "the company's HS256 secret cannot be decrypted (was the secrets key changed?)"),
                }
            }
            Company { state: row.state, issuer: row.issuer, fixed }
        });
        let company = Arc::new(company);
        self.companies.insert(tenant.clone(), company.clone());
        Ok(company)
    }

    /// The company's JWKS: as cached while it is fresh and holds `kid`, else fetched again (at
    /// most every `jwks_refresh_min_interval_s`); the last good one while the provider is away.
    async fn jwks_keys(
        &self,
        tenant: &TenantId,
        url: &str,
        ca_pem: Option<&str>,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet>, AuthError> {
        let entry = self.jwks.lock().expect("jwks lock").entry((tenant.clone(), url.to_owned())).or_default().clone();
        let mut jwks = entry.lock().await;
        let max_age = Duration::from_secs(self.config.jwks_max_age_s);
        let min_interval = Duration::from_secs(self.config.jwks_refresh_min_interval_s);
        let stale = jwks.fetched_at.is_none_or(|at| at.elapsed() >= max_age);
        let lacks_kid = match (&jwks.keys, kid) {
            (Some(keys), Some(kid)) => !keys.has_kid(kid),
            _ => false,
        };
        let may_fetch = jwks.attempted_at.is_none_or(|at| at.elapsed() >= min_interval);
        if (stale || lacks_kid) && may_fetch {
            jwks.attempted_at = Some(Instant::now());
            match self.fetch(url, ca_pem).await {
                Ok(set) => {
                    let (keys, skipped) = KeySet::from_jwks(&set);
                    if !skipped.is_empty() {
                        tracing::info!(%tenant, url, skipped = skipped.join("; "), "JWKS keys skipped");
                    }
                    metrics::counter!("dialback_jwks_fetches_total", "tenant" => tenant.to_string(), "outcome" => "ok")
                        .increment(1);
                    jwks.keys = Some(Arc::new(keys));
                    jwks.fetched_at = Some(Instant::now());
                    jwks.last_error = None;
                }
                Err(why) => {
                    metrics::counter!("dialback_jwks_fetches_total", "tenant" => tenant.to_string(), "outcome" => "error")
                        .increment(1);
                    let serving = if jwks.keys.is_some() { "serving the keys fetched before" } else { "no keys yet" };
                    tracing::warn!(%tenant, url, error = why, serving, "the company's JWKS could not be fetched");
                    jwks.last_error = Some(why);
                }
            }
        }
        match &jwks.keys {
            Some(keys) => Ok(keys.clone()),
            None => Err(AuthError::IssuerUnavailable {
                tenant: tenant.to_string(),
                why: jwks.last_error.clone().unwrap_or_else(|| "not fetched yet".into()),
            }),
        }
    }

    /// Fetches a JWKS: the address rules first, then GET with the company's CA if it has one.
    pub async fn fetch(&self, url: &str, ca_pem: Option<&str>) -> Result<JwkSet, String> {
        let parsed = self.policy.check_url(url)?;
        let limit = Duration::from_millis(self.config.jwks_timeout_ms);
        self.policy.check_resolves(&parsed, limit).await?;
        let tls = crate::tls::client_config(ca_pem)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .dns_resolver(self.policy.resolver())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(limit)
            .user_agent(concat!("dialback/", env!("CARGO_PKG_VERSION"), " (jwks)"))
            .build()
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        let request = http.get(parsed).build().map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        let res = http.execute(request).await.map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        if !res.status().is_success() {
            return Err(format!("{url} answered {}", res.status()));
        }
        let body = res.bytes().await.map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        serde_json::from_slice::<JwkSet>(&body).map_err(|e| format!("{url} is not a JWKS: {e}"))
    }
}

/// What a token says of itself, read before any key is chosen.
#[derive(serde::Deserialize)]
struct Said {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    role: Option<Role>,
}
