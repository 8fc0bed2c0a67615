//! The fault schedule: a pure function of the seed, the topology and the run's length, so that a
//! run is reproduced by giving the same `--seed` (and the same options).
//!
//! The schedule names *what* happens and *when* (nominally). Targets that only exist at run time
//! (the leader of a shard) are named by their role here and resolved when the fault is injected;
//! the report records the resolved node.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeSet;

/// Node ids as the cluster interface numbers them (1, 2, 3, ...).
pub type NodeId = u32;

/// Shortest and longest time a fault stays in force (kill: down time; pause; partition).
pub const FAULT_MIN_MS: u64 = 1_000;
pub const FAULT_MAX_MS: u64 = 4_000;
/// Quiet time between one fault's end and the next one's start.
pub const GAP_MIN_MS: u64 = 1_000;
pub const GAP_MAX_MS: u64 = 3_000;
/// Traffic runs alone for this long (or a tenth of the run, if longer) before the first fault.
pub const WARMUP_MIN_MS: u64 = 2_000;
/// No fault starts after this share (percent) of the run, so that the rest of the traffic phase
/// runs on a healed system before the liveness phase.
pub const FAULT_WINDOW_END_PERCENT: u64 = 80;
/// Nominal time a rolling restart takes per node (the injector waits for it to finish anyway).
pub const ROLLING_MS_PER_NODE: u64 = 3_000;
/// Consecutive draws of kinds that cannot run before the schedule gives up filling the window.
const MAX_IDLE_DRAWS: u32 = 64;
/// At most this many nodes beyond the initial ones are added.
pub const MAX_EXTRA_NODES: u32 = 2;

/// The kinds of fault, as named on the command line and in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SIGKILL a node (a random one, or a shard's leader), restart it after a while.
    Kill,
    /// SIGSTOP a node, SIGCONT it after a while.
    Pause,
    /// Cut the leader of a shard off from every other node.
    IsolateLeader,
    /// Split the nodes into a minority and a majority that cannot reach each other.
    Split,
    /// Drop the packets from one node to another, not the other way.
    OneWay,
    /// Start a new node and add it to the cluster under load.
    AddNode,
    /// Drain a node and remove it from the cluster under load.
    RemoveNode,
    /// Restart every node in turn (SIGTERM, start again, wait until it serves).
    RollingRestart,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Kill,
        Kind::Pause,
        Kind::IsolateLeader,
        Kind::Split,
        Kind::OneWay,
        Kind::AddNode,
        Kind::RemoveNode,
        Kind::RollingRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::IsolateLeader => "isolate-leader",
            Kind::Split => "split",
            Kind::OneWay => "one-way",
            Kind::AddNode => "add-node",
            Kind::RemoveNode => "remove-node",
            Kind::RollingRestart => "rolling-restart",
        }
    }

    /// Relative weight when drawing kinds after every kind has run once.
    fn weight(self) -> u32 {
        match self {
            Kind::Kill => 3,
            Kind::Pause | Kind::IsolateLeader | Kind::Split => 2,
            Kind::OneWay | Kind::AddNode | Kind::RemoveNode | Kind::RollingRestart => 1,
        }
    }

    fn needs_cluster(self) -> bool {
        matches!(self, Kind::IsolateLeader | Kind::Split | Kind::OneWay | Kind::AddNode | Kind::RemoveNode)
    }

    fn needs_network_control(self) -> bool {
        matches!(self, Kind::IsolateLeader | Kind::Split | Kind::OneWay)
    }
}

/// Which node a process fault hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Node(NodeId),
    /// The node leading this shard (index into the status's shard list, modulo its length) when
    /// the fault is injected.
    LeaderOf(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    Kill { target: Target, down_ms: u64 },
    Pause { target: Target, for_ms: u64 },
    IsolateLeader { shard: u32, for_ms: u64 },
    Split { minority: Vec<NodeId>, majority: Vec<NodeId>, for_ms: u64 },
    OneWay { from: NodeId, to: NodeId, for_ms: u64 },
    AddNode { id: NodeId },
    RemoveNode { id: NodeId },
    RollingRestart { nodes: Vec<NodeId> },
}

