//! The callback as the API shows it: to the courier who placed it (numbers masked, the PBX's
//! internals left out) or to the company's admins (everything).

use serde_json::{json, Value};

use crate::domain::callback::{Reason, Target};
use crate::store::callbacks::CallbackRow;
use crate::view::{mask, rfc3339, Viewer};

/// What a courier reads in `detail`: a refusal's explanation is theirs (why this number may not be
/// called), and so is an unconfirmed answer's (their voicemail answered); the PBX's address, its
/// configuration and dialback's internals are the admins' (they see the full story).
fn detail_for_courier(reason: Option<Reason>, detail: &Value) -> Value {
    match (reason, detail) {
        (_, Value::Null) => Value::Null,
        (
            Some(Reason::InvalidNumber | Reason::DestinationForbidden | Reason::RateLimited | Reason::NotConfirmed),
            detail,
        ) => detail.clone(),
        (Some(Reason::Lost), _) => json!(
            "dialback lost sight of the call (its link to the company's phone system dropped, or dialback \
             restarted); the outcome was not observed"
        ),
        _ => json!("the company's phone system could not place the call; the office can see why"),
    }
}

/// The callback resource; `recording` is its recording's rendered link, when one is bound.
pub fn view(row: &CallbackRow, recording: Option<Value>, viewer: Viewer) -> Value {
    let s = &row.state;
    let mut view = json!({
        "id": row.id,
        "target": row.target.as_str(),
        "status": s.status.as_str(),
        "failed_leg": s.failed_leg.map(|l| l.as_str()),
        "reason": s.reason.map(|r| r.as_str()),
        "hangup_cause": s.hangup_cause,
        "detail": row.detail,
        "courier_id": row.courier_id,
        "order_id": row.order_id,
        "to": row.to_number,
        "courier_number": row.courier_number,
        "created_at": rfc3339(Some(row.created_at)),
        "updated_at": rfc3339(Some(row.updated_at)),
        "courier_answered_at": rfc3339(s.courier_answered_at),
        "connected_at": rfc3339(s.connected_at),
        "ended_at": rfc3339(s.ended_at),
        "talk_seconds": s.talk_seconds,
        "billable_seconds": s.cdr_billable_seconds,
        "cdr": if s.cdr.is_empty() { Value::Null } else { json!(s.cdr) },
        "recording": recording,
    });
    if viewer == Viewer::Courier {
        for_courier(&mut view);
    }
    view
}

/// Turns the admins' view of a callback (the resource, or an event's data) into its courier's:
/// numbers masked (the office's extension is no secret), `detail` only where it is theirs, and
/// without Asterisk's own record (it names channels and numbers in full).
pub fn for_courier(view: &mut Value) {
    let Some(fields) = view.as_object_mut() else { return };
    let to_office = fields.get("target").and_then(Value::as_str) == Some(Target::Office.as_str());
    for (field, masked) in [("to", !to_office), ("courier_number", true)] {
        if let (true, Some(Value::String(number))) = (masked, fields.get(field)) {
            let hidden = mask(number);
            fields.insert(field.into(), Value::String(hidden));
        }
    }
    let reason = fields.get("reason").and_then(Value::as_str).and_then(Reason::parse);
    let detail = detail_for_courier(reason, fields.get("detail").unwrap_or(&Value::Null));
    fields.insert("detail".into(), detail);
    fields.insert("cdr".into(), Value::Null);
}

/// The data of the `callback.status_changed` event the row's latest step makes: the admins' view
/// of it with its `sequence`, as JSON text.
pub fn event_data(row: &CallbackRow) -> String {
    let mut data = view(row, None, Viewer::Admin);
    data["sequence"] = json!(row.sequence);
    data.to_string()
}
