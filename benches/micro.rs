//! Micro-benchmarks (`cargo bench --bench micro`): AMI decode and encode throughput over what a real
//! Asterisk 22 sent in the transcripts pinned in `tests/fixtures/asterisk-22/ami/` (replies and call
//! events of answered, busy, unanswered, congested, rejected and refused calls), building and
//! encoding an Originate, phone normalisation, and a callback's event data (written for every
//! status a call passes through).
//!
//! No harness crate: each figure is the median of several timed samples after a warm-up, with
//! `std::time`. `-- --out FILE` also writes the figures as JSON (scripts/bench merges them);
//! `-- --quick` takes fewer, shorter samples (a smoke test, not a measurement).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dialback::ami::codec::{AmiCodec, Frame, Outgoing};
use dialback::ami::message::Originate;
use dialback::callbacks::view::event_data;
use dialback::domain::callback::{CallState, CdrRecord, Status, Target};
use dialback::domain::company::TenantId;
use dialback::domain::phone;
use dialback::store::callbacks::CallbackRow;
use time::OffsetDateTime;
use tokio_util::codec::Decoder;

/// What a socket read hands the decoder at a time (tokio's FramedRead reads about this much).
const READ_CHUNK: usize = 4096;

/// The messages Asterisk sent (`<<` blocks) in every transcript, as wire bytes, banners left out.
fn server_messages(dir: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/fixtures/asterisk-22/ami exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".raw.txt"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable transcript");
        let mut current: Option<String> = None;
        for line in text.lines().chain(std::iter::once("### end")) {
            if line.starts_with("### ") {
                if let Some(block) = current.take().filter(|b| !b.is_empty()) {
                    out.push(block + "\r\n");
                }
                current = line.contains(" << ").then(String::new);
            } else if let Some(block) = &mut current {
                if !line.starts_with("Asterisk Call Manager/") && !line.is_empty() {
                    block.push_str(line);
                    block.push_str("\r\n");
                }
            }
        }
    }
    out
}

