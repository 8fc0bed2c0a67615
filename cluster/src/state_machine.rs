//! One group's state machine: committed entries are applied in log order (a shard's through
//! [`ShardState`], the metadata group's through [`MetaState`]), and the last applied log id is
//! written in the same RocksDB batch as the query records the entries produced.
//!
//! The in-memory state is a deterministic function of the applied commands, so on start it is
//! rebuilt from the group's stored snapshot (if any) and by re-applying the log after it up to
//! the recorded applied id (as the standalone engine replays its command log); entries after it
//! are applied again by openraft as they commit. Snapshots ([`crate::snapshot`]) let openraft
//! purge the log and bring a replica that is too far behind up to date in one transfer.

use crate::log_store::{io_read, io_write, LogStore};
use crate::meta::MetaState;
use crate::shard::ShardState;
use crate::snapshot::{self, Image, SnapshotHead};
use crate::types::{Cmd, META_GROUP};
use crate::types::{Entry, GroupId, LogId, Resp, SnapshotData, StorageError, StoredMembership, TypeConfig};
use crate::watermark::Watermark;
use crate::writer::LogWriter;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
};
use settle_core::Span;
use settle_storage::{RaftDb, RaftOp, RaftStateKey};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Longest a snapshot being sent waits for the records of the entries it covers to be written
/// (they ride the writer's next batch, so this is a bound, not an expected wait).
const SNAPSHOT_ROWS_WAIT: Duration = Duration::from_secs(30);

fn snapshot_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO { source: StorageIOError::write_snapshot(None, AnyError::error(e.to_string())) }
}

fn snapshot_read_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO { source: StorageIOError::read_snapshot(None, AnyError::error(e.to_string())) }
}

#[derive(Debug)]
pub enum SmKind {
    Meta(MetaState),
    Shard(Box<ShardState>),
}

#[derive(Debug)]
pub struct SmInner {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub kind: SmKind,
    /// Set when the replica is deleted (moved away): nothing more of it may reach the database.
    dropped: bool,
}

impl SmKind {
    fn image(&self) -> Image {
        match self {
            SmKind::Meta(meta) => Image::Meta(meta.clone()),
            SmKind::Shard(shard) => Image::Shard(Box::new(shard.image())),
        }
    }

    fn from_image(group: GroupId, image: Image, fx_max_age: Span, hash_seed: u64) -> Result<SmKind, String> {
        match (group == META_GROUP, image) {
            (true, Image::Meta(meta)) => Ok(SmKind::Meta(meta)),
            (false, Image::Shard(shard)) => {
                Ok(SmKind::Shard(Box::new(ShardState::from_image(group, fx_max_age, hash_seed, *shard)?)))
            }
            _ => Err(format!("group {group}: the snapshot is of the other kind of group")),
        }
    }
}

impl SmInner {
    fn apply_entry(&mut self, entry: &Entry, ops: Option<&mut Vec<RaftOp>>) -> Resp {
        self.applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => Resp::Done(Ok(())),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                Resp::Done(Ok(()))
            }
            EntryPayload::Normal(cmd) => match (&mut self.kind, cmd) {
                (SmKind::Meta(meta), Cmd::Meta(m)) => Resp::Done(meta.apply(m, ops)),
                (SmKind::Meta(_), _) => Resp::Done(Err("a shard command reached the metadata group".into())),
                (SmKind::Shard(shard), cmd) => shard.apply(entry.log_id.index, cmd, ops),
            },
        }
    }
}

/// A group's state machine; clones share the state (the node reads it for queries).
#[derive(Clone, Debug)]
pub struct GroupSm {
    group: GroupId,
    db: Arc<RaftDb>,
    writer: LogWriter,
    inner: Arc<Mutex<SmInner>>,
    /// How far the records of applied entries are written (reads of them wait for it).
    written: Arc<Watermark>,
    fx_max_age: Span,
    hash_seed: u64,
    /// Set by the first `get_current_snapshot` (openraft's start-up call) or `set_started`.
    started: Arc<AtomicBool>,
    /// Snapshots installed since the process started (status and tests).
    installed: Arc<AtomicU64>,
}

