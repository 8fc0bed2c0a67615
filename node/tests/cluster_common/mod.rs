//! Real `settle node --id N` processes on 127.0.0.1 for the cluster tests: a shared certificate
//! and API key, ready lines read from standard output, SIGKILL and restart on the same ports.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use settle_client::{Client, ClientConfig, RetryPolicy};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const KEY: &str = "cluster-test-key-0123456789";
/// Time a node has to print its ready line (a node serving HTTP waits for the metadata group's
/// leader to create or find the first administrator).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Node {
    pub id: u64,
    /// `--join` address for a node added later (else it is an initial member).
    pub join: Option<String>,
    pub child: Option<Child>,
    pub data: PathBuf,
    pub peer: String,
    pub quic: Option<SocketAddr>,
    /// The HTTP API's address (when the cluster serves HTTP).
    pub http: Option<SocketAddr>,
    /// The last ready line.
    pub ready: Option<serde_json::Value>,
    /// Where the ready line of a node spawned and not yet ready arrives.
    pending: Option<mpsc::Receiver<String>>,
    /// Where its standard error goes (appended), instead of the test's own.
    pub stderr_log: Option<PathBuf>,
}

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub bootstrap: String,
    pub pem: Vec<u8>,
    pub shards: u32,
    /// Every node serves the HTTP API (`--http`).
    pub http: bool,
    /// More arguments for every `settle node`.
    pub node_args: Vec<String>,
}

impl Cluster {
    pub fn new(shards: u32) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("api-key"), KEY).unwrap();
        let nodes: Vec<Node> = (1..=3)
            .map(|id| Node {
                id,
                join: None,
                child: None,
                data: dir.path().join(format!("node-{id}")),
                peer: format!("127.0.0.1:{}", free_port()),
                quic: None,
                http: None,
                ready: None,
                pending: None,
                stderr_log: None,
            })
            .collect();
        let bootstrap = nodes.iter().map(|n| format!("{}={}", n.id, n.peer)).collect::<Vec<_>>().join(",");
        let pem = certified.cert.pem().into_bytes();
        Cluster { dir, nodes, bootstrap, pem, shards, http: false, node_args: Vec::new() }
    }

    /// Every node also serves the HTTP API.
    pub fn with_http(mut self) -> Cluster {
        self.http = true;
        self
    }

    /// Starts node `i` and returns at once; [`Cluster::wait_ready`] waits for its ready line.
    pub fn spawn(&mut self, i: usize) {
        let dir = self.dir.path().to_path_buf();
        let http = self.http;
        let node = &mut self.nodes[i];
        // The same ports again on a restart, so that clients of the old addresses find it.
        let listen = node.quic.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        let membership = match &node.join {
            Some(member) => ["--join", member.as_str()],
            None => ["--bootstrap", self.bootstrap.as_str()],
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_settle"));
        command
            .args(["node", "--id", &node.id.to_string(), "--data"])
            .arg(&node.data)
            .args(["--listen", &listen, "--peer-listen", &node.peer])
            .args(membership)
            .args(["--shards", &self.shards.to_string(), "--cert"])
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .arg("--api-key-file")
            .arg(dir.join("api-key"))
            .args(&self.node_args)
            // `SETTLE_TEST_NODE_LOG=warn,settle_cluster=debug` to see what the nodes do.
            .env("RUST_LOG", std::env::var("SETTLE_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(match &node.stderr_log {
                Some(path) => {
                    Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap())
                }
                None => Stdio::inherit(),
            });
        if http {
            let addr = node.http.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
            command.args(["--http", &addr]);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if line.contains("\"ready\"") {
                    let _ = tx.send(line);
                }
            }
        });
        node.child = Some(child);
        node.pending = Some(rx);
    }

    /// Waits for the ready line of node `i` (spawned before).
    pub fn wait_ready(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let line = node.pending.take().unwrap().recv_timeout(READY_TIMEOUT).expect("node ready");
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(ready["node_id"], node.id);
        assert_eq!(ready["peer"], node.peer.as_str());
        node.quic = Some(ready["quic"].as_str().unwrap().parse().unwrap());
        node.http = ready["http"].as_str().map(|h| h.parse().unwrap());
        node.ready = Some(ready);
    }

    pub fn start(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i);
    }

    /// Starts every node at once (a node serving HTTP is ready only once a majority is up).
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.spawn(i);
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i);
        }
    }

    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    /// SIGTERM, and waits for the node to exit.
    pub fn stop(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().unwrap();
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        child.wait().unwrap();
    }

    pub async fn client(&self, i: usize) -> Client {
        let mut config = ClientConfig::new(self.nodes[i].quic.unwrap(), self.pem.clone(), KEY);
        config.retry = RetryPolicy {
            max_attempts: 50,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        };
        Client::connect(config).await.unwrap()
    }

    /// Adds a node that joins through node 1 (not started yet).
    pub fn add(&mut self, id: u64) -> usize {
        let join = Some(self.nodes[0].peer.clone());
        let data = self.dir.path().join(format!("node-{id}"));
        self.nodes.push(Node {
            id,
            join,
            child: None,
            data,
            peer: format!("127.0.0.1:{}", free_port()),
            quic: None,
            http: None,
            ready: None,
            pending: None,
            stderr_log: None,
        });
        self.nodes.len() - 1
    }

    pub async fn settle_cli(&self, args: &[&str]) -> String {
        // Async: a blocked runtime thread would stall the test's own client connections.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_settle"))
            .arg("cluster")
            .args(args)
            .args(["--target", &self.nodes[0].quic.unwrap().to_string(), "--cert"])
            .arg(self.dir.path().join("cert.pem"))
            .arg("--api-key-file")
            .arg(self.dir.path().join("api-key"))
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "settle cluster {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
