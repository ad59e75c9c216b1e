//! Events: what dialback tells the courier app (a live stream per callback) and the company's own
//! systems (webhooks) about the calls it handles, and the endpoints that receive them.

use strum::{EnumString, IntoStaticStr, VariantArray};

use super::{check_text, FieldError};

/// An event's type, part of the API's contract (webhook endpoints subscribe to them by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, EnumString, VariantArray)]
pub enum EventType {
    /// A callback passed to another status (or its reason changed): `data` is the callback as an
    /// admin's `GET /v1/callbacks/{id}` shows it then, with its `sequence`.
    #[strum(serialize = "callback.status_changed")]
    CallbackStatusChanged,
    /// A recording was bound to its callback: `data` is the recording with its callback and order.
    #[strum(serialize = "recording.bound")]
    RecordingBound,
    /// A return call was routed (its first, `sequence` 1: who calls, which order and courier, or
    /// the office) or passed to another status: `data` is the return call as an admin's
    /// `GET /v1/return-calls/{id}` shows it then, with its `sequence`.
    #[strum(serialize = "return_call.status_changed")]
    ReturnCallStatusChanged,
}

/// A webhook endpoint as an admin describes it: where, which events, on or off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub url: String,
    pub event_types: Vec<EventType>,
    pub description: String,
    pub enabled: bool,
}

/// The longest URL an endpoint may have.
const MAX_URL: usize = 2048;

impl EndpointSpec {
    /// Checks the URL's shape (`http`/`https`, a host, no credentials, no fragment) and the event
    /// types; whether the URL may be called (https only, no private addresses) is the deliverer's
    /// policy, which knows the server's configuration.
    pub fn new(url: &str, event_types: &[String], description: &str, enabled: bool) -> Result<Self, FieldError> {
        check_text("url", url)?;
        let bad_url = |message: &str| FieldError { field: "url", message: message.to_owned() };
        if url.len() > MAX_URL {
            return Err(bad_url("url must be at most 2048 characters"));
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| bad_url("url must start with https://"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.starts_with(':') {
            return Err(bad_url("url must name a host, e.g. https://erp.example.com/hooks/dialback"));
        }
        if authority.contains('@') {
            return Err(bad_url("url must not carry a user or password: authenticate with the signature"));
        }
        if url.contains('#') || url.chars().any(char::is_whitespace) {
            return Err(bad_url("url must not contain spaces or a #fragment"));
        }
        if event_types.is_empty() {
            return Err(FieldError {
                field: "event_types",
                message: "event_types must name at least one event type".into(),
            });
        }
        let mut types = Vec::with_capacity(event_types.len());
        for name in event_types {
            let kind = EventType::parse(name).ok_or_else(|| FieldError {
                field: "event_types",
                message: format!(
                    "{name:?} is not an event type: use {}",
                    EventType::VARIANTS.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })?;
            if !types.contains(&kind) {
                types.push(kind);
            }
        }
        check_text("description", description)?;
        if description.chars().count() > 200 {
            return Err(FieldError {
                field: "description",
                message: "description must be at most 200 characters".into(),
            });
        }
        Ok(Self { url: url.to_owned(), event_types: types, description: description.to_owned(), enabled })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, types: &[&str]) -> Result<EndpointSpec, FieldError> {
        EndpointSpec::new(url, &types.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>(), "", true)
    }

    #[test]
    fn a_plain_endpoint_is_accepted_and_its_types_are_parsed_once() {
        let s =
            spec("https://erp.example.com/hooks?x=1", &["callback.status_changed", "callback.status_changed"]).unwrap();
        assert_eq!(s.event_types, [EventType::CallbackStatusChanged]);
    }

    #[test]
    fn bad_urls_and_types_are_named() {
        for (url, types, field) in [
            ("ftp://erp.example.com/", &["recording.bound"][..], "url"),
            ("https://", &["recording.bound"][..], "url"),
            ("https://user:pw@erp.example.com/", &["recording.bound"][..], "url"),
            ("https://erp.example.com/a b", &["recording.bound"][..], "url"),
            ("https://erp.example.com/\r\nX: y", &["recording.bound"][..], "url"),
            ("https://erp.example.com/", &[][..], "event_types"),
            ("https://erp.example.com/", &["callback.created"][..], "event_types"),
        ] {
            assert_eq!(spec(url, types).unwrap_err().field, field, "{url} {types:?}");
        }
    }
}
