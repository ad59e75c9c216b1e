//! A TCP delay proxy that puts a WAN between a client and the simulator: every chunk is passed on
//! `one_way` after it was read, in order, byte for byte, in both directions. A new connection is
//! opened upstream only 1.5 round trips after the client connects, when a real server would
//! accept it (SYN, SYN-ACK, ACK), so a connection per call costs what it costs over a WAN: the
//! banner arrives two round trips after connecting, as it would.
//!
//! Loopback only: it refuses to listen or connect anywhere else.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks in flight per direction before the reader waits (backpressure, bounded memory).
const IN_FLIGHT_CHUNKS: usize = 4096;

pub async fn run(
    listen: SocketAddr,
    upstream: SocketAddr,
    one_way: Duration,
    lifetime: Duration,
) -> anyhow::Result<()> {
    anyhow::ensure!(listen.ip().is_loopback() && upstream.ip().is_loopback(), "the delay proxy is for loopback only");
    let listener = TcpListener::bind(listen).await?;
    eprintln!("delay proxy {listen} -> {upstream}, {} ms each way", one_way.as_millis());
    let stop = tokio::time::sleep(lifetime);
    tokio::pin!(stop);
    loop {
        let (client, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut stop => return Ok(()),
        };
        tokio::spawn(async move {
            if let Err(e) = relay(client, upstream, one_way).await {
                eprintln!("delay proxy: {e}");
            }
        });
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, one_way: Duration) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    tokio::time::sleep(one_way * 3).await;
    let server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = server.into_split();
    tokio::join!(pipe(client_rd, server_wr, one_way), pipe(server_rd, client_wr, one_way));
    Ok(())
}

/// Reads chunks as they come and writes each `delay` after it was read; a reader's end of stream
/// is passed on (delayed) as a write shutdown.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
            }
        }
        // The end of stream travels the same delay as data.
        let _ = tx.send((Instant::now() + delay, Bytes::new())).await;
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() {
                break;
            }
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
