//! Replicas that lost track of their group. A replica removed from a group by a membership
//! change may never receive the configuration that removes it (the leader stops replicating to
//! it first), so it keeps an old configuration that still names it, never hears of a leader
//! again, and would keep campaigning. Such a replica asks the members it knows for the group's
//! membership and deletes itself once the group's leader shows a committed configuration,
//! newer than its own, that names it neither as voter nor as learner.
//!
//! Why that is safe: to come back into a group a node is first added as a learner, and the
//! leader then replicates that newer configuration to it; a replica whose own configuration is
//! older than the one that removed it cannot have been added back, so it is no voter anyone
//! counts on.

use crate::node::{membership_view, ClusterHandle, STATUS_TIMEOUT};
use crate::transport::{MembershipView, PeerReq, PeerResp};
use crate::types::{GroupId, NodeId};
use std::collections::BTreeMap;

/// Background ticks a replica may go without knowing a leader before it asks whether it was
/// removed (elections end well within this; a partitioned replica asks and stays).
pub const ORPHAN_TICKS: u32 = 5;

/// The background loop's memory of leaderless replicas.
#[derive(Debug, Default)]
pub(crate) struct OrphanWatch {
    /// Consecutive ticks each local group went without a known leader.
    leaderless: BTreeMap<GroupId, u32>,
    /// The check running now (on its own task: asking peers that are down takes seconds, and
    /// the background loop also proposes period closes).
    check: Option<tokio::task::JoinHandle<()>>,
}

impl ClusterHandle {
    /// One background tick: counts, per local group, the ticks without a known leader, and
    /// checks the groups that reached [`ORPHAN_TICKS`].
    pub(crate) fn drop_orphaned_replicas(&self, watch: &mut OrphanWatch) {
        let groups = self.all_groups();
        watch.leaderless.retain(|group, _| groups.iter().any(|(g, _)| g == group));
        if watch.check.as_ref().is_some_and(|c| !c.is_finished()) {
            return;
        }
        let mut due = Vec::new();
        for (group, g) in groups {
            let view = membership_view(&g);
            // A replica being added has no configuration yet; one that knows a leader is fine.
            if view.leader.is_some() || view.members.is_empty() {
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
        let me = self.clone();
        watch.check = Some(tokio::spawn(async move {
            for (group, g, view) in due {
                if me.removed_from(group, &view).await {
                    // Checked again: a leader may have added this node back meanwhile.
                    let now = membership_view(&g);
                    if now.leader.is_none() && now.config_index == view.config_index {
                        me.delete_replica(group, &g).await;
                    }
                }
            }
        }));
    }

    /// Whether some member's answer proves that this node is no longer in `group`.
    async fn removed_from(&self, group: GroupId, mine: &MembershipView) -> bool {
        let me = self.node_id();
        let mut ask: Vec<NodeId> = mine.members.iter().copied().filter(|&n| n != me).collect();
        for n in self.nodes().into_keys() {
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
                tracing::info!(group, leader = node, "the group's leader no longer counts this replica");
                return true;
            }
        }
        false
    }
}

/// Whether `theirs`, answered by `node`, shows that `me` (whose view is `mine`) was removed: `node`
/// leads the group, and its configuration is committed, newer than `mine`, and without `me`.
pub(crate) fn proves_removal(
    node: NodeId,
    theirs: &MembershipView,
    mine: &MembershipView,
    me: NodeId,
) -> bool {
    let newer = match (theirs.config_index, mine.config_index) {
        (Some(t), Some(m)) => t > m,
        (Some(_), None) => true,
        (None, _) => false,
    };
    theirs.leader == Some(node) && theirs.committed && newer && !theirs.members.contains(&me)
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
}
