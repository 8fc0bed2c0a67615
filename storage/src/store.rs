//! The RocksDB store: opening with the format check, the single durable commit, and readers for
//! recovery and queries.

use crate::codec::{self, ExceptionRecord, LogEntry};
use crate::keys::{self, ALL_CFS};
use crate::StorageError;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBRawIterator, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};
use settle_core::{
    ContractVersion, ExceptionReason, FxRate, Instant, Outcome, Partner, Span, Statement, TxInput,
};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The storage format this build writes and reads. Bump it with any change to keys or values.
pub const FORMAT_VERSION: u32 = 2;

/// The database. `Send + Sync`: queries may run beside the committer.
pub struct Store {
    db: DB,
    /// Test hook: when set, [`Store::commit`] fails as a failed write would.
    fail_commits: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).finish()
    }
}

pub(crate) fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn corrupt(cf: &'static str, key: &[u8], source: codec::CodecError) -> StorageError {
    StorageError::Corrupt { cf, key: hex(key), source }
}

/// Opens (or creates) a RocksDB in `dir` with the given column families and the options both of
/// Settle's databases use (the standalone store and the cluster's `RaftDb`).
pub(crate) fn open_rocksdb(dir: &Path, cfs: &[&str]) -> Result<DB, StorageError> {
    // RocksDB creates only the last level of a missing path.
    std::fs::create_dir_all(dir).map_err(|e| StorageError::Io(format!("{}: {e}", dir.display())))?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Group commit makes few, large writes; a bigger write buffer keeps flushes rare.
    opts.set_write_buffer_size(64 << 20);
    opts.increase_parallelism(2);
    let cfs = cfs.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    Ok(DB::open_cf_descriptors(&opts, dir, cfs)?)
}

