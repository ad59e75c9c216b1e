//! What every resource's view shares: who is looking, timestamps as the API writes them, and
//! numbers masked for couriers.

use serde_json::Value;
use time::OffsetDateTime;

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
