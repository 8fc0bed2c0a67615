//! Resolving an exception of a shard's queue through that shard's log, so that every replica
//! agrees on it and two members resolving at once cannot both win.
//!
//! A rejection is one command. A retry is three steps, each idempotent: the shard's log claims
//! the exception for the corrected transaction (its new id and content are recorded); the
//! transaction is submitted as any other (to its partner's shard, which may be another one;
//! a repeat answers the first result); the outcome completes the claim. A claim left incomplete
//! (the serving member died) is completed by the next request to resolve the exception, with
//! the claimed transaction, so the retry is applied once whoever finishes it.

use crate::node::{ClusterError, ClusterHandle};
use crate::reads::{split_exception_seq, ExceptionEntry};
use crate::types::{shard_group, Cmd, Resp};
use settle_core::{Instant, TxInput};
use settle_storage::{Resolution, ResolutionAction};
use std::sync::Arc;

/// Rounds of read-then-propose before giving up on an exception that keeps changing.
const MAX_RESOLVE_ROUNDS: usize = 8;

/// What to do with an exception.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolveAction {
    Reject {
        reason: String,
    },
    /// Submit this corrected transaction (with its new id) in the exception's place.
    Retry {
        tx: Box<TxInput>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum ResolveOutcome {
    /// Resolved by this call.
    Resolved(Box<ExceptionEntry>),
    /// Resolved before (or by another request meanwhile).
    AlreadyResolved(Box<ExceptionEntry>),
    NotFound,
}

impl ClusterHandle {
    async fn propose_resolution(&self, shard: u32, number: u64, r: Resolution) -> Result<bool, ClusterError> {
        match self.propose(shard_group(shard), Cmd::Resolve(Arc::new((number, r)))).await? {
            Resp::Done(Ok(())) => Ok(true),
            // Refused: the exception changed since it was read (someone else resolved it).
            Resp::Done(Err(_)) => Ok(false),
            Resp::Txs(_) => Err(ClusterError::Storage("a resolution answered transaction results".into())),
        }
    }

    /// Resolves exception `seq` by `action`, on behalf of `by` at `at`.
    pub async fn resolve_exception(
        &self,
        seq: u64,
        action: ResolveAction,
        by: String,
        at: Instant,
    ) -> Result<ResolveOutcome, ClusterError> {
        let (shard, number) = split_exception_seq(seq);
        if shard >= self.shards() {
            return Ok(ResolveOutcome::NotFound);
        }
        let mut mine = false;
        for _ in 0..MAX_RESOLVE_ROUNDS {
            let Some(e) = self.exception(seq).await? else { return Ok(ResolveOutcome::NotFound) };
            match &e.resolution {
                None => {
                    let action = match &action {
                        ResolveAction::Reject { reason } => {
                            ResolutionAction::Reject { reason: reason.clone() }
                        }
                        ResolveAction::Retry { tx } => {
                            ResolutionAction::Retry { tx: tx.clone(), outcome: None }
                        }
                    };
                    let claim = Resolution { action, by: by.clone(), at };
                    mine |= self.propose_resolution(shard, number, claim).await?;
                }
                Some(Resolution {
                    action: ResolutionAction::Retry { tx, outcome: None },
                    by: claimed_by,
                    at: claimed_at,
                }) => {
                    let results = self.submit(vec![(**tx).clone()]).await?;
                    let outcome = results
                        .into_iter()
                        .next()
                        .ok_or_else(|| ClusterError::Storage("the retry got no result".into()))?
                        .outcome;
                    let done = Resolution {
                        action: ResolutionAction::Retry { tx: tx.clone(), outcome: Some(outcome) },
                        by: claimed_by.clone(),
                        at: *claimed_at,
                    };
                    // Refused only when another request completed it meanwhile: read again.
                    self.propose_resolution(shard, number, done).await?;
                }
                Some(_) if mine => return Ok(ResolveOutcome::Resolved(Box::new(e))),
                Some(_) => return Ok(ResolveOutcome::AlreadyResolved(Box::new(e))),
            }
        }
        Err(ClusterError::Unavailable(format!("exception {seq} kept changing while it was resolved")))
    }
}
