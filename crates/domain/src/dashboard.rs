//! What the admin page's dashboard shows: calls counted by how they went, and how far a company's
//! set-up has come. Counting happens in the store; this names the buckets and judges the set-up.

use std::collections::BTreeMap;

use serde::Serialize;

/// How a call went, as the dashboard's charts stack it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    /// The courier's phone did not answer, was busy, or its answer was not confirmed.
    CourierFailed,
    /// The client's phone did not answer or was busy.
    ClientFailed,
    /// Failed on neither phone: the PBX refused or broke the call.
    OtherFailed,
    /// Refused by dialback before reaching the PBX (number, destination, rate limit).
    Refused,
    Canceled,
    Unknown,
    /// Still ringing or talking.
    InProgress,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Completed,
        Outcome::CourierFailed,
        Outcome::ClientFailed,
        Outcome::OtherFailed,
        Outcome::Refused,
        Outcome::Canceled,
        Outcome::Unknown,
        Outcome::InProgress,
    ];

    /// From a journal row's `status` and `failed_leg` as stored ("" for no leg).
    pub fn of(status: &str, failed_leg: &str) -> Outcome {
        match (status, failed_leg) {
            ("completed", _) => Outcome::Completed,
            ("failed", "courier") => Outcome::CourierFailed,
            ("failed", "client") => Outcome::ClientFailed,
            ("failed", _) => Outcome::OtherFailed,
            ("refused", _) => Outcome::Refused,
            ("canceled", _) => Outcome::Canceled,
            ("unknown", _) => Outcome::Unknown,
            _ => Outcome::InProgress,
        }
    }
}

/// Calls in one bucket (an hour, a day, a period): how many, how many reached the client (or the
/// office), and how many went each way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub calls: u64,
    pub reached: u64,
    pub outcomes: BTreeMap<Outcome, u64>,
}

impl Tally {
    pub fn add(&mut self, outcome: Outcome, calls: u64, reached: u64) {
        self.calls += calls;
        self.reached += reached;
        *self.outcomes.entry(outcome).or_default() += calls;
    }

    /// Adds another bucket's calls to this one.
    pub fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.reached += other.reached;
        for (outcome, calls) in &other.outcomes {
            *self.outcomes.entry(*outcome).or_default() += calls;
        }
    }

    /// Every outcome named, those without calls as 0 (the API lists them all).
    pub fn complete(mut self) -> Tally {
        for outcome in Outcome::ALL {
            self.outcomes.entry(outcome).or_default();
        }
        self
    }
}

/// A courier's calls over the dashboard's window and why those that failed did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CourierTally {
    pub calls: u64,
    pub failed: u64,
    /// Failed calls by reason (`busy`, `no_answer`, `not_confirmed`, ...), with the leg they failed on.
    pub reasons: BTreeMap<(String, String), u64>,
}

impl CourierTally {
    /// `failed_leg` and `reason` as stored ("" for none): a row that failed names its leg or reason.
    pub fn add(&mut self, failed_leg: &str, reason: &str, calls: u64) {
        self.calls += calls;
        if !failed_leg.is_empty() || !reason.is_empty() {
            self.failed += calls;
            *self.reasons.entry((failed_leg.to_owned(), reason.to_owned())).or_default() += calls;
        }
    }
}

/// The couriers whose calls failed most: most failures first, then the larger share, then the id;
/// couriers without a failure are left out.
pub fn most_failing(couriers: BTreeMap<String, CourierTally>, limit: usize) -> Vec<(String, CourierTally)> {
    let mut failing: Vec<_> = couriers.into_iter().filter(|(_, t)| t.failed > 0).collect();
    failing.sort_by(|(a_id, a), (b_id, b)| {
        b.failed
            .cmp(&a.failed)
            .then_with(|| (b.failed * a.calls).cmp(&(a.failed * b.calls)))
            .then_with(|| a_id.cmp(b_id))
    });
    failing.truncate(limit);
    failing
}

/// The steps of a company's first set-up, in the order the admin page walks through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupStep {
    /// PBX settings saved with a host, user and channel.
    Pbx,
    /// The PBX runs the dialplan dialback generated for those settings.
    Dialplan,
    /// The last Test got through connecting, logging in and the dialplan check.
    Test,
    /// A Test call connected both legs (the admin's own phone first).
    FirstCall,
    /// Return calls are turned on in the company's rules.
    ReturnCalls,
    /// A webhook endpoint is enabled and not failing.
    Webhooks,
}

