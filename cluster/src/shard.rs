//! A shard's replicated state: the accounts of the partners that hash to it, its FX table, and
//! the idempotency of transactions no account owns. Every replica applies the shard's committed
//! entries here in log order; the result depends only on the entries (no clock, no randomness),
//! so caught-up replicas hold equal states (see [`ShardState::state_hash`]).

use crate::account::{AccountCell, Balance};
use crate::types::{Cmd, Resp, TxBatch};
use settle_core::tx::TxResult;
use settle_core::{ExceptionReason, FxTable, IdCheck, IdIndex, Instant, Outcome, Partner, Span, Statement};
use settle_storage::RaftOp;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Longest partner id accepted at registration, in bytes (as the standalone engine).
pub const MAX_PARTNER_ID_BYTES: usize = 128;

#[derive(Debug)]
pub struct ShardState {
    group: u32,
    cells: Vec<AccountCell>,
    by_id: HashMap<String, u32, ahash::RandomState>,
    /// Idempotency of transactions whose partner is missing or unknown.
    unowned: IdIndex,
    fx: FxTable,
    fx_max_age: Span,
    hash_seed: u64,
    /// Stamps applied never go back, even across a change of leader whose clock is behind.
    last_stamp: Instant,
    /// Scratch lists, reused.
    statements: Vec<Statement>,
    touched: Vec<u32>,
}

