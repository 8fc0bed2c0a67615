//! The clustered node's database: one RocksDB shared by every Raft group on the node (the
//! metadata group and the shard groups). It stores bytes the cluster crate encodes (log entries,
//! votes, applied ids) under keys built in [`keys`]; it knows nothing of Raft itself.
//!
//! Writes are lists of [`RaftOp`] applied atomically in one `WriteBatch`; the cluster's log
//! writer merges the appends of all groups into one call with `sync = true` (group commit).

use crate::codec::{self, AccountSummary};
use crate::history::{self, Resolution};
use crate::keys::{self, RaftStateKey, GROUP_STATE_CFS, RAFT_CFS};
use crate::store::TxLog;
use crate::StorageError;
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, DB};
use settle_core::{ExceptionReason, Instant, Outcome, Statement, TxInput};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The format of a cluster data dir; bump with any change to keys or values. Format 3 writes
/// group snapshots (`raft_state` tag 3) and compacts logs; a format 2 dir is a format 3 dir
/// without snapshots, so it is upgraded in place when opened for writing (after which a build
/// that knows only format 2 refuses it, rather than failing on a compacted log). Format 4 adds
/// the shard log's prune entries (`settle archive prune`) and their removed history rows; a
/// format 3 dir is a format 4 dir that never pruned, upgraded in place the same way.
pub const RAFT_FORMAT_VERSION: u32 = 4;
/// The oldest format this build opens (and upgrades).
pub const OLDEST_RAFT_FORMAT_VERSION: u32 = 2;
const META_FORMAT: &[u8] = b"format_version";

/// One write of a [`RaftDb::write`] batch.
#[derive(Debug)]
pub enum RaftOp {
    /// A log entry (encoded by the caller).
    PutLog {
        group: u32,
        index: u64,
        entry: Vec<u8>,
    },
    /// Removes the group's log entries with index >= `from` (a conflicting suffix).
    TruncateLog {
        group: u32,
        from: u64,
    },
    /// Removes the group's log entries with index <= `upto` (compaction).
    PurgeLog {
        group: u32,
        upto: u64,
    },
    /// A per-group record (vote, purged id, applied id, snapshot).
    PutState {
        group: u32,
        what: RaftStateKey,
        value: Vec<u8>,
    },
    /// A partner's account summary in a shard (query record).
    PutAccount {
        group: u32,
        partner: String,
        summary: AccountSummary,
    },
    /// An issued statement in a shard (query record).
    PutStatement {
        group: u32,
        statement: Box<Statement>,
    },
    /// The transactions the shard entry at `index` logged, with their outcomes (query record).
    PutHistory {
        group: u32,
        index: u64,
        received_at: Instant,
        txs: TxLog,
    },
    /// Removes the shard's history rows at these log indexes (rows whose transactions are all in
    /// archived periods, or exceptions kept in the queue; see `Cmd::Prune` in settle-cluster).
    DeleteHistory {
        group: u32,
        indices: std::sync::Arc<Vec<u64>>,
    },
    /// An exception of a shard's queue: its transaction with the exception outcome.
    PutException {
        group: u32,
        number: u64,
        tx: Box<TxInput>,
        reason: ExceptionReason,
    },
    /// The resolution of a shard's exception (written again when a claimed retry completes).
    PutResolution {
        group: u32,
        number: u64,
        resolution: Box<Resolution>,
    },
    /// A control-plane record of the metadata group.
    PutControl {
        group: u32,
        space: u8,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    DeleteControl {
        group: u32,
        space: u8,
        key: Vec<u8>,
    },
    /// An audit record of the metadata group.
    PutAudit {
        group: u32,
        seq: u64,
        record: Vec<u8>,
    },
    /// Removes everything of a group's state machine (before a snapshot is installed).
    ClearGroupState {
        group: u32,
    },
    /// Query records of a group as a snapshot carried them (see [`RaftDb::group_rows`]).
    PutGroupRows {
        group: u32,
        rows: Vec<GroupRow>,
    },
    /// Removes everything of a group: log, vote, state (a replica moved off this node).
    DropGroup {
        group: u32,
    },
}

/// One record of a group's state-machine families, as stored: `family` indexes
/// [`GROUP_STATE_CFS`]. Snapshots move a group's records between nodes in this form, so that
/// no record kind needs its own snapshot encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRow {
    pub family: u8,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// The database of a clustered node.
pub struct RaftDb {
    db: DB,
    /// Test hook: when set, writes fail as a failed disk write would.
    fail_writes: AtomicBool,
}

impl std::fmt::Debug for RaftDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftDb").field("path", &self.db.path()).finish()
    }
}

