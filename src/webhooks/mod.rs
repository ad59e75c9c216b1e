//! Webhooks: a company's systems hear every event (each callback status, each recording bound)
//! as signed HTTP posts (Standard Webhooks). Endpoints are the admin's; the events are queued in
//! the same statement as the change they report (store::events), and the deliverer sends them.
//!
//! - [`signing`]: secrets and signatures.
//! - [`deliverer`]: the background worker.

pub mod deliverer;
pub mod signing;

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::WebhooksConfig;
use crate::crypto::SecretsKey;
use crate::domain::company::TenantId;
use crate::domain::event::EndpointSpec;
use crate::events::Bus;
use crate::outbound::Policy;
use crate::store::webhooks::{DeliveryKey, DeliveryRow, DeliveryStatus, EndpointRow};
use crate::store::{self, StoreError};

/// The webhook service: endpoints, deliveries, and the deliverer. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    db: deadpool_postgres::Pool,
    secrets: SecretsKey,
    config: WebhooksConfig,
    policy: Policy,
    bus: Bus,
    http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL may not be called (its scheme, its address); the message says why.
    #[error("{0}")]
    Target(String),
    #[error("no such webhook endpoint")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An endpoint just written, with its signing secret when it was created.
pub struct Written {
    pub endpoint: EndpointRow,
    pub created: bool,
    /// Given once, when the endpoint is created (and on rotation): never stored in the clear.
    pub secret: Option<String>,
}

/// The webhook-id of an event: `msg_` then its subject and number.
pub fn message_id(subject: Uuid, sequence: i32) -> String {
    format!("msg_{}_{sequence}", subject.simple())
}

/// The (subject, sequence) a message id names.
pub fn parse_message_id(id: &str) -> Option<(Uuid, i32)> {
    let (subject, sequence) = id.strip_prefix("msg_")?.split_once('_')?;
    Some((Uuid::try_parse(subject).ok()?, sequence.parse().ok().filter(|n| *n > 0)?))
}

/// What an endpoint's secrets are encrypted with, besides the server's key: a secret copied to
/// another endpoint's row does not decrypt.
fn secret_context(tenant: &TenantId, endpoint: &str) -> String {
    format!("webhook:{tenant}:{endpoint}")
}

impl Webhooks {
    pub fn new(
        db: deadpool_postgres::Pool,
        secrets: SecretsKey,
        config: WebhooksConfig,
        bus: Bus,
    ) -> anyhow::Result<Self> {
        let policy = Policy { allow_http: config.allow_http, allow_private: config.allow_private_targets };
        let tls = crate::tls::client_config(None).map_err(|e| anyhow::anyhow!("webhooks' TLS roots: {e}"))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .dns_resolver(policy.resolver())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .pool_max_idle_per_host(config.concurrency)
            .user_agent(concat!("dialback/", env!("CARGO_PKG_VERSION"), " (webhooks)"))
            .build()?;
        Ok(Self { db, secrets, config, policy, bus, http })
    }

    /// Creates or updates an endpoint. A new one gets its signing secret, returned this once.
    pub async fn put_endpoint(
        &self,
        tenant: &TenantId,
        id: &str,
        spec: &EndpointSpec,
    ) -> Result<Written, WebhookError> {
        let url = self.policy.check_url(&spec.url).map_err(WebhookError::Target)?;
        let limit = Duration::from_millis(self.config.connect_timeout_ms);
        self.policy.check_resolves(&url, limit).await.map_err(WebhookError::Target)?;
        let secret = signing::new_secret();
        let secret_enc = self.secrets.encrypt(&secret, &secret_context(tenant, id));
        let db = store::client(&self.db).await?;
        store::admin::ensure_tenant(&db, tenant).await?;
        let (endpoint, created) = store::webhooks::put_endpoint(&db, tenant, id, spec, &secret_enc).await?;
        tracing::info!(%tenant, endpoint = id, created, url = %endpoint.url, enabled = endpoint.enabled, "webhook endpoint saved");
        Ok(Written { endpoint, created, secret: created.then_some(secret) })
    }

    /// A new signing secret; the old one keeps signing beside it for the configured overlap.
    pub async fn rotate_secret(&self, tenant: &TenantId, id: &str) -> Result<Written, WebhookError> {
        let secret = signing::new_secret();
        let secret_enc = self.secrets.encrypt(&secret, &secret_context(tenant, id));
        let until = OffsetDateTime::now_utc() + time::Duration::hours(i64::from(self.config.secret_overlap_h));
        let db = store::client(&self.db).await?;
        let endpoint =
            store::webhooks::rotate_secret(&db, tenant, id, &secret_enc, until).await?.ok_or(WebhookError::NotFound)?;
        tracing::info!(%tenant, endpoint = id, previous_until = %until, "webhook secret rotated");
        Ok(Written { endpoint, created: false, secret: Some(secret) })
    }

    pub async fn endpoint(&self, tenant: &TenantId, id: &str) -> Result<EndpointRow, WebhookError> {
        let db = store::client(&self.db).await?;
        store::webhooks::get_endpoint(&db, tenant, id).await?.ok_or(WebhookError::NotFound)
    }

    pub async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<EndpointRow>, WebhookError> {
        let db = store::client(&self.db).await?;
        Ok(store::webhooks::list_endpoints(&db, tenant).await?)
    }

    pub async fn delete_endpoint(&self, tenant: &TenantId, id: &str) -> Result<(), WebhookError> {
        let mut db = store::client(&self.db).await?;
        if !store::webhooks::delete_endpoint(&mut db, tenant, id).await? {
            return Err(WebhookError::NotFound);
        }
        tracing::info!(%tenant, endpoint = id, "webhook endpoint deleted");
        Ok(())
    }

    /// An endpoint's deliveries, newest first (see [`store::webhooks::list_deliveries`]).
    pub async fn deliveries(
        &self,
        tenant: &TenantId,
        id: &str,
        status: Option<DeliveryStatus>,
        before: Option<(Uuid, i32)>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, WebhookError> {
        let db = store::client(&self.db).await?;
        store::webhooks::get_endpoint(&db, tenant, id).await?.ok_or(WebhookError::NotFound)?;
        Ok(store::webhooks::list_deliveries(&db, tenant, id, status, before, limit).await?)
    }

    /// Sends a delivery again (now, its retries counted afresh).
    pub async fn retry(
        &self,
        tenant: &TenantId,
        id: &str,
        subject: Uuid,
        sequence: i32,
    ) -> Result<DeliveryRow, WebhookError> {
        let key =
            DeliveryKey { tenant_id: tenant.to_owned(), endpoint_id: id.to_owned(), subject_id: subject, sequence };
        let db = store::client(&self.db).await?;
        let row = store::webhooks::retry_delivery(&db, &key).await?.ok_or(WebhookError::NotFound)?;
        self.bus.deliveries_queued();
        tracing::info!(%tenant, endpoint = id, message_id = %message_id(subject, sequence), "webhook delivery queued again");
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_their_event_and_read_back() {
        let subject = Uuid::now_v7();
        let id = message_id(subject, 3);
        assert!(id.starts_with("msg_"));
        assert_eq!(parse_message_id(&id), Some((subject, 3)));
        for bad in ["msg_", "msg_x_1", &format!("msg_{}_0", subject.simple()), &format!("evt_{}_1", subject.simple())] {
            assert_eq!(parse_message_id(bad), None, "{bad}");
        }
    }
}
