//! A partner's idempotency index, compact: for every id, its first log record as encoded bytes
//! (content and outcome together, typically under 100 bytes) instead of the decoded
//! `TxInput` and `Outcome` that `settle_core::IdIndex` keeps. Repeats are rare (client
//! retries), so decoding the record on a repeat costs little, and memory per transaction
//! drops several-fold. Comparison is exact: the record decodes to the very first content, and
//! `TxInput::same_content` decides, as in core.

use settle_core::tx::TxId;
use settle_core::{IdCheck, Outcome, TxInput};
use settle_storage::{codec, LogEntry};
use std::collections::HashMap;

#[derive(Debug)]
pub struct RecordIndex {
    entries: HashMap<TxId, Box<[u8]>, ahash::RandomState>,
}

impl RecordIndex {
    pub fn new(hash_seed: u64) -> RecordIndex {
        let s = hash_seed;
        RecordIndex {
            entries: HashMap::with_hasher(ahash::RandomState::with_seeds(
                s,
                s.rotate_left(19),
                s.rotate_left(33),
                s.rotate_left(51),
            )),
        }
    }

    /// As `settle_core::IdIndex::check`.
    pub fn check(&self, tx: &TxInput) -> IdCheck {
        let Some(record) = self.entries.get(&tx.id) else {
            return IdCheck::New;
        };
        match codec::decode_log_entry(record) {
            Ok(LogEntry::Tx { tx: first, outcome }) if first.same_content(tx) => IdCheck::Repeat(outcome),
            Ok(_) => IdCheck::Conflict,
            Err(e) => {
                // Records are encoded by this process a moment earlier; the codec's round trip
                // is tested. Should it ever fail, refusing the repeat (a conflict changes
                // nothing) is the answer that cannot apply anything twice.
                debug_assert!(false, "an idempotency record does not decode: {e}");
                IdCheck::Conflict
            }
        }
    }

    /// The first content (with its stamped `received_at`) and outcome of `id`, if recorded.
    pub fn lookup(&self, id: &str) -> Result<Option<(TxInput, Outcome)>, String> {
        let Some(record) = self.entries.get(id) else { return Ok(None) };
        match codec::decode_log_entry(record) {
            Ok(LogEntry::Tx { tx, outcome }) => Ok(Some((tx, outcome))),
            Ok(_) => Err(format!("the idempotency record of {id:?} is not a transaction")),
            Err(e) => Err(format!("the idempotency record of {id:?} does not decode: {e}")),
        }
    }

    /// Ids recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records the first occurrence of an id: `record` is its encoded log record.
    pub fn record(&mut self, id: &TxId, record: &[u8]) {
        debug_assert!(!self.entries.contains_key(id));
        self.entries.insert(id.clone(), record.into());
    }

    /// Every id with its record, sorted by id (a snapshot's form: independent of the seed).
    pub fn sorted_entries(&self) -> Vec<(TxId, Box<[u8]>)> {
        let mut out: Vec<(TxId, Box<[u8]>)> =
            self.entries.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The index holding `entries` (as [`RecordIndex::sorted_entries`] gave them).
    pub fn from_entries(hash_seed: u64, entries: Vec<(TxId, Box<[u8]>)>) -> RecordIndex {
        let mut index = RecordIndex::new(hash_seed);
        index.entries.reserve(entries.len());
        index.entries.extend(entries);
        index
    }

    /// Encodes and records (recovery, where no log is being written).
    pub fn record_tx(&mut self, tx: &TxInput, outcome: &Outcome, scratch: &mut Vec<u8>) {
        scratch.clear();
        codec::encode_tx(scratch, tx, outcome);
        self.record(&tx.id, scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use settle_core::scenario::parse_transaction;
    use settle_core::{ExceptionReason, IdIndex, Instant};

    fn tx(amount: &str, received: i128, metadata: serde_json::Value) -> TxInput {
        let value = serde_json::json!({"id": "t", "partner": "p", "kind": "sale", "amount": amount,
            "currency": "EUR", "occurred_at": "2026-01-02T10:00:00Z", "metadata": metadata});
        parse_transaction(&value, "tx", Some(Instant(received))).unwrap()
    }

    #[test]
    fn answers_exactly_as_core_id_index() {
        let first = tx("10.00", 1, serde_json::json!({"a": 1, "b": [1, 2]}));
        let outcome = Outcome::Exception(ExceptionReason::FxStale);
        let mut compact = RecordIndex::new(3);
        let mut core = IdIndex::new(3);
        let candidates = [
            tx("10.00", 99, serde_json::json!({"b": [1, 2], "a": 1})), // same content, keys reordered
            tx("10.0", 99, serde_json::json!({"a": 1, "b": [1, 2]})),  // amounts compare by value
            tx("10.01", 1, serde_json::json!({"a": 1, "b": [1, 2]})),
            tx("10.00", 1, serde_json::json!({"a": 2, "b": [1, 2]})),
            tx("10.00", 1, serde_json::Value::Null),
        ];
        for c in &candidates {
            assert_eq!(compact.check(c), core.check(c));
        }
        let mut scratch = Vec::new();
        compact.record_tx(&first, &outcome, &mut scratch);
        core.record(first.clone(), outcome.clone());
        for c in &candidates {
            assert_eq!(compact.check(c), core.check(c), "{c:?}");
        }
        assert_eq!(compact.check(&candidates[0]), IdCheck::Repeat(outcome));
    }
}