pub(crate) fn corrupt(cf: &'static str, key: &[u8], detail: &str) -> StorageError {
    StorageError::Corrupt {
        cf,
        key: key.iter().map(|b| format!("{b:02x}")).collect(),
        source: codec::CodecError { what: "raft record", detail: detail.to_string() },
    }
}

impl RaftDb {
    /// Opens (or creates) the cluster database in `dir`.
    pub fn open(dir: &Path) -> Result<RaftDb, StorageError> {
        let db = crate::store::open_rocksdb(dir, &RAFT_CFS)?;
        let store = RaftDb { db, fail_writes: AtomicBool::new(false) };
        store.check_format(true)?;
        Ok(store)
    }

    /// Opens an existing cluster database read-only (a stopped member's data dir or a backup:
    /// tools that must not change a byte of it). Refuses another format version, or none.
    pub fn open_read_only(dir: &Path) -> Result<RaftDb, StorageError> {
        let db = DB::open_cf_for_read_only(&rocksdb::Options::default(), dir, RAFT_CFS, false)?;
        let store = RaftDb { db, fail_writes: AtomicBool::new(false) };
        store.check_format(false)?;
        Ok(store)
    }

    /// Checks the format version; a fresh database gets this build's when `create`.
    fn check_format(&self, create: bool) -> Result<(), StorageError> {
        let meta = self.cf(keys::CF_RAFT_META)?;
        match self.db.get_cf(meta, META_FORMAT)? {
            Some(bytes) => {
                let raw: [u8; 4] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(keys::CF_RAFT_META, META_FORMAT, "format version length"))?;
                let found = u32::from_be_bytes(raw);
                if !(OLDEST_RAFT_FORMAT_VERSION..=RAFT_FORMAT_VERSION).contains(&found) {
                    return Err(StorageError::UnsupportedFormat { found });
                }
                if found < RAFT_FORMAT_VERSION && create {
                    let mut batch = WriteBatch::default();
                    batch.put_cf(meta, META_FORMAT, RAFT_FORMAT_VERSION.to_be_bytes());
                    self.write_batch(batch, true)?;
                }
                Ok(())
            }
            None if create => {
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, META_FORMAT, RAFT_FORMAT_VERSION.to_be_bytes());
                self.write_batch(batch, true)
            }
            None => Err(StorageError::MissingFormatVersion),
        }
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError> {
        self.db.cf_handle(name).ok_or(StorageError::MissingColumnFamily(name))
    }

    fn write_batch(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StorageError::CommitRefused("write failure injected by a test".into()));
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// Applies `ops` atomically; with `sync` the WAL is fsync'd before it returns.
    pub fn write(&self, ops: &[RaftOp], sync: bool) -> Result<(), StorageError> {
        let log = self.cf(keys::CF_RAFT_LOG)?;
        let state = self.cf(keys::CF_RAFT_STATE)?;
        let accounts = self.cf(keys::CF_SHARD_ACCOUNTS)?;
        let statements = self.cf(keys::CF_SHARD_STATEMENTS)?;
        let history = self.cf(keys::CF_SHARD_HISTORY)?;
        let exceptions = self.cf(keys::CF_SHARD_EXCEPTIONS)?;
        let control = self.cf(keys::CF_META_CONTROL)?;
        let audit = self.cf(keys::CF_META_AUDIT)?;
        let state_cfs =
            GROUP_STATE_CFS.iter().map(|name| self.cf(name)).collect::<Result<Vec<_>, StorageError>>()?;
        let mut batch = WriteBatch::default();
        let mut scratch = Vec::new();
        for op in ops {
            match op {
                RaftOp::PutLog { group, index, entry } => {
                    batch.put_cf(log, keys::raft_log(*group, *index), entry)
                }
                RaftOp::TruncateLog { group, from } => {
                    let (_, end) = keys::group_range(*group);
                    batch.delete_range_cf(log, &keys::raft_log(*group, *from)[..], &end[..]);
                }
                RaftOp::PurgeLog { group, upto } => {
                    let (start, _) = keys::group_range(*group);
                    // The end is exclusive.
                    match upto.checked_add(1) {
                        Some(next) => {
                            batch.delete_range_cf(log, &start[..], &keys::raft_log(*group, next)[..])
                        }
                        None => batch.delete_range_cf(log, start, keys::group_range(*group).1),
                    }
                }
                RaftOp::PutState { group, what, value } => {
                    batch.put_cf(state, keys::raft_state(*group, *what), value)
                }
                RaftOp::PutAccount { group, partner, summary } => {
                    scratch.clear();
                    codec::encode_account(&mut scratch, summary);
                    batch.put_cf(accounts, keys::shard_account(*group, partner), &scratch);
                }
                RaftOp::PutStatement { group, statement } => {
                    scratch.clear();
                    codec::encode_statement(&mut scratch, statement);
                    let key = keys::shard_statement(*group, &statement.partner, statement.period.start);
                    batch.put_cf(statements, key, &scratch);
                }
                RaftOp::PutHistory { group, index, received_at, txs } => {
                    scratch.clear();
                    history::encode_history_row(&mut scratch, *received_at, txs);
                    batch.put_cf(history, keys::shard_history(*group, *index), &scratch);
                }
                RaftOp::DeleteHistory { group, indices } => {
                    for index in indices.iter() {
                        batch.delete_cf(history, keys::shard_history(*group, *index));
                    }
                }
                RaftOp::PutException { group, number, tx, reason } => {
                    scratch.clear();
                    codec::encode_tx(&mut scratch, tx, &Outcome::Exception(*reason));
                    let key = keys::shard_exception(*group, *number, keys::EXCEPTION_PART_ENTRY);
                    batch.put_cf(exceptions, key, &scratch);
                }
                RaftOp::PutResolution { group, number, resolution } => {
                    scratch.clear();
                    history::encode_resolution(&mut scratch, resolution);
                    let key = keys::shard_exception(*group, *number, keys::EXCEPTION_PART_RESOLUTION);
                    batch.put_cf(exceptions, key, &scratch);
                }
                RaftOp::PutControl { group, space, key, value } => {
                    batch.put_cf(control, keys::meta_control(*group, *space, key), value)
                }
                RaftOp::DeleteControl { group, space, key } => {
                    batch.delete_cf(control, keys::meta_control(*group, *space, key))
                }
                RaftOp::PutAudit { group, seq, record } => {
                    batch.put_cf(audit, keys::meta_audit(*group, *seq), record)
                }
                RaftOp::DropGroup { group } => {
                    let (start, end) = keys::group_range(*group);
                    for cf in [log, state].into_iter().chain(state_cfs.iter().copied()) {
                        batch.delete_range_cf(cf, start, end);
                    }
                }
                RaftOp::PutGroupRows { group, rows } => {
                    let (start, end) = keys::group_range(*group);
                    for row in rows {
                        let cf = state_cfs.get(usize::from(row.family)).copied();
                        // A row of another group (or family) would corrupt a group the snapshot
                        // does not describe: refuse the whole batch.
                        let inside =
                            row.key.as_slice() >= start.as_slice() && row.key.as_slice() < end.as_slice();
                        let Some(cf) = cf.filter(|_| inside) else {
                            return Err(corrupt(
                                keys::CF_RAFT_STATE,
                                &row.key,
                                "snapshot row outside its group",
                            ));
                        };
                        batch.put_cf(cf, &row.key, &row.value);
                    }
                }
                RaftOp::ClearGroupState { group } => {
                    let (start, end) = keys::group_range(*group);
                    for cf in &state_cfs {
                        batch.delete_range_cf(*cf, start, end);
                    }
                    let applied = keys::raft_state(*group, RaftStateKey::Applied);
                    batch.delete_cf(state, applied);
                }
            }
        }
        self.write_batch(batch, sync)
    }

    /// A group's log entries with `from <= index < to`, in index order.
    pub fn log_range(&self, group: u32, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let cf = self.cf(keys::CF_RAFT_LOG)?;
        let start = keys::raft_log(group, from);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            let Some((g, index)) = keys::parse_raft_log(&key) else {
                return Err(corrupt(keys::CF_RAFT_LOG, &key, "key length"));
            };
            if g != group || index >= to {
                break;
            }
            out.push((index, value.into_vec()));
        }
        Ok(out)
    }

    /// A group's last log entry.
    pub fn last_log(&self, group: u32) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let cf = self.cf(keys::CF_RAFT_LOG)?;
        let (_, end) = keys::group_range(group);
        let mut iter = self.db.raw_iterator_cf(cf);
        iter.seek_for_prev(end);
        iter.status()?;
        let (Some(key), Some(value)) = (iter.key(), iter.value()) else { return Ok(None) };
        let Some((g, index)) = keys::parse_raft_log(key) else {
            return Err(corrupt(keys::CF_RAFT_LOG, key, "key length"));
        };
        if g != group {
            return Ok(None);
        }
        Ok(Some((index, value.to_vec())))
    }

    /// Every record of `group` in the state-machine families ([`GROUP_STATE_CFS`], in that
    /// order, keys ascending), read from one RocksDB snapshot so that the families agree with
    /// each other; `visit` gets each row and may stop the scan with an error.
    pub fn group_rows<E: From<StorageError>>(
        &self,
        group: u32,
        mut visit: impl FnMut(u8, &[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let snapshot = self.db.snapshot();
        let (start, end) = keys::group_range(group);
        for (family, name) in GROUP_STATE_CFS.iter().enumerate() {
            let cf = self.cf(name)?;
            let mut options = rocksdb::ReadOptions::default();
            options.set_iterate_upper_bound(end.to_vec());
            let mode = IteratorMode::From(&start, Direction::Forward);
            for item in snapshot.iterator_cf_opt(cf, options, mode) {
                let (key, value) = item.map_err(StorageError::from)?;
                // GROUP_STATE_CFS has 6 names: the index always fits a byte.
                visit(family as u8, &key, &value)?;
            }
        }
        Ok(())
    }

    /// A per-group record.
    pub fn state(&self, group: u32, what: RaftStateKey) -> Result<Option<Vec<u8>>, StorageError> {
        let cf = self.cf(keys::CF_RAFT_STATE)?;
        Ok(self.db.get_cf(cf, keys::raft_state(group, what))?)
    }

    /// Every group that has a record in `raft_state` (the groups this node has held).
    pub fn groups(&self) -> Result<Vec<u32>, StorageError> {
        let cf = self.cf(keys::CF_RAFT_STATE)?;
        let mut out: Vec<u32> = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, _) = item?;
            let group: [u8; 4] = key
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt(keys::CF_RAFT_STATE, &key, "key"))?;
            let group = u32::from_be_bytes(group);
            if out.last() != Some(&group) {
                out.push(group);
            }
        }
        Ok(out)
    }

    /// The node's cluster configuration, if it was bootstrapped or joined.
    pub fn cluster_config(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.cf(keys::CF_RAFT_META)?, keys::RAFT_META_CLUSTER)?)
    }

    /// Records the cluster configuration (synced).
    pub fn put_cluster_config(&self, value: &[u8]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(keys::CF_RAFT_META)?, keys::RAFT_META_CLUSTER, value);
        self.write_batch(batch, true)
    }

    /// Test hook: makes every later write fail.
    #[doc(hidden)]
    pub fn inject_write_failures(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Writes memtables out (a clean shutdown's courtesy; durability never depends on it).
    pub fn flush(&self) -> Result<(), StorageError> {
        for name in RAFT_CFS {
            self.db.flush_cf(self.cf(name)?)?;
        }
        Ok(())
    }
}
