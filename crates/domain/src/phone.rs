//! Phone numbers: normalisation to E.164 and classification (country, number type).
//!
//! `phonenumber` 0.3.10 drops the leading 8 of RU national numbers (`+7 809 ...` parses as
//! `+7091234567`, upstream issue #76), which would hide premium 803/809 and toll-free 800 numbers.
//! So +7 numbers are split by hand (always 10 national digits), and every number is classified
//! with the library's metadata descriptors rather than through `parse`.

use phonenumber::metadata::{Metadata, DATABASE};
use phonenumber::Type;

/// A valid number in E.164 with its country and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    /// `+79161234567`
    pub e164: String,
    pub country_code: u16,
    /// The national significant number: `9161234567`.
    pub national: String,
    /// ISO region (`RU`, `KZ`), or `001` for international networks (+881/+882/+883/+888).
    pub region: String,
    pub kind: NumberKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberKind {
    Mobile,
    FixedLine,
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    Voip,
    PersonalNumber,
    Pager,
    Uan,
    Voicemail,
}

impl NumberKind {
    /// Ordinary numbers a courier may be connected to; everything else is refused.
    pub fn is_ordinary(self) -> bool {
        matches!(self, NumberKind::Mobile | NumberKind::FixedLine | NumberKind::FixedLineOrMobile)
    }

