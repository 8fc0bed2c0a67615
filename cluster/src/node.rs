//! A clustered node: its Raft groups (the metadata group and the shard groups placed on it), the
//! shared log writer and database, the peer endpoint, and the client-facing operations that
//! route by partner to the shard's leader (proposing locally or forwarding to the leader node).

use crate::log_store::LogStore;
use crate::meta::{ClusterConfig, NodeInfo};
use crate::raft_net::GroupNetwork;
use crate::state_machine::{GroupSm, SmKind};
use crate::transport::{
    advertised_addr, check_peer_addr, ForwardError, GroupStatus, NodeStatus, PeerReq, PeerResp, PeerService,
    PeerTls, Peers,
};
use crate::types::{
    shard_group, shard_of, Cmd, GroupId, MetaCmd, NodeId, Raft, Resp, TxBatch, TxList, META_GROUP,
};
use crate::writer::LogWriter;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::AppendEntriesResponse;
use openraft::{BasicNode, ChangeMembers, Config, ServerState, SnapshotPolicy};
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, FxRate, Instant, Partner, Span, TxInput};
use settle_storage::RaftDb;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Heartbeat interval of every group, in milliseconds. openraft 0.9 also uses it as the time limit
/// of every AppendEntries call (`replication/mod.rs`) and ticks its election timer every 1.5
/// heartbeats: at 100 ms, a catch-up append of many large entries on a loaded machine timed out
/// every time and the follower never caught up (chaos: rolling restart, pause); at 250 ms the
/// timer's granularity alone cost a failover up to 375 ms. 200 ms with smaller appends
/// (`MAX_APPEND_ENTRIES`) leaves room for both.
pub const HEARTBEAT_MS: u64 = 200;
/// Most log entries in one AppendEntries call (each may carry up to `MAX_ENTRY_TXS` transactions).
pub const MAX_APPEND_ENTRIES: u64 = 16;
/// Election timeout range of a group's preferred leader (it campaigns first).
///
/// openraft 0.9 starts an election once a follower has heard nothing from the leader for its
/// leader lease (the range's maximum) plus a timeout drawn from the range, and a voter refuses
/// votes until its own lease since the last heartbeat has run out. So a killed leader's preferred
/// successor campaigns 850 to 1,000 ms (plus up to one 300 ms tick) after the last heartbeat, and
/// the other replicas 1,250 to 1,400 ms: writes resume well within the 2 s target, and a single
/// late heartbeat (up to about four) on a loaded machine does not start an election.
pub const PREFERRED_ELECTION_MS: (u64, u64) = (350, 500);
/// Election timeout range of the other replicas: their lease (the maximum) has run out when the
/// preferred leader campaigns, and they leave it time to win before they campaign themselves.
pub const OTHER_ELECTION_MS: (u64, u64) = (550, 700);
/// How long a client operation keeps looking for a shard leader before it gives up.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Time a forwarded request may take on the leader.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a status query waits for each node.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a write proposed on this node's leader replica may take to commit before the caller
/// is told the outcome is unknown (it retries with the same ids, maybe through another node).
pub const LOCAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most transactions in one submission (as the standalone engine).
pub const MAX_SUBMIT_TXS: usize = 65_536;
/// Most transactions merged into one shard log entry.
pub const MAX_ENTRY_TXS: usize = 8192;
/// Entries of one shard a node has proposed and not yet seen committed; submissions arriving
/// meanwhile wait and are merged into the next entry (one entry, one append, many transactions).
pub const MAX_PROPOSALS_IN_FLIGHT: usize = 4;
/// After a restart, how long the node's replicas wait, once it serves its peers, before they may
/// campaign: two leases of the other replicas, time for a live leader's appends to arrive.
pub const STARTUP_ELECTION_GRACE: Duration = Duration::from_millis(2 * OTHER_ELECTION_MS.1);
/// How long a node that is stopping spends handing its leaderships over (SIGTERM): after it,
/// the node stops anyway and its groups elect by timeout.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a leaving leader waits for what it proposed to commit before it hands over.
pub const HANDOVER_DRAIN: Duration = Duration::from_secs(2);
/// A leaving leader whose majority has not answered for this long hands nothing over.
pub const HANDOVER_QUORUM_SILENCE_MS: u64 = 5 * HEARTBEAT_MS;
/// How long a successor's campaign waits for votes before it campaigns again (a vote refused
/// while a lease holds is not counted later; a new term asks again).
pub const CAMPAIGN_RETRY: Duration = Duration::from_millis(250);
/// At bootstrap, how long a member waits for a group's preferred leader to initialize it before
/// initializing it itself (the preferred leader may be down).
pub const INITIALIZE_FALLBACK: Duration = Duration::from_secs(5);
/// Shards whose replicas `add-node`/`remove-node` move at the same time.
pub const MAX_PARALLEL_SHARD_MOVES: usize = 8;
/// Time a membership change of one group may take (the learner catches up first).
pub const RECONFIGURE_WAIT: Duration = Duration::from_secs(60);
/// How often shard leaders look for periods due to close.
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// Entries applied since a group's last snapshot after which it takes the next one
/// (`ClusterOptions::snapshot_logs`, `settle node --snapshot-logs`). Each build copies the
/// group's in-memory state once, so this trades that copy against the log's size and the time
/// a restart spends re-applying the log after the snapshot.
pub const DEFAULT_SNAPSHOT_LOGS: u64 = 50_000;
/// Of the entries a snapshot covers, the newest `snapshot_logs / SNAPSHOT_KEEP_DIVISOR` stay in
/// the log (5,000 at the default), so a follower a little behind still catches up by log
/// entries rather than by a whole snapshot.
pub const SNAPSHOT_KEEP_DIVISOR: u64 = 10;
/// Size of the chunks a snapshot is sent in.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// Longest the send and install of one snapshot chunk may take (the last chunk's includes
/// writing the whole snapshot on the follower).
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No leader could be reached in time; the outcome is unknown (retry with the same ids).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Understood and refused; nothing changed.
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("startup: {0}")]
    Startup(String),
}

/// How to start a clustered node.
#[derive(Debug)]
pub struct ClusterOptions {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub peer_listen: SocketAddr,
    /// `--advertise`: the host name or IP others reach this node at (default: the bound address).
    pub advertise: Option<String>,
    /// `--bootstrap`: the initial members' peer addresses (first start only).
    pub bootstrap: Option<BTreeMap<NodeId, String>>,
    /// `--join`: a member's peer address (first start of a node added later).
    pub join: Option<String>,
    pub shards: u32,
    pub replicas: u32,
    pub fx_max_age: Span,
    pub hash_seed: u64,
    pub tls: PeerTls,
    /// Entries between a group's snapshots ([`DEFAULT_SNAPSHOT_LOGS`]; at least 1).
    pub snapshot_logs: u64,
}

pub(crate) struct Group {
    pub(crate) raft: Raft,
    pub(crate) sm: GroupSm,
}

/// How the local replica `g` sees its group's membership.
pub(crate) fn membership_view(g: &Group) -> crate::transport::MembershipView {
    let metrics = g.raft.metrics();
    let m = metrics.borrow();
    let config = m.membership_config.log_id().map(|l| l.index);
    let committed = match (config, m.last_applied) {
        (Some(config), Some(applied)) => config <= applied.index,
        _ => false,
    };
    let membership = m.membership_config.membership();
    let mut members: Vec<NodeId> = membership.voter_ids().chain(membership.learner_ids()).collect();
    members.sort_unstable();
    members.dedup();
    crate::transport::MembershipView { leader: m.current_leader, config_index: config, committed, members }
}

