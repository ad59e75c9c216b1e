//! A call recording: how a company's PBX names and files it (the file-name pattern, a regular
//! expression with named groups, and the optional date subdirectories), what a name says for
//! binding it to its call (the call id, the numbers, the time), and where its download stands.

use regex::{Regex, RegexBuilder};
use strum::{EnumString, IntoStaticStr, VariantArray};
use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};
use uuid::Uuid;

/// FreePBX names (`out-<exten>-<src>-<YYYYMMDD>-<HHMMSS>-<uniqueid>.wav`, also `in-`, `exten-`,
/// `q-`, ...) and plain `<uniqueid>.wav` (the reference dialplan's `MixMonitor(${UNIQUEID}.wav)`).
pub const DEFAULT_PATTERN: &str = r"(?:(?:out|in|exten|external|internal|q|rg|force|ondemand)-(?P<exten>[^-]*)-(?P<src>[^-]*)-(?P<date>\d{8})-(?P<time>\d{6})-)?(?P<uniqueid>[^/]+?)\.(?:wav|WAV|mp3|ogg|gsm)";

/// The groups a pattern may name. The first three may carry the callback id (dialback sets the
/// call's ChannelId, so Asterisk's `${UNIQUEID}` and `${LINKEDID}` are the callback id, and
/// `DIALBACK_CALL_ID` is too); the others bind by numbers and time.
const GROUPS: &[&str] = &["uniqueid", "linkedid", "call_id", "exten", "src", "date", "time"];
const ID_GROUPS: &[&str] = &["uniqueid", "linkedid", "call_id"];

/// A compiled file-name pattern, anchored at both ends of the name.
#[derive(Debug, Clone)]
pub struct NamePattern(Regex);

/// What a file name says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameFields {
    /// The callback id in the name, and the group that carried it.
    pub call_ref: Option<(Uuid, &'static str)>,
    /// The dialled number (digits only).
    pub exten: Option<String>,
    /// The caller's number (digits only).
    pub src: Option<String>,
    /// When the recording started, from the name's date and time in the PBX's clock.
    pub recorded_at: Option<OffsetDateTime>,
}

impl NamePattern {
    /// Compiles `pattern`; the error says what is wrong in words an admin can act on.
    pub fn compile(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() || pattern.len() > 512 {
            return Err("must be a regular expression of 1-512 characters".into());
        }
        let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("is not a valid regular expression: {e}"))?;
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        if let Some(unknown) = names.iter().find(|n| !GROUPS.contains(n)) {
            return Err(format!("names an unknown group {unknown:?}; the groups are {}", GROUPS.join(", ")));
        }
        if !names.iter().any(|n| ID_GROUPS.contains(n) || *n == "exten" || *n == "src") {
            return Err("must name a group that identifies the call: uniqueid, linkedid, call_id, exten or src".into());
        }
        Ok(Self(regex))
    }

    /// Reads a file name; `None` when the name does not match (the file is not a recording).
    pub fn parse(&self, file_name: &str, pbx_clock: UtcOffset) -> Option<NameFields> {
        let caps = self.0.captures(file_name)?;
        let group = |name: &str| caps.name(name).map(|m| m.as_str()).filter(|s| !s.is_empty());
        let call_ref = ID_GROUPS.iter().find_map(|&name| group(name).and_then(leading_uuid).map(|id| (id, name)));
        let digits = |name: &str| {
            group(name).map(|s| s.chars().filter(char::is_ascii_digit).collect::<String>()).filter(|d| !d.is_empty())
        };
        let recorded_at = match (digits("date"), digits("time")) {
            (Some(date), Some(time)) => {
                local_time(&date, &time).map(|t| t.assume_offset(pbx_clock).to_offset(UtcOffset::UTC))
            }
            _ => None,
        };
        Some(NameFields { call_ref, exten: digits("exten"), src: digits("src"), recorded_at })
    }
}

/// A uuid at the start of `value`, ending there or followed by a separator (Asterisk may suffix a
/// channel's id, e.g. `;2` for the second half of a Local channel).
fn leading_uuid(value: &str) -> Option<Uuid> {
    let head = value.get(..36)?;
    let rest = &value[36..];
    if rest.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Uuid::try_parse(head).ok().filter(|_| head.contains('-'))
}

fn local_time(date: &str, time: &str) -> Option<PrimitiveDateTime> {
    if date.len() != 8 || time.len() != 6 {
        return None;
    }
    let n = |s: &str| s.parse::<u16>().ok();
    let month = time::Month::try_from(n(&date[4..6])? as u8).ok()?;
    let day = Date::from_calendar_date(n(&date[..4])? as i32, month, n(&date[6..])? as u8).ok()?;
    let at = Time::from_hms(n(&time[..2])? as u8, n(&time[2..4])? as u8, n(&time[4..])? as u8).ok()?;
    Some(PrimitiveDateTime::new(day, at))
}

/// Date subdirectories such as `YYYY/MM/DD` (FreePBX's layout) or `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateSubdirs(String);

impl DateSubdirs {
    pub fn parse(template: &str) -> Result<Self, String> {
        let tokens_only = template.replace("YYYY", "").replace("MM", "").replace("DD", "");
        let well_formed = !template.is_empty()
            && template.len() <= 64
            && template.split('/').all(|segment| ["YYYY", "MM", "DD"].iter().any(|t| segment.contains(t)))
            && tokens_only.chars().all(|c| "/-_.".contains(c))
            && template.contains("YYYY");
        if !well_formed {
            return Err("must be made of YYYY, MM and DD separated by '/', '-', '_' or '.', e.g. YYYY/MM/DD".into());
        }
        Ok(Self(template.to_owned()))
    }

