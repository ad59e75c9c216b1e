//! Whether each company's PBX runs the dialplan dialback generated for it, checked when its
//! settings are saved and periodically on its AMI session (`callbacks::dialplan_check`): the last
//! result, stored with the settings for the admin page (`GET /v1/admin/pbx`, from any process), a
//! gauge per company, and a warning in the log when something the company turned on (answer
//! confirmation, return calls) cannot work.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::callbacks::dialplan_check::{self, Verdict};
use crate::callbacks::CallbackService;
use crate::cluster::Cluster;
use crate::domain::company::TenantId;
use crate::domain::dialplan::{self, Generated};
use crate::domain::settings::PbxSettings;
use crate::i18n::{Lang, Text};
use crate::return_calls::{ReturnCalls, RouteError};
use crate::telemetry::Chain;

/// The last check of a company's dialplan.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
    /// current, warning, failing, unreadable, or unreachable (no AMI session to ask on).
    pub result: &'static str,
    /// The version the saved settings generate.
    pub version: String,
    pub detail: String,
    /// What to change, in English (the API's `hint`, and the logs).
    pub hint: Option<String>,
    /// The same as a message of the catalogues, so the admin page shows it in its language.
    pub hint_text: Option<Text>,
}

pub struct DialplanWatch {
    db: deadpool_postgres::Pool,
    cluster: Arc<Cluster>,
    callbacks: Arc<CallbackService>,
    return_calls: ReturnCalls,
    /// How the PBX reaches the FastAGI server, for the return-call context's AGI line.
    agi_address: Option<String>,
}

impl DialplanWatch {
    pub fn new(
        db: deadpool_postgres::Pool,
        cluster: Arc<Cluster>,
        callbacks: Arc<CallbackService>,
        return_calls: ReturnCalls,
        agi_address: Option<String>,
    ) -> Arc<Self> {
        Arc::new(DialplanWatch { db, cluster, callbacks, return_calls, agi_address })
    }

    /// The dialplan dialback generates for `tenant` with `settings`: with the return-call context
    /// when the company has return calls on (its FastAGI URL holds the company's key). None
    /// without a PBX.
    pub async fn expected(&self, tenant: &TenantId, settings: &PbxSettings) -> Result<Option<Generated>, RouteError> {
        let rules = self.return_calls.rules(tenant).await?;
        let agi = match (&self.agi_address, rules.rules.enabled) {
            (Some(address), true) => Some(format!("agi://{address}/route?key={}", rules.key)),
            _ => None,
        };
        Ok(dialplan::generate(tenant, settings, agi.as_deref()))
    }

    /// Checks `tenant`'s PBX now on its AMI session (opened if need be) and keeps the result.
    pub async fn check(&self, tenant: &TenantId) -> Option<Checked> {
        let (settings, _) = match self.callbacks.settings(tenant).await {
            Ok(Some(saved)) => saved,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(%tenant, error = %Chain(&e), "dialplan check: the company's settings could not be read");
                return None;
            }
        };
        let expected = match self.expected(tenant, &settings).await {
            Ok(Some(expected)) => expected,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(%tenant, error = %Chain(&e), "dialplan check: the return-call rules could not be read");
                return None;
            }
        };
        let client = self.callbacks.pbx_session(tenant).await.ok()?;
        let inspection = match client.wait_up(self.callbacks.connect_timeout()).await {
            Ok(()) => dialplan_check::inspect(&client, &expected).await,
            Err(e) => dialplan_check::Inspection {
                verdict: Verdict::Unreadable,
                detail: format!("the PBX could not be asked: {e}"),
                hint: None,
            },
        };
        let result = match (&inspection.verdict, client.state()) {
            (Verdict::Unreadable, state) if state != crate::ami::ConnState::Up => "unreachable",
            (verdict, _) => verdict.as_str(),
        };
        let checked = Checked {
            checked_at: OffsetDateTime::now_utc(),
            result,
            version: expected.version.clone(),
            detail: inspection.detail,
            hint: inspection.hint.as_ref().map(|h| h.render(Lang::En)),
            hint_text: inspection.hint,
        };
        self.callbacks.dialplan_checked(tenant, inspection.verdict == Verdict::Current);
        metrics::gauge!("dialback_dialplan_failing", "tenant" => tenant.to_string())
            .set(f64::from(u8::from(inspection.verdict == Verdict::Failing)));
        metrics::counter!("dialback_dialplan_checks_total", "result" => result).increment(1);
        match inspection.verdict {
            Verdict::Failing => tracing::warn!(%tenant, detail = %checked.detail, hint = checked.hint.as_deref(),
                "the company's PBX does not run dialback's dialplan, and its settings need it"),
            Verdict::Current => {
                tracing::debug!(%tenant, version = %checked.version, "the PBX runs dialback's dialplan")
            }
            _ => tracing::info!(%tenant, result, detail = %checked.detail, "dialplan check"),
        }
        let stored = async {
            let db = crate::store::client(&self.db).await?;
            let json = serde_json::to_value(&checked).expect("a check serialises");
            crate::store::admin::put_dialplan_check(&db, tenant, &json).await
        };
        if let Err(e) = stored.await {
            tracing::warn!(%tenant, error = %Chain(&e), "dialplan check: its result could not be stored");
        }
        Some(checked)
    }

    /// Checks, every `every`, the PBX of each company whose AMI session is up in this process.
    pub fn spawn(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        if every.is_zero() {
            return;
        }
        let watch = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                for tenant in watch.cluster.ami.tenants_up() {
                    watch.check(&TenantId::stored(tenant)).await;
                }
            }
        });
    }
}
