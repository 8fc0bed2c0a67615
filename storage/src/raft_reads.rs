//! Reads of the cluster database's read-model families (a shard's history, exceptions and
//! statements; the metadata group's control records and audit chain), RocksDB statistics and
//! checkpoints. Nothing here writes; the records are written by the groups' state machines
//! through [`RaftDb::write`].

use crate::codec::{self, LogEntry};
use crate::history::{self, HistoryRow, Resolution};
use crate::keys;
use crate::raft_db::{corrupt, RaftDb};
use crate::StorageError;
use rocksdb::{DBRawIterator, Direction, IteratorMode};
use settle_core::{ExceptionReason, Instant, Outcome, Statement, TxInput};
use std::path::Path;

/// An exception of a shard's queue as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardException {
    /// The exception's number in its shard (0, 1, ... in log order).
    pub number: u64,
    pub tx: TxInput,
    pub reason: ExceptionReason,
    pub resolution: Option<Resolution>,
}

/// A control record of the metadata group: space, key, value.
pub type ControlRow = (u8, Vec<u8>, Vec<u8>);

fn decoded<T>(cf: &'static str, key: &[u8], r: Result<T, codec::CodecError>) -> Result<T, StorageError> {
    r.map_err(|e| StorageError::Corrupt { cf, key: crate::store::hex(key), source: e })
}

/// A group's history rows from an index, in index order (forward) or reverse.
pub struct HistoryIter<'a> {
    raw: DBRawIterator<'a>,
    group: u32,
    forward: bool,
    done: bool,
}

impl std::fmt::Debug for HistoryIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryIter").field("group", &self.group).field("forward", &self.forward).finish()
    }
}

impl Iterator for HistoryIter<'_> {
    type Item = Result<(u64, HistoryRow), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (Some(key), Some(value)) = (self.raw.key(), self.raw.value()) else {
            self.done = true;
            return self.raw.status().err().map(|e| Err(e.into()));
        };
        let Some((group, index)) = keys::parse_shard_history(key) else {
            self.done = true;
            return Some(Err(corrupt(keys::CF_SHARD_HISTORY, key, "key length")));
        };
        if group != self.group {
            self.done = true;
            return None;
        }
        let row = decoded(keys::CF_SHARD_HISTORY, key, history::decode_history_row(value));
        if self.forward {
            self.raw.next();
        } else {
            self.raw.prev();
        }
        Some(row.map(|r| (index, r)))
    }
}

/// A group's exceptions from a number on, in number order, each with its resolution.
pub struct ExceptionIter<'a> {
    raw: DBRawIterator<'a>,
    group: u32,
    done: bool,
}

impl std::fmt::Debug for ExceptionIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExceptionIter").field("group", &self.group).finish()
    }
}

