//! Waiting in tests: for a condition, never for a guessed amount of time.
//!
//! A loaded 2-core CI machine can be many times slower than a laptop, so nothing here bounds how
//! fast something must happen: `eventually` polls a condition until it holds and only gives up
//! after `patience()`, a deadline meant to catch a hang, not to measure speed. Timing claims live
//! in `scripts/bench`. It uses tokio's clock, so in a paused-time test it waits in virtual time.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::Duration;

/// How long one expectation may take before the test fails instead of hanging (60 s;
/// `DIALBACK_TEST_PATIENCE_S` changes it).
pub fn patience() -> Duration {
    let secs = std::env::var("DIALBACK_TEST_PATIENCE_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Duration::from_secs(secs)
}

/// Polls `check` until it returns `Ok`; after `patience()` panics with `what` and the last `Err`
/// (what was seen instead).
pub async fn eventually<T, E, F, Fut>(what: impl Display, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Debug,
{
    let limit = patience();
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("waited {limit:?} for {what}; last seen: {last:?}")
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}

/// `eventually` for a plain condition.
pub async fn until(what: impl Display, mut condition: impl FnMut() -> bool) {
    eventually(what, || std::future::ready(if condition() { Ok(()) } else { Err("not yet") })).await
}

/// Awaits `future`, failing the test (instead of hanging it) after `patience()`.
pub async fn within_patience<T>(what: impl Display, future: impl Future<Output = T>) -> T {
    let limit = patience();
    tokio::time::timeout(limit, future).await.unwrap_or_else(|_| panic!("waited {limit:?} for {what}"))
}
