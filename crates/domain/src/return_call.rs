//! Return calls: the client who calls the company's number back is sent to the courier who holds
//! their order. The company's rules (on or off, how long after an order closes its client still
//! reaches the courier, the hours couriers take calls), the decision itself, and what a return
//! call goes through afterwards.

use std::net::IpAddr;
use strum::{EnumString, IntoStaticStr, VariantArray};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, Time, UtcOffset};

use super::callback::{CdrRecord, Reason};
use super::phone::PhoneNumber;
use super::settings::{render_channel, PbxSettings};
use super::{check_text, FieldError};

/// A company's return-call rules (`PUT /v1/admin/return-calls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnCallSettings {
    /// Off: every caller goes to the office (as before dialback answered the question).
    #[serde(default)]
    pub enabled: bool,
    /// A client whose order closed less than this many hours ago still reaches its courier.
    #[serde(default = "default_window")]
    pub window_hours: u32,
    /// Outside these hours every caller goes to the office; none: any time.
    #[serde(default)]
    pub courier_hours: Option<CourierHours>,
    /// The PBX addresses that may ask (IPv4/IPv6 addresses or CIDR blocks); empty: any.
    #[serde(default)]
    pub allowed_addresses: Vec<String>,
}

fn default_window() -> u32 {
    2
}

impl Default for ReturnCallSettings {
    fn default() -> Self {
        Self { enabled: false, window_hours: default_window(), courier_hours: None, allowed_addresses: Vec::new() }
    }
}

/// The daily hours couriers take return calls, in the company's local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CourierHours {
    /// `HH:MM`, e.g. `09:00`.
    pub from: String,
    /// `HH:MM`; before `from` means the hours run past midnight.
    pub to: String,
    /// The company's offset from UTC in minutes (Moscow: 180).
    #[serde(default)]
    pub utc_offset_min: i16,
}

fn hhmm(field: &'static str, value: &str) -> Result<Time, FieldError> {
    let bad = || FieldError { field, message: format!("{field} must be HH:MM, e.g. 09:00") };
    let (h, m) = value.split_once(':').ok_or_else(bad)?;
    let (h, m): (u8, u8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if value.len() != 5 || m >= 60 {
        return Err(bad());
    }
    Time::from_hms(h, m, 0).map_err(|_| bad())
}

impl CourierHours {
    /// Whether `at` falls inside the hours.
    pub fn contain(&self, at: OffsetDateTime) -> bool {
        let (Ok(from), Ok(to)) = (hhmm("courier_hours.from", &self.from), hhmm("courier_hours.to", &self.to)) else {
            return true;
        };
        let offset = UtcOffset::from_whole_seconds(i32::from(self.utc_offset_min) * 60).unwrap_or(UtcOffset::UTC);
        let local = at.to_offset(offset).time();
        if from <= to {
            from <= local && local < to
        } else {
            local >= from || local < to
        }
    }
}

impl ReturnCallSettings {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.window_hours > 72 {
            return Err(FieldError { field: "window_hours", message: "window_hours must be 0-72".into() });
        }
        if let Some(hours) = &self.courier_hours {
            hhmm("courier_hours.from", &hours.from)?;
            hhmm("courier_hours.to", &hours.to)?;
            if !(-720..=840).contains(&hours.utc_offset_min) {
                return Err(FieldError {
                    field: "courier_hours.utc_offset_min",
                    message: "courier_hours.utc_offset_min must be -720..840 minutes".into(),
                });
            }
        }
        if self.allowed_addresses.len() > 32 {
            return Err(FieldError { field: "allowed_addresses", message: "at most 32 addresses".into() });
        }
        for address in &self.allowed_addresses {
            check_text("allowed_addresses", address)?;
            address_block(address).ok_or_else(|| FieldError {
                field: "allowed_addresses",
                message: format!("{address:?} is not an IP address or a CIDR block such as 203.0.113.0/24"),
            })?;
        }
        Ok(())
    }

    /// The address blocks of `allowed_addresses`, parsed (once, when the rules are read: see
    /// `store::return_calls`), for [`AllowedAddresses::admit`].
    pub fn allowed(&self) -> AllowedAddresses {
        AllowedAddresses(self.allowed_addresses.iter().filter_map(|a| address_block(a)).collect())
    }

    /// Settings as stored, by this release or a later one (see [`super::from_stored`]).
    pub fn from_stored(mut json: serde_json::Value) -> Result<ReturnCallSettings, serde_json::Error> {
        if let Some(hours) = json.get_mut("courier_hours").filter(|h| h.is_object()) {
            let known = super::from_stored::<CourierHours>(hours.take())?;
            *hours = serde_json::to_value(known)?;
        }
        super::from_stored(json)
    }
}