/// Runs `work` (which reports how many units it did) for about `sample` per sample, `samples`
/// times after one warm-up sample; returns the median rate in units per second.
fn median_rate(samples: usize, sample: Duration, mut work: impl FnMut() -> u64) -> f64 {
    let mut rates = Vec::with_capacity(samples);
    for i in 0..=samples {
        let started = Instant::now();
        let mut units = 0;
        while started.elapsed() < sample {
            units += work();
        }
        if i > 0 {
            rates.push(units as f64 / started.elapsed().as_secs_f64());
        }
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).cloned();
    let (samples, sample) = if quick { (3, Duration::from_millis(50)) } else { (9, Duration::from_millis(300)) };

    let messages = server_messages(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/asterisk-22/ami"));
    let mut stream = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
    for m in &messages {
        stream.extend_from_slice(m.as_bytes());
    }
    let mut figures = serde_json::Map::new();
    let mut put = |key: &str, value: f64, unit: &str| {
        println!("{key:<28} {value:>14.1} {unit}");
        figures.insert(key.into(), serde_json::json!((value * 10.0).round() / 10.0));
    };
    println!("corpus: {} messages, {} bytes", messages.len(), stream.len());

    // Decode: the stream arrives in socket-sized reads, as on a real connection.
    let decode_once = || {
        let mut codec = AmiCodec::client();
        let mut buf = BytesMut::with_capacity(2 * READ_CHUNK);
        let mut frames = 0u64;
        for chunk in stream.chunks(READ_CHUNK) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf).expect("the transcripts decode") {
                if let Frame::Message(m) = frame {
                    black_box(&m);
                }
                frames += 1;
            }
        }
        frames
    };
    let frames_per_pass = decode_once();
    assert_eq!(frames_per_pass, messages.len() as u64 + 1, "every message and the banner decode");
    let passes_per_s = median_rate(samples, sample, || {
        black_box(decode_once());
        1
    });
    put("ami_decode_mb_s", passes_per_s * stream.len() as f64 / 1e6, "MB/s");
    put("ami_decode_msgs_per_s", passes_per_s * frames_per_pass as f64, "messages/s");

    // Encode: the same messages as a sender builds them (validated: CR, LF, NUL refused). The
    // injection transcript's echoed bare-CR ActionIDs cannot be sent by a client, so they are left out.
    let outgoing: Vec<Outgoing> = {
        let mut codec = AmiCodec::client();
        let mut buf = BytesMut::from(&stream[..]);
        let mut out = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).expect("the transcripts decode") {
            if let Frame::Message(m) = frame {
                out.push(m.to_outgoing());
            }
        }
        out.into_iter().filter(|o| o.validate().is_ok()).collect()
    };
    let mut wire = BytesMut::with_capacity(256 * 1024);
    let encoded_bytes = {
        for o in &outgoing {
            o.encode_into(&mut wire).expect("validated");
        }
        wire.len() as f64
    };
    let passes_per_s = median_rate(samples, sample, || {
        wire.clear();
        for o in &outgoing {
            o.encode_into(&mut wire).expect("validated");
        }
        black_box(&wire);
        1
    });
    put("ami_encode_mb_s", passes_per_s * encoded_bytes / 1e6, "MB/s");

    // What dialback does per callback on the AMI side: build the Originate and encode it.
    let originate = Originate {
        channel: "PJSIP/79001112233@trunk".into(),
        context: "from-courier".into(),
        exten: "79161234567".into(),
        timeout_ms: 30_000,
        caller_id: Some("+74951234567".into()),
        channel_id: "0193a2b4-7c1d-7e2f-8a3b-4c5d6e7f8091".into(),
        variables: vec![
            ("DIALBACK_CALL_ID".into(), "0193a2b4-7c1d-7e2f-8a3b-4c5d6e7f8091".into()),
            ("DIALBACK_ORDER_ID".into(), "A-1001".into()),
        ],
    };
    let per_s = median_rate(samples, sample, || {
        wire.clear();
        for _ in 0..100 {
            originate.to_action(black_box("4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e")).encode_into(&mut wire).expect("valid");
        }
        100
    });
    put("originate_encode_per_s", per_s, "/s");

    // Phone normalisation over what couriers type and orders carry: national and international
    // forms, spacing and punctuation, another country, a costly type, and invalid input.
    let inputs = [
        "8 (916) 123-45-67",
        "+79161234567",
        "89161234567",
        "9161234567",
        "+7 (495) 123-45-67",
        "+7 701 123 4567",
        "8-800-555-35-35",
        "+44 20 7946 0958",
        "12345",
        "+7 916 123 45 6x",
    ];
    let per_s = median_rate(samples, sample, || {
        for input in inputs {
            let _ = black_box(phone::parse(black_box(input), "RU"));
        }
        inputs.len() as u64
    });
    put("phone_parse_per_s", per_s, "/s");

    // The data of a `callback.status_changed` event, as the tracker writes it for every status:
    // a call just queued, and one completed with its times and CDR record.
    let at = OffsetDateTime::from_unix_timestamp(1_795_341_119).expect("a valid time");
    let queued = CallbackRow {
        id: uuid::Uuid::parse_str("0193a2b4-7c1d-7e2f-8a3b-4c5d6e7f8091").expect("a valid id"),
        tenant_id: TenantId::stored("acme"),
        courier_id: "courier-17".into(),
        target: Target::Client,
        order_id: Some("A-1001".into()),
        to_number: Some("+79161234567".into()),
        courier_number: Some("+79001112233".into()),
        detail: None,
        action_id: Some("4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e".into()),
        created_at: at,
        updated_at: at,
        sequence: 1,
        state: CallState::new(Status::Queued),
    };
    let mut completed = queued.clone();
    completed.sequence = 5;
    let s = &mut completed.state;
    s.status = Status::Completed;
    (s.courier_answered_at, s.connected_at, s.ended_at) = (Some(at), Some(at), Some(at));
    (s.hangup_cause, s.talk_seconds, s.cdr_billable_seconds) = (Some(16), Some(42), Some(42));
    s.cdr.courier = Some(Box::new(CdrRecord {
        channel: "PJSIP/trunk-00000001".into(),
        destination_channel: "PJSIP/trunk-00000002".into(),
        source: "+74951234567".into(),
        destination: "79161234567".into(),
        destination_context: "dialback-client".into(),
        disposition: "ANSWERED".into(),
        duration_seconds: 51,
        billable_seconds: 42,
        last_application: "Dial".into(),
        last_data: "PJSIP/79161234567@trunk,30".into(),
        start_time: "2026-11-22 12:51:00".into(),
        answer_time: "2026-11-22 12:51:09".into(),
        end_time: "2026-11-22 12:51:51".into(),
        ..Default::default()
    }));
    let per_s = median_rate(samples, sample, || {
        black_box(event_data(black_box(&queued)));
        black_box(event_data(black_box(&completed)));
        2
    });
    put("event_data_per_s", per_s, "/s");

    if let Some(out) = out {
        std::fs::write(&out, serde_json::to_string_pretty(&figures).expect("json") + "\n").expect("writing --out");
    }
}
