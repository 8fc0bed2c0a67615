//! The metadata group's state (the node registry and shard placement) and the node's local
//! cluster configuration written at bootstrap.

use crate::types::{MetaCmd, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default number of shard groups.
pub const DEFAULT_SHARDS: u32 = 64;
/// Default replicas per shard.
pub const DEFAULT_REPLICAS: u32 = 3;
/// Most shard groups a cluster may have.
pub const MAX_SHARDS: u32 = 4096;

/// Where a node can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Node-to-node (Raft) QUIC address.
    pub peer: String,
    /// Client QUIC address.
    pub quic: String,
    /// HTTP address, when the node serves one.
    pub http: Option<String>,
}

/// What a node knows about its cluster from its first start: fixed for the cluster's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub shards: u32,
    pub replicas: u32,
    /// The initial members' peer addresses (the `--bootstrap` list).
    pub initial: BTreeMap<NodeId, String>,
}

impl ClusterConfig {
    /// The initial placement: shard `s` on `replicas` consecutive members (by id order)
    /// starting at member `s mod n`, so that replicas and preferred leaders (the first of each
    /// list) spread evenly.
    pub fn initial_placement(&self) -> Vec<Vec<NodeId>> {
        let ids: Vec<NodeId> = self.initial.keys().copied().collect();
        let n = ids.len();
        let r = (self.replicas as usize).min(n);
        (0..self.shards as usize).map(|s| (0..r).map(|k| ids[(s + k) % n]).collect()).collect()
    }
}

/// The replicated registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Target replicas per shard, when changed from the initial placement.
    pub placement: BTreeMap<u32, Vec<NodeId>>,
}

impl MetaState {
    pub fn apply(&mut self, cmd: &MetaCmd) -> Result<(), String> {
        match cmd {
            MetaCmd::RegisterNode(info) => {
                self.nodes.insert(info.id, info.clone());
            }
            MetaCmd::RemoveNode(id) => {
                self.nodes.remove(id);
            }
            MetaCmd::Place { shard, nodes } => {
                if nodes.is_empty() {
                    return Err("a shard needs at least one replica".into());
                }
                self.placement.insert(*shard, nodes.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_placement_spreads_replicas_and_leaders() {
        let config = ClusterConfig {
            shards: 64,
            replicas: 3,
            initial: (1..=4).map(|i| (i, format!("127.0.0.1:{i}"))).collect(),
        };
        let placement = config.initial_placement();
        assert_eq!(placement.len(), 64);
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for nodes in &placement {
            assert_eq!(nodes.len(), 3);
            let mut distinct = nodes.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3);
            *leaders.entry(nodes[0]).or_insert(0) += 1;
            for n in nodes {
                *replicas.entry(*n).or_insert(0) += 1;
            }
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![16, 16, 16, 16]);
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![48, 48, 48, 48]);
    }
}