impl Iterator for ExceptionIter<'_> {
    type Item = Result<ShardException, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        const CF: &str = keys::CF_SHARD_EXCEPTIONS;
        if self.done {
            return None;
        }
        let (Some(key), Some(value)) = (self.raw.key(), self.raw.value()) else {
            self.done = true;
            return self.raw.status().err().map(|e| Err(e.into()));
        };
        let Some((group, number, part)) = keys::parse_shard_exception(key) else {
            self.done = true;
            return Some(Err(corrupt(CF, key, "key length")));
        };
        if group != self.group {
            self.done = true;
            return None;
        }
        if part != keys::EXCEPTION_PART_ENTRY {
            self.done = true;
            return Some(Err(corrupt(CF, key, "a resolution without its exception")));
        }
        let (tx, reason) = match decoded(CF, key, codec::decode_log_entry(value)) {
            Ok(LogEntry::Tx { tx, outcome: Outcome::Exception(reason) }) => (tx, reason),
            Ok(_) => {
                self.done = true;
                return Some(Err(corrupt(CF, key, "not an exception record")));
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        self.raw.next();
        let mut resolution = None;
        if let (Some(k), Some(v)) = (self.raw.key(), self.raw.value()) {
            if keys::parse_shard_exception(k) == Some((group, number, keys::EXCEPTION_PART_RESOLUTION)) {
                match decoded(CF, k, history::decode_resolution(v)) {
                    Ok(r) => resolution = Some(r),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                self.raw.next();
            }
        }
        Some(Ok(ShardException { number, tx, reason, resolution }))
    }
}

impl RaftDb {
    /// The group's history rows starting at `from` (inclusive): upwards when `forward`, else
    /// downwards (the newest first).
    pub fn history(&self, group: u32, from: u64, forward: bool) -> Result<HistoryIter<'_>, StorageError> {
        let mut raw = self.db().raw_iterator_cf(self.cf(keys::CF_SHARD_HISTORY)?);
        let key = keys::shard_history(group, from);
        if forward {
            raw.seek(key);
        } else {
            raw.seek_for_prev(key);
        }
        Ok(HistoryIter { raw, group, forward, done: false })
    }

    /// The stamp and index of the group's first history row at or after `index`.
    fn history_stamp_from(&self, group: u32, index: u64) -> Result<Option<(u64, Instant)>, StorageError> {
        let mut raw = self.db().raw_iterator_cf(self.cf(keys::CF_SHARD_HISTORY)?);
        raw.seek(keys::shard_history(group, index));
        let (Some(key), Some(value)) = (raw.key(), raw.value()) else {
            raw.status()?;
            return Ok(None);
        };
        match keys::parse_shard_history(key) {
            Some((g, i)) if g == group => {
                let stamp = decoded(keys::CF_SHARD_HISTORY, key, history::history_row_stamp(value))?;
                Ok(Some((i, stamp)))
            }
            Some(_) => Ok(None),
            None => Err(corrupt(keys::CF_SHARD_HISTORY, key, "key length")),
        }
    }

    /// The index of the group's first history row stamped after `t` (at or after `t` when
    /// `inclusive`), or `None` when every row is stamped before. Stamps never decrease along the
    /// log, so this is a binary search over indexes (a few dozen seeks at most).
    pub fn history_first_after(
        &self,
        group: u32,
        t: Instant,
        inclusive: bool,
    ) -> Result<Option<u64>, StorageError> {
        let after = |stamp: Instant| if inclusive { stamp >= t } else { stamp > t };
        let Some((first, _)) = self.history_stamp_from(group, 0)? else { return Ok(None) };
        let Some((last, last_stamp)) =
            self.history(group, u64::MAX, false)?.next().transpose()?.map(|(i, r)| (i, r.received_at))
        else {
            return Ok(None);
        };
        if !after(last_stamp) {
            return Ok(None);
        }
        // The smallest x in [first, last] whose first row at or after x is stamped after t.
        let (mut lo, mut hi) = (first, last);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.history_stamp_from(group, mid)? {
                Some((_, stamp)) if after(stamp) => hi = mid,
                _ => lo = mid + 1,
            }
        }
        Ok(self.history_stamp_from(group, lo)?.map(|(i, _)| i))
    }

    /// The group's exceptions from number `from` on.
    pub fn exceptions(&self, group: u32, from: u64) -> Result<ExceptionIter<'_>, StorageError> {
        let mut raw = self.db().raw_iterator_cf(self.cf(keys::CF_SHARD_EXCEPTIONS)?);
        raw.seek(keys::shard_exception(group, from, keys::EXCEPTION_PART_ENTRY));
        Ok(ExceptionIter { raw, group, done: false })
    }

    /// One exception of the group, with its resolution.
    pub fn exception(&self, group: u32, number: u64) -> Result<Option<ShardException>, StorageError> {
        match self.exceptions(group, number)?.next().transpose()? {
            Some(e) if e.number == number => Ok(Some(e)),
            _ => Ok(None),
        }
    }

    /// Every statement issued to `partner` in the group, by period.
    pub fn shard_statements(&self, group: u32, partner: &str) -> Result<Vec<Statement>, StorageError> {
        let cf = self.cf(keys::CF_SHARD_STATEMENTS)?;
        let mut prefix = group.to_be_bytes().to_vec();
        prefix.extend_from_slice(&keys::partner_prefix(partner));
        let mut out = Vec::new();
        for item in self.db().iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push(decoded(keys::CF_SHARD_STATEMENTS, &key, codec::decode_statement(&value))?);
        }
        Ok(out)
    }

    /// Every statement issued in the group, by partner then period.
    pub fn group_statements(&self, group: u32) -> Result<Vec<Statement>, StorageError> {
        let cf = self.cf(keys::CF_SHARD_STATEMENTS)?;
        let (start, end) = keys::group_range(group);
        let mut out = Vec::new();
        for item in self.db().iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            if key.as_ref() >= end.as_slice() {
                break;
            }
            out.push(decoded(keys::CF_SHARD_STATEMENTS, &key, codec::decode_statement(&value))?);
        }
        Ok(out)
    }

    /// Up to `limit` audit records of the group after `after` (exclusive), in sequence order.
    pub fn audit_after(
        &self,
        group: u32,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let cf = self.cf(keys::CF_META_AUDIT)?;
        let Some(start) = after.map_or(Some(0), |s| s.checked_add(1)) else { return Ok(Vec::new()) };
        let start = keys::meta_audit(group, start);
        let mut out = Vec::new();
        for item in self.db().iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item?;
            match keys::parse_meta_audit(&key) {
                Some((g, seq)) if g == group => out.push((seq, value.to_vec())),
                Some(_) => break,
                None => return Err(corrupt(keys::CF_META_AUDIT, &key, "key length")),
            }
        }
        Ok(out)
    }

    /// The group's last audit record.
    pub fn audit_last(&self, group: u32) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let cf = self.cf(keys::CF_META_AUDIT)?;
        let mut raw = self.db().raw_iterator_cf(cf);
        raw.seek_for_prev(keys::meta_audit(group, u64::MAX));
        let (Some(key), Some(value)) = (raw.key(), raw.value()) else {
            raw.status()?;
            return Ok(None);
        };
        match keys::parse_meta_audit(key) {
            Some((g, seq)) if g == group => Ok(Some((seq, value.to_vec()))),
            Some(_) => Ok(None),
            None => Err(corrupt(keys::CF_META_AUDIT, key, "key length")),
        }
    }

    /// Every control record of the group: space, key, value.
    pub fn control_records(&self, group: u32) -> Result<Vec<ControlRow>, StorageError> {
        let cf = self.cf(keys::CF_META_CONTROL)?;
        let (start, _) = keys::group_range(group);
        let mut out = Vec::new();
        for item in self.db().iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            match keys::parse_meta_control(&key) {
                Some((g, space, k)) if g == group => out.push((space, k.to_vec(), value.to_vec())),
                Some(_) => break,
                None => return Err(corrupt(keys::CF_META_CONTROL, &key, "key length")),
            }
        }
        Ok(out)
    }

    /// An integer RocksDB property of a column family (e.g. `rocksdb.estimate-num-keys`).
    pub fn cf_property(&self, cf: &'static str, property: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.db().property_int_value_cf(self.cf(cf)?, property)?)
    }

    /// A consistent point-in-time copy of the whole database (every group's log, Raft state
    /// and state records, and the node's cluster configuration) in `dir`, which must not exist.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(self.db())?;
        checkpoint.create_checkpoint(dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ResolutionAction;
    use crate::store::TxLog;
    use crate::RaftOp;

    fn tx(id: &str, at: i128) -> TxInput {
        let value = serde_json::json!({"id": id, "partner": "p", "kind": "sale", "amount": "1.50",
            "currency": "EUR", "occurred_at": "2026-01-02T10:00:00Z"});
        settle_core::scenario::parse_transaction(&value, "tx", Some(Instant(at))).unwrap()
    }

    fn row(db: &RaftDb, group: u32, index: u64, at: i128) {
        let mut txs = TxLog::new();
        txs.push(0, &tx(&format!("t{index}"), at), &Outcome::Exception(ExceptionReason::UnknownPartner));
        db.write(&[RaftOp::PutHistory { group, index, received_at: Instant(at), txs }], false).unwrap();
    }

    #[test]
    fn history_seeks_by_stamp_and_iterates_both_ways_within_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(dir.path()).unwrap();
        // Stamps never decrease along the log; indexes have gaps (entries without transactions).
        for (index, at) in [(3, 10), (4, 10), (9, 20), (12, 30), (13, 30), (20, 40)] {
            row(&db, 2, index, at);
        }
        row(&db, 1, 100, 5);
        row(&db, 3, 1, 50);
        assert_eq!(db.history_first_after(2, Instant(10), false).unwrap(), Some(9));
        assert_eq!(db.history_first_after(2, Instant(10), true).unwrap(), Some(3));
        assert_eq!(db.history_first_after(2, Instant(25), false).unwrap(), Some(12));
        assert_eq!(db.history_first_after(2, Instant(30), true).unwrap(), Some(12));
        assert_eq!(db.history_first_after(2, Instant(0), false).unwrap(), Some(3));
        assert_eq!(db.history_first_after(2, Instant(40), false).unwrap(), None);
        assert_eq!(db.history_first_after(7, Instant(0), false).unwrap(), None);
        let down: Vec<u64> = db.history(2, 12, false).unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(down, vec![12, 9, 4, 3]);
        let up: Vec<u64> = db.history(2, 10, true).unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(up, vec![12, 13, 20]);
        let all: Vec<u64> = db.history(2, u64::MAX, false).unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(all.len(), 6);
        let first = db.history(2, 0, true).unwrap().next().unwrap().unwrap();
        assert_eq!(first.1.records[0].tx.id.as_str(), "t3");
    }

    #[test]
    fn exceptions_come_with_their_resolutions_and_audit_reads_stay_in_their_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(dir.path()).unwrap();
        let reason = ExceptionReason::UnknownCurrency;
        let mut ops = Vec::new();
        for number in 0..3 {
            ops.push(RaftOp::PutException {
                group: 4,
                number,
                tx: Box::new(tx(&format!("e{number}"), 1)),
                reason,
            });
        }
        ops.push(RaftOp::PutException { group: 5, number: 0, tx: Box::new(tx("other", 1)), reason });
        let resolution = Resolution {
            action: ResolutionAction::Reject { reason: "test".into() },
            by: "user:a".into(),
            at: Instant(2),
        };
        ops.push(RaftOp::PutResolution { group: 4, number: 1, resolution: Box::new(resolution.clone()) });
        for seq in 0..5 {
            ops.push(RaftOp::PutAudit { group: 0, seq, record: vec![seq as u8] });
        }
        ops.push(RaftOp::PutAudit { group: 1, seq: 0, record: vec![99] });
        ops.push(RaftOp::PutControl { group: 0, space: 2, key: b"k".to_vec(), value: b"v".to_vec() });
        db.write(&ops, false).unwrap();
        let all: Vec<ShardException> = db.exceptions(4, 0).unwrap().map(Result::unwrap).collect();
        assert_eq!(all.iter().map(|e| e.number).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(all[1].resolution, Some(resolution));
        assert_eq!(all[0].resolution, None);
        assert_eq!(all[2].tx.id.as_str(), "e2");
        assert_eq!(db.exception(4, 2).unwrap().unwrap().number, 2);
        assert!(db.exception(4, 3).unwrap().is_none());
        assert_eq!(db.audit_after(0, Some(1), 2).unwrap(), vec![(2, vec![2]), (3, vec![3])]);
        assert_eq!(db.audit_after(0, None, 100).unwrap().len(), 5);
        assert_eq!(db.audit_last(0).unwrap(), Some((4, vec![4])));
        assert_eq!(db.control_records(0).unwrap(), vec![(2, b"k".to_vec(), b"v".to_vec())]);
        // Clearing a group's state removes its read-model records only.
        db.write(&[RaftOp::ClearGroupState { group: 4 }], false).unwrap();
        assert_eq!(db.exceptions(4, 0).unwrap().count(), 0);
        assert_eq!(db.exceptions(5, 0).unwrap().count(), 1);
    }

    /// What a snapshot carries: every row of one group in the state families, and nothing of
    /// another; put back elsewhere they read the same, and a row outside its group is refused.
    #[test]
    fn a_groups_rows_move_to_another_database_and_stay_in_their_group() {
        let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db = RaftDb::open(dir.path()).unwrap();
        for (group, index) in [(2, 1), (2, 5), (3, 1)] {
            row(&db, group, index, 10);
        }
        let control = RaftOp::PutControl { group: 2, space: 1, key: b"k".to_vec(), value: b"v".to_vec() };
        let exception = RaftOp::PutException {
            group: 2,
            number: 0,
            tx: Box::new(tx("e", 1)),
            reason: ExceptionReason::UnknownCurrency,
        };
        db.write(&[control, exception], false).unwrap();
        let collect = |db: &RaftDb, group| {
            let mut rows = Vec::new();
            db.group_rows(group, |family, key, value| -> Result<(), StorageError> {
                rows.push(crate::GroupRow { family, key: key.to_vec(), value: value.to_vec() });
                Ok(())
            })
            .unwrap();
            rows
        };
        let rows = collect(&db, 2);
        assert_eq!(rows.len(), 4, "two history rows, an exception, a control record");
        let copy = RaftDb::open(other.path()).unwrap();
        row(&copy, 2, 9, 10); // what installing replaces
        copy.write(
            &[RaftOp::ClearGroupState { group: 2 }, RaftOp::PutGroupRows { group: 2, rows: rows.clone() }],
            false,
        )
        .unwrap();
        assert_eq!(collect(&copy, 2), rows);
        let up: Vec<u64> = copy.history(2, 0, true).unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(up, vec![1, 5]);
        assert!(copy.write(&[RaftOp::PutGroupRows { group: 3, rows }], false).is_err());
        assert!(collect(&copy, 3).is_empty(), "a refused batch writes nothing");
    }

    #[test]
    fn a_format_2_dir_is_upgraded_when_opened_for_writing_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(RaftDb::open(dir.path()).unwrap());
        // Written without the format check, as an older or newer build left it.
        let set = |version: u32| {
            let db = crate::store::open_rocksdb(dir.path(), &crate::keys::RAFT_CFS).unwrap();
            let meta = db.cf_handle(crate::keys::CF_RAFT_META).unwrap();
            db.put_cf(meta, b"format_version", version.to_be_bytes()).unwrap();
        };
        set(2);
        drop(RaftDb::open_read_only(dir.path()).unwrap());
        let read = |db: &RaftDb| {
            let meta = db.cf(crate::keys::CF_RAFT_META).unwrap();
            db.db().get_cf(meta, b"format_version").unwrap().unwrap()
        };
        assert_eq!(
            read(&RaftDb::open_read_only(dir.path()).unwrap()),
            2u32.to_be_bytes(),
            "read-only changes nothing"
        );
        assert_eq!(read(&RaftDb::open(dir.path()).unwrap()), crate::RAFT_FORMAT_VERSION.to_be_bytes());
        for refused in [1, crate::RAFT_FORMAT_VERSION + 1] {
            set(refused);
            assert!(
                matches!(RaftDb::open(dir.path()), Err(StorageError::UnsupportedFormat { found }) if found == refused)
            );
        }
    }
}
