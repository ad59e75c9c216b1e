//! Whom leg 2 may ring: the destination policy a courier's tap (or the Test button) is decided on,
//! before anything is written or sent.

use serde::Serialize;

use crate::callback::{Reason, Target};
use crate::phone::{self, PhoneNumber};
use crate::registry::Order;
use crate::settings::{DestinationPolicy, PbxSettings};

/// What is asked for: whom leg 2 rings.
#[derive(Debug, Clone, Serialize)]
pub enum CallRequest {
    /// The client of an order (`to` as the courier typed it).
    Client {
        to: String,
        order_id: Option<String>,
    },
    Office,
    /// The admin's Test button: leg 1 and leg 2 are given explicitly.
    Test {
        from: String,
        to: String,
    },
}

impl CallRequest {
    pub fn target(&self) -> Target {
        match self {
            CallRequest::Client { .. } => Target::Client,
            CallRequest::Office => Target::Office,
            CallRequest::Test { .. } => Target::Test,
        }
    }

    /// The order the request names, if any.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            CallRequest::Client { order_id, .. } => order_id.as_deref(),
            _ => None,
        }
    }
}

/// Leg 2 after the destination policy: the number to write in `Exten`, and the E.164 to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// What goes in the Originate's `Exten`: the office extension as written, or the client's
    /// number with the client prefix (the prefix is for calls out through the trunk only).
    pub exten: String,
    /// What the journal shows as the number called.
    pub logged: String,
    /// The client's number (None for the office).
    pub parsed: Option<PhoneNumber>,
}

/// Why leg 2 may not ring that number; the attempt is logged `refused` with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `invalid_number` or `destination_forbidden`.
    pub reason: Reason,
    /// What the courier is told.
    pub detail: String,
    /// The number as logged (None when it could not be read as one).
    pub logged: Option<String>,
}

/// The policy's answer: ring this, or refuse with this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Place(Destination),
    Refuse(Refusal),
}

/// "Call the office" with no office extension in the settings: nothing to decide (and nothing
/// to log; the app is told to dial the office itself when it has its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this company has no office extension")]
pub struct NoOfficeExtension;

/// Applies the company's destination policy to `request` of `courier_id` (`order` is the one the
/// request named, as stored): the number must be one, in an allowed country, of an ordinary kind,
/// and under the `orders` policy one of an active order assigned to the courier. The Test button
/// is held to the countries and kinds, not to orders.
pub fn decide(
    courier_id: &str,
    settings: &PbxSettings,
    request: &CallRequest,
    order: Option<&Order>,
) -> Result<Decision, NoOfficeExtension> {
    let to = match request {
        CallRequest::Office => {
            let ext = settings.office_extension.clone().ok_or(NoOfficeExtension)?;
            return Ok(Decision::Place(Destination { exten: ext.clone(), logged: ext, parsed: None }));
        }
        CallRequest::Client { to, .. } | CallRequest::Test { to, .. } => to,
    };
    let refuse = |reason, detail, logged| Ok(Decision::Refuse(Refusal { reason, detail, logged }));
    let number = match phone::parse(to, &settings.default_region) {
        Ok(number) => number,
        Err(e) => return refuse(Reason::InvalidNumber, format!("{to:?} is not a valid phone number: {e}"), None),
    };
    let logged = Some(number.e164.clone());
    if let Err(why) = check_number_allowed(settings, &number) {
        return refuse(Reason::DestinationForbidden, why, logged);
    }
    if settings.destination_policy == DestinationPolicy::Orders && !matches!(request, CallRequest::Test { .. }) {
        let Some(order_id) = request.order_id() else {
            let why = "this company only allows calls to the numbers of your orders: give order_id";
            return refuse(Reason::DestinationForbidden, why.into(), logged);
        };
        if !order.is_some_and(|o| o.lets_call(courier_id, &number.e164)) {
            let why = format!("{} is not a number of an active order {order_id} assigned to you", number.e164);
            return refuse(Reason::DestinationForbidden, why, logged);
        }
    }
    Ok(Decision::Place(Destination {
        exten: format!("{}{}", settings.client_prefix, settings.dial_format.render(&number)),
        logged: number.e164.clone(),
        parsed: Some(number),
    }))
}