    pub fn render(&self, date: Date) -> String {
        self.0
            .replace("YYYY", &format!("{:04}", date.year()))
            .replace("MM", &format!("{:02}", date.month() as u8))
            .replace("DD", &format!("{:02}", date.day()))
    }

    /// The subdirectories that can hold recordings of the last `hours` on a PBX whose clock is
    /// `pbx_clock`, oldest first (one day more at the end, for a PBX clock running ahead).
    pub fn recent(&self, now: OffsetDateTime, hours: u32, pbx_clock: UtcOffset) -> Vec<String> {
        let local = now.to_offset(pbx_clock);
        let mut day = (local - Duration::hours(i64::from(hours))).date();
        let last = local.date().next_day().unwrap_or(local.date());
        let mut dirs = Vec::new();
        while day <= last {
            let dir = self.render(day);
            if dirs.last() != Some(&dir) {
                dirs.push(dir);
            }
            match day.next_day() {
                Some(next) => day = next,
                None => break,
            }
        }
        dirs
    }
}

/// Where a recording file's download stands (its row in `recordings` is the only record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Listed, not downloaded yet.
    Pending,
    /// A run has claimed it and is downloading it.
    Fetching,
    /// Downloaded, byte for byte.
    Stored,
    /// The last download failed; it is tried again later (or never, after too many attempts).
    Failed,
    /// Being deleted (retention, or an admin): no longer served; its object may still exist.
    Deleting,
    /// Deleted from storage; the row stays so the journal says why and the file is not fetched again.
    Deleted,
}

/// The media type of a recording, from its extension.
pub fn content_type(file_name: &str) -> &'static str {
    let extension = file_name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "gsm" => "audio/x-gsm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime, offset};

    fn default() -> NamePattern {
        NamePattern::compile(DEFAULT_PATTERN).unwrap()
    }

    #[test]
    fn freepbx_names_give_numbers_time_and_the_callback_id() {
        let id = "01a20274-72fb-70cd-a040-3db2fb072bd8";
        let name = format!("out-79161234567-+74951234567-20261122-101500-{id}.wav");
        let fields = default().parse(&name, offset!(+3)).unwrap();
        assert_eq!(fields.call_ref, Some((Uuid::parse_str(id).unwrap(), "uniqueid")));
        assert_eq!(fields.exten.as_deref(), Some("79161234567"));
        assert_eq!(fields.src.as_deref(), Some("74951234567"));
        assert_eq!(fields.recorded_at, Some(datetime!(2026-11-22 07:15:00 UTC)));
    }

    #[test]
    fn asterisk_uniqueids_and_plain_names_are_read_too() {
        let fields = default().parse("out-79161234567-74951234567-20261122-101500-1795335228.6.wav", UtcOffset::UTC);
        let fields = fields.unwrap();
        assert_eq!(fields.call_ref, None, "an Asterisk uniqueid is not a callback id");
        assert_eq!(fields.exten.as_deref(), Some("79161234567"));
        let plain = default().parse("01a20274-72fb-70cd-a040-3db2fb072bd8.wav", UtcOffset::UTC).unwrap();
        assert!(plain.call_ref.is_some() && plain.exten.is_none() && plain.recorded_at.is_none());
        let local_half = default().parse("01a20274-72fb-70cd-a040-3db2fb072bd8;2.wav", UtcOffset::UTC).unwrap();
        assert!(local_half.call_ref.is_some());
    }

    #[test]
    fn other_files_do_not_match() {
        for name in ["notes.txt", ".out-1-2-20261122-101500-x.wav.part", "a/b.wav", "x.wav.tmp"] {
            assert_eq!(default().parse(name, UtcOffset::UTC), None, "{name}");
        }
    }

    #[test]
    fn a_custom_pattern_may_carry_dialback_call_id() {
        let p = NamePattern::compile(r"cb_(?P<call_id>[0-9a-f-]{36})_(?P<exten>\d+)\.wav").unwrap();
        let fields = p.parse("cb_01a20274-72fb-70cd-a040-3db2fb072bd8_79161234567.wav", UtcOffset::UTC).unwrap();
        assert_eq!(fields.call_ref.unwrap().1, "call_id");
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert!(NamePattern::compile("(").unwrap_err().contains("regular expression"));
        assert!(NamePattern::compile("(?P<who>.*)").unwrap_err().contains("unknown group"));
        assert!(NamePattern::compile(r"(?P<date>\d{8})\.wav").unwrap_err().contains("identifies the call"));
        assert!(NamePattern::compile("").is_err());
    }

    #[test]
    fn date_subdirectories_cover_the_window_in_the_pbx_clock() {
        let dirs = DateSubdirs::parse("YYYY/MM/DD").unwrap();
        assert_eq!(dirs.render(date!(2026 - 03 - 07)), "2026/03/07");
        let now = datetime!(2026-11-22 22:30 UTC);
        assert_eq!(dirs.recent(now, 24, offset!(+3)), ["2026/11/22", "2026/11/23", "2026/11/24"]);
        assert_eq!(DateSubdirs::parse("YYYY-MM-DD").unwrap().render(date!(2026 - 01 - 02)), "2026-01-02");
        for bad in ["", "/YYYY", "YYYY//MM", "MM/DD", "YYYY/../DD", "YYYY/MM/DD x"] {
            assert!(DateSubdirs::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("a.WAV"), "audio/wav");
        assert_eq!(content_type("a.mp3"), "audio/mpeg");
        assert_eq!(content_type("a"), "application/octet-stream");
    }
}
