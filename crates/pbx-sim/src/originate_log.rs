//! `--originate-log FILE` (benchmarks): one line `<ChannelId> <unix_time_nanos>` per Originate, taken
//! when the session reads it, so a load generator can measure tap-to-originate latency by joining
//! on the ChannelId it got back from the API.
//!
//! Sessions only timestamp and queue a line; one task appends them to the file, flushing every
//! [`FLUSH_EVERY`] (so a reader sees lines while the simulator runs) and when it stops. Off by
//! default, and then nothing is timestamped or queued at all.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use super::pbx::{unix_now, Pbx};
use dialback_logging::Chain;

const FLUSH_EVERY: Duration = Duration::from_millis(100);

type Line = (String, u128);

/// The sessions' handle: cheap to call from any session.
pub(crate) struct OriginateLog {
    lines: mpsc::UnboundedSender<Line>,
}

/// The file end, until [`Writer::spawn`] hands it to its task.
pub(crate) struct Writer {
    file: std::io::BufWriter<std::fs::File>,
    lines: mpsc::UnboundedReceiver<Line>,
}

impl OriginateLog {
    /// Opens `path` for appending (created when missing).
    pub fn open(path: &Path) -> anyhow::Result<(OriginateLog, Writer)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the originate log {}", path.display()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((OriginateLog { lines: tx }, Writer { file: std::io::BufWriter::with_capacity(64 * 1024, file), lines: rx }))
    }

    /// Records an Originate carrying `channel_id`, read just now.
    pub fn record(&self, channel_id: &str) {
        let _ = self.lines.send((channel_id.to_owned(), unix_now().as_nanos()));
    }
}

impl Writer {
    /// Appends lines until the simulator stops, then writes what is left and flushes.
    pub fn spawn(mut self, pbx: &Pbx) {
        let stop = pbx.stop.clone();
        pbx.tasks.spawn(async move {
            let mut flush = tokio::time::interval(FLUSH_EVERY);
            loop {
                tokio::select! {
                    line = self.lines.recv() => match line {
                        Some(line) => self.write(line),
                        None => break,
                    },
                    _ = flush.tick() => self.flush(),
                    _ = stop.cancelled() => break,
                }
            }
            while let Ok(line) = self.lines.try_recv() {
                self.write(line);
            }
            self.flush();
        });
    }

    fn write(&mut self, (channel_id, nanos): Line) {
        if let Err(e) = writeln!(self.file, "{channel_id} {nanos}") {
            tracing::warn!(error = %Chain(&e), "cannot write the originate log");
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.file.flush() {
            tracing::warn!(error = %Chain(&e), "cannot flush the originate log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimConfig;

    #[tokio::test]
    async fn lines_are_appended_and_flushed_when_the_simulator_stops() {
        let path = std::env::temp_dir().join(format!("pbx-sim-originate-log-{}.txt", uuid::Uuid::new_v4()));
        let (log, writer) = OriginateLog::open(&path).unwrap();
        let pbx = Pbx::new(SimConfig::default(), None);
        writer.spawn(&pbx);
        let before = unix_now().as_nanos();
        log.record("cb-1");
        log.record("cb-2");
        pbx.stop.cancel();
        pbx.tasks.wait_idle().await;
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<(&str, u128)> =
            text.lines().map(|l| l.split_once(' ').unwrap()).map(|(id, t)| (id, t.parse().unwrap())).collect();
        assert_eq!(lines.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ["cb-1", "cb-2"]);
        assert!(lines.iter().all(|&(_, t)| t >= before && t <= unix_now().as_nanos()));
    }
}
