//! One partner's account as a replica holds it: the core `PartnerAccount` with its compact
//! idempotency index. The standalone engine (in its partner actors and in recovery) and every
//! cluster shard replica apply transactions through the same `AccountCell::apply`, so both give
//! the same answers.

use crate::ids::RecordIndex;
use settle_core::account::AccountImage;
use settle_core::ledger::IdCheck;
use settle_core::tx::TxResult;
use settle_core::{
    Currency, ExceptionReason, FxTable, Minor, Outcome, Partner, PartnerAccount, Period, Span, Statement,
    TxId, TxInput,
};
use settle_storage::{AccountSummary, TxLog};

/// A partner's balance as of the state it was read from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Balance {
    pub partner: String,
    pub currency: Currency,
    /// What the platform owes the partner over all periods (negative: the partner owes).
    pub payable: Minor,
    /// The oldest period not yet closed.
    pub open_period: Period,
    /// The statement `open_period` would get if it closed now.
    pub preview: Statement,
}

/// A partner account and the ids of its transactions.
#[derive(Debug)]
pub struct AccountCell {
    pub account: PartnerAccount,
    pub ids: RecordIndex,
    /// Encoding buffer for recovery, reused.
    scratch: Vec<u8>,
}

/// An account cell in a snapshot: the account's image and its ids' records, sorted by id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CellImage {
    pub account: AccountImage,
    pub ids: Vec<(TxId, Box<[u8]>)>,
}

/// Hash seed of the `index`-th account (seeds never reach an output; distinct ones keep
/// accounts' hash maps independent).
fn account_seed(hash_seed: u64, index: usize) -> u64 {
    hash_seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl AccountCell {
    /// The cell of a snapshot's image, as the `index`-th account (the seeds `open` gave it).
    pub fn restore(image: CellImage, index: usize, hash_seed: u64) -> Result<AccountCell, String> {
        let seed = account_seed(hash_seed, index);
        let account = PartnerAccount::from_image(image.account, seed).map_err(|e| e.to_string())?;
        Ok(AccountCell {
            account,
            ids: RecordIndex::from_entries(seed ^ 0x1d5, image.ids),
            scratch: Vec::new(),
        })
    }

    pub fn image(&self) -> CellImage {
        CellImage { account: self.account.image(), ids: self.ids.sorted_entries() }
    }

    pub fn open(partner: Partner, index: usize, hash_seed: u64) -> Result<AccountCell, String> {
        let seed = account_seed(hash_seed, index);
        let account = PartnerAccount::open(partner, seed).map_err(|e| e.to_string())?;
        Ok(AccountCell { account, ids: RecordIndex::new(seed ^ 0x1d5), scratch: Vec::new() })
    }

    /// The per-transaction sequence of `settle_core::Ledger::apply` for a transaction already
    /// routed to this partner: idempotency, close due periods at `received_at`, apply, record.
    /// Logs (into `log`, when given) every transaction that is not a plain repeat.
    pub fn apply(
        &mut self,
        seq: u64,
        tx: &TxInput,
        fx: &FxTable,
        fx_max_age: Span,
        log: Option<&mut TxLog>,
        statements: &mut Vec<Statement>,
    ) -> TxResult {
        match self.ids.check(tx) {
            IdCheck::New => {
                self.account.close_due(tx.received_at, statements);
                let outcome = self.account.apply(tx, fx, fx_max_age);
                match log {
                    Some(log) => {
                        log.push(seq, tx, &outcome);
                        let record = log.last_record().unwrap_or_default();
                        self.ids.record(&tx.id, record);
                    }
                    None => self.ids.record_tx(tx, &outcome, &mut self.scratch),
                }
                TxResult { outcome, duplicate: false }
            }
            IdCheck::Repeat(outcome) => TxResult { outcome, duplicate: true },
            IdCheck::Conflict => {
                let outcome = Outcome::Exception(ExceptionReason::DuplicateConflict);
                if let Some(log) = log {
                    log.push(seq, tx, &outcome);
                }
                TxResult { outcome, duplicate: false }
            }
        }
    }

    pub fn summary(&self) -> AccountSummary {
        AccountSummary {
            currency: self.account.currency(),
            payable: self.account.payable(),
            open_period: self.account.next_to_close(),
            statements_issued: self.account.statements_issued(),
        }
    }

    pub fn balance(&self) -> Balance {
        Balance {
            partner: self.account.id().to_string(),
            currency: self.account.currency(),
            payable: self.account.payable(),
            open_period: self.account.next_to_close(),
            preview: self.account.preview(),
        }
    }
}