impl Store {
    /// Opens (or creates) the database in `dir`. Refuses a database of another format version.
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        let db = open_rocksdb(dir, &ALL_CFS)?;
        let store = Store { db, fail_commits: AtomicBool::new(false) };
        store.check_format()?;
        Ok(store)
    }

    /// Opens an existing database read-only (a backup or a stopped node's store: operations
    /// tools that must not change a byte of it). Refuses another format version, or none.
    pub fn open_read_only(dir: &Path) -> Result<Store, StorageError> {
        let opts = Options::default();
        let db = DB::open_cf_for_read_only(&opts, dir, ALL_CFS, false)?;
        let store = Store { db, fail_commits: AtomicBool::new(false) };
        let meta = store.cf(keys::CF_META)?;
        match store.db.get_cf(meta, keys::META_FORMAT_VERSION)? {
            Some(bytes) if bytes.as_slice() == FORMAT_VERSION.to_be_bytes() => Ok(store),
            Some(bytes) => {
                let found = bytes.as_slice().try_into().map(u32::from_be_bytes).unwrap_or(0);
                Err(StorageError::UnsupportedFormat { found })
            }
            None => Err(StorageError::MissingFormatVersion),
        }
    }

    fn check_format(&self) -> Result<(), StorageError> {
        let meta = self.cf(keys::CF_META)?;
        match self.db.get_cf(meta, keys::META_FORMAT_VERSION)? {
            Some(bytes) => {
                let raw: [u8; 4] = bytes.as_slice().try_into().map_err(|_| {
                    corrupt(
                        keys::CF_META,
                        keys::META_FORMAT_VERSION,
                        codec::CodecError { what: "format version", detail: "not 4 bytes".into() },
                    )
                })?;
                let found = u32::from_be_bytes(raw);
                if found != FORMAT_VERSION {
                    return Err(StorageError::UnsupportedFormat { found });
                }
                Ok(())
            }
            None => {
                let log = self.cf(keys::CF_LOG)?;
                if self.db.iterator_cf(log, IteratorMode::Start).next().is_some() {
                    return Err(StorageError::MissingFormatVersion);
                }
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, keys::META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
                self.write_synced(batch)
            }
        }
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError> {
        self.db.cf_handle(name).ok_or(StorageError::MissingColumnFamily(name))
    }

    pub(crate) fn write_synced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        // The acknowledgement contract: the WAL is fsync'd before this returns.
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// A new, empty batch bound to this store's column families.
    pub fn batch(&self) -> Result<Batch<'_>, StorageError> {
        Ok(Batch {
            inner: WriteBatch::default(),
            scratch: Vec::new(),
            record: Vec::new(),
            record_first: None,
            log: self.cf(keys::CF_LOG)?,
            exceptions: self.cf(keys::CF_EXCEPTIONS)?,
            statements: self.cf(keys::CF_STATEMENTS)?,
            partners: self.cf(keys::CF_PARTNERS)?,
            fx: self.cf(keys::CF_FX)?,
        })
    }

    /// THE durable write: every write that leads to an acknowledgement goes through here. The
    /// whole batch is written atomically and the WAL synced before it returns `Ok`. On `Err`
    /// nothing of the batch may be acknowledged.
    pub fn commit(&self, batch: Batch<'_>) -> Result<(), StorageError> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(StorageError::CommitRefused("write failure injected by a test".into()));
        }
        let Batch { mut inner, record, record_first, log, .. } = batch;
        if let Some(first) = record_first {
            inner.put_cf(log, keys::seq(first), &record);
        }
        if inner.is_empty() {
            return Ok(());
        }
        self.write_synced(inner)
    }

    /// Writes the memtables to SST files, so that the next open need not replay the WAL
    /// (a clean shutdown's courtesy; durability never depends on it).
    pub fn flush(&self) -> Result<(), StorageError> {
        for name in ALL_CFS {
            self.db.flush_cf(self.cf(name)?)?;
        }
        Ok(())
    }

    /// Test hook: makes every later commit fail, as a full disk or an I/O error would.
    #[doc(hidden)]
    pub fn inject_commit_failures(&self, fail: bool) {
        self.fail_commits.store(fail, Ordering::SeqCst);
    }

    /// The highest log sequence written, if any.
    pub fn last_seq(&self) -> Result<Option<u64>, StorageError> {
        let log = self.cf(keys::CF_LOG)?;
        match self.db.iterator_cf(log, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                let entries = codec::split_record(&value).map_err(|e| corrupt(keys::CF_LOG, &key, e))?;
                Ok(entries.last().map(|(seq, _)| *seq))
            }
        }
    }

    /// The log from `from` on, in sequence order (recovery).
    pub fn log_from(&self, from: u64) -> Result<LogIter<'_>, StorageError> {
        let log = self.cf(keys::CF_LOG)?;
        let mut raw = self.db.raw_iterator_cf(log);
        // A record is keyed by its lowest sequence: `from` may be inside the one before.
        raw.seek_for_prev(keys::seq(from));
        if !raw.valid() {
            raw.seek_to_first();
        }
        Ok(LogIter { raw, from, after: None, pending: Vec::new().into_iter(), done: false })
    }

    /// A consistent point-in-time copy of the whole store in `dir` (which must not exist): hard
    /// links of the SST files on the same filesystem, copies otherwise, plus the WAL. Returns a
    /// log sequence that the copy holds at least (every write acknowledged before the call).
    pub fn checkpoint(&self, dir: &Path) -> Result<Option<u64>, StorageError> {
        let at_least = self.last_seq()?;
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        checkpoint.create_checkpoint(dir)?;
        Ok(at_least)
    }

    /// Every statement of a partner, by period start.
    pub fn statements(&self, partner: &str) -> Result<Vec<Statement>, StorageError> {
        let cf = self.cf(keys::CF_STATEMENTS)?;
        let prefix = keys::partner_prefix(partner);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push(codec::decode_statement(&value).map_err(|e| corrupt(keys::CF_STATEMENTS, &key, e))?);
        }
        Ok(out)
    }

    /// Up to `limit` entries of the exception queue after log sequence `after` (exclusive), in
    /// the order they arose.
    pub fn exceptions(&self, after: Option<u64>, limit: usize) -> Result<Vec<ExceptionRecord>, StorageError> {
        let cf = self.cf(keys::CF_EXCEPTIONS)?;
        let start = after.map_or(Some(0), |s| s.checked_add(1));
        let Some(start) = start else { return Ok(Vec::new()) };
        let start_key = keys::seq(start);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&start_key, Direction::Forward)).take(limit) {
            let (key, value) = item?;
            let seq = keys::parse_seq(&key).ok_or_else(|| {
                corrupt(keys::CF_EXCEPTIONS, &key, codec::CodecError { what: "key", detail: "length".into() })
            })?;
            out.push(
                codec::decode_exception(seq, &value).map_err(|e| corrupt(keys::CF_EXCEPTIONS, &key, e))?,
            );
        }
        Ok(out)
    }

    /// Every registered partner (by id, byte order), with every contract version.
    pub fn partners(&self) -> Result<Vec<Partner>, StorageError> {
        let cf = self.cf(keys::CF_PARTNERS)?;
        let mut out: Vec<Partner> = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item?;
            if keys::is_partner_registration(&key) {
                out.push(codec::decode_partner(&value).map_err(|e| corrupt(keys::CF_PARTNERS, &key, e))?);
                continue;
            }
            let (id, version) =
                codec::decode_contract_version(&value).map_err(|e| corrupt(keys::CF_PARTNERS, &key, e))?;
            match out.last_mut() {
                Some(p) if p.id == id => {
                    p.contract.push(version);
                }
                _ => {
                    return Err(corrupt(
                        keys::CF_PARTNERS,
                        &key,
                        codec::CodecError {
                            what: "contract version",
                            detail: "no registration before it".into(),
                        },
                    ))
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Every stored FX rate, by pair, instant and publication order.
    pub fn rates(&self) -> Result<Vec<FxRate>, StorageError> {
        let cf = self.cf(keys::CF_FX)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item?;
            out.push(codec::decode_rate(&value).map_err(|e| corrupt(keys::CF_FX, &key, e))?);
        }
        Ok(out)
    }
}

/// Iterates the log in sequence order, decoding each entry.
pub struct LogIter<'a> {
    raw: DBRawIterator<'a>,
    from: u64,
    /// The highest sequence yielded so far: records must follow each other in order.
    after: Option<u64>,
    /// The rest of the current record, decoded.
    pending: std::vec::IntoIter<(u64, LogEntry)>,
    done: bool,
}

