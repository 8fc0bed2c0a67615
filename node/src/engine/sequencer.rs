//! The sequencer: the single writer of order. It stamps `received_at` (the engine's only clock
//! read), assigns log sequence numbers, routes transactions by partner, sends one message per
//! partner per group, gathers the outcomes and hands the group to the committer.

use super::account::{AccountCell, AccountMsg, ActorState, Done, PartnerActor, ResultSlot, Work};
use super::committer::{CommitJob, Submission};
use super::recovery::Recovered;
use super::router::{Claim, Routed, Router};
use super::{Clock, Command, EngineConfig, EngineError, Shared, MAX_GROUP_TXS, MAX_PARTNER_ID_BYTES};
use ractor::{Actor, ActorRef};
use settle_core::{FxTable, Instant, Partner, Span};
use settle_storage::TxLog;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug)]
pub(crate) struct Sequencer {
    shared: Arc<Shared>,
    router: Router,
    actors: Vec<ActorRef<AccountMsg>>,
    /// Per account: when its next period closes (never later than the truth: closes only
    /// move it on, so a stale value can only cause a harmless extra close message).
    next_close_due: Vec<Instant>,
    /// Work gathered for each account in the current group.
    pending: Vec<Vec<Work>>,
    touched: Vec<u32>,
    fx: Arc<FxTable>,
    fx_max_age: Span,
    hash_seed: u64,
    next_seq: u64,
    last_stamp: Instant,
    clock: Clock,
    commit: mpsc::Sender<CommitJob>,
}

impl Sequencer {
    pub(crate) async fn start(
        shared: Arc<Shared>,
        config: &EngineConfig,
        recovered: Recovered,
        commit: mpsc::Sender<CommitJob>,
    ) -> Result<Sequencer, EngineError> {
        let mut sequencer = Sequencer {
            shared,
            router: recovered.router,
            actors: Vec::with_capacity(recovered.cells.len()),
            next_close_due: Vec::with_capacity(recovered.cells.len()),
            pending: Vec::new(),
            touched: Vec::new(),
            fx: Arc::new(recovered.fx),
            fx_max_age: config.fx_max_age,
            hash_seed: config.hash_seed,
            next_seq: recovered.next_seq,
            last_stamp: recovered.last_stamp,
            clock: config.clock.clone(),
            commit,
        };
        for cell in recovered.cells {
            sequencer.spawn_actor(cell).await.map_err(EngineError::Recovery)?;
        }
        Ok(sequencer)
    }

    async fn spawn_actor(&mut self, cell: AccountCell) -> Result<(), String> {
        let index = u32::try_from(self.actors.len()).map_err(|_| "too many partners".to_string())?;
        self.next_close_due.push(cell.account.next_close_due());
        let state = ActorState { index, cell, fx_max_age: self.fx_max_age };
        let (actor, _join) = Actor::spawn(None, PartnerActor, state)
            .await
            .map_err(|e| format!("cannot start the actor of partner #{index}: {e}"))?;
        self.actors.push(actor);
        self.pending.push(Vec::new());
        Ok(())
    }

