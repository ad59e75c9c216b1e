//! Rate limits (governor, keyed): callbacks per courier and per tenant, failed authentications per
//! client IP. A janitor forgets idle keys so memory stays bounded.
//!
//! The limits are the company's, not the process's: with N processes serving (alive, listening
//! and not stopping, src/cluster.rs) each allows 1/N of every limit (rounded up), so adding a
//! process does not multiply what a courier may do. A load balancer that spreads requests (nothing
//! sticky) gives each courier and company its whole limit; the slack is the rounding up, and a
//! burst when N changes (the buckets start full again).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio_util::sync::CancellationToken;

use crate::config::RateConfig;
use crate::domain::company::TenantId;

/// A limit said no: what was limited, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}; retry in {} s", self.retry_after_s())]
pub struct Limited {
    /// Which limit: `tenant`, `courier` or `auth_failures` (the metric's label).
    pub limit: &'static str,
    pub what: &'static str,
    pub wait: Duration,
}

impl Limited {
    /// Whole seconds to wait, at least 1 (what `Retry-After` says).
    pub fn retry_after_s(&self) -> u64 {
        (self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0)).max(1)
    }
}

pub struct Limiters {
    /// One clock for every check (creating one per check costs a `cpuid`, a VM exit on some hosts).
    clock: DefaultClock,
    config: RateConfig,
    /// This process's share, rebuilt when the number of processes changes.
    share: RwLock<Arc<Share>>,
}

struct Share {
    processes: u32,
    courier: DefaultKeyedRateLimiter<(TenantId, String)>,
    tenant: DefaultKeyedRateLimiter<TenantId>,
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
}

impl Share {
    fn new(cfg: &RateConfig, processes: u32) -> Self {
        let part = |limit: u32| nz(limit.div_ceil(processes.max(1)));
        let per_second = part(cfg.tenant_per_second);
        Share {
            processes,
            courier: DefaultKeyedRateLimiter::keyed(Quota::per_minute(part(cfg.courier_per_minute))),
            tenant: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(nz(per_second.get().saturating_mul(2))),
            ),
            auth_failures: DefaultKeyedRateLimiter::keyed(Quota::per_minute(part(cfg.auth_failures_per_minute))),
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least 1")
}

fn limited(limit: &'static str, what: &'static str, wait: Duration) -> Limited {
    metrics::counter!("dialback_rate_limited_total", "limit" => limit).increment(1);
    Limited { limit, what, wait }
}

impl Limiters {
    pub fn new(cfg: &RateConfig) -> Arc<Self> {
        let share = RwLock::new(Arc::new(Share::new(cfg, 1)));
        Arc::new(Self { clock: DefaultClock::default(), config: cfg.clone(), share })
    }

    /// `processes` are alive (this one included): each allows its share of every limit.
    pub fn share_among(&self, processes: u32) {
        let processes = processes.max(1);
        if self.share().processes != processes {
            tracing::info!(processes, "rate limits shared among the processes serving");
            *self.share.write().expect("limits lock") = Arc::new(Share::new(&self.config, processes));
        }
    }

    fn share(&self) -> Arc<Share> {
        self.share.read().expect("limits lock").clone()
    }

    /// One callback by `courier` of `tenant`.
    pub fn callback(&self, tenant: &TenantId, courier: &str) -> Result<(), Limited> {
        let now = self.clock.now();
        let share = self.share();
        if let Err(until) = share.tenant.check_key(tenant) {
            return Err(limited(
                "tenant",
                "this company places too many callbacks right now",
                until.wait_time_from(now),
            ));
        }
        if let Err(until) = share.courier.check_key(&(tenant.clone(), courier.to_owned())) {
            return Err(limited("courier", "too many callbacks from this courier", until.wait_time_from(now)));
        }
        Ok(())
    }

    /// Counts a failed authentication from `ip`; past the limit the answer becomes 429.
    pub fn auth_failure(&self, ip: IpAddr) -> Result<(), Limited> {
        let now = self.clock.now();
        self.share().auth_failures.check_key(&ip).map_err(|until| {
            limited("auth_failures", "too many failed authentications from this address", until.wait_time_from(now))
        })
    }

    fn forget_idle(&self) {
        let share = self.share();
        share.courier.retain_recent();
        share.courier.shrink_to_fit();
        share.tenant.retain_recent();
        share.tenant.shrink_to_fit();
        share.auth_failures.retain_recent();
        share.auth_failures.shrink_to_fit();
    }

    pub fn tracked_keys(&self) -> usize {
        let share = self.share();
        share.courier.len() + share.tenant.len() + share.auth_failures.len()
    }

    pub fn spawn_janitor(self: &Arc<Self>, stop: CancellationToken) {
        let limiters = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => limiters.forget_idle(),
                    _ = stop.cancelled() => break,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_courier_over_the_limit_is_told_when_to_retry() {
        let l =
            Limiters::new(&RateConfig { courier_per_minute: 2, tenant_per_second: 100, auth_failures_per_minute: 5 });
        assert!(l.callback(&TenantId::stored("t"), "c").is_ok());
        assert!(l.callback(&TenantId::stored("t"), "c").is_ok());
        let err = l.callback(&TenantId::stored("t"), "c").unwrap_err();
        assert_eq!(err.limit, "courier");
        assert!(err.retry_after_s() >= 1);
        assert!(l.callback(&TenantId::stored("t"), "other").is_ok(), "limits are per courier");
        assert!(l.callback(&TenantId::stored("t2"), "c").is_ok(), "and per tenant");
    }

    #[test]
    fn each_of_n_processes_allows_its_share_rounded_up() {
        let l =
            Limiters::new(&RateConfig { courier_per_minute: 5, tenant_per_second: 100, auth_failures_per_minute: 5 });
        l.share_among(2);
        for _ in 0..3 {
            assert!(l.callback(&TenantId::stored("t"), "c").is_ok());
        }
        assert_eq!(
            l.callback(&TenantId::stored("t"), "c").unwrap_err().limit,
            "courier",
            "3 of 5 here, the rest elsewhere"
        );
        l.share_among(1);
        for _ in 0..5 {
            assert!(l.callback(&TenantId::stored("t"), "c").is_ok(), "alone again: the whole limit");
        }
        assert!(l.callback(&TenantId::stored("t"), "c").is_err());
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let l = Limiters::new(&RateConfig::default());
        l.callback(&TenantId::stored("t"), "c").unwrap();
        assert!(l.tracked_keys() > 0);
        l.forget_idle();
        // A key that still limits is kept; a fully replenished one is dropped. Both are bounded.
        assert!(l.tracked_keys() <= 2);
    }
}
