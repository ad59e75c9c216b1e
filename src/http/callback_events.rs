//! `GET /v1/callbacks/{id}/events`: a callback's statuses as Server-Sent Events, for the courier
//! who placed it (and admins). The current state at once, then each event as it is written, each
//! `id:` its `sequence`; `Last-Event-ID` resumes after that one, from the stored events, so a
//! reconnect misses nothing. The stream ends after the call's final status.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream;
use serde_json::Value;
use uuid::Uuid;

use super::callbacks::{callback_id, visible};
use super::extract::Principal;
use super::problem::ApiError;
use super::state::AppState;
use crate::callbacks::view::{for_courier, view};
use crate::domain::callback::Status;
use crate::domain::company::TenantId;
use crate::events::Subscription;
use crate::store;
use crate::telemetry::Chain;
use crate::view::Viewer;

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// With other dialback processes alive, a call's changes may be written by one of them (this
/// process hears only what it writes): a stream quiet this long reads what was stored since.
const CATCH_UP: Duration = Duration::from_secs(1);
/// A stream ends after this long even if its call has not (an `unknown` call may never settle):
/// the client reconnects with `Last-Event-ID` if it still cares.
const MAX_STREAM: Duration = Duration::from_secs(3600);

pub async fn stream(
    req: HttpRequest,
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = callback_id(&path)?;
    let last_seen = match req.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<i32>().ok()).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_last_event_id",
                "Last-Event-ID must be the sequence of an event of this stream",
            )
        })?),
    };
    // Subscribed before anything is read: an event written meanwhile is heard, not lost.
    let subscription = state.cluster.bus.subscribe(id);
    let row = visible(&state, &principal, id).await?;
    let viewer = if principal.is_admin() { Viewer::Admin } else { Viewer::Courier };
    let mut pending = VecDeque::new();
    let after = match last_seen {
        // Resumed: what was written since, as it was written.
        Some(after) => {
            let db = store::client(&state.db).await?;
            for event in store::events::after(&db, principal.tenant(), id, after).await? {
                pending.push_back((event.sequence, event.data));
            }
            after
        }
        // The callback as it is now, under its latest event's number.
        None => {
            let mut now = view(&row, None, Viewer::Admin);
            now["sequence"] = row.sequence.into();
            pending.push_back((row.sequence, now.to_string()));
            row.sequence - 1
        }
    };
    let feed = Feed {
        state,
        tenant: principal.tenant().clone(),
        id,
        viewer,
        subscription,
        pending,
        last_sent: after,
        finished: false,
        deadline: tokio::time::Instant::now() + MAX_STREAM,
        keepalive_at: tokio::time::Instant::now() + KEEPALIVE,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // nginx would otherwise buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream::unfold(feed, Feed::next_chunk)))
}

/// One open stream.
struct Feed {
    state: web::Data<AppState>,
    tenant: TenantId,
    id: Uuid,
    viewer: Viewer,
    subscription: Subscription,
    /// Events to send, oldest first: `(sequence, admin view JSON)`.
    pending: VecDeque<(i32, String)>,
    last_sent: i32,
    finished: bool,
    deadline: tokio::time::Instant,
    /// When a keepalive is due, unless something is sent before.
    keepalive_at: tokio::time::Instant,
}

impl Feed {
    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Feed)> {
        if self.finished {
            return None;
        }
        loop {
            while let Some((sequence, data)) = self.pending.pop_front() {
                if sequence <= self.last_sent {
                    continue; // already sent (read back and heard live)
                }
                self.last_sent = sequence;
                self.keepalive_at = tokio::time::Instant::now() + KEEPALIVE;
                let (text, last) = self.render(&data);
                self.finished = last;
                return Some((Ok(Bytes::from(format!("id: {sequence}\ndata: {text}\n\n"))), self));
            }
            tokio::select! {
                heard = self.subscription.next() => match heard {
                    Ok(Some(event)) => self.pending.push_back((event.sequence, event.data.to_string())),
                    Ok(None) => return None,
                    // Fell behind the live channel: what it missed is in the database.
                    Err(missed) => {
                        tracing::debug!(call_id = %self.id, missed, "live stream fell behind; reading back");
                        if let Err(e) = self.read_back().await {
                            tracing::warn!(call_id = %self.id, error = %Chain(&e), "live stream could not read back; ending it");
                            return None;
                        }
                    }
                },
                _ = tokio::time::sleep(CATCH_UP), if self.state.cluster.processes_alive() > 1 => {
                    if let Err(e) = self.read_back().await {
                        tracing::warn!(call_id = %self.id, error = %Chain(&e), "live stream could not read back; ending it");
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(self.keepalive_at) => {
                    self.keepalive_at = tokio::time::Instant::now() + KEEPALIVE;
                    return Some((Ok(Bytes::from_static(b": keepalive\n\n")), self));
                }
                _ = tokio::time::sleep_until(self.deadline) => return None,
            }
        }
    }

    async fn read_back(&mut self) -> Result<(), store::StoreError> {
        let db = store::client(&self.state.db).await?;
        for event in store::events::after(&db, &self.tenant, self.id, self.last_sent).await? {
            self.pending.push_back((event.sequence, event.data));
        }
        Ok(())
    }

    /// The event's data as this viewer sees it, and whether it is the call's last status.
    fn render(&self, data: &str) -> (String, bool) {
        let Ok(mut value) = serde_json::from_str::<Value>(data) else { return (data.to_owned(), false) };
        let status = value.get("status").and_then(Value::as_str).and_then(Status::parse);
        let last = status.is_some_and(Status::is_terminal);
        if self.viewer == Viewer::Courier {
            for_courier(&mut value);
        }
        (value.to_string(), last)
    }
}
