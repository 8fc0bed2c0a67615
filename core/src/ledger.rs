//! A set of partner accounts with the FX table and the idempotency index: the unit that applies
//! transactions in order. `settle replay` runs one ledger over a whole scenario; the live engine
//! runs one per shard.

pub use crate::account::Partner;
use crate::account::{AccountError, PartnerAccount};
use crate::fx::{FxRate, FxTable};
use crate::statement::Statement;
use crate::time::{Instant, Span};
use crate::tx::{text_field, ExceptionReason, Outcome, TxInput, TxResult};
use std::collections::HashMap;

/// `fx_max_age` when a scenario or configuration gives none.
pub const DEFAULT_FX_MAX_AGE_HOURS: i64 = 24;

/// What the idempotency index says of an incoming transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdCheck {
    /// Never seen: apply it, then `record` the outcome.
    New,
    /// Seen with the same content: return this first result, change nothing.
    Repeat(Outcome),
    /// Seen with other content: `duplicate_conflict`; the first content keeps the id.
    Conflict,
}

/// The idempotency index: every id seen, with its first content and first outcome.
///
/// It is on every transaction's path and grows without bound, so it is laid out for the cache:
/// entries live in fixed-size chunks (growing never copies the entries already stored), and a
/// compact map from the id's 64-bit hash to the newest entry with that hash (entries with equal
/// hashes are chained) finds them. A lookup touches one small map slot and one entry, and no id
/// is copied to serve as a key.
#[derive(Clone, Debug)]
pub struct IdIndex {
    heads: HashMap<u64, usize, PassThroughHasher>,
    /// Chunks are created full length (`None` slots), so their memory is touched when a chunk
    /// is made (in `reserve`, at start-up) and not while a transaction is being recorded.
    chunks: Vec<Vec<Option<IdEntry>>>,
    len: usize,
    hasher: ahash::RandomState,
}

/// Transactions whose memory [`Ledger::apply_batch`] reads ahead together: enough for the
/// processor to overlap many cache misses, few enough that what was read is still cached when
/// the group is applied.
const WARM_GROUP: usize = 16;

/// Entries per chunk of the id index.
const ID_CHUNK: usize = 4096;

#[derive(Clone, Debug)]
struct IdEntry {
    content: TxInput,
    outcome: Outcome,
    /// The previous entry whose id has the same 64-bit hash.
    next_same_hash: Option<usize>,
}

/// The map keys are already ahash outputs; hashing them again would only cost time.
#[derive(Clone, Copy, Debug, Default)]
struct PassThroughHasher;

impl std::hash::BuildHasher for PassThroughHasher {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

#[derive(Clone, Copy, Debug)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl IdIndex {
    pub fn new(hash_seed: u64) -> IdIndex {
        IdIndex { heads: HashMap::default(), chunks: Vec::new(), len: 0, hasher: seeded(hash_seed, 0x1d5) }
    }

    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn find(&self, id: &str) -> Option<&IdEntry> {
        let mut next = self.heads.get(&self.hash(id)).copied();
        while let Some(i) = next {
            let entry = self.chunks.get(i / ID_CHUNK)?.get(i % ID_CHUNK)?.as_ref()?;
            if entry.content.id.as_str() == id {
                return Some(entry);
            }
            next = entry.next_same_hash;
        }
        None
    }

    pub fn check(&self, tx: &TxInput) -> IdCheck {
        match self.find(tx.id.as_str()) {
            None => IdCheck::New,
            Some(entry) if entry.content.same_content(tx) => IdCheck::Repeat(entry.outcome.clone()),
            Some(_) => IdCheck::Conflict,
        }
    }

    /// Records the first outcome of a new id.
    pub fn record(&mut self, tx: TxInput, outcome: Outcome) {
        debug_assert!(self.find(tx.id.as_str()).is_none());
        let index = self.len;
        let hash = self.hash(tx.id.as_str());
        let next_same_hash = self.heads.insert(hash, index);
        self.ensure_chunks(index + 1);
        if let Some(slot) = self.chunks.get_mut(index / ID_CHUNK).and_then(|c| c.get_mut(index % ID_CHUNK)) {
            *slot = Some(IdEntry { content: tx, outcome, next_same_hash });
            self.len += 1;
        }
    }

