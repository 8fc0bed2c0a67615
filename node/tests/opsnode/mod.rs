//! A `settle node` process on a temporary data dir for the operator subcommands' tests, and a
//! way to run `settle <subcommand>` against it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const KEY: &str = "ops-test-key-0123456789";

pub struct NodeProcess {
    pub child: Child,
    pub addr: String,
    pub cert: PathBuf,
    pub key_file: PathBuf,
}

impl NodeProcess {
    /// Starts `settle node` on `data` (a port picked by the node) and waits for its ready line.
    pub fn start(data: &Path, key_dir: &Path) -> NodeProcess {
        let key_file = key_dir.join("api-key");
        std::fs::write(&key_file, KEY).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_settle"))
            .args(["node", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--api-key-file")
            .arg(&key_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"ready\"") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the node did not become ready");
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
        NodeProcess {
            child,
            addr: ready["quic"].as_str().unwrap().to_string(),
            cert: ready["cert"].as_str().unwrap().into(),
            key_file,
        }
    }

    /// `settle <args> --target ADDR --cert F --api-key-file F`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_settle"))
            .args(args)
            .arg("--target")
            .arg(&self.addr)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--api-key-file")
            .arg(&self.key_file)
            .output()
            .unwrap()
    }

    pub fn client_config(&self) -> settle_client::ClientConfig {
        let pem = std::fs::read(&self.cert).unwrap();
        settle_client::ClientConfig::new(self.addr.parse().unwrap(), pem, KEY)
    }

    /// Stops the node with SIGTERM and waits for it (a clean shutdown, as an operator would).
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/import").join(name).display().to_string()
}
