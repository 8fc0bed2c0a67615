//! The committer: the only path from engine state to an acknowledgement. It merges the groups
//! waiting for it into one `WriteBatch`, makes it durable with one fsync through
//! `Store::commit`, and only then answers. A failed commit stops the engine: nothing in the
//! batch is acknowledged, and nothing later is accepted.

use super::account::{Done, FirstSeen, Found};
use super::{Balance, EngineError, Permit, Reply, Shared, MAX_COMMIT_GROUPS};
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, FxRate, Instant, Partner, Statement};
use settle_storage::{StorageError, Store, TxLog};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) reply: Reply<Vec<TxResult>>,
    pub(crate) results: Vec<Option<TxResult>>,
    /// Released (admission) when the submission is answered.
    pub(crate) _permit: Permit,
}

/// A control request's reply and, once decided, its answer.
pub(crate) type ControlReply = (Reply<()>, Option<Result<(), EngineError>>);

/// One group's writes and the answers that wait for them.
#[derive(Debug, Default)]
pub(crate) struct CommitJob {
    pub(crate) submissions: Vec<Submission>,
    pub(crate) logs: Vec<TxLog>,
    pub(crate) statements: Vec<Statement>,
    pub(crate) partners: Vec<(u64, Partner)>,
    pub(crate) versions: Vec<(u64, String, u32, ContractVersion)>,
    pub(crate) rates: Vec<(u64, Vec<FxRate>)>,
    pub(crate) ticks: Vec<(u64, Instant)>,
    /// Control requests; `None` until the owning actor decided.
    pub(crate) control: Vec<ControlReply>,
    /// Balance queries; `None` answers "unknown partner".
    pub(crate) balances: Vec<(Reply<Option<Balance>>, Option<Balance>)>,
    /// Id lookups; `None` until the owning account answered.
    pub(crate) lookups: Vec<(Reply<Option<FirstSeen>>, Option<Found>)>,
}

impl CommitJob {
    /// Takes an account's answers into the job.
    pub(crate) fn absorb(&mut self, done: Done) -> Result<(), String> {
        for (slot, result) in done.results {
            let entry = self
                .submissions
                .get_mut(slot.sub as usize)
                .and_then(|s| s.results.get_mut(slot.pos as usize))
                .ok_or("an actor answered a transaction that is not in the group")?;
            debug_assert!(entry.is_none(), "a transaction answered twice");
            *entry = Some(result);
        }
        if !done.log.is_empty() {
            self.logs.push(done.log);
        }
        self.statements.extend(done.statements);
        self.versions.extend(done.versions);
        for (reply, outcome) in done.control {
            if let Some(entry) = self.control.get_mut(reply as usize) {
                entry.1 = Some(outcome.map_err(EngineError::Rejected));
            }
        }
        for (reply, balance) in done.balances {
            if let Some(entry) = self.balances.get_mut(reply as usize) {
                entry.1 = Some(balance);
            }
        }
        for (reply, found) in done.lookups {
            if let Some(entry) = self.lookups.get_mut(reply as usize) {
                entry.1 = Some(found);
            }
        }
        Ok(())
    }

    fn write(&self, batch: &mut settle_storage::Batch<'_>) {
        for (seq, partner) in &self.partners {
            batch.append_partner(*seq, partner);
        }
        for (seq, partner, index, version) in &self.versions {
            batch.append_contract_version(*seq, partner, *index, version);
        }
        for (seq, rates) in &self.rates {
            batch.append_rates(*seq, rates);
        }
        for (seq, at) in &self.ticks {
            batch.append_tick(*seq, *at);
        }
        for log in &self.logs {
            batch.append_txs(log);
        }
        for statement in &self.statements {
            batch.put_statement(statement);
        }
    }

    fn answer_ok(self) {
        for Submission { reply, results, _permit: permit } in self.submissions {
            let results: Option<Vec<TxResult>> = results.into_iter().collect();
            let answer = results.ok_or_else(|| {
                EngineError::Stopped("internal error: a transaction of the group got no outcome".into())
            });
            // Admission is released before the answer, so a caller that got its answer sees it.
            drop(permit);
            let _ = reply.send(answer);
        }
        for (reply, outcome) in self.control {
            let outcome = outcome.unwrap_or_else(|| {
                Err(EngineError::Stopped("internal error: a request of the group got no answer".into()))
            });
            let _ = reply.send(outcome);
        }
        for (reply, balance) in self.balances {
            let _ = reply.send(Ok(balance));
        }
        for (reply, found) in self.lookups {
            let answer = match found {
                Some(Ok(found)) => Ok(found),
                Some(Err(e)) => Err(EngineError::Stopped(format!("internal error: {e}"))),
                None => {
                    Err(EngineError::Stopped("internal error: a lookup of the group got no answer".into()))
                }
            };
            let _ = reply.send(answer);
        }
    }

    fn answer_err(self, reason: &str) {
        let error = || EngineError::Stopped(reason.to_string());
        for Submission { reply, _permit: permit, .. } in self.submissions {
            drop(permit);
            let _ = reply.send(Err(error()));
        }
        for (reply, _) in self.control {
            let _ = reply.send(Err(error()));
        }
        for (reply, _) in self.balances {
            let _ = reply.send(Err(error()));
        }
        for (reply, _) in self.lookups {
            let _ = reply.send(Err(error()));
        }
    }
}

fn commit(store: &Store, jobs: &[CommitJob]) -> Result<(), StorageError> {
    let mut batch = store.batch()?;
    for job in jobs {
        job.write(&mut batch);
    }
    store.commit(batch)
}

/// The committer thread's loop.
pub(crate) fn run(store: Arc<Store>, shared: Arc<Shared>, mut jobs_rx: mpsc::Receiver<CommitJob>) {
    let mut jobs = Vec::with_capacity(MAX_COMMIT_GROUPS);
    while let Some(job) = jobs_rx.blocking_recv() {
        jobs.push(job);
        while jobs.len() < MAX_COMMIT_GROUPS {
            match jobs_rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        shared.wait_while_paused();
        if let Some(reason) = shared.stopped() {
            let reason = reason.to_string();
            jobs.drain(..).for_each(|job| job.answer_err(&reason));
            continue;
        }
        match commit(&store, &jobs) {
            Ok(()) => {
                let txs = jobs.iter().flat_map(|j| &j.logs).map(TxLog::len).sum();
                shared.count_commit(jobs.len(), txs);
                jobs.drain(..).for_each(CommitJob::answer_ok);
            }
            Err(e) => {
                // Never retry-and-acknowledge: the state in memory is ahead of the disk now,
                // so the only safe answer is to stop and recover from the log on restart.
                let reason = format!("a durable write failed, nothing of it was acknowledged: {e}");
                shared.stop(reason.clone());
                jobs.drain(..).for_each(|job| job.answer_err(&reason));
            }
        }
    }
    // The sequencer is gone: a clean stop. Flushing spares the next start a WAL replay.
    if shared.stopped().is_none() {
        if let Err(e) = store.flush() {
            tracing::warn!("flushing the store at shutdown failed (the WAL still has everything): {e}");
        }
    }
}
