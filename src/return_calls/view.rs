//! A return call as the API shows it: to admins in full, to its courier with the caller's number
//! masked (as a callback's client number is).

use serde_json::{json, Value};

use crate::store::return_calls::ReturnCallRow;
use crate::view::{mask, rfc3339, Viewer};

pub fn view(row: &ReturnCallRow, viewer: Viewer) -> Value {
    let s = &row.state;
    let admin = viewer == Viewer::Admin;
    json!({
        "id": row.id,
        "caller": if admin { json!(row.caller) } else { json!(row.caller.as_deref().map(mask)) },
        "did": row.did,
        "route_kind": row.kind.as_str(),
        "route_reason": row.reason.as_str(),
        "route": if admin && !row.route.is_empty() { json!(row.route) } else { Value::Null },
        "order_id": row.order_id,
        "courier_id": row.courier_id,
        "status": s.status.as_str(),
        "failed_leg": s.failed_leg.map(|l| l.as_str()),
        "reason": s.reason.map(|r| r.as_str()),
        "created_at": rfc3339(Some(row.created_at)),
        "updated_at": rfc3339(Some(row.updated_at)),
        "answered_at": rfc3339(s.answered_at),
        "ended_at": rfc3339(s.ended_at),
        "talk_seconds": s.talk_seconds,
        "cdr": if admin { json!(s.cdr) } else { Value::Null },
    })
}

/// The data of its `return_call.status_changed` event: the admins' view with `sequence`.
pub fn event_data(row: &ReturnCallRow) -> String {
    let mut data = view(row, Viewer::Admin);
    data["sequence"] = json!(row.sequence);
    data.to_string()
}
