//! The FastAGI server (`agi://HOST:4573/route?key=...`): Asterisk's own way to ask an external
//! program during a call, with nothing to install on the PBX. For each connection: read the
//! environment, decide the route (`crate::return_calls`), set the five `DIALBACK_*` variables one
//! command at a time, then half-close; Asterisk answers `HANGUP` and goes on with the dialplan.
//!
//! Asterisk never times a FastAGI server out (a silent one holds the caller unanswered for as
//! long as the socket stays open), so every conversation here has a deadline: past it, or on any
//! fault, the socket is closed and the dialplan, finding no route, sends the call to the office.

pub mod protocol;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::limits::Limiters;
use crate::return_calls::{ReturnCalls, Route, RouteRequest};
use crate::telemetry::Chain;
use protocol::{set_variable, AgiError, Environment, Reply};

/// Conversations served at once; more wait for a slot (Asterisk's connect then waits too).
const MAX_CONVERSATIONS: usize = 1024;
/// After the half-close, how long to wait for Asterisk's `HANGUP` and close before closing anyway.
const FAREWELL: Duration = Duration::from_millis(500);

/// Serves FastAGI on `listener` until `stop`.
pub fn spawn(
    listener: TcpListener,
    return_calls: ReturnCalls,
    limiters: Arc<Limiters>,
    deadline: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONVERSATIONS));
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), "FastAGI accept failed");
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let (return_calls, limiters) = (return_calls.clone(), limiters.clone());
            tokio::spawn(async move {
                let _slot = slot;
                converse(stream, peer, &return_calls, &limiters, deadline).await;
            });
        }
    })
}

/// One conversation, whatever happens within `deadline`, then the socket is closed.
async fn converse(
    stream: TcpStream,
    peer: SocketAddr,
    return_calls: &ReturnCalls,
    limiters: &Limiters,
    deadline: Duration,
) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let outcome = tokio::time::timeout(deadline, async {
        let env = Environment::read(&mut reader).await?;
        let route = answer_for(&env, peer, return_calls, limiters).await;
        for (name, value) in route.variables() {
            write.write_all(set_variable(name, &value)?.as_bytes()).await?;
            let reply = Reply::read(&mut reader).await?;
            if !reply.is_ok() {
                tracing::warn!(peer = %peer, variable = name, code = reply.code, reply = %reply.text, "Asterisk refused a variable");
            }
        }
        Ok::<_, AgiError>(route)
    })
    .await;
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(peer = %peer, error = %Chain(&e), "FastAGI conversation ended early; the dialplan sends the call to the office")
        }
        Err(_) => {
            metrics::counter!("dialback_agi_timeouts_total").increment(1);
            tracing::warn!(peer = %peer, deadline_ms = deadline.as_millis() as u64,
                "FastAGI conversation took too long; closing it so the caller is not held (the dialplan sends the call to the office)")
        }
    }
    // Done: half-close, let Asterisk say HANGUP and close, then close whatever it does.
    let _ = write.shutdown().await;
    let _ = tokio::time::timeout(FAREWELL, async {
        let mut sink = [0u8; 256];
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The route for a conversation's environment: the office unless a company's key and rules say
/// otherwise. A request with no valid key counts against its address like a failed login.
async fn answer_for(env: &Environment, peer: SocketAddr, return_calls: &ReturnCalls, limiters: &Limiters) -> Route {
    let (path, params) = env.script();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if path != "route" {
        tracing::warn!(peer = %peer, path, "FastAGI request for an unknown script; use agi://HOST:PORT/route?key=...");
        return Route::office();
    }
    let request = RouteRequest {
        key: param("key"),
        caller: env.get("agi_callerid").unwrap_or_default().to_owned(),
        did: env.get("agi_arg_1").or_else(|| env.get("agi_extension")).map(str::to_owned).filter(|d| !d.is_empty()),
        uniqueid: env.get("agi_uniqueid").map(str::to_owned).filter(|u| !u.is_empty()),
        peer: Some(peer.ip()),
    };
    match return_calls.route(&request).await {
        Ok(route) => route,
        Err(refused) => {
            refused.count_and_log(limiters, &request);
            Route::office()
        }
    }
}
