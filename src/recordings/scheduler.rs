//! The background task that syncs every company's recordings: each company with a recordings
//! source is synced every `poll_interval_s` (the first run one interval after its source is
//! first seen); while its FTP server fails, the interval doubles up to 15 minutes, and each
//! failure is logged and counted. Owned by the application, stopped by its cancellation token.
//!
//! The schedule lives in memory because it only decides *when* to look; *what* was fetched is in
//! the database, so two replicas each running this task still fetch every file once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Recordings;
use crate::domain::company::TenantId;
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

/// What the scheduler drives: which companies to sync how often, and one sync run. The scheduler
/// decides only when; [`Recordings`] is the real one (tests drive it with a fake, in paused time).
pub(crate) trait SyncJobs: Send + Sync + 'static {
    /// Every company with a recordings source, and its poll interval.
    fn sources(&self) -> impl Future<Output = Result<Vec<(TenantId, Duration)>, String>> + Send;
    /// One sync of `tenant`; the error says why it failed.
    fn run(&self, tenant: &TenantId) -> impl Future<Output = Result<(), String>> + Send;
}

impl SyncJobs for Recordings {
    async fn sources(&self) -> Result<Vec<(TenantId, Duration)>, String> {
        let db = store::client(&self.db).await.map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        let sources = store::recordings::sources(&**db).await.map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        Ok(sources.into_iter().map(|c| (c.tenant, Duration::from_secs(u64::from(c.source.poll_interval_s)))).collect())
    }

    async fn run(&self, tenant: &TenantId) -> Result<(), String> {
        self.sync(tenant).await.map(|_| ()).map_err(|e| format!("{:#}", anyhow::Error::from(e)))
    }
}

impl Recordings {
    /// Starts the background syncs; they stop (running downloads are dropped, their claims
    /// lapse) when `stop` is cancelled.
    pub fn spawn_scheduler(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(schedule(self.clone(), stop))
    }
}

async fn schedule<J: SyncJobs>(jobs: Arc<J>, stop: CancellationToken) {
    let mut schedules: HashMap<TenantId, Schedule> = HashMap::new();
    let mut runs: JoinSet<(TenantId, Result<(), String>)> = JoinSet::new();
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
                    if let Err(error) = result {
                        tracing::warn!(%tenant, failures = schedule.failures, retry_in_s = delay.as_secs(), error,
                            "recordings sync failed; will retry");
                    }
                }
            }
            _ = tick.tick() => {
                if reloaded.is_none_or(|at| at.elapsed() >= RELOAD_EVERY) {
                    reload(jobs.as_ref(), &mut schedules).await;
                    reloaded = Some(Instant::now());
                }
                let now = Instant::now();
                for (tenant, schedule) in schedules.iter_mut() {
                    if runs.len() >= MAX_CONCURRENT_RUNS {
                        break;
                    }
                    if !schedule.running && schedule.next_run <= now {
                        schedule.running = true;
                        let (jobs, tenant) = (jobs.clone(), tenant.clone());
                        runs.spawn(async move {
                            let result = jobs.run(&tenant).await;
                            (tenant, result)
                        });
                    }
                }
            }
        }
    }
    runs.shutdown().await;
}

