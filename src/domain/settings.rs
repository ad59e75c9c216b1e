//! A tenant's PBX settings, validated field by field (a 422 names the field), and the dial strings
//! they produce for an originate.

use serde::{Deserialize, Serialize};

use super::phone::{self, PhoneNumber};

/// How numbers are written for the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialFormat {
    /// `+79161234567`
    E164,
    /// `79161234567` (what most Russian trunks and the model product use)
    Digits,
    /// `89161234567` for RU/KZ, national significant number elsewhere.
    National,
}

impl DialFormat {
    pub fn render(self, number: &PhoneNumber) -> String {
        match self {
            DialFormat::E164 => number.e164.clone(),
            DialFormat::Digits => number.e164.trim_start_matches('+').to_owned(),
            DialFormat::National if number.country_code == 7 => format!("8{}", number.national),
            DialFormat::National => number.national.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationPolicy {
    /// A courier may only call a number of an active order assigned to them.
    Orders,
    /// Any number that passes the country and number-type allow-list.
    Allowlist,
}

/// The settings as stored and returned (the secret is kept apart, encrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbxSettings {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca_pem: Option<String>,
    pub username: String,
    /// How leg 1 is dialled: `PJSIP/{NUMBER}@trunk`, or legacy `SIP/trunk` (appends `/NUMBER`).
    pub channel_template: String,
    pub context: String,
    #[serde(default)]
    pub office_extension: Option<String>,
    #[serde(default)]
    pub office_phone: Option<String>,
    #[serde(default)]
    pub courier_prefix: String,
    #[serde(default)]
    pub client_prefix: String,
    #[serde(default)]
    pub caller_id: Option<String>,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default = "default_dial_format")]
    pub dial_format: DialFormat,
    #[serde(default = "default_originate_timeout")]
    pub originate_timeout_s: u32,
    #[serde(default = "default_policy")]
    pub destination_policy: DestinationPolicy,
    #[serde(default = "default_countries")]
    pub allowed_countries: Vec<String>,
    /// When the PBX cannot place a client call, may the app dial the client directly?
    #[serde(default)]
    pub allow_direct_dial: bool,
}

fn default_port() -> u16 {
    5038
}
fn default_region() -> String {
    "RU".into()
}
fn default_dial_format() -> DialFormat {
    DialFormat::Digits
}
fn default_originate_timeout() -> u32 {
    30
}
fn default_policy() -> DestinationPolicy {
    DestinationPolicy::Orders
}
fn default_countries() -> Vec<String> {
    vec!["RU".into(), "KZ".into()]
}

/// A settings field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

/// Refuses CR, LF and NUL (and other control characters) in any text that may reach AMI.
pub fn check_text(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.chars().any(|c| c.is_control()) {
        return Err(bad(field, format!("{field} must not contain control characters (CR, LF, NUL, ...)")));
    }
    Ok(())
}

fn check_token(field: &'static str, value: &str, what: &str) -> Result<(), FieldError> {
    check_text(field, value)?;
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(bad(field, format!("{field} must be {what}: letters, digits, '-', '_' or '.', no spaces")));
    }
    Ok(())
}

fn check_digits(field: &'static str, value: &str, allow_empty: bool) -> Result<(), FieldError> {
    check_text(field, value)?;
    if (!allow_empty && value.is_empty())
        || value.len() > 20
        || !value.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#')
    {
        return Err(bad(field, format!("{field} must be digits (or * and #), at most 20")));
    }
    Ok(())
}

const TECHNOLOGIES: &[&str] = &["PJSIP", "SIP", "IAX2", "DAHDI", "Local", "Motif", "Skinny", "UNISTIM", "OOH323"];

/// Renders a channel from the template: `{NUMBER}` is substituted; a template without the
/// placeholder is the legacy `TECH/trunk` form that gets `/NUMBER` appended.
pub fn render_channel(template: &str, number: &str) -> String {
    if template.contains("{NUMBER}") {
        template.replace("{NUMBER}", number)
    } else {
        format!("{template}/{number}")
    }
}

fn check_template(value: &str) -> Result<(), FieldError> {
    const F: &str = "channel_template";
    check_text(F, value)?;
    let Some((tech, rest)) = value.split_once('/') else {
        return Err(bad(F, "channel_template needs a technology, e.g. PJSIP/{NUMBER}@trunk"));
    };
    if !TECHNOLOGIES.iter().any(|t| t.eq_ignore_ascii_case(tech)) {
        return Err(bad(F, format!("unknown channel technology {tech:?}; use one of {}", TECHNOLOGIES.join(", "))));
    }
    if rest.is_empty() || value.chars().any(|c| c.is_whitespace() || c == ',' || c == '&') {
        return Err(bad(F, "channel_template must name a trunk or endpoint, without spaces, ',' or '&'"));
    }
    if value.matches("{NUMBER}").count() > 1 || (value.contains('{') && !value.contains("{NUMBER}")) {
        return Err(bad(F, "the only placeholder is {NUMBER}, used once"));
    }
    Ok(())
}

