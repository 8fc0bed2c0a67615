//! What a member reports about itself for metrics and the dashboard: what it committed as a
//! shard leader, what is in flight, and its Raft groups (leader changes seen, applied indexes,
//! lags), aggregated so that no metric label grows with the number of groups.

use crate::node::ClusterHandle;
use crate::types::{GroupId, NodeId};
use openraft::ServerState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Stats {
    /// Transaction entries this node committed as a shard leader.
    entries: AtomicU64,
    /// Transactions in them.
    transactions: AtomicU64,
    /// Transactions submitted here and not yet answered.
    in_flight: AtomicU64,
    /// Changes of leader seen on this node's replicas.
    leader_changes: AtomicU64,
    /// The leader each replica saw at the last observation.
    leaders: Mutex<HashMap<GroupId, Option<NodeId>>>,
    /// Per follower replica: the leader's commit index in the last append it accepted, and when.
    leader_commits: Mutex<HashMap<GroupId, (u64, std::time::Instant)>>,
}

/// A follower whose applied index is more entries than this behind its leader's commit index is
/// not ready (it is catching up). Entries carry batches, so this is many transactions; a healthy
/// follower under full load stays within a few entries.
pub const READY_MAX_LAG_ENTRIES: u64 = 512;
/// A follower that accepted no append (heartbeats included) for this long, or a leader without a
/// quorum acknowledgement for this long, is not ready (cut off from its group).
pub const READY_MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Counts a submission in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    stats: &'a Stats,
    n: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(self.n, Ordering::Relaxed);
    }
}

impl Stats {
    pub fn admit(&self, transactions: usize) -> InFlight<'_> {
        let n = transactions as u64;
        self.in_flight.fetch_add(n, Ordering::Relaxed);
        InFlight { stats: self, n }
    }

    /// A follower replica of `group` accepted an append carrying the leader's commit index.
    pub fn leader_append(&self, group: GroupId, leader_commit: Option<u64>) {
        let mut seen = self.leader_commits.lock().unwrap_or_else(|e| e.into_inner());
        let commit = leader_commit.unwrap_or(0).max(seen.get(&group).map_or(0, |s| s.0));
        seen.insert(group, (commit, std::time::Instant::now()));
    }

    /// How long ago a follower replica of `group` last accepted an append (`None`: never since
    /// this node started).
    pub fn since_leader_append(&self, group: GroupId) -> Option<std::time::Duration> {
        let seen = self.leader_commits.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&group).map(|(_, at)| at.elapsed())
    }

    pub fn committed_as_leader(&self, transactions: usize) {
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.transactions.fetch_add(transactions as u64, Ordering::Relaxed);
    }
}

/// Counters of this member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberCounters {
    pub entries: u64,
    pub transactions: u64,
    pub in_flight: u64,
}

/// This member's Raft groups, aggregated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftSummary {
    pub groups: u64,
    pub leaders: u64,
    pub followers: u64,
    pub learners: u64,
    pub candidates: u64,
    /// Changes of leader seen on this node's replicas since it started (sampled every second).
    pub leader_changes: u64,
    /// Sum over replicas of the applied index.
    pub applied_index_sum: u64,
    /// Over replicas: entries in the log not yet applied (max and sum).
    pub apply_lag_max: u64,
    pub apply_lag_sum: u64,
    /// Over the followers of the groups this node leads: entries not yet replicated (max, sum).
    pub replication_lag_max: u64,
    pub replication_lag_sum: u64,
}

impl ClusterHandle {
    /// Counts leader changes since the last call (called every second).
    pub(crate) fn observe_groups(&self) {
        let stats = self.stats();
        let mut seen = stats.leaders.lock().unwrap_or_else(|e| e.into_inner());
        for (group, raft) in self.rafts() {
            let leader = raft.metrics().borrow().current_leader;
            let before = seen.insert(group, leader);
            if leader.is_some() && before.is_some_and(|b| b != leader) {
                stats.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether this member is caught up and serving (`/readyz`); else what it waits for. Local
    /// only (a probe must not depend on other nodes answering): every replica here is in a group
    /// with a leader; a leader heard from a quorum recently; a follower heard from its leader
    /// recently and applied up to near the leader's commit index.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let me = self.node_id();
        let mut why = Vec::new();
        let seen = self.stats().leader_commits.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (group, raft) in self.rafts() {
            let m = raft.metrics().borrow().clone();
            if let Err(e) = &m.running_state {
                why.push(format!("group {group}: stopped: {e}"));
                continue;
            }
            let membership = m.membership_config.membership();
            let voter = membership.voter_ids().any(|v| v == me);
            if !voter && !membership.learner_ids().any(|l| l == me) {
                continue; // a replica moved away, about to be dropped
            }
            let applied = m.last_applied.map_or(0, |l| l.index);
            match m.current_leader {
                None => why.push(format!("group {group}: no leader")),
                Some(leader) if leader == me => {
                    let quorum_ms = m.millis_since_quorum_ack;
                    if quorum_ms.is_none_or(|ms| ms > READY_MAX_SILENCE.as_millis() as u64) {
                        why.push(format!("group {group}: leader without a recent quorum"));
                    }
                }
                Some(leader) => match seen.get(&group) {
                    None => why.push(format!("group {group}: nothing heard from leader {leader} yet")),
                    Some((_, at)) if at.elapsed() > READY_MAX_SILENCE => why.push(format!(
                        "group {group}: nothing heard from leader {leader} for {:?}",
                        at.elapsed()
                    )),
                    Some((commit, _)) if applied.saturating_add(READY_MAX_LAG_ENTRIES) < *commit => {
                        why.push(format!("group {group}: applied {applied} of the leader's {commit}"))
                    }
                    Some(_) => {}
                },
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }

    pub fn counters(&self) -> MemberCounters {
        let s = self.stats();
        MemberCounters {
            entries: s.entries.load(Ordering::Relaxed),
            transactions: s.transactions.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
        }
    }

    /// An integer RocksDB property of a column family of this node's database.
    pub fn cf_property(&self, cf: &'static str, property: &str) -> Option<u64> {
        self.db().cf_property(cf, property).ok().flatten()
    }

    pub fn raft_summary(&self) -> RaftSummary {
        let mut out = RaftSummary {
            leader_changes: self.stats().leader_changes.load(Ordering::Relaxed),
            ..RaftSummary::default()
        };
        for (_, raft) in self.rafts() {
            let m = raft.metrics().borrow().clone();
            out.groups += 1;
            match m.state {
                ServerState::Leader => out.leaders += 1,
                ServerState::Follower => out.followers += 1,
                ServerState::Learner => out.learners += 1,
                ServerState::Candidate => out.candidates += 1,
                ServerState::Shutdown => {}
            }
            let applied = m.last_applied.map_or(0, |l| l.index);
            out.applied_index_sum = out.applied_index_sum.saturating_add(applied);
            let last = m.last_log_index.unwrap_or(0);
            let lag = last.saturating_sub(applied);
            out.apply_lag_max = out.apply_lag_max.max(lag);
            out.apply_lag_sum = out.apply_lag_sum.saturating_add(lag);
            for (node, matched) in m.replication.iter().flatten() {
                if *node == self.node_id() {
                    continue;
                }
                let behind = last.saturating_sub(matched.map_or(0, |l| l.index));
                out.replication_lag_max = out.replication_lag_max.max(behind);
                out.replication_lag_sum = out.replication_lag_sum.saturating_add(behind);
            }
        }
        out
    }
}
