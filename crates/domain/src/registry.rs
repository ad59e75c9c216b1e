//! Couriers and orders, as the company's main system pushes them: leg 1 only ever rings a
//! registered courier's phone, and (with the `orders` policy) leg 2 only a number of an active
//! order assigned to that courier.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Courier {
    pub id: String,
    /// E.164.
    pub phone: String,
    pub name: String,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Being delivered: its courier may call its numbers.
    Active,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: String,
    pub courier_id: Option<String>,
    /// The client's numbers, E.164.
    pub phones: Vec<String>,
    pub state: OrderState,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Order {
    /// Whether `courier_id` may call `e164` on this order: it is active, assigned to them, and the
    /// number is one of its phones.
    pub fn lets_call(&self, courier_id: &str, e164: &str) -> bool {
        self.state == OrderState::Active
            && self.courier_id.as_deref() == Some(courier_id)
            && self.phones.iter().any(|p| p == e164)
    }
}
