//! The background worker that sends queued webhook deliveries: it claims what is due (each
//! delivery goes to one process, locked while it is sent), posts each as a Standard Webhooks
//! message, and records the outcome: delivered; tried again with backoff on a timeout, a
//! connection error, 408, 429 (after its `Retry-After`) or 5xx; given up at once on another
//! answer, or when the retries run out. Endpoints that keep failing are disabled.
//!
//! One callback's events reach an endpoint in order: they are claimed together as a chain and sent
//! one after another, the next only once the one before was delivered; chains are sent side by
//! side (`webhooks.concurrency`), over kept-alive connections.

use std::time::Duration;

use futures_util::{stream, StreamExt};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::signing::signature_header;
use super::{message_id, secret_context, Webhooks};
use crate::store::webhooks::{AttemptOutcome, DeliveryKey, DeliveryStatus, DueDelivery};
use crate::store::{self, StoreError};
use crate::telemetry::Chain;

/// Rounds under way at once: while one sends, another claims what was queued since (woken by
/// the bus), so an event does not wait for a whole round to end before it is claimed.
const SENDERS: usize = 2;
/// Chains (a subject's pending deliveries to an endpoint) claimed per round, at most.
const BATCH: i64 = 256;
/// When there is nothing to send: how often to look for retries that fell due and deliveries
/// another process queued (this process's own wake it at once).
const POLL: Duration = Duration::from_millis(500);
/// How often the queue's depth is measured and failing endpoints are judged.
const HOUSEKEEPING: Duration = Duration::from_secs(10);
/// The answer's body kept for the delivery log, at most.
const ERROR_BODY: usize = 300;

impl Webhooks {
    /// Runs the deliverer until `stop`: `SENDERS` rounds at once, the first also keeping house.
    pub fn spawn_deliverer(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let webhooks = self.clone();
        tokio::spawn(async move {
            let senders = (0..SENDERS).map(|n| webhooks.deliver_until(stop.clone(), n == 0));
            futures_util::future::join_all(senders).await;
        })
    }

