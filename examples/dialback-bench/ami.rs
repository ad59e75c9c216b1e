//! The two AMI-only yardsticks, built on dialback's own codec and Originate so the bytes on the wire
//! are the ones dialback sends:
//!
//! - the baseline, the model product's way: for every tap a new connection, banner, Login,
//!   Originate (Async, waiting for "queued"), Logoff (waiting for "Goodbye"), close;
//! - the ceiling: one persistent logged-in connection sending pipelined Originates as fast as the
//!   simulator answers them, with no HTTP and no database.
//!
//! Both log in with `Events: off`, the kindest setting for them: they never read call events.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dialback::ami::codec::{AmiCodec, Frame, Message, Outgoing};
use dialback::ami::message::{self, Originate};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::codec::FramedRead;

use crate::load::{unix_nanos, Tap, Tapper};

/// How long one step of a per-call session may take before it counts as an error.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom to log in.
#[derive(Clone, Debug)]
pub struct AmiTarget {
    pub addr: SocketAddr,
    pub username: String,
    pub secret: String,
}

/// The Originate dialback sends for a client callback (courier +79001112233, client
/// +79161234567, both answering in the simulator), with `channel_id` as its ChannelId.
pub fn bench_originate(channel_id: &str) -> Originate {
    Originate {
        channel: "PJSIP/79001112233@trunk".into(),
        context: "from-courier".into(),
        exten: "79161234567".into(),
        timeout_ms: 30_000,
        caller_id: Some("+74951234567".into()),
        channel_id: channel_id.to_owned(),
        variables: vec![("DIALBACK_CALL_ID".into(), channel_id.to_owned())],
    }
}

type Reader = FramedRead<OwnedReadHalf, AmiCodec>;

async fn send(writer: &mut OwnedWriteHalf, action: &Outgoing) -> anyhow::Result<()> {
    let mut wire = BytesMut::new();
    action.encode_into(&mut wire)?;
    writer.write_all(&wire).await?;
    Ok(())
}

/// Reads until the reply to `action_id` (events and other replies are skipped).
async fn reply(reader: &mut Reader, action_id: &str) -> anyhow::Result<Message> {
    let wait = async {
        loop {
            match reader.next().await {
                Some(Ok(Frame::Message(m))) if m.response().is_some() && m.action_id() == Some(action_id) => {
                    return Ok(m)
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => anyhow::bail!("reading AMI: {e}"),
                None => anyhow::bail!("the AMI server closed the connection"),
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, wait).await.map_err(|_| anyhow::anyhow!("no reply to {action_id}"))?
}

fn expect(reply: &Message, status: &str) -> anyhow::Result<()> {
    match reply.response() {
        Some(r) if r.eq_ignore_ascii_case(status) => Ok(()),
        other => anyhow::bail!("{other:?}: {}", reply.get("Message").unwrap_or("")),
    }
}

/// Connect, banner, Login with events off.
async fn connect_login(target: &AmiTarget) -> anyhow::Result<(Reader, OwnedWriteHalf)> {
    let stream = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(target.addr)).await??;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut reader = FramedRead::new(rd, AmiCodec::client());
    match tokio::time::timeout(STEP_TIMEOUT, reader.next()).await? {
        Some(Ok(Frame::Banner(_))) => {}
        other => anyhow::bail!("no AMI banner: {other:?}"),
    }
    let id = message::new_action_id();
    let login = Outgoing::action("Login")
        .with("ActionID", id.clone())
        .with("Username", target.username.clone())
        .with("Secret", target.secret.clone())
        .with("Events", "off");
    send(&mut wr, &login).await?;
    expect(&reply(&mut reader, &id).await?, "Success")?;
    Ok((reader, wr))
}

/// One tap the model product's way; `channel_id` lets the simulator's originate log find it.
pub async fn per_call(target: &AmiTarget, channel_id: &str) -> anyhow::Result<()> {
    let (mut reader, mut writer) = connect_login(target).await?;
    let id = message::new_action_id();
    send(&mut writer, &bench_originate(channel_id).to_action(&id)).await?;
    expect(&reply(&mut reader, &id).await?, "Success")?;
    let id = message::new_action_id();
    send(&mut writer, &message::logoff(&id)).await?;
    expect(&reply(&mut reader, &id).await?, "Goodbye")?;
    Ok(())
}

/// What the ceiling run saw.
pub struct Ceiling {
    pub replies: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

/// Pipelines Originates on one connection for `duration`, at most `window` unanswered.
pub async fn ceiling(target: &AmiTarget, duration: Duration, window: usize) -> anyhow::Result<Ceiling> {
    let (mut reader, mut writer) = connect_login(target).await?;
    let slots = Arc::new(Semaphore::new(window));
    let errors = Arc::new(AtomicU64::new(0));
    let replies = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let read_task = {
        let (slots, errors, replies) = (slots.clone(), errors.clone(), replies.clone());
        tokio::spawn(async move {
            // Replies after the deadline are not counted; a bound on the wait keeps this finite.
            while let Ok(Some(frame)) = tokio::time::timeout_at(deadline.into(), reader.next()).await {
                match frame {
                    Ok(Frame::Message(m)) if m.response().is_some() => {
                        if !m.response().is_some_and(|r| r.eq_ignore_ascii_case("Success")) {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        replies.fetch_add(1, Ordering::Relaxed);
                        slots.add_permits(1);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
    };
    let mut wire = BytesMut::with_capacity(64 * 1024);
    let mut sequence = 0u64;
    while Instant::now() < deadline {
        let Ok(Ok(first)) = tokio::time::timeout_at(deadline.into(), slots.acquire()).await else { break };
        first.forget();
        // Whatever else the window allows goes out in the same write, as a busy client would.
        let mut batch = 1;
        while batch < 64 {
            match slots.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            batch += 1;
        }
        for _ in 0..batch {
            sequence += 1;
            let channel_id = format!("ceiling-{sequence}-{}", uuid::Uuid::new_v4().simple());
            bench_originate(&channel_id).to_action(&format!("c{sequence}")).encode_into(&mut wire)?;
        }
        writer.write_all(&wire).await?;
        wire.clear();
    }
    let _ = read_task.await;
    let elapsed = started.elapsed().min(duration);
    Ok(Ceiling { replies: replies.load(Ordering::Relaxed), errors: errors.load(Ordering::Relaxed), elapsed })
}

/// The model product's tap: a per-call session; the tap's id is the Originate's ChannelId.
pub struct LoginPerCall(pub AmiTarget);

impl Tapper for LoginPerCall {
    async fn tap(&mut self, _n: usize) -> Result<Tap, (u16, String)> {
        let id = uuid::Uuid::new_v4().to_string();
        let sent_unix_nanos = unix_nanos();
        per_call(&self.0, &id).await.map_err(|e| (0, format!("{e:#}")))?;
        Ok(Tap { id, sent_unix_nanos })
    }
}
