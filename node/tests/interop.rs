//! Cross-language protocol check: an independent client in Python (aioquic, and a protobuf codec
//! written from docs/protocol.md) talks to a real node. Skipped, with a notice, where Python or
//! aioquic is missing (`pip install aioquic`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use settle_client::{Client, ClientConfig};
use settle_node::ingress::{ApiKeys, Ingress, IngressConfig, TlsSource, MAX_IN_FLIGHT_REQUESTS};
use std::process::Command;

const KEY: &str = "interop-key-0001";

fn aioquic_available() -> bool {
    Command::new("python3").args(["-c", "import aioquic"]).output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aioquic_client_speaks_the_protocol() {
    if !aioquic_available() {
        eprintln!("SKIPPED: python3 with aioquic is not installed (pip install aioquic)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (keys, _) = ApiKeys::load_or_init(dir.path(), Some(KEY)).unwrap();
    let config = IngressConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: dir.path().to_path_buf(),
        tls: TlsSource::Dev { dir: dir.path().join("tls") },
        client_ca: None,
        keys,
        max_in_flight: MAX_IN_FLIGHT_REQUESTS,
    };
    let ingress = Ingress::start(config, common::backend(dir.path()).await).await.unwrap();
    let addr = ingress.local_addr();
    let cert = ingress.cert_path().to_path_buf();
    let rust = Client::connect(ClientConfig::new(addr, std::fs::read(&cert).unwrap(), KEY)).await.unwrap();
    rust.register_partner(common::partner_json("py", "EUR")).await.unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/aioquic_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([&addr.ip().to_string(), &addr.port().to_string()])
        .arg(&cert)
        .args([KEY, "py"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["first"]["payable_after"], "78.40");
    // What the Python client did is visible to the Rust client.
    assert_eq!(rust.balance("py").await.unwrap().payable, "78.40");
    ingress.shutdown().await;
}