/// An IP address or a CIDR block, as an admin writes it (`203.0.113.7`, `203.0.113.0/24`, `::1`).
fn address_block(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>().ok().or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The PBX addresses a company lets ask for routes; none listed: any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedAddresses(Vec<IpNet>);

impl AllowedAddresses {
    /// Whether a PBX at `peer` may ask (an IPv4 peer seen as IPv6, `::ffff:a.b.c.d`, is matched as IPv4).
    pub fn admit(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.0.is_empty() || self.0.iter().any(|block| block.contains(&peer))
    }
}

/// Where a return call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    Courier,
    Office,
}

/// Why a return call went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum RouteReason {
    /// The caller is the client of an order (active, or closed within the window) whose courier
    /// is active.
    OrderClient,
    /// The caller is one of the company's couriers: the office takes it (and sees who it is).
    CallerIsCourier,
    /// No order has the caller's number (or its courier is not active).
    UnknownCaller,
    /// The caller's number is withheld or not a number.
    NoCallerNumber,
    /// The company has return calls off.
    Disabled,
    /// Outside the company's courier hours.
    OutsideHours,
    /// The company's PBX settings are missing (no channel template to dial the courier with).
    NoPbx,
    /// The courier's dial string would not be safe inside `Dial()`.
    UnsafeRoute,
}

/// An order the caller's number belongs to, as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateOrder {
    pub order_id: String,
    pub courier_id: String,
    /// The courier's registered phone, E.164.
    pub courier_phone: String,
    pub courier_active: bool,
    pub active: bool,
    pub updated_at: OffsetDateTime,
    /// The latest callback of the order's courier to this number, if any.
    pub last_callback_at: Option<OffsetDateTime>,
}

/// What the decision knows about the caller.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// None: withheld, or not a number.
    pub number: Option<PhoneNumber>,
    /// The orders with this number among their clients' phones.
    pub orders: Vec<CandidateOrder>,
    /// The active courier with this phone, if the caller is one.
    pub courier_id: Option<String>,
}

/// Where to send a call, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kind: RouteKind,
    pub reason: RouteReason,
    /// What `Dial()` dials (empty for the office).
    pub route: String,
    pub order_id: Option<String>,
    pub courier_id: Option<String>,
}

impl Decision {
    fn office(reason: RouteReason) -> Decision {
        Decision { kind: RouteKind::Office, reason, route: String::new(), order_id: None, courier_id: None }
    }
}

/// Characters a route may not contain: inside `Dial(${DIALBACK_ROUTE},20)` a comma would set
/// Dial's timeout and options, `&` dial a second target, `$` and quotes are taken literally.
pub fn route_is_safe(route: &str) -> bool {
    !route.is_empty()
        && route.len() <= 256
        && !route.chars().any(|c| c.is_whitespace() || c.is_control() || ",&$\"'`;|\\".contains(c))
}

/// Decides where a call from `caller` goes under the company's rules `rules` and PBX settings
/// `pbx` (None: none saved), at `now`.
pub fn decide(rules: &ReturnCallSettings, pbx: Option<&PbxSettings>, caller: &Caller, now: OffsetDateTime) -> Decision {
    if !rules.enabled {
        return Decision::office(RouteReason::Disabled);
    }
    if caller.number.is_none() {
        return Decision::office(RouteReason::NoCallerNumber);
    }
    if let Some(courier) = &caller.courier_id {
        // The office sees who calls.
        return Decision { courier_id: Some(courier.clone()), ..Decision::office(RouteReason::CallerIsCourier) };
    }
    let window = time::Duration::hours(i64::from(rules.window_hours));
    let current = |o: &&CandidateOrder| o.courier_active && (o.active || now - o.updated_at <= window);
    // The order of the latest callback to this number, else the latest change.
    let Some(order) = caller.orders.iter().filter(current).max_by_key(|o| (o.last_callback_at, o.updated_at)) else {
        return Decision::office(RouteReason::UnknownCaller);
    };
    if rules.courier_hours.as_ref().is_some_and(|hours| !hours.contain(now)) {
        return Decision::office(RouteReason::OutsideHours);
    }
    let Some(pbx) = pbx.filter(|p| p.has_pbx()) else { return Decision::office(RouteReason::NoPbx) };
    // Dialled exactly as leg 1 of a callback rings the courier.
    let Ok(phone) = super::phone::parse(&order.courier_phone, &pbx.default_region) else {
        return Decision::office(RouteReason::UnsafeRoute);
    };
    let route =
        render_channel(&pbx.channel_template, &format!("{}{}", pbx.courier_prefix, pbx.dial_format.render(&phone)));
    if !route_is_safe(&route) {
        return Decision::office(RouteReason::UnsafeRoute);
    }
    Decision {
        kind: RouteKind::Courier,
        reason: RouteReason::OrderClient,
        route,
        order_id: Some(order.order_id.clone()),
        courier_id: Some(order.courier_id.clone()),
    }
}

