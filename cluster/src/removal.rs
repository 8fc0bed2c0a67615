//! Replicas removed from their group, and how a replica finds out. Only the group's leader can
//! tell: a replica's own configuration is not enough. A learner catching up from the start of
//! the log first applies configurations from before it was added (in which it is no member),
//! and deleting it then made add-node start over and over, and could delete a replica just as
//! it was promoted. And a replica removed by a membership change may never receive the
//! configuration that removes it (the leader stops replicating to it first): it keeps an old
//! configuration that still names it, never hears of a leader again, and would keep
//! campaigning.
//!
//! So a replica is checked when its own configuration leaves it out, or when it has known no
//! leader for [`ORPHAN_TICKS`]: it asks the members it knows (then the registered nodes) for
//! the group's membership, and is deleted once the group's leader shows a committed
//! configuration without it that is at least as new as its own (strictly newer when its own
//! still names it).
//!
//! Why that is safe: to come back into a group a node is first added as a learner, and the
//! leader replicates that configuration to it before it can count as a voter; the deletion
//! (`ClusterHandle::delete_replica`) re-checks, under the lock that holds back requests
//! re-creating the replica, that the replica's configuration is still the one checked.

use crate::node::{membership_view, ClusterHandle, STATUS_TIMEOUT};
use crate::transport::{MembershipView, PeerReq, PeerResp};
use crate::types::{GroupId, NodeId};
use std::collections::BTreeMap;

/// Background ticks a replica may go without knowing a leader before it asks whether it was
/// removed (elections end well within this; a partitioned replica asks and stays).
pub const ORPHAN_TICKS: u32 = 5;

/// The background loop's memory of replicas that may have been removed.
#[derive(Debug, Default)]
pub(crate) struct RemovalWatch {
    /// Consecutive ticks each local group went without a known leader.
    leaderless: BTreeMap<GroupId, u32>,
    /// The check running now (on its own task: asking peers that are down takes seconds, and
    /// the background loop also proposes period closes).
    check: Option<tokio::task::JoinHandle<()>>,
}

impl ClusterHandle {
    /// One background tick: finds the local replicas whose configuration leaves this node out
    /// or that have known no leader for [`ORPHAN_TICKS`], and deletes those the group's leader
    /// confirms removed (on a task of its own; one check at a time).
    pub(crate) fn drop_removed_replicas(&self, watch: &mut RemovalWatch) {
        let me = self.node_id();
        let groups = self.all_groups();
        watch.leaderless.retain(|group, _| groups.iter().any(|(g, _)| g == group));
        if watch.check.as_ref().is_some_and(|c| !c.is_finished()) {
            return;
        }
        let mut due = Vec::new();
        for (group, g) in groups {
            let view = membership_view(&g);
            // A replica being created has no configuration yet.
            if view.members.is_empty() {
                watch.leaderless.remove(&group);
                continue;
            }
            if !view.members.contains(&me) {
                due.push((group, g, view));
                continue;
            }
            if view.leader.is_some() {
                watch.leaderless.remove(&group);
                continue;
            }
            let ticks = watch.leaderless.entry(group).or_insert(0);
            *ticks += 1;
            if *ticks >= ORPHAN_TICKS {
                *ticks = 0;
                due.push((group, g, view));
            }
        }
        if due.is_empty() {
            return;
        }
        let this = self.clone();
        watch.check = Some(tokio::spawn(async move {
            for (group, g, view) in due {
                if this.removed_from(group, &view).await {
                    this.delete_replica(group, &g, view.config_index).await;
                }
            }
        }));
    }

