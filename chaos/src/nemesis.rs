//! Injects the scheduled faults into the running nodes, one at a time, and records what was done
//! (with the node a role such as "leader of shard k" resolved to) and when.

use crate::cluster::{self, NodeProc, Nodes, Role, STOP_TIMEOUT};
use crate::load::{self, Endpoint, Load};
use crate::schedule::{self, Action, Fault, NodeId, Target};
use anyhow::{anyhow, bail};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time a restarted node has to be reported up before a rolling restart moves on.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

fn describe(action: &Action) -> String {
    let text = serde_json::to_string(action).unwrap_or_default();
    format!("{} {text}", action.kind().name())
}

/// What happened to one scheduled fault.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// When it was injected and when it was over, from the start of the traffic.
    pub at_ms: u64,
    pub end_ms: u64,
    #[serde(flatten)]
    pub action: Action,
    /// The node a role target was resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// Why the fault could not be injected as scheduled (not an invariant violation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The longest time a probe partner accepted no write, of the gaps that began while this
    /// fault was in force (from its injection until the next fault), filled in after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailability_ms: Option<u64>,
}

#[derive(Debug)]
pub struct Nemesis {
    pub nodes: Nodes,
    pub load: Arc<Load>,
    pub pem: Vec<u8>,
    /// The fault in force, for the progress line.
    pub current: Arc<Mutex<String>>,
    pub records: Vec<FaultRecord>,
    /// Invariant problems seen while injecting (a node that did not come back).
    pub problems: Vec<String>,
    /// Observations that are not violations (a node that needed SIGKILL after SIGTERM).
    pub notes: Vec<String>,
    /// Self-test: a killed node loses its data (`--inject-bug lose-data`).
    pub lose_data: bool,
}

fn set(current: &Mutex<String>, text: String) {
    *current.lock().unwrap_or_else(|e| e.into_inner()) = text;
}

impl Nemesis {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.load.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs the schedule; faults whose time comes after `until` are not injected.
    pub async fn run(&mut self, faults: &[Fault], until: Duration) {
        for fault in faults {
            let at = Duration::from_millis(fault.at_ms);
            if at >= until || self.load.started.elapsed() >= until {
                break;
            }
            // A fault that ran late (a slow restart) still leaves the system the shortest quiet
            // time before the next one, so faults never pile up back to back.
            let quiet_from = self.records.last().map_or(Duration::ZERO, |r| {
                Duration::from_millis(r.end_ms.saturating_add(schedule::GAP_MIN_MS))
            });
            let start = self.load.started + at.max(quiet_from);
            tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
            if self.load.started.elapsed() >= until {
                break;
            }
            let at_ms = self.elapsed_ms();
            set(&self.current, describe(&fault.action));
            let (node, error) = match self.inject(&fault.action).await {
                Ok(node) => (node, None),
                Err(e) => (None, Some(format!("{e:#}"))),
            };
            set(&self.current, String::new());
            self.records.push(FaultRecord {
                at_ms,
                end_ms: self.elapsed_ms(),
                action: fault.action.clone(),
                node,
                error,
                max_unavailability_ms: None,
            });
        }
    }

    async fn resolve(&mut self, target: &Target) -> anyhow::Result<NodeId> {
        match target {
            Target::Node(id) => Ok(*id),
            Target::LeaderOf(shard) => {
                let status = self.nodes.status().await?;
                let n = status.shards.len();
                if n == 0 {
                    bail!("the status lists no shard");
                }
                // The drawn shard, or the next one that has a leader now (one may be electing).
                let first = *shard as usize % n;
                (0..n)
                    .find_map(|k| status.shards[(first + k) % n].leader)
                    .ok_or_else(|| anyhow!("no shard has a leader now"))
            }
        }
    }

    fn proc(&mut self, id: NodeId) -> anyhow::Result<&mut NodeProc> {
        self.nodes.procs.get_mut(&id).ok_or_else(|| anyhow!("node {id} is not in the cluster"))
    }

    async fn restart(&mut self, id: NodeId) {
        let shared = self.nodes.shared.clone();
        let result = match self.nodes.procs.get_mut(&id) {
            Some(p) => p.start(&shared).await,
            None => return,
        };
        if let Err(e) = result {
            self.problems.push(format!("node {id} did not come back: {e:#}"));
        }
    }

    /// Blocks every (from, to) direction, waits, and lets everything through again.
    async fn partition(&mut self, directions: &[(NodeId, NodeId)], for_ms: u64) -> anyhow::Result<()> {
        let net = self.nodes.net.as_mut().ok_or_else(|| anyhow!("no network namespaces"))?;
        let mut result = Ok(());
        for (from, to) in directions {
            if let Err(e) = net.block(*from, *to) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            tokio::time::sleep(Duration::from_millis(for_ms)).await;
        }
        if let Some(net) = self.nodes.net.as_mut() {
            net.heal()?;
        }
        result
    }

