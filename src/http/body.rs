//! A request's JSON body, which must be an object.
//!
//! serde's derived `Deserialize` also builds a struct from a JSON array, element by element, so a
//! body `[]` filled a struct whose fields all have defaults (an order with no phones) and was
//! accepted; the spec says every body is an object. [`JsonObject`] reads the body as `web::Json`
//! does (size limit, content type, problem+json errors from the `JsonConfig` in [`super`]) but asks
//! the JSON parser for a map only, so anything else is a 422 naming what was sent.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The body as `T`, parsed from a JSON object.
pub struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for JsonObject<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let json = web::Json::<ObjectOnly<T>>::from_request(req, payload);
        Box::pin(async move { Ok(JsonObject(json.await?.into_inner().0)) })
    }
}

/// `T` deserialised through `deserialize_map`, which refuses arrays and scalars.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor(PhantomData)).map(ObjectOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct AllDefaults {
        phones: Vec<String>,
        note: Option<String>,
    }

    #[test]
    fn an_object_is_read_as_the_struct() {
        let ObjectOnly(got) = serde_json::from_str::<ObjectOnly<AllDefaults>>(r#"{"phones":["1"]}"#).unwrap();
        assert_eq!(got, AllDefaults { phones: vec!["1".into()], note: None });
    }

    #[test]
    fn an_array_or_a_scalar_is_refused_as_data_even_when_every_field_has_a_default() {
        assert!(serde_json::from_str::<AllDefaults>("[]").is_ok(), "serde alone accepts an array");
        for body in ["[]", "[[\"1\"]]", "3", "\"x\"", "null", "true"] {
            let err = serde_json::from_str::<ObjectOnly<AllDefaults>>(body).err().expect(body);
            assert!(err.is_data(), "{body}: {err}");
            assert!(err.to_string().contains("expected a JSON object"), "{body}: {err}");
        }
    }

    #[test]
    fn field_errors_keep_their_message() {
        let err = serde_json::from_str::<ObjectOnly<AllDefaults>>(r#"{"phones": 3}"#).err().unwrap();
        assert!(err.to_string().contains("invalid type: integer `3`, expected a sequence"), "{err}");
    }
}
