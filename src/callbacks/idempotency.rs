//! The `Idempotency-Key` protocol: a flaky mobile network retrying a tap never rings anyone twice.
//!
//! The key is claimed by the statement that writes the attempt (see `store::idempotency`), so of
//! concurrent duplicates exactly one reaches the PBX. A placed call needs nothing more: a retry is
//! answered with the attempt as it is by then. What happens to the key of a request that was not
//! placed, and what a request that found its key taken is answered, is decided here:
//! [`CallbackService::next_action`] says what to do next, the handler does it.

use std::time::Duration;

use serde_json::Value;

use super::{CallbackService, OnRetry, PlaceError};
use crate::domain::company::TenantId;
use crate::domain::FieldError;
use crate::store::callbacks::CallbackRow;
use crate::store::idempotency::IdempotencyClaim;
use crate::store::{self, StoreError};

/// How long a retry waits for the first request's answer (it is placing the call meanwhile).
const WAIT_FOR_FIRST: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

/// A request's `Idempotency-Key` and the hash of the request it came with.
pub struct Claim {
    key: String,
    request_hash: String,
}

impl Claim {
    /// `key` as the client sent it (1-200 printable ASCII characters), for `request`.
    pub fn new(key: &str, request: &impl serde::Serialize) -> Result<Claim, FieldError> {
        if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(crate::domain::bad(
                "Idempotency-Key",
                "Idempotency-Key must be 1-200 printable ASCII characters",
            ));
        }
        let canonical = serde_json::to_vec(request).expect("a request serialises");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical);
        Ok(Claim { key: key.to_owned(), request_hash: hex::encode(digest.as_ref()) })
    }

    /// As the attempt's insert claims it.
    pub fn as_store(&self) -> IdempotencyClaim<'_> {
        IdempotencyClaim { key: &self.key, request_hash: &self.request_hash }
    }
}

/// What to answer a request with a key that was not placed.
pub enum NextAction {
    /// Its own answer (the problem it got).
    AnswerThis,
    /// The first request's stored answer (a refusal or an error), as it was given.
    Replay { status: u16, body: Value },
    /// The call the first request placed, as it is now.
    ReplayPlaced(Box<CallbackRow>),
    /// The key was used for a different request.
    KeyReused,
    /// The first request has not answered yet.
    InProgress,
}

impl CallbackService {
    /// Decides what a request with `claim` that was not placed (`error`) is answered with; its own
    /// answer is `answer` (status and problem body), kept for retries when they must get it too.
    pub async fn next_action(
        &self,
        tenant: &TenantId,
        courier: &str,
        claim: &Claim,
        error: &PlaceError,
        answer: (u16, &Value),
    ) -> Result<NextAction, StoreError> {
        let mut db = store::client(&self.db).await?;
        if matches!(error, PlaceError::KeyTaken) {
            drop(db);
            return self.earlier_answer(tenant, courier, claim).await;
        }
        match error.on_retry() {
            OnRetry::SameAnswer => {
                store::idempotency::complete(&db, tenant, courier, &claim.key, answer.0, answer.1).await?;
            }
            OnRetry::TryAgain => store::idempotency::release(&db, tenant, courier, &claim.key).await?,
            // A retry is answered as one even when this request would be refused now (the courier
            // or the settings changed): the first answer stands.
            OnRetry::NothingWritten => {
                if store::idempotency::is_taken(&mut db, tenant, courier, &claim.as_store()).await? {
                    drop(db);
                    return self.earlier_answer(tenant, courier, claim).await;
                }
            }
        }
        Ok(NextAction::AnswerThis)
    }

    /// The answer of the request that took the key first, once there is one (it may still be
    /// placing the call).
    async fn earlier_answer(&self, tenant: &TenantId, courier: &str, claim: &Claim) -> Result<NextAction, StoreError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
        loop {
            let db = store::client(&self.db).await?;
            // Given back meanwhile (its PBX could not be reached): this request's answer stands.
            let Some(earlier) = store::idempotency::lookup(&db, tenant, courier, &claim.key).await? else {
                return Ok(NextAction::AnswerThis);
            };
            if earlier.request_hash != claim.request_hash {
                return Ok(NextAction::KeyReused);
            }
            if let Some((status, body)) = earlier.response {
                return Ok(NextAction::Replay { status, body });
            }
            // Placed: the call was queued once the tracker has recorded its ActionID, milliseconds
            // after the first answer.
            if let Some(id) = earlier.callback_id {
                if let Some(row) = store::callbacks::get(&db, tenant, id).await?.filter(|row| row.action_id.is_some()) {
                    return Ok(NextAction::ReplayPlaced(Box::new(row)));
                }
            }
            drop(db);
            if tokio::time::Instant::now() >= deadline {
                return Ok(NextAction::InProgress);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
