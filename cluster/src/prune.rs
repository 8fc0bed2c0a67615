//! Removing archived periods' transactions from the shards' history (`settle archive prune`,
//! after `settle archive export` and `verify`), through each shard's log so that every replica
//! removes the same rows.
//!
//! Only the read model shrinks: the history rows (one per applied entry). Balances, payables,
//! the idempotency index (an archived id stays known and a retry still answers its first
//! result), statements and the exception queue live elsewhere and are never touched. A row is
//! removed only when every transaction in it was applied into one of the archived periods, or is
//! an exception stamped by the cut-off (the queue keeps its own copy); a row that also holds a
//! transaction of a period not archived stays until that period is archived too.
//!
//! The leader of each shard checks the periods against its statements (closed, ended by the
//! cut-off, the same transaction count as the archive) and chooses the rows; the chosen indexes
//! travel in a `Cmd::Prune` entry. Rows never change once written, so a choice made on one
//! leader holds on every replica and after a change of leader; a prune cut short is finished by
//! running it again (removing a removed row is a no-op).

use crate::node::{ClusterError, ClusterHandle};
use crate::reads::{unexpected, ShardAnswer, ShardRead};
use crate::types::{shard_group, shard_of, Cmd, Resp, MAX_PRUNE_ROWS};
use serde::{Deserialize, Serialize};
use settle_core::{Instant, Outcome};
use settle_storage::{RaftDb, StorageError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Most history rows one prune read examines (and so one `Cmd::Prune` removes).
pub const PRUNE_SCAN_ROWS: usize = MAX_PRUNE_ROWS;

/// An archived period, as the archive's manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ArchivedPeriod {
    pub partner: String,
    pub period_start: Instant,
    /// The period's applied transactions in the archive (its statement's `transaction_count`).
    pub transactions: u64,
}

/// What a shard's leader found in one slice of its history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneSlice {
    /// Rows every transaction of which is archived (or an exception kept by the queue).
    pub rows: Vec<u64>,
    /// Applied transactions in those rows.
    pub transactions: u64,
    /// Exception records in those rows.
    pub exceptions: u64,
    /// Rows examined that hold an archived transaction but must stay for another one.
    pub kept: u64,
    /// Where the next slice starts; `None` once the history is examined to its end.
    pub next: Option<u64>,
}

/// What a prune removed, over every shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Shards that hold at least one of the periods.
    pub shards: u32,
    pub rows_removed: u64,
    pub transactions_removed: u64,
    pub exception_records_removed: u64,
    pub rows_kept: u64,
}

/// Checks the periods against the group's statements: each must be closed, end at or before
/// `cutoff`, and count the archive's transactions. `Err` says which one does not.
pub(crate) fn check_periods(
    db: &RaftDb,
    group: u32,
    periods: &[ArchivedPeriod],
    cutoff: Instant,
) -> Result<Result<(), String>, StorageError> {
    let mut by_partner: BTreeMap<&str, Vec<&ArchivedPeriod>> = BTreeMap::new();
    for p in periods {
        by_partner.entry(p.partner.as_str()).or_default().push(p);
    }
    for (partner, wanted) in by_partner {
        let statements = db.shard_statements(group, partner)?;
        for p in wanted {
            let Some(s) = statements.iter().find(|s| s.period.start == p.period_start) else {
                return Ok(Err(format!(
                    "{partner} {}: no closed period starts there",
                    p.period_start.to_rfc3339()
                )));
            };
            if s.period.end > cutoff {
                return Ok(Err(format!(
                    "{partner} {}: the period ends after the archive's cut-off",
                    p.period_start.to_rfc3339()
                )));
            }
            if s.transaction_count != p.transactions {
                return Ok(Err(format!(
                    "{partner} {}: the statement counts {} transactions, the archive {}",
                    p.period_start.to_rfc3339(),
                    s.transaction_count,
                    p.transactions
                )));
            }
        }
    }
    Ok(Ok(()))
}

/// Examines up to [`PRUNE_SCAN_ROWS`] of the group's history rows from index `from` on.
pub(crate) fn scan_prunable(
    db: &RaftDb,
    group: u32,
    periods: &[ArchivedPeriod],
    cutoff: Instant,
    from: u64,
) -> Result<PruneSlice, StorageError> {
    let archived: BTreeSet<(&str, Instant)> =
        periods.iter().map(|p| (p.partner.as_str(), p.period_start)).collect();
    let mut slice = PruneSlice::default();
    for (examined, row) in db.history(group, from, true)?.enumerate() {
        let (index, row) = row?;
        if examined == PRUNE_SCAN_ROWS {
            slice.next = Some(index);
            return Ok(slice);
        }
        let (mut transactions, mut exceptions, mut other) = (0u64, 0u64, 0u64);
        for rec in &row.records {
            match (&rec.outcome, rec.tx.partner.as_deref()) {
                (Outcome::Applied(a), Some(p)) if archived.contains(&(p, a.period.start)) => {
                    transactions += 1
                }
                (Outcome::Exception(_), _) if row.received_at <= cutoff => exceptions += 1,
                _ => other += 1,
            }
        }
        if other == 0 {
            slice.rows.push(index);
            slice.transactions += transactions;
            slice.exceptions += exceptions;
        } else if transactions > 0 {
            slice.kept += 1;
        }
    }
    Ok(slice)
}

impl ClusterHandle {
    /// Removes the history of `periods` (closed, ended by `cutoff`, archived) from every shard
    /// that holds one. Idempotent: running it again removes what a cut-short run left.
    pub async fn prune_archived(
        &self,
        periods: Vec<ArchivedPeriod>,
        cutoff: Instant,
    ) -> Result<PruneReport, ClusterError> {
        let mut by_shard: BTreeMap<u32, Vec<ArchivedPeriod>> = BTreeMap::new();
        for p in periods {
            by_shard.entry(shard_of(&p.partner, self.shards())).or_default().push(p);
        }
        let mut report = PruneReport::default();
        // Checked everywhere first, so that a wrong archive removes nothing anywhere.
        for (shard, periods) in &by_shard {
            let read = ShardRead::PruneCheck { periods: periods.clone(), cutoff };
            match self.read_on_leader(shard_group(*shard), read).await? {
                ShardAnswer::Refused(why) => return Err(ClusterError::Rejected(why)),
                ShardAnswer::PruneChecked => {}
                _ => return Err(unexpected()),
            }
        }
        for (shard, periods) in by_shard {
            report.shards += 1;
            let group = shard_group(shard);
            let mut from = 0u64;
            loop {
                let read = ShardRead::PruneScan { periods: periods.clone(), cutoff, from };
                let slice = match self.read_on_leader(group, read).await? {
                    ShardAnswer::PruneSlice(slice) => slice,
                    ShardAnswer::Refused(why) => return Err(ClusterError::Rejected(why)),
                    _ => return Err(unexpected()),
                };
                report.rows_removed += slice.rows.len() as u64;
                report.transactions_removed += slice.transactions;
                report.exception_records_removed += slice.exceptions;
                report.rows_kept += slice.kept;
                if !slice.rows.is_empty() {
                    debug_assert!(slice.rows.len() <= MAX_PRUNE_ROWS);
                    match self.propose(group, Cmd::Prune(Arc::new(slice.rows))).await? {
                        Resp::Done(Ok(())) => {}
                        Resp::Done(Err(why)) => return Err(ClusterError::Rejected(why)),
                        Resp::Txs(_) => return Err(unexpected()),
                    }
                }
                match slice.next {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
        Ok(report)
    }
}
