//! PBX settings as an admin sends them (`PUT /v1/admin/pbx`, and unsaved with the Test button):
//! the write-only secrets taken out, older clients' fields reconciled, every field validated.

use crate::domain::bad;
use crate::domain::check_text;
use crate::domain::settings::{
    check_ftp_password, check_private_key, AmiTransport, PbxSettings, RecordingsProtocol, DEFAULT_CONTEXT,
};

use super::problem::ApiError;

/// PBX settings as an admin sends them, with the write-only secrets taken out: they are never
/// stored or returned with the settings.
pub struct SettingsInput {
    pub settings: PbxSettings,
    /// The AMI secret, when given.
    pub secret: Option<String>,
    /// The recordings source's FTP password, when given.
    pub recordings_password: Option<String>,
}

impl SettingsInput {
    /// Reads and validates a settings body.
    pub fn parse(mut body: serde_json::Value) -> Result<SettingsInput, ApiError> {
        // The credential: a password, or for SFTP an SSH private key (kept in the same slot; a
        // stored one that starts like a PEM is used as a key).
        let recordings_password = match body.get_mut("recordings").and_then(|r| r.as_object_mut()) {
            None => None,
            Some(recordings) => {
                let sftp = recordings.get("protocol").and_then(|p| p.as_str()) == Some("sftp");
                if sftp && recordings.get("port").is_none_or(|p| p.is_null()) {
                    recordings.insert("port".into(), RecordingsProtocol::Sftp.default_port().into());
                }
                let password = match recordings.remove("password") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(password)) => {
                        check_ftp_password(&password)?;
                        Some(password)
                    }
                    Some(_) => return Err(bad("recordings.password", "recordings.password must be a string").into()),
                };
                let key = match recordings.remove("private_key") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(key)) if sftp => {
                        check_private_key(&key)?;
                        Some(key.trim().to_owned())
                    }
                    Some(serde_json::Value::String(_)) => {
                        return Err(bad(
                            "recordings.private_key",
                            "recordings.private_key is only used with protocol sftp",
                        )
                        .into())
                    }
                    Some(_) => {
                        return Err(bad("recordings.private_key", "recordings.private_key must be a string").into())
                    }
                };
                if password.is_some() && key.is_some() {
                    return Err(bad(
                        "recordings.private_key",
                        "give recordings.password or recordings.private_key, not both",
                    )
                    .into());
                }
                key.or(password)
            }
        };
        let secret = match body.as_object_mut().and_then(|o| o.remove("secret")) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(secret)) => {
                check_text("secret", &secret)?;
                if secret.is_empty() || secret.len() > 256 {
                    return Err(bad("secret", "secret must be 1-256 characters").into());
                }
                Some(secret)
            }
            Some(_) => return Err(bad("secret", "secret must be a string").into()),
        };
        // `transport` is new; `"tls": true` alone still means AMI over TLS, and the port defaults to
        // the transport's own.
        let given = |name: &str| body.get(name).is_some_and(|v| !v.is_null());
        let (transport_given, tls_given, port_given) = (given("transport"), given("tls"), given("port"));
        let mut settings: PbxSettings =
            serde_json::from_value(body).map_err(|e| ApiError::invalid_body(e.to_string()))?;
        if !settings.host.is_empty() && settings.context.is_empty() {
            settings.context = DEFAULT_CONTEXT.into();
        }
        if !transport_given && settings.tls {
            settings.transport = AmiTransport::Tls;
        }
        if !tls_given {
            settings.tls = settings.transport.encrypted();
        }
        if !port_given {
            settings.port = settings.transport.default_port();
        }
        settings.validate()?;
        Ok(SettingsInput { settings, secret, recordings_password })
    }
}
