//! The outcome a company's PBX keeps of each callback, for the calls that end while no dialback
//! process listens (the process following them died, or the only one restarted). The dialplan
//! dialback generates ([`crate::dialplan`]) pushes a hangup handler on the courier's answered
//! channel; as that channel hangs up, the handler writes one AstDB entry with what Asterisk knows
//! then (`Set(DB(...)=...)`). dialback reads it over AMI (`DBGet`) for a call whose channels are
//! gone, instead of calling its outcome `unknown`.
//!
//! That handler runs only once the courier answered. When the PBX also runs the courier's context
//! (leg 1 rung through the dialplan), a second handler keeps leg 1's record ([`LEG1_FAMILY`], the
//! same fields), which says how a courier leg that never answered ended
//! (tests/fixtures/asterisk-22/ami-k5/README.md).
//!
//! The entry's key is the last [`KEY_DIGITS`] hex digits of the call id, so a PBX holds at most
//! 65,536 of them whatever its traffic: a later call with the same digits overwrites one, and as
//! every record names its call, an overwritten record is told apart, never taken for another
//! call's. Deleting records would need the AMI user to have `write = system`; overwriting needs
//! nothing beyond the `reporting` that `DBGet` and `CoreShowChannels` already need.

use time::OffsetDateTime;

use super::callback::{Confirmation, Fact, Reason};

/// The AstDB family of the call's records (written on the courier's answered channel).
pub const FAMILY: &str = "dialback";
/// The AstDB family of leg 1's records (written by the courier's context).
pub const LEG1_FAMILY: &str = "dialback-leg1";
/// How many trailing hex digits of the call id key its record.
pub const KEY_DIGITS: usize = 4;
/// The variable the confirmation's `Read` sets (see [`crate::dialplan`]).
pub const CONFIRM_DIGIT_VARIABLE: &str = "CONFIRM";

/// The AstDB entry a handler writes in `family` (`DB(...)` argument), as dialplan text.
pub fn dialplan_entry(family: &str) -> String {
    format!("{family}/${{DIALBACK_CALL_ID:-{KEY_DIGITS}}}")
}

/// What a handler writes, `|`-separated: the call id; its leg's `Dial` status (in the call's record
/// leg 2's, empty when it was never dialled); the channel's hangup cause; the CDR's billable
/// seconds (the client's talk when answered); when the channel hung up (Unix seconds); and the
/// confirmation's `Read` status and digit (empty when the courier was not asked, and always in leg
/// 1's record).
pub fn dialplan_value() -> String {
    format!(
        "${{DIALBACK_CALL_ID}}|${{DIALSTATUS}}|${{HANGUPCAUSE}}|${{CDR(billsec)}}|${{EPOCH}}|${{READSTATUS}}|${{{CONFIRM_DIGIT_VARIABLE}}}"
    )
}

/// The key of call `id`'s record in [`FAMILY`].
pub fn key(id: &str) -> &str {
    &id[id.len().saturating_sub(KEY_DIGITS)..]
}

/// A record as the PBX kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    pub call_id: String,
    /// Leg 2's `DIALSTATUS`; empty when the dialplan never dialled leg 2.
    pub dial_status: String,
    pub hangup_cause: u32,
    pub billable_seconds: i64,
    pub ended_at: OffsetDateTime,
    /// The confirmation's `READSTATUS` and digit, when the courier was asked to press 1.
    pub read_status: Option<String>,
    pub digit: Option<String>,
}

impl OutcomeRecord {
    /// Reads a record's value; why not, when it is not one.
    pub fn parse(value: &str) -> Result<OutcomeRecord, String> {
        let fields: Vec<&str> = value.split('|').map(str::trim).collect();
        let [call_id, dial_status, cause, billsec, epoch, rest @ ..] = fields.as_slice() else {
            return Err(format!("the PBX's record {value:?} is not one dialback's dialplan writes"));
        };
        let number = |name: &str, text: &str| -> Result<i64, String> {
            if text.is_empty() {
                return Ok(0);
            }
            text.parse().map_err(|_| format!("the PBX's record {value:?} has {name} {text:?}, not a number"))
        };
        let ended_at = OffsetDateTime::from_unix_timestamp(number("EPOCH", epoch)?)
            .map_err(|_| format!("the PBX's record {value:?} has no time"))?;
        let non_empty = |i: usize| rest.get(i).filter(|s| !s.is_empty()).map(|s| (*s).to_owned());
        Ok(OutcomeRecord {
            call_id: (*call_id).to_owned(),
            dial_status: (*dial_status).to_owned(),
            hangup_cause: u32::try_from(number("HANGUPCAUSE", cause)?).unwrap_or(0),
            billable_seconds: number("CDR(billsec)", billsec)?.max(0),
            ended_at,
            read_status: non_empty(0),
            digit: non_empty(1),
        })
    }

    /// What leg 1's record says, when the call's own record is missing: how the courier's phone
    /// failed, as facts with their times; why not, when the courier answered (the rest of the call
    /// is the call's record's to say) or the record cannot say.
    pub fn leg1_facts(&self) -> Result<Vec<(Fact, OffsetDateTime)>, String> {
        let reason = match self.dial_status.as_str() {
            "ANSWER" => {
                return Err("the PBX recorded that the courier answered, but kept no record of the rest of the call \
                            (is the callback context dialback's current one?)"
                    .into())
            }
            // The Originate's Timeout cancelled the ringing (k5_courier_noanswer_origtimeout). A
            // cancel of dialback's own is stored before it is sent, so its call is never read here.
            "CANCEL" | "NOANSWER" => Reason::NoAnswer,
            "" => return Err("the PBX's record of leg 1 has no dial status".into()),
            failed => Reason::from_dial_status(failed),
        };
        let end = self.ended_at;
        Ok(vec![(Fact::CourierFailed { reason }, end), (Fact::CourierHangup { cause: self.hangup_cause }, end)])
    }