impl ShardState {
    pub fn new(group: u32, fx_max_age: Span, hash_seed: u64) -> ShardState {
        let s = hash_seed ^ u64::from(group).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ShardState {
            group,
            cells: Vec::new(),
            by_id: HashMap::with_hasher(ahash::RandomState::with_seeds(s, s ^ 1, s ^ 2, s ^ 3)),
            unowned: IdIndex::new(s ^ 0x0a0),
            fx: FxTable::new(),
            fx_max_age,
            hash_seed: s,
            last_stamp: Instant(i128::MIN),
            statements: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Applies one committed command. Query records (account summaries, statements) of what
    /// changed go to `ops`, when given (not during the rebuild at start).
    pub fn apply(&mut self, cmd: &Cmd, ops: Option<&mut Vec<RaftOp>>) -> Resp {
        self.statements.clear();
        self.touched.clear();
        let resp = match cmd {
            Cmd::Txs(batch) => Resp::Txs(self.apply_txs(batch)),
            Cmd::Rates(rates) => {
                for rate in rates.iter() {
                    self.fx.insert(rate.clone());
                }
                Resp::Done(Ok(()))
            }
            Cmd::Register(partner) => Resp::Done(self.register(partner)),
            Cmd::AddVersion(v) => Resp::Done(self.add_version(&v.0, v.1.clone())),
            Cmd::Tick(at) => {
                let at = self.stamp(*at);
                let mut order: Vec<u32> = (0..self.cells.len() as u32)
                    .filter(|&i| self.cells[i as usize].account.next_close_due() <= at)
                    .collect();
                order.sort_by(|&a, &b| {
                    self.cells[a as usize].account.id().cmp(self.cells[b as usize].account.id())
                });
                for i in order {
                    self.cells[i as usize].account.close_due(at, &mut self.statements);
                    self.touched.push(i);
                }
                Resp::Done(Ok(()))
            }
            Cmd::Meta(_) => Resp::Done(Err("a metadata command reached a shard".into())),
        };
        if let Some(ops) = ops {
            self.touched.sort_unstable();
            self.touched.dedup();
            for &i in &self.touched {
                let cell = &self.cells[i as usize];
                ops.push(RaftOp::PutAccount {
                    group: self.group,
                    partner: cell.account.id().to_string(),
                    summary: cell.summary(),
                });
            }
            for statement in self.statements.drain(..) {
                ops.push(RaftOp::PutStatement { group: self.group, statement: Box::new(statement) });
            }
        }
        resp
    }

    fn stamp(&mut self, at: Instant) -> Instant {
        self.last_stamp = self.last_stamp.max(at);
        self.last_stamp
    }

    fn apply_txs(&mut self, batch: &TxBatch) -> Vec<TxResult> {
        let at = self.stamp(batch.received_at);
        let mut results = Vec::with_capacity(batch.txs.txs.len());
        for tx in &batch.txs.txs {
            // Replicas decode transactions already stamped; only a stamp that moved (a new
            // leader's clock behind) or the leader's own undecoded copy needs a stamped clone.
            let stamped;
            let tx = if tx.received_at == at {
                tx
            } else {
                let mut copy = tx.clone();
                copy.received_at = at;
                stamped = copy;
                &stamped
            };
            let account =
                settle_core::tx::text_field(tx.partner.as_deref()).and_then(|p| self.by_id.get(p)).copied();
            let result = match account {
                Some(i) => {
                    self.touched.push(i);
                    let cell = &mut self.cells[i as usize];
                    cell.apply(0, tx, &self.fx, self.fx_max_age, None, &mut self.statements)
                }
                None => match self.unowned.check(tx) {
                    IdCheck::New => {
                        let outcome = Outcome::Exception(ExceptionReason::UnknownPartner);
                        self.unowned.record(tx.clone(), outcome.clone());
                        TxResult { outcome, duplicate: false }
                    }
                    IdCheck::Repeat(outcome) => TxResult { outcome, duplicate: true },
                    IdCheck::Conflict => TxResult {
                        outcome: Outcome::Exception(ExceptionReason::DuplicateConflict),
                        duplicate: false,
                    },
                },
            };
            results.push(result);
        }
        results
    }

    fn register(&mut self, partner: &Partner) -> Result<(), String> {
        if partner.id.is_empty() || partner.id.len() > MAX_PARTNER_ID_BYTES {
            return Err(format!("partner id must be 1..={MAX_PARTNER_ID_BYTES} bytes"));
        }
        if self.by_id.contains_key(&partner.id) {
            return Err(format!("partner {:?} is already registered", partner.id));
        }
        let index = self.cells.len();
        let cell = AccountCell::open(partner.clone(), index, self.hash_seed)?;
        let index = u32::try_from(index).map_err(|_| "too many partners in one shard".to_string())?;
        self.by_id.insert(partner.id.clone(), index);
        self.cells.push(cell);
        self.touched.push(index);
        Ok(())
    }

    fn add_version(&mut self, partner: &str, version: settle_core::ContractVersion) -> Result<(), String> {
        let i = *self.by_id.get(partner).ok_or_else(|| format!("unknown partner {partner:?}"))?;
        self.cells[i as usize].account.add_contract_version(version).map_err(|e| e.to_string())?;
        self.touched.push(i);
        Ok(())
    }

    pub fn is_registered(&self, partner: &str) -> bool {
        self.by_id.contains_key(partner)
    }

    pub fn balance(&self, partner: &str) -> Option<Balance> {
        self.by_id.get(partner).map(|&i| self.cells[i as usize].balance())
    }

    /// The earliest instant at which some account of the shard has a period to close.
    pub fn next_close_due(&self) -> Instant {
        self.cells.iter().map(|c| c.account.next_close_due()).min().unwrap_or(Instant::MAX)
    }

    pub fn partners(&self) -> usize {
        self.cells.len()
    }

    /// SHA-256 over the settled state, partners in id order: each partner's sub-ledger
    /// balances, open period, statements issued and number of recorded ids, then the FX table
    /// size and the unowned ids. Equal on replicas that applied the same entries.
    pub fn state_hash(&self) -> String {
        let mut order: Vec<&AccountCell> = self.cells.iter().collect();
        order.sort_by(|a, b| a.account.id().cmp(b.account.id()));
        let mut h = Sha256::new();
        for cell in order {
            let a = &cell.account;
            h.update((a.id().len() as u64).to_be_bytes());
            h.update(a.id().as_bytes());
            for (name, amount) in a.sub_ledgers() {
                h.update(name.as_bytes());
                h.update(amount.0.to_be_bytes());
            }
            let open = a.next_to_close();
            h.update(open.start.0.to_be_bytes());
            h.update(a.statements_issued().to_be_bytes());
            h.update((cell.ids.len() as u64).to_be_bytes());
        }
        h.update((self.unowned.len() as u64).to_be_bytes());
        h.update(self.last_stamp.0.to_be_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}
