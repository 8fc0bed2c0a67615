//! The metadata group's state (the node registry, shard placement, and the control plane: users,
//! API keys, sessions, alert rules and the hash-chained audit trail) and the node's local cluster
//! configuration written at bootstrap.

use crate::types::{MetaCmd, NodeId, META_GROUP};
use serde::{Deserialize, Serialize};
use settle_storage::RaftOp;
use std::collections::{BTreeMap, BTreeSet};

/// Why a control batch was refused (the start of its error text, which the node matches).
pub const CONFLICT_AUDIT_HEAD: &str = "the audit chain moved on";
pub const CONFLICT_CHANGED: &str = "changed meanwhile";

/// One write of an atomic control batch. Preconditions (`Expect`, and an audit record's place
/// in the chain) are checked when the entry is applied, in log order, so a read-modify-write
/// made on any member is linearizable: it applies only if nothing changed the record since it
/// was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlOp {
    Put {
        space: u8,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        space: u8,
        key: String,
    },
    /// The batch applies only if the record is exactly `value` now (`None`: absent).
    Expect {
        space: u8,
        key: String,
        value: Option<Vec<u8>>,
    },
    /// The next audit record: it applies only if `seq` follows the chain's last record and
    /// `prev` is that record's hash (the first record may have any `prev`).
    Audit {
        seq: u64,
        prev: String,
        hash: String,
        record: Vec<u8>,
    },
}

/// The control space the cluster keeps for itself: the nodes `remove-node` removed (key: the
/// id), so that an initial member that was removed is no longer counted from the `--bootstrap`
/// list. The API's spaces are small numbers, far below it.
pub const SPACE_REMOVED_NODES: u8 = 200;

/// The last record of the audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
    pub record: Vec<u8>,
}

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

/// The metadata group's voters for the nodes `nodes`: the current voters that stay, then the
/// other nodes by id until there are `replicas` (or every node), so that the registry keeps a
/// majority when any one node fails, also after the initial members are drained.
pub fn meta_voters(
    current: &BTreeSet<NodeId>,
    nodes: &BTreeSet<NodeId>,
    replicas: usize,
) -> BTreeSet<NodeId> {
    let want = replicas.min(nodes.len()).max(1);
    let mut voters: BTreeSet<NodeId> = current.intersection(nodes).copied().take(want).collect();
    for &n in nodes {
        if voters.len() >= want {
            break;
        }
        voters.insert(n);
    }
    voters
}

/// The replicated registry and control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Target replicas per shard, when changed from the initial placement.
    pub placement: BTreeMap<u32, Vec<NodeId>>,
    /// Control records by space and key (also written to `meta_control`).
    #[serde(default)]
    pub control: BTreeMap<u8, BTreeMap<String, Vec<u8>>>,
    /// The audit chain's last record (the chain itself is in `meta_audit`).
    #[serde(default)]
    pub audit_head: Option<AuditHead>,
}