/// Records where the members of `g`'s configuration listen. A node added later is in no
/// `--bootstrap` list, and a request forwarded to it (the registry's leader, say) right after a
/// restart must not fail with "address unknown" until some Raft connection teaches its address
/// (a restarted initial member waited 60 s for the first administrator that way in a chaos run).
fn learn_member_addresses(peers: &Peers, g: &Group, me: NodeId) {
    let metrics = g.raft.metrics();
    let m = metrics.borrow();
    for (&id, node) in m.membership_config.nodes() {
        if id != me && check_peer_addr(&node.addr).is_ok() {
            peers.set_addr(id, node.addr.clone());
        }
    }
}

/// One group in `settle cluster status --json`: its leader, voters and learners (as the leader
/// reports them), and every reporting node's replica.
fn group_json(reports: &BTreeMap<NodeId, Option<NodeStatus>>, group: GroupId) -> serde_json::Value {
    let mut leader = None;
    let mut members = Vec::new();
    let mut learners = Vec::new();
    let mut replicas = Vec::new();
    let mut leader_last = None;
    for (id, report) in reports {
        let Some(g) = report.as_ref().and_then(|r| r.groups.iter().find(|g| g.group == group)) else {
            continue;
        };
        if g.leader == Some(*id) {
            leader = Some(*id);
            members = g.voters.clone();
            learners = g.learners.clone();
            leader_last = g.last_log_index;
        } else if members.is_empty() {
            members = g.voters.clone();
            learners = g.learners.clone();
        }
        replicas.push((*id, g));
    }
    let replicas: Vec<serde_json::Value> = replicas
        .into_iter()
        .map(|(node, g)| {
            let lag = match (leader_last, g.applied_index) {
                (Some(last), Some(a)) => Some(last.saturating_sub(a)),
                _ => None,
            };
            serde_json::json!({"node": node, "applied_index": g.applied_index,
                "state_hash": g.state_hash, "lag": lag, "snapshot_index": g.snapshot_index,
                "purged_index": g.purged_index, "snapshots_installed": g.snapshots_installed})
        })
        .collect();
    serde_json::json!({"leader": leader, "members": members, "learners": learners, "replicas": replicas})
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("sm", &self.sm).finish()
    }
}

#[derive(Debug)]
struct Inner {
    id: NodeId,
    /// This node's addresses (the client ones are known once the ingress is bound).
    info: std::sync::Mutex<NodeInfo>,
    config: ClusterConfig,
    groups: RwLock<HashMap<GroupId, Arc<Group>>>,
    peers: Arc<Peers>,
    /// Per shard: submissions waiting to be merged into the next entry.
    batchers: Vec<mpsc::UnboundedSender<ShardWork>>,
    opener: GroupOpener,
    /// Held while a group is created on demand (a leader placed a replica here).
    opening: tokio::sync::Mutex<()>,
    /// What this node did as a leader, and what it saw of its groups (metrics).
    stats: crate::observe::Stats,
    /// Set once the node hands its leaderships over before it stops: its leader replicas take
    /// no new proposals and its replicas no longer campaign.
    leaving: AtomicBool,
    /// Clear during [`STARTUP_ELECTION_GRACE`] after a restart, when replicas must not campaign.
    may_campaign: AtomicBool,
}

/// The peer id under which a joining node reaches the member named by `--join`.
const JOIN_CONTACT: NodeId = NodeId::MAX;

/// What it takes to open a group's Raft instance on this node.
#[derive(Debug)]
struct GroupOpener {
    id: NodeId,
    db: Arc<RaftDb>,
    writer: LogWriter,
    peers: Arc<Peers>,
    fx_max_age: Span,
    hash_seed: u64,
    snapshot_logs: u64,
}

impl GroupOpener {
    async fn open(&self, group: GroupId, preferred: bool) -> Result<Group, ClusterError> {
        let startup = |e: String| ClusterError::Startup(format!("group {group}: {e}"));
        let log = LogStore::open(group, Arc::clone(&self.db), self.writer.clone())
            .map_err(|e| startup(e.to_string()))?;
        let sm = GroupSm::open(group, &self.db, self.writer.clone(), &log, self.fx_max_age, self.hash_seed)
            .map_err(|e| startup(e.to_string()))?;
        let network = GroupNetwork { group, peers: Arc::clone(&self.peers) };
        let raft = Raft::new(self.id, raft_config(preferred, self.snapshot_logs)?, network, log, sm.clone())
            .await
            .map_err(|e| startup(e.to_string()))?;
        sm.set_started();
        Ok(Group { raft, sm })
    }
}

/// Transactions for one shard and where their results go.
type ShardWork = (Vec<TxInput>, oneshot::Sender<Result<Vec<TxResult>, String>>);

/// A running clustered node; cheap to clone.
#[derive(Clone, Debug)]
pub struct ClusterHandle {
    inner: Arc<Inner>,
}

fn now() -> Instant {
    Instant::from_system_time(std::time::SystemTime::now())
}

fn raft_config(preferred: bool, snapshot_logs: u64) -> Result<Arc<Config>, ClusterError> {
    let snapshot_logs = snapshot_logs.max(1);
    let (min, max) = if preferred { PREFERRED_ELECTION_MS } else { OTHER_ELECTION_MS };
    let config = Config {
        cluster_name: "settle".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: min,
        election_timeout_max: max,
        // A leader whose follower needs a purged entry sends it the snapshot instead.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_logs),
        max_in_snapshot_log_to_keep: snapshot_logs / SNAPSHOT_KEEP_DIVISOR,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        max_payload_entries: MAX_APPEND_ENTRIES,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().map_err(|e| ClusterError::Startup(e.to_string()))?))
}

