//! Reads for the API's read model (log pages, single entries, RocksDB statistics) and the
//! control-plane families (`control`, `audit`). None of this is on the engine's commit path:
//! control writes are their own small synced batches, made by people and services, not by
//! transactions.

use crate::codec::{self, LogEntry};
use crate::keys;
use crate::store::{corrupt, Store};
use crate::StorageError;
use rocksdb::{DBRawIterator, Direction, IteratorMode, WriteBatch};

/// A record of a control space: its key within the space and its value.
pub type ControlRecord = (Vec<u8>, Vec<u8>);

/// One write of a control-plane batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlWrite {
    Put {
        space: u8,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        space: u8,
        key: Vec<u8>,
    },
    /// An audit record at `seq`. The caller chains and numbers records; storage keeps bytes.
    Audit {
        seq: u64,
        record: Vec<u8>,
    },
}

fn seq_of(cf: &'static str, key: &[u8]) -> Result<u64, StorageError> {
    keys::parse_seq(key)
        .ok_or_else(|| corrupt(cf, key, codec::CodecError { what: "key", detail: "length".into() }))
}

/// The entries of one log record (keyed by its lowest sequence), decoded, in sequence order.
fn decode_entries(key: &[u8], value: &[u8]) -> Result<Vec<(u64, LogEntry)>, StorageError> {
    codec::split_record(value)
        .map_err(|e| corrupt(keys::CF_LOG, key, e))?
        .into_iter()
        .map(|(seq, bytes)| {
            codec::decode_log_entry(bytes).map(|e| (seq, e)).map_err(|e| corrupt(keys::CF_LOG, key, e))
        })
        .collect()
}

impl Store {
    /// The log entry at `seq`, if any (read from the record that holds it).
    pub fn log_entry(&self, seq: u64) -> Result<Option<LogEntry>, StorageError> {
        let log = self.cf(keys::CF_LOG)?;
        let mut raw = self.db().raw_iterator_cf(log);
        raw.seek_for_prev(keys::seq(seq));
        let (Some(key), Some(value)) = (raw.key(), raw.value()) else {
            return raw.status().map(|()| None).map_err(StorageError::from);
        };
        Ok(decode_entries(key, value)?.into_iter().find(|(s, _)| *s == seq).map(|(_, e)| e))
    }

    /// The log from `from` (inclusive) down to the first entry, newest first (the read model's
    /// recent pages).
    pub fn log_down_from(&self, from: u64) -> Result<ReverseLogIter<'_>, StorageError> {
        let log = self.cf(keys::CF_LOG)?;
        let mut raw = self.db().raw_iterator_cf(log);
        raw.seek_for_prev(keys::seq(from));
        Ok(ReverseLogIter { raw, from, pending: Vec::new(), done: false })
    }

    /// An integer RocksDB property of a column family (e.g. `rocksdb.estimate-num-keys`).
    pub fn cf_property(&self, cf: &'static str, property: &str) -> Result<Option<u64>, StorageError> {
        let handle = self.cf(cf)?;
        Ok(self.db().property_int_value_cf(handle, property)?)
    }

    /// One control record.
    pub fn control_get(&self, space: u8, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let cf = self.cf(keys::CF_CONTROL)?;
        Ok(self.db().get_cf(cf, keys::control(space, key))?)
    }

    /// Every record of a control space, by key.
    pub fn control_scan(&self, space: u8) -> Result<Vec<ControlRecord>, StorageError> {
        let cf = self.cf(keys::CF_CONTROL)?;
        let start = keys::control(space, b"");
        let mut out = Vec::new();
        for item in self.db().iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            match keys::parse_control(&key) {
                Some((s, k)) if s == space => out.push((k.to_vec(), value.to_vec())),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Writes control records and audit records atomically, WAL fsync'd before it returns.
    pub fn control_write(&self, writes: &[ControlWrite]) -> Result<(), StorageError> {
        let control = self.cf(keys::CF_CONTROL)?;
        let audit = self.cf(keys::CF_AUDIT)?;
        let mut batch = WriteBatch::default();
        for w in writes {
            match w {
                ControlWrite::Put { space, key, value } => {
                    batch.put_cf(control, keys::control(*space, key), value)
                }
                ControlWrite::Delete { space, key } => batch.delete_cf(control, keys::control(*space, key)),
                ControlWrite::Audit { seq, record } => batch.put_cf(audit, keys::audit(*seq), record),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.write_synced(batch)
    }

    /// Up to `limit` audit records after `after` (exclusive), in sequence order.
    pub fn audit_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let cf = self.cf(keys::CF_AUDIT)?;
        let Some(start) = after.map_or(Some(0), |s| s.checked_add(1)) else { return Ok(Vec::new()) };
        let start = keys::audit(start);
        let mut out = Vec::new();
        for item in self.db().iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)).take(limit) {
            let (key, value) = item?;
            out.push((seq_of(keys::CF_AUDIT, &key)?, value.to_vec()));
        }
        Ok(out)
    }

    /// The last audit record, if any.
    pub fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let cf = self.cf(keys::CF_AUDIT)?;
        match self.db().iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                Ok(Some((seq_of(keys::CF_AUDIT, &key)?, value.to_vec())))
            }
        }
    }
}

/// Iterates the log newest first, decoding each record.
pub struct ReverseLogIter<'a> {
    raw: DBRawIterator<'a>,
    from: u64,
    /// The rest of the current record, in sequence order (taken from the end).
    pending: Vec<(u64, LogEntry)>,
    done: bool,
}

impl std::fmt::Debug for ReverseLogIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReverseLogIter").field("done", &self.done).finish()
    }
}

impl Iterator for ReverseLogIter<'_> {
    type Item = Result<(u64, LogEntry), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(entry) = self.pending.pop() {
                return Some(Ok(entry));
            }
            let decoded = match (self.raw.key(), self.raw.value()) {
                (Some(key), Some(value)) => decode_entries(key, value),
                _ => {
                    self.done = true;
                    return self.raw.status().err().map(|e| Err(e.into()));
                }
            };
            match decoded {
                Ok(mut entries) => {
                    entries.retain(|(seq, _)| *seq <= self.from);
                    self.pending = entries;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            self.raw.prev();
        }
    }
}