impl std::fmt::Debug for LogIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIter").field("after", &self.after).field("done", &self.done).finish()
    }
}

/// A decoded record's entries from `from` on, and its highest sequence.
type DecodedRecord = (Vec<(u64, LogEntry)>, u64);

/// Decodes one log record; `after` is the highest sequence of the record before it.
fn decode_record(
    key: &[u8],
    value: &[u8],
    from: u64,
    after: Option<u64>,
) -> Result<DecodedRecord, StorageError> {
    let fail =
        |what: &'static str, detail: String| corrupt(keys::CF_LOG, key, codec::CodecError { what, detail });
    let first = keys::parse_seq(key).ok_or_else(|| fail("log key", "length".into()))?;
    let entries = codec::split_record(value).map_err(|e| corrupt(keys::CF_LOG, key, e))?;
    let (Some(&(lowest, _)), Some(&(last, _))) = (entries.first(), entries.last()) else {
        return Err(fail("log record", "empty".into()));
    };
    if lowest != first {
        return Err(fail("log record", "its key is not its lowest sequence".into()));
    }
    if after.is_some_and(|after| first <= after) {
        return Err(fail("log record", format!("sequences {first}..={last} overlap the record before")));
    }
    let mut decoded = Vec::with_capacity(entries.len());
    for (seq, bytes) in entries.into_iter().filter(|(seq, _)| *seq >= from) {
        decoded.push((seq, codec::decode_log_entry(bytes).map_err(|e| corrupt(keys::CF_LOG, key, e))?));
    }
    Ok((decoded, last))
}

impl Iterator for LogIter<'_> {
    type Item = Result<(u64, LogEntry), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(entry) = self.pending.next() {
                return Some(Ok(entry));
            }
            let decoded = match (self.raw.key(), self.raw.value()) {
                (Some(key), Some(value)) => decode_record(key, value, self.from, self.after),
                _ => {
                    self.done = true;
                    return self.raw.status().err().map(|e| Err(e.into()));
                }
            };
            match decoded {
                Ok((entries, last)) => {
                    self.pending = entries.into_iter();
                    self.after = Some(last);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            self.raw.next();
        }
    }
}

/// The transactions of one group, encoded where they were applied (in the partner actors), so
/// that the committer only copies bytes. One buffer for many records: no allocation per record.
#[derive(Debug, Default)]
pub struct TxLog {
    bytes: Vec<u8>,
    entries: Vec<TxLogEntry>,
}

#[derive(Clone, Copy, Debug)]
struct TxLogEntry {
    seq: u64,
    start: usize,
    end: usize,
    exception: Option<ExceptionReason>,
}

impl TxLog {
    pub fn new() -> TxLog {
        TxLog::default()
    }

    pub fn with_capacity(records: usize) -> TxLog {
        TxLog { bytes: Vec::with_capacity(records * 96), entries: Vec::with_capacity(records) }
    }