impl ClusterHandle {
    /// Opens the node's database, starts its groups and the peer endpoint, and (on a first
    /// bootstrap start) initializes every group it is placed in.
    pub async fn start(opts: ClusterOptions) -> Result<ClusterHandle, ClusterError> {
        let startup = |e: String| ClusterError::Startup(e);
        let db = Arc::new(RaftDb::open(&opts.data_dir.join("raft")).map_err(|e| startup(e.to_string()))?);
        let peers = Peers::bind(opts.peer_listen, &opts.tls).map_err(startup)?;
        let peer_addr = peers.local_addr().map_err(startup)?;
        let (config, fresh) = match db.cluster_config().map_err(|e| startup(e.to_string()))? {
            Some(bytes) => {
                (serde_json::from_slice::<ClusterConfig>(&bytes).map_err(|e| startup(e.to_string()))?, false)
            }
            None => {
                let config = match (&opts.bootstrap, &opts.join) {
                    (Some(initial), _) => {
                        if !initial.contains_key(&opts.id) {
                            return Err(startup(format!(
                                "--bootstrap does not list this node ({})",
                                opts.id
                            )));
                        }
                        if opts.shards == 0 || opts.shards > crate::meta::MAX_SHARDS || opts.replicas == 0 {
                            return Err(startup(
                                "--shards must be 1..=4096 and --replicas at least 1".into(),
                            ));
                        }
                        ClusterConfig {
                            shards: opts.shards,
                            replicas: opts.replicas,
                            initial: initial.clone(),
                        }
                    }
                    (None, Some(member)) => {
                        // Ask a member for the cluster's configuration; the node then holds no
                        // group until `settle cluster add-node` places replicas on it.
                        check_peer_addr(member).map_err(|e| startup(format!("--join: {e}")))?;
                        peers.set_addr(JOIN_CONTACT, member.clone());
                        match peers.call(JOIN_CONTACT, &PeerReq::Config, FORWARD_TIMEOUT).await {
                            Ok(PeerResp::Config(config)) => config,
                            Ok(_) => return Err(startup("unexpected answer to --join".into())),
                            Err(e) => return Err(startup(format!("--join {member}: {e}"))),
                        }
                    }
                    (None, None) => {
                        return Err(startup(
                            "this data dir holds no cluster: start with --bootstrap or --join".into(),
                        ))
                    }
                };
                if opts.bootstrap.is_none() && config.initial.contains_key(&opts.id) {
                    return Err(startup(format!("node id {} is already an initial member", opts.id)));
                }
                let bytes = serde_json::to_vec(&config).map_err(|e| startup(e.to_string()))?;
                db.put_cluster_config(&bytes).map_err(|e| startup(e.to_string()))?;
                (config, opts.bootstrap.is_some())
            }
        };
        let writer = LogWriter::start(Arc::clone(&db)).map_err(|e| startup(e.to_string()))?;
        for (&node, addr) in &config.initial {
            check_peer_addr(addr).map_err(|e| startup(format!("node {node}: {e}")))?;
            peers.set_addr(node, addr.clone());
        }
        let peer = advertised_addr(opts.advertise.as_deref(), peer_addr);
        let info = NodeInfo { id: opts.id, peer, quic: String::new(), http: None };
        let members: BTreeMap<NodeId, BasicNode> =
            config.initial.iter().map(|(&id, addr)| (id, BasicNode { addr: addr.clone() })).collect();
        let opener = GroupOpener {
            id: opts.id,
            db: Arc::clone(&db),
            writer,
            peers: Arc::clone(&peers),
            fx_max_age: opts.fx_max_age,
            hash_seed: opts.hash_seed,
            snapshot_logs: opts.snapshot_logs,
        };

        // The groups this node holds: as an initial member the metadata group and its shards in
        // the initial placement; and every group it has state for (replicas placed later).
        let mut wanted: BTreeMap<GroupId, Vec<NodeId>> = BTreeMap::new();
        if config.initial.contains_key(&opts.id) {
            wanted.insert(META_GROUP, config.initial.keys().copied().collect());
            for (shard, nodes) in config.initial_placement().into_iter().enumerate() {
                if nodes.contains(&opts.id) {
                    wanted.insert(shard_group(shard as u32), nodes);
                }
            }
        }
        for group in db.groups().map_err(|e| startup(e.to_string()))? {
            wanted.entry(group).or_default();
        }
        let mut groups = HashMap::new();
        for (group, nodes) in wanted {
            let preferred = nodes.first() == Some(&opts.id);
            let g = opener.open(group, preferred).await?;
            learn_member_addresses(&peers, &g, opts.id);
            if !fresh {
                // Opening the remaining groups (each replays its log) may take longer than an
                // election timeout, and no leader's append reaches this node until the peer
                // endpoint serves: a replica would campaign in a higher term and, refused for
                // its short log, still depose the live leader whose next append it rejects.
                g.raft.runtime_config().elect(false);
            }
            if fresh && !nodes.is_empty() {
                let group_members: BTreeMap<NodeId, BasicNode> =
                    nodes.iter().filter_map(|n| members.get(n).map(|b| (*n, b.clone()))).collect();
                // The preferred leader initializes (and so campaigns first); the others only if
                // no leader appeared in time (the same membership everywhere, which is safe).
                let raft = g.raft.clone();
                let wait = if preferred { Duration::ZERO } else { INITIALIZE_FALLBACK };
                tokio::spawn(async move {
                    let mut metrics = raft.metrics();
                    let _ = tokio::time::timeout(wait, async {
                        while metrics.borrow().current_leader.is_none() {
                            if metrics.changed().await.is_err() {
                                return;
                            }
                        }
                    })
                    .await;
                    if raft.metrics().borrow().current_leader.is_none() {
                        if let Err(e) = raft.initialize(group_members).await {
                            tracing::debug!("group {group}: initialize: {e}");
                        }
                    }
                });
            }
            groups.insert(group, Arc::new(g));
        }
        let mut batchers = Vec::new();
        let mut batcher_rx = Vec::new();
        for _ in 0..config.shards {
            let (tx, rx) = mpsc::unbounded_channel();
            batchers.push(tx);
            batcher_rx.push(rx);
        }
        let handle = ClusterHandle {
            inner: Arc::new(Inner {
                batchers,
                opener,
                opening: tokio::sync::Mutex::new(()),
                stats: crate::observe::Stats::default(),
                leaving: AtomicBool::new(false),
                may_campaign: AtomicBool::new(fresh),
                id: opts.id,
                info: std::sync::Mutex::new(info),
                config,
                groups: RwLock::new(groups),
                peers: Arc::clone(&peers),
            }),
        };
        for (shard, rx) in batcher_rx.into_iter().enumerate() {
            tokio::spawn(run_batcher(Arc::downgrade(&handle.inner), shard as u32, rx));
        }
        peers.serve(Arc::new(handle.clone()));
        handle.spawn_background();
        if !fresh {
            let me = handle.clone();
            tokio::spawn(async move {
                // Live leaders' appends reach the replicas now and restart their timers.
                tokio::time::sleep(STARTUP_ELECTION_GRACE).await;
                if !me.inner.leaving.load(Ordering::Acquire) {
                    me.inner.may_campaign.store(true, Ordering::Release);
                    for (_, g) in me.all_groups() {
                        g.raft.runtime_config().elect(true);
                    }
                }
            });
        }
        Ok(handle)
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.id
    }