/// Where a return call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ReturnStatus {
    /// Sent to the courier; their phone rings.
    RingingCourier,
    Connected,
    Completed,
    /// The courier did not take it (`failed_leg` courier: busy, no answer, unreachable; the
    /// dialplan then sends it to the office), or the caller hung up first (`failed_leg` caller).
    Failed,
    /// Sent to the office.
    Office,
}

impl ReturnStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, ReturnStatus::Completed | ReturnStatus::Failed | ReturnStatus::Office)
    }
}

/// Which side a failed return call failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ReturnLeg {
    Courier,
    Caller,
}

/// What dialback knows about one return call after its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnState {
    pub status: ReturnStatus,
    pub failed_leg: Option<ReturnLeg>,
    pub reason: Option<Reason>,
    pub answered_at: Option<OffsetDateTime>,
    pub ended_at: Option<OffsetDateTime>,
    pub talk_seconds: Option<i32>,
    /// Asterisk's record of the inbound channel's Dial (the first one it posts).
    pub cdr: Option<Box<CdrRecord>>,
}

impl ReturnState {
    /// Right after the decision: the courier rings, or the office has it.
    pub fn decided(kind: RouteKind, now: OffsetDateTime) -> ReturnState {
        let (status, ended_at) = match kind {
            RouteKind::Courier => (ReturnStatus::RingingCourier, None),
            RouteKind::Office => (ReturnStatus::Office, Some(now)),
        };
        ReturnState {
            status,
            failed_leg: None,
            reason: None,
            answered_at: None,
            ended_at,
            talk_seconds: None,
            cdr: None,
        }
    }
}

/// What an AMI event of the inbound channel (the one that ran the AGI) says about a return call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnFact {
    /// Its Dial to the courier ended: ANSWER (None) or the reason it failed.
    CourierDialEnded(Option<Reason>),
    /// Asterisk was asked to hang the inbound channel up (the caller left).
    CallerHungUp,
    /// The inbound channel is gone.
    Hangup,
    Cdr(Box<CdrRecord>),
}