    /// Appends a transaction with its outcome.
    pub fn push(&mut self, seq: u64, tx: &TxInput, outcome: &Outcome) {
        let start = self.bytes.len();
        codec::encode_tx(&mut self.bytes, tx, outcome);
        let end = self.bytes.len();
        self.entries.push(TxLogEntry { seq, start, end, exception: outcome.exception() });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The encoded bytes of the last record pushed.
    pub fn last_record(&self) -> Option<&[u8]> {
        self.entries.last().and_then(|e| self.bytes.get(e.start..e.end))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every record pushed, in push order: its sequence and its encoded bytes.
    pub(crate) fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.entries.iter().filter_map(|e| self.bytes.get(e.start..e.end).map(|b| (e.seq, b)))
    }
}

/// A set of writes that become durable together through [`Store::commit`]. Methods name what
/// is written; the keys and encodings are decided here and in [`keys`], not by callers.
///
/// Every log entry of a batch goes into one log record (one key: the batch's lowest sequence),
/// so a commit of thousands of transactions costs the memtable one insert rather than thousands.
pub struct Batch<'a> {
    inner: WriteBatch,
    scratch: Vec<u8>,
    /// The log record being built: entries framed by `codec::push_record_entry`.
    record: Vec<u8>,
    /// Lowest sequence in `record`.
    record_first: Option<u64>,
    log: &'a ColumnFamily,
    exceptions: &'a ColumnFamily,
    statements: &'a ColumnFamily,
    partners: &'a ColumnFamily,
    fx: &'a ColumnFamily,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("writes", &self.inner.len()).finish()
    }
}

impl Batch<'_> {
    /// Number of key writes so far (the log record counts as one).
    pub fn len(&self) -> usize {
        self.inner.len() + usize::from(self.record_first.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn log_entry(&mut self, seq: u64, entry: &[u8]) {
        self.record_first = Some(self.record_first.map_or(seq, |first| first.min(seq)));
        codec::push_record_entry(&mut self.record, seq, entry);
    }

    /// Logs the entry encoded in `scratch`.
    fn log_scratch(&mut self, seq: u64) {
        self.record_first = Some(self.record_first.map_or(seq, |first| first.min(seq)));
        codec::push_record_entry(&mut self.record, seq, &self.scratch);
    }

    /// Log entries of encoded transactions and the exception queue's entries.
    pub fn append_txs(&mut self, txs: &TxLog) {
        self.record.reserve(txs.bytes.len() + txs.entries.len() * 12);
        for e in &txs.entries {
            let record = &txs.bytes[e.start..e.end];
            let key = keys::seq(e.seq);
            self.log_entry(e.seq, record);
            if let Some(reason) = e.exception {
                let id = codec::tx_record_id(record).unwrap_or_default();
                self.scratch.clear();
                codec::encode_exception(&mut self.scratch, reason, id);
                self.inner.put_cf(self.exceptions, key, &self.scratch);
            }
        }
    }

    /// One transaction (used for the few the router answers itself).
    pub fn append_tx(&mut self, seq: u64, tx: &TxInput, outcome: &Outcome) {
        let mut one = TxLog::with_capacity(1);
        one.push(seq, tx, outcome);
        self.append_txs(&one);
    }

    pub fn append_rates(&mut self, seq: u64, rates: &[FxRate]) {
        self.scratch.clear();
        codec::encode_rates_entry(&mut self.scratch, rates);
        self.log_scratch(seq);
        for (index, rate) in rates.iter().enumerate() {
            self.scratch.clear();
            codec::encode_rate(&mut self.scratch, rate);
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            self.inner.put_cf(
                self.fx,
                keys::fx_rate(rate.base, rate.quote, rate.at, seq, index),
                &self.scratch,
            );
        }
    }

    pub fn append_partner(&mut self, seq: u64, partner: &Partner) {
        self.scratch.clear();
        codec::encode_partner_entry(&mut self.scratch, partner);
        self.log_scratch(seq);
        self.inner.put_cf(self.partners, keys::partner(&partner.id), &self.scratch[1..]);
    }

    /// `index`: the version's registration index within the partner's contract.
    pub fn append_contract_version(
        &mut self,
        seq: u64,
        partner: &str,
        index: u32,
        version: &ContractVersion,
    ) {
        self.scratch.clear();
        codec::encode_contract_version_entry(&mut self.scratch, partner, version);
        self.log_scratch(seq);
        self.inner.put_cf(self.partners, keys::contract_version(partner, index), &self.scratch[1..]);
    }

    pub fn append_tick(&mut self, seq: u64, at: Instant) {
        self.scratch.clear();
        codec::encode_tick_entry(&mut self.scratch, at);
        self.log_scratch(seq);
    }

    pub fn append_fx_max_age(&mut self, seq: u64, span: Span) {
        self.scratch.clear();
        codec::encode_fx_max_age_entry(&mut self.scratch, span);
        self.log_scratch(seq);
    }

    pub fn put_statement(&mut self, statement: &Statement) {
        self.scratch.clear();
        codec::encode_statement(&mut self.scratch, statement);
        self.inner.put_cf(
            self.statements,
            keys::statement(&statement.partner, statement.period.start),
            &self.scratch,
        );
    }
}
