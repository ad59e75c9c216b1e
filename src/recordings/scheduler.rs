//! The background task that syncs every company's recordings: each company with a recordings
//! source is synced every `poll_interval_s` (the first run one interval after its source is
//! first seen); while its FTP server fails, the interval doubles up to 15 minutes, and each
//! failure is logged and counted. Owned by the application, stopped by its cancellation token.
//!
//! The schedule lives in memory because it only decides *when* to look; *what* was fetched is in
//! the database, so two replicas each running this task still fetch every file once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Recordings, SyncError, SyncReport};
use crate::store;

/// At most this many companies are synced at once by one process.
const MAX_CONCURRENT_RUNS: usize = 8;
/// How often the list of companies (and their poll intervals) is read again.
const RELOAD_EVERY: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

struct Schedule {
    poll: Duration,
    next_run: Instant,
    failures: u32,
    running: bool,
}

impl Schedule {
    /// After `failures` failed runs in a row: the poll interval doubled each time, capped.
    fn delay(&self) -> Duration {
        if self.failures == 0 {
            return self.poll;
        }
        let doubled = self.poll.saturating_mul(1 << self.failures.min(10));
        doubled.min(MAX_BACKOFF.max(self.poll))
    }
}

impl Recordings {
    /// Starts the background syncs; they stop (running downloads are dropped, their claims
    /// lapse) when `stop` is cancelled.
    pub fn spawn_scheduler(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move { service.schedule(stop).await })
    }

    async fn schedule(self: Arc<Self>, stop: CancellationToken) {
        let mut schedules: HashMap<String, Schedule> = HashMap::new();
        let mut runs: JoinSet<(String, Result<SyncReport, SyncError>)> = JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut reloaded: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(done) = runs.join_next() => {
                    let Ok((tenant, result)) = done else { continue };
                    if let Some(schedule) = schedules.get_mut(&tenant) {
                        schedule.running = false;
                        schedule.failures = if result.is_ok() { 0 } else { schedule.failures + 1 };
                        let delay = schedule.delay();
                        schedule.next_run = Instant::now() + delay;
                        if let Err(e) = result {
                            tracing::warn!(tenant, failures = schedule.failures, retry_in_s = delay.as_secs(),
                                error = %e, "recordings sync failed; will retry");
                        }
                    }
                }
                _ = tick.tick() => {
                    if reloaded.is_none_or(|at| at.elapsed() >= RELOAD_EVERY) {
                        self.reload(&mut schedules).await;
                        reloaded = Some(Instant::now());
                    }
                    let now = Instant::now();
                    for (tenant, schedule) in schedules.iter_mut() {
                        if runs.len() >= MAX_CONCURRENT_RUNS {
                            break;
                        }
                        if !schedule.running && schedule.next_run <= now {
                            schedule.running = true;
                            let (service, tenant) = (self.clone(), tenant.clone());
                            runs.spawn(async move {
                                let result = service.sync(&tenant).await;
                                (tenant, result)
                            });
                        }
                    }
                }
            }
        }
        runs.shutdown().await;
    }

    /// Picks up companies that configured a source, forgets those that removed it, and takes
    /// changed poll intervals into account.
    async fn reload(&self, schedules: &mut HashMap<String, Schedule>) {
        let sources = match store::client(&self.db).await {
            Ok(db) => store::recordings::sources(&**db).await,
            Err(e) => Err(e),
        };
        let sources = match sources {
            Ok(sources) => sources,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the recordings sources; keeping the current schedule");
                return;
            }
        };
        schedules.retain(|tenant, _| sources.iter().any(|s| &s.tenant == tenant));
        for configured in sources {
            let poll = Duration::from_secs(u64::from(configured.source.poll_interval_s));
            let schedule = schedules.entry(configured.tenant).or_insert_with(|| Schedule {
                poll,
                next_run: Instant::now() + poll,
                failures: 0,
                running: false,
            });
            if schedule.poll != poll {
                // A shorter interval applies now, not after the old one.
                schedule.next_run = schedule.next_run.min(Instant::now() + poll);
                schedule.poll = poll;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_from_the_poll_interval_up_to_fifteen_minutes() {
        let mut s = Schedule { poll: Duration::from_secs(60), next_run: Instant::now(), failures: 0, running: false };
        let mut delays = Vec::new();
        for failures in 0..6 {
            s.failures = failures;
            delays.push(s.delay().as_secs());
        }
        assert_eq!(delays, [60, 120, 240, 480, 900, 900]);
        s.poll = Duration::from_secs(3600);
        s.failures = 3;
        assert_eq!(s.delay().as_secs(), 3600, "never shorter than the poll interval");
    }
}
