//! Domain types, parsed once at the edge ("parse, don't validate"). They depend on nothing else in
//! the application: no HTTP, no SQL, no AMI.
//!
//! - [`callback`]: a call's statuses and reasons, and its state machine.
//! - [`phone`]: phone numbers, normalised to E.164 and classified (mobile, premium rate, ...).
//! - [`settings`]: a company's PBX settings, validated field by field.
//! - [`company`]: a company as the operator manages it: its state and its token issuer.
//! - [`dialplan`]: the `extensions_custom.conf` a company's PBX needs, generated from its settings.
//! - [`event`]: the events dialback reports (to the app's live stream and to webhooks), endpoints.
//! - [`registry`]: couriers and orders, as the company's main system pushes them.
//! - [`return_call`]: where a client calling the company back goes, and what the call goes through.
//! - [`recording`]: what a recording's file name says (call id, numbers, time), its download state.

pub mod callback;
pub mod company;
pub mod dialplan;
pub mod event;
pub mod phone;
pub mod recording;
pub mod registry;
pub mod return_call;
pub mod settings;

/// A field that failed validation, named the way the API names it (a 422 says which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

pub(crate) fn bad(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

/// Refuses CR, LF and NUL (and other control characters) in any text that may reach AMI or a log.
pub fn check_text(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.chars().any(|c| c.is_control()) {
        return Err(bad(field, format!("{field} must not contain control characters (CR, LF, NUL, ...)")));
    }
    Ok(())
}

/// Ids of couriers, orders and token subjects: short, printable, no separator that could confuse a
/// log line or an AMI header.
pub fn check_id<'a>(field: &'static str, id: &'a str) -> Result<&'a str, FieldError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(bad(field, format!("{field} must be 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'")));
    }
    Ok(id)
}
