//! The control plane on a cluster: users, API keys, sessions, alert rules and the audit chain
//! are the metadata group's replicated state. Every write is one metadata log entry (applied on
//! every member in the same order, with its preconditions checked there); reads are served
//! from this member's replica, which a caller can bring up to date with the leader first
//! ([`ClusterHandle::meta_sync`]).

use crate::meta::{ControlOp, CONFLICT_AUDIT_HEAD, CONFLICT_CHANGED};
use crate::node::{ClusterError, ClusterHandle};
use crate::reads::{ShardAnswer, ShardRead, WRITTEN_WAIT};
use crate::state_machine::SmKind;
use crate::types::{Cmd, MetaCmd, Resp, META_GROUP};
use openraft::ServerState;
use std::time::Duration;

/// How long a leader may go without hearing from a quorum before this member stops trusting
/// its replica for authentication (above the election timeout: a cut-off leader is replaced
/// by then).
pub const META_STALE_AFTER: Duration = Duration::from_millis(2000);
/// How long a member waits for its replica to apply what the leader has applied.
pub const META_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Why a control batch was not written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Another member appended to the audit chain first; nothing was written.
    #[error("{CONFLICT_AUDIT_HEAD}")]
    AuditHeadMoved,
    /// A record named by an `Expect` changed; nothing was written.
    #[error("{0}")]
    Changed(String),
    /// Not known to be written (no leader in time, or a failure).
    #[error("{0}")]
    Unavailable(String),
}

impl ClusterHandle {
    fn with_meta<T>(&self, f: impl FnOnce(&crate::meta::MetaState) -> T) -> Option<T> {
        let g = self.group(META_GROUP)?;
        let sm = g.sm.lock();
        match &sm.kind {
            SmKind::Meta(m) => Some(f(m)),
            SmKind::Shard(_) => None,
        }
    }

    /// One control record, as this member's replica has it.
    pub fn control_get(&self, space: u8, key: &str) -> Option<Vec<u8>> {
        self.with_meta(|m| m.control_get(space, key).cloned()).flatten()
    }

    /// Every record of a space, by key.
    pub fn control_scan(&self, space: u8) -> Vec<(String, Vec<u8>)> {
        self.with_meta(|m| {
            m.control.get(&space).map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        })
        .flatten()
        .unwrap_or_default()
    }

    /// The audit chain's last record.
    pub fn audit_last(&self) -> Option<(u64, Vec<u8>)> {
        self.with_meta(|m| m.audit_head.as_ref().map(|h| (h.seq, h.record.clone()))).flatten()
    }

    /// Up to `limit` audit records after `after`, once this replica's applied records are
    /// written (blocks the calling thread for at most [`WRITTEN_WAIT`]).
    pub fn audit_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, ClusterError> {
        let g = self
            .group(META_GROUP)
            .ok_or_else(|| ClusterError::Unavailable("no metadata replica here".into()))?;
        let applied = g.sm.lock().applied.map(|l| l.index);
        if !g.sm.written().wait_blocking(applied, WRITTEN_WAIT) {
            return Err(ClusterError::Unavailable("the audit records are not written yet".into()));
        }
        self.db().audit_after(META_GROUP, after, limit).map_err(|e| ClusterError::Storage(e.to_string()))
    }

    /// Writes a control batch through the metadata log; when this returns (written or refused),
    /// this member's replica has applied it, so reads here see the outcome.
    pub async fn control_write(&self, ops: Vec<ControlOp>) -> Result<(), ControlError> {
        let answer = self.propose(META_GROUP, Cmd::Meta(MetaCmd::Control(ops))).await;
        let result = match answer {
            Ok(Resp::Done(Ok(()))) => Ok(()),
            Ok(Resp::Done(Err(why))) if why.starts_with(CONFLICT_AUDIT_HEAD) => {
                Err(ControlError::AuditHeadMoved)
            }
            Ok(Resp::Done(Err(why))) if why.starts_with(CONFLICT_CHANGED) => Err(ControlError::Changed(why)),
            Ok(other) => Err(ControlError::Unavailable(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(ControlError::Unavailable(e.to_string())),
        };
        self.meta_sync().await.map_err(|e| ControlError::Unavailable(e.to_string()))?;
        result
    }

    /// Brings this member's metadata replica up to what the leader had applied when called (a
    /// read index confirmed by a heartbeat quorum), records written.
    pub async fn meta_sync(&self) -> Result<(), ClusterError> {
        let g = self
            .group(META_GROUP)
            .ok_or_else(|| ClusterError::Unavailable("no metadata replica here".into()))?;
        let index = match self.read_on_leader(META_GROUP, ShardRead::ReadIndex).await? {
            ShardAnswer::ReadIndex(index) => index,
            _ => return Err(ClusterError::Storage("unexpected answer to a read index".into())),
        };
        if index.is_some() {
            g.raft
                .wait(Some(META_SYNC_WAIT))
                .applied_index_at_least(index, "metadata sync")
                .await
                .map_err(|e| ClusterError::Unavailable(format!("metadata replica: {e}")))?;
        }
        if !g.sm.written().wait(index, WRITTEN_WAIT).await {
            return Err(ClusterError::Unavailable("metadata records not written in time".into()));
        }
        Ok(())
    }

    /// Whether this member's metadata replica leads the metadata group now.
    pub fn meta_leads(&self) -> bool {
        self.group(META_GROUP).is_some_and(|g| g.raft.metrics().borrow().state == ServerState::Leader)
    }

    /// Whether this member's metadata replica is in touch with a leader (a leader heard from a
    /// quorum lately, or a follower that knows its leader); else its view of sessions and keys
    /// may be stale and it should not authenticate with it.
    pub fn meta_current(&self) -> Result<(), String> {
        let g = self.group(META_GROUP).ok_or("this member holds no metadata replica")?;
        let m = g.raft.metrics().borrow().clone();
        let stale = u64::try_from(META_STALE_AFTER.as_millis()).unwrap_or(u64::MAX);
        match m.state {
            ServerState::Leader if m.millis_since_quorum_ack.is_none_or(|ms| ms <= stale) => Ok(()),
            ServerState::Leader => Err("the metadata leader has not heard from a quorum lately".into()),
            _ if m.current_leader.is_some() => Ok(()),
            _ => Err("the metadata group has no leader".into()),
        }
    }
}