impl MetaState {
    /// Applies a committed command; the records it changes go to `ops` (not during the rebuild
    /// at start, when they are on disk already).
    pub fn apply(&mut self, cmd: &MetaCmd, ops: Option<&mut Vec<RaftOp>>) -> Result<(), String> {
        match cmd {
            MetaCmd::Control(batch) => return self.apply_control(batch, ops),
            MetaCmd::RegisterNode(info) => {
                self.nodes.insert(info.id, info.clone());
                if self.is_removed(info.id) {
                    let unmark = ControlOp::Delete { space: SPACE_REMOVED_NODES, key: info.id.to_string() };
                    return self.apply_control(&[unmark], ops);
                }
            }
            MetaCmd::RemoveNode(id) => {
                self.nodes.remove(id);
                let mark =
                    ControlOp::Put { space: SPACE_REMOVED_NODES, key: id.to_string(), value: Vec::new() };
                return self.apply_control(&[mark], ops);
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

    /// Rebuilds the control records and the audit head from the group's `meta_control` and
    /// `meta_audit` rows, for a state restored from those rows rather than by re-applying the
    /// log (a snapshot). The head's hash is read from the last record (`hash` field).
    pub fn restore_control(
        &mut self,
        records: Vec<settle_storage::ControlRow>,
        audit_last: Option<(u64, Vec<u8>)>,
    ) -> Result<(), String> {
        let mut control: BTreeMap<u8, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for (space, key, value) in records {
            let key = String::from_utf8(key).map_err(|_| "a control key is not UTF-8".to_string())?;
            control.entry(space).or_default().insert(key, value);
        }
        let audit_head = match audit_last {
            None => None,
            Some((seq, record)) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&record).map_err(|e| format!("audit record {seq}: {e}"))?;
                let hash =
                    v["hash"].as_str().ok_or_else(|| format!("audit record {seq} has no hash"))?.to_string();
                Some(AuditHead { seq, hash, record })
            }
        };
        self.control = control;
        self.audit_head = audit_head;
        Ok(())
    }

    /// Whether `remove-node` removed node `id` (and it was not registered again since).
    pub fn is_removed(&self, id: NodeId) -> bool {
        self.control_get(SPACE_REMOVED_NODES, &id.to_string()).is_some()
    }

    pub fn control_get(&self, space: u8, key: &str) -> Option<&Vec<u8>> {
        self.control.get(&space).and_then(|m| m.get(key))
    }

    /// Checks every precondition first, so that a refused batch changes nothing.
    fn apply_control(&mut self, batch: &[ControlOp], ops: Option<&mut Vec<RaftOp>>) -> Result<(), String> {
        let mut head = self.audit_head.as_ref().map(|h| (h.seq, h.hash.as_str()));
        for op in batch {
            match op {
                ControlOp::Expect { space, key, value } => {
                    if self.control_get(*space, key) != value.as_ref() {
                        return Err(format!("{CONFLICT_CHANGED}: record {key:?} of space {space}"));
                    }
                }
                ControlOp::Audit { seq, prev, hash, .. } => {
                    let follows = match head {
                        None => *seq == 0,
                        Some((last, last_hash)) => Some(*seq) == last.checked_add(1) && prev == last_hash,
                    };
                    if !follows {
                        return Err(format!("{CONFLICT_AUDIT_HEAD}: record {seq} does not follow the head"));
                    }
                    head = Some((*seq, hash.as_str()));
                }
                ControlOp::Put { .. } | ControlOp::Delete { .. } => {}
            }
        }
        let mut out = Vec::new();
        for op in batch {
            match op {
                ControlOp::Put { space, key, value } => {
                    self.control.entry(*space).or_default().insert(key.clone(), value.clone());
                    out.push(RaftOp::PutControl {
                        group: META_GROUP,
                        space: *space,
                        key: key.clone().into_bytes(),
                        value: value.clone(),
                    });
                }
                ControlOp::Delete { space, key } => {
                    if let Some(m) = self.control.get_mut(space) {
                        m.remove(key);
                    }
                    out.push(RaftOp::DeleteControl {
                        group: META_GROUP,
                        space: *space,
                        key: key.clone().into_bytes(),
                    });
                }
                ControlOp::Audit { seq, hash, record, .. } => {
                    self.audit_head =
                        Some(AuditHead { seq: *seq, hash: hash.clone(), record: record.clone() });
                    out.push(RaftOp::PutAudit { group: META_GROUP, seq: *seq, record: record.clone() });
                }
                ControlOp::Expect { .. } => {}
            }
        }
        if let Some(ops) = ops {
            ops.extend(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(seq: u64, prev: &str, hash: &str) -> ControlOp {
        ControlOp::Audit { seq, prev: prev.into(), hash: hash.into(), record: hash.as_bytes().to_vec() }
    }

    fn ids(v: &[NodeId]) -> BTreeSet<NodeId> {
        v.iter().copied().collect()
    }

    #[test]
    fn the_registry_keeps_its_voters_and_replaces_only_those_that_leave() {
        // A fourth node joins: the voters stay.
        assert_eq!(meta_voters(&ids(&[1, 2, 3]), &ids(&[1, 2, 3, 4]), 3), ids(&[1, 2, 3]));
        // Node 2 is drained: node 4 takes its place.
        assert_eq!(meta_voters(&ids(&[1, 2, 3]), &ids(&[1, 3, 4]), 3), ids(&[1, 3, 4]));
        // A single node grows: the new ones become voters up to three.
        assert_eq!(meta_voters(&ids(&[1]), &ids(&[1, 2]), 3), ids(&[1, 2]));
        assert_eq!(meta_voters(&ids(&[1, 2]), &ids(&[1, 2, 3, 4]), 3), ids(&[1, 2, 3]));
        // Down to one node.
        assert_eq!(meta_voters(&ids(&[1, 2, 3]), &ids(&[3]), 3), ids(&[3]));
    }

    #[test]
    fn removing_a_node_marks_it_until_it_is_registered_again() {
        let mut m = MetaState::default();
        let info = NodeInfo { id: 2, peer: "127.0.0.1:1".into(), quic: String::new(), http: None };
        let mut ops = Vec::new();
        m.apply(&MetaCmd::RegisterNode(info.clone()), Some(&mut ops)).unwrap();
        assert!(!m.is_removed(2) && ops.is_empty());
        m.apply(&MetaCmd::RemoveNode(2), Some(&mut ops)).unwrap();
        assert!(m.is_removed(2) && !m.nodes.contains_key(&2));
        assert_eq!(ops.len(), 1, "the mark is written with the entry");
        m.apply(&MetaCmd::RegisterNode(info), Some(&mut ops)).unwrap();
        assert!(!m.is_removed(2) && m.nodes.contains_key(&2));
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn control_batches_apply_only_when_their_preconditions_hold() {
        let mut m = MetaState::default();
        let put = |v: &[u8]| ControlOp::Put { space: 1, key: "admin".into(), value: v.to_vec() };
        let expect = |v: Option<&[u8]>| ControlOp::Expect {
            space: 1,
            key: "admin".into(),
            value: v.map(<[u8]>::to_vec),
        };
        let mut ops = Vec::new();
        assert_eq!(
            m.apply(&MetaCmd::Control(vec![expect(None), put(b"a"), audit(0, "g", "h0")]), Some(&mut ops)),
            Ok(())
        );
        assert_eq!(ops.len(), 2);
        // A second "create if absent" loses, and changes nothing (not even the audit head).
        let err = m
            .apply(&MetaCmd::Control(vec![expect(None), put(b"b"), audit(1, "h0", "h1")]), None)
            .unwrap_err();
        assert!(err.starts_with(CONFLICT_CHANGED), "{err}");
        assert_eq!(m.control_get(1, "admin"), Some(&b"a".to_vec()));
        assert_eq!(m.audit_head.as_ref().map(|h| h.seq), Some(0));
        // An audit record must follow the head: right sequence, right predecessor.
        for bad in [audit(2, "h0", "x"), audit(1, "nope", "x"), audit(0, "g", "x")] {
            let err = m.apply(&MetaCmd::Control(vec![put(b"c"), bad]), None).unwrap_err();
            assert!(err.starts_with(CONFLICT_AUDIT_HEAD), "{err}");
        }
        assert_eq!(m.control_get(1, "admin"), Some(&b"a".to_vec()));
        let cas = vec![expect(Some(b"a")), put(b"c"), audit(1, "h0", "h1"), audit(2, "h1", "h2")];
        assert_eq!(m.apply(&MetaCmd::Control(cas), None), Ok(()));
        assert_eq!(m.control_get(1, "admin"), Some(&b"c".to_vec()));
        assert_eq!(m.audit_head.as_ref().map(|h| (h.seq, h.hash.as_str())), Some((2, "h2")));
        let del = vec![ControlOp::Delete { space: 1, key: "admin".into() }];
        assert_eq!(m.apply(&MetaCmd::Control(del), None), Ok(()));
        assert_eq!(m.control_get(1, "admin"), None);
    }

    #[test]
    fn control_state_is_rebuilt_from_its_rows() {
        let mut m = MetaState::default();
        let put = ControlOp::Put { space: 2, key: "k1".into(), value: b"v".to_vec() };
        let record = serde_json::to_vec(&serde_json::json!({"seq": 0, "hash": "h0"})).unwrap();
        let audit = ControlOp::Audit { seq: 0, prev: "g".into(), hash: "h0".into(), record: record.clone() };
        let mut ops = Vec::new();
        m.apply(&MetaCmd::Control(vec![put, audit]), Some(&mut ops)).unwrap();
        let mut rebuilt = MetaState::default();
        rebuilt.restore_control(vec![(2, b"k1".to_vec(), b"v".to_vec())], Some((0, record))).unwrap();
        assert_eq!(rebuilt, m);
    }

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