    /// `max(now, last stamp)`: stamps never go back, even if the wall clock does.
    fn stamp(&mut self) -> Instant {
        let now = self.clock.now().max(self.last_stamp);
        self.last_stamp = now;
        now
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn push_work(&mut self, account: u32, work: Work) {
        let Some(queue) = self.pending.get_mut(account as usize) else { return };
        if queue.is_empty() {
            self.touched.push(account);
        }
        queue.push(work);
    }

    /// Sends every account's pending work with the current FX snapshot.
    fn flush(&mut self, waits: &mut Vec<oneshot::Receiver<Done>>) -> Result<(), String> {
        for account in self.touched.drain(..) {
            let i = account as usize;
            let work = std::mem::take(&mut self.pending[i]);
            let (reply, wait) = oneshot::channel();
            let message = AccountMsg::Apply { fx: Arc::clone(&self.fx), work, reply };
            self.actors[i].send_message(message).map_err(|_| format!("the actor of partner #{i} is gone"))?;
            waits.push(wait);
        }
        Ok(())
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut group = Vec::new();
        let mut shutting_down = false;
        while !shutting_down {
            let Some(first) = commands.recv().await else { break };
            let mut txs = count_txs(&first);
            group.push(first);
            while txs < MAX_GROUP_TXS {
                match commands.try_recv() {
                    Ok(command) => {
                        txs += count_txs(&command);
                        group.push(command);
                    }
                    Err(_) => break,
                }
            }
            if let Some(reason) = self.shared.stopped() {
                let reason = reason.to_string();
                for command in group.drain(..) {
                    answer_stopped(command, &reason);
                }
                break;
            }
            if let Some(at) = group.iter().position(|c| matches!(c, Command::Shutdown)) {
                shutting_down = true;
                for command in group.drain(at..) {
                    answer_stopped(command, "the engine is shutting down");
                }
            }
            if let Err(reason) = self.run_group(&mut group).await {
                self.shared.stop(reason);
                break;
            }
        }
        // Answer whatever is still queued, then let the actors and the committer go.
        commands.close();
        let reason = self.shared.stopped().unwrap_or("the engine is shutting down").to_string();
        while let Ok(command) = commands.try_recv() {
            answer_stopped(command, &reason);
        }
        for actor in &self.actors {
            actor.stop(None);
        }
    }

    async fn run_group(&mut self, group: &mut Vec<Command>) -> Result<(), String> {
        let now = self.stamp();
        let mut job = CommitJob::default();
        let mut router_log = TxLog::new();
        let mut waits = Vec::new();
        for command in group.drain(..) {
            match command {
                Command::Submit { txs, reply, permit } => {
                    let sub = u32::try_from(job.submissions.len()).map_err(|_| "group too large")?;
                    let mut results = Vec::with_capacity(txs.len());
                    for (pos, mut tx) in txs.into_iter().enumerate() {
                        tx.received_at = now;
                        let seq = self.take_seq();
                        let mut log = |tx: &_, outcome: &_| router_log.push(seq, tx, outcome);
                        match self.router.route(tx, &mut log) {
                            Routed::Account(account, tx) => {
                                results.push(None);
                                let slot = ResultSlot { sub, pos: pos as u32 };
                                self.push_work(account, Work::Tx { seq, slot, tx });
                            }
                            Routed::Answered(result) => results.push(Some(result)),
                        }
                    }
                    job.submissions.push(Submission { reply, results, _permit: permit });
                }
                Command::Rates { rates, reply } => {
                    // Work gathered so far used the old snapshot; later work uses the new one.
                    self.flush(&mut waits)?;
                    let seq = self.take_seq();
                    let mut fx = FxTable::clone(&self.fx);
                    for rate in &rates {
                        fx.insert(rate.clone());
                    }
                    self.fx = Arc::new(fx);
                    job.rates.push((seq, rates));
                    job.control.push((reply, Some(Ok(()))));
                }
                Command::Register { partner, reply } => {
                    let outcome = self.register(partner, &mut job).await;
                    job.control.push((reply, Some(outcome.map_err(EngineError::Rejected))));
                }
                Command::AddVersion { partner, version, reply } => {
                    match self.router.partner_index(&partner) {
                        Some(account) => {
                            let seq = self.take_seq();
                            let index = job.control.len() as u32;
                            job.control.push((reply, None));
                            self.push_work(account, Work::AddVersion { seq, version, reply: index });
                        }
                        None => job.control.push((
                            reply,
                            Some(Err(EngineError::Rejected(format!("unknown partner {partner:?}")))),
                        )),
                    }
                }
                Command::Balance { partner, reply } => {
                    let index = job.balances.len() as u32;
                    job.balances.push((reply, None));
                    if let Some(account) = self.router.partner_index(&partner) {
                        self.push_work(account, Work::Balance { reply: index });
                    }
                }
                Command::NewestRates { reply } => {
                    let _ = reply.send(Ok(self.fx.newest().cloned().collect()));
                }
                Command::Lookup { id, reply } => match self.router.claim(&id) {
                    Claim::None => job.lookups.push((reply, Some(Ok(None)))),
                    Claim::Unowned(first) => {
                        let first = first.map(|(tx, outcome)| (tx.clone(), outcome.clone()));
                        job.lookups.push((reply, Some(Ok(first))));
                    }
                    Claim::Account(account) => {
                        let index = job.lookups.len() as u32;
                        job.lookups.push((reply, None));
                        self.push_work(account, Work::Lookup { id, reply: index });
                    }
                },
                Command::Tick { reply } => {
                    let due: Vec<u32> = (0..self.next_close_due.len() as u32)
                        .filter(|&i| self.next_close_due[i as usize] <= now)
                        .collect();
                    if !due.is_empty() {
                        let seq = self.take_seq();
                        job.ticks.push((seq, now));
                        for account in due {
                            self.push_work(account, Work::Close { at: now });
                        }
                    }
                    if let Some(reply) = reply {
                        job.control.push((reply, Some(Ok(()))));
                    }
                }
                Command::Shutdown => {}
            }
        }
        self.flush(&mut waits)?;
        if !router_log.is_empty() {
            job.logs.push(router_log);
        }
        for wait in waits {
            let done = wait.await.map_err(|_| "a partner actor stopped unexpectedly".to_string())?;
            if let Some(due) = self.next_close_due.get_mut(done.partner as usize) {
                *due = done.next_close_due;
            }
            job.absorb(done)?;
        }
        self.commit.send(job).await.map_err(|_| "the committer stopped".to_string())
    }

    async fn register(&mut self, partner: Partner, job: &mut CommitJob) -> Result<(), String> {
        check_partner(&self.router, &partner)?;
        let index = self.router.partner_count();
        let cell = AccountCell::open(partner.clone(), index, self.hash_seed)?;
        self.spawn_actor(cell).await?;
        self.router.add_partner(&partner.id);
        let seq = self.take_seq();
        job.partners.push((seq, partner));
        Ok(())
    }
}

/// Checks a registration that the router would accept (shared with recovery).
pub(crate) fn check_partner(router: &Router, partner: &Partner) -> Result<(), String> {
    if partner.id.is_empty() || partner.id.len() > MAX_PARTNER_ID_BYTES {
        return Err(format!("partner id must be 1..={MAX_PARTNER_ID_BYTES} bytes"));
    }
    if router.partner_index(&partner.id).is_some() {
        return Err(format!("partner {:?} is already registered", partner.id));
    }
    Ok(())
}

fn count_txs(command: &Command) -> usize {
    match command {
        Command::Submit { txs, .. } => txs.len(),
        _ => 1,
    }
}

fn answer_stopped(command: Command, reason: &str) {
    let error = || EngineError::Stopped(reason.to_string());
    match command {
        Command::Submit { reply, permit, .. } => {
            drop(permit);
            let _ = reply.send(Err(error()));
        }
        Command::Rates { reply, .. }
        | Command::Register { reply, .. }
        | Command::AddVersion { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Command::Balance { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Command::Lookup { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Command::NewestRates { reply } => {
            let _ = reply.send(Err(error()));
        }
        Command::Tick { reply } => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error()));
            }
        }
        Command::Shutdown => {}
    }
}