    async fn deliver_until(&self, stop: CancellationToken, keeps_house: bool) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        while !stop.is_cancelled() {
            let sent = match self.round().await {
                Ok(sent) => sent,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "webhook deliveries could not be claimed or recorded; retrying");
                    0
                }
            };
            if sent > 0 {
                continue; // there may be more right away (the next events of the same calls)
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = self.bus.deliveries_waiting() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = housekeeping.tick(), if keeps_house => self.housekeeping().await,
            }
        }
    }

    /// Claims what is due, sends it, records the outcomes, in one transaction: the claimed rows
    /// stay locked while they are sent, so no other process sends them, and if this one dies the
    /// transaction ends with its connection and another process sends them. How many were sent.
    async fn round(&self) -> Result<usize, StoreError> {
        let started = std::time::Instant::now();
        let mut db = store::client(&self.db).await?;
        let tx = store::webhooks::begin_round(&mut db).await?;
        let due = store::webhooks::claim_due(&tx, BATCH).await?;
        if due.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let outcomes: Vec<AttemptOutcome> = stream::iter(chains(due))
            .map(|chain| self.send_chain(chain))
            .buffer_unordered(self.config.concurrency)
            .flat_map(stream::iter)
            .collect()
            .await;
        store::webhooks::record_outcomes(&tx, &outcomes).await?;
        tx.commit().await?;
        metrics::histogram!("dialback_webhook_round_seconds").record(started.elapsed().as_secs_f64());
        Ok(outcomes.len())
    }

    /// A chain's deliveries in order, up to the first that is not delivered: the rest wait for it
    /// and stay as they were.
    async fn send_chain(&self, chain: Vec<DueDelivery>) -> Vec<AttemptOutcome> {
        let mut outcomes = Vec::with_capacity(chain.len());
        for due in chain {
            let outcome = self.attempt(due).await;
            let delivered = outcome.status == DeliveryStatus::Delivered;
            outcomes.push(outcome);
            if !delivered {
                break;
            }
        }
        outcomes
    }

    /// One attempt at one delivery.
    async fn attempt(&self, due: DueDelivery) -> AttemptOutcome {
        let key = due.key.clone();
        let id = message_id(key.subject_id, key.sequence);
        let started = std::time::Instant::now();
        let answer = self.post(&due, &id).await;
        metrics::histogram!("dialback_webhook_attempt_seconds").record(started.elapsed().as_secs_f64());
        let (status, next_attempt_at, http_status, error) = match answer {
            Ok(Answer { status, .. }) if (200..300).contains(&status) => {
                let lag = (OffsetDateTime::now_utc() - due.event_at).as_seconds_f64().max(0.0);
                metrics::histogram!("dialback_webhook_lag_seconds").record(lag);
                (DeliveryStatus::Delivered, None, Some(status), None)
            }
            Ok(Answer { status, retry_after, body }) => {
                let error = format!("the endpoint answered {status}{}", body_excerpt(&body));
                if status == 408 || status == 429 || status >= 500 {
                    self.retry_or_give_up(&due, retry_after, Some(status), error)
                } else {
                    let error = if (300..400).contains(&status) {
                        format!("{error}; dialback does not follow redirects: give the final URL")
                    } else {
                        error
                    };
                    (DeliveryStatus::Failed, None, Some(status), Some(error))
                }
            }
            Err(Refused(why)) => (DeliveryStatus::Failed, None, None, Some(why)),
            Err(Unreachable(why)) => self.retry_or_give_up(&due, None, None, why),
        };
        let outcome = match status {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Pending => "retry",
            DeliveryStatus::Failed => "failed",
        };
        metrics::counter!("dialback_webhook_deliveries_total", "tenant" => key.tenant_id.to_string(), "outcome" => outcome)
            .increment(1);
        if status != DeliveryStatus::Delivered {
            tracing::warn!(tenant = %key.tenant_id, endpoint = %key.endpoint_id, message_id = %id,
                attempt = due.attempt, outcome, error = error.as_deref().unwrap_or_default(), "webhook delivery failed");
        }
        AttemptOutcome { key, status, next_attempt_at, http_status, error }
    }

    /// Schedules the next try after `attempt` failures, or gives up when the schedule has run out.
    fn retry_or_give_up(
        &self,
        due: &DueDelivery,
        retry_after: Option<Duration>,
        http_status: Option<i32>,
        error: String,
    ) -> (DeliveryStatus, Option<OffsetDateTime>, Option<i32>, Option<String>) {
        let schedule = &self.config.retry_schedule_s;
        match schedule.get(due.attempt as usize - 1) {
            Some(&delay_s) => {
                let delay = retry_after.unwrap_or_else(|| jittered(Duration::from_secs(delay_s)));
                (DeliveryStatus::Pending, Some(OffsetDateTime::now_utc() + delay), http_status, Some(error))
            }
            None => {
                let error = format!("{error}; gave up after {} attempts", due.attempt);
                (DeliveryStatus::Failed, None, http_status, Some(error))
            }
        }
    }

    /// Posts the message; `Err` when it never got an answer.
    async fn post(&self, due: &DueDelivery, id: &str) -> Result<Answer, Failure> {
        let url = self.policy.check_url(&due.url).map_err(Refused)?;
        let context = secret_context(&due.key.tenant_id, &due.key.endpoint_id);
        let secret = self.secrets.decrypt(&due.secret_enc, &context).map_err(|_| {
            Refused("the endpoint's signing secret cannot be decrypted with this server's secrets key".into())
        })?;
        let previous = match (&due.previous_secret_enc, due.previous_secret_until) {
            (Some(enc), Some(until)) if until > OffsetDateTime::now_utc() => self.secrets.decrypt(enc, &context).ok(),
            _ => None,
        };
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let body = envelope(&due.event_type, due.event_at, &due.data);
        let secrets: Vec<&str> = std::iter::once(secret.as_str()).chain(previous.as_deref()).collect();
        let signature = signature_header(&secrets, id, timestamp, body.as_bytes());
        let request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .build()
            .map_err(|e| Refused(format!("the request cannot be built: {}", Chain(&e))))?;
        let response = self.http.execute(request).await.map_err(|e| Unreachable(describe_send_error(&e)))?;
        let status = i32::from(response.status().as_u16());
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| retry_after(v.to_str().ok()?, std::time::SystemTime::now()));
        let body = if (200..300).contains(&status) { Vec::new() } else { first_bytes(response).await };
        Ok(Answer { status, retry_after, body })
    }

    /// Measures the queue and disables endpoints that have failed for too long.
    async fn housekeeping(&self) {
        let result: Result<(), StoreError> = async {
            let db = store::client(&self.db).await?;
            metrics::gauge!("dialback_webhook_queue_depth").set(store::webhooks::pending_count(&db).await? as f64);
            let days = self.config.disable_after_days;
            let reason = format!("every delivery failed for {days} days; fix the endpoint, then enable it again");
            let since = OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
            for (tenant, endpoint) in store::webhooks::disable_failing(&db, since, &reason).await? {
                tracing::warn!(tenant, endpoint, days, "webhook endpoint disabled: it kept failing");
                metrics::counter!("dialback_webhook_endpoints_disabled_total").increment(1);
            }
            let keep = OffsetDateTime::now_utc() - time::Duration::days(i64::from(self.config.keep_delivered_days));
            store::webhooks::prune_delivered(&db, keep).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %Chain(&e), "webhook housekeeping failed; next time");
        }
    }
}

