//! `settle backup` while traffic flows, `settle restore` into a fresh directory, and a node
//! started on it: every transaction acknowledged before the backup is there (a resubmission is a
//! duplicate with the same outcome) and the quiet partner's balance is the same.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod opsnode;

use opsnode::NodeProcess;
use settle_wire as wire;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn sale(id: String, partner: &str, amount: &str) -> wire::Transaction {
    wire::Transaction {
        id,
        partner: Some(partner.into()),
        kind: wire::TxKind::Sale as i32,
        amount: Some(amount.into()),
        currency: Some("EUR".into()),
        occurred_at: common::now_rfc3339(),
        ..Default::default()
    }
}

#[test]
fn backup_under_traffic_then_restore() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = Arc::new(rt.block_on(settle_client::Client::connect(node.client_config())).unwrap());
    rt.block_on(client.register_partner(common::partner_json("quiet", "EUR"))).unwrap();
    rt.block_on(client.register_partner(common::partner_json("busy", "EUR"))).unwrap();

    let first: Vec<_> = (0..50).map(|i| sale(format!("q{i}"), "quiet", "12.34")).collect();
    let first_results = rt.block_on(client.submit(first.clone())).unwrap();
    let quiet_before = rt.block_on(client.balance("quiet")).unwrap();

    // Traffic on another partner during the backup; `acked` holds what was acknowledged.
    let acked: Arc<Mutex<Vec<(wire::Transaction, wire::TxResult)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        rt.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                let batch: Vec<_> = (0..20).map(|i| sale(format!("b{n}-{i}"), "busy", "1.00")).collect();
                n += 1;
                let results = client.submit(batch.clone()).await.unwrap();
                acked.lock().unwrap().extend(batch.into_iter().zip(results));
            }
        })
    };
    // Let some traffic be acknowledged before the backup starts (a condition, not a sleep).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().unwrap().len() < 100 {
        assert!(std::time::Instant::now() < deadline, "no traffic acknowledged");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let acked_before_backup = acked.lock().unwrap().clone();
    let backup_dir = dir.path().join("backup");
    let out = node.run(&["backup", "--out", backup_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stop.store(true, Ordering::Release);
    rt.block_on(traffic).unwrap();
    rt.block_on(client.close());
    node.stop();

    // Archiving reads a backup without changing it (the restore below still verifies).
    let settle = env!("CARGO_BIN_EXE_settle");
    let arch = dir.path().join("arch");
    let o = std::process::Command::new(settle)
        .args(["archive", "export", "--data", backup_dir.to_str().unwrap(), "--out", arch.to_str().unwrap()])
        .args(["--older-than", "0s"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A restore into a non-empty directory is refused.
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::write(restored.join("x"), "x").unwrap();
    let o = std::process::Command::new(settle)
        .args(["restore", "--from", backup_dir.to_str().unwrap(), "--data", restored.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_file(restored.join("x")).unwrap();
    let o = std::process::Command::new(settle)
        .args(["restore", "--from", backup_dir.to_str().unwrap(), "--data", restored.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let node = NodeProcess::start(&restored, dir.path());
    let client = rt.block_on(settle_client::Client::connect(node.client_config())).unwrap();
    let quiet_after = rt.block_on(client.balance("quiet")).unwrap();
    assert_eq!(quiet_after.payable, quiet_before.payable);
    let again = rt.block_on(client.submit(first)).unwrap();
    for (a, b) in again.iter().zip(&first_results) {
        assert!(a.duplicate);
        assert_eq!(a.outcome, b.outcome);
    }
    for chunk in acked_before_backup.chunks(500) {
        let (txs, results): (Vec<_>, Vec<_>) = chunk.iter().cloned().unzip();
        let again = rt.block_on(client.submit(txs)).unwrap();
        for (a, b) in again.iter().zip(&results) {
            assert!(a.duplicate, "a transaction acknowledged before the backup is missing");
            assert_eq!(a.outcome, b.outcome);
        }
    }
    rt.block_on(client.close());
    node.stop();

    // A damaged backup is refused.
    let manifest = backup_dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let victim = backup_dir.join(m["files"][0]["path"].as_str().unwrap());
    std::fs::write(&victim, b"damaged").unwrap();
    let fresh = dir.path().join("fresh");
    let o = std::process::Command::new(settle)
        .args(["restore", "--from", backup_dir.to_str().unwrap(), "--data", fresh.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("checksum"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
