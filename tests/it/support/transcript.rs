//! The real Asterisk 22 wire transcripts pinned in `tests/fixtures/asterisk-22/` (each folder's
//! README says how they were recorded and what they show), read for tests that replay them.

use std::path::Path;

use dialback::ami::codec::{AmiCodec, Frame, Message};

/// Which way a block went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// `>>`: sent to Asterisk (by the AMI client or the FastAGI server).
    ToAsterisk,
    /// `<<`: Asterisk sent it.
    FromAsterisk,
    /// `--`: the recorder's note (a half-close, an end of file).
    Note,
}

/// One block: who sent it (`gw`, `agi#1`, ...), which way, and its text.
pub struct Block {
    pub who: String,
    pub dir: Dir,
    pub text: String,
}

/// The blocks of `tests/fixtures/asterisk-22/<file>`, with `rewrites` applied to all of it. AGI
/// blocks are their bytes: `<LF>`, `<CR>` and `<TAB>` stand for LF, CR and TAB there, and the line break the
/// recording wrote after each `<LF>` is not one.
/// The fixture `file` (under tests/fixtures/asterisk-22) with `rewrites` applied, its line ends
/// made LF first when `lf` says so.
fn read(file: &str, rewrites: &[(&str, &str)], lf: bool) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/asterisk-22").join(file);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if lf {
        text = text.replace("\r\n", "\n");
    }
    for (from, to) in rewrites {
        text = text.replace(from, to);
    }
    text
}

pub fn blocks(file: &str, rewrites: &[(&str, &str)]) -> Vec<Block> {
    let text = read(file, rewrites, false);
    // Blocks start at a line `### `; what comes before the first is the file's description, and
    // Asterisk's own log (`# ---- ...`) ends the last.
    format!("\n{text}")
        .split("\n### ")
        .skip(1)
        .map(|block| {
            let (header, body) = block.split_once('\n').unwrap_or((block, ""));
            let who = header.split(' ').next().unwrap_or_default().to_owned();
            let dir = match header.split(' ').nth(1) {
                Some(">>") => Dir::ToAsterisk,
                Some("<<") => Dir::FromAsterisk,
                _ => Dir::Note,
            };
            let body = body.split("\n# ----").next().unwrap_or_default();
            let text = if who.starts_with("agi#") {
                let text = body.replace("<LF>\n", "\n").replace("<CR>", "\r").replace("<TAB>", "\t");
                text.strip_suffix("<LF>").map_or(text.clone(), |t| format!("{t}\n"))
            } else {
                body.trim_end_matches('\n').to_owned()
            };
            Block { who, dir, text }
        })
        .collect()
}

/// The AMI messages of a block's text (CRLF restored).
pub fn ami_messages(text: &str) -> Vec<Message> {
    let mut buf = bytes::BytesMut::from(format!("{}\r\n\r\n", text.replace('\n', "\r\n")).as_str());
    let mut codec = AmiCodec::server();
    let mut messages = Vec::new();
    while let Some(Frame::Message(message)) = tokio_util::codec::Decoder::decode(&mut codec, &mut buf).unwrap() {
        messages.push(message);
    }
    messages
}

/// Every AMI message Asterisk sent to the session `who` in `file`, in order.
pub fn ami_from_asterisk(file: &str, who: &str) -> Vec<Message> {
    blocks(file, &[])
        .iter()
        .filter(|b| b.who == who && b.dir == Dir::FromAsterisk)
        .flat_map(|b| ami_messages(&b.text))
        .collect()
}

/// The blocks of a transcript in the `----- >>` / `----- <<` format
/// (`tests/fixtures/asterisk-22/dialplan/`): `#` lines before the first block describe the file,
/// `### ` lines title the exchange that follows, and each block is raw AMI, returned with LF line ends (CRLF or LF in the file alike) and
/// without its closing empty lines. `who` is empty: such a file is one session.
pub fn dashed_blocks(file: &str, rewrites: &[(&str, &str)]) -> Vec<Block> {
    let text = read(file, rewrites, true);
    format!("\n{text}")
        .split("\n----- ")
        .skip(1)
        .map(|block| {
            let (marker, body) = block.split_once('\n').unwrap_or((block, ""));
            let dir = match marker.trim() {
                ">>" => Dir::ToAsterisk,
                "<<" => Dir::FromAsterisk,
                _ => Dir::Note,
            };
            // `### title` lines name the next exchange (k3); they are not AMI.
            let text: Vec<&str> = body.lines().filter(|line| !line.starts_with("### ")).collect();
            Block { who: String::new(), dir, text: text.join("\n").trim_end_matches('\n').to_owned() }
        })
        .collect()
}