    /// Creates (and so touches) chunks until `entries` fit.
    fn ensure_chunks(&mut self, entries: usize) {
        while self.chunks.len() * ID_CHUNK < entries {
            let mut chunk = Vec::with_capacity(ID_CHUNK);
            chunk.resize_with(ID_CHUNK, || None);
            self.chunks.push(chunk);
        }
    }

    /// Reads the map slot a lookup or a `record` of `id` will use; changes nothing.
    fn warm(&self, id: &str) {
        std::hint::black_box(self.heads.get(&self.hash(id)).copied());
    }

    /// Makes room for `additional` more ids, so that growing neither rehashes the map nor
    /// reallocates the chunk list on the transaction path.
    pub fn reserve(&mut self, additional: usize) {
        self.heads.reserve(additional);
        self.chunks.reserve(additional.div_ceil(ID_CHUNK));
        // Static allocation, as TigerBeetle does: the memory for the expected ids is taken and
        // touched now, so recording a transaction never waits for the kernel to map a page.
        self.ensure_chunks(self.len.saturating_add(additional));
    }

    /// Every recorded id's first content and outcome, in the order they were recorded: recording
    /// them in this order into a new index rebuilds this one (a snapshot of the index).
    pub fn entries(&self) -> impl Iterator<Item = (&TxInput, &Outcome)> {
        self.chunks.iter().flatten().take(self.len).flatten().map(|e| (&e.content, &e.outcome))
    }

    pub fn get(&self, id: &str) -> Option<(&TxInput, &Outcome)> {
        self.find(id).map(|e| (&e.content, &e.outcome))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("partner {0:?} is already registered")]
    DuplicatePartner(String),
    #[error("partner {0:?} is not registered")]
    UnknownPartner(String),
    #[error(transparent)]
    Account(#[from] AccountError),
}

#[derive(Clone, Debug)]
pub struct Ledger {
    accounts: Vec<PartnerAccount>,
    by_id: HashMap<String, usize, ahash::RandomState>,
    fx: FxTable,
    fx_max_age: Span,
    ids: IdIndex,
    hash_seed: u64,
}

fn seeded(seed: u64, salt: u64) -> ahash::RandomState {
    let s = seed ^ salt;
    ahash::RandomState::with_seeds(s, s.rotate_left(13), s.rotate_left(29), s.rotate_left(43))
}

impl Ledger {
    /// A ledger whose hash maps are keyed by `hash_seed` (an input: the core draws no entropy).
    pub fn new(fx_max_age: Span, hash_seed: u64) -> Ledger {
        Ledger {
            accounts: Vec::new(),
            by_id: HashMap::with_hasher(seeded(hash_seed, 0x5e77_1e00)),
            fx: FxTable::new(),
            fx_max_age,
            ids: IdIndex::new(hash_seed),
            hash_seed,
        }
    }

