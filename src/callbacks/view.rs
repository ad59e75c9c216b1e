//! The callback as the API shows it: to the courier who placed it (numbers masked, the PBX's
//! internals left out) or to the company's admins (everything).

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::domain::callback::{CallCdr, Reason, Target};
use crate::store::callbacks::CallbackRow;
use crate::view::{mask, Rfc3339, Viewer, FIELDS_SERIALIZE};

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
    let mut view = serde_json::to_value(Fields::of(row, recording, None)).expect(FIELDS_SERIALIZE);
    if viewer == Viewer::Courier {
        for_courier(&mut view);
    }
    view
}

/// The callback resource's fields, declared in the order of their names: the order a
/// `serde_json` map writes them in, so the resource and the events' data read as they did when
/// they were built as maps. An event's data is serialized from here directly, for every status
/// a call passes through.
#[derive(Serialize)]
struct Fields<'a> {
    billable_seconds: Option<i32>,
    cdr: Option<&'a CallCdr>,
    connected_at: Rfc3339,
    courier_answered_at: Rfc3339,
    courier_id: &'a str,
    courier_number: Option<&'a str>,
    created_at: Rfc3339,
    detail: Option<&'a str>,
    ended_at: Rfc3339,
    failed_leg: Option<&'static str>,
    hangup_cause: Option<i32>,
    id: Uuid,
    order_id: Option<&'a str>,
    reason: Option<&'static str>,
    recording: Option<Value>,
    /// An event's number; the resource has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<i32>,
    status: &'static str,
    talk_seconds: Option<i32>,
    target: &'static str,
    to: Option<&'a str>,
    updated_at: Rfc3339,
}

impl<'a> Fields<'a> {
    fn of(row: &'a CallbackRow, recording: Option<Value>, sequence: Option<i32>) -> Self {
        let s = &row.state;
        Fields {
            billable_seconds: s.cdr_billable_seconds,
            cdr: (!s.cdr.is_empty()).then_some(&s.cdr),
            connected_at: Rfc3339(s.connected_at),
            courier_answered_at: Rfc3339(s.courier_answered_at),
            courier_id: &row.courier_id,
            courier_number: row.courier_number.as_deref(),
            created_at: Rfc3339(Some(row.created_at)),
            detail: row.detail.as_deref(),
            ended_at: Rfc3339(s.ended_at),
            failed_leg: s.failed_leg.map(|l| l.as_str()),
            hangup_cause: s.hangup_cause,
            id: row.id,
            order_id: row.order_id.as_deref(),
            reason: s.reason.map(|r| r.as_str()),
            recording,
            sequence,
            status: s.status.as_str(),
            talk_seconds: s.talk_seconds,
            target: row.target.as_str(),
            to: row.to_number.as_deref(),
            updated_at: Rfc3339(Some(row.updated_at)),
        }
    }
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
    serde_json::to_string(&Fields::of(row, None, Some(row.sequence))).expect(FIELDS_SERIALIZE)
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::callback::{CallState, CdrRecord, Status};
    use crate::domain::company::TenantId;

    #[test]
    fn an_events_data_is_the_admins_view_of_the_call_with_its_sequence() {
        let at = OffsetDateTime::from_unix_timestamp(1_795_341_119).unwrap();
        let mut state = CallState::new(Status::Completed);
        (state.connected_at, state.ended_at, state.talk_seconds) = (Some(at), Some(at), Some(42));
        state.cdr.courier =
            Some(Box::new(CdrRecord { disposition: "ANSWERED".into(), billable_seconds: 42, ..Default::default() }));
        let row = CallbackRow {
            id: Uuid::from_u128(7),
            tenant_id: TenantId::stored("acme"),
            courier_id: "courier-1".into(),
            target: Target::Client,
            order_id: None,
            to_number: Some("+79161234567".into()),
            courier_number: Some("+79001112233".into()),
            detail: Some("answered".into()),
            action_id: None,
            created_at: at,
            updated_at: at,
            sequence: 5,
            state,
        };
        let data = event_data(&row);
        let parsed: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(parsed["sequence"], 5);
        assert_eq!(parsed["status"], "completed");
        assert_eq!(parsed["to"], "+79161234567", "admins see the number in full");
        assert_eq!(parsed["connected_at"], "2026-11-22T09:51:59Z");
        assert_eq!(parsed["courier_answered_at"], Value::Null);
        assert_eq!(parsed["cdr"]["courier"]["disposition"], "ANSWERED");
        assert_eq!(parsed["cdr"]["courier_phone"], Value::Null);
        let mut resource = view(&row, None, Viewer::Admin);
        assert_eq!(resource.get("sequence"), None, "the resource has no sequence");
        resource["sequence"] = json!(5);
        assert_eq!(parsed, resource);
        // Written in the order of the names, as when the data was built as a map.
        let keys: Vec<&String> = parsed.as_object().unwrap().keys().collect();
        let at_top: Vec<usize> = keys.iter().map(|k| data.find(&format!("{k:?}:")).unwrap()).collect();
        assert!(at_top.is_sorted(), "{data}");
    }
}