impl GroupSm {
    /// Opens the group's state machine: its stored snapshot's image, if it has one (the log
    /// before it may be purged), then the log after it re-applied up to the recorded applied id.
    pub fn open(
        group: GroupId,
        db: &Arc<RaftDb>,
        writer: LogWriter,
        log: &LogStore,
        fx_max_age: Span,
        hash_seed: u64,
    ) -> Result<GroupSm, StorageError> {
        let mut inner = match db.state(group, RaftStateKey::Snapshot).map_err(io_read)? {
            Some(bytes) => {
                let parsed = snapshot::parse(&bytes).map_err(io_read)?;
                if parsed.head.group != group {
                    return Err(io_read(format!(
                        "group {group}: the stored snapshot is of group {}",
                        parsed.head.group
                    )));
                }
                let kind = SmKind::from_image(group, parsed.image, fx_max_age, hash_seed).map_err(io_read)?;
                SmInner {
                    applied: parsed.head.last_log_id,
                    membership: parsed.head.membership,
                    kind,
                    dropped: false,
                }
            }
            None => {
                let kind = if group == META_GROUP {
                    SmKind::Meta(MetaState::default())
                } else {
                    SmKind::Shard(Box::new(ShardState::new(group, fx_max_age, hash_seed)))
                };
                SmInner { applied: None, membership: StoredMembership::default(), kind, dropped: false }
            }
        };
        if let Some(bytes) = db.state(group, RaftStateKey::Applied).map_err(io_read)? {
            let (applied, _membership): (Option<LogId>, StoredMembership) =
                bincode::deserialize(&bytes).map_err(io_read)?;
            if applied.map(|l| l.index) < inner.applied.map(|l| l.index) {
                // The snapshot is written after the records of the entries it covers (see
                // `apply`), so this means the database lost writes.
                return Err(io_read(format!("group {group}: the applied id is behind the stored snapshot")));
            }
            if let Some(applied) = applied {
                let mut from = inner.applied.map_or(0, |l| l.index.saturating_add(1));
                // In chunks, so a long log never sits in memory at once.
                while from <= applied.index {
                    let to = applied.index.saturating_add(1).min(from.saturating_add(4096));
                    let entries = log.entries(from, to)?;
                    if entries.first().map(|e| e.log_id.index) != Some(from) {
                        return Err(io_read(format!(
                            "group {group}: the log has no entry {from} below the applied index {}",
                            applied.index
                        )));
                    }
                    for entry in &entries {
                        inner.apply_entry(entry, None);
                    }
                    from = to;
                }
                if inner.applied != Some(applied) {
                    return Err(io_read(format!("group {group}: the log does not end at the applied id")));
                }
            }
        }
        // Everything applied so far was written before (the applied id rides with its records).
        let written = Arc::new(Watermark::new(inner.applied.map(|l| l.index)));
        Ok(GroupSm {
            group,
            db: Arc::clone(db),
            writer,
            inner: Arc::new(Mutex::new(inner)),
            written,
            fx_max_age,
            hash_seed,
            started: Arc::new(AtomicBool::new(false)),
            installed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Tells the state machine that openraft has started on it (after `Raft::new`, which has
    /// made the start-up call already; tests driving the state machine alone call it).
    pub fn set_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    /// Snapshots installed since the process started.
    pub fn snapshots_installed(&self) -> u64 {
        self.installed.load(Ordering::SeqCst)
    }

    /// The stored snapshot with, unless `image_only`, the group's rows appended.
    async fn current_snapshot(&self, image_only: bool) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(mut bytes) =
            self.db.state(self.group, RaftStateKey::Snapshot).map_err(snapshot_read_error)?
        else {
            return Ok(None);
        };
        let head = snapshot::head(&bytes).map_err(snapshot_read_error)?;
        let meta = SnapshotMeta {
            last_log_id: head.last_log_id,
            last_membership: head.membership.clone(),
            snapshot_id: snapshot::snapshot_id(&head),
        };
        if !image_only {
            let index = head.last_log_id.map(|l| l.index);
            if !self.written.wait(index, SNAPSHOT_ROWS_WAIT).await {
                return Err(snapshot_read_error(format!(
                    "group {}: the records up to {index:?} are not written",
                    self.group
                )));
            }
            let db = Arc::clone(&self.db);
            let group = self.group;
            bytes = tokio::task::spawn_blocking(move || {
                db.group_rows(group, |family, key, value| -> Result<(), RowsError> {
                    snapshot::append_row(&mut bytes, family, key, value).map_err(RowsError::Encode)
                })
                .map(|()| bytes)
            })
            .await
            .map_err(snapshot_read_error)?
            .map_err(snapshot_read_error)?;
        }
        Ok(Some(Snapshot { meta, snapshot: Box::new(std::io::Cursor::new(bytes)) }))
    }

    pub fn lock(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `ops` durably unless the replica was deleted (then they are dropped: a snapshot
    /// built or received while the group shut down must not bring it back).
    async fn write_unless_dropped(&self, ops: Vec<RaftOp>) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let inner = self.lock();
            if inner.dropped {
                return Ok(());
            }
            self.writer.submit(
                ops,
                Box::new(move |result| {
                    let _ = tx.send(result);
                }),
            );
        }
        rx.await.map_err(|_| "the log writer stopped".to_string())?
    }

    /// Deletes everything the replica has on disk (log, vote, state rows) and keeps anything
    /// applied later from being written; waits until the deletion is durable.
    pub async fn drop_records(&self) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut inner = self.lock();
            inner.dropped = true;
            self.writer.submit(
                vec![RaftOp::DropGroup { group: self.group }],
                Box::new(move |result| {
                    let _ = tx.send(result);
                }),
            );
        }
        rx.await.map_err(|_| "the log writer stopped".to_string())?
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn written(&self) -> &Watermark {
        &self.written
    }
}

/// Why reading a group's rows for a snapshot failed.
#[derive(Debug)]
enum RowsError {
    Storage(settle_storage::StorageError),
    Encode(String),
}

impl From<settle_storage::StorageError> for RowsError {
    fn from(e: settle_storage::StorageError) -> RowsError {
        RowsError::Storage(e)
    }
}

impl std::fmt::Display for RowsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowsError::Storage(e) => write!(f, "{e}"),
            RowsError::Encode(e) => f.write_str(e),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for GroupSm {
    /// Takes the image under the state lock (openraft builds while apply goes on) and stores
    /// it through the log writer. The returned snapshot carries no bytes: openraft 0.9 keeps
    /// only the meta of a built snapshot (`core::sm::worker`) and asks `get_current_snapshot`
    /// when it sends one, so the image is not read back and the rows are read only then.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (head, image) = {
            let inner = self.lock();
            let head = SnapshotHead {
                group: self.group,
                last_log_id: inner.applied,
                membership: inner.membership.clone(),
            };
            (head, inner.kind.image())
        };
        let stored = snapshot::encode_stored(&head, &image).map_err(snapshot_error)?;
        drop(image);
        // Queued after the records of every entry the image covers (apply queues them under the
        // state lock), so a snapshot on disk never runs ahead of the records and applied id.
        let op = RaftOp::PutState { group: self.group, what: RaftStateKey::Snapshot, value: stored };
        self.write_unless_dropped(vec![op]).await.map_err(snapshot_error)?;
        let meta = SnapshotMeta {
            last_log_id: head.last_log_id,
            snapshot_id: snapshot::snapshot_id(&head),
            last_membership: head.membership,
        };
        Ok(Snapshot { meta, snapshot: Box::new(std::io::Cursor::new(Vec::new())) })
    }
}