    pub fn add_partner(&mut self, partner: Partner) -> Result<(), LedgerError> {
        if self.by_id.contains_key(&partner.id) {
            return Err(LedgerError::DuplicatePartner(partner.id));
        }
        let id = partner.id.clone();
        let seed = self.hash_seed ^ (self.accounts.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let account = PartnerAccount::open(partner, seed)?;
        self.by_id.insert(id, self.accounts.len());
        self.accounts.push(account);
        Ok(())
    }

    pub fn add_rate(&mut self, rate: FxRate) {
        self.fx.insert(rate);
    }

    pub fn fx(&self) -> &FxTable {
        &self.fx
    }

    pub fn fx_max_age(&self) -> Span {
        self.fx_max_age
    }

    pub fn account(&self, id: &str) -> Option<&PartnerAccount> {
        self.by_id.get(id).map(|&i| &self.accounts[i])
    }

    pub fn account_mut(&mut self, id: &str) -> Option<&mut PartnerAccount> {
        self.by_id.get(id).map(|&i| &mut self.accounts[i])
    }

    /// Accounts ordered by partner id (byte order).
    pub fn accounts_by_id(&self) -> Vec<&PartnerAccount> {
        let mut all: Vec<&PartnerAccount> = self.accounts.iter().collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        all
    }

    pub fn transaction_count(&self) -> usize {
        self.ids.len()
    }

    /// The first result recorded for `id`, if any.
    pub fn lookup(&self, id: &str) -> Option<&Outcome> {
        self.ids.get(id).map(|(_, outcome)| outcome)
    }

    /// Applies one transaction. Periods of its partner due at `min(received_at, close_limit)` are
    /// closed first (their statements appended to `statements`). A repeated id with the same
    /// content returns the first result and changes nothing; with other content it is a
    /// `duplicate_conflict` and the first content keeps the id.
    pub fn apply(&mut self, tx: TxInput, close_limit: Instant, statements: &mut Vec<Statement>) -> TxResult {
        match self.ids.check(&tx) {
            IdCheck::New => {}
            IdCheck::Repeat(outcome) => return TxResult { outcome, duplicate: true },
            IdCheck::Conflict => {
                let outcome = Outcome::Exception(ExceptionReason::DuplicateConflict);
                return TxResult { outcome, duplicate: false };
            }
        }
        let account =
            text_field(tx.partner.as_deref()).and_then(|p| self.by_id.get(p)).map(|&i| &mut self.accounts[i]);
        let outcome = match account {
            None => Outcome::Exception(ExceptionReason::UnknownPartner),
            Some(account) => {
                account.close_due(tx.received_at.min(close_limit), statements);
                account.apply(&tx, &self.fx, self.fx_max_age)
            }
        };
        self.ids.record(tx, outcome.clone());
        TxResult { outcome, duplicate: false }
    }

    /// A capacity hint: makes room for `transactions` more ids in the idempotency index and for
    /// `sales_per_account` more sales in every account, so that the maps do not grow (rehash and
    /// move to new memory) while transactions are applied. Changes no observable state.
    pub fn reserve(&mut self, transactions: usize, sales_per_account: usize) {
        self.ids.reserve(transactions);
        for account in &mut self.accounts {
            account.reserve_sales(sales_per_account);
        }
    }

    /// Applies `txs` in order, exactly as calling [`Ledger::apply`] on each would, and returns
    /// their results in that order.
    ///
    /// With many accounts, most of the time of `apply` is spent waiting for memory: the id index
    /// slot, the partner's entry in the account map, the account and the heap blocks behind it are
    /// cold, and each read waits for the previous one. Here transactions go in groups: first the
    /// memory every transaction of the group will read is read for all of them (read-only, so
    /// nothing observable changes), which lets the processor fetch the groups' cache lines in
    /// parallel; then they are applied one by one as usual, from warm caches.
    pub fn apply_batch(
        &mut self,
        txs: Vec<TxInput>,
        close_limit: Instant,
        statements: &mut Vec<Statement>,
    ) -> Vec<TxResult> {
        let mut results = Vec::with_capacity(txs.len());
        let mut rest = txs.into_iter();
        loop {
            let group = rest.as_slice().len().min(WARM_GROUP);
            if group == 0 {
                break;
            }
            self.warm(&rest.as_slice()[..group]);
            for tx in rest.by_ref().take(group) {
                results.push(self.apply(tx, close_limit, statements));
            }
        }
        results
    }

    /// Reads what applying each of `txs` will read first; see [`Ledger::apply_batch`]. Two
    /// passes: the map lookups of the whole group, then the accounts they lead to.
    fn warm(&self, txs: &[TxInput]) {
        let mut accounts = [usize::MAX; WARM_GROUP];
        for (slot, tx) in accounts.iter_mut().zip(txs) {
            self.ids.warm(tx.id.as_str());
            if let Some(&i) = tx.partner.as_deref().and_then(|p| self.by_id.get(p)) {
                *slot = i;
            }
        }
        for (&i, tx) in accounts.iter().zip(txs) {
            if let Some(account) = self.accounts.get(i) {
                account.warm(tx);
            }
        }
    }

    /// Closes every account's periods due at `now`, in partner-id order.
    pub fn close_due(&mut self, now: Instant, statements: &mut Vec<Statement>) {
        let mut order: Vec<usize> = (0..self.accounts.len()).collect();
        order.sort_by(|&a, &b| self.accounts[a].id().cmp(self.accounts[b].id()));
        for i in order {
            self.accounts[i].close_due(now, statements);
        }
    }
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::new(Span::from_hours(DEFAULT_FX_MAX_AGE_HOURS), 0)
    }
}
