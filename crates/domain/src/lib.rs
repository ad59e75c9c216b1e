//! Domain types, parsed once at the edge ("parse, don't validate"). They depend on nothing else in
//! the application: no HTTP, no SQL, no AMI.
//!
//! - [`callback`]: a call's statuses and reasons, and its state machine.
//! - [`phone`]: phone numbers, normalised to E.164 and classified (mobile, premium rate, ...).
//! - [`settings`]: a company's PBX settings, validated field by field.
//! - [`company`]: a company as the operator manages it: its state and its token issuer.
//! - [`dashboard`]: how the admin page counts calls (outcomes, couriers) and judges the set-up.
//! - [`destination`]: whom leg 2 may ring (the destination policy), decided without I/O.
//! - [`dialplan`]: the `extensions_custom.conf` a company's PBX needs, generated from its settings.
//! - [`outcome_record`]: the outcome a PBX keeps of each call (AstDB), read when nobody heard it end.
//! - [`event`]: the events dialback reports (to the app's live stream and to webhooks), endpoints.
//! - [`registry`]: couriers and orders, as the company's main system pushes them.
//! - [`return_call`]: where a client calling the company back goes, and what the call goes through.
//! - [`recording`]: what a recording's file name says (call id, numbers, time), its download state.

/// `as_str` and `parse` for enums whose names strum derives (`IntoStaticStr`, `EnumString`), so
/// that every enum stored or sent is named one way and none keeps a table of its own.
#[macro_export]
macro_rules! enum_names {
    ($($name:ty),+ $(,)?) => {$(
        impl $name {
            pub fn as_str(self) -> &'static str {
                self.into()
            }

            pub fn parse(s: &str) -> Option<Self> {
                s.parse().ok()
            }
        }
    )+};
}

pub mod callback;
pub mod company;
pub mod dashboard;
pub mod destination;
pub mod dialplan;
pub mod event;
pub mod outcome_record;
pub mod phone;
pub mod recording;
pub mod registry;
pub mod return_call;
pub mod settings;

enum_names!(
    callback::Status,
    callback::Leg,
    callback::Reason,
    callback::Target,
    company::CompanyState,
    event::EventType,
    recording::RecordingState,
    registry::OrderState,
    return_call::RouteKind,
    return_call::RouteReason,
    return_call::ReturnStatus,
    return_call::ReturnLeg,
    settings::AmiTransport,
);

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

/// The field named `field` is wrong, and `message` says how.
pub fn bad(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

/// The field names `T`'s derived `Deserialize` knows, asked of serde itself: a probe that answers
/// nothing but records the list a struct asks for (so there is no list of names to keep in step).
pub fn struct_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("a probe for field names"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("a probe for field names"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// Reads an object stored by this release or a later one: keys `T` does not know (a field a later
/// release added) are dropped first, so that during a rolling deploy an older process still reads
/// a newer row. What clients send is still read strictly (`deny_unknown_fields`).
pub fn from_stored<T: serde::de::DeserializeOwned>(mut json: serde_json::Value) -> Result<T, serde_json::Error> {
    if let Some(object) = json.as_object_mut() {
        let known = struct_fields::<T>();
        object.retain(|key, _| known.contains(&key.as_str()));
    }
    serde_json::from_value(json)
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

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use super::*;

    /// Every name parses back to its value; where serde writes the value too, it writes that name.
    fn named<T>(serde: bool)
    where
        T: VariantArray
            + Copy
            + PartialEq
            + std::fmt::Debug
            + serde::Serialize
            + Into<&'static str>
            + std::str::FromStr,
    {
        for &value in T::VARIANTS {
            let name: &'static str = value.into();
            assert_eq!(name.parse::<T>().ok(), Some(value), "{name}");
            if serde {
                assert_eq!(serde_json::to_value(value).unwrap(), name, "serde and strum name {value:?} alike");
            }
        }
    }

    #[test]
    fn enums_are_named_one_way() {
        named::<callback::Status>(true);
        named::<callback::Leg>(true);
        named::<callback::Reason>(true);
        named::<callback::Target>(true);
        named::<company::CompanyState>(true);
        named::<registry::OrderState>(true);
        named::<return_call::RouteKind>(true);
        named::<settings::AmiTransport>(true);
        assert_eq!(event::EventType::ReturnCallStatusChanged.as_str(), "return_call.status_changed");
        assert_eq!(
            return_call::RouteReason::parse("caller_is_courier"),
            Some(return_call::RouteReason::CallerIsCourier)
        );
        assert_eq!(recording::RecordingState::parse("deleting"), Some(recording::RecordingState::Deleting));
        assert_eq!(return_call::ReturnStatus::RingingCourier.as_str(), "ringing_courier");
        assert_eq!(return_call::ReturnLeg::parse("caller"), Some(return_call::ReturnLeg::Caller));
        assert_eq!(callback::Reason::parse("no such reason"), None);
    }
}
