//! Starting a fresh node as a separate process for a run without `--target`.

use anyhow::{anyhow, bail, Context};
use settle_loadtest::settle_binary;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Time a fresh node has to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Time a node has to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A node process on a temporary data dir, removed when dropped.
#[derive(Debug)]
pub struct SpawnedNode {
    child: Child,
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub api_key: String,
    /// Removed when the node is dropped, after the process is gone (a cluster owns its own).
    _dir: Option<tempfile::TempDir>,
}

/// A free UDP port on 127.0.0.1 (for the peer addresses a bootstrap list must name up front).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A local cluster of node processes sharing one temporary directory, removed when dropped.
#[derive(Debug)]
pub struct SpawnedCluster {
    pub nodes: Vec<SpawnedNode>,
    pub cert: PathBuf,
    pub api_key: String,
    _dir: tempfile::TempDir,
}

impl SpawnedCluster {
    /// Starts `n` members bootstrapped together; node 1 generates the certificate all share.
    pub fn start(n: usize) -> anyhow::Result<SpawnedCluster> {
        let bin = settle_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("settle-loadtest-cluster-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let api_key = format!("loadtest-{:016x}", rand::random::<u64>());
        let key_file = dir.path().join("api-key");
        std::fs::write(&key_file, &api_key).context("cannot write the API key file")?;
        let peers: Vec<String> =
            (0..n).map(|_| free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_, _>>()?;
        let bootstrap =
            peers.iter().enumerate().map(|(i, p)| format!("{}={p}", i + 1)).collect::<Vec<_>>().join(",");
        let mut nodes = Vec::with_capacity(n);
        let mut tls: Vec<String> = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let data = dir.path().join(format!("node-{}", i + 1));
            let id = (i + 1).to_string();
            let mut args: Vec<String> = vec![
                "--id".into(),
                id,
                "--peer-listen".into(),
                peer.clone(),
                "--bootstrap".into(),
                bootstrap.clone(),
            ];
            args.extend(tls.iter().cloned());
            let node = SpawnedNode::spawn(&bin, &data, &key_file, &args, api_key.clone())?;
            if i == 0 {
                let key = data.join("tls").join("key.pem");
                tls = vec![
                    "--cert".into(),
                    node.cert.display().to_string(),
                    "--key".into(),
                    key.display().to_string(),
                ];
            }
            nodes.push(node);
        }
        let cert = nodes.first().map(|n| n.cert.clone()).ok_or_else(|| anyhow!("no nodes"))?;
        Ok(SpawnedCluster { nodes, cert, api_key, _dir: dir })
    }

    pub fn stop(self) -> anyhow::Result<()> {
        for node in self.nodes {
            node.stop()?;
        }
        Ok(())
    }
}

impl SpawnedNode {
    pub fn start() -> anyhow::Result<SpawnedNode> {
        let bin = settle_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("settle-loadtest-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let api_key = format!("loadtest-{:016x}", rand::random::<u64>());
        let key_file = dir.path().join("api-key");
        std::fs::write(&key_file, &api_key).context("cannot write the API key file")?;
        let mut node = SpawnedNode::spawn(&bin, &dir.path().join("data"), &key_file, &[], api_key)?;
        node._dir = Some(dir);
        Ok(node)
    }

    /// Starts `settle node` on `data` with `extra` arguments and waits for its ready line.
    fn spawn(
        bin: &std::path::Path,
        data: &std::path::Path,
        key_file: &std::path::Path,
        extra: &[String],
        api_key: String,
    ) -> anyhow::Result<SpawnedNode> {
        let mut child = Command::new(bin)
            .arg("node")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--api-key-file")
            .arg(key_file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout of the node"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if line.contains("\"ready\"") {
                    let _ = tx.send(line);
                    break;
                }
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the node exited or did not become ready within {READY_TIMEOUT:?}");
            }
        };
        let ready: serde_json::Value = serde_json::from_str(&line).context("bad ready line")?;
        let addr = ready["quic"].as_str().ok_or_else(|| anyhow!("no quic in {line}"))?.parse()?;
        let cert = PathBuf::from(ready["cert"].as_str().ok_or_else(|| anyhow!("no cert in {line}"))?);
        Ok(SpawnedNode { child, addr, cert, api_key, _dir: None })
    }

    /// SIGTERM, wait for a graceful stop, then SIGKILL if needed; the data dir goes with `self`.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for SpawnedNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
