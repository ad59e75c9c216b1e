//! A company's identity provider as the tests need it: a JWKS served over HTTPS with a certificate
//! of its own (the PEM the operator pastes as the issuer's `ca_pem`), whose keys can be changed and
//! which can go down; and tokens signed with the keys in tests/fixtures/jwt/.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

/// A key in tests/fixtures/jwt/: `rsa-a1`, `rsa-a2`, `ec-a`, `rsa-b`.
pub fn fixture(name: &str, ext: &str) -> String {
    let path = format!("{}/tests/fixtures/jwt/{name}.{ext}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn public_pem(name: &str) -> String {
    fixture(name, "pub.pem")
}

fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(name, "jwk.json")).unwrap()
}

/// A token signed with fixture key `key` (its `kid` the key's name unless `kid` says otherwise),
/// with `claims` over the usual ones (`aud` dialback, an hour to live).
pub fn sign(key: &str, kid: Option<&str>, claims: Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let pem = fixture(key, "key.pem");
    let (alg, encoding) = if key.starts_with("ec-") {
        (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes()).unwrap())
    } else {
        (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap())
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.unwrap_or(key).to_owned());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut body = json!({"aud": "dialback", "iat": now, "exp": now + 3600});
    for (k, v) in claims.as_object().unwrap() {
        body[k] = v.clone();
    }
    jsonwebtoken::encode(&header, &body, &encoding).unwrap()
}

struct Served {
    keys: Vec<Value>,
    up: bool,
    fetches: usize,
}

pub struct JwksServer {
    pub port: u16,
    /// The server's certificate: the issuer's `ca_pem`.
    pub ca_pem: String,
    served: Arc<Mutex<Served>>,
    stop: tokio_util::sync::CancellationToken,
}

impl JwksServer {
    /// Serves the JWKs of fixture keys `keys` at `/certs`.
    pub async fn start(keys: &[&str]) -> JwksServer {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let ca_pem = cert.cert.pem();
        let chain = vec![cert.cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(Mutex::new(Served { keys: keys.iter().map(|k| jwk(k)).collect(), up: true, fetches: 0 }));
        let stop = tokio_util::sync::CancellationToken::new();
        let (state, stopped) = (served.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (socket, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = stopped.cancelled() => return,
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body) = {
                        let mut served = state.lock().unwrap();
                        served.fetches += 1;
                        if !served.up {
                            ("503 Service Unavailable", "down".to_owned())
                        } else if head.starts_with(b"GET /certs ") {
                            ("200 OK", json!({"keys": served.keys}).to_string())
                        } else {
                            ("404 Not Found", "{}".to_owned())
                        }
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        JwksServer { port, ca_pem, served, stop }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/certs", self.port)
    }

    /// Publishes the JWKs of fixture keys `keys` from now on (a rotation).
    pub fn publish(&self, keys: &[&str]) {
        self.served.lock().unwrap().keys = keys.iter().map(|k| jwk(k)).collect();
    }

    /// Answers 503 to every request while down.
    pub fn set_up(&self, up: bool) {
        self.served.lock().unwrap().up = up;
    }

    /// Requests answered so far.
    pub fn fetches(&self) -> usize {
        self.served.lock().unwrap().fetches
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