    /// Whether some member's answer proves that this node is no longer in `group`.
    async fn removed_from(&self, group: GroupId, mine: &MembershipView) -> bool {
        let me = self.node_id();
        let mut ask: Vec<NodeId> = mine.leader.into_iter().filter(|&n| n != me).collect();
        for n in mine.members.iter().copied().chain(self.nodes().into_keys()) {
            if n != me && !ask.contains(&n) {
                ask.push(n);
            }
        }
        for node in ask {
            let Ok(PeerResp::Membership(Some(theirs))) =
                self.peers().call(node, &PeerReq::Membership { group }, STATUS_TIMEOUT).await
            else {
                continue;
            };
            if proves_removal(node, &theirs, mine, me) {
                // Routine after every rebalance: not a warning.
                tracing::info!(
                    group,
                    leader = node,
                    ?theirs,
                    ?mine,
                    "the group's leader no longer counts this replica; deleting it"
                );
                return true;
            }
            if theirs.leader == Some(node) {
                // The leader answered and counts this replica: nobody else knows better.
                return false;
            }
        }
        false
    }
}

/// Whether `theirs`, answered by `node`, shows that `me` (whose view is `mine`) was removed: `node`
/// leads the group and is in its configuration, which is committed, without `me`, and at least
/// as new as `mine` (newer if `mine` names `me`: I may have been added back after it).
pub(crate) fn proves_removal(
    node: NodeId,
    theirs: &MembershipView,
    mine: &MembershipView,
    me: NodeId,
) -> bool {
    let i_am_in_mine = mine.members.contains(&me);
    let new_enough = match (theirs.config_index, mine.config_index) {
        (Some(t), Some(m)) => t > m || (t == m && !i_am_in_mine),
        (Some(_), None) => true,
        (None, _) => false,
    };
    // A leader outside its own configuration is one that was removed and has not noticed.
    theirs.leader == Some(node)
        && theirs.members.contains(&node)
        && theirs.committed
        && new_enough
        && !theirs.members.contains(&me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(
        leader: Option<NodeId>,
        index: Option<u64>,
        committed: bool,
        members: &[NodeId],
    ) -> MembershipView {
        MembershipView { leader, config_index: index, committed, members: members.to_vec() }
    }

    #[test]
    fn only_a_leaders_committed_newer_configuration_without_me_proves_removal() {
        let mine = view(None, Some(6), true, &[1, 2, 3, 4]);
        assert!(proves_removal(3, &view(Some(3), Some(8), true, &[2, 3, 4]), &mine, 1));
        // A leader that is no member of its own configuration (removed, not noticed).
        assert!(!proves_removal(5, &view(Some(5), Some(8), true, &[2, 3, 4]), &mine, 1));
        // Not the leader answering, or a follower's idea of the leader.
        assert!(!proves_removal(2, &view(Some(3), Some(8), true, &[2, 3, 4]), &mine, 1));
        // Not committed yet: a new leader might not keep it.
        assert!(!proves_removal(3, &view(Some(3), Some(8), false, &[2, 3, 4]), &mine, 1));
        // Not newer than mine: I may have been added back after it.
        assert!(!proves_removal(3, &view(Some(3), Some(6), true, &[2, 3, 4]), &mine, 1));
        // I am in it (as voter or learner).
        assert!(!proves_removal(3, &view(Some(3), Some(8), true, &[1, 2, 3]), &mine, 1));
        assert!(!proves_removal(3, &view(Some(3), None, true, &[2, 3]), &mine, 1));
    }

    #[test]
    fn a_learner_catching_up_through_older_configurations_is_not_removed() {
        // Node 5, added as a learner, has applied only the group's first configuration.
        let mine = view(Some(4), Some(0), true, &[1, 2, 3]);
        let leaders = view(Some(4), Some(90), true, &[1, 2, 3, 4, 5]);
        assert!(!proves_removal(4, &leaders, &mine, 5));
    }

    #[test]
    fn a_replica_that_applied_its_removal_is_removed_once_the_leader_agrees() {
        let mine = view(Some(3), Some(8), true, &[2, 3, 4]);
        assert!(proves_removal(3, &view(Some(3), Some(8), true, &[2, 3, 4]), &mine, 1));
        assert!(proves_removal(3, &view(Some(3), Some(9), true, &[2, 3, 4]), &mine, 1));
        // The leader is behind this replica's configuration: not proof.
        assert!(!proves_removal(3, &view(Some(3), Some(7), true, &[1, 2, 3]), &mine, 1));
        assert!(!proves_removal(3, &view(Some(3), Some(7), true, &[2, 3, 4]), &mine, 1));
    }
}
