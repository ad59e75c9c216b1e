//! What every resource's view shares: who is looking, timestamps as the API writes them, and
//! numbers masked for couriers.

use serde::{Serialize, Serializer};
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
    t.and_then(format_rfc3339).map(Value::String).unwrap_or(Value::Null)
}

/// Why a view serialized from a struct of its fields cannot fail: they are strings, numbers, UUIDs,
/// timestamps as text (null when one cannot be written), JSON values and Asterisk's CDR records.
pub const FIELDS_SERIALIZE: &str = "a view's fields always serialize";

/// [`rfc3339`] for a view serialized from a struct, without building a `Value` first.
pub struct Rfc3339(pub Option<OffsetDateTime>);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.and_then(format_rfc3339) {
            Some(text) => serializer.serialize_str(&text),
            None => serializer.serialize_none(),
        }
    }
}

fn format_rfc3339(t: OffsetDateTime) -> Option<String> {
    t.format(&time::format_description::well_known::Rfc3339).ok()
}
