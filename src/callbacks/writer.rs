//! Writes new attempts. Taps that arrive while earlier ones are being written wait in a queue and
//! go together in one statement (`store::callbacks::inserts`): a statement per attempt cost
//! PostgreSQL more in its setup than in its writes (BENCHMARKS.md, "The write path"). Nothing
//! waits on a timer: a tap that finds a statement free is written at once, alone; only under load
//! do attempts gather, as many as came while the statements before them ran.
//!
//! A tap's answer is still given only once its attempt is committed: each waits for its own.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::domain::registry::Order;
use crate::store::callbacks::{CallbackRow, DecidedOn, Inserted, NewCallback};
use crate::store::idempotency::IdempotencyClaim;
use crate::store::{self, StoreError};
use crate::telemetry::Chain;

/// Statements writing attempts at once: each holds a pooled connection while it runs (a batch
/// written again one by one, one for each of its attempts). Fewer let
/// more attempts gather in each (PostgreSQL CPU per callback at 64 concurrent taps: 0.29 ms with
/// four, 0.26 with two, 0.24 with one, BENCHMARKS.md); two, so that one slow statement does not
/// hold every tap of the process.
const STATEMENTS_AT_ONCE: usize = 2;
/// The most attempts one statement writes.
const MOST_IN_ONE_STATEMENT: usize = 64;

/// A new attempt, owned, as it waits to be written (see `store::callbacks::NewCallback`).
pub struct NewAttempt {
    pub row: CallbackRow,
    /// Its first event's data.
    pub event: String,
    /// The request's `Idempotency-Key` and the hash of the request.
    pub claim: Option<(String, String)>,
    /// The courier's phone and the order (None: it did not exist) the tap was decided on.
    pub decided_on: Option<(String, Option<Order>)>,
    pub owner: Option<Uuid>,
}

/// The borrowed parts of a [`NewAttempt`] that `NewCallback` points into.
struct Parts<'a> {
    claim: Option<IdempotencyClaim<'a>>,
    decided_on: Option<DecidedOn<'a>>,
}

impl NewAttempt {
    fn parts(&self) -> Parts<'_> {
        Parts {
            claim: self.claim.as_ref().map(|(key, request_hash)| IdempotencyClaim { key, request_hash }),
            decided_on: self
                .decided_on
                .as_ref()
                .map(|(courier_phone, order)| DecidedOn { courier_phone, order: order.as_ref() }),
        }
    }

    fn as_new<'a>(&'a self, parts: &'a Parts<'a>) -> NewCallback<'a> {
        NewCallback {
            row: &self.row,
            event: &self.event,
            claim: parts.claim.as_ref(),
            decided_on: parts.decided_on,
            owner: self.owner,
        }
    }
}

struct Queued {
    attempt: NewAttempt,
    answer: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// The queue of attempts to write, and the task that writes them.
pub struct AttemptWriter {
    db: deadpool_postgres::Pool,
    queue: mpsc::UnboundedSender<Queued>,
}

impl AttemptWriter {
    /// Starts the writing task on the current runtime; it ends when the writer is dropped, once
    /// the attempts queued before are handed to their statements.
    pub fn start(db: deadpool_postgres::Pool) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(write_queued(db.clone(), queued));
        AttemptWriter { db, queue }
    }

    /// Writes `attempt` (with others queued at the same time, if any) and returns once it is
    /// committed, or known not to be.
    pub async fn write(&self, attempt: NewAttempt) -> Result<Inserted, StoreError> {
        let (answer, answered) = oneshot::channel();
        metrics::gauge!("dialback_attempt_write_queue").increment(1.0);
        if let Err(mpsc::error::SendError(Queued { attempt, .. })) = self.queue.send(Queued { attempt, answer }) {
            // The writing task is gone (the runtime is stopping): write it here.
            metrics::gauge!("dialback_attempt_write_queue").decrement(1.0);
            return write_alone(&self.db, &attempt).await;
        }
        // No answer means the task writing it stopped first (a panic, or the runtime stopping),
        // with the attempt committed or not (`StoreError::Interrupted`).
        answered.await.unwrap_or(Err(StoreError::Interrupted))
    }
}

/// Takes what is queued, up to [`MOST_IN_ONE_STATEMENT`], whenever one of the
/// [`STATEMENTS_AT_ONCE`] is free, and writes it.
async fn write_queued(db: deadpool_postgres::Pool, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let statements = Arc::new(Semaphore::new(STATEMENTS_AT_ONCE));
    loop {
        let Ok(statement) = statements.clone().acquire_owned().await else { return };
        let Some(first) = queued.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MOST_IN_ONE_STATEMENT {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        metrics::gauge!("dialback_attempt_write_queue").decrement(batch.len() as f64);
        metrics::histogram!("dialback_attempts_per_insert").record(batch.len() as f64);
        let db = db.clone();
        tokio::spawn(async move {
            write_batch(&db, batch).await;
            drop(statement);
        });
    }
}

/// Writes a batch in one statement. When that fails because of one of its attempts (two claiming
/// one free key, a row that cannot be written) each is written alone, so that failure is that
/// attempt's own. When the database is unavailable every attempt is answered so: written again
/// they would wait for the same database, and after a commit whose answer was lost they would
/// meet their own rows.
async fn write_batch(db: &deadpool_postgres::Pool, batch: Vec<Queued>) {
    if batch.len() > 1 {
        match write_together(db, &batch).await {
            Ok(inserted) => {
                for (queued, inserted) in batch.into_iter().zip(inserted) {
                    let _ = queued.answer.send(Ok(inserted));
                }
                return;
            }
            Err(e) if e.is_unavailable() => {
                let e = Arc::new(e);
                for queued in batch {
                    let _ = queued.answer.send(Err(StoreError::Shared(e.clone())));
                }
                return;
            }
            Err(e) => tracing::debug!(
                attempts = batch.len(),
                error = %Chain(&e),
                "attempts not written in one statement; writing each alone"
            ),
        }
    }
    futures_util::future::join_all(batch.into_iter().map(|queued| async move {
        let written = write_alone(db, &queued.attempt).await;
        let _ = queued.answer.send(written);
    }))
    .await;
}

async fn write_together(db: &deadpool_postgres::Pool, batch: &[Queued]) -> Result<Vec<Inserted>, StoreError> {
    let client = store::client(db).await?;
    let parts: Vec<Parts<'_>> = batch.iter().map(|q| q.attempt.parts()).collect();
    let news: Vec<NewCallback<'_>> = batch.iter().zip(&parts).map(|(q, parts)| q.attempt.as_new(parts)).collect();
    store::callbacks::inserts(&client, &news).await
}

async fn write_alone(db: &deadpool_postgres::Pool, attempt: &NewAttempt) -> Result<Inserted, StoreError> {
    let client = store::client(db).await?;
    let parts = attempt.parts();
    store::callbacks::insert(&client, &attempt.as_new(&parts)).await
}
