//! A tenant's PBX settings, validated field by field (a 422 names the field), and the dial strings
//! they produce for an originate.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use super::phone::{self, PhoneNumber};
use super::{bad, check_text, FieldError};

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

/// Whether the courier must confirm their answer (press 1) before leg 2 rings: a voicemail or a
/// carrier's "subscriber unavailable" recording answers a call just like a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmAnswer {
    /// Leg 2 rings as soon as the courier's phone answers.
    Off,
    /// The courier hears a beep and presses 1 within the timeout; no key, no leg 2.
    Dtmf,
}

/// How dialback carries its AMI session to the PBX.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AmiTransport {
    /// The AMI port (`manager.conf` `port`, 5038).
    #[default]
    Tcp,
    /// The AMI port over TLS (`manager.conf` `tlsbindaddr`, 5039).
    Tls,
    /// Asterisk's HTTP server (`http.conf`, 8088; `manager.conf` `webenabled = yes`).
    Http,
    /// Asterisk's HTTP server over TLS (`http.conf` `tlsenable`, 8089), or an HTTPS reverse proxy.
    Https,
}

impl AmiTransport {
    pub fn encrypted(self) -> bool {
        matches!(self, AmiTransport::Tls | AmiTransport::Https)
    }

    pub fn over_http(self) -> bool {
        matches!(self, AmiTransport::Http | AmiTransport::Https)
    }

