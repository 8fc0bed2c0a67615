//! The ractor actor that owns one partner's account. The account itself (`AccountCell`, shared
//! with every cluster shard replica) lives in `settle_cluster::account`; the same
//! `AccountCell::apply` runs live (in the actor) and in recovery, so both give the same answers.

use super::Balance;
use ractor::{Actor, ActorProcessingErr, ActorRef};
pub(crate) use settle_cluster::account::AccountCell;
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, FxTable, Instant, Outcome, Span, Statement, TxInput};
use settle_storage::TxLog;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Where a transaction's result goes: submission `sub` of the group, position `pos` in it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResultSlot {
    pub(crate) sub: u32,
    pub(crate) pos: u32,
}

/// One item of work for an account, in log order.
#[derive(Debug)]
pub(crate) enum Work {
    Tx {
        seq: u64,
        slot: ResultSlot,
        tx: TxInput,
    },
    /// Add a contract version; `reply` indexes the group's control replies.
    AddVersion {
        seq: u64,
        version: ContractVersion,
        reply: u32,
    },
    /// Report the balance; `reply` indexes the group's balance replies.
    Balance {
        reply: u32,
    },
    /// Report the first occurrence of a transaction id; `reply` indexes the group's lookups.
    Lookup {
        id: String,
        reply: u32,
    },
    /// Close every period due at `at` (a logged tick).
    Close {
        at: Instant,
    },
}

/// A lookup's answer: the first content and outcome of an id, or why it could not be read.
pub(crate) type Found = Result<Option<FirstSeen>, String>;
/// An id's first content (with its stamped `received_at`) and outcome.
pub(crate) type FirstSeen = (TxInput, Outcome);

/// What an account did with one message.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) partner: u32,
    pub(crate) results: Vec<(ResultSlot, TxResult)>,
    pub(crate) log: TxLog,
    pub(crate) statements: Vec<Statement>,
    /// Accepted contract versions: (seq, partner id, registration index, version).
    pub(crate) versions: Vec<(u64, String, u32, ContractVersion)>,
    pub(crate) control: Vec<(u32, Result<(), String>)>,
    pub(crate) balances: Vec<(u32, Balance)>,
    pub(crate) lookups: Vec<(u32, Found)>,
    pub(crate) next_close_due: Instant,
}

#[derive(Debug)]
pub(crate) enum AccountMsg {
    /// A group's work for this account, with the FX snapshot in force for it.
    Apply { fx: Arc<FxTable>, work: Vec<Work>, reply: oneshot::Sender<Done> },
}

/// The actor owning one partner account. Business rejections are values in `Done`; the handler
/// never returns `Err` (which would kill the actor).
#[derive(Debug)]
pub(crate) struct PartnerActor;

#[derive(Debug)]
pub(crate) struct ActorState {
    pub(crate) index: u32,
    pub(crate) cell: AccountCell,
    pub(crate) fx_max_age: Span,
}

impl ActorState {
    pub(crate) fn run(&mut self, fx: &FxTable, work: Vec<Work>) -> Done {
        let txs = work.iter().filter(|w| matches!(w, Work::Tx { .. })).count();
        let mut done = Done {
            partner: self.index,
            results: Vec::with_capacity(txs),
            log: TxLog::with_capacity(txs),
            statements: Vec::new(),
            versions: Vec::new(),
            control: Vec::new(),
            balances: Vec::new(),
            lookups: Vec::new(),
            next_close_due: Instant::MAX,
        };
        for item in work {
            match item {
                Work::Tx { seq, slot, tx } => {
                    let result = self.cell.apply(
                        seq,
                        &tx,
                        fx,
                        self.fx_max_age,
                        Some(&mut done.log),
                        &mut done.statements,
                    );
                    done.results.push((slot, result));
                }
                Work::AddVersion { seq, version, reply } => {
                    let index = self.cell.account.contract().versions().len();
                    let kept = version.clone();
                    match self.cell.account.add_contract_version(version) {
                        Ok(()) => {
                            let index = u32::try_from(index).unwrap_or(u32::MAX);
                            done.versions.push((seq, self.cell.account.id().to_string(), index, kept));
                            done.control.push((reply, Ok(())));
                        }
                        Err(e) => done.control.push((reply, Err(e.to_string()))),
                    }
                }
                Work::Balance { reply } => done.balances.push((reply, self.cell.balance())),
                Work::Lookup { id, reply } => done.lookups.push((reply, self.cell.ids.lookup(&id))),
                Work::Close { at } => self.cell.account.close_due(at, &mut done.statements),
            }
        }
        done.next_close_due = self.cell.account.next_close_due();
        done
    }
}

impl Actor for PartnerActor {
    type Msg = AccountMsg;
    type State = ActorState;
    type Arguments = ActorState;

    async fn pre_start(
        &self,
        _myself: ActorRef<AccountMsg>,
        args: ActorState,
    ) -> Result<ActorState, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AccountMsg>,
        message: AccountMsg,
        state: &mut ActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AccountMsg::Apply { fx, work, reply } => {
                let done = state.run(&fx, work);
                // The sequencer gone means the engine is stopping; nothing to answer.
                let _ = reply.send(done);
            }
        }
        Ok(())
    }
}
