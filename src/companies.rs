//! The operator's work on companies: create or change one (its name, whether it may act, who
//! issues its tokens), list them, remove one with everything of it. The API
//! (`/v1/operator/companies`) and the CLI (`dialback company`) both call this.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::issuers::hs256_secret_context;
use crate::auth::keys::KeySet;
use crate::auth::Verifier;
use crate::crypto::SecretsKey;
use crate::domain::company::{CompanyInput, CompanyState, Issuer, TenantId};
use crate::domain::FieldError;
use crate::recordings::storage::RecordingStorage;
use crate::store::companies::CompanyRow;
use crate::store::notify::{self, Change};
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CompanyError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("no company {0:?}")]
    NotFound(String),
    /// Removing a company that may still act, or has calls in progress.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A company as the operator sees it. `hs256_secret` only in the answer that created it.
#[derive(Debug, Clone, Serialize)]
pub struct CompanyView {
    pub id: String,
    pub name: Option<String>,
    pub state: CompanyState,
    pub issuer: Option<Issuer>,
    /// How its tokens are verified: `issuer` (its own) or `global_keys` (the deployment's, until it
    /// gets an issuer), or `none` (the deployment's keys act only for the operator).
    pub verified_with: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

pub struct Companies {
    db: deadpool_postgres::Pool,
    secrets: SecretsKey,
    verifier: Arc<Verifier>,
    global_keys: crate::config::GlobalKeys,
    recordings: Arc<dyn RecordingStorage>,
}

impl Companies {
    pub fn new(
        db: deadpool_postgres::Pool,
        secrets: SecretsKey,
        verifier: Arc<Verifier>,
        global_keys: crate::config::GlobalKeys,
        recordings: Arc<dyn RecordingStorage>,
    ) -> Self {
        Self { db, secrets, verifier, global_keys, recordings }
    }

    fn view(&self, row: CompanyRow, hs256_secret: Option<String>) -> CompanyView {
        let verified_with = match (&row.issuer, self.global_keys) {
            (Some(_), _) => "issuer",
            (None, crate::config::GlobalKeys::CompaniesWithoutIssuer) => "global_keys",
            (None, crate::config::GlobalKeys::Operator) => "none",
        };
        CompanyView {
            id: row.id,
            name: row.name,
            state: row.state,
            issuer: row.issuer,
            verified_with,
            hs256_secret,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }

    pub async fn list(&self) -> Result<Vec<CompanyView>, CompanyError> {
        let db = store::client(&self.db).await?;
        Ok(store::companies::list(&db).await?.into_iter().map(|row| self.view(row, None)).collect())
    }

    pub async fn get(&self, id: &TenantId) -> Result<CompanyView, CompanyError> {
        let db = store::client(&self.db).await?;
        let row = store::companies::get(&db, id).await?.ok_or_else(|| CompanyError::NotFound(id.to_string()))?;
        Ok(self.view(row, None))
    }

    /// Creates or replaces a company; every process verifies its tokens the new way at once.
    /// Returns the company and whether it was created.
    pub async fn put(&self, id: &TenantId, input: &CompanyInput) -> Result<(CompanyView, bool), CompanyError> {
        input.check()?;
        if let Some(issuer) = &input.issuer {
            self.check_keys(issuer).await?;
        }
        let mut db = store::client(&self.db).await?;
        let tx = db.transaction().await.map_err(StoreError::from)?;
        let before = store::companies::get(&tx, id).await?;
        let wants_secret = input.issuer.as_ref().is_some_and(|i| i.hs256);
        let has_secret = before.as_ref().is_some_and(|b| b.hs256_secret_enc.is_some());
        let new_secret = (wants_secret && !has_secret).then(new_hs256_secret);
        let secret_enc = new_secret.as_ref().map(|s| self.secrets.encrypt(s, &hs256_secret_context(id)));
        let (row, created) = store::companies::put(
            &tx,
            id,
            input.name.trim(),
            input.state,
            input.issuer.as_ref(),
            secret_enc.as_deref(),
        )
        .await?;
        notify::announce(&tx, &Change::Company { tenant: id.clone() }).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.verifier.forget(Some(id));
        tracing::info!(tenant = %id, state = row.state.as_str(), created, issuer = ?row.issuer.as_ref().map(|i| &i.iss),
            "company saved by the operator");
        Ok((self.view(row, new_secret), created))
    }

    /// The keys an issuer names must be usable: PEM keys parse, a JWKS URL meets the address
    /// rules and answers with at least one public key.
    async fn check_keys(&self, issuer: &Issuer) -> Result<(), CompanyError> {
        for (n, pem) in issuer.public_keys.iter().enumerate() {
            KeySet::default().add_pem(pem.as_bytes()).map_err(|e| FieldError {
                field: "issuer.public_keys",
                message: format!("issuer.public_keys[{n}]: {e}"),
            })?;
        }
        if let Some(ca) = &issuer.ca_pem {
            crate::tls::client_config(Some(ca))
                .map_err(|e| FieldError { field: "issuer.ca_pem", message: format!("issuer.ca_pem: {e}") })?;
        }
        if let Some(url) = &issuer.jwks_url {
            let invalid = |message: String| FieldError { field: "issuer.jwks_url", message };
            let set = self
                .verifier
                .fetch(url, issuer.ca_pem.as_deref())
                .await
                .map_err(|e| invalid(format!("issuer.jwks_url could not be fetched: {e}")))?;
            let (keys, skipped) = KeySet::from_jwks(&set);
            if keys.is_empty() {
                return Err(invalid(format!(
                    "issuer.jwks_url holds no usable public key ({})",
                    if skipped.is_empty() { "it is empty".into() } else { skipped.join("; ") }
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Removes a suspended company with nothing in progress, and everything of it: couriers,
    /// orders, settings, the journal, recordings (their files too), webhooks.
    pub async fn remove(&self, id: &TenantId) -> Result<(), CompanyError> {
        let mut db = store::client(&self.db).await?;
        let tx = db.transaction().await.map_err(StoreError::from)?;
        let row = store::companies::get(&tx, id).await?.ok_or_else(|| CompanyError::NotFound(id.to_string()))?;
        if row.state != CompanyState::Suspended {
            return Err(CompanyError::Conflict(format!(
                "company {id:?} is active: suspend it first (PUT with \"state\": \"suspended\"), so that nothing new starts"
            )));
        }
        let in_flight = store::companies::calls_in_flight(&tx, id).await?;
        if in_flight > 0 {
            return Err(CompanyError::Conflict(format!(
                "company {id:?} has {in_flight} call(s) in progress: remove it once they have ended"
            )));
        }
        let keys = store::companies::remove(&tx, id).await?.unwrap_or_default();
        notify::announce(&tx, &Change::Company { tenant: id.clone() }).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.verifier.forget(Some(id));
        let mut left = 0;
        for key in &keys {
            if let Err(e) = self.recordings.remove(key).await {
                left += 1;
                tracing::warn!(tenant = %id, key, error = %crate::telemetry::Chain(&e), "a removed company's recording file could not be deleted");
            }
        }
        tracing::info!(tenant = %id, recordings = keys.len(), left, "company removed by the operator");
        Ok(())
    }
}

/// A company's HS256 secret: 32 random bytes, hex.
fn new_hs256_secret() -> String {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).expect("system randomness");
    hex::encode(key)
}