    pub fn describe(self) -> &'static str {
        match self {
            NumberKind::Mobile => "a mobile number",
            NumberKind::FixedLine => "a fixed-line number",
            NumberKind::FixedLineOrMobile => "a fixed-line or mobile number",
            NumberKind::TollFree => "a toll-free (8-800) number",
            NumberKind::PremiumRate => "a premium-rate number",
            NumberKind::SharedCost => "a shared-cost number",
            NumberKind::Voip => "a VoIP number",
            NumberKind::PersonalNumber => "a personal-number service",
            NumberKind::Pager => "a pager number",
            NumberKind::Uan => "a universal access number",
            NumberKind::Voicemail => "a voicemail number",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the number contains characters other than digits, spaces, '+', '(', ')', '-' and '.'")]
    BadCharacters,
    #[error("the number is empty")]
    Empty,
    #[error("the number is too short or too long to be a phone number")]
    BadLength,
    #[error("no country has calling code +{0}")]
    UnknownCountryCode(String),
    #[error("{0} is not a valid phone number in any country with that code")]
    Invalid(String),
    #[error("the default region {0:?} is unknown")]
    UnknownRegion(String),
}

/// Order matters: a number matching a costly type is that type even if it also looks mobile.
const KINDS: &[(Type, NumberKind)] = &[
    (Type::PremiumRate, NumberKind::PremiumRate),
    (Type::TollFree, NumberKind::TollFree),
    (Type::SharedCost, NumberKind::SharedCost),
    (Type::Voip, NumberKind::Voip),
    (Type::PersonalNumber, NumberKind::PersonalNumber),
    (Type::Uan, NumberKind::Uan),
    (Type::Pager, NumberKind::Pager),
    (Type::Voicemail, NumberKind::Voicemail),
    (Type::Mobile, NumberKind::Mobile),
    (Type::FixedLine, NumberKind::FixedLine),
];

/// The descriptors of one region: which type a national number is, if it is valid there.
fn classify_in(meta: &Metadata, national: &str) -> Option<NumberKind> {
    let d = meta.descriptors();
    if !d.general().is_match(national) {
        return None;
    }
    let mut found =
        KINDS.iter().filter(|(t, _)| d.get(*t).is_some_and(|desc| desc.is_match(national))).map(|(_, k)| *k);
    let first = found.next()?;
    // libphonenumber's rule: a number matching both fixed-line and mobile is "fixed line or mobile".
    if first == NumberKind::Mobile && found.any(|k| k == NumberKind::FixedLine) {
        return Some(NumberKind::FixedLineOrMobile);
    }
    Some(first)
}

fn classify(country_code: u16, national: &str) -> Result<PhoneNumber, PhoneError> {
    let regions =
        DATABASE.by_code(&country_code).ok_or_else(|| PhoneError::UnknownCountryCode(country_code.to_string()))?;
    let e164 = format!("+{country_code}{national}");
    for meta in regions {
        if let Some(kind) = classify_in(meta, national) {
            return Ok(PhoneNumber {
                e164,
                country_code,
                national: national.to_owned(),
                region: meta.id().to_owned(),
                kind,
            });
        }
    }
    Err(PhoneError::Invalid(e164))
}

/// Splits full international digits (no `+`) into a known calling code and the rest.
fn split_country_code(digits: &str) -> Result<(u16, &str), PhoneError> {
    for len in 1..=3.min(digits.len()) {
        let code: u16 = digits[..len].parse().map_err(|_| PhoneError::BadCharacters)?;
        if DATABASE.by_code(&code).is_some() {
            return Ok((code, &digits[len..]));
        }
    }
    Err(PhoneError::UnknownCountryCode(digits.chars().take(3).collect()))
}

/// Reads what a person typed (`8 (916) 123-45-67`, `+7 916 123 45 67`, `9161234567`) as a number,
/// with `default_region` (ISO code, e.g. `RU`) for national input.
pub fn parse(input: &str, default_region: &str) -> Result<PhoneNumber, PhoneError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(PhoneError::Empty);
    }
    let (plus, rest) = match trimmed.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    if !rest.chars().all(|c| c.is_ascii_digit() || " ()-.".contains(c)) {
        return Err(PhoneError::BadCharacters);
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 3 || digits.len() > 15 {
        return Err(PhoneError::BadLength);
    }
    let international = if plus { Some(digits.as_str()) } else { digits.strip_prefix("00") };
    if let Some(intl) = international {
        let (code, national) = split_country_code(intl)?;
        return classify(code, national);
    }
    let region = DATABASE.by_id(default_region).ok_or_else(|| PhoneError::UnknownRegion(default_region.to_owned()))?;
    let code = region.country_code();
    if code == 7 {
        // RU/KZ: `8` or `7` + 10 digits, or the bare 10 national digits.
        return match digits.len() {
            11 if digits.starts_with('8') || digits.starts_with('7') => classify(7, &digits[1..]),
            10 => classify(7, &digits),
            _ => Err(PhoneError::BadLength),
        };
    }
    let national = match region.national_prefix() {
        Some(prefix) if digits.starts_with(prefix) && classify(code, &digits).is_err() => &digits[prefix.len()..],
        _ => digits.as_str(),
    };
    classify(code, national)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(input: &str) -> String {
        parse(input, "RU").unwrap().e164
    }

    #[test]
    fn russian_national_and_international_forms_mean_the_same_number() {
        for input in
            ["8 (916) 123-45-67", "+7 916 123 45 67", "9161234567", "79161234567", "+79161234567", "8-916-123-45-67"]
        {
            assert_eq!(e164(input), "+79161234567", "{input}");
        }
        let n = parse("8 916 123 45 67", "RU").unwrap();
        assert_eq!((n.region.as_str(), n.kind), ("RU", NumberKind::Mobile));
    }

    #[test]
    fn kazakh_numbers_under_plus_seven_are_recognised() {
        let n = parse("+7 701 123 45 67", "RU").unwrap();
        assert_eq!(n.region, "KZ");
        assert_eq!(n.kind, NumberKind::Mobile);
    }

    #[test]
    fn russian_8xx_numbers_keep_their_8_and_are_classified() {
        // Pinned against phonenumber 0.3.10's bug (#76), which turns these into +7005553535 etc.
        let toll_free = parse("8 800 555 35 35", "RU").unwrap();
        assert_eq!(toll_free.e164, "+78005553535");
        assert_eq!(toll_free.kind, NumberKind::TollFree);
        let premium = parse("+7 809 123 45 67", "RU").unwrap();
        assert_eq!(premium.e164, "+78091234567");
        assert_eq!(premium.kind, NumberKind::PremiumRate);
        assert_eq!(parse("8 803 123 45 67", "RU").unwrap().kind, NumberKind::PremiumRate);
    }

    #[test]
    fn moscow_fixed_line_numbers_are_fixed_line() {
        let n = parse("+7 495 123 45 67", "RU").unwrap();
        assert_eq!(n.kind, NumberKind::FixedLine);
    }

    #[test]
    fn satellite_and_international_networks_are_region_001() {
        let n = parse("+881 6 1234 5678", "RU");
        assert!(n.is_err() || n.unwrap().region == "001");
    }

    #[test]
    fn junk_is_refused_with_a_reason() {
        assert_eq!(parse("", "RU"), Err(PhoneError::Empty));
        assert_eq!(parse("12", "RU"), Err(PhoneError::BadLength));
        assert_eq!(parse("+7916\r\n1234567", "RU"), Err(PhoneError::BadCharacters));
        assert_eq!(parse("call me", "RU"), Err(PhoneError::BadCharacters));
        assert!(parse("+7 000 000 00 00", "RU").is_err());
        assert!(parse("112", "RU").is_err(), "short codes are not numbers");
    }

    #[test]
    fn other_regions_use_their_national_prefix() {
        let n = parse("+49 30 1234567", "RU").unwrap();
        assert_eq!(n.region, "DE");
        assert_eq!(parse("030 1234567", "DE").unwrap().e164, "+49301234567");
    }
}
