//! TLS to PostgreSQL as libpq does it: `sslmode` and `sslrootcert` in the database URL (or the
//! root certificate in `db.ssl_root_cert`), over rustls.
//!
//! tokio-postgres knows only `sslmode=disable|prefer|require` and refuses `sslrootcert`, so both
//! are taken out of the URL here; what they ask for is what the certificate verifier checks:
//!
//! | sslmode | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (the default) | when the server offers it | as `require` |
//! | `require` | always | not checked, unless a root certificate is given: then its chain (libpq's rule) |
//! | `verify-ca` | always | its chain to the root certificate |
//! | `verify-full` | always | its chain, and the host name in the URL among its names |
//!
//! Differences from libpq: `allow` negotiates as `prefer` (tokio-postgres cannot try plain
//! first), a failed handshake under `prefer` is an error rather than a retry without TLS, and a
//! host name is matched against the certificate's subjectAltName only (never its CN).

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{self, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    /// Whether tokio-postgres asks for TLS, and whether it must get it.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            Self::Disable => Wire::Disable,
            Self::Allow | Self::Prefer => Wire::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Wire::Require,
        }
    }
}

/// How to connect: tokio-postgres's configuration and the TLS connector to use with it.
pub struct Connect {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub mode: SslMode,
}

/// Reads a libpq-style URL; `root_cert_path` (`db.ssl_root_cert`) is used when the URL names no
/// `sslrootcert`. Errors say what to change.
pub fn connect(url: &str, root_cert_path: Option<&str>) -> Result<Connect, String> {
    let (url, mode, url_root_cert) = split_url(url)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        // Its Display says only "invalid connection string"; which option is in the source.
        match std::error::Error::source(&e) {
            Some(why) => format!("the database URL is not valid: {why}"),
            None => format!("the database URL is not valid: {e}"),
        }
    })?;
    let mode = mode.unwrap_or(SslMode::Prefer);
    config.ssl_mode(mode.negotiation());
    let root_pem = match url_root_cert.as_deref().or(root_cert_path) {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the database's root certificate {path} (sslrootcert): {e}"))?,
        ),
        None => None,
    };
    let tls = MakeRustlsConnect::new(client_config(mode, root_pem.as_deref())?);
    Ok(Connect { config, tls, mode })
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query (decoded as tokio-postgres decodes);
/// the other parameters stay, in order, for tokio-postgres.
fn split_url(url: &str) -> Result<(String, Option<SslMode>, Option<String>), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|e| format!("the database URL is not valid: {e}"))
    };
    let (mut mode, mut root_cert, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(key)?.as_str() {
            "sslmode" => mode = Some(SslMode::parse(&decode(value)?)?),
            "sslrootcert" => root_cert = Some(decode(value)?),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, mode, root_cert))
}

/// The rustls configuration that checks what `mode` asks for (see the table above).
fn client_config(mode: SslMode, root_pem: Option<&str>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = match root_pem {
        Some(pem) => {
            let roots = crate::tls::roots_from_pem(pem)?;
            if roots.is_empty() {
                return Err("the database's root certificate file (sslrootcert) holds no PEM certificate".into());
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots.is_none() {
        return Err(format!(
            "sslmode={} needs the root certificate that signed the database's certificate: add \
             sslrootcert=/path/to/root.crt to the URL or set DIALBACK_DB__SSL_ROOT_CERT",
            if mode == SslMode::VerifyCa { "verify-ca" } else { "verify-full" }
        ));
    }
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| e.to_string())?
        }
        (_, roots) => Arc::new(ChainOnly { roots, algorithms: provider.signature_verification_algorithms }),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What libpq 17 sends; PostgreSQL 17's direct TLS negotiation requires it, older ones ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// Checks the certificate's chain to `roots` (never the host name), or nothing without roots
/// (`require` as libpq has it: encrypted, not authenticated). The handshake's signatures are
/// always checked, so the server holds the certificate's key.
#[derive(Debug)]
struct ChainOnly {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_and_the_rest_kept() {
        let (url, mode, root) =
            split_url("postgres://u:p@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem")
                .unwrap();
        assert_eq!(url, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(split_url("postgres://db/x").unwrap(), ("postgres://db/x".to_owned(), None, None));
    }

    #[test]
    fn bad_settings_say_what_to_change() {
        let err = connect("postgres://db/x?sslmode=verify-everything", None).err().unwrap();
        assert!(err.contains("sslmode=verify-everything is not one of"), "{err}");
        let err = connect("postgres://db/x?sslmode=verify-full", None).err().unwrap();
        assert!(err.contains("add sslrootcert="), "{err}");
        let err = connect("postgres://db/x?sslmode=require&sslrootcert=/nonexistent.pem", None).err().unwrap();
        assert!(err.contains("cannot read the database's root certificate /nonexistent.pem"), "{err}");
        let err = connect("postgres://db/x?sslcert=/a.pem", None).err().unwrap();
        assert!(err.contains("unknown option `sslcert`"), "{err}");
    }

    #[test]
    fn the_default_is_prefer_and_disable_never_asks() {
        assert_eq!(connect("postgres://db/x", None).unwrap().mode, SslMode::Prefer);
        let disabled = connect("postgres://db/x?sslmode=disable", None).unwrap();
        assert_eq!(disabled.config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    }
}