impl Action {
    pub fn kind(&self) -> Kind {
        match self {
            Action::Kill { .. } => Kind::Kill,
            Action::Pause { .. } => Kind::Pause,
            Action::IsolateLeader { .. } => Kind::IsolateLeader,
            Action::Split { .. } => Kind::Split,
            Action::OneWay { .. } => Kind::OneWay,
            Action::AddNode { .. } => Kind::AddNode,
            Action::RemoveNode { .. } => Kind::RemoveNode,
            Action::RollingRestart { .. } => Kind::RollingRestart,
        }
    }

    /// How long the fault stays in force once injected (0 for one-shot changes).
    fn nominal_ms(&self) -> u64 {
        match self {
            Action::Kill { down_ms: ms, .. }
            | Action::Pause { for_ms: ms, .. }
            | Action::IsolateLeader { for_ms: ms, .. }
            | Action::Split { for_ms: ms, .. }
            | Action::OneWay { for_ms: ms, .. } => *ms,
            Action::AddNode { .. } | Action::RemoveNode { .. } => 0,
            Action::RollingRestart { nodes } => ROLLING_MS_PER_NODE.saturating_mul(nodes.len() as u64),
        }
    }
}

/// One scheduled fault: injected `at_ms` after the traffic starts (or as soon as the previous
/// fault is over, if that is later).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub at_ms: u64,
    #[serde(flatten)]
    pub action: Action,
}

/// What the harness can do in this run.
#[derive(Clone, Copy, Debug)]
pub struct Topology {
    /// Initial nodes (1 = a standalone node, no Raft).
    pub nodes: u32,
    /// Replicas per shard: a node is removed only while more nodes than this remain.
    pub replicas: u32,
    /// Whether packets between nodes can be dropped (network namespaces, i.e. running as root).
    pub network_control: bool,
}

impl Topology {
    pub fn is_cluster(&self) -> bool {
        self.nodes > 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub faults: Vec<Fault>,
    /// Kinds that were asked for but cannot run here, each with the reason.
    pub skipped: Vec<(Kind, String)>,
}

/// The schedule of a run. Every usable kind runs once first (in a seeded order, an add before a
/// remove), then kinds are drawn by weight until the fault window closes.
pub fn plan(seed: u64, topology: Topology, duration_ms: u64, wanted: &BTreeSet<Kind>) -> Plan {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a0_5eed);
    let mut skipped = Vec::new();
    let mut usable = Vec::new();
    for kind in wanted.iter().copied() {
        if kind.needs_cluster() && !topology.is_cluster() {
            skipped
                .push((kind, "needs a cluster (--nodes 3 or more); this run has a standalone node".into()));
        } else if kind.needs_network_control() && !topology.network_control {
            skipped.push((kind, "needs network namespaces (run as root, without --no-netns)".into()));
        } else if kind == Kind::RemoveNode
            && topology.nodes <= topology.replicas
            && !wanted.contains(&Kind::AddNode)
        {
            skipped.push((kind, format!("needs more than {} nodes (or add-node)", topology.replicas)));
        } else {
            usable.push(kind);
        }
    }

    let mut first_pass = usable.clone();
    first_pass.shuffle(&mut rng);
    if let (Some(add), Some(remove)) = (
        first_pass.iter().position(|k| *k == Kind::AddNode),
        first_pass.iter().position(|k| *k == Kind::RemoveNode),
    ) {
        if remove < add {
            first_pass.swap(add, remove);
        }
    }