impl PbxSettings {
    /// Checks every field; the first problem is returned with its field name.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.host.is_empty()
            || self.host.len() > 253
            || !self.host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            return Err(bad("host", "host must be a host name or IP address"));
        }
        if self.port == 0 {
            return Err(bad("port", "port must be 1-65535 (AMI: 5038, TLS: 5039)"));
        }
        if let Some(pem) = &self.ca_pem {
            if pem.contains('\0') || !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(bad("ca_pem", "ca_pem must be a PEM certificate (-----BEGIN CERTIFICATE-----)"));
            }
        }
        check_token("username", &self.username, "an AMI user name")?;
        check_template(&self.channel_template)?;
        check_token("context", &self.context, "a dialplan context name")?;
        if let Some(ext) = &self.office_extension {
            check_digits("office_extension", ext, false)?;
        }
        if let Some(phone) = &self.office_phone {
            check_text("office_phone", phone)?;
            phone::parse(phone, &self.default_region)
                .map_err(|e| bad("office_phone", format!("office_phone is not a valid number: {e}")))?;
        }
        check_digits("courier_prefix", &self.courier_prefix, true)?;
        check_digits("client_prefix", &self.client_prefix, true)?;
        if let Some(cid) = &self.caller_id {
            check_text("caller_id", cid)?;
            if cid.len() > 80 || cid.contains(',') {
                return Err(bad("caller_id", "caller_id must be at most 80 characters without commas"));
            }
        }
        if phonenumber::metadata::DATABASE.by_id(self.default_region.as_str()).is_none() {
            return Err(bad("default_region", "default_region must be an ISO country code such as RU or KZ"));
        }
        if !(5..=120).contains(&self.originate_timeout_s) {
            return Err(bad("originate_timeout_s", "originate_timeout_s must be 5-120 seconds"));
        }
        if self.allowed_countries.is_empty() {
            return Err(bad("allowed_countries", "allowed_countries must name at least one country"));
        }
        for c in &self.allowed_countries {
            if c.len() != 2 || phonenumber::metadata::DATABASE.by_id(c.as_str()).is_none() {
                return Err(bad("allowed_countries", format!("{c:?} is not a known ISO country code")));
            }
        }
        Ok(())
    }

    /// The office city phone in E.164, for the fallback.
    pub fn office_phone_e164(&self) -> Option<String> {
        self.office_phone.as_deref().and_then(|p| phone::parse(p, &self.default_region).ok()).map(|p| p.e164)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> PbxSettings {
        serde_json::from_value(serde_json::json!({
            "host": "127.0.0.1", "port": 5038, "tls": false, "username": "dialback",
            "channel_template": "PJSIP/{NUMBER}@trunk", "context": "from-courier",
            "office_extension": "101", "office_phone": "+74951234567", "caller_id": "+74951234567"
        }))
        .unwrap()
    }

    #[test]
    fn sample_settings_are_valid_with_defaults() {
        let s = sample();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.destination_policy, DestinationPolicy::Orders);
        assert_eq!(s.allowed_countries, ["RU", "KZ"]);
    }

    #[test]
    fn every_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut PbxSettings)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("channel_template", Box::new(|s| s.channel_template = "trunk".into())),
            ("channel_template", Box::new(|s| s.channel_template = "Foo/x".into())),
            ("context", Box::new(|s| s.context = "from courier".into())),
            ("context", Box::new(|s| s.context = "from-courier\r\nExten: 1".into())),
            ("office_phone", Box::new(|s| s.office_phone = Some("12".into()))),
            ("caller_id", Box::new(|s| s.caller_id = Some("x\0".into()))),
            ("host", Box::new(|s| s.host = "a b".into())),
            ("client_prefix", Box::new(|s| s.client_prefix = "9\n".into())),
            ("username", Box::new(|s| s.username = "a\rb".into())),
            ("allowed_countries", Box::new(|s| s.allowed_countries = vec!["XX".into()])),
        ];
        for (field, mutate) in cases {
            let mut s = sample();
            mutate(&mut s);
            assert_eq!(s.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn templates_render_both_forms() {
        assert_eq!(render_channel("PJSIP/{NUMBER}@trunk", "79001112233"), "PJSIP/79001112233@trunk");
        assert_eq!(render_channel("SIP/trunk", "79001112233"), "SIP/trunk/79001112233");
    }

    #[test]
    fn dial_formats() {
        let n = phone::parse("+79161234567", "RU").unwrap();
        assert_eq!(DialFormat::E164.render(&n), "+79161234567");
        assert_eq!(DialFormat::Digits.render(&n), "79161234567");
        assert_eq!(DialFormat::National.render(&n), "89161234567");
    }
}