    fn info(&self) -> NodeInfo {
        self.inner.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The peer address others reach this node at (advertised, else the one actually bound).
    pub fn peer_addr(&self) -> String {
        self.info().peer
    }

    /// Records this node's client addresses and registers them in the metadata group (in the
    /// background, until it succeeds).
    pub fn announce(&self, quic: String, http: Option<String>) {
        let info = {
            let mut info = self.inner.info.lock().unwrap_or_else(|e| e.into_inner());
            info.quic = quic;
            info.http = http;
            info.clone()
        };
        let me = self.clone();
        tokio::spawn(async move {
            if me.removed() {
                // Registering would undo the removal; `settle cluster add-node` brings it back.
                tracing::warn!(
                    "this node was removed from the cluster (settle cluster add-node adds it back)"
                );
                return;
            }
            let cmd = Cmd::Meta(MetaCmd::RegisterNode(info));
            while let Err(e) = me.propose(META_GROUP, cmd.clone()).await {
                tracing::debug!("registering node: {e}");
            }
        });
    }

    pub fn shards(&self) -> u32 {
        self.inner.config.shards
    }

    pub(crate) fn db(&self) -> &Arc<RaftDb> {
        &self.inner.opener.db
    }

    pub(crate) fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub(crate) fn stats(&self) -> &crate::observe::Stats {
        &self.inner.stats
    }

    /// This node's replicas: group and Raft handle.
    pub(crate) fn rafts(&self) -> Vec<(GroupId, Raft)> {
        self.all_groups().into_iter().map(|(g, x)| (g, x.raft.clone())).collect()
    }

    pub(crate) fn group(&self, group: GroupId) -> Option<Arc<Group>> {
        self.inner.groups.read().unwrap_or_else(|e| e.into_inner()).get(&group).cloned()
    }

    /// The group, created (empty, not initialized) if this node holds no replica yet: a leader
    /// is placing one here and will replicate its log to it.
    async fn ensure_group(&self, group: GroupId) -> Result<Arc<Group>, String> {
        if let Some(g) = self.group(group) {
            return Ok(g);
        }
        let _opening = self.inner.opening.lock().await;
        if let Some(g) = self.group(group) {
            return Ok(g);
        }
        if group != META_GROUP && group > self.inner.config.shards {
            return Err(format!("no group {group} in this cluster"));
        }
        let g = Arc::new(self.inner.opener.open(group, false).await.map_err(|e| e.to_string())?);
        self.inner.groups.write().unwrap_or_else(|e| e.into_inner()).insert(group, Arc::clone(&g));
        Ok(g)
    }

    /// Shuts down and deletes this node's replica of `group` (moved away from it), unless its
    /// configuration changed since it was found removed (`checked_config`): a leader may have
    /// placed it here again meanwhile. Checked under the opening lock, which also holds back
    /// requests that would re-create the replica, so no append the check missed can be
    /// acknowledged by the replica before it stops (re-adding goes through a learner
    /// configuration that reaches the replica before anything it acknowledges can count).
    pub(crate) async fn delete_replica(&self, group: GroupId, g: &Group, checked_config: Option<u64>) {
        if self.inner.leaving.load(Ordering::Acquire) {
            // Shutting down: the writer may be gone, and a decision taken while peers are
            // closing is not one to act on. The next start checks again.
            return;
        }
        let _opening = self.inner.opening.lock().await;
        if !self.group(group).is_some_and(|current| std::ptr::eq(current.as_ref(), g)) {
            return; // already gone
        }
        let now = membership_view(g);
        if now.config_index != checked_config {
            tracing::info!(
                group,
                ?now,
                ?checked_config,
                "kept the replica: its configuration changed since the check"
            );
            return;
        }
        self.inner.groups.write().unwrap_or_else(|e| e.into_inner()).remove(&group);
        let _ = g.raft.shutdown().await;
        if let Err(e) = g.sm.drop_records().await {
            tracing::error!("group {group}: cannot delete the removed replica: {e}");
        }
        tracing::info!("group {group}: this node's replica was moved away; deleted it");
    }

    pub(crate) fn all_groups(&self) -> Vec<(GroupId, Arc<Group>)> {
        let groups = self.inner.groups.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = groups.iter().map(|(g, x)| (*g, Arc::clone(x))).collect();
        all.sort_by_key(|(g, _)| *g);
        all
    }

    /// On shard leaders, proposes period-close ticks when some account is due.
    fn spawn_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut removals = crate::removal::RemovalWatch::default();
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let me = ClusterHandle { inner };
                me.drop_removed_replicas(&mut removals);
                me.observe_groups();
                let at = now();
                for (group, g) in me.all_groups() {
                    if group == META_GROUP || g.raft.metrics().borrow().state != ServerState::Leader {
                        continue;
                    }
                    let due = match &g.sm.lock().kind {
                        SmKind::Shard(shard) => shard.next_close_due() <= at,
                        SmKind::Meta(_) => false,
                    };
                    if due {
                        let _ = me.local_write(&g, Cmd::Tick(at)).await;
                    }
                }
            }
        });
    }

    /// Proposes on this node's replica, which should lead; the leader stamps transactions.
    async fn local_write(&self, g: &Group, cmd: Cmd) -> Result<Resp, ForwardError> {
        if self.inner.leaving.load(Ordering::Acquire) {
            // The caller retries where the group's next leader is, once it is known.
            return Err(ForwardError::NotLeader(None));
        }
        let cmd = match cmd {
            Cmd::Txs(batch) => Cmd::Txs(TxBatch { received_at: now(), txs: batch.txs }),
            other => other,
        };
        // A leader cut off from its majority does not learn it is deposed until it hears a
        // higher term: without a bound, a client connected to it would wait forever.
        let written = tokio::time::timeout(LOCAL_WRITE_TIMEOUT, g.raft.client_write(cmd)).await;
        let Ok(written) = written else {
            return Err(ForwardError::Failed(format!(
                "not committed within {LOCAL_WRITE_TIMEOUT:?} (is this leader cut off from its majority?)"
            )));
        };
        match written {
            Ok(resp) => {
                if let Resp::Txs(results) = &resp.data {
                    self.inner.stats.committed_as_leader(results.len());
                }
                Ok(resp.data)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ForwardError::NotLeader(f.leader_id))
            }
            Err(e) => Err(ForwardError::Failed(e.to_string())),
        }
    }

    /// Proposes `cmd` to `group` wherever its leader is, waiting for a leader if there is none.
    pub async fn propose(&self, group: GroupId, cmd: Cmd) -> Result<Resp, ClusterError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let local = self.group(group);
        let mut hint: Option<NodeId> = None;
        let mut last_error: String;
        let mut attempt_no = 0usize;
        loop {
            let leader = match hint.take() {
                Some(h) => Some(h),
                None => self.leader_to_ask(local.as_deref(), attempt_no),
            };
            attempt_no += 1;
            let attempt = match leader {
                Some(l) if l == self.inner.id => match &local {
                    Some(g) => self.local_write(g, cmd.clone()).await,
                    None => Err(ForwardError::NotLeader(None)),
                },
                Some(l) => {
                    let req = PeerReq::Forward { group, cmd: cmd.clone() };
                    // A leader that died does not answer: stop waiting for it as soon as the
                    // local replica sees another leader (a retry is safe: ids are idempotent).
                    tokio::select! {
                        answer = self.inner.peers.call(l, &req, FORWARD_TIMEOUT) => match answer {
                            Ok(PeerResp::Forward(r)) => r,
                            Ok(_) => Err(ForwardError::Failed("unexpected answer".into())),
                            Err(e) => Err(ForwardError::Failed(e.to_string())),
                        },
                        () = self.leader_moved(group, l) => Err(ForwardError::NotLeader(None)),
                    }
                }
                None => Err(ForwardError::NotLeader(None)),
            };
            match attempt {
                Ok(resp) => return Ok(resp),
                Err(ForwardError::NotLeader(h)) => {
                    hint = h.filter(|&h| Some(h) != leader);
                    last_error = "no leader".into();
                }
                Err(ForwardError::Failed(e)) => last_error = e,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Unavailable(format!("group {group}: {last_error}")));
            }
            if hint.is_none() {
                self.wait_for_leader_change(group, leader).await;
            }
        }
    }

    /// The node to ask for `group`'s leader on attempt `n`: the leader the local replica knows;
    /// else, in turn, the other members of the local replica's configuration (a replica removed
    /// from its group keeps its last configuration and never hears of a leader again, so waiting
    /// for it to learn one would wait forever); else, in turn, the other registered nodes.
    pub(crate) fn leader_to_ask(&self, local: Option<&Group>, n: usize) -> Option<NodeId> {
        let mut ask: Vec<NodeId> = Vec::new();
        if let Some(g) = local {
            let metrics = g.raft.metrics();
            let m = metrics.borrow();
            if m.current_leader.is_some() {
                return m.current_leader;
            }
            let membership = m.membership_config.membership();
            ask = membership.voter_ids().filter(|&v| v != self.inner.id).collect();
        }
        if ask.is_empty() {
            ask = self.nodes().into_keys().filter(|&v| v != self.inner.id).collect();
        }
        if ask.is_empty() {
            return Some(self.inner.id);
        }
        ask.get(n % ask.len()).copied()
    }

    /// On this node, which should lead `group`: adds learners (each caught up before it
    /// returns), then sets the voters; in the metadata group it also drops the learners that
    /// are no registered node (removed ones).
    async fn local_reconfigure(
        &self,
        group: GroupId,
        g: &Group,
        add: Vec<(NodeId, String)>,
        voters: std::collections::BTreeSet<NodeId>,
    ) -> Result<Resp, ForwardError> {
        let not_leader = |e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardError::NotLeader(f.leader_id),
            other => ForwardError::Failed(other.to_string()),
        };
        let adding: Vec<NodeId> = add.iter().map(|(id, _)| *id).collect();
        for (id, addr) in add {
            if check_peer_addr(&addr).is_ok() {
                self.inner.peers.set_addr(id, addr.clone());
            }
            g.raft.add_learner(id, BasicNode { addr }, true).await.map_err(not_leader)?;
            tracing::info!(group, learner = id, "added a learner; it caught up");
        }
        let current: std::collections::BTreeSet<NodeId> =
            g.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        if current != voters {
            g.raft.change_membership(voters.clone(), false).await.map_err(not_leader)?;
            tracing::info!(group, from = ?current, to = ?voters, "changed the voters");
        }
        if group == META_GROUP {
            // Every registered node reads the registry as a learner; a removed node no longer.
            let registered = self.nodes();
            let gone: std::collections::BTreeSet<NodeId> = g
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .learner_ids()
                .filter(|n| !registered.contains_key(n) && !voters.contains(n) && !adding.contains(n))
                .collect();
            if !gone.is_empty() {
                g.raft
                    .change_membership(ChangeMembers::RemoveNodes(gone.clone()), false)
                    .await
                    .map_err(not_leader)?;
                tracing::info!(group, removed = ?gone, "removed learners that are no registered node");
            }
        }
        Ok(Resp::Done(Ok(())))
    }

    /// Reconfigures `group` on its leader, wherever it is.
    async fn reconfigure(
        &self,
        group: GroupId,
        add: Vec<(NodeId, String)>,
        voters: std::collections::BTreeSet<NodeId>,
    ) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + RECONFIGURE_WAIT;
        let local = self.group(group);
        let mut hint = None;
        let mut n = 0usize;
        loop {
            let leader = match hint.take() {
                Some(h) => Some(h),
                None => self.leader_to_ask(local.as_deref(), n),
            };
            n += 1;
            tracing::debug!(group, ?leader, attempt = n, "reconfigure: asking the leader");
            let attempt = match leader {
                Some(l) if l == self.inner.id => match &local {
                    Some(g) => self.local_reconfigure(group, g, add.clone(), voters.clone()).await,
                    None => Err(ForwardError::NotLeader(None)),
                },
                Some(l) => {
                    let req = PeerReq::Reconfigure { group, add: add.clone(), voters: voters.clone() };
                    match self.inner.peers.call(l, &req, RECONFIGURE_WAIT).await {
                        Ok(PeerResp::Forward(r)) => r,
                        Ok(_) => Err(ForwardError::Failed("unexpected answer".into())),
                        Err(e) => Err(ForwardError::Failed(e.to_string())),
                    }
                }
                None => Err(ForwardError::NotLeader(None)),
            };
            tracing::debug!(group, ?leader, ok = attempt.is_ok(), "reconfigure: answered");
            match attempt {
                Ok(_) => return Ok(()),
                Err(ForwardError::NotLeader(h)) => hint = h.filter(|&h| Some(h) != leader),
                Err(ForwardError::Failed(e)) if tokio::time::Instant::now() >= deadline => {
                    return Err(ClusterError::Unavailable(format!("group {group}: {e}")))
                }
                Err(ForwardError::Failed(_)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Unavailable(format!("group {group}: no leader")));
            }
            if hint.is_none() {
                self.wait_for_leader_change(group, leader).await;
            }
        }
    }

    /// The voters of every shard as the cluster reports them now.
    async fn shard_voters(&self) -> Result<Vec<Vec<NodeId>>, ClusterError> {
        let status = self.cluster_status().await;
        let mut out = Vec::new();
        for shard in status["shards"].as_array().into_iter().flatten() {
            let members: Vec<NodeId> =
                shard["members"].as_array().into_iter().flatten().filter_map(|m| m.as_u64()).collect();
            out.push(members);
        }
        if out.len() != self.inner.config.shards as usize || out.iter().any(Vec::is_empty) {
            return Err(ClusterError::Unavailable("some shard reports no members".into()));
        }
        Ok(out)
    }

    /// Moves shard replicas so that every shard has its replicas on `nodes`, spread evenly:
    /// each shard keeps the replicas it has on `nodes` and gets the rest from the least loaded
    /// nodes (new replicas catch up as learners before they become voters).
    async fn rebalance(&self, nodes: &BTreeMap<NodeId, String>) -> Result<(), ClusterError> {
        let replicas = (self.inner.config.replicas as usize).min(nodes.len());
        let current = self.shard_voters().await?;
        let mut load: BTreeMap<NodeId, usize> = nodes.keys().map(|&n| (n, 0)).collect();
        let mut target: Vec<Vec<NodeId>> = Vec::new();
        for voters in &current {
            let kept: Vec<NodeId> = voters.iter().copied().filter(|v| nodes.contains_key(v)).collect();
            target.push(kept);
        }
        // Trim shards that hold too many, then fill from the least loaded nodes.
        let per_node = (current.len() * replicas).div_ceil(nodes.len().max(1));
        for t in &mut target {
            t.truncate(replicas);
            for n in t.iter() {
                *load.entry(*n).or_default() += 1;
            }
        }
        for t in &mut target {
            // Move replicas off nodes above their share, to make room for the new ones.
            while t.len() == replicas {
                let Some((&over, _)) =
                    t.iter().map(|n| (n, load[n])).filter(|(_, l)| *l > per_node).max_by_key(|(_, l)| *l)
                else {
                    break;
                };
                let Some((&under, _)) =
                    load.iter().filter(|(n, l)| !t.contains(n) && **l < per_node).min_by_key(|(_, l)| **l)
                else {
                    break;
                };
                t.retain(|n| *n != over);
                t.push(under);
                *load.entry(over).or_default() -= 1;
                *load.entry(under).or_default() += 1;
            }
            while t.len() < replicas {
                let Some((&under, _)) = load.iter().filter(|(n, _)| !t.contains(n)).min_by_key(|(_, l)| **l)
                else {
                    break;
                };
                t.push(under);
                *load.entry(under).or_default() += 1;
            }
        }
        // Shards move in parallel, a few at a time: each waits for its learners to catch up
        // and then for two membership entries to commit, about a second apiece on a loaded
        // machine, which one at a time made adding a node to 64 shards take over a minute.
        let mut moves = tokio::task::JoinSet::new();
        let mut first_error = None;
        for (shard, (voters, want)) in current.iter().zip(&target).enumerate() {
            let mut want_sorted = want.clone();
            want_sorted.sort_unstable();
            let mut have = voters.clone();
            have.sort_unstable();
            if have == want_sorted {
                continue;
            }
            let add: Vec<(NodeId, String)> = want
                .iter()
                .filter(|n| !voters.contains(n))
                .filter_map(|n| nodes.get(n).map(|a| (*n, a.clone())))
                .collect();
            while moves.len() >= MAX_PARALLEL_SHARD_MOVES {
                if let Some(Ok(Err(e))) = moves.join_next().await {
                    first_error.get_or_insert(e);
                }
            }
            let me = self.clone();
            let voters: std::collections::BTreeSet<NodeId> = want.iter().copied().collect();
            moves.spawn(async move { me.reconfigure(shard_group(shard as u32), add, voters).await });
        }
        while let Some(done) = moves.join_next().await {
            match done {
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(ClusterError::Unavailable(format!("a shard move failed: {e}")));
                }
                Ok(Ok(())) => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Adds node `id` (started with `--join`, listening for peers on `peer`) and moves shard
    /// replicas to it until replicas are spread evenly.
    pub async fn add_node(&self, id: NodeId, peer: String) -> Result<(), ClusterError> {
        check_peer_addr(&peer).map_err(ClusterError::Rejected)?;
        // The metadata group: a learner (it reads the registry), a voter only while the
        // registry has fewer than its replicas.
        let mut all: std::collections::BTreeSet<NodeId> = self.nodes().into_keys().collect();
        all.insert(id);
        let voters = crate::meta::meta_voters(&self.meta_voters(), &all, self.inner.config.replicas as usize);
        self.reconfigure(META_GROUP, vec![(id, peer.clone())], voters).await?;
        let info = NodeInfo { id, peer: peer.clone(), quic: String::new(), http: None };
        if !self.nodes().contains_key(&id) {
            Self::done(self.propose(META_GROUP, Cmd::Meta(MetaCmd::RegisterNode(info))).await?)?;
        }
        let mut nodes: BTreeMap<NodeId, String> =
            self.nodes().into_iter().map(|(n, i)| (n, i.peer)).collect();
        nodes.insert(id, peer);
        self.rebalance(&nodes).await
    }

    /// The metadata group's voters as the local replica knows them.
    fn meta_voters(&self) -> std::collections::BTreeSet<NodeId> {
        match self.group(META_GROUP) {
            Some(g) => g.raft.metrics().borrow().membership_config.membership().voter_ids().collect(),
            None => self.inner.config.initial.keys().copied().collect(),
        }
    }

    /// Drains node `id`: its replicas move to the other nodes (learner catch-up, then
    /// promotion), then it leaves the registry. Returns when it holds no replica.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ClusterError> {
        let mut nodes: BTreeMap<NodeId, String> =
            self.nodes().into_iter().map(|(n, i)| (n, i.peer)).collect();
        if nodes.remove(&id).is_none() {
            return Err(ClusterError::Rejected(format!("node {id} is not in the cluster")));
        }
        if nodes.is_empty() {
            return Err(ClusterError::Rejected("the last node cannot be removed".into()));
        }
        self.rebalance(&nodes).await?;
        if self.shard_voters().await?.iter().any(|v| v.contains(&id)) {
            return Err(ClusterError::Unavailable(format!("node {id} still holds replicas")));
        }
        Self::done(self.propose(META_GROUP, Cmd::Meta(MetaCmd::RemoveNode(id))).await?)?;
        // The registry itself: another node takes the leaving one's vote, and the leaving one
        // stops being a member at all (its leader drops learners that are no registered node).
        let remaining: std::collections::BTreeSet<NodeId> = nodes.keys().copied().collect();
        let voters =
            crate::meta::meta_voters(&self.meta_voters(), &remaining, self.inner.config.replicas as usize);
        let current = self.meta_voters();
        let add: Vec<(NodeId, String)> = voters
            .iter()
            .filter(|n| !current.contains(n))
            .filter_map(|n| nodes.get(n).map(|a| (*n, a.clone())))
            .collect();
        self.reconfigure(META_GROUP, add, voters).await
    }

    /// Resolves when the local replica of `group` knows a leader other than `from` (never, when
    /// this node holds no replica of it).
    async fn leader_moved(&self, group: GroupId, from: NodeId) {
        let Some(g) = self.group(group) else { return std::future::pending().await };
        let mut metrics = g.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            if leader.is_some_and(|l| l != from) {
                return;
            }
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Waits (briefly) until the local replica knows a leader other than `old`.
    pub(crate) async fn wait_for_leader_change(&self, group: GroupId, old: Option<NodeId>) {
        let pause = Duration::from_millis(HEARTBEAT_MS);
        match self.group(group) {
            Some(g) => {
                let mut metrics = g.raft.metrics();
                let _ = tokio::time::timeout(pause, async {
                    loop {
                        if metrics.changed().await.is_err() {
                            return;
                        }
                        let leader = metrics.borrow().current_leader;
                        if leader.is_some() && leader != old {
                            return;
                        }
                    }
                })
                .await;
            }
            None => tokio::time::sleep(pause).await,
        }
    }

    /// Submits transactions; each goes to its partner's shard. One result per input, in order,
    /// once every shard involved committed its part on a majority (synced logs).
    pub async fn submit(&self, txs: Vec<TxInput>) -> Result<Vec<TxResult>, ClusterError> {
        if txs.len() > MAX_SUBMIT_TXS {
            return Err(ClusterError::Rejected(format!("at most {MAX_SUBMIT_TXS} transactions at once")));
        }
        let _in_flight = self.inner.stats.admit(txs.len());
        let shards = self.inner.config.shards;
        let mut by_shard: BTreeMap<u32, (Vec<usize>, Vec<TxInput>)> = BTreeMap::new();
        for (pos, tx) in txs.into_iter().enumerate() {
            let shard = shard_of(tx.partner.as_deref().unwrap_or(""), shards);
            let slot = by_shard.entry(shard).or_default();
            slot.0.push(pos);
            slot.1.push(tx);
        }
        let total: usize = by_shard.values().map(|(p, _)| p.len()).sum();
        let mut waits = Vec::with_capacity(by_shard.len());
        for (shard, (positions, txs)) in by_shard {
            let (reply, wait) = oneshot::channel();
            let sender = self
                .inner
                .batchers
                .get(shard as usize)
                .ok_or_else(|| ClusterError::Storage(format!("no batcher for shard {shard}")))?;
            if sender.send((txs, reply)).is_err() {
                return Err(ClusterError::Unavailable("the node is shutting down".into()));
            }
            waits.push((positions, wait));
        }
        let mut out: Vec<Option<TxResult>> = vec![None; total];
        let mut first_error = None;
        for (positions, wait) in waits {
            match wait.await {
                Ok(Ok(results)) => {
                    for (pos, result) in positions.into_iter().zip(results) {
                        out[pos] = Some(result);
                    }
                }
                Ok(Err(e)) => first_error = first_error.or(Some(ClusterError::Unavailable(e))),
                Err(_) => {
                    first_error =
                        first_error.or(Some(ClusterError::Unavailable("the node is shutting down".into())))
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        out.into_iter()
            .map(|r| r.ok_or_else(|| ClusterError::Storage("a transaction got no result".into())))
            .collect()
    }

    fn done(resp: Resp) -> Result<(), ClusterError> {
        match resp {
            Resp::Done(Ok(())) => Ok(()),
            Resp::Done(Err(reason)) => Err(ClusterError::Rejected(reason)),
            Resp::Txs(_) => Err(ClusterError::Storage("unexpected answer".into())),
        }
    }

    /// Publishes FX rates to every shard (each orders them against its own transactions).
    pub async fn publish_rates(&self, rates: Vec<FxRate>) -> Result<(), ClusterError> {
        let rates = Arc::new(rates);
        let mut tasks = tokio::task::JoinSet::new();
        for shard in 0..self.inner.config.shards {
            let me = self.clone();
            let cmd = Cmd::Rates(Arc::clone(&rates));
            tasks.spawn(async move { me.propose(shard_group(shard), cmd).await.and_then(Self::done) });
        }
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined.map_err(|e| ClusterError::Storage(e.to_string())).and_then(|r| r);
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }

    pub async fn register_partner(&self, partner: Partner) -> Result<(), ClusterError> {
        let group = shard_group(shard_of(&partner.id, self.inner.config.shards));
        Self::done(self.propose(group, Cmd::Register(Arc::new(partner))).await?)
    }

    pub async fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> Result<(), ClusterError> {
        let group = shard_group(shard_of(partner, self.inner.config.shards));
        Self::done(self.propose(group, Cmd::AddVersion(Arc::new((partner.to_string(), version)))).await?)
    }

    /// This node's view of its groups.
    pub fn local_status(&self) -> NodeStatus {
        let mut groups = Vec::new();
        for (group, g) in self.all_groups() {
            let metrics = g.raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            let learners: Vec<NodeId> = membership.learner_ids().collect();
            let (applied, hash) = {
                let sm = g.sm.lock();
                let hash = match &sm.kind {
                    SmKind::Shard(shard) => Some(shard.state_hash()),
                    SmKind::Meta(_) => None,
                };
                (sm.applied.map(|l| l.index), hash)
            };
            groups.push(GroupStatus {
                group,
                leader: metrics.current_leader,
                voters,
                learners,
                last_log_index: metrics.last_log_index,
                applied_index: applied,
                state_hash: hash,
                snapshot_index: metrics.snapshot.map(|l| l.index),
                purged_index: metrics.purged.map(|l| l.index),
                snapshots_installed: g.sm.snapshots_installed(),
            });
        }
        NodeStatus { info: self.info(), groups }
    }

    /// Whether the metadata group, as this node has applied it, says `remove-node` removed it.
    fn removed(&self) -> bool {
        let Some(g) = self.group(META_GROUP) else { return false };
        let removed = match &g.sm.lock().kind {
            SmKind::Meta(meta) => meta.is_removed(self.inner.id),
            SmKind::Shard(_) => false,
        };
        removed
    }

    /// The registered nodes (from the metadata group as this node has applied it).
    pub fn nodes(&self) -> BTreeMap<NodeId, NodeInfo> {
        let mut nodes: BTreeMap<NodeId, NodeInfo> = BTreeMap::new();
        for (&id, peer) in &self.inner.config.initial {
            nodes.insert(id, NodeInfo { id, peer: peer.clone(), quic: String::new(), http: None });
        }
        if let Some(g) = self.group(META_GROUP) {
            if let SmKind::Meta(meta) = &g.sm.lock().kind {
                nodes.retain(|id, _| !meta.is_removed(*id));
                for (id, info) in &meta.nodes {
                    nodes.insert(*id, info.clone());
                }
            }
        }
        nodes
    }

    /// The cluster as every reachable node reports it, in the `settle cluster status --json`
    /// shape of `docs/cluster-interface.md`.
    pub async fn cluster_status(&self) -> serde_json::Value {
        let nodes = self.nodes();
        let mut reports: BTreeMap<NodeId, Option<NodeStatus>> = BTreeMap::new();
        for &id in nodes.keys() {
            let report = if id == self.inner.id {
                Some(self.local_status())
            } else {
                match self.inner.peers.call(id, &PeerReq::Status, STATUS_TIMEOUT).await {
                    Ok(PeerResp::Status(s)) => Some(*s),
                    _ => None,
                }
            };
            reports.insert(id, report);
        }
        let node_list: Vec<serde_json::Value> = nodes
            .values()
            .map(|n| {
                serde_json::json!({"id": n.id, "peer": n.peer, "quic": n.quic, "http": n.http,
                    "up": reports.get(&n.id).is_some_and(Option::is_some)})
            })
            .collect();
        let mut shards = Vec::new();
        for shard in 0..self.inner.config.shards {
            let mut view = group_json(&reports, shard_group(shard));
            view["shard"] = serde_json::json!(shard);
            shards.push(view);
        }
        let registry = group_json(&reports, META_GROUP);
        serde_json::json!({"nodes": node_list, "shards": shards, "registry": registry})
    }

    /// Hands every leadership this node holds to a caught-up follower before the node stops, so
    /// that its groups do not wait out an election timeout (openraft 0.9 has no leader
    /// transfer). From now on its leader replicas refuse new proposals (callers retry at the
    /// next leader) and its replicas do not campaign. For each group it leads: wait (at most
    /// [`HANDOVER_DRAIN`]) until what it proposed is applied, then ask the follower whose log
    /// matches furthest to campaign. That follower's log is then as long as the leader's, and
    /// the leader's own vote has no lease of its own to keep (its heartbeats refresh only the
    /// followers'), so it grants the vote and steps down: with 3 replicas the successor wins in
    /// one round trip. Returns how many groups this node led and how many of them moved within
    /// [`HANDOVER_TIMEOUT`].
    pub async fn hand_over_leaderships(&self) -> (usize, usize) {
        self.inner.leaving.store(true, Ordering::Release);
        let groups = self.all_groups();
        for (_, g) in &groups {
            g.raft.runtime_config().elect(false);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (group, g) in groups {
            if g.raft.metrics().borrow().state != ServerState::Leader {
                continue;
            }
            let me = self.clone();
            tasks.spawn(async move { me.hand_over(group, &g).await });
        }
        let led = tasks.len();
        let mut moved = 0;
        let _ = tokio::time::timeout(HANDOVER_TIMEOUT, async {
            while let Some(done) = tasks.join_next().await {
                if matches!(done, Ok(true)) {
                    moved += 1;
                }
            }
        })
        .await;
        (led, moved)
    }

    /// Moves the leadership of one group away from this node (see `hand_over_leaderships`).
    async fn hand_over(&self, group: GroupId, g: &Group) -> bool {
        let me = self.inner.id;
        let mut metrics = g.raft.metrics();
        let drained = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
            m.current_leader != Some(me) || m.last_applied.map(|l| l.index) >= m.last_log_index
        };
        let _ = tokio::time::timeout(HANDOVER_DRAIN, metrics.wait_for(drained)).await;
        let deadline = tokio::time::Instant::now() + HANDOVER_TIMEOUT;
        loop {
            let (successor, leader) = {
                let m = metrics.borrow();
                // Without a majority that answers (the last members stopping) no one can be
                // elected: stop at once rather than wait out the time limit.
                if m.millis_since_quorum_ack.is_none_or(|ms| ms > HANDOVER_QUORUM_SILENCE_MS) {
                    return false;
                }
                let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
                let matched = |n: &NodeId| {
                    m.replication.as_ref().and_then(|r| r.get(n).cloned().flatten()).map(|l| l.index)
                };
                let successor =
                    voters.iter().filter(|&&n| n != me).max_by_key(|&n| (matched(n), *n)).copied();
                (successor, m.current_leader)
            };
            if leader != Some(me) {
                return leader.is_some();
            }
            let Some(successor) = successor else { return false };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let req = PeerReq::Campaign { group, from: me };
            if let Ok(PeerResp::Campaign(true)) = self.inner.peers.call(successor, &req, deadline - now).await
            {
                return true;
            }
            // Refused (an older node, a lease still held): look again, maybe at another follower.
            let _ = tokio::time::timeout(CAMPAIGN_RETRY, metrics.changed()).await;
        }
    }

    /// On a follower asked by the leaving leader `from`: campaign until some other node leads
    /// the group (usually this one, after one round), for at most [`HANDOVER_TIMEOUT`].
    async fn campaign(&self, g: &Group, from: NodeId) -> bool {
        let deadline = tokio::time::Instant::now() + HANDOVER_TIMEOUT;
        let mut metrics = g.raft.metrics();
        loop {
            let (leader, state) = {
                let m = metrics.borrow();
                (m.current_leader, m.state)
            };
            if leader.is_some_and(|l| l != from) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline || self.inner.leaving.load(Ordering::Acquire) {
                return false;
            }
            if state != ServerState::Leader && g.raft.trigger().elect().await.is_err() {
                return false;
            }
            let moved =
                |m: &openraft::RaftMetrics<NodeId, BasicNode>| m.current_leader.is_some_and(|l| l != from);
            let _ = tokio::time::timeout(CAMPAIGN_RETRY, metrics.wait_for(moved)).await;
        }
    }

    /// This replica refused a candidate of `candidate_term` whose log is behind its own. openraft
    /// 0.9 has no pre-vote: when the first replica to time out after a leader died is one that
    /// just restarted and is behind (chaos: a kill soon after another node came back), every
    /// up-to-date replica refuses it and then waits out its own election timeout, and may then
    /// be refused by that candidate's vote for itself in the same term: a failover of 3 to 4 s
    /// instead of 1 to 2. If this replica has heard no leader for longer than any lease
    /// ([`OTHER_ELECTION_MS`] maximum), the leader is gone for it too: campaign at once, in a term
    /// above the candidate's (one `elect` per term to pass; bounded).
    fn campaign_when_more_current(&self, group: GroupId, g: &Arc<Group>, candidate_term: u64) {
        /// Most terms skipped at once (a candidate far ahead is not one that just timed out).
        const MAX_ROUNDS: u64 = 3;
        if self.inner.leaving.load(Ordering::Acquire) || !self.inner.may_campaign.load(Ordering::Acquire) {
            return;
        }
        let lease = Duration::from_millis(OTHER_ELECTION_MS.1);
        if self.inner.stats.since_leader_append(group).is_some_and(|since| since <= lease) {
            return;
        }
        let metrics = g.raft.metrics();
        let rounds = {
            let m = metrics.borrow();
            let voter = m.membership_config.membership().voter_ids().any(|v| v == self.inner.id);
            if m.state != ServerState::Follower || !voter {
                return;
            }
            candidate_term.saturating_sub(m.current_term).saturating_add(1).min(MAX_ROUNDS)
        };
        let g = Arc::clone(g);
        tokio::spawn(async move {
            for _ in 0..rounds {
                if g.raft.trigger().elect().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Stops every group, closes the peer endpoint, and stops the log writer, so that the
    /// database is closed once the last handle is dropped (before the process exits).
    pub async fn shutdown(&self) {
        self.inner.peers.close();
        for (_, g) in self.all_groups() {
            let _ = g.raft.shutdown().await;
        }
        self.inner.groups.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.inner.opener.writer.stop().await;
    }
}

/// Merges the submissions queued for one shard into one entry, with at most
/// [`MAX_PROPOSALS_IN_FLIGHT`] entries of the shard proposed and not yet answered.
async fn run_batcher(inner: Weak<Inner>, shard: u32, mut rx: mpsc::UnboundedReceiver<ShardWork>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_PROPOSALS_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { return };
        let mut n = first.0.len();
        let mut works = vec![first];
        while n < MAX_ENTRY_TXS {
            match rx.try_recv() {
                Ok(work) => {
                    n += work.0.len();
                    works.push(work);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            for (_, reply) in works {
                let _ = reply.send(Err("the node is shutting down".into()));
            }
            return;
        };
        let me = ClusterHandle { inner };
        tokio::spawn(async move {
            let mut txs = Vec::with_capacity(n);
            let mut replies = Vec::with_capacity(works.len());
            for (part, reply) in works {
                replies.push((part.len(), reply));
                txs.extend(part);
            }
            let cmd = Cmd::Txs(TxBatch { received_at: Instant(0), txs: Arc::new(TxList::new(txs)) });
            let answer = match me.propose(shard_group(shard), cmd).await {
                Ok(Resp::Txs(results)) if results.len() == n => Ok(results),
                Ok(other) => Err(format!("shard {shard} answered {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            drop(permit);
            match answer {
                Ok(results) => {
                    let mut results = results.into_iter();
                    for (len, reply) in replies {
                        let _ = reply.send(Ok(results.by_ref().take(len).collect()));
                    }
                }
                Err(e) => {
                    for (_, reply) in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

impl PeerService for ClusterHandle {
    async fn handle(&self, req: PeerReq) -> PeerResp {
        let missing =
            |group: GroupId| PeerResp::Refused(format!("node {} holds no group {group}", self.inner.id));
        match req {
            PeerReq::Append { group, req } => match self.ensure_group(group).await {
                Ok(g) => {
                    let leader_commit = req.leader_commit.map(|l| l.index);
                    let resp = g.raft.append_entries(req).await;
                    if matches!(
                        resp,
                        Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
                    ) {
                        self.inner.stats.leader_append(group, leader_commit);
                    }
                    PeerResp::Append(resp)
                }
                Err(e) => PeerResp::Refused(e),
            },
            PeerReq::Vote { group, req } => match self.group(group) {
                Some(g) => {
                    let (term, last_log_id) = (req.vote.leader_id().term, req.last_log_id);
                    let resp = g.raft.vote(req).await;
                    if let Ok(r) = &resp {
                        if !r.vote_granted && r.last_log_id > last_log_id {
                            self.campaign_when_more_current(group, &g, term);
                        }
                    }
                    PeerResp::Vote(resp)
                }
                None => missing(group),
            },
            PeerReq::Snapshot { group, req } => match self.ensure_group(group).await {
                Ok(g) => PeerResp::Snapshot(g.raft.install_snapshot(req).await),
                Err(e) => PeerResp::Refused(e),
            },
            PeerReq::Config => PeerResp::Config(self.inner.config.clone()),
            PeerReq::Reconfigure { group, add, voters } => match self.group(group) {
                Some(g) => PeerResp::Forward(self.local_reconfigure(group, &g, add, voters).await),
                None => PeerResp::Forward(Err(ForwardError::NotLeader(None))),
            },
            PeerReq::Forward { group, cmd } => match self.group(group) {
                Some(g) => PeerResp::Forward(self.local_write(&g, cmd).await),
                None => PeerResp::Forward(Err(ForwardError::NotLeader(None))),
            },
            PeerReq::Status => PeerResp::Status(Box::new(self.local_status())),
            PeerReq::Membership { group } => {
                PeerResp::Membership(self.group(group).map(|g| membership_view(&g)))
            }
            PeerReq::Campaign { group, from } => match self.group(group) {
                Some(g) => PeerResp::Campaign(self.campaign(&g, from).await),
                None => missing(group),
            },
            PeerReq::Read { group, read } => match self.group(group) {
                Some(g) => PeerResp::Read(self.local_read(&g, read).await),
                None => PeerResp::Read(Err(ForwardError::NotLeader(None))),
            },
        }
    }
}