/// Applies a fact; the new state, or None when it changes nothing (a finished call stays so).
pub fn apply(state: &ReturnState, fact: &ReturnFact, now: OffsetDateTime) -> Option<ReturnState> {
    use ReturnStatus::*;
    let mut s = state.clone();
    match fact {
        ReturnFact::CourierDialEnded(None) if s.status == RingingCourier => {
            s.status = Connected;
            s.answered_at = Some(now);
        }
        ReturnFact::CourierDialEnded(Some(reason)) if s.status == RingingCourier => {
            s.status = Failed;
            s.failed_leg = Some(ReturnLeg::Courier);
            s.reason = Some(*reason);
            s.ended_at = Some(now);
        }
        ReturnFact::CallerHungUp if s.status == RingingCourier => {
            s.status = Failed;
            s.failed_leg = Some(ReturnLeg::Caller);
            s.reason = Some(Reason::Canceled);
            s.ended_at = Some(now);
        }
        ReturnFact::CallerHungUp | ReturnFact::Hangup if s.status == Connected => {
            s.status = Completed;
            s.ended_at = Some(now);
            s.talk_seconds = s.answered_at.map(|a| (((now - a).whole_milliseconds() + 500) / 1000) as i32);
        }
        // Gone without a Dial that ended: the route could not be dialled at all (CHANUNAVAIL
        // emits no DialEnd on the inbound channel).
        ReturnFact::Hangup if s.status == RingingCourier => {
            s.status = Failed;
            s.failed_leg = Some(ReturnLeg::Courier);
            s.reason = Some(Reason::Unreachable);
            s.ended_at = Some(now);
        }
        ReturnFact::Cdr(record) if s.cdr.is_none() => s.cdr = Some(record.clone()),
        _ => {}
    }
    (s != *state).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tests::sample;

    fn at(hour: u8) -> OffsetDateTime {
        time::macros::datetime!(2026-06-01 00:00 UTC) + time::Duration::hours(i64::from(hour))
    }

    fn order(
        id: &str,
        courier: &str,
        active: bool,
        updated: OffsetDateTime,
        last: Option<OffsetDateTime>,
    ) -> CandidateOrder {
        CandidateOrder {
            order_id: id.into(),
            courier_id: courier.into(),
            courier_phone: "+79001112233".into(),
            courier_active: true,
            active,
            updated_at: updated,
            last_callback_at: last,
        }
    }

    fn client(orders: Vec<CandidateOrder>) -> Caller {
        Caller { number: Some(crate::phone::parse("+79161234567", "RU").unwrap()), orders, courier_id: None }
    }

    fn on() -> ReturnCallSettings {
        ReturnCallSettings { enabled: true, ..Default::default() }
    }

    #[test]
    fn the_client_of_an_active_order_reaches_its_courier_dialled_as_leg_1() {
        let d = decide(&on(), Some(&sample()), &client(vec![order("A-1", "c1", true, at(1), None)]), at(2));
        assert_eq!((d.kind, d.reason), (RouteKind::Courier, RouteReason::OrderClient));
        assert_eq!(d.route, "PJSIP/79001112233@trunk");
        assert_eq!((d.order_id.as_deref(), d.courier_id.as_deref()), (Some("A-1"), Some("c1")));
    }

    #[test]
    fn several_orders_go_to_the_latest_callback_else_the_latest_change() {
        let orders = vec![
            order("old-call", "c1", true, at(9), Some(at(5))),
            order("new-call", "c2", true, at(1), Some(at(6))),
            order("no-call", "c3", true, at(10), None),
        ];
        assert_eq!(decide(&on(), Some(&sample()), &client(orders), at(11)).order_id.as_deref(), Some("new-call"));
        let orders = vec![order("a", "c1", true, at(3), None), order("b", "c2", true, at(4), None)];
        assert_eq!(decide(&on(), Some(&sample()), &client(orders), at(11)).order_id.as_deref(), Some("b"));
    }

    #[test]
    fn a_closed_order_routes_within_the_window_only() {
        let closed = || client(vec![order("A-1", "c1", false, at(10), None)]);
        assert_eq!(decide(&on(), Some(&sample()), &closed(), at(11)).kind, RouteKind::Courier);
        let late = decide(&on(), Some(&sample()), &closed(), at(13));
        assert_eq!((late.kind, late.reason), (RouteKind::Office, RouteReason::UnknownCaller));
    }

    #[test]
    fn everything_else_goes_to_the_office_and_says_why() {
        let one = || client(vec![order("A-1", "c1", true, at(1), None)]);
        let off = ReturnCallSettings::default();
        assert_eq!(decide(&off, Some(&sample()), &one(), at(2)).reason, RouteReason::Disabled);
        let withheld = Caller { number: None, ..one() };
        assert_eq!(decide(&on(), Some(&sample()), &withheld, at(2)).reason, RouteReason::NoCallerNumber);
        let courier = Caller { courier_id: Some("c9".into()), ..one() };
        let d = decide(&on(), Some(&sample()), &courier, at(2));
        assert_eq!(
            (d.reason, d.courier_id.as_deref(), d.route.as_str()),
            (RouteReason::CallerIsCourier, Some("c9"), "")
        );
        let mut inactive = one();
        inactive.orders[0].courier_active = false;
        assert_eq!(decide(&on(), Some(&sample()), &inactive, at(2)).reason, RouteReason::UnknownCaller);
        assert_eq!(decide(&on(), None, &one(), at(2)).reason, RouteReason::NoPbx);
        let hours = ReturnCallSettings {
            courier_hours: Some(CourierHours { from: "09:00".into(), to: "21:00".into(), utc_offset_min: 180 }),
            ..on()
        };
        // 02:00 UTC is 05:00 in Moscow: outside; 10:00 UTC is 13:00: inside.
        assert_eq!(decide(&hours, Some(&sample()), &one(), at(2)).reason, RouteReason::OutsideHours);
        assert_eq!(decide(&hours, Some(&sample()), &one(), at(10)).kind, RouteKind::Courier);
        let mut unsafe_template = sample();
        unsafe_template.channel_template = "PJSIP/{NUMBER}@trunk&PJSIP/100@trunk".into();
        assert_eq!(decide(&on(), Some(&unsafe_template), &one(), at(2)).reason, RouteReason::UnsafeRoute);
    }

    #[test]
    fn routes_with_what_would_change_dial_are_unsafe() {
        for bad in ["PJSIP/1@t,3", "PJSIP/1@t&PJSIP/2@t", "Local/${EXTEN}@x", "PJSIP/\"1\"@t", "PJSIP/1 @t", ""] {
            assert!(!route_is_safe(bad), "{bad}");
        }
        assert!(route_is_safe("PJSIP/79001112233@trunk"));
        assert!(route_is_safe("Dongle/dongle0/89001112233"));
    }

    #[test]
    fn hours_may_run_past_midnight_and_addresses_match_their_blocks() {
        let night = CourierHours { from: "22:00".into(), to: "06:00".into(), utc_offset_min: 0 };
        assert!(night.contain(at(23)) && night.contain(at(3)) && !night.contain(at(12)));
        let rules = ReturnCallSettings { allowed_addresses: vec!["203.0.113.0/24".into(), "::1".into()], ..on() };
        assert!(rules.validate().is_ok());
        let allowed = rules.allowed();
        let admit = |peer: &str| allowed.admit(peer.parse().unwrap());
        assert!(admit("203.0.113.9") && admit("::1") && admit("::ffff:203.0.113.200"));
        assert!(!admit("198.51.100.1") && !admit("::2"));
        assert!(ReturnCallSettings::default().allowed().admit("198.51.100.1".parse().unwrap()));
        let bad = ReturnCallSettings { allowed_addresses: vec!["10.0.0.0/40".into()], ..on() };
        assert_eq!(bad.validate().unwrap_err().field, "allowed_addresses");
        let bad = ReturnCallSettings {
            courier_hours: Some(CourierHours { from: "9:00".into(), to: "25:00".into(), utc_offset_min: 0 }),
            ..on()
        };
        assert_eq!(bad.validate().unwrap_err().field, "courier_hours.from");
    }

    #[test]
    fn rules_stored_by_a_later_release_are_read() {
        let stored = serde_json::json!({
            "enabled": true, "window_hours": 4, "allowed_addresses": ["10.1.0.0/16"], "announce": "later",
            "courier_hours": {"from": "09:00", "to": "18:00", "utc_offset_min": 180, "days": "later"},
        });
        let read = ReturnCallSettings::from_stored(stored.clone()).expect("read despite fields it does not know");
        assert!(read.enabled && read.window_hours == 4 && read.courier_hours.unwrap().utc_offset_min == 180);
        assert!(serde_json::from_value::<ReturnCallSettings>(stored).is_err(), "what clients send stays strict");
    }

    #[test]
    fn a_return_call_goes_from_ringing_to_its_outcome() {
        let ringing = ReturnState::decided(RouteKind::Courier, at(1));
        let answered = apply(&ringing, &ReturnFact::CourierDialEnded(None), at(1)).unwrap();
        assert_eq!(answered.status, ReturnStatus::Connected);
        let done = apply(&answered, &ReturnFact::Hangup, at(1) + time::Duration::seconds(3)).unwrap();
        assert_eq!((done.status, done.talk_seconds), (ReturnStatus::Completed, Some(3)));
        assert!(apply(&done, &ReturnFact::CourierDialEnded(Some(Reason::Busy)), at(2)).is_none());
        let busy = apply(&ringing, &ReturnFact::CourierDialEnded(Some(Reason::Busy)), at(1)).unwrap();
        assert_eq!(
            (busy.status, busy.failed_leg, busy.reason),
            (ReturnStatus::Failed, Some(ReturnLeg::Courier), Some(Reason::Busy))
        );
        let left = apply(&ringing, &ReturnFact::CallerHungUp, at(1)).unwrap();
        assert_eq!((left.failed_leg, left.reason), (Some(ReturnLeg::Caller), Some(Reason::Canceled)));
        let unreachable = apply(&ringing, &ReturnFact::Hangup, at(1)).unwrap();
        assert_eq!(unreachable.reason, Some(Reason::Unreachable));
        assert_eq!(ReturnState::decided(RouteKind::Office, at(1)).status, ReturnStatus::Office);
    }
}
