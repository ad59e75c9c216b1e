//! The simulated phones: what a number does when dialled, chosen by its last digit, with the
//! causes, statuses and CDR dispositions a real Asterisk 22 reported for each outcome.
//!
//! `0` busy, `9` rings and never answers, `8` congestion, `6` rejects before answering, anything
//! else rings and answers. An answering phone presses 1 when the dialplan asks for a key (a
//! `Read`), except `5`: a voicemail (or a carrier's "subscriber unavailable" recording), which
//! answers like a person and never presses anything.

use super::channel::State;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Answer,
    Busy,
    NoAnswer,
    Congestion,
    Reject,
}

impl Outcome {
    pub fn for_number(number: &str) -> Outcome {
        match number.chars().last() {
            Some('0') => Outcome::Busy,
            Some('9') => Outcome::NoAnswer,
            Some('8') => Outcome::Congestion,
            Some('6') => Outcome::Reject,
            _ => Outcome::Answer,
        }
    }

    /// The hangup cause of the channel that rang the phone.
    pub fn cause(self) -> u16 {
        match self {
            Outcome::Answer => 16,
            Outcome::Busy => 17,
            Outcome::NoAnswer => 19,
            Outcome::Reject => 21,
            Outcome::Congestion => 34,
        }
    }

    /// The cause on the `;1` half of a Local channel: Asterisk reported 0 there for busy and
    /// congestion (the `;2` half carries the real cause), the real cause otherwise.
    pub fn local_outer_cause(self) -> u16 {
        match self {
            Outcome::Busy | Outcome::Congestion => 0,
            other => other.cause(),
        }
    }

    /// `DialStatus` of the DialEnd (a rejected Local channel was reported as NOANSWER).
    pub fn dial_status(self) -> &'static str {
        match self {
            Outcome::Answer => "ANSWER",
            Outcome::Busy => "BUSY",
            Outcome::NoAnswer | Outcome::Reject => "NOANSWER",
            Outcome::Congestion => "CONGESTION",
        }
    }

    /// `Reason` of the OriginateResponse when this was the courier's phone.
    pub fn reason(self) -> u8 {
        match self {
            Outcome::Answer => 4,
            Outcome::Busy => 5,
            Outcome::NoAnswer => 3,
            Outcome::Congestion => 8,
            Outcome::Reject => 0,
        }
    }

    pub fn disposition(self) -> &'static str {
        match self {
            Outcome::Answer => "ANSWERED",
            Outcome::Busy => "BUSY",
            Outcome::NoAnswer | Outcome::Reject => "NO ANSWER",
            Outcome::Congestion => "CONGESTION",
        }
    }

    /// The dialplan application the phone was in when it ended (the CDR's LastApplication/LastData).
    pub fn application(self) -> (&'static str, &'static str) {
        match self {
            Outcome::Answer => ("Answer", ""),
            Outcome::Busy => ("Busy", ""),
            Outcome::NoAnswer => ("Wait", "40"),
            Outcome::Congestion => ("Congestion", ""),
            Outcome::Reject => ("Hangup", "21"),
        }
    }

    /// The state a failing phone's channel moves to before hanging up (observed: Busy for both
    /// busy and congestion; a rejecting or unanswered phone stays ringing).
    pub fn failed_state(self) -> Option<State> {
        matches!(self, Outcome::Busy | Outcome::Congestion).then_some(State::Busy)
    }
}

/// Whether the phone presses 1 when asked (all but the voicemail, `5`).
pub(crate) fn presses_when_asked(number: &str) -> bool {
    !number.ends_with('5')
}

/// `Cause-txt` for a hangup cause, as Asterisk words it.
pub(crate) fn cause_text(cause: u16) -> &'static str {
    match cause {
        1 => "Unallocated (unassigned) number",
        3 => "No route to destination",
        16 => "Normal Clearing",
        17 => "User busy",
        18 => "No user responding",
        19 => "User alerting, no answer",
        20 => "Subscriber absent",
        21 => "Call Rejected",
        27 => "Destination out of order",
        31 => "Normal, unspecified",
        34 => "Circuit/channel congestion",
        38 => "Network out of order",
        41 => "Temporary failure",
        42 => "Switching equipment congestion",
        44 => "Requested channel not available",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_digit_picks_the_phone() {
        assert_eq!(Outcome::for_number("79001112230"), Outcome::Busy);
        assert_eq!(Outcome::for_number("79001112239"), Outcome::NoAnswer);
        assert_eq!(Outcome::for_number("79001112238"), Outcome::Congestion);
        assert_eq!(Outcome::for_number("79001112236"), Outcome::Reject);
        assert_eq!(Outcome::for_number("79001112233"), Outcome::Answer);
        assert_eq!(Outcome::for_number(""), Outcome::Answer);
    }
}
