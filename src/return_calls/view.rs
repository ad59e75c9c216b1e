//! A return call as the API shows it: to admins in full, to its courier with the caller's number
//! masked (as a callback's client number is).

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::callback::CdrRecord;
use crate::store::return_calls::ReturnCallRow;
use crate::view::{mask, Rfc3339, Viewer, FIELDS_SERIALIZE};

pub fn view(row: &ReturnCallRow, viewer: Viewer) -> Value {
    serde_json::to_value(Fields::of(row, viewer, None)).expect(FIELDS_SERIALIZE)
}

/// The data of its `return_call.status_changed` event: the admins' view with `sequence`.
pub fn event_data(row: &ReturnCallRow) -> String {
    serde_json::to_string(&Fields::of(row, Viewer::Admin, Some(row.sequence))).expect(FIELDS_SERIALIZE)
}

/// The return call's fields, declared in the order of their names, as a callback's are
/// (`callbacks::view`): the order a `serde_json` map writes them in.
#[derive(Serialize)]
struct Fields<'a> {
    answered_at: Rfc3339,
    caller: Option<String>,
    cdr: Option<&'a CdrRecord>,
    courier_id: Option<&'a str>,
    created_at: Rfc3339,
    did: Option<&'a str>,
    ended_at: Rfc3339,
    failed_leg: Option<&'static str>,
    id: Uuid,
    order_id: Option<&'a str>,
    reason: Option<&'static str>,
    route: Option<&'a str>,
    route_kind: &'static str,
    route_reason: &'static str,
    /// An event's number; the resource has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<i32>,
    status: &'static str,
    talk_seconds: Option<i32>,
    updated_at: Rfc3339,
}

impl<'a> Fields<'a> {
    fn of(row: &'a ReturnCallRow, viewer: Viewer, sequence: Option<i32>) -> Self {
        let s = &row.state;
        let admin = viewer == Viewer::Admin;
        Fields {
            answered_at: Rfc3339(s.answered_at),
            caller: if admin { row.caller.clone() } else { row.caller.as_deref().map(mask) },
            cdr: s.cdr.as_deref().filter(|_| admin),
            courier_id: row.courier_id.as_deref(),
            created_at: Rfc3339(Some(row.created_at)),
            did: row.did.as_deref(),
            ended_at: Rfc3339(s.ended_at),
            failed_leg: s.failed_leg.map(|l| l.as_str()),
            id: row.id,
            order_id: row.order_id.as_deref(),
            reason: s.reason.map(|r| r.as_str()),
            route: Some(row.route.as_str()).filter(|route| admin && !route.is_empty()),
            route_kind: row.kind.as_str(),
            route_reason: row.reason.as_str(),
            sequence,
            status: s.status.as_str(),
            talk_seconds: s.talk_seconds,
            updated_at: Rfc3339(Some(row.updated_at)),
        }
    }
}