/// Claimed deliveries (grouped by chain, in order, as `claim_due` returns them) split into chains.
fn chains(due: Vec<DueDelivery>) -> Vec<Vec<DueDelivery>> {
    let mut chains: Vec<Vec<DueDelivery>> = Vec::new();
    for delivery in due {
        match chains.last_mut() {
            Some(chain) if same_chain(&chain[0].key, &delivery.key) => chain.push(delivery),
            _ => chains.push(vec![delivery]),
        }
    }
    chains
}

fn same_chain(a: &DeliveryKey, b: &DeliveryKey) -> bool {
    (&a.tenant_id, &a.endpoint_id, a.subject_id) == (&b.tenant_id, &b.endpoint_id, b.subject_id)
}

/// The message body: `{"type", "timestamp", "data"}` (`data` is stored JSON, sent as it is).
pub fn envelope(event_type: &str, at: OffsetDateTime, data: &str) -> String {
    let timestamp = crate::view::rfc3339(Some(at));
    format!(r#"{{"type":{},"timestamp":{timestamp},"data":{data}}}"#, serde_json::Value::from(event_type))
}

struct Answer {
    status: i32,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

enum Failure {
    /// Never sent: the policy refuses the URL (or its secret cannot be read). Retrying cannot help.
    Refused(String),
    /// Sent but not answered: timeout, connection refused or reset, DNS.
    Unreachable(String),
}
use Failure::{Refused, Unreachable};

/// A receiver's `Retry-After`: seconds, or an HTTP date (RFC 9110, 10.2.3), kept between a
/// second and a day; None when it is neither.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or_default(),
    };
    Some(wait.clamp(Duration::from_secs(1), Duration::from_secs(86_400)))
}

/// What went wrong sending, with its causes (reqwest's own message says little).
fn describe_send_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    format!("{what}: {}", Chain(e))
}

/// The first bytes of an answer's body, for the delivery log; the rest is not read.
async fn first_bytes(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY);
    body
}

fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", text.trim())
    }
}

/// `delay` ± 20 %, so endpoints that failed together are not retried together.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_may_say_when_to_retry_in_seconds_or_as_an_http_date() {
        use std::time::SystemTime;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        let at = |offset: u64| httpdate::fmt_http_date(now + Duration::from_secs(offset));
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(&at(90), now), Some(Duration::from_secs(90)));
        // Already past, or zero: a second; far away: a day.
        assert_eq!(
            retry_after(&httpdate::fmt_http_date(now - Duration::from_secs(60)), now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(retry_after("0", now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&at(10 * 86_400), now), Some(Duration::from_secs(86_400)));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn the_envelope_carries_type_timestamp_and_the_data_as_stored() {
        let at = OffsetDateTime::from_unix_timestamp(1_795_341_119).unwrap();
        let body = envelope("callback.status_changed", at, r#"{"id":"x","sequence":2}"#);
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["type"], "callback.status_changed");
        assert_eq!(parsed["timestamp"], "2026-11-22T09:51:59Z");
        assert_eq!(parsed["data"]["sequence"], 2);
    }

    #[test]
    fn retries_are_spread_around_their_delay() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(100));
            assert!(d >= Duration::from_secs(80) && d <= Duration::from_secs(120), "{d:?}");
        }
    }
}
