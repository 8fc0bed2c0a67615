//! The audit trail: every change made by a person or a service outside the transaction stream,
//! with who, when, what, before and after, in an append-only chain where each record carries
//! the SHA-256 of the one before. The change and its audit record are one atomic write, so
//! there is never a change without its record or a record without its change. Where several
//! writers share the chain (a cluster's members), the store refuses a record that does not
//! follow its last one, and the writer reads the new head and tries again.

use crate::model::{ControlOp, ControlStore, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Most records one audit query returns.
pub const MAX_AUDIT_PAGE: usize = 1000;
/// Attempts at appending one record while other writers move the head.
pub const MAX_APPEND_ATTEMPTS: usize = 16;

/// What a caller reports; the chain adds the sequence, the time and the hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// `user:NAME`, `key:ID` or `system`.
    pub actor: String,
    /// e.g. `partner.create`, `api_key.revoke`, `exception.resolve`.
    pub action: String,
    pub target: String,
    pub before: Value,
    pub after: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Value,
    pub after: Value,
    pub prev: String,
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record must carry: SHA-256 over `prev` and the canonical JSON of the rest.
    pub fn expected_hash(&self) -> String {
        let body = serde_json::json!({
            "seq": self.seq, "at": self.at, "actor": self.actor, "action": self.action,
            "target": self.target, "before": self.before, "after": self.after,
        });
        let mut h = Sha256::new();
        h.update(self.prev.as_bytes());
        h.update(b"\n");
        h.update(settle_core::scenario::canonical_json(&body).as_bytes());
        hex::encode(h.finalize())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("audit record {seq}: {problem}")]
    Broken { seq: u64, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
struct Head {
    next: u64,
    last_hash: String,
}

/// Appends to the chain. One writer at a time per process (the lock spans the write), so
/// sequences have no gaps and every record names its true predecessor.
pub struct Audit {
    control: Arc<dyn ControlStore>,
    head: tokio::sync::Mutex<Head>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").finish_non_exhaustive()
    }
}

fn now_rfc3339() -> String {
    settle_core::Instant::from_system_time(std::time::SystemTime::now()).to_rfc3339()
}

fn read_head(control: &dyn ControlStore) -> Result<Head, ChainError> {
    Ok(match control.audit_last()? {
        None => Head { next: 0, last_hash: GENESIS.to_string() },
        Some((seq, bytes)) => {
            let record: AuditRecord = serde_json::from_slice(&bytes)
                .map_err(|e| ChainError::Broken { seq, problem: format!("not an audit record: {e}") })?;
            Head { next: seq.saturating_add(1), last_hash: record.hash }
        }
    })
}

impl Audit {
    pub fn open(control: Arc<dyn ControlStore>) -> Result<Audit, ChainError> {
        let head = read_head(control.as_ref())?;
        Ok(Audit { control, head: tokio::sync::Mutex::new(head) })
    }

    /// Writes `ops` and the audit record of `event` atomically.
    pub async fn commit(&self, ops: Vec<ControlOp>, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        let mut head = self.head.lock().await;
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let mut record = AuditRecord {
                seq: head.next,
                at: now_rfc3339(),
                actor: event.actor.clone(),
                action: event.action.clone(),
                target: event.target.clone(),
                before: event.before.clone(),
                after: event.after.clone(),
                prev: head.last_hash.clone(),
                hash: String::new(),
            };
            record.hash = record.expected_hash();
            let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Failed(e.to_string()))?;
            let mut all = ops.clone();
            all.push(ControlOp::Audit { seq: record.seq, record: bytes });
            match self.control.write(all).await {
                Ok(()) => {
                    head.next = record.seq.saturating_add(1);
                    head.last_hash = record.hash.clone();
                    return Ok(record);
                }
                // Another member appended first; the store now reads its new head.
                Err(StoreError::AuditHeadMoved) => {
                    *head =
                        read_head(self.control.as_ref()).map_err(|e| StoreError::Failed(e.to_string()))?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Failed(format!("the audit chain moved on {MAX_APPEND_ATTEMPTS} times in a row")))
    }
}

/// Reads up to `limit` records after `after`.
pub fn read(
    control: &dyn ControlStore,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<AuditRecord>, ChainError> {
    control
        .audit_after(after, limit.min(MAX_AUDIT_PAGE))?
        .into_iter()
        .map(|(seq, bytes)| {
            serde_json::from_slice::<AuditRecord>(&bytes)
                .map_err(|e| ChainError::Broken { seq, problem: format!("not an audit record: {e}") })
        })
        .collect()
}

/// What a verification found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub records: u64,
    pub head: String,
}

/// Checks the whole chain: sequences without gaps from 0, each `prev` equal to the previous
/// record's hash, and each hash equal to the hash of the record's content.
pub fn verify(control: &dyn ControlStore) -> Result<Verified, ChainError> {
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 0u64;
    let mut after = None;
    loop {
        let page = control.audit_after(after, MAX_AUDIT_PAGE)?;
        if page.is_empty() {
            return Ok(Verified { records: expected_seq, head: prev });
        }
        for (seq, bytes) in page {
            let broken = |problem: String| ChainError::Broken { seq, problem };
            if seq != expected_seq {
                return Err(broken(format!("expected sequence {expected_seq} (a record is missing)")));
            }
            let record: AuditRecord =
                serde_json::from_slice(&bytes).map_err(|e| broken(format!("not an audit record: {e}")))?;
            if record.seq != seq {
                return Err(broken(format!("stored under {seq} but says {}", record.seq)));
            }
            if record.prev != prev {
                return Err(broken("prev does not match the previous record's hash".into()));
            }
            if record.hash != record.expected_hash() {
                return Err(broken("hash does not match the content (the record was altered)".into()));
            }
            prev = record.hash;
            expected_seq = expected_seq.saturating_add(1);
            after = Some(seq);
        }
    }
}
