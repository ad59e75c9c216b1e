//! The FastAGI wire, as Asterisk 22 speaks it (the transcripts in
//! `tests/fixtures/asterisk-22/agi/` show each rule): an environment block of
//! `name: value` lines ended by an empty line, LF only, arriving in any number of pieces; then
//! one command line at a time, each answered by one reply (`200 result=1`, `510 ...`, or the
//! three-line `520-...` usage reply) before the next may be sent.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Asterisk cuts command lines at 8191 bytes; an environment is a few hundred.
const MAX_ENVIRONMENT: usize = 16 * 1024;
const MAX_LINE: usize = 8191;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgiError {
    #[error("the connection closed before {0}")]
    Closed(&'static str),
    #[error("the environment is larger than {MAX_ENVIRONMENT} bytes")]
    TooLarge,
    #[error("a variable value may not contain CR, LF or NUL")]
    UnsafeValue,
    #[error("I/O: {0}")]
    Io(String),
}

impl From<std::io::Error> for AgiError {
    fn from(e: std::io::Error) -> Self {
        AgiError::Io(e.to_string())
    }
}

/// What Asterisk said about the channel and the request (`agi_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: Vec<(String, String)>,
}

impl Environment {
    /// Reads the environment block: lines up to the empty one, however the bytes arrive.
    pub async fn read<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Environment, AgiError> {
        let mut vars = Vec::new();
        let mut total = 0;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).await?;
            if n == 0 {
                return Err(AgiError::Closed("the environment ended"));
            }
            total += n;
            if total > MAX_ENVIRONMENT {
                return Err(AgiError::TooLarge);
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\n');
            if text.is_empty() {
                return Ok(Environment { vars });
            }
            if let Some((name, value)) = text.split_once(':') {
                vars.push((name.trim().to_owned(), value.strip_prefix(' ').unwrap_or(value).to_owned()));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The request's script (`agi_network_script`: everything after `host:port/`) as its path and
    /// its query parameters.
    pub fn script(&self) -> (String, Vec<(String, String)>) {
        let script = self.get("agi_network_script").unwrap_or_default();
        let (path, query) = script.split_once('?').unwrap_or((script, ""));
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        (path.trim_matches('/').to_owned(), params)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
        ) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `SET VARIABLE NAME "value"` with its LF: the value quoted, `\` and `"` escaped (Asterisk drops
/// a lone backslash), never CR, LF or NUL (a LF would start a second command).
pub fn set_variable(name: &str, value: &str) -> Result<String, AgiError> {
    if value.contains(['\r', '\n', '\0']) || name.contains(['\r', '\n', '\0', ' ', '"']) {
        return Err(AgiError::UnsafeValue);
    }
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    let line = format!("SET VARIABLE {name} \"{escaped}\"\n");
    if line.len() > MAX_LINE {
        return Err(AgiError::UnsafeValue);
    }
    Ok(line)
}

/// One reply: its code and the rest of its first line (`result=1`), after any continuation lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// Reads one reply; a `520-` reply runs until its `520 ` line.
    pub async fn read<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Reply, AgiError> {
        let mut line = String::new();
        let first = loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Err(AgiError::Closed("a reply came"));
            }
            let text = line.trim_end_matches(['\n', '\r']);
            // `HANGUP` is Asterisk telling us the caller left (or that we closed): not a reply.
            if !text.is_empty() && text != "HANGUP" {
                break text.to_owned();
            }
        };
        let code = first.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if first.as_bytes().get(3) == Some(&b'-') {
            let end = format!("{code} ");
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Err(AgiError::Closed("the usage reply ended"));
                }
                if line.starts_with(&end) {
                    break;
                }
            }
        }
        Ok(Reply { code, text: first.get(4..).unwrap_or_default().to_owned() })
    }

    pub fn is_ok(&self) -> bool {
        self.code == 200
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment of tests/fixtures/asterisk-22/agi/i1_inbound_courier_answers.raw.txt, as
    /// Asterisk sent it (in two reads there; the parser must not care how many).
    const I1: &str = "agi_network: yes\nagi_network_script: route?tenant=demo\nagi_request: agi://127.0.0.1:4573/route?tenant=demo\n\
        agi_channel: Local/74951234567@from-trunk-0000005a;2\nagi_language: en\nagi_type: Local\nagi_uniqueid: 1795930683.181\n\
        agi_version: 22.10.1\nagi_callerid: 79161234567\nagi_calleridname: Client\nagi_callingpres: 0\nagi_callingani2: 0\n\
        agi_callington: 0\nagi_callingtns: 0\nagi_dnid: unknown\nagi_rdnis: unknown\nagi_context: from-trunk\n\
        agi_extension: 74951234567\nagi_priority: 3\nagi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 140192681187008\n\
        agi_arg_1: 74951234567\n\n";

    #[tokio::test]
    async fn the_environment_is_read_to_its_empty_line_however_it_arrives() {
        // One byte per read, the worst case.
        let reader = tokio_test_reader(I1.as_bytes(), 1);
        let mut reader = tokio::io::BufReader::with_capacity(1, reader);
        let env = Environment::read(&mut reader).await.unwrap();
        assert_eq!(env.get("agi_uniqueid"), Some("1795930683.181"));
        assert_eq!(env.get("agi_callerid"), Some("79161234567"));
        assert_eq!(env.get("agi_accountcode"), Some(""));
        assert_eq!(env.get("agi_arg_1"), Some("74951234567"));
        let (path, params) = env.script();
        assert_eq!((path.as_str(), params), ("route", vec![("tenant".to_owned(), "demo".to_owned())]));
    }

    #[tokio::test]
    async fn a_closed_or_oversized_environment_is_an_error() {
        let mut cut = tokio::io::BufReader::new(&b"agi_network: yes\nagi_uniqueid: 1"[..]);
        assert_eq!(Environment::read(&mut cut).await, Err(AgiError::Closed("the environment ended")));
        let huge = format!("agi_x: {}\n", "y".repeat(MAX_ENVIRONMENT));
        let mut huge = tokio::io::BufReader::new(huge.as_bytes());
        assert_eq!(Environment::read(&mut huge).await, Err(AgiError::TooLarge));
    }

    #[test]
    fn values_are_quoted_and_escaped_and_never_carry_a_line_break() {
        assert_eq!(
            set_variable("DIALBACK_ROUTE", "PJSIP/79001112233@trunk").unwrap(),
            "SET VARIABLE DIALBACK_ROUTE \"PJSIP/79001112233@trunk\"\n"
        );
        assert_eq!(set_variable("V", "").unwrap(), "SET VARIABLE V \"\"\n");
        assert_eq!(set_variable("V", r#"say "hi" C:\dir"#).unwrap(), "SET VARIABLE V \"say \\\"hi\\\" C:\\\\dir\"\n");
        assert_eq!(set_variable("V", "a\nSET VARIABLE X 1"), Err(AgiError::UnsafeValue));
        assert_eq!(set_variable("V", "crlf\r"), Err(AgiError::UnsafeValue));
    }

    #[tokio::test]
    async fn replies_are_read_one_at_a_time_with_the_usage_reply_whole() {
        let wire = "200 result=1\n520-Invalid command syntax.  Proper usage follows:\nSets a variable to the current channel.\n\
                    520 End of proper usage.\n510 Invalid or unknown command\nHANGUP\n200 result=1 (1795930683.180)\n";
        let mut reader = tokio::io::BufReader::new(wire.as_bytes());
        let codes: Vec<(u16, String)> = {
            let mut out = Vec::new();
            while let Ok(reply) = Reply::read(&mut reader).await {
                out.push((reply.code, reply.text));
            }
            out
        };
        assert_eq!(
            codes,
            [
                (200, "result=1".to_owned()),
                (520, "Invalid command syntax.  Proper usage follows:".to_owned()),
                (510, "Invalid or unknown command".to_owned()),
                (200, "result=1 (1795930683.180)".to_owned()),
            ]
        );
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        let env = Environment { vars: vec![("agi_network_script".into(), "/route?key=a%2Bb%3D&did=7495".into())] };
        let (path, params) = env.script();
        assert_eq!(path, "route");
        assert_eq!(params, [("key".to_owned(), "a+b=".to_owned()), ("did".to_owned(), "7495".to_owned())]);
    }

    /// A reader that hands out `chunk` bytes per read.
    fn tokio_test_reader(bytes: &'static [u8], chunk: usize) -> impl tokio::io::AsyncRead + Unpin {
        let (client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in bytes.chunks(chunk) {
                if server.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        client
    }
}
