//! Changes one process saves that the others keep cached (a company's PBX settings, its
//! return-call rules, the company itself as the operator set it), announced with PostgreSQL `NOTIFY` so every process drops its copy at once.
//! The caches' short lifetime (`db.cache_ttl_s`) stays the fallback for a notification missed
//! while a listener was reconnecting.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;

use crate::domain::company::TenantId;

use super::StoreError;

/// The channel every change is announced on.
const CHANNEL: &str = "dialback_changes";

/// What changed, and whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    PbxSettings {
        tenant: TenantId,
    },
    ReturnCallRules {
        tenant: TenantId,
    },
    /// The operator changed or removed a company (its state, its token issuer).
    Company {
        tenant: TenantId,
    },
}

impl Change {
    fn payload(&self) -> String {
        match self {
            Change::PbxSettings { tenant } => format!("pbx_settings:{tenant}"),
            Change::ReturnCallRules { tenant } => format!("return_call_rules:{tenant}"),
            Change::Company { tenant } => format!("company:{tenant}"),
        }
    }

    fn parse(payload: &str) -> Option<Change> {
        let (kind, tenant) = payload.split_once(':')?;
        let tenant = TenantId::stored(tenant);
        match kind {
            "pbx_settings" => Some(Change::PbxSettings { tenant }),
            "return_call_rules" => Some(Change::ReturnCallRules { tenant }),
            "company" => Some(Change::Company { tenant }),
            _ => None,
        }
    }
}

/// Announces `change`; inside a transaction it is sent when (and only if) that commits.
pub async fn announce(db: &impl GenericClient, change: &Change) -> Result<(), StoreError> {
    db.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &change.payload()]).await?;
    Ok(())
}

/// What a listener hears.
#[derive(Debug)]
pub enum Heard {
    /// Listening (again): anything announced before may have been missed.
    Listening,
    Change(Change),
    /// The connection was lost (why); nothing more comes.
    Lost(String),
}

/// Listens on a connection of its own (a pooled one would be returned between queries, and a
/// pooler in transaction mode cannot carry `LISTEN`). What it hears is sent to the returned
/// channel, ending with [`Heard::Lost`].
pub async fn listen(
    database_url: &secrecy::SecretString,
    db: &crate::config::DbConfig,
) -> anyhow::Result<mpsc::UnboundedReceiver<Heard>> {
    let crate::pg_tls::Connect { mut config, tls, .. } = super::connect_config(database_url, db)?;
    config.connect_timeout(Duration::from_millis(db.timeout_ms));
    config.application_name("dialback-listener");
    let (client, mut connection) = config.connect(tls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let heard = tx.clone();
    // The client lives as long as the connection is read (it is handed over once LISTEN is sent).
    let (keep_client, client_kept) = oneshot::channel::<tokio_postgres::Client>();
    tokio::spawn(async move {
        let _client = client_kept;
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let why = loop {
            match messages.next().await {
                Some(Ok(AsyncMessage::Notification(n))) => match Change::parse(n.payload()) {
                    Some(change) => {
                        let _ = heard.send(Heard::Change(change));
                    }
                    None => tracing::warn!(payload = n.payload(), "unknown change announced; ignored"),
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("{}", crate::telemetry::Chain(&e)),
                None => break "the connection closed".to_owned(),
            }
        };
        let _ = heard.send(Heard::Lost(why));
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let _ = keep_client.send(client);
    let _ = tx.send(Heard::Listening);
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back() {
        for change in [
            Change::PbxSettings { tenant: TenantId::stored("acme") },
            Change::ReturnCallRules { tenant: TenantId::stored("a:b") },
            Change::Company { tenant: TenantId::stored("acme") },
        ] {
            assert_eq!(Change::parse(&change.payload()), Some(change));
        }
        assert_eq!(Change::parse("nope"), None);
        assert_eq!(Change::parse("other:acme"), None);
    }
}
