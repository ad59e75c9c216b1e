//! Configuration: `dialback.toml` (or the file named by `DIALBACK_CONFIG`) overlaid by `DIALBACK_*`
//! environment variables. Nested keys use a double underscore: `DIALBACK_RATE__COURIER_PER_MINUTE`.
//!
//! Secrets are `SecretString`s: their `Debug` prints `[REDACTED]`, so logging the config is safe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL URL, e.g. `postgres://dialback@127.0.0.1:5432/dialback`.
    pub database_url: SecretString,
    /// Address the HTTP API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// HS256 secret for JWTs (demo and tests; production may add public keys).
    pub jwt_secret: SecretString,
    /// The previous HS256 secret, still accepted while tokens signed with it expire (rotation).
    #[serde(default)]
    pub jwt_previous_secret: Option<SecretString>,
    /// The `aud` claim every token must carry.
    #[serde(default = "default_audience")]
    pub jwt_audience: String,
    /// When set, tokens must carry this `iss`.
    #[serde(default)]
    pub jwt_issuer: Option<String>,
    /// PEM files of public keys (RS256/ES256/EdDSA) accepted besides the HS256 secret.
    #[serde(default)]
    pub jwt_public_keys: Vec<PathBuf>,
    /// 32-byte key, 64 hex digits, that encrypts stored secrets (AMI and FTP passwords).
    pub secrets_key: SecretString,
    /// Where fetched call recordings are stored on this host (one host); `recordings.url` instead
    /// for object storage that every host shares.
    #[serde(default)]
    pub recordings_dir: Option<PathBuf>,
    #[serde(default)]
    pub db: DbConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub rate: RateConfig,
    #[serde(default)]
    pub ami: AmiConfig,
    #[serde(default)]
    pub recordings: RecordingsConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default)]
    pub agi: AgiConfig,
    #[serde(default)]
    pub issuers: IssuersConfig,
    /// `auto` (JSON unless stdout is a terminal), `json` or `pretty`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    pub pool_size: usize,
    /// How long a request waits for a pooled connection, and for a new one to connect.
    pub timeout_ms: u64,
    /// How long a process keeps a company's PBX settings and return-call rules cached. A save
    /// reaches every process at once (store/notify.rs); this bounds how long one missed while
    /// its listening connection was down stays stale.
    pub cache_ttl_s: u64,
    /// The PEM file of the root certificate that signed the database's certificate, for when the
    /// URL names none (`sslrootcert`); see store/pg_tls.rs for what each `sslmode` checks.
    pub ssl_root_cert: Option<String>,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self { pool_size: 16, timeout_ms: 2000, cache_ttl_s: 10, ssl_root_cert: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Number of HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout_s: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { body_limit_bytes: 64 * 1024, workers: 0, shutdown_timeout_s: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Callbacks one courier may place per minute (burst = the same number).
    pub courier_per_minute: u32,
    /// Callbacks one tenant may place per second (burst = 2 seconds' worth).
    pub tenant_per_second: u32,
    /// Failed authentications one client IP may make per minute.
    pub auth_failures_per_minute: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self { courier_per_minute: 10, tenant_per_second: 50, auth_failures_per_minute: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmiConfig {
    /// Concurrent in-flight originates per PBX (Asterisk runs one thread per async originate).
    pub max_inflight_originates: usize,
    /// A tenant's AMI connection closes after this long without use.
    pub idle_close_s: u64,
    /// Timeout for one AMI action's reply.
    pub action_timeout_ms: u64,
    /// Timeout for connect + banner + login.
    pub connect_timeout_ms: u64,
    /// Keepalive `Ping` interval.
    pub ping_interval_s: u64,
    /// How long calls may go unobserved while their PBX cannot be reached (AMI link down, or
    /// AMI over HTTP logging in again) before they are marked `unknown`. Back within that time,
    /// dialback asks the PBX which calls are still up (`CoreShowChannels`) and follows them.
    pub lost_after_s: u64,
    /// How often each company's PBX is asked whether it runs dialback's dialplan (`ShowDialPlan`,
    /// on its AMI session when that is up); 0: only when settings are saved and on the Test.
    pub dialplan_check_s: u64,
}

impl AmiConfig {
    /// What the AMI pool needs of these settings.
    pub fn pool(&self) -> dialback_ami::pool::PoolConfig {
        dialback_ami::pool::PoolConfig {
            max_inflight_originates: self.max_inflight_originates,
            idle_close: Duration::from_secs(self.idle_close_s),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            action_timeout: Duration::from_millis(self.action_timeout_ms),
            ping_interval: Duration::from_secs(self.ping_interval_s.max(1)),
        }
    }
}

impl Default for AmiConfig {
    fn default() -> Self {
        Self {
            max_inflight_originates: 32,
            idle_close_s: 300,
            action_timeout_ms: 5000,
            connect_timeout_ms: 5000,
            ping_interval_s: 20,
            lost_after_s: 120,
            dialplan_check_s: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingsConfig {
    /// `s3://BUCKET/PREFIX`: recordings in an S3-compatible store (recordings/s3.rs) that every
    /// dialback host shares; empty: files under `recordings_dir`.
    pub url: String,
    /// The store's connection; each empty field comes from the standard AWS variables
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP`).
    pub s3: S3Config,
    /// Downloads one company's sync runs at once (each on its own FTP session).
    pub parallel_downloads: usize,
    /// Timeout of each FTP step: connect, TLS, login, a command, and silence during a transfer.
    pub ftp_timeout_ms: u64,
    /// A download's claim lapses this long after its last heartbeat, so another run (or replica)
    /// takes over a download whose process died.
    pub claim_lease_s: u64,
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            s3: S3Config::default(),
            parallel_downloads: 3,
            ftp_timeout_ms: 15_000,
            claim_lease_s: 60,
        }
    }
}

/// The bucket and the key prefix (without a trailing `/`, maybe empty) of `s3://BUCKET/PREFIX`.
pub fn s3_location(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or("not an s3:// URL")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(format!("{bucket:?} is not a bucket name"));
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

/// An S3-compatible store (AWS S3, MinIO, Ceph RGW, Yandex Object Storage).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The store's URL, e.g. `https://storage.yandexcloud.net` (empty: AWS itself).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Option<SecretString>,
    /// Let the endpoint be plain `http://` (a store on a trusted network).
    pub allow_http: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Let endpoints use plain `http://` (a receiver on a trusted network; the demo and tests).
    pub allow_http: bool,
    /// Let endpoints reach private, loopback and link-local addresses (whatever their names
    /// resolve to at connect time). Off, the deliverer cannot be turned against the network it
    /// runs in.
    pub allow_private_targets: bool,
    pub connect_timeout_ms: u64,
    /// Limit on one delivery attempt from connect to the answer's headers.
    pub request_timeout_ms: u64,
    /// Seconds to wait before each retry after a failed attempt (±20 % jitter); after the last,
    /// the delivery is given up. The default spans a little over 27 hours.
    pub retry_schedule_s: Vec<u64>,
    /// An endpoint whose every delivery has failed for this many days is disabled (and says why).
    pub disable_after_days: u32,
    /// After a secret rotation, how long the previous secret keeps signing beside the new one.
    pub secret_overlap_h: u32,
    /// Deliveries one process sends at once.
    pub concurrency: usize,
    /// How long delivered messages stay listed before they are deleted.
    pub keep_delivered_days: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_http: false,
            allow_private_targets: false,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 15_000,
            retry_schedule_s: vec![5, 300, 1_800, 7_200, 18_000, 36_000, 36_000],
            disable_after_days: 5,
            secret_overlap_h: 24,
            concurrency: 32,
            keep_delivered_days: 30,
        }
    }
}

/// Which companies the deployment's own keys (`jwt_secret`, `jwt_public_keys`) may act for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalKeys {
    /// The operator, and every company the operator has given no issuer of its own (how every
    /// company worked before issuers: it keeps working while it is moved).
    CompaniesWithoutIssuer,
    /// The operator only: a company without an issuer of its own cannot sign in.
    Operator,
}

/// Companies' token issuers: how their keys are fetched and which companies the deployment's own
/// keys act for (auth/issuers.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuersConfig {
    pub global_keys: GlobalKeys,
    /// Let a JWKS URL use plain `http://` (a provider on a trusted network; tests).
    pub allow_http: bool,
    /// Let a JWKS URL reach private, loopback and link-local addresses (an identity provider
    /// inside the company's network). Off, like webhooks, by default.
    pub allow_private_targets: bool,
    /// A fetched JWKS is fetched again after this long (served from cache meanwhile, and for as
    /// long as the provider cannot be reached).
    pub jwks_max_age_s: u64,
    /// A token naming a key the cached JWKS lacks fetches it again, at most this often.
    pub jwks_refresh_min_interval_s: u64,
    /// Limit on one JWKS fetch, connect to the last byte.
    pub jwks_timeout_ms: u64,
}

impl Default for IssuersConfig {
    fn default() -> Self {
        Self {
            global_keys: GlobalKeys::CompaniesWithoutIssuer,
            allow_http: false,
            allow_private_targets: false,
            jwks_max_age_s: 600,
            jwks_refresh_min_interval_s: 5,
            jwks_timeout_ms: 5_000,
        }
    }
}

/// The FastAGI server return calls are routed by.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgiConfig {
    /// Where it listens; empty: no FastAGI server (the HTTP route still answers).
    pub listen: String,
    /// How the PBX reaches it, `host:port`, for the `agi_url` admins paste into the dialplan;
    /// empty: the listen address (its port as bound).
    pub public_address: String,
    /// A conversation's limit from accept to the last variable set; past it the socket is closed
    /// and the dialplan sends the call to the office (Asterisk itself never gives up on a silent
    /// server, so the caller would wait).
    pub deadline_ms: u64,
}

impl Default for AgiConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:4573".into(), public_address: String::new(), deadline_ms: 1000 }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("valid default address")
}

fn default_audience() -> String {
    "dialback".into()
}

fn default_log_format() -> String {
    "auto".into()
}

/// `DIALBACK_*` variables that are not settings: the config file's path, the log filter (read by
/// telemetry), the test suite's own (database, patience, its PostgreSQL's CAs, spec ledger) and
/// the demo's URL.
const NOT_SETTINGS: &[&str] = &[
    "config",
    "log",
    "test_database_url",
    "test_patience_s",
    "test_pg_ca",
    "test_pg_other_ca",
    "spec_ledger_dir",
    "url",
];

/// A setting is missing or malformed; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads `dialback.toml` (or `$DIALBACK_CONFIG`) and `DIALBACK_*` variables.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("DIALBACK_CONFIG").unwrap_or_else(|_| "dialback.toml".into());
        let figment =
            Figment::new().merge(Toml::file(&file)).merge(Env::prefixed("DIALBACK_").ignore(NOT_SETTINGS).split("__"));
        Self::from_figment(figment)
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        crate::pg_tls::connect(self.database_url.expose_secret(), self.db.ssl_root_cert.as_deref())
            .map_err(|e| ConfigError(format!("database_url (DIALBACK_DATABASE_URL): {e}")))?;
        if self.jwt_secret.expose_secret().len() < 16 {
            return Err(ConfigError("jwt_secret (DIALBACK_JWT_SECRET) must be at least 16 characters".into()));
        }
        crate::crypto::SecretsKey::from_hex(self.secrets_key.expose_secret())
            .map_err(|e| ConfigError(format!("secrets_key (DIALBACK_SECRETS_KEY): {e}")))?;
        if !matches!(self.log_format.as_str(), "auto" | "json" | "pretty") {
            return Err(ConfigError("log_format (DIALBACK_LOG_FORMAT) must be auto, json or pretty".into()));
        }
        match (self.recordings.url.as_str(), &self.recordings_dir) {
            ("", None) => {
                return Err(ConfigError(
                    "recordings_dir (DIALBACK_RECORDINGS_DIR) or recordings.url (DIALBACK_RECORDINGS__URL, s3://BUCKET/PREFIX) \
                     must say where recordings are kept"
                        .into(),
                ))
            }
            ("", Some(_)) => {}
            (url, _) if s3_location(url).is_err() => {
                return Err(ConfigError(format!(
                    "recordings.url (DIALBACK_RECORDINGS__URL) must be s3://BUCKET or s3://BUCKET/PREFIX; got {url:?}"
                )))
            }
            _ => {}
        }
        if self.recordings.parallel_downloads == 0 || self.recordings.claim_lease_s == 0 {
            return Err(ConfigError(
                "recordings.parallel_downloads and recordings.claim_lease_s (DIALBACK_RECORDINGS__*) must be at least 1"
                    .into(),
            ));
        }
        let w = &self.webhooks;
        if w.concurrency == 0 || w.connect_timeout_ms == 0 || w.request_timeout_ms == 0 || w.retry_schedule_s.is_empty()
        {
            return Err(ConfigError(
                "webhooks.concurrency, connect_timeout_ms, request_timeout_ms (DIALBACK_WEBHOOKS__*) must be at least 1, \
                 and webhooks.retry_schedule_s must list at least one delay"
                    .into(),
            ));
        }
        if !self.agi.listen.is_empty() && self.agi.listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError(format!(
                "agi.listen (DIALBACK_AGI__LISTEN) must be host:port, e.g. 0.0.0.0:4573, or empty to serve no FastAGI; got {:?}",
                self.agi.listen
            )));
        }
        if self.agi.deadline_ms == 0 {
            return Err(ConfigError("agi.deadline_ms (DIALBACK_AGI__DEADLINE_MS) must be at least 1".into()));
        }
        if self.issuers.jwks_timeout_ms == 0 {
            return Err(ConfigError(
                "issuers.jwks_timeout_ms (DIALBACK_ISSUERS__JWKS_TIMEOUT_MS) must be at least 1".into(),
            ));
        }
        if self.db.pool_size == 0 {
            return Err(ConfigError("db.pool_size (DIALBACK_DB__POOL_SIZE) must be at least 1".into()));
        }
        Ok(())
    }

    pub fn secrets_key(&self) -> crate::crypto::SecretsKey {
        crate::crypto::SecretsKey::from_hex(self.secrets_key.expose_secret()).expect("validated at load")
    }
}