/// The country and number-type allow-list every dialled number must pass (fail closed): only
/// mobile and fixed-line numbers of the company's allowed countries.
pub fn check_number_allowed(settings: &PbxSettings, number: &PhoneNumber) -> Result<(), String> {
    if !settings.allowed_countries.iter().any(|c| c.eq_ignore_ascii_case(&number.region)) {
        return Err(format!(
            "{} is in {} and this company allows calls to {} only",
            number.e164,
            number.region,
            settings.allowed_countries.join(", ")
        ));
    }
    if !number.kind.is_ordinary() {
        return Err(format!(
            "{} is {}; only mobile and fixed-line numbers can be called",
            number.e164,
            number.kind.describe()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::registry::OrderState;
    use crate::settings::tests::sample;

    fn client(to: &str, order_id: Option<&str>) -> CallRequest {
        CallRequest::Client { to: to.into(), order_id: order_id.map(str::to_owned) }
    }

    fn order(courier_id: &str, phone: &str, state: OrderState) -> Order {
        Order {
            id: "o-1".into(),
            courier_id: Some(courier_id.into()),
            phones: vec![phone.into()],
            state,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn refused(decision: Result<Decision, NoOfficeExtension>) -> (Reason, String, Option<String>) {
        match decision {
            Ok(Decision::Refuse(Refusal { reason, detail, logged })) => (reason, detail, logged),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_office_rings_its_extension_and_without_one_there_is_nothing_to_decide() {
        let mut settings = sample();
        let office = decide("c-1", &settings, &CallRequest::Office, None);
        assert_eq!(
            office,
            Ok(Decision::Place(Destination { exten: "101".into(), logged: "101".into(), parsed: None }))
        );
        settings.office_extension = None;
        assert_eq!(decide("c-1", &settings, &CallRequest::Office, None), Err(NoOfficeExtension));
    }

    #[test]
    fn a_client_of_an_active_order_of_the_courier_is_rung_through_the_client_prefix() {
        let mut settings = sample();
        settings.client_prefix = "9".into();
        let order = order("c-1", "+79161234567", OrderState::Active);
        let Ok(Decision::Place(placed)) =
            decide("c-1", &settings, &client("8 916 123-45-67", Some("o-1")), Some(&order))
        else {
            panic!("placed")
        };
        assert_eq!(placed.logged, "+79161234567");
        assert!(placed.exten.starts_with('9') && placed.exten.ends_with("9161234567"), "{}", placed.exten);
        assert_eq!(placed.parsed.map(|n| n.e164), Some("+79161234567".into()));
    }

    #[test]
    fn under_the_orders_policy_only_the_courier_s_active_orders_may_be_called() {
        let settings = sample();
        let (reason, detail, logged) = refused(decide("c-1", &settings, &client("+79161234567", None), None));
        assert_eq!((reason, logged.as_deref()), (Reason::DestinationForbidden, Some("+79161234567")));
        assert!(detail.contains("give order_id"), "{detail}");
        for (whose, state) in [("c-2", OrderState::Active), ("c-1", OrderState::Closed)] {
            let order = order(whose, "+79161234567", state);
            let request = client("+79161234567", Some("o-1"));
            let (reason, detail, _) = refused(decide("c-1", &settings, &request, Some(&order)));
            assert_eq!(reason, Reason::DestinationForbidden);
            assert!(detail.contains("not a number of an active order o-1 assigned to you"), "{detail}");
        }
        // The Test button is not a courier's call: no order to name.
        let test = CallRequest::Test { from: "+79161112233".into(), to: "+79161234567".into() };
        assert!(matches!(decide("admin", &settings, &test, None), Ok(Decision::Place(_))));
    }

    #[test]
    fn numbers_that_are_not_numbers_or_not_allowed_are_refused_with_why() {
        let mut settings = sample();
        settings.destination_policy = DestinationPolicy::Allowlist;
        let (reason, detail, logged) = refused(decide("c-1", &settings, &client("call me", None), None));
        assert_eq!((reason, logged), (Reason::InvalidNumber, None));
        assert!(detail.contains("is not a valid phone number"), "{detail}");
        let (reason, detail, logged) = refused(decide("c-1", &settings, &client("+4930123456", None), None));
        assert_eq!((reason, logged.as_deref()), (Reason::DestinationForbidden, Some("+4930123456")));
        assert!(detail.contains("allows calls to RU, KZ only"), "{detail}");
        let (reason, detail, _) = refused(decide("c-1", &settings, &client("+78091234567", None), None));
        assert_eq!(reason, Reason::DestinationForbidden);
        assert!(detail.contains("only mobile and fixed-line numbers"), "{detail}");
    }
}
