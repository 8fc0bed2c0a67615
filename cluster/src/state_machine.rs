//! One group's state machine: committed entries are applied in log order (a shard's through
//! [`ShardState`], the metadata group's through [`MetaState`]), and the last applied log id is
//! written in the same RocksDB batch as the query records the entries produced.
//!
//! The in-memory state is a deterministic function of the applied commands, so on start it is
//! rebuilt by re-applying the group's log up to the recorded applied id (as the standalone engine
//! replays its command log); entries after it are applied again by openraft as they commit.

use crate::log_store::{io_read, io_write, LogStore};
use crate::meta::MetaState;
use crate::shard::ShardState;
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
use std::sync::{Arc, Mutex, MutexGuard};

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
    writer: LogWriter,
    inner: Arc<Mutex<SmInner>>,
    /// How far the records of applied entries are written (reads of them wait for it).
    written: Arc<Watermark>,
}

impl GroupSm {
    /// Opens the group's state machine, rebuilding it from the log up to the recorded applied id.
    pub fn open(
        group: GroupId,
        db: &RaftDb,
        writer: LogWriter,
        log: &LogStore,
        fx_max_age: Span,
        hash_seed: u64,
    ) -> Result<GroupSm, StorageError> {
        let kind = if group == META_GROUP {
            SmKind::Meta(MetaState::default())
        } else {
            SmKind::Shard(Box::new(ShardState::new(group, fx_max_age, hash_seed)))
        };
        let mut inner =
            SmInner { applied: None, membership: StoredMembership::default(), kind, dropped: false };
        if let Some(bytes) = db.state(group, RaftStateKey::Applied).map_err(io_read)? {
            let (applied, _membership): (Option<LogId>, StoredMembership) =
                bincode::deserialize(&bytes).map_err(io_read)?;
            if let Some(applied) = applied {
                let mut from = 0;
                // In chunks, so a long log never sits in memory at once.
                while from <= applied.index {
                    let to = applied.index.saturating_add(1).min(from.saturating_add(4096));
                    let entries = log.entries(from, to)?;
                    if entries.is_empty() {
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
        Ok(GroupSm { group, writer, inner: Arc::new(Mutex::new(inner)), written })
    }

    pub fn lock(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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

impl RaftSnapshotBuilder<TypeConfig> for GroupSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // The log is never purged (snapshot policy `Never`), so no replica ever needs one.
        Err(StorageError::IO {
            source: StorageIOError::write_snapshot(
                None,
                AnyError::error("snapshots are not implemented yet"),
            ),
        })
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
        // Queued under the state lock, so that it is ordered with a deletion (`drop_records`).
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

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<crate::types::NodeId, openraft::BasicNode>,
        _snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        Err(StorageError::IO {
            source: StorageIOError::write_snapshot(
                None,
                AnyError::error("snapshots are not implemented yet"),
            ),
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(None)
    }
}