/// Picks up companies that configured a source, forgets those that removed it, and takes changed
/// poll intervals into account.
async fn reload<J: SyncJobs>(jobs: &J, schedules: &mut HashMap<TenantId, Schedule>) {
    let sources = match jobs.sources().await {
        Ok(sources) => sources,
        Err(error) => {
            tracing::warn!(error, "cannot read the recordings sources; keeping the current schedule");
            return;
        }
    };
    schedules.retain(|tenant, _| sources.iter().any(|(t, _)| t == tenant));
    for (tenant, poll) in sources {
        let schedule = schedules.entry(tenant).or_insert_with(|| Schedule {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Companies with fixed poll intervals whose runs fail while `failing` says so; notes when
    /// each run started (in tokio's clock, so paused time can be read exactly).
    #[derive(Default)]
    struct Fake {
        sources: Mutex<Vec<(TenantId, Duration)>>,
        failing: Mutex<bool>,
        runs: Mutex<Vec<(TenantId, Instant)>>,
    }

    impl SyncJobs for Fake {
        async fn sources(&self) -> Result<Vec<(TenantId, Duration)>, String> {
            Ok(self.sources.lock().unwrap().clone())
        }

        async fn run(&self, tenant: &TenantId) -> Result<(), String> {
            self.runs.lock().unwrap().push((tenant.to_owned(), Instant::now()));
            if *self.failing.lock().unwrap() {
                Err("the FTP server is down".into())
            } else {
                Ok(())
            }
        }
    }

    /// Seconds from `start` of each run of `tenant`.
    fn runs_of(fake: &Fake, tenant: &TenantId, start: Instant) -> Vec<u64> {
        let runs = fake.runs.lock().unwrap();
        runs.iter().filter(|(t, _)| t == tenant).map(|(_, at)| (*at - start).as_secs()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn each_company_is_synced_every_poll_interval_from_one_interval_after_it_appears() {
        let fake = Arc::new(Fake::default());
        fake.sources.lock().unwrap().extend([
            (TenantId::stored("a"), Duration::from_secs(5)),
            (TenantId::stored("b"), Duration::from_secs(60)),
        ]);
        let stop = CancellationToken::new();
        let start = Instant::now();
        let task = tokio::spawn(schedule(fake.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(130)).await;
        stop.cancel();
        task.await.unwrap();
        // The sources are read at the first tick; runs go at the first tick at or after their time.
        let a = runs_of(&fake, &TenantId::stored("a"), start);
        assert_eq!(&a[..4], [5, 10, 15, 20], "{a:?}");
        assert!(a.windows(2).all(|w| w[1] - w[0] == 5), "{a:?}");
        assert_eq!(runs_of(&fake, &TenantId::stored("b"), start), [60, 120]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_company_backs_off_and_returns_to_its_interval_when_it_recovers() {
        let fake = Arc::new(Fake::default());
        fake.sources.lock().unwrap().push((TenantId::stored("a"), Duration::from_secs(60)));
        *fake.failing.lock().unwrap() = true;
        let stop = CancellationToken::new();
        let start = Instant::now();
        let task = tokio::spawn(schedule(fake.clone(), stop.clone()));
        // Runs at 60, then 120 s later, 240 s later, 480 s later, then every 900 s.
        tokio::time::sleep(Duration::from_secs(60 + 120 + 240 + 480 + 900 + 1)).await;
        assert_eq!(runs_of(&fake, &TenantId::stored("a"), start), [60, 180, 420, 900, 1800]);
        *fake.failing.lock().unwrap() = false;
        tokio::time::sleep(Duration::from_secs(900 + 120)).await;
        stop.cancel();
        task.await.unwrap();
        assert_eq!(runs_of(&fake, &TenantId::stored("a"), start), [60, 180, 420, 900, 1800, 2700, 2760, 2820]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_interval_applies_at_the_next_reload_and_a_removed_source_stops() {
        let fake = Arc::new(Fake::default());
        fake.sources.lock().unwrap().push((TenantId::stored("a"), Duration::from_secs(3600)));
        let stop = CancellationToken::new();
        let start = Instant::now();
        let task = tokio::spawn(schedule(fake.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(7)).await;
        *fake.sources.lock().unwrap() = vec![(TenantId::stored("a"), Duration::from_secs(5))];
        tokio::time::sleep(Duration::from_secs(20)).await;
        fake.sources.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_secs(60)).await;
        stop.cancel();
        task.await.unwrap();
        // Reloaded at 10 s: the next run is 5 s later; after the source is gone (reload at 30 s)
        // nothing runs.
        assert_eq!(runs_of(&fake, &TenantId::stored("a"), start), [15, 20, 25]);
    }

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