impl RaftStateMachine<TypeConfig> for GroupSm {
    type SnapshotBuilder = GroupSm;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let inner = self.lock();
        Ok((inner.applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Resp>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        let mut out = Vec::new();
        let mut inner = self.lock();
        for entry in entries {
            out.push(inner.apply_entry(&entry, Some(&mut ops)));
        }
        let record = bincode::serialize(&(inner.applied, &inner.membership)).map_err(io_write)?;
        let applied = inner.applied.map(|l| l.index);
        if inner.dropped {
            // openraft's state-machine task may still apply an entry after the group was shut
            // down and deleted; its records must not bring the deleted replica's applied id back
            // (a restart would then find an applied index with no log below it).
            return Ok(out);
        }
        ops.push(RaftOp::PutState { group: self.group, what: RaftStateKey::Applied, value: record });
        // Written with the node's next log batch, in order after earlier state writes, without
        // waiting: the log is durable, and the state is rebuilt from it up to this applied id.
        // Queued before the state lock is released, so that a snapshot image taken under the
        // lock is always queued after the records of the entries it contains, and a deletion
        // (`drop_records`) after all of them.
        let written = Arc::clone(&self.written);
        self.writer.submit_unsynced_then(
            ops,
            Box::new(move |result| {
                if result.is_ok() {
                    written.advance(applied);
                }
            }),
        );
        drop(inner);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    /// Replaces the group's records and state with the snapshot's, in one batch with the
    /// stored snapshot and the applied id (so a restart finds either the old state or the new
    /// one, and opens from the stored snapshot: openraft purges the log it covers next).
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<crate::types::NodeId, openraft::BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let mut bytes = snapshot.into_inner();
        let parsed = snapshot::parse(&bytes).map_err(snapshot_read_error)?;
        let head = parsed.head;
        if head.group != self.group || head.last_log_id != meta.last_log_id {
            return Err(snapshot_read_error(format!(
                "group {}: received a snapshot of group {} at {:?}, announced at {:?}",
                self.group, head.group, head.last_log_id, meta.last_log_id
            )));
        }
        let kind = SmKind::from_image(self.group, parsed.image, self.fx_max_age, self.hash_seed)
            .map_err(snapshot_read_error)?;
        bytes.truncate(parsed.stored_len);
        let applied = bincode::serialize(&(head.last_log_id, &head.membership)).map_err(snapshot_error)?;
        let ops = vec![
            RaftOp::ClearGroupState { group: self.group },
            RaftOp::PutGroupRows { group: self.group, rows: parsed.rows },
            RaftOp::PutState { group: self.group, what: RaftStateKey::Snapshot, value: bytes },
            RaftOp::PutState { group: self.group, what: RaftStateKey::Applied, value: applied },
        ];
        self.write_unless_dropped(ops).await.map_err(snapshot_error)?;
        {
            let mut inner = self.lock();
            inner.applied = head.last_log_id;
            inner.membership = head.membership;
            inner.kind = kind;
        }
        self.written.advance(head.last_log_id.map(|l| l.index));
        self.installed.fetch_add(1, Ordering::SeqCst);
        tracing::info!(group = self.group, last_log_id = ?head.last_log_id, "installed a snapshot");
        Ok(())
    }

    /// The stored snapshot with the group's rows. openraft 0.9 asks for it first inside
    /// `Raft::new` (`StorageHelper::get_initial_state`, before anything can be sent) and reads
    /// only its meta: that first call gets the image alone, which spares a scan of every
    /// group's rows at every start.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let image_only = !self.started.swap(true, Ordering::SeqCst);
        self.current_snapshot(image_only).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_store::encode_entry;
    use crate::types::{TxBatch, TxList};
    use openraft::storage::RaftLogStorage;
    use openraft::CommittedLeaderId;
    use settle_core::{Instant, Partner, TxInput};
    use settle_storage::{GroupRow, Resolution, ResolutionAction};

    const GROUP: GroupId = 3;

    fn partner(id: &str) -> Partner {
        let value = serde_json::json!({"id": id, "settlement_currency": "EUR", "since": "2026-01-01T00:00:00Z",
            "cycle": {"every": "daily", "cutoff": "00:00", "tz": "UTC"},
            "contracts": [{"effective_from": "2026-01-01T00:00:00Z",
                "shares": [{"party": "partner", "percent": "90"}, {"party": "platform", "percent": "10"}],
                "fees": [{"kind": "percent", "bps": "150"}]}]});
        settle_core::scenario::parse_partner(&value, "partner").unwrap()
    }

    fn tx(id: &str, partner: &str, currency: &str, day: u32) -> TxInput {
        let value = serde_json::json!({"id": id, "partner": partner, "kind": "sale", "amount": "10.00",
            "currency": currency, "occurred_at": format!("2026-01-{day:02}T10:00:00Z")});
        settle_core::scenario::parse_transaction(&value, "tx", Some(Instant(0))).unwrap()
    }

    fn at(day: u32) -> Instant {
        Instant::parse_rfc3339(&format!("2026-01-{day:02}T10:00:01Z")).unwrap()
    }

    fn entry(index: u64, cmd: Cmd) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(cmd) }
    }

    /// Partners, transactions over several days (statements close), exceptions of both kinds
    /// and a resolution: every kind of state and row a shard has.
    fn commands(from_day: u32, days: u32) -> Vec<Cmd> {
        let mut out = Vec::new();
        if from_day == 1 {
            out.push(Cmd::Register(Arc::new(partner("p"))));
            out.push(Cmd::Register(Arc::new(partner("q"))));
        }
        for day in from_day..from_day + days {
            let txs = vec![
                tx(&format!("a{day}"), "p", "EUR", day),
                tx(&format!("b{day}"), "q", "EUR", day),
                tx(&format!("c{day}"), "q", "XXX", day),
                tx(&format!("d{day}"), "nobody", "EUR", day),
                tx(&format!("a{day}"), "p", "EUR", day),
            ];
            out.push(Cmd::Txs(TxBatch { received_at: at(day), txs: Arc::new(TxList::new(txs)) }));
            out.push(Cmd::Tick(at(day)));
        }
        if from_day == 1 {
            let reject = ResolutionAction::Reject { reason: "no".into() };
            out.push(Cmd::Resolve(Arc::new((
                0,
                Resolution { action: reject, by: "user:a".into(), at: at(3) },
            ))));
        }
        out
    }

    struct Replica {
        db: Arc<RaftDb>,
        writer: LogWriter,
        log: LogStore,
        sm: GroupSm,
    }

    impl Replica {
        fn open(dir: &std::path::Path) -> Replica {
            let db = Arc::new(RaftDb::open(dir).unwrap());
            let writer = LogWriter::start(Arc::clone(&db)).unwrap();
            Replica::reopen(db, writer)
        }

        fn reopen(db: Arc<RaftDb>, writer: LogWriter) -> Replica {
            let log = LogStore::open(GROUP, Arc::clone(&db), writer.clone()).unwrap();
            let sm = GroupSm::open(GROUP, &db, writer.clone(), &log, Span::from_hours(24), 11).unwrap();
            sm.set_started();
            Replica { db, writer, log, sm }
        }

        /// Appends `cmds` to the log (durably) and applies them, as openraft would.
        async fn commit(&mut self, cmds: Vec<Cmd>) {
            let next = self.sm.lock().applied.map_or(1, |l| l.index + 1);
            let entries: Vec<Entry> =
                cmds.into_iter().enumerate().map(|(i, cmd)| entry(next + i as u64, cmd)).collect();
            let ops = entries
                .iter()
                .map(|e| RaftOp::PutLog {
                    group: GROUP,
                    index: e.log_id.index,
                    entry: encode_entry(e).unwrap(),
                })
                .collect();
            self.writer.write(ops).await.unwrap();
            let last = entries.last().map(|e| e.log_id.index);
            self.sm.apply(entries).await.unwrap();
            assert!(self.sm.written().wait(last, Duration::from_secs(10)).await);
        }

        fn hash(&self) -> String {
            match &self.sm.lock().kind {
                SmKind::Shard(shard) => shard.state_hash(),
                SmKind::Meta(_) => unreachable!(),
            }
        }

        fn exceptions(&self) -> Vec<crate::shard::ExceptionSlot> {
            match &self.sm.lock().kind {
                SmKind::Shard(shard) => shard.exceptions().to_vec(),
                SmKind::Meta(_) => unreachable!(),
            }
        }

        fn rows(&self) -> Vec<GroupRow> {
            let mut rows = Vec::new();
            self.db
                .group_rows(GROUP, |family, key, value| -> Result<(), settle_storage::StorageError> {
                    rows.push(GroupRow { family, key: key.to_vec(), value: value.to_vec() });
                    Ok(())
                })
                .unwrap();
            rows
        }

        async fn restart(self) -> Replica {
            let Replica { db, writer, .. } = self;
            Replica::reopen(db, writer)
        }
    }

    #[tokio::test]
    async fn a_snapshot_installed_elsewhere_gives_the_same_state_and_rows_and_survives_restarts() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = Replica::open(dir_a.path());
        a.commit(commands(1, 4)).await;
        let snapshot = a.sm.build_snapshot().await.unwrap();
        let at_snapshot = a.sm.lock().applied;
        assert_eq!(snapshot.meta.last_log_id, at_snapshot);
        // Entries after the snapshot: the rows sent include theirs too.
        a.commit(commands(5, 1)).await;
        let sent = a.sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(sent.meta, snapshot.meta);

        // A fresh replica on another database installs it.
        let mut b = Replica::open(dir_b.path());
        let mut receiving = b.sm.begin_receiving_snapshot().await.unwrap();
        receiving.get_mut().extend_from_slice(sent.snapshot.get_ref());
        b.sm.install_snapshot(&sent.meta, receiving).await.unwrap();
        assert_eq!(b.sm.snapshots_installed(), 1);
        assert_eq!(b.sm.lock().applied, at_snapshot);
        // Then applies what followed, as its leader would send it.
        b.commit(commands(5, 1)).await;
        assert_eq!(b.hash(), a.hash());
        assert_eq!(b.exceptions(), a.exceptions());
        assert!(!b.exceptions().is_empty());
        assert_eq!(b.rows(), a.rows(), "the same query records");
        assert!(b.rows().len() > 10);
        // It serves the snapshot it installed.
        let served = b.sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(served.meta, sent.meta);

        // Restarted, with the log the snapshot covers purged (as openraft purges it after an
        // install): the state comes from the stored snapshot plus the log after it.
        b.log.purge(at_snapshot.unwrap()).await.unwrap();
        let hash = b.hash();
        let b = b.restart().await;
        assert_eq!(b.hash(), hash);
        assert_eq!(b.sm.lock().applied, a.sm.lock().applied);

        // The leader's side: its log purged up to its snapshot, more entries, a restart.
        a.log.purge(at_snapshot.unwrap()).await.unwrap();
        a.commit(commands(6, 2)).await;
        let hash = a.hash();
        let applied = a.sm.lock().applied;
        let a = a.restart().await;
        assert_eq!(a.hash(), hash);
        assert_eq!(a.sm.lock().applied, applied);
        a.writer.stop().await;
        b.writer.stop().await;
    }

    #[tokio::test]
    async fn the_metadata_group_snapshots_too_and_a_snapshot_of_another_group_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(RaftDb::open(dir.path()).unwrap());
        let writer = LogWriter::start(Arc::clone(&db)).unwrap();
        let log = LogStore::open(META_GROUP, Arc::clone(&db), writer.clone()).unwrap();
        let mut meta =
            GroupSm::open(META_GROUP, &db, writer.clone(), &log, Span::from_hours(24), 11).unwrap();
        meta.set_started();
        let info = crate::meta::NodeInfo {
            id: 7,
            peer: "127.0.0.1:1".into(),
            quic: "127.0.0.1:2".into(),
            http: None,
        };
        let cmd = Cmd::Meta(crate::types::MetaCmd::RegisterNode(info));
        meta.apply(vec![entry(1, cmd)]).await.unwrap();
        assert!(meta.written().wait(Some(1), Duration::from_secs(10)).await);
        meta.build_snapshot().await.unwrap();
        let sent = meta.get_current_snapshot().await.unwrap().unwrap();

        let other = tempfile::tempdir().unwrap();
        let mut b = Replica::open(other.path());
        assert!(
            b.sm.install_snapshot(&sent.meta, sent.snapshot).await.is_err(),
            "group 0's snapshot in group 3"
        );
        let reopened =
            GroupSm::open(META_GROUP, &db, writer.clone(), &log, Span::from_hours(24), 11).unwrap();
        let registered = match &reopened.lock().kind {
            SmKind::Meta(state) => state.nodes.contains_key(&7),
            SmKind::Shard(_) => false,
        };
        assert!(registered);
        writer.stop().await;
        b.writer.stop().await;
    }
}