    fn members(&self) -> Vec<NodeId> {
        self.nodes.procs.keys().copied().collect()
    }

    async fn inject(&mut self, action: &Action) -> anyhow::Result<Option<NodeId>> {
        match action {
            Action::Kill { target, down_ms } => {
                let id = self.resolve(target).await?;
                self.proc(id)?.kill();
                if self.lose_data {
                    self.proc(id)?.wipe_data()?;
                }
                tokio::time::sleep(Duration::from_millis(*down_ms)).await;
                self.restart(id).await;
                Ok(Some(id))
            }
            Action::Pause { target, for_ms } => {
                let id = self.resolve(target).await?;
                self.proc(id)?.pause()?;
                tokio::time::sleep(Duration::from_millis(*for_ms)).await;
                self.proc(id)?.resume()?;
                Ok(Some(id))
            }
            Action::IsolateLeader { shard, for_ms } => {
                let leader = self.resolve(&Target::LeaderOf(*shard)).await?;
                let directions: Vec<_> = self
                    .members()
                    .into_iter()
                    .filter(|m| *m != leader)
                    .flat_map(|m| [(leader, m), (m, leader)])
                    .collect();
                self.partition(&directions, *for_ms).await?;
                Ok(Some(leader))
            }
            Action::Split { minority, majority, for_ms } => {
                let directions: Vec<_> = minority
                    .iter()
                    .flat_map(|a| majority.iter().flat_map(move |b| [(*a, *b), (*b, *a)]))
                    .collect();
                self.partition(&directions, *for_ms).await?;
                Ok(None)
            }
            Action::OneWay { from, to, for_ms } => {
                self.partition(&[(*from, *to)], *for_ms).await?;
                Ok(None)
            }
            Action::AddNode { id } => {
                self.add_node(*id).await?;
                Ok(Some(*id))
            }
            Action::RemoveNode { id } => {
                self.remove_node(*id).await?;
                Ok(Some(*id))
            }
            Action::RollingRestart { nodes } => {
                for id in nodes {
                    let stopped = match self.nodes.procs.get_mut(id) {
                        Some(p) => p.stop().await,
                        None => continue,
                    };
                    match stopped {
                        Ok(true) => {}
                        Ok(false) => self.notes.push(format!(
                            "rolling restart: node {id} did not stop within {STOP_TIMEOUT:?} of SIGTERM (killed)"
                        )),
                        Err(e) => self.problems.push(format!("node {id} did not stop: {e:#}")),
                    }
                    self.restart(*id).await;
                    if self.nodes.is_cluster() {
                        if let Err(e) = self.nodes.wait_up(*id, REJOIN_TIMEOUT).await {
                            self.problems.push(format!("{e:#}"));
                        }
                    }
                }
                Ok(None)
            }
        }
    }

    fn running_peer(
        &mut self,
        except: NodeId,
    ) -> anyhow::Result<(std::net::SocketAddr, std::net::SocketAddr)> {
        self.nodes
            .procs
            .values_mut()
            .filter(|p| p.id != except)
            .find_map(|p| (p.is_running() && !p.is_paused()).then_some((p.addrs.quic, p.addrs.peer)))
            .ok_or_else(|| anyhow!("no running member to ask"))
    }

    async fn add_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        if self.nodes.procs.contains_key(&id) {
            bail!("node {id} is already a member");
        }
        let (target, peer) = self.running_peer(id)?;
        if let Some(net) = self.nodes.net.as_mut() {
            net.add_node(id)?;
        }
        let mut proc =
            NodeProc::new(id, Role::Join(peer), &self.nodes.shared.workdir, self.nodes.net.as_ref())?;
        let shared = self.nodes.shared.clone();
        proc.start(&shared).await?;
        let addrs = proc.addrs;
        self.nodes.procs.insert(id, proc);
        cluster::add_node(&shared, target, id, addrs.peer).await?;
        let endpoint = Arc::new(load::endpoint(id, addrs.quic, &self.pem, &shared.api_key)?);
        let mut list = self.load.endpoints();
        list.push(endpoint);
        self.load.set_endpoints(list);
        Ok(())
    }

    async fn remove_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        if !self.nodes.procs.contains_key(&id) {
            bail!("node {id} is not a member");
        }
        let (target, _) = self.running_peer(id)?;
        let shared = self.nodes.shared.clone();
        cluster::remove_node(&shared, target, id).await?;
        // The node holds no replica any more: clients stop using it before it goes away.
        let list: Vec<Arc<Endpoint>> = self.load.endpoints().into_iter().filter(|e| e.node != id).collect();
        self.load.set_endpoints(list);
        if let Some(mut proc) = self.nodes.procs.remove(&id) {
            if let Err(e) = proc.stop().await {
                self.problems.push(format!("removed node {id} did not stop: {e:#}"));
            }
        }
        Ok(())
    }
}
