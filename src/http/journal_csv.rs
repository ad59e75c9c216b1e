//! The journal as CSV (`GET /v1/callbacks.csv`, and `GET /v1/callbacks` with `Accept: text/csv`
//! as before that path existed): every call the filter matches, newest first, streamed a page at
//! a time, so months of calls never sit in memory.
//!
//! The columns and their order are part of the API (openapi.yaml lists them); new ones are only
//! ever added at the end.

use std::sync::Arc;

use actix_web::body::BodyStream;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::{stream, StreamExt};

use super::state::AppState;
use crate::domain::company::TenantId;
use crate::store::{self, callbacks::CallbackRow, callbacks::ListFilter};
use crate::telemetry::Chain;
use crate::view::rfc3339;

/// Rows read from PostgreSQL per page of the stream.
const PAGE: i64 = 500;

/// The header line: the documented column order.
pub const COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "kind",
    "status",
    "failed_leg",
    "reason",
    "courier_id",
    "courier_number",
    "order_id",
    "to",
    "courier_answered_at",
    "connected_at",
    "ended_at",
    "talk_seconds",
    "billable_seconds",
    "hangup_cause",
    "cdr_disposition",
    "detail",
];

/// A streamed `text/csv` answer with every row `filter` matches (its `limit` is ignored).
pub fn response(state: Arc<AppState>, tenant: TenantId, filter: ListFilter) -> HttpResponse {
    let header = Bytes::from(line(COLUMNS.iter().map(|c| (*c).to_owned())));
    let pages = stream::unfold(Some((state, tenant, filter)), |next| async move {
        let (state, tenant, mut filter) = next?;
        filter.limit = PAGE;
        let rows = match store::client(&state.db).await {
            Ok(db) => store::callbacks::list(&db, &tenant, &filter).await,
            Err(e) => Err(e),
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                // The status line has gone out: all the client can be told is that the body ends.
                tracing::error!(%tenant, error = %Chain(&e), "the journal's CSV stream stopped");
                return Some((Err(std::io::Error::other("the journal could not be read to the end")), None));
            }
        };
        let mut chunk = String::new();
        for row in &rows {
            chunk.push_str(&csv_row(row));
        }
        let more = rows.len() as i64 == PAGE;
        filter.before = rows.last().map(|r| r.id);
        Some((Ok(Bytes::from(chunk)), more.then_some((state, tenant, filter))))
    });
    let body = stream::iter([Ok::<_, std::io::Error>(header)]).chain(pages);
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"callbacks.csv\""))
        .body(BodyStream::new(body))
}

fn csv_row(row: &CallbackRow) -> String {
    let s = &row.state;
    let time = |t| rfc3339(t).as_str().unwrap_or_default().to_owned();
    let number = |n: Option<i32>| n.map(|n| n.to_string()).unwrap_or_default();
    line([
        row.id.to_string(),
        time(Some(row.created_at)),
        row.target.as_str().to_owned(),
        s.status.as_str().to_owned(),
        s.failed_leg.map(|l| l.as_str()).unwrap_or_default().to_owned(),
        s.reason.map(|r| r.as_str()).unwrap_or_default().to_owned(),
        text(&row.courier_id),
        row.courier_number.clone().unwrap_or_default(),
        text(row.order_id.as_deref().unwrap_or_default()),
        row.to_number.clone().unwrap_or_default(),
        time(s.courier_answered_at),
        time(s.connected_at),
        time(s.ended_at),
        number(s.talk_seconds),
        number(s.cdr_billable_seconds),
        number(s.hangup_cause),
        s.cdr.courier.as_ref().map(|c| c.disposition.clone()).unwrap_or_default(),
        text(row.detail.as_deref().unwrap_or_default()),
    ])
}

/// A free-text field made safe for spreadsheets: a cell starting with `=`, `+`, `-` or `@` would be
/// run as a formula, so it is prefixed with `'` (numbers are written as they are).
fn text(value: &str) -> String {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_owned(),
    }
}

/// One CSV line (RFC 4180): fields with a comma, a quote or a line break are quoted.
fn line(fields: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(line(["a".into(), "b,c".into(), "say \"hi\"".into()]), "a,\"b,c\",\"say \"\"hi\"\"\"\r\n");
        assert_eq!(text("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(text("courier-1"), "courier-1");
        assert_eq!(text("-1"), "'-1");
    }
}