    /// Asterisk's default port for it.
    pub fn default_port(self) -> u16 {
        match self {
            AmiTransport::Tcp => 5038,
            AmiTransport::Tls => 5039,
            AmiTransport::Http => 8088,
            AmiTransport::Https => 8089,
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
///
/// The PBX part (`host`, `username`, `channel_template`, `context`) is given whole or not at all:
/// a company without telephony still saves its office city number, which couriers then dial over
/// cellular. An absent part is an empty string here and missing in the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbxSettings {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub transport: AmiTransport,
    /// Whether the transport is encrypted (`tls` or `https`): what older clients sent and read
    /// before `transport` existed; the settings input (src/http/settings_input.rs) keeps the two in agreement.
    #[serde(default)]
    pub tls: bool,
    /// `http.conf` `prefix` for `http`/`https` (e.g. `asterisk`: `/asterisk/rawman`); empty: none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub http_prefix: String,
    #[serde(default)]
    pub ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// How leg 1 is dialled: `PJSIP/{NUMBER}@trunk`, or legacy `SIP/trunk` (appends `/NUMBER`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel_template: String,
    /// The context dialback's dialplan runs leg 2 in ([`DEFAULT_CONTEXT`] unless given): a name no
    /// other dialplan of the PBX uses, or the older definition shadows dialback's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub context: String,
    /// The context the PBX's own extensions are dialled in (the office extension, from the
    /// generated dialplan): FreePBX's `from-internal`, or the company's.
    #[serde(default = "default_internal_context")]
    pub internal_context: String,
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
    /// Answer confirmation on leg 1 (the dialplan asks; see `domain::dialplan`).
    #[serde(default = "confirm_off")]
    pub confirm_courier_answer: ConfirmAnswer,
    /// How long the courier has to press 1, in seconds.
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout_s: u32,
    /// Where dialback fetches the call recordings from (none: recordings are not fetched).
    #[serde(default)]
    pub recordings: Option<RecordingsSource>,
}

/// How dialback reaches the PBX's recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecordingsProtocol {
    /// FTP, or explicit FTPS with `ftps: true`.
    #[default]
    Ftp,
    /// SFTP over SSH, the server's host key pinned in `host_key`.
    Sftp,
}

impl RecordingsProtocol {
    pub fn default_port(self) -> u16 {
        match self {
            RecordingsProtocol::Ftp => 21,
            RecordingsProtocol::Sftp => 22,
        }
    }
}

/// The company's recordings on its FTP or SFTP server. The password (or SSH private key) is kept
/// apart, encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsSource {
    #[serde(default)]
    pub protocol: RecordingsProtocol,
    pub host: String,
    #[serde(default = "default_ftp_port")]
    pub port: u16,
    /// SFTP: the server's host key fingerprint as `ssh-keygen -lf` prints it (`SHA256:...`); a
    /// server presenting another key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Explicit FTPS: `AUTH TLS` on the FTP port, then the control and data connections encrypted.
    #[serde(default)]
    pub ftps: bool,
    /// PEM of the CA that signed the FTP server's certificate (without it, the system roots).
    #[serde(default)]
    pub ca_pem: Option<String>,
    pub username: String,
    /// The recordings directory as the FTP user sees it.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// Date subdirectories under `directory`, e.g. `YYYY/MM/DD` (FreePBX); none: files are directly in it.
    #[serde(default)]
    pub date_subdirs: Option<String>,
    /// A regular expression with named groups (uniqueid, linkedid, call_id, exten, src, date, time)
    /// matching a whole file name; files that do not match are not recordings.
    #[serde(default = "default_filename_pattern")]
    pub filename_pattern: String,
    /// The PBX clock's offset from UTC in minutes, for the date and time in file names and
    /// subdirectories (FreePBX writes local time).
    #[serde(default)]
    pub utc_offset_min: i16,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_s: u32,
    /// How long after a call dialback keeps looking for its recording; older files are ignored.
    #[serde(default = "default_keep_looking")]
    pub keep_looking_h: u32,
    /// Recordings older than this many days (by the time in their name, else when first seen) are
    /// deleted from storage; none: kept until an admin deletes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

fn default_ftp_port() -> u16 {
    21
}
fn default_directory() -> String {
    "/".into()
}
fn default_filename_pattern() -> String {
    super::recording::DEFAULT_PATTERN.into()
}
fn default_poll_interval() -> u32 {
    60
}
fn default_keep_looking() -> u32 {
    48
}

fn default_port() -> u16 {
    5038
}
/// The leg-2 context when none is given: named so that it cannot be a context an existing
/// installation already has (an older `from-courier` would shadow dialback's).
pub const DEFAULT_CONTEXT: &str = "dialback-courier";

fn default_internal_context() -> String {
    "from-internal".into()
}
fn confirm_off() -> ConfirmAnswer {
    ConfirmAnswer::Off
}
fn default_confirm_timeout() -> u32 {
    5
}
/// How national numbers are read when a company has not said (Russia: the market this began in).
pub fn default_region() -> String {
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
    // Any technology Asterisk may have loaded (PJSIP, IAX2, DAHDI, Local, Dongle for GSM gateways,
    // ...): only its shape is checked here; the Test button finds out whether Asterisk knows it.
    let tech_shaped = tech.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && tech.len() <= 32
        && tech.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !tech_shaped {
        return Err(bad(
            F,
            format!("{tech:?} is not a channel technology name (letters, digits and '_', e.g. PJSIP or Dongle)"),
        ));
    }
    if rest.is_empty() || value.chars().any(|c| c.is_whitespace() || c == ',' || c == '&') {
        return Err(bad(F, "channel_template must name a trunk or endpoint, without spaces, ',' or '&'"));
    }
    if value.matches("{NUMBER}").count() > 1 || (value.contains('{') && !value.contains("{NUMBER}")) {
        return Err(bad(F, "the only placeholder is {NUMBER}, used once"));
    }
    Ok(())
}

fn check_host(field: &'static str, host: &str) -> Result<(), FieldError> {
    if host.is_empty() || host.len() > 253 || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) {
        return Err(bad(field, format!("{field} must be a host name or IP address")));
    }
    Ok(())
}