/// Turns figment's error into one line per problem, naming the setting and its variable.
fn describe(err: figment::Error) -> ConfigError {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = match &e.kind {
                figment::error::Kind::MissingField(field) => {
                    let mut path = e.path.clone();
                    path.push(field.to_string());
                    path.join(".")
                }
                _ => e.path.join("."),
            };
            let var = format!("DIALBACK_{}", key.replace('.', "__").to_uppercase());
            match &e.kind {
                figment::error::Kind::MissingField(_) => {
                    format!("missing setting {key} (set {var} or {key} in dialback.toml)")
                }
                other => format!("setting {key} ({var}): {other}"),
            }
        })
        .collect();
    ConfigError(lines.join("; "))
}

/// Redacts a URL's password for logs: `postgres://u:***@host/db`.
pub fn redact_url(url: &SecretString) -> String {
    let raw = url.expose_secret();
    match (raw.find("://"), raw.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &raw[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &raw[..scheme_end + 3], user, &raw[at..])
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn base() -> Figment {
        Figment::new().merge(Serialized::defaults(serde_json::json!({
            "database_url": "postgres://u:pw@127.0.0.1:5432/db",
            "jwt_secret": "0123456789abcdef0123",
            "secrets_key": "00".repeat(32),
            "recordings_dir": "/tmp/rec",
        })))
    }

    #[test]
    fn a_complete_config_loads_with_defaults() {
        let c = Config::from_figment(base()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.jwt_audience, "dialback");
    }

    #[test]
    fn recordings_go_to_a_directory_or_a_bucket() {
        let no_dir = Figment::new().merge(Serialized::defaults(serde_json::json!({
            "database_url": "postgres://u@h/db", "secrets_key": "00".repeat(32), "jwt_secret": "0123456789abcdef0123"
        })));
        let err = Config::from_figment(no_dir.clone()).unwrap_err().to_string();
        assert!(err.contains("DIALBACK_RECORDINGS_DIR") && err.contains("DIALBACK_RECORDINGS__URL"), "{err}");
        let bucket = no_dir.clone().merge(Serialized::default("recordings.url", "s3://calls/acme"));
        assert_eq!(Config::from_figment(bucket).unwrap().recordings.url, "s3://calls/acme");
        let wrong = no_dir.merge(Serialized::default("recordings.url", "ftp://calls"));
        let err = Config::from_figment(wrong).unwrap_err().to_string();
        assert!(err.contains("s3://BUCKET"), "{err}");
    }

    #[test]
    fn a_missing_setting_is_named_with_its_variable() {
        let figment = Figment::new().merge(Serialized::defaults(serde_json::json!({
            "database_url": "postgres://u@h/db", "secrets_key": "00".repeat(32), "recordings_dir": "/x"
        })));
        let err = Config::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("jwt_secret") && err.contains("DIALBACK_JWT_SECRET"), "{err}");
    }

    #[test]
    fn a_malformed_secrets_key_is_refused_by_name() {
        let err =
            Config::from_figment(base().merge(Serialized::default("secrets_key", "abc"))).unwrap_err().to_string();
        assert!(err.contains("DIALBACK_SECRETS_KEY"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let c = Config::from_figment(base()).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("0123456789abcdef0123") && !debug.contains("pw@"), "{debug}");
        assert_eq!(redact_url(&c.database_url), "postgres://u:***@127.0.0.1:5432/db");
    }
}
