//! TLS client configuration shared by AMI over TLS and FTPS: trust the company's CA when given
//! (PBX and FTP certificates are often self-signed), else the system roots.

use std::sync::Arc;

use tokio_rustls::rustls::{self, RootCertStore};

/// A rustls client configuration (aws-lc-rs, safe defaults) trusting `ca_pem` or the system roots.
pub fn client_config(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = match ca_pem {
        Some(pem) => pem.to_owned(),
        None => std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default(),
    };
    let roots = roots_from_pem(&pem)?;
    if roots.is_empty() {
        return Err(match ca_pem {
            Some(_) => "the CA certificate field holds no PEM certificate".into(),
            None => "no CA certificate to verify the server with: paste the CA that signed it".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificates in `pem`, as trust anchors.
pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the CA certificate is not valid PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("the CA certificate cannot be used: {e}"))?;
    }
    Ok(roots)
}
