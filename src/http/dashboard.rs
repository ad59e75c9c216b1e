//! `GET /v1/admin/dashboard`: what the office looks at first. Calls per hour for the last day and
//! per day for 30 days by how they went, the couriers whose calls fail most, where return calls
//! went, the webhook endpoints' health, the PBX's state and the guided set-up's steps. Counted in
//! PostgreSQL (`store::dashboard`), not by the page.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

use super::extract::{Admin, Language};
use super::problem::ApiError;
use super::state::AppState;
use crate::ami::ConnState;
use crate::domain::dashboard::{self, SetupFacts, Tally};
use crate::store::{self, dashboard as counts};
use crate::view::rfc3339;

/// How many couriers the dashboard names.
const FAILING_COURIERS: usize = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardQuery {
    /// The IANA time zone the days are counted in (the page sends the browser's).
    #[serde(default)]
    tz: Option<String>,
}

fn tally_view(t: Tally) -> Value {
    let t = t.complete();
    json!({"calls": t.calls, "reached": t.reached, "outcomes": t.outcomes})
}

/// A bucket for each start, with its tally (0 where there were no calls).
fn series(mut tallies: BTreeMap<OffsetDateTime, Tally>, starts: impl Iterator<Item = OffsetDateTime>) -> Value {
    starts
        .map(|start| {
            let mut v = tally_view(tallies.remove(&start).unwrap_or_default());
            v["start"] = rfc3339(Some(start));
            v
        })
        .collect()
}

fn total(tallies: &BTreeMap<OffsetDateTime, Tally>) -> Tally {
    let mut sum = Tally::default();
    for t in tallies.values() {
        sum.merge(t);
    }
    sum
}

fn connection(state: Option<ConnState>, configured: bool) -> (&'static str, Option<String>) {
    match state {
        _ if !configured => ("not_configured", None),
        None => ("idle", None),
        Some(ConnState::Up) => ("up", None),
        Some(ConnState::Connecting) => ("connecting", None),
        Some(ConnState::Down(e)) => ("down", Some(e.to_string())),
        Some(ConnState::Closed) => ("idle", None),
    }
}

pub async fn dashboard(
    admin: Admin,
    Language(lang): Language,
    state: web::Data<AppState>,
    query: web::Query<DashboardQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = admin.tenant();
    let tz = query.into_inner().tz.unwrap_or_else(|| "UTC".to_owned());
    let mut db = store::client(&state.db).await?;
    if tz.is_empty() || tz.len() > 64 || !counts::time_zone_known(&db, &tz).await? {
        return Err(ApiError::bad_request("invalid_query", format!("tz: unknown time zone {tz:?}")).with("field", "tz"));
    }
    let rolled = counts::roll_up(&mut db, tenant).await?;
    let now = rolled.now;
    let this_hour = counts::truncate(now, Duration::hours(1));
    let hours_since = this_hour - Duration::hours(23);
    let hours = counts::tallies(&db, tenant, &rolled, hours_since, &tz, false).await?;
    let day_starts = counts::local_days(&db, &tz, counts::DAYS).await?;
    let days_since = day_starts.first().copied().unwrap_or(now);
    let days = counts::tallies(&db, tenant, &rolled, days_since, &tz, true).await?;
    let couriers_since = now - Duration::days(counts::COURIER_DAYS);
    let couriers = counts::couriers(&db, tenant, &rolled, couriers_since).await?;
    let failing = dashboard::most_failing(couriers, FAILING_COURIERS);
    let ids: Vec<String> = failing.iter().map(|(id, _)| id.clone()).collect();
    let names = counts::courier_names(&db, tenant, &ids).await?;
    let return_calls = counts::return_calls(&db, tenant, couriers_since).await?;
    let endpoints = counts::endpoint_health(&db, tenant).await?;
    let settings = store::admin::get_settings(&db, tenant).await?;
    let last_test = counts::last_test(&db, tenant).await?;
    let return_calls_enabled = counts::return_calls_enabled(&db, tenant).await?;

    let configured = settings.as_ref().is_some_and(|s| s.settings.has_pbx());
    let dialplan_check = super::pbx::dialplan_check_view(settings.and_then(|s| s.dialplan_check), lang);
    let (conn, conn_error) = connection(state.cluster.ami.state(tenant), configured);
    let healthy = |e: &counts::EndpointHealth| e.enabled && e.failing_since.is_none();
    let setup = dashboard::setup(SetupFacts {
        pbx_saved: configured,
        dialplan_current: dialplan_check["result"] == "current",
        test_reached_originate: last_test.as_ref().is_some_and(|t| t.reached_originate),
        test_connected_once: last_test.as_ref().is_some_and(|t| t.connected_at.is_some()),
        return_calls_enabled,
        webhook_healthy: endpoints.iter().any(healthy),
    });

    let body = json!({
        "generated_at": rfc3339(Some(now)),
        "time_zone": tz,
        "last_24_hours": tally_view(total(&hours)),
        "last_30_days": tally_view(total(&days)),
        "hours": series(hours, (0..24).map(|h| hours_since + Duration::hours(h))),
        "days": series(days, day_starts.into_iter()),
        "couriers_since": rfc3339(Some(couriers_since)),
        "failing_couriers": failing.into_iter().map(|(id, t)| json!({
            "courier_id": id,
            "name": names.get(&id).filter(|n| !n.is_empty()),
            "calls": t.calls,
            "failed": t.failed,
            "reasons": t.reasons.into_iter().map(|((leg, reason), calls)| json!({
                "failed_leg": Some(leg).filter(|l| !l.is_empty()),
                "reason": Some(reason).filter(|r| !r.is_empty()),
                "calls": calls,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "return_calls": return_calls.into_iter().map(|r| json!({
            "route_kind": r.route_kind, "route_reason": r.route_reason, "status": r.status, "calls": r.calls,
        })).collect::<Vec<_>>(),
        "webhooks": endpoints.iter().map(|e| json!({
            "id": e.id,
            "url": e.url,
            "enabled": e.enabled,
            "healthy": healthy(e),
            "disabled_reason": e.disabled_reason,
            "failing_since": rfc3339(e.failing_since),
            "pending": e.pending,
            "oldest_pending_at": rfc3339(e.oldest_pending_at),
        })).collect::<Vec<_>>(),
        "pbx": {
            "configured": configured,
            "connection": conn,
            "connection_error": conn_error,
            "dialplan_check": dialplan_check,
            "last_test": last_test.map(|t| json!({
                "at": rfc3339(Some(t.at)),
                "ok": t.ok,
                "failed_step": t.failed_step,
                "callback_id": t.callback_id,
                "connected_at": rfc3339(t.connected_at),
            })),
        },
        "setup": setup,
    });
    Ok(HttpResponse::Ok().json(body))
}