    /// What the record says happened after the courier answered, as facts with their times (the
    /// state machine applies them as it does the events it would have heard); why not, when the
    /// record cannot say how the call ended.
    pub fn facts(&self) -> Result<Vec<(Fact, OffsetDateTime)>, String> {
        let end = self.ended_at;
        let mut facts = Vec::new();
        if let Some(read_status) = &self.read_status {
            facts.push((Fact::Confirmation(Confirmation::read(Some(read_status), self.digit.as_deref())), end));
        }
        match self.dial_status.as_str() {
            "ANSWER" => {
                let connected = end - time::Duration::seconds(self.billable_seconds);
                facts.push((Fact::Bridged, connected));
            }
            "" if self.read_status.is_none() => {
                return Err("the PBX's record shows that leg 2 was never dialled, and not why".into())
            }
            "" => {}
            failed => facts.push((Fact::ClientFailed { reason: Reason::from_dial_status(failed) }, end)),
        }
        facts.push((Fact::CourierHangup { cause: self.hangup_cause }, end));
        Ok(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::{apply, CallState, Leg, Status};

    fn after(state: Status, record: &str) -> CallState {
        let mut s = CallState::new(state);
        for (fact, at) in OutcomeRecord::parse(record).unwrap().facts().unwrap() {
            s = apply(&s, &fact, at).unwrap_or(s);
        }
        s
    }

    // The values are those a real Asterisk 22 wrote (../shared/reference k3_astdb_outcome_record:
    // answered `ANSWER|16|<answer>|3|<epoch>`, client busy `BUSY|16|<answer>|0|<epoch>`), in the
    // order dialback's dialplan writes the same variables.
    #[test]
    fn an_answered_call_is_completed_with_its_talk_time() {
        let s = after(Status::RingingClient, "0190c0de-aaaa-7bbb-8ccc-0123456789ab|ANSWER|16|3|1796409414||");
        assert_eq!(s.status, Status::Completed);
        assert_eq!(s.talk_seconds, Some(3));
        assert_eq!(s.ended_at.unwrap().unix_timestamp(), 1796409414);
        assert_eq!(s.hangup_cause, Some(16));
    }

    #[test]
    fn a_busy_client_fails_leg_2_even_when_the_courier_was_last_seen_ringing() {
        let s = after(Status::RingingCourier, "x|BUSY|16|0|1796409412||");
        assert_eq!((s.status, s.failed_leg, s.reason), (Status::Failed, Some(Leg::Client), Some(Reason::Busy)));
        assert!(!s.reason_provisional);
    }

    #[test]
    fn an_unconfirmed_answer_fails_leg_1() {
        let s = after(Status::RingingClient, "x||16|0|1796409412|TIMEOUT|");
        assert_eq!(
            (s.status, s.failed_leg, s.reason),
            (Status::Failed, Some(Leg::Courier), Some(Reason::NotConfirmed))
        );
    }

    #[test]
    fn what_is_not_a_record_is_refused_with_why() {
        assert!(OutcomeRecord::parse("ANSWER|16").is_err());
        assert!(OutcomeRecord::parse("x|ANSWER|16|three|1796409414").is_err());
        let never_dialled = OutcomeRecord::parse("x||16|0|1796409412||").unwrap();
        assert!(never_dialled.facts().unwrap_err().contains("never dialled"));
    }

    #[test]
    fn the_key_is_the_last_digits_of_the_call_id() {
        assert_eq!(key("0190c0de-aaaa-7bbb-8ccc-0123456789ab"), "89ab");
        assert_eq!(dialplan_entry(FAMILY), "dialback/${DIALBACK_CALL_ID:-4}");
    }

    fn after_leg1(record: &str) -> CallState {
        let mut s = CallState::new(Status::RingingCourier);
        for (fact, at) in OutcomeRecord::parse(record).unwrap().leg1_facts().unwrap() {
            s = apply(&s, &fact, at).unwrap_or(s);
        }
        s
    }

    // The dial statuses and causes a real Asterisk 22 wrote from leg 1's handler
    // (tests/fixtures/asterisk-22/ami-k5: `BUSY|17`, `CONGESTION|34`, and `CANCEL|19` when the
    // Originate's Timeout ended the ringing).
    #[test]
    fn leg_1s_record_says_how_the_courier_leg_failed() {
        let busy = after_leg1("x|BUSY|17|0|1796530947||");
        assert_eq!(
            (busy.status, busy.failed_leg, busy.reason),
            (Status::Failed, Some(Leg::Courier), Some(Reason::Busy))
        );
        assert_eq!((busy.hangup_cause, busy.ended_at.unwrap().unix_timestamp()), (Some(17), 1796530947));
        assert_eq!(after_leg1("x|CONGESTION|34|0|1796530947||").reason, Some(Reason::Congestion));
        assert_eq!(after_leg1("x|CANCEL|19|0|1796530929||").reason, Some(Reason::NoAnswer));
        assert_eq!(after_leg1("x|NOANSWER|0|0|1796530929||").reason, Some(Reason::NoAnswer));
        assert_eq!(after_leg1("x|CHANUNAVAIL|20|0|1796530929||").reason, Some(Reason::Unreachable));
    }

    #[test]
    fn an_answered_leg_1_leaves_the_rest_to_the_calls_record() {
        let answered = OutcomeRecord::parse("x|ANSWER|16|3|1796530968||").unwrap();
        assert!(answered.leg1_facts().unwrap_err().contains("courier answered"));
    }
}
