//! The nodes under test: `settle node` processes started, signalled and restarted by the harness,
//! each in its own network namespace when possible, and the `settle cluster` operator commands of
//! `docs/cluster-interface.md`.

use crate::net::Network;
use crate::schedule::NodeId;
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

/// Time a node has to print its ready line after a start (a restart replays its log first).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Time a node has to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Time one `settle cluster status` may take.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Time `settle cluster add-node` may take.
pub const ADD_NODE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time `settle cluster remove-node` (which drains the node first) may take.
pub const REMOVE_NODE_TIMEOUT: Duration = Duration::from_secs(180);
/// Ports inside a node's own namespace (each node has its own address there).
const NETNS_QUIC_PORT: u16 = 4433;
const NETNS_PEER_PORT: u16 = 5433;
const NETNS_HTTP_PORT: u16 = 8081;
/// Shards and replicas asked for at bootstrap (the interface's defaults).
pub const SHARDS: u32 = 64;
pub const REPLICAS: u32 = 3;

/// What every node of the run shares: the binary, the TLS material and the API key.
#[derive(Clone, Debug)]
pub struct Shared {
    pub settle: PathBuf,
    pub workdir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub api_key: String,
    pub api_key_file: PathBuf,
}

impl Shared {
    /// Writes a self-signed certificate valid for `localhost` and every node address, and the
    /// run's API key, under `workdir`.
    pub fn create(settle: PathBuf, workdir: &Path, seed: u64, ips: &[IpAddr]) -> anyhow::Result<Shared> {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(ips.iter().map(ToString::to_string));
        let certified = rcgen::generate_simple_self_signed(names).context("cannot make a certificate")?;
        let cert = workdir.join("cert.pem");
        let key = workdir.join("key.pem");
        std::fs::write(&cert, certified.cert.pem())?;
        std::fs::write(&key, certified.key_pair.serialize_pem())?;
        let api_key = format!("chaos-{seed:016x}-{:08x}", std::process::id());
        let api_key_file = workdir.join("api-key");
        std::fs::write(&api_key_file, &api_key)?;
        Ok(Shared { settle, workdir: workdir.to_path_buf(), cert, key, api_key, api_key_file })
    }
}

/// How a node's first start joins the cluster (later starts repeat it; the interface ignores it
/// then).
#[derive(Clone, Debug)]
pub enum Role {
    Standalone,
    Bootstrap(String),
    Join(SocketAddr),
}

#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub quic: SocketAddr,
    pub peer: SocketAddr,
    pub http: SocketAddr,
}

#[derive(Debug)]
enum Event {
    Ready,
    Exited,
}

/// One node process (or none, while it is down).
#[derive(Debug)]
pub struct NodeProc {
    pub id: NodeId,
    pub addrs: Addrs,
    pub role: Role,
    data: PathBuf,
    log: PathBuf,
    netns: Option<String>,
    child: Option<Child>,
    paused: bool,
    events: Option<mpsc::UnboundedReceiver<Event>>,
}

fn free_port(ip: IpAddr, tcp: bool) -> anyhow::Result<u16> {
    let addr = SocketAddr::new(ip, 0);
    let port = if tcp {
        std::net::TcpListener::bind(addr)?.local_addr()?.port()
    } else {
        std::net::UdpSocket::bind(addr)?.local_addr()?.port()
    };
    Ok(port)
}

/// Sends a signal by name (`STOP`, `CONT`, `TERM`) with kill(1): the workspace forbids unsafe
/// code, so no libc::kill.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

