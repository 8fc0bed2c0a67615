//! A shard's replicated state: the accounts of the partners that hash to it, its FX table, and
//! the idempotency of transactions no account owns. Every replica applies the shard's committed
//! entries here in log order; the result depends only on the entries (no clock, no randomness),
//! so caught-up replicas hold equal states (see [`ShardState::state_hash`]).

use crate::account::{AccountCell, Balance, CellImage};
use crate::types::{Cmd, Resp, TxBatch};
use settle_core::tx::TxResult;
use settle_core::{
    Currency, ExceptionReason, FxTable, IdCheck, IdIndex, Instant, Outcome, Partner, Span, Statement, TxInput,
};
use settle_storage::{RaftOp, Resolution, ResolutionAction, TxLog};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// Longest partner id accepted at registration, in bytes (as the standalone engine).
pub const MAX_PARTNER_ID_BYTES: usize = 128;

/// Where an exception of the queue stands (what applying a resolution must decide on; the
/// exception's transaction and its resolution are in `shard_exceptions`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExceptionState {
    Open,
    /// A retry under this id is claimed and not yet answered.
    Claimed(Box<str>),
    Resolved,
}

/// One exception of the shard's queue, in memory. Exceptions are never removed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExceptionSlot {
    pub received_at: Instant,
    pub state: ExceptionState,
}

