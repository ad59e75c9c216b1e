//! A session's cap on originates in flight. Asterisk runs one thread per asynchronous originate
//! until its first leg resolves, so each PBX gets a cap; every dialback process holds its share of
//! it, and the share changes while the session is open, as processes start and stop
//! ([`crate::pool::AmiPool::share_among`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many originates are in flight and how many may be.
#[derive(Debug)]
pub(crate) struct Slots {
    taken: AtomicUsize,
    limit: AtomicUsize,
}

/// One originate in flight; its slot is free again when this is dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Slots { taken: AtomicUsize::new(0), limit: AtomicUsize::new(limit) })
    }

    /// A slot, or the limit that is reached.
    pub(crate) fn take(self: &Arc<Self>) -> Result<Slot, usize> {
        let limit = self.limit.load(Ordering::Acquire);
        match self.taken.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| (t < limit).then_some(t + 1)) {
            Ok(_) => Ok(Slot(self.clone())),
            Err(_) => Err(limit),
        }
    }

    /// A new limit, from now on: lowered below what is in flight, it refuses until enough end.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    pub(crate) fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_limit_frees_slots_at_once_and_a_lowered_one_refuses_until_enough_end() {
        let slots = Slots::new(1);
        let first = slots.take().expect("one slot");
        assert_eq!(slots.take().err(), Some(1));
        slots.set_limit(2);
        let second = slots.take().expect("the raised limit holds two");
        assert_eq!(slots.taken(), 2);
        slots.set_limit(1);
        drop(first);
        assert_eq!(slots.take().err(), Some(1), "one still in flight fills the lowered limit");
        drop(second);
        let _third = slots.take().expect("free once both ended");
        assert_eq!(slots.take().err(), Some(1));
    }
}
