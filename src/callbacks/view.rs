//! The callback as the API shows it: to the courier who placed it (numbers masked, the PBX's
//! internals left out) or to the company's admins (everything).

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::domain::callback::{Reason, Target};
use crate::store::callbacks::CallbackRow;

/// Who is looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Courier,
    Admin,
}

/// `+79161234567` → `+7916***4567` (couriers see their calls, not a copy of the client base).
pub fn mask(number: &str) -> String {
    if number.len() <= 8 {
        return "***".into();
    }
    format!("{}***{}", &number[..5], &number[number.len() - 4..])
}

/// A timestamp as the API writes it: RFC 3339, or null.
pub fn rfc3339(t: Option<OffsetDateTime>) -> Value {
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// What a courier reads in `detail`: a refusal's explanation is theirs (why this number may not be
/// called), and so is an unconfirmed answer's (their voicemail answered); the PBX's address, its
/// configuration and dialback's internals are the admins' (they see the full story).
fn detail_for_courier(row: &CallbackRow) -> Value {
    match (row.state.reason, &row.detail) {
        (_, None) => Value::Null,
        (
            Some(Reason::InvalidNumber | Reason::DestinationForbidden | Reason::RateLimited | Reason::NotConfirmed),
            detail,
        ) => json!(detail),
        (Some(Reason::Lost), _) => json!(
            "dialback lost sight of the call (its link to the company's phone system dropped, or dialback \
             restarted); the outcome was not observed"
        ),
        (_, Some(_)) => json!("the company's phone system could not place the call; the office can see why"),
    }
}

/// The callback resource; `recording` is its recording's rendered link, when one is bound.
pub fn view(row: &CallbackRow, recording: Option<Value>, viewer: Viewer) -> Value {
    let s = &row.state;
    let for_courier = viewer == Viewer::Courier;
    let number = |n: &Option<String>| match n {
        Some(n) if for_courier && row.target != Target::Office => json!(mask(n)),
        Some(n) => json!(n),
        None => Value::Null,
    };
    let detail = if for_courier { detail_for_courier(row) } else { json!(row.detail) };
    json!({
        "id": row.id,
        "target": row.target.as_str(),
        "status": s.status.as_str(),
        "failed_leg": s.failed_leg.map(|l| l.as_str()),
        "reason": s.reason.map(|r| r.as_str()),
        "hangup_cause": s.hangup_cause,
        "detail": detail,
        "courier_id": row.courier_id,
        "order_id": row.order_id,
        "to": number(&row.to_number),
        "courier_number": if for_courier { row.courier_number.as_deref().map(mask).map(Value::String).unwrap_or(Value::Null) } else { json!(row.courier_number) },
        "created_at": rfc3339(Some(row.created_at)),
        "updated_at": rfc3339(Some(row.updated_at)),
        "courier_answered_at": rfc3339(s.courier_answered_at),
        "connected_at": rfc3339(s.connected_at),
        "ended_at": rfc3339(s.ended_at),
        "talk_seconds": s.talk_seconds,
        "billable_seconds": s.cdr_billable_seconds,
        // Asterisk's own record is the admins' (it names channels and numbers in full).
        "cdr": if for_courier || s.cdr.is_empty() { Value::Null } else { json!(s.cdr) },
        "recording": recording,
    })
}