/// Everything of a [`ShardState`] that its future depends on, for a snapshot: the cells in
/// registration order (a cell's index seeds its hash maps and is what `by_id` maps to, which is
/// rebuilt from the cells), the unowned ids as codec records in the order they were recorded,
/// the FX table, the last stamp and the exception queue. The scratch lists are not part of it,
/// nor are `fx_max_age` and the hash seed (node options, equal on every member).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardImage {
    cells: Vec<CellImage>,
    unowned: Vec<Vec<u8>>,
    fx: FxTable,
    last_stamp: Instant,
    exceptions: Vec<ExceptionSlot>,
}

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
    /// The exception queue, by number (log order).
    exceptions: Vec<ExceptionSlot>,
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
            exceptions: Vec::new(),
            statements: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// The state's image (a copy: the caller serialises it without holding the state).
    pub fn image(&self) -> ShardImage {
        let mut scratch = Vec::new();
        let unowned = self
            .unowned
            .entries()
            .map(|(tx, outcome)| {
                scratch.clear();
                settle_storage::codec::encode_tx(&mut scratch, tx, outcome);
                scratch.clone()
            })
            .collect();
        ShardImage {
            cells: self.cells.iter().map(AccountCell::image).collect(),
            unowned,
            fx: self.fx.clone(),
            last_stamp: self.last_stamp,
            exceptions: self.exceptions.clone(),
        }
    }

    /// The state an image was taken of, for group `group` of a node with these options.
    pub fn from_image(
        group: u32,
        fx_max_age: Span,
        hash_seed: u64,
        image: ShardImage,
    ) -> Result<ShardState, String> {
        let mut state = ShardState::new(group, fx_max_age, hash_seed);
        state.cells.reserve(image.cells.len());
        for (index, cell) in image.cells.into_iter().enumerate() {
            let cell = AccountCell::restore(cell, index, state.hash_seed)?;
            let at = u32::try_from(index).map_err(|_| "too many partners in one shard".to_string())?;
            if state.by_id.insert(cell.account.id().to_string(), at).is_some() {
                return Err(format!("partner {:?} appears twice in the image", cell.account.id()));
            }
            state.cells.push(cell);
        }
        for record in &image.unowned {
            match settle_storage::codec::decode_log_entry(record) {
                Ok(settle_storage::LogEntry::Tx { tx, outcome }) => state.unowned.record(tx, outcome),
                Ok(_) => return Err("an unowned id's record is not a transaction".into()),
                Err(e) => return Err(format!("an unowned id's record does not decode: {e}")),
            }
        }
        state.fx = image.fx;
        state.last_stamp = image.last_stamp;
        state.exceptions = image.exceptions;
        Ok(state)
    }

    /// Applies the committed command at log `index`. Query records (account summaries,
    /// statements, the history row, exceptions and resolutions) of what changed go to `ops`,
    /// when given (not during the rebuild at start, when they are on disk already).
    pub fn apply(&mut self, index: u64, cmd: &Cmd, mut ops: Option<&mut Vec<RaftOp>>) -> Resp {
        self.statements.clear();
        self.touched.clear();
        let resp = match cmd {
            Cmd::Txs(batch) => Resp::Txs(self.apply_txs(index, batch, ops.as_deref_mut())),
            Cmd::Resolve(r) => Resp::Done(self.resolve(r.0, &r.1, ops.as_deref_mut())),
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
            Cmd::Prune(indices) => {
                // Only the read model changes: no account, id or exception depends on a row.
                if indices.len() > crate::types::MAX_PRUNE_ROWS {
                    Resp::Done(Err(format!("at most {} rows per prune", crate::types::MAX_PRUNE_ROWS)))
                } else {
                    if let Some(ops) = ops.as_deref_mut() {
                        ops.push(RaftOp::DeleteHistory { group: self.group, indices: Arc::clone(indices) });
                    }
                    Resp::Done(Ok(()))
                }
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

    fn apply_txs(&mut self, index: u64, batch: &TxBatch, ops: Option<&mut Vec<RaftOp>>) -> Vec<TxResult> {
        let at = self.stamp(batch.received_at);
        let mut results = Vec::with_capacity(batch.txs.txs.len());
        // The entry's history row (only when records are written: the rebuild at start has them).
        let mut log = ops.is_some().then(|| TxLog::with_capacity(batch.txs.txs.len()));
        let mut new_exceptions = Vec::new();
        for (pos, tx) in batch.txs.txs.iter().enumerate() {
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
            let pos = pos as u64;
            let account =
                settle_core::tx::text_field(tx.partner.as_deref()).and_then(|p| self.by_id.get(p)).copied();
            let result = match account {
                Some(i) => {
                    self.touched.push(i);
                    let cell = &mut self.cells[i as usize];
                    cell.apply(pos, tx, &self.fx, self.fx_max_age, log.as_mut(), &mut self.statements)
                }
                None => {
                    let result = match self.unowned.check(tx) {
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
                    };
                    // As an account logs (every transaction but a plain repeat).
                    if let (Some(log), false) = (log.as_mut(), result.duplicate) {
                        log.push(pos, tx, &result.outcome);
                    }
                    result
                }
            };
            // Every logged exception joins the queue (repeats answer the first one's outcome).
            if let (Outcome::Exception(reason), false) = (&result.outcome, result.duplicate) {
                let number = self.exceptions.len() as u64;
                self.exceptions.push(ExceptionSlot { received_at: at, state: ExceptionState::Open });
                if log.is_some() {
                    new_exceptions.push((number, Box::new(tx.clone()), *reason));
                }
            }
            results.push(result);
        }
        if let (Some(ops), Some(log)) = (ops, log) {
            for (number, tx, reason) in new_exceptions {
                ops.push(RaftOp::PutException { group: self.group, number, tx, reason });
            }
            if !log.is_empty() {
                ops.push(RaftOp::PutHistory { group: self.group, index, received_at: at, txs: log });
            }
        }
        results
    }

    /// A resolution of exception `number`: a rejection or a retry's claim resolves an open
    /// exception; a retry's outcome completes the claim of the same retry id. Anything else is
    /// refused and changes nothing (so two members resolving at once cannot both win).
    fn resolve(
        &mut self,
        number: u64,
        resolution: &Resolution,
        ops: Option<&mut Vec<RaftOp>>,
    ) -> Result<(), String> {
        let slot = usize::try_from(number)
            .ok()
            .and_then(|n| self.exceptions.get_mut(n))
            .ok_or_else(|| format!("no exception {number} in this shard"))?;
        let next = match (&slot.state, &resolution.action) {
            (ExceptionState::Open, ResolutionAction::Reject { .. }) => ExceptionState::Resolved,
            (ExceptionState::Open, ResolutionAction::Retry { tx, outcome: None }) => {
                ExceptionState::Claimed(tx.id.as_str().into())
            }
            (ExceptionState::Claimed(id), ResolutionAction::Retry { tx, outcome: Some(_) })
                if **id == *tx.id.as_str() =>
            {
                ExceptionState::Resolved
            }
            (ExceptionState::Resolved, _) => return Err(format!("exception {number} is already resolved")),
            (ExceptionState::Claimed(id), _) => {
                return Err(format!("exception {number} has a retry under {id:?} in progress"))
            }
            (ExceptionState::Open, ResolutionAction::Retry { .. }) => {
                return Err(format!("exception {number} has no retry to complete"))
            }
        };
        slot.state = next;
        if let Some(ops) = ops {
            ops.push(RaftOp::PutResolution {
                group: self.group,
                number,
                resolution: Box::new(resolution.clone()),
            });
        }
        Ok(())
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

    /// The newest rate of each pair in the shard's FX table.
    pub fn newest_rates(&self) -> Vec<settle_core::FxRate> {
        self.fx.newest().cloned().collect()
    }

    /// The earliest instant at which some account of the shard has a period to close.
    pub fn next_close_due(&self) -> Instant {
        self.cells.iter().map(|c| c.account.next_close_due()).min().unwrap_or(Instant::MAX)
    }

    pub fn partners(&self) -> usize {
        self.cells.len()
    }

    /// Every partner with every contract version, in id order.
    pub fn partner_list(&self) -> Vec<Partner> {
        let mut out: Vec<Partner> = self
            .cells
            .iter()
            .map(|c| {
                let a = &c.account;
                Partner {
                    id: a.id().to_string(),
                    currency: a.currency(),
                    since: a.since(),
                    cycle: a.cycle().clone(),
                    contract: a.contract().clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub fn currency_of(&self, partner: &str) -> Option<Currency> {
        self.by_id.get(partner).map(|&i| self.cells[i as usize].account.currency())
    }

    /// The settlement period of `partner` containing `at`.
    pub fn period_of(&self, partner: &str, at: Instant) -> Option<settle_core::Period> {
        self.by_id.get(partner).and_then(|&i| self.cells[i as usize].account.cycle().period_containing(at))
    }

    /// Every recorded occurrence of the id: the first content and outcome in each account that
    /// has it, and among transactions no account owns.
    pub fn lookup(&self, id: &str) -> Result<Vec<(TxInput, Outcome)>, String> {
        let mut out = Vec::new();
        for cell in &self.cells {
            if let Some(found) = cell.ids.lookup(id)? {
                out.push(found);
            }
        }
        if let Some((tx, outcome)) = self.unowned.get(id) {
            out.push((tx.clone(), outcome.clone()));
        }
        Ok(out)
    }

    pub fn exceptions(&self) -> &[ExceptionSlot] {
        &self.exceptions
    }

    /// Rebuilds the in-memory exception queue from the shard's `shard_exceptions` rows (in
    /// number order), for a state restored from those rows rather than by re-applying the log
    /// (a snapshot). Refuses rows with gaps.
    pub fn restore_exceptions(
        &mut self,
        rows: impl IntoIterator<Item = settle_storage::ShardException>,
    ) -> Result<(), String> {
        let mut slots = Vec::new();
        for row in rows {
            if row.number != slots.len() as u64 {
                return Err(format!("exception {} follows {}", row.number, slots.len()));
            }
            let state = match &row.resolution {
                None => ExceptionState::Open,
                Some(Resolution { action: ResolutionAction::Retry { tx, outcome: None }, .. }) => {
                    ExceptionState::Claimed(tx.id.as_str().into())
                }
                Some(_) => ExceptionState::Resolved,
            };
            slots.push(ExceptionSlot { received_at: row.tx.received_at, state });
        }
        self.exceptions = slots;
        Ok(())
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
        h.update((self.exceptions.len() as u64).to_be_bytes());
        for slot in &self.exceptions {
            match &slot.state {
                ExceptionState::Open => h.update([0]),
                ExceptionState::Claimed(id) => {
                    h.update([1]);
                    h.update(id.as_bytes());
                }
                ExceptionState::Resolved => h.update([2]),
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TxList;
    use settle_storage::ShardException;
    use std::sync::Arc;

    fn partner(id: &str) -> Partner {
        let value = serde_json::json!({"id": id, "settlement_currency": "EUR", "since": "2026-01-01T00:00:00Z",
            "cycle": {"every": "daily", "cutoff": "00:00", "tz": "UTC"},
            "contracts": [{"effective_from": "2026-01-01T00:00:00Z", "shares": [{"party": "partner", "percent": "100"}], "fees": []}]});
        settle_core::scenario::parse_partner(&value, "partner").unwrap()
    }

    fn tx(id: &str, partner: &str, currency: &str) -> TxInput {
        let value = serde_json::json!({"id": id, "partner": partner, "kind": "sale", "amount": "10.00",
            "currency": currency, "occurred_at": "2026-01-02T10:00:00Z"});
        settle_core::scenario::parse_transaction(&value, "tx", Some(Instant(0))).unwrap()
    }

    fn batch(txs: Vec<TxInput>) -> Cmd {
        let at = Instant::parse_rfc3339("2026-01-02T10:00:01Z").unwrap();
        Cmd::Txs(TxBatch { received_at: at, txs: Arc::new(TxList::new(txs)) })
    }

    fn resolve(number: u64, action: ResolutionAction) -> Cmd {
        Cmd::Resolve(Arc::new((number, Resolution { action, by: "user:a".into(), at: Instant(9) })))
    }

    #[test]
    fn entries_write_one_history_row_and_queue_exceptions_that_resolve_once() {
        let mut shard = ShardState::new(3, Span::from_hours(24), 7);
        let mut ops = Vec::new();
        assert_eq!(
            shard.apply(1, &Cmd::Register(Arc::new(partner("p"))), Some(&mut ops)),
            Resp::Done(Ok(()))
        );
        ops.clear();
        let txs =
            vec![tx("a", "p", "EUR"), tx("b", "p", "XXX"), tx("c", "nobody", "EUR"), tx("a", "p", "EUR")];
        let Resp::Txs(results) = shard.apply(2, &batch(txs), Some(&mut ops)) else { panic!() };
        assert!(results[3].duplicate);
        let rows: Vec<&RaftOp> = ops.iter().filter(|o| matches!(o, RaftOp::PutHistory { .. })).collect();
        assert_eq!(rows.len(), 1, "one row per entry");
        let RaftOp::PutHistory { index, txs, .. } = rows[0] else { panic!() };
        assert_eq!((*index, txs.len()), (2, 3), "the repeat is not logged again");
        let queued: Vec<(u64, &str)> = ops
            .iter()
            .filter_map(|o| match o {
                RaftOp::PutException { number, tx, .. } => Some((*number, tx.id.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(queued, vec![(0, "b"), (1, "c")]);
        // Reject once; a second resolution of any kind is refused.
        let reject = || resolve(0, ResolutionAction::Reject { reason: "no".into() });
        assert_eq!(shard.apply(3, &reject(), None), Resp::Done(Ok(())));
        assert!(matches!(shard.apply(4, &reject(), None), Resp::Done(Err(_))));
        // A retry is claimed, then completed with the same id only.
        let retry = |id: &str, outcome: Option<Outcome>| {
            resolve(1, ResolutionAction::Retry { tx: Box::new(tx(id, "p", "EUR")), outcome })
        };
        let applied = Some(Outcome::Exception(ExceptionReason::FxStale));
        assert!(matches!(shard.apply(5, &retry("c~1", applied.clone()), None), Resp::Done(Err(_))));
        assert_eq!(shard.apply(6, &retry("c~1", None), None), Resp::Done(Ok(())));
        assert!(matches!(shard.apply(7, &reject(), None), Resp::Done(Err(_))));
        assert!(matches!(shard.apply(8, &retry("other", applied.clone()), None), Resp::Done(Err(_))));
        assert_eq!(shard.exceptions()[1].state, ExceptionState::Claimed("c~1".into()));
        assert_eq!(shard.apply(9, &retry("c~1", applied.clone()), None), Resp::Done(Ok(())));
        assert_eq!(shard.exceptions()[1].state, ExceptionState::Resolved);
        assert!(matches!(
            shard.apply(10, &resolve(2, ResolutionAction::Reject { reason: "x".into() }), None),
            Resp::Done(Err(_))
        ));
        // The queue rebuilt from its rows equals the applied one.
        let at = Instant::parse_rfc3339("2026-01-02T10:00:01Z").unwrap();
        let row = |number: u64, id: &str, resolution: Option<Resolution>| {
            let mut t = tx(id, "p", "EUR");
            t.received_at = at;
            ShardException { number, tx: t, reason: ExceptionReason::UnknownCurrency, resolution }
        };
        let done = |action| Some(Resolution { action, by: "user:a".into(), at: Instant(9) });
        let mut rebuilt = ShardState::new(3, Span::from_hours(24), 7);
        rebuilt
            .restore_exceptions(vec![
                row(0, "b", done(ResolutionAction::Reject { reason: "no".into() })),
                row(
                    1,
                    "c",
                    done(ResolutionAction::Retry { tx: Box::new(tx("c~1", "p", "EUR")), outcome: applied }),
                ),
            ])
            .unwrap();
        assert_eq!(rebuilt.exceptions(), shard.exceptions());
        assert!(rebuilt.restore_exceptions(vec![row(1, "c", None)]).is_err());
    }
}