/// What is true of the company now, as the store reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetupFacts {
    pub pbx_saved: bool,
    pub dialplan_current: bool,
    pub test_reached_originate: bool,
    pub test_connected_once: bool,
    pub return_calls_enabled: bool,
    pub webhook_healthy: bool,
}

/// One step of the set-up: done or not, and whether callbacks need it (return calls and webhooks
/// are for companies that want them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SetupState {
    pub step: SetupStep,
    pub done: bool,
    pub required: bool,
}

pub fn setup(facts: SetupFacts) -> Vec<SetupState> {
    let step = |step, done, required| SetupState { step, done, required };
    vec![
        step(SetupStep::Pbx, facts.pbx_saved, true),
        step(SetupStep::Dialplan, facts.dialplan_current, true),
        step(SetupStep::Test, facts.test_reached_originate, true),
        step(SetupStep::FirstCall, facts.test_connected_once, true),
        step(SetupStep::ReturnCalls, facts.return_calls_enabled, false),
        step(SetupStep::Webhooks, facts.webhook_healthy, false),
    ]
}

/// The Test steps that come before the call is placed: a Test that passed them all reached the
/// point where the PBX is asked to call.
pub const STEPS_BEFORE_ORIGINATE: [&str; 6] = ["connect", "tls", "banner", "http", "login", "dialplan"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stored_status_has_its_outcome() {
        assert_eq!(Outcome::of("completed", ""), Outcome::Completed);
        assert_eq!(Outcome::of("failed", "courier"), Outcome::CourierFailed);
        assert_eq!(Outcome::of("failed", "client"), Outcome::ClientFailed);
        assert_eq!(Outcome::of("failed", ""), Outcome::OtherFailed);
        assert_eq!(Outcome::of("refused", ""), Outcome::Refused);
        assert_eq!(Outcome::of("canceled", ""), Outcome::Canceled);
        assert_eq!(Outcome::of("unknown", ""), Outcome::Unknown);
        for status in ["queued", "ringing_courier", "ringing_client", "connected"] {
            assert_eq!(Outcome::of(status, ""), Outcome::InProgress);
        }
    }

    #[test]
    fn a_tally_names_every_outcome() {
        let mut t = Tally::default();
        t.add(Outcome::Completed, 3, 3);
        t.add(Outcome::ClientFailed, 2, 0);
        t.add(Outcome::Completed, 1, 1);
        let mut sum = Tally::default();
        sum.merge(&t);
        sum.merge(&t);
        assert_eq!((sum.calls, sum.reached, sum.outcomes[&Outcome::ClientFailed]), (12, 8, 4));
        let t = t.complete();
        assert_eq!((t.calls, t.reached), (6, 4));
        assert_eq!(t.outcomes.len(), Outcome::ALL.len());
        assert_eq!(t.outcomes[&Outcome::Completed], 4);
        assert_eq!(t.outcomes[&Outcome::Unknown], 0);
    }

    #[test]
    fn the_couriers_failing_most_come_first() {
        let mut couriers = BTreeMap::new();
        let mut add = |id: &str, leg: &str, reason: &str, calls| {
            couriers.entry(id.to_owned()).or_insert_with(CourierTally::default).add(leg, reason, calls);
        };
        add("anna", "", "", 10);
        add("anna", "courier", "no_answer", 2);
        add("boris", "client", "busy", 2);
        add("boris", "", "", 1);
        add("vera", "", "", 5);
        add("gleb", "courier", "not_confirmed", 3);
        add("gleb", "courier", "no_answer", 1);
        let top = most_failing(couriers, 10);
        let order: Vec<_> = top.iter().map(|(id, t)| (id.as_str(), t.failed, t.calls)).collect();
        // gleb fails most; boris and anna fail twice each, boris in a larger share; vera never.
        assert_eq!(order, [("gleb", 4, 4), ("boris", 2, 3), ("anna", 2, 12)]);
        assert_eq!(top[0].1.reasons[&("courier".to_owned(), "not_confirmed".to_owned())], 3);
    }

    #[test]
    fn the_setup_follows_the_facts() {
        let none = setup(SetupFacts::default());
        assert!(none.iter().all(|s| !s.done));
        assert_eq!(none.iter().filter(|s| s.required).count(), 4);
        let facts = SetupFacts { pbx_saved: true, dialplan_current: true, ..SetupFacts::default() };
        let some = setup(facts);
        let done: Vec<_> = some.iter().filter(|s| s.done).map(|s| s.step).collect();
        assert_eq!(done, [SetupStep::Pbx, SetupStep::Dialplan]);
    }
}
