//! Cross-partner idempotency and routing: which account a transaction goes to, or the answer
//! when none does. Runs in the sequencer live and in recovery, in log order both times.

use settle_core::tx::{TxId, TxResult};
use settle_core::{ExceptionReason, IdIndex, Outcome, TxInput};
use std::collections::HashMap;

/// Claim of an id by no partner (its first transaction had a missing or unknown partner).
const UNOWNED: u32 = u32::MAX;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

fn fixed_state(seed: u64) -> ahash::RandomState {
    ahash::RandomState::with_seeds(seed, seed.rotate_left(11), seed.rotate_left(23), seed.rotate_left(37))
}

/// Shards of the global id claim map (a power of two). One map of millions of ids rehashes all
/// of them at once when it grows, stalling the sequencer, and with it every submission, for tens
/// of milliseconds; 256 shards grow one at a time, each in a fraction of that.
const CLAIM_SHARDS: usize = 256;

/// Every transaction id seen, with the account that owns it (or `UNOWNED`), in shards.
#[derive(Debug)]
struct Claims {
    shards: Vec<FastMap<TxId, u32>>,
    pick: ahash::RandomState,
}

impl Claims {
    fn new(hash_seed: u64) -> Claims {
        Claims {
            shards: (0..CLAIM_SHARDS).map(|_| HashMap::with_hasher(fixed_state(hash_seed ^ 0xc1a))).collect(),
            pick: fixed_state(hash_seed ^ 0x5a4d),
        }
    }

    fn shard(&self, id: &str) -> usize {
        const _: () = assert!(CLAIM_SHARDS.is_power_of_two());
        (self.pick.hash_one(id) as usize) & (CLAIM_SHARDS - 1)
    }

    fn get(&self, id: &str) -> Option<u32> {
        self.shards[self.shard(id)].get(id).copied()
    }

    fn insert(&mut self, id: TxId, owner: u32) {
        let shard = self.shard(id.as_str());
        self.shards[shard].insert(id, owner);
    }
}

/// Where a transaction went.
#[derive(Debug)]
pub(crate) enum Routed {
    /// To this account, which checks repeats of its own ids.
    Account(u32, TxInput),
    /// Answered by the router.
    Answered(TxResult),
}

/// The holder of an id's first occurrence.
#[derive(Debug)]
pub(crate) enum Claim<'a> {
    None,
    /// No account: the router answered it (unknown partner); its first content and outcome.
    Unowned(Option<(&'a TxInput, &'a Outcome)>),
    Account(u32),
}

#[derive(Debug)]
pub(crate) struct Router {
    by_id: FastMap<String, u32>,
    /// Partner ids by account index.
    ids: Vec<String>,
    claims: Claims,
    /// Idempotency of transactions no account owns.
    unowned: IdIndex,
}

impl Router {
    pub(crate) fn new(hash_seed: u64) -> Router {
        Router {
            by_id: HashMap::with_hasher(fixed_state(hash_seed ^ 0xb1d)),
            ids: Vec::new(),
            claims: Claims::new(hash_seed),
            unowned: IdIndex::new(hash_seed ^ 0x0a0),
        }
    }

    pub(crate) fn partner_index(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub(crate) fn partner_count(&self) -> usize {
        self.ids.len()
    }

    /// Adds a partner; returns its account index.
    pub(crate) fn add_partner(&mut self, id: &str) -> u32 {
        let index = u32::try_from(self.ids.len()).unwrap_or(UNOWNED - 1);
        self.by_id.insert(id.to_string(), index);
        self.ids.push(id.to_string());
        index
    }

    /// Who holds the first occurrence of `id`.
    pub(crate) fn claim(&self, id: &str) -> Claim<'_> {
        match self.claims.get(id) {
            None => Claim::None,
            Some(UNOWNED) => Claim::Unowned(self.unowned.get(id)),
            Some(account) => Claim::Account(account),
        }
    }

    /// Decides where `tx` goes. When answered here, `log(tx, outcome)` was called for
    /// everything that must be logged (unknown partner, cross-partner conflict), and not for a
    /// plain repeat.
    pub(crate) fn route(&mut self, tx: TxInput, log: &mut dyn FnMut(&TxInput, &Outcome)) -> Routed {
        let conflict = Outcome::Exception(ExceptionReason::DuplicateConflict);
        match self.claims.get(tx.id.as_str()) {
            None => match settle_core::tx::text_field(tx.partner.as_deref())
                .and_then(|p| self.by_id.get(p))
                .copied()
            {
                Some(account) => {
                    self.claims.insert(tx.id.clone(), account);
                    Routed::Account(account, tx)
                }
                None => {
                    let outcome = Outcome::Exception(ExceptionReason::UnknownPartner);
                    log(&tx, &outcome);
                    self.claims.insert(tx.id.clone(), UNOWNED);
                    self.unowned.record(tx, outcome.clone());
                    Routed::Answered(TxResult { outcome, duplicate: false })
                }
            },
            Some(UNOWNED) => match self.unowned.check(&tx) {
                settle_core::IdCheck::Repeat(outcome) => {
                    Routed::Answered(TxResult { outcome, duplicate: true })
                }
                // `New` cannot happen for a claimed id; answering a conflict keeps the first
                // content's claim either way.
                settle_core::IdCheck::Conflict | settle_core::IdCheck::New => {
                    log(&tx, &conflict);
                    Routed::Answered(TxResult { outcome: conflict, duplicate: false })
                }
            },
            Some(account) => {
                let owner = self.ids.get(account as usize).map(String::as_str);
                if tx.partner.as_deref() == owner {
                    Routed::Account(account, tx)
                } else {
                    // The content differs (the partner does): the first content keeps the id.
                    log(&tx, &conflict);
                    Routed::Answered(TxResult { outcome: conflict, duplicate: false })
                }
            }
        }
    }
}
