//! A minimal HTTP/1.1 keep-alive client: JSON requests to dialback on loopback and nothing else.
//! Hand-written on tokio so the load generator stays cheap on a machine it shares with the server
//! (and needs no HTTP client crate in release builds).

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Larger responses are a bug in the benchmark's assumptions, not something to buffer.
const MAX_RESPONSE: usize = 1 << 20;

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A request's bytes, built once per request by the caller.
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    idempotency_key: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        out.push_str("Authorization: Bearer ");
        out.push_str(token);
        out.push_str("\r\n");
    }
    if let Some(key) = idempotency_key {
        out.push_str("Idempotency-Key: ");
        out.push_str(key);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// One keep-alive connection; reconnects when the server closed it.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: BytesMut,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, stream: None, buf: BytesMut::with_capacity(8 * 1024) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connects now, so the first timed request does not pay for it.
    pub async fn connect(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends one request and reads its response. A kept-alive connection the server has closed
    /// meanwhile is retried once on a new one (nothing was answered, so nothing was done).
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        let reused = self.stream.is_some();
        match self.exchange(request).await {
            Err(e) if reused && e.kind() == io::ErrorKind::UnexpectedEof => {
                self.stream = None;
                self.exchange(request).await
            }
            other => other,
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> io::Result<Response> {
        self.connect().await?;
        let result = self.exchange_on_stream(request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange_on_stream(&mut self, request: &[u8]) -> io::Result<Response> {
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(end) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("response head is not UTF-8"))?;
        let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status code"))?;
        let mut length = None;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| bad("bad content-length"))?);
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                close = true;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked responses are not expected from dialback's JSON routes"));
            }
        }
        let length = length.unwrap_or(0);
        if length > MAX_RESPONSE {
            return Err(bad("response too large"));
        }
        while self.buf.len() < head_end + length {
            read_more(stream, &mut self.buf).await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        if close {
            self.stream = None;
        }
        Ok(Response { status, body })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<()> {
    if buf.len() > MAX_RESPONSE {
        return Err(bad("response too large"));
    }
    buf.reserve(8 * 1024);
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    Ok(())
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