impl NodeProc {
    /// A node on the loopback (its own 127.0.0.x address and free ports) or in a namespace.
    pub fn new(id: NodeId, role: Role, workdir: &Path, net: Option<&Network>) -> anyhow::Result<NodeProc> {
        let (addrs, netns) = match net {
            Some(net) => {
                let ip = IpAddr::V4(net.node_ip(id));
                let ns = net.namespace(id).ok_or_else(|| anyhow!("node {id} has no namespace"))?;
                (
                    Addrs {
                        quic: SocketAddr::new(ip, NETNS_QUIC_PORT),
                        peer: SocketAddr::new(ip, NETNS_PEER_PORT),
                        http: SocketAddr::new(ip, NETNS_HTTP_PORT),
                    },
                    Some(ns.to_string()),
                )
            }
            None => {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(id + 1).unwrap_or(254)));
                (
                    Addrs {
                        quic: SocketAddr::new(ip, free_port(ip, false)?),
                        peer: SocketAddr::new(ip, free_port(ip, false)?),
                        http: SocketAddr::new(ip, free_port(ip, true)?),
                    },
                    None,
                )
            }
        };
        Ok(NodeProc {
            id,
            addrs,
            role,
            data: workdir.join(format!("node{id}")),
            log: workdir.join(format!("node{id}.log")),
            netns,
            child: None,
            paused: false,
            events: None,
        })
    }

    fn command(&self, shared: &Shared) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                // `ip netns exec` execs the binary in place, so the child's pid is the node's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&shared.settle);
                c
            }
            None => Command::new(&shared.settle),
        };
        cmd.arg("node");
        if !matches!(self.role, Role::Standalone) {
            cmd.arg("--id").arg(self.id.to_string());
        }
        cmd.arg("--data").arg(&self.data).arg("--listen").arg(self.addrs.quic.to_string());
        cmd.arg("--cert").arg(&shared.cert).arg("--key").arg(&shared.key);
        cmd.arg("--api-key-file").arg(&shared.api_key_file);
        match &self.role {
            Role::Standalone => {}
            Role::Bootstrap(list) => {
                cmd.arg("--peer-listen").arg(self.addrs.peer.to_string());
                cmd.arg("--http").arg(self.addrs.http.to_string());
                cmd.arg("--bootstrap").arg(list);
                cmd.arg("--shards").arg(SHARDS.to_string()).arg("--replicas").arg(REPLICAS.to_string());
            }
            Role::Join(peer) => {
                cmd.arg("--peer-listen").arg(self.addrs.peer.to_string());
                cmd.arg("--http").arg(self.addrs.http.to_string());
                cmd.arg("--join").arg(peer.to_string());
            }
        }
        cmd
    }

    /// Starts the process and waits for its ready line.
    pub async fn start(&mut self, shared: &Shared) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut child = self
            .command(shared)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", shared.settle.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout of node {}", self.id))?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"ready\"") {
                    let _ = tx.send(Event::Ready);
                }
            }
            let _ = tx.send(Event::Exited);
        });
        self.child = Some(child);
        self.paused = false;
        self.events = Some(rx);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let id = self.id;
        let Some(events) = self.events.as_mut() else { bail!("node {id} is not started") };
        match tokio::time::timeout(READY_TIMEOUT, events.recv()).await {
            Ok(Some(Event::Ready)) => Ok(()),
            Ok(Some(Event::Exited)) | Ok(None) => {
                self.reap();
                bail!("node {id} exited before it was ready (see {})", self.log.display())
            }
            Err(_) => {
                self.kill();
                bail!("node {id} was not ready within {READY_TIMEOUT:?} (see {})", self.log.display())
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.reap();
                false
            }
            None => false,
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.paused = false;
        self.events = None;
    }

    /// SIGKILL (also works on a stopped process) and reap.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
        self.reap();
    }

    /// Deletes the node's data directory (it must be down): only for `--inject-bug lose-data`,
    /// which checks that the harness notices lost acknowledged transactions.
    pub fn wipe_data(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("node {} is running; its data stays", self.id);
        }
        match std::fs::remove_dir_all(&self.data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub fn pause(&mut self) -> anyhow::Result<()> {
        let pid = self.child.as_ref().map(Child::id).ok_or_else(|| anyhow!("node {} is down", self.id))?;
        signal(pid, "STOP")?;
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> anyhow::Result<()> {
        if !self.paused {
            return Ok(());
        }
        let pid = self.child.as_ref().map(Child::id).ok_or_else(|| anyhow!("node {} is down", self.id))?;
        signal(pid, "CONT")?;
        self.paused = false;
        Ok(())
    }

    /// Resumes the node if paused and sends SIGTERM, without waiting.
    fn terminate(&mut self) -> anyhow::Result<()> {
        self.resume()?;
        match self.child.as_ref().map(Child::id) {
            Some(pid) => signal(pid, "TERM"),
            None => Ok(()),
        }
    }

    /// SIGTERM (graceful: the node finishes in-flight requests), then SIGKILL after STOP_TIMEOUT.
    /// Returns whether the node stopped by itself.
    pub async fn stop(&mut self) -> anyhow::Result<bool> {
        self.terminate()?;
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if !self.is_running() {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        Ok(false)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `settle cluster status --json`, as fixed by the interface. Unknown fields are ignored and
/// missing ones default, so a richer status still parses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub nodes: Vec<StatusNode>,
    #[serde(default)]
    pub shards: Vec<StatusShard>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct StatusNode {
    pub id: NodeId,
    #[serde(default)]
    pub up: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct StatusShard {
    pub shard: u32,
    #[serde(default)]
    pub leader: Option<NodeId>,
    #[serde(default)]
    pub members: Vec<NodeId>,
    #[serde(default)]
    pub replicas: Vec<StatusReplica>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct StatusReplica {
    pub node: NodeId,
    /// None (null or absent) when the replica did not report.
    #[serde(default)]
    pub applied_index: Option<u64>,
    #[serde(default)]
    pub state_hash: serde_json::Value,
}

/// Runs `settle cluster ARGS --target TARGET` with the run's certificate and key file and returns
/// its standard output.
async fn operator(
    shared: &Shared,
    target: SocketAddr,
    args: &[&str],
    limit: Duration,
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(&shared.settle);
    cmd.arg("cluster").args(args).arg("--target").arg(target.to_string());
    cmd.arg("--cert").arg(&shared.cert).arg("--api-key-file").arg(&shared.api_key_file);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| anyhow!("settle cluster {} timed out after {limit:?}", args.join(" ")))??;
    if !out.status.success() {
        bail!(
            "settle cluster {} --target {target}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn status(shared: &Shared, target: SocketAddr) -> anyhow::Result<Status> {
    let out = operator(shared, target, &["status", "--json"], STATUS_TIMEOUT).await?;
    let line =
        out.lines().find(|l| l.trim_start().starts_with('{')).ok_or_else(|| anyhow!("no JSON in status"))?;
    serde_json::from_str(line).with_context(|| format!("cannot read the status {line}"))
}

pub async fn add_node(
    shared: &Shared,
    target: SocketAddr,
    id: NodeId,
    peer: SocketAddr,
) -> anyhow::Result<()> {
    let (id, peer) = (id.to_string(), peer.to_string());
    operator(shared, target, &["add-node", "--id", &id, "--peer", &peer], ADD_NODE_TIMEOUT).await.map(drop)
}

pub async fn remove_node(shared: &Shared, target: SocketAddr, id: NodeId) -> anyhow::Result<()> {
    let id = id.to_string();
    operator(shared, target, &["remove-node", "--id", &id], REMOVE_NODE_TIMEOUT).await.map(drop)
}

/// The nodes of the run by id, with the network they live on.
#[derive(Debug)]
pub struct Nodes {
    pub shared: Shared,
    pub procs: BTreeMap<NodeId, NodeProc>,
    /// Dropped after the processes (field order), so no namespace is removed under a live node.
    pub net: Option<Network>,
}

impl Nodes {
    pub fn is_cluster(&self) -> bool {
        self.procs.values().any(|p| !matches!(p.role, Role::Standalone))
    }

    /// Client addresses of the nodes that are members now.
    pub fn quic_addrs(&self) -> Vec<(NodeId, SocketAddr)> {
        self.procs.values().map(|p| (p.id, p.addrs.quic)).collect()
    }

    /// Asks the members in turn until one answers the status.
    pub async fn status(&mut self) -> anyhow::Result<Status> {
        let mut last = anyhow!("no node to ask");
        let targets: Vec<SocketAddr> = self
            .procs
            .values_mut()
            .filter_map(|p| (p.is_running() && !p.is_paused()).then_some(p.addrs.quic))
            .collect();
        for target in targets {
            match status(&self.shared, target).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Waits until the status reports node `id` up (after a restart, before the next node of a
    /// rolling restart goes down, so that a majority stays up).
    pub async fn wait_up(&mut self, id: NodeId, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = self.status().await;
            if let Ok(s) = &status {
                if s.nodes.iter().any(|n| n.id == id && n.up) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("node {id} is not reported up within {limit:?}: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every node at once: SIGTERM to all, then SIGKILL to those still running after
    /// STOP_TIMEOUT. Returns the ids of the nodes that had to be killed.
    pub async fn stop_all(&mut self) -> Vec<NodeId> {
        for p in self.procs.values_mut() {
            let _ = p.terminate();
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while tokio::time::Instant::now() < deadline && self.procs.values_mut().any(|p| p.is_running()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut killed = Vec::new();
        for p in self.procs.values_mut() {
            if p.is_running() {
                p.kill();
                killed.push(p.id);
            }
        }
        killed
    }

    /// Restarts every node that is down, resumes every paused one, and lets every packet through.
    pub async fn heal(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(net) = self.net.as_mut() {
            if let Err(e) = net.heal() {
                problems.push(format!("cannot remove a partition: {e:#}"));
            }
        }
        for p in self.procs.values_mut() {
            if let Err(e) = p.resume() {
                problems.push(format!("cannot resume node {}: {e:#}", p.id));
            }
            if !p.is_running() {
                if let Err(e) = p.start(&self.shared).await {
                    problems.push(format!("node {} does not restart: {e:#}", p.id));
                }
            }
        }
        problems
    }
}