    let warmup = WARMUP_MIN_MS.max(duration_ms / 10);
    let window_end = duration_ms.saturating_mul(FAULT_WINDOW_END_PERCENT) / 100;
    let cap = (duration_ms / 8).max(FAULT_MIN_MS);
    let mut members: Vec<NodeId> = (1..=topology.nodes).collect();
    let mut next_id = topology.nodes + 1;
    let mut faults = Vec::new();
    let mut at = warmup;
    let mut queue = first_pass.into_iter();
    // Draws that found nothing to do in a row (e.g. only add-node wanted and every extra node
    // added): past this the schedule ends.
    let mut idle_draws = 0;
    while at < window_end && !usable.is_empty() && idle_draws < MAX_IDLE_DRAWS {
        let kind = match queue.next() {
            Some(k) => k,
            None => draw(&mut rng, &usable),
        };
        let for_ms = rng.gen_range(FAULT_MIN_MS..=FAULT_MAX_MS.min(cap).max(FAULT_MIN_MS));
        let Some(action) = make(kind, &mut rng, topology, &mut members, &mut next_id, for_ms) else {
            idle_draws += 1;
            continue;
        };
        idle_draws = 0;
        let gap = rng.gen_range(GAP_MIN_MS..=GAP_MAX_MS.min(cap).max(GAP_MIN_MS));
        let next = at.saturating_add(action.nominal_ms()).saturating_add(gap);
        faults.push(Fault { at_ms: at, action });
        at = next;
    }
    Plan { faults, skipped }
}

fn draw(rng: &mut ChaCha8Rng, usable: &[Kind]) -> Kind {
    let total: u32 = usable.iter().map(|k| k.weight()).sum();
    let mut roll = rng.gen_range(0..total.max(1));
    for kind in usable {
        if roll < kind.weight() {
            return *kind;
        }
        roll -= kind.weight();
    }
    usable[0]
}

fn pick(rng: &mut ChaCha8Rng, members: &[NodeId]) -> NodeId {
    members[rng.gen_range(0..members.len())]
}

