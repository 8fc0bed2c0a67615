//! One group's Raft log on the node's shared RocksDB. Appends go to the node's [`LogWriter`]
//! (one batch and one fsync for every group's pending appends) and openraft is told through its
//! `LogFlushed` callback when they are durable. Recent entries stay in memory, decoded, so that
//! replication and apply rarely touch RocksDB, and so that entries are readable at once after
//! `append` returns, before they are flushed.

use crate::types::{Entry, GroupId, LogId, NodeId, StorageError, TypeConfig};
use crate::writer::LogWriter;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use settle_storage::{RaftDb, RaftOp, RaftStateKey};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

/// Flushed entries kept decoded in memory per group (older ones are read from RocksDB).
pub const CACHED_ENTRIES: usize = 256;

pub(crate) fn io_read(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO { source: StorageIOError::read(AnyError::error(e.to_string())) }
}

pub(crate) fn io_write(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO { source: StorageIOError::write(AnyError::error(e.to_string())) }
}

pub(crate) fn encode_entry(entry: &Entry) -> Result<Vec<u8>, StorageError> {
    bincode::serialize(entry).map_err(io_write)
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError> {
    bincode::deserialize(bytes).map_err(io_read)
}

#[derive(Debug, Default)]
struct Cache {
    /// A contiguous run of the newest entries.
    entries: BTreeMap<u64, Entry>,
    /// Entries up to this index are durable.
    flushed: Option<u64>,
    last: Option<LogId>,
    purged: Option<LogId>,
}

impl Cache {
    fn trim(&mut self) {
        while self.entries.len() > CACHED_ENTRIES {
            let Some((&first, _)) = self.entries.first_key_value() else { break };
            if self.flushed.is_none_or(|f| first > f) {
                break;
            }
            self.entries.remove(&first);
        }
    }
}

/// A group's log; clones share the same state (the reader is a clone).
#[derive(Clone, Debug)]
pub struct LogStore {
    group: GroupId,
    db: Arc<RaftDb>,
    writer: LogWriter,
    cache: Arc<Mutex<Cache>>,
}

impl LogStore {
    pub fn open(group: GroupId, db: Arc<RaftDb>, writer: LogWriter) -> Result<LogStore, StorageError> {
        let purged = match db.state(group, RaftStateKey::Purged).map_err(io_read)? {
            Some(bytes) => bincode::deserialize::<Option<LogId>>(&bytes).map_err(io_read)?,
            None => None,
        };
        let last = match db.last_log(group).map_err(io_read)? {
            Some((_, bytes)) => Some(decode_entry(&bytes)?.log_id),
            None => purged,
        };
        let cache = Cache { entries: BTreeMap::new(), flushed: last.map(|l| l.index), last, purged };
        Ok(LogStore { group, db, writer, cache: Arc::new(Mutex::new(cache)) })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries in `[from, to)`, from memory where cached, else from RocksDB.
    pub(crate) fn entries(&self, from: u64, to: u64) -> Result<Vec<Entry>, StorageError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let (cached_from, mut cached) = {
            let cache = self.cache();
            let first = cache.entries.first_key_value().map(|(&k, _)| k).unwrap_or(u64::MAX);
            // When the whole range lies before the cache, `from.max(first)` exceeds `to`, and
            // `BTreeMap::range` panics on an inverted range: that panic once killed replication
            // tasks, so a follower that fell behind the cache never caught up.
            let start = from.max(first);
            let cached: Vec<Entry> = if start < to {
                cache.entries.range(start..to).map(|(_, e)| e.clone()).collect()
            } else {
                Vec::new()
            };
            (first, cached)
        };
        if from >= cached_from {
            return Ok(cached);
        }
        let mut out = Vec::new();
        for (_, bytes) in self.db.log_range(self.group, from, to.min(cached_from)).map_err(io_read)? {
            out.push(decode_entry(&bytes)?);
        }
        out.append(&mut cached);
        Ok(out)
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (from, to) = bounds(&range);
        self.entries(from, to)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let cache = self.cache();
        Ok(LogState { last_purged_log_id: cache.purged, last_log_id: cache.last.or(cache.purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let value = bincode::serialize(vote).map_err(io_write)?;
        let op = RaftOp::PutState { group: self.group, what: RaftStateKey::Vote, value };
        self.writer.write(vec![op]).await.map_err(io_write)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        match self.db.state(self.group, RaftStateKey::Vote).map_err(io_read)? {
            Some(bytes) => Ok(Some(bincode::deserialize(&bytes).map_err(io_read)?)),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        let mut last = None;
        {
            let mut cache = self.cache();
            for entry in entries {
                let index = entry.log_id.index;
                ops.push(RaftOp::PutLog { group: self.group, index, entry: encode_entry(&entry)? });
                last = Some(entry.log_id);
                cache.entries.insert(index, entry);
            }
            if last.is_some() {
                cache.last = last;
            }
        }
        let cache = Arc::clone(&self.cache);
        self.writer.submit(
            ops,
            Box::new(move |result| {
                if result.is_ok() {
                    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(last) = last {
                        cache.flushed = Some(cache.flushed.map_or(last.index, |f| f.max(last.index)));
                    }
                    cache.trim();
                }
                callback.log_io_completed(result.map_err(std::io::Error::other));
            }),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut cache = self.cache();
            cache.entries.retain(|&i, _| i < log_id.index);
            let before = log_id.index.checked_sub(1);
            cache.flushed = cache.flushed.map(|f| f.min(before.unwrap_or(0)));
            cache.last = cache.entries.last_key_value().map(|(_, e)| e.log_id);
        }
        let op = RaftOp::TruncateLog { group: self.group, from: log_id.index };
        self.writer.write(vec![op]).await.map_err(io_write)?;
        // The new last entry, when it was not cached.
        let last = self.cache().last;
        if last.is_none() {
            let from_db = match self.db.last_log(self.group).map_err(io_read)? {
                Some((_, bytes)) => Some(decode_entry(&bytes)?.log_id),
                None => None,
            };
            let mut cache = self.cache();
            cache.last = from_db.or(cache.purged);
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut cache = self.cache();
            cache.entries.retain(|&i, _| i > log_id.index);
            cache.purged = Some(log_id);
            if cache.last.is_none_or(|l| l.index < log_id.index) {
                cache.last = Some(log_id);
            }
        }
        let value = bincode::serialize(&Some(log_id)).map_err(io_write)?;
        let ops = vec![
            RaftOp::PutState { group: self.group, what: RaftStateKey::Purged, value },
            RaftOp::PurgeLog { group: self.group, upto: log_id.index },
        ];
        self.writer.write(ops).await.map_err(io_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Cmd;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Cmd::Meta(crate::types::MetaCmd::RemoveNode(index))),
        }
    }

    /// A lagging follower asks for entries that lie wholly before the cached run; before the fix
    /// this panicked inside `BTreeMap::range` and the replication task died.
    #[test]
    fn ranges_before_the_cache_are_read_from_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let db = Arc::new(RaftDb::open(dir.path()).unwrap());
            let writer = LogWriter::start(Arc::clone(&db)).unwrap();
            let store = LogStore::open(7, Arc::clone(&db), writer.clone()).unwrap();
            let total = CACHED_ENTRIES as u64 * 3;
            let ops: Vec<RaftOp> = (1..=total)
                .map(|i| RaftOp::PutLog { group: 7, index: i, entry: encode_entry(&entry(i)).unwrap() })
                .collect();
            writer.write(ops).await.unwrap();
            {
                let mut cache = store.cache();
                for i in (total - CACHED_ENTRIES as u64 + 1)..=total {
                    cache.entries.insert(i, entry(i));
                }
                cache.flushed = Some(total);
                cache.last = Some(entry(total).log_id);
            }
            let first_cached = total - CACHED_ENTRIES as u64 + 1;
            let indexes = |from, to| -> Vec<u64> {
                store.entries(from, to).unwrap().iter().map(|e| e.log_id.index).collect()
            };
            assert_eq!(indexes(1, 11), (1..11).collect::<Vec<_>>());
            assert_eq!(indexes(5, first_cached), (5..first_cached).collect::<Vec<_>>());
            assert_eq!(
                indexes(first_cached - 2, first_cached + 2),
                (first_cached - 2..first_cached + 2).collect::<Vec<_>>()
            );
            assert_eq!(indexes(first_cached + 1, total + 1), (first_cached + 1..=total).collect::<Vec<_>>());
            assert!(indexes(9, 9).is_empty());
            assert!(indexes(10, 3).is_empty());
            writer.stop().await;
        });
    }
}