fn check_pem(field: &'static str, pem: &Option<String>) -> Result<(), FieldError> {
    match pem {
        Some(pem) if pem.contains('\0') || !pem.contains("-----BEGIN CERTIFICATE-----") => {
            Err(bad(field, format!("{field} must be a PEM certificate (-----BEGIN CERTIFICATE-----)")))
        }
        _ => Ok(()),
    }
}

/// The FTP password: printable, 1-256 characters (it is sent on the control connection).
/// An OpenSSH SHA256 fingerprint: `SHA256:` and 43 characters of unpadded base64.
fn valid_fingerprint(key: &str) -> bool {
    key.strip_prefix("SHA256:")
        .is_some_and(|b64| b64.len() == 43 && b64.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'))
}

/// An SSH private key as given for SFTP (write-only, kept like the password): OpenSSH or PEM.
pub fn check_private_key(key: &str) -> Result<(), FieldError> {
    const F: &str = "recordings.private_key";
    let key = key.trim();
    if !key.starts_with("-----BEGIN ") || !key.contains("PRIVATE KEY-----") || key.len() > 16 * 1024 {
        return Err(bad(
            F,
            "recordings.private_key must be a private key in OpenSSH or PEM form (-----BEGIN ... PRIVATE KEY-----)",
        ));
    }
    Ok(())
}

pub fn check_ftp_password(password: &str) -> Result<(), FieldError> {
    const F: &str = "recordings.password";
    check_text(F, password)?;
    if password.is_empty() || password.len() > 256 {
        return Err(bad(F, "recordings.password must be 1-256 characters"));
    }
    Ok(())
}

impl RecordingsSource {
    /// Checks every field; field names are prefixed with `recordings.`.
    pub fn validate(&self) -> Result<(), FieldError> {
        use super::recording::{DateSubdirs, NamePattern};
        check_host("recordings.host", &self.host)?;
        if self.port == 0 {
            return Err(bad("recordings.port", "recordings.port must be 1-65535 (FTP and explicit FTPS: 21)"));
        }
        check_pem("recordings.ca_pem", &self.ca_pem)?;
        if self.ca_pem.is_some() && !self.ftps {
            return Err(bad("recordings.ca_pem", "recordings.ca_pem is only used with ftps: true"));
        }
        match (self.protocol, &self.host_key) {
            (RecordingsProtocol::Sftp, None) => {
                return Err(bad(
                    "recordings.host_key",
                    "recordings.host_key is required with protocol sftp: the server's key fingerprint, as \
                     `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the PBX (SHA256:...)",
                ))
            }
            (RecordingsProtocol::Sftp, Some(key)) if !valid_fingerprint(key) => {
                return Err(bad(
                    "recordings.host_key",
                    "recordings.host_key must be a SHA256 fingerprint as `ssh-keygen -lf` prints it, e.g. \
                     SHA256:SQiFaty8BNfyGqcwidXdpzph1pVRLs7llTt/GxlKwpI",
                ))
            }
            (RecordingsProtocol::Ftp, Some(_)) => {
                return Err(bad("recordings.host_key", "recordings.host_key is only used with protocol sftp"))
            }
            _ => {}
        }
        if self.protocol == RecordingsProtocol::Sftp && self.ftps {
            return Err(bad("recordings.ftps", "recordings.ftps is for FTP; SFTP is encrypted by SSH"));
        }
        check_text("recordings.username", &self.username)?;
        if self.username.is_empty() || self.username.len() > 128 || self.username.contains(' ') {
            return Err(bad("recordings.username", "recordings.username must be 1-128 characters without spaces"));
        }
        const DIR: &str = "recordings.directory";
        check_text(DIR, &self.directory)?;
        if !self.directory.starts_with('/')
            || self.directory.len() > 1024
            || self.directory.split('/').any(|segment| segment == "..")
        {
            return Err(bad(
                DIR,
                "recordings.directory must be an absolute path such as /var/spool/asterisk/monitor, without '..'",
            ));
        }
        if let Some(subdirs) = &self.date_subdirs {
            DateSubdirs::parse(subdirs)
                .map_err(|e| bad("recordings.date_subdirs", format!("recordings.date_subdirs {e}")))?;
        }
        check_text("recordings.filename_pattern", &self.filename_pattern)?;
        NamePattern::compile(&self.filename_pattern)
            .map_err(|e| bad("recordings.filename_pattern", format!("recordings.filename_pattern {e}")))?;
        if !(-720..=840).contains(&self.utc_offset_min) {
            return Err(bad("recordings.utc_offset_min", "recordings.utc_offset_min must be -720..840 minutes"));
        }
        if !(5..=86_400).contains(&self.poll_interval_s) {
            return Err(bad("recordings.poll_interval_s", "recordings.poll_interval_s must be 5-86400 seconds"));
        }
        if !(1..=720).contains(&self.keep_looking_h) {
            return Err(bad("recordings.keep_looking_h", "recordings.keep_looking_h must be 1-720 hours"));
        }
        if self.retention_days.is_some_and(|days| !(1..=3650).contains(&days)) {
            return Err(bad(
                "recordings.retention_days",
                "recordings.retention_days must be 1-3650 days, or null to keep them",
            ));
        }
        Ok(())
    }

    /// The PBX clock, for times in file names and subdirectories.
    pub fn pbx_clock(&self) -> time::UtcOffset {
        time::UtcOffset::from_whole_seconds(i32::from(self.utc_offset_min) * 60).unwrap_or(time::UtcOffset::UTC)
    }
}

impl PbxSettings {
    /// Whether the company's PBX is configured (else couriers dial the office themselves).
    pub fn has_pbx(&self) -> bool {
        !self.host.is_empty()
    }

    /// Checks every field; the first problem is returned with its field name.
    pub fn validate(&self) -> Result<(), FieldError> {
        let pbx = [
            ("host", &self.host),
            ("username", &self.username),
            ("channel_template", &self.channel_template),
            ("context", &self.context),
        ];
        if pbx.iter().any(|(_, v)| !v.is_empty()) {
            if let Some((field, _)) = pbx.iter().find(|(_, v)| v.is_empty()) {
                return Err(bad(
                    field,
                    format!(
                        "{field} is required with the PBX: give host, username and channel_template, or none of them"
                    ),
                ));
            }
            self.validate_pbx()?;
        } else if self.recordings.is_some() {
            return Err(bad(
                "recordings",
                "recordings come from the PBX: give host, username and channel_template with them",
            ));
        } else if self.office_phone.is_none() {
            return Err(bad(
                "office_phone",
                "without a PBX the settings are the office's city number couriers dial: give office_phone (or the PBX)",
            ));
        }
        self.validate_company()
    }

    fn validate_pbx(&self) -> Result<(), FieldError> {
        check_host("host", &self.host)?;
        if self.port == 0 {
            return Err(bad("port", "port must be 1-65535 (AMI: 5038, TLS: 5039, HTTP: 8088, HTTPS: 8089)"));
        }
        if self.tls != self.transport.encrypted() {
            return Err(bad(
                "tls",
                format!("tls must be {} with transport {}", self.transport.encrypted(), self.transport.as_str()),
            ));
        }
        if !self.http_prefix.is_empty() {
            check_text("http_prefix", &self.http_prefix)?;
            let shaped = self.http_prefix.len() <= 64
                && self.http_prefix.trim_matches('/').split('/').all(|part| {
                    !part.is_empty()
                        && part != "."
                        && part != ".."
                        && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                });
            if !shaped {
                return Err(bad(
                    "http_prefix",
                    "http_prefix must be http.conf's prefix, e.g. asterisk: letters, digits, '-', '_', '.' and '/' between parts",
                ));
            }
            if !self.transport.over_http() {
                return Err(bad("http_prefix", "http_prefix is only used with transport http or https"));
            }
        }
        check_pem("ca_pem", &self.ca_pem)?;
        if self.ca_pem.is_some() && !self.transport.encrypted() {
            return Err(bad("ca_pem", "ca_pem is only used with transport tls or https"));
        }
        check_token("username", &self.username, "an AMI user name")?;
        check_template(&self.channel_template)?;
        check_token("context", &self.context, "a dialplan context name")?;
        check_token("internal_context", &self.internal_context, "a dialplan context name")?;
        if self.context == self.internal_context || self.context == crate::dialplan::INBOUND_CONTEXT {
            return Err(bad(
                "context",
                format!(
                    "context must be a context of dialback's own, not {:?} (the PBX's extensions or return calls use it): \
                     e.g. {DEFAULT_CONTEXT}",
                    self.context
                ),
            ));
        }
        Ok(())
    }

    /// What matters with or without a PBX: the office, numbers, the destination policy.
    fn validate_company(&self) -> Result<(), FieldError> {
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
        if !(2..=30).contains(&self.confirm_timeout_s) {
            return Err(bad("confirm_timeout_s", "confirm_timeout_s must be 2-30 seconds"));
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
        if let Some(recordings) = &self.recordings {
            recordings.validate()?;
        }
        Ok(())
    }

    /// The AMI secret to log in with under these settings: the one given with them, else the one
    /// stored with `stored` settings when those log in to the same server as the same user. A
    /// stored secret never goes to a server it was not given for.
    pub fn ami_secret<T>(&self, given: Option<T>, stored: Option<(&PbxSettings, T)>) -> Option<T> {
        let same_login = |s: &PbxSettings| (&s.host, s.port, &s.username) == (&self.host, self.port, &self.username);
        given.or_else(|| stored.filter(|(s, _)| same_login(s)).map(|(_, secret)| secret))
    }

    /// The FTP password of the recordings source, by the same rule as [`Self::ami_secret`]: given,
    /// or stored for the same FTP server and user.
    pub fn recordings_password<T>(&self, given: Option<T>, stored: Option<(&PbxSettings, T)>) -> Option<T> {
        let mine = self.recordings.as_ref()?;
        let same_login = |s: &PbxSettings| {
            s.recordings
                .as_ref()
                .is_some_and(|r| (&r.host, r.port, &r.username) == (&mine.host, mine.port, &mine.username))
        };
        given.or_else(|| stored.filter(|(s, _)| same_login(s)).map(|(_, password)| password))
    }

    /// The office city phone in E.164, for the fallback.
    pub fn office_phone_e164(&self) -> Option<String> {
        self.office_phone.as_deref().and_then(|p| phone::parse(p, &self.default_region).ok()).map(|p| p.e164)
    }
}

impl PbxSettings {
    /// Settings as stored, by this release or a later one (see [`super::from_stored`]).
    pub fn from_stored(mut json: serde_json::Value) -> Result<PbxSettings, serde_json::Error> {
        if let Some(recordings) = json.get_mut("recordings").filter(|r| r.is_object()) {
            let known = super::from_stored::<RecordingsSource>(recordings.take())?;
            *recordings = serde_json::to_value(known).expect("a recordings source serialises");
        }
        super::from_stored(json)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> PbxSettings {
        serde_json::from_value(serde_json::json!({
            "host": "127.0.0.1", "port": 5038, "tls": false, "username": "dialback",
            "channel_template": "PJSIP/{NUMBER}@trunk", "context": "from-courier",
            "office_extension": "101", "office_phone": "+74951234567", "caller_id": "+74951234567"
        }))
        .unwrap()
    }

    #[test]
    fn settings_stored_by_a_later_release_are_read_and_sent_ones_strictly() {
        let mut stored = serde_json::to_value(sample()).unwrap();
        stored["dialplan_flavour"] = "added later".into();
        stored["recordings"] = serde_json::json!({"host": "ftp.pbx", "username": "rec", "sftp_host_key": "later"});
        let read = PbxSettings::from_stored(stored.clone()).expect("read despite fields it does not know");
        assert_eq!((read.host.as_str(), read.recordings.unwrap().host.as_str()), ("127.0.0.1", "ftp.pbx"));
        let sent = serde_json::from_value::<PbxSettings>(stored).unwrap_err().to_string();
        assert!(sent.contains("unknown field"), "{sent}");
        assert!(super::super::struct_fields::<PbxSettings>().contains(&"internal_context"));
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
            ("channel_template", Box::new(|s| s.channel_template = "9Foo/x".into())),
            ("channel_template", Box::new(|s| s.channel_template = "PJSIP/{NUMBER}@a,b".into())),
            ("username", Box::new(|s| s.username.clear())),
            ("confirm_timeout_s", Box::new(|s| s.confirm_timeout_s = 1)),
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
        // Any technology of the right shape: the PBX, not dialback, knows which it has loaded.
        for template in ["Dongle/dongle0/{NUMBER}", "IAX2/trunk/{NUMBER}", "Foo/x"] {
            let mut s = sample();
            s.channel_template = template.into();
            assert_eq!(s.validate(), Ok(()), "{template}");
        }
    }

    fn with_recordings(fields: serde_json::Value) -> PbxSettings {
        let mut s = serde_json::to_value(sample()).unwrap();
        s["recordings"] = fields;
        serde_json::from_value(s).unwrap()
    }

    #[test]
    fn a_recordings_source_gets_defaults_and_validates() {
        let s = with_recordings(serde_json::json!({"host": "pbx.example.com", "username": "rec"}));
        let r = s.recordings.as_ref().unwrap();
        assert_eq!((r.port, r.ftps, r.directory.as_str(), r.poll_interval_s), (21, false, "/", 60));
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn every_bad_recordings_field_is_named() {
        let cases = [
            ("recordings.host", serde_json::json!({"host": "a b"})),
            ("recordings.port", serde_json::json!({"port": 0})),
            ("recordings.ca_pem", serde_json::json!({"ca_pem": "-----BEGIN CERTIFICATE-----"})),
            ("recordings.username", serde_json::json!({"username": "a\r\nUSER x"})),
            ("recordings.directory", serde_json::json!({"directory": "monitor"})),
            ("recordings.directory", serde_json::json!({"directory": "/a/../etc"})),
            ("recordings.date_subdirs", serde_json::json!({"date_subdirs": "DD/MM"})),
            ("recordings.filename_pattern", serde_json::json!({"filename_pattern": "(?P<x>.*)"})),
            ("recordings.utc_offset_min", serde_json::json!({"utc_offset_min": 900})),
            ("recordings.poll_interval_s", serde_json::json!({"poll_interval_s": 1})),
            ("recordings.keep_looking_h", serde_json::json!({"keep_looking_h": 0})),
        ];
        for (field, change) in cases {
            let mut fields = serde_json::json!({"host": "pbx", "username": "rec"});
            for (k, v) in change.as_object().unwrap() {
                fields[k] = v.clone();
            }
            assert_eq!(with_recordings(fields).validate().unwrap_err().field, field);
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

#[cfg(test)]
mod secret_tests {
    use super::tests::sample;

    #[test]
    fn a_stored_secret_is_reused_only_for_the_same_server_and_user() {
        let saved = sample();
        let mut moved = sample();
        assert_eq!(moved.ami_secret(None, Some((&saved, "s"))), Some("s"));
        assert_eq!(moved.ami_secret(Some("new"), Some((&saved, "s"))), Some("new"));
        moved.host = "pbx.example.org".into();
        assert_eq!(moved.ami_secret(None, Some((&saved, "s"))), None, "another host");
        let mut other_user = sample();
        other_user.username = "someone".into();
        assert_eq!(other_user.ami_secret(None, Some((&saved, "s"))), None, "another user");
    }
}