/// The concrete action for `kind`, or None when it cannot run now (e.g. nothing to remove).
fn make(
    kind: Kind,
    rng: &mut ChaCha8Rng,
    topology: Topology,
    members: &mut Vec<NodeId>,
    next_id: &mut NodeId,
    for_ms: u64,
) -> Option<Action> {
    let process_target = |rng: &mut ChaCha8Rng, members: &[NodeId]| {
        if topology.is_cluster() && rng.gen_bool(0.5) {
            Target::LeaderOf(rng.gen_range(0..u32::MAX))
        } else {
            Target::Node(pick(rng, members))
        }
    };
    Some(match kind {
        Kind::Kill => Action::Kill { target: process_target(rng, members), down_ms: for_ms },
        Kind::Pause => Action::Pause { target: process_target(rng, members), for_ms },
        Kind::IsolateLeader => Action::IsolateLeader { shard: rng.gen_range(0..u32::MAX), for_ms },
        Kind::Split => {
            let mut shuffled = members.clone();
            shuffled.shuffle(rng);
            let minority_len = (shuffled.len().saturating_sub(1) / 2).max(1);
            let mut minority = shuffled[..minority_len].to_vec();
            let mut majority = shuffled[minority_len..].to_vec();
            minority.sort_unstable();
            majority.sort_unstable();
            Action::Split { minority, majority, for_ms }
        }
        Kind::OneWay => {
            let from = pick(rng, members);
            let others: Vec<NodeId> = members.iter().copied().filter(|m| *m != from).collect();
            if others.is_empty() {
                return None;
            }
            Action::OneWay { from, to: pick(rng, &others), for_ms }
        }
        Kind::AddNode => {
            if *next_id > topology.nodes + MAX_EXTRA_NODES {
                return None;
            }
            let id = *next_id;
            *next_id += 1;
            members.push(id);
            Action::AddNode { id }
        }
        Kind::RemoveNode => {
            if members.len() as u32 <= topology.replicas.max(1) {
                return None;
            }
            let id = pick(rng, members);
            members.retain(|m| *m != id);
            Action::RemoveNode { id }
        }
        Kind::RollingRestart => Action::RollingRestart { nodes: members.clone() },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn all() -> BTreeSet<Kind> {
        Kind::ALL.into_iter().collect()
    }

    const CLUSTER: Topology = Topology { nodes: 3, replicas: 3, network_control: true };
    const STANDALONE: Topology = Topology { nodes: 1, replicas: 1, network_control: true };

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        for seed in [0, 1, 7, 42, u64::MAX] {
            let a = plan(seed, CLUSTER, 180_000, &all());
            let b = plan(seed, CLUSTER, 180_000, &all());
            assert_eq!(a, b, "seed {seed}");
            assert!(!a.faults.is_empty());
        }
    }

    #[test]
    fn another_seed_gives_another_schedule() {
        let a = plan(7, CLUSTER, 180_000, &all());
        let b = plan(8, CLUSTER, 180_000, &all());
        assert_ne!(a.faults, b.faults);
    }

    #[test]
    fn every_usable_kind_runs_and_faults_stay_in_the_window() {
        let p = plan(7, CLUSTER, 180_000, &all());
        let kinds: BTreeSet<Kind> = p.faults.iter().map(|f| f.action.kind()).collect();
        assert_eq!(kinds, all(), "{p:?}");
        assert!(p.skipped.is_empty());
        let mut last = 0;
        for f in &p.faults {
            assert!(f.at_ms >= WARMUP_MIN_MS && f.at_ms < 180_000 * FAULT_WINDOW_END_PERCENT / 100);
            assert!(f.at_ms >= last, "faults are in time order");
            last = f.at_ms;
        }
    }

    #[test]
    fn membership_changes_keep_enough_replicas() {
        for seed in 0..200 {
            let p = plan(seed, CLUSTER, 600_000, &all());
            let mut members: BTreeSet<NodeId> = (1..=3).collect();
            for f in &p.faults {
                match &f.action {
                    Action::AddNode { id } => assert!(members.insert(*id), "seed {seed}: {id} added twice"),
                    Action::RemoveNode { id } => {
                        assert!(members.remove(id), "seed {seed}: {id} removed but not a member");
                        assert!(members.len() >= 3, "seed {seed}: below three replicas");
                    }
                    Action::Kill { target: Target::Node(n), .. }
                    | Action::Pause { target: Target::Node(n), .. } => {
                        assert!(members.contains(n), "seed {seed}: fault on non-member {n}")
                    }
                    Action::OneWay { from, to, .. } => {
                        assert_ne!(from, to);
                        assert!(members.contains(from) && members.contains(to));
                    }
                    Action::Split { minority, majority, .. } => {
                        assert!(minority.len() < majority.len());
                        assert_eq!(minority.len() + majority.len(), members.len());
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn a_standalone_node_skips_cluster_faults_with_a_reason() {
        let p = plan(3, STANDALONE, 30_000, &all());
        let kinds: BTreeSet<Kind> = p.faults.iter().map(|f| f.action.kind()).collect();
        assert_eq!(kinds, [Kind::Kill, Kind::Pause, Kind::RollingRestart].into_iter().collect());
        let skipped: BTreeSet<Kind> = p.skipped.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            skipped,
            [Kind::IsolateLeader, Kind::Split, Kind::OneWay, Kind::AddNode, Kind::RemoveNode]
                .into_iter()
                .collect()
        );
        for f in &p.faults {
            if let Action::Kill { target, .. } | Action::Pause { target, .. } = &f.action {
                assert_eq!(*target, Target::Node(1));
            }
        }
    }

    #[test]
    fn partitions_need_network_control() {
        let topology = Topology { network_control: false, ..CLUSTER };
        let p = plan(3, topology, 60_000, &all());
        assert!(p.faults.iter().all(|f| !f.action.kind().needs_network_control()));
        assert_eq!(p.skipped.len(), 3);
    }
}
