//! `settle backup` of every member of a real 3-process cluster (a RocksDB checkpoint of each
//! member's raft database, taken by the member), the cluster stopped and its data dirs removed,
//! `settle restore` of each member, and the cluster started again on the restored data: every
//! transaction acknowledged before the backups answers its first result (flagged duplicate),
//! balances are unchanged, and new transactions are accepted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster_common;
mod common;

use cluster_common::Cluster;
use settle_wire as wire;

fn sale(id: String, partner: &str) -> wire::Transaction {
    wire::Transaction {
        id,
        partner: Some(partner.into()),
        kind: wire::TxKind::Sale as i32,
        amount: Some("12.34".into()),
        currency: Some("EUR".into()),
        occurred_at: common::now_rfc3339(),
        ..Default::default()
    }
}

fn settle(args: &[&str], cluster: &Cluster) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_settle"))
        .args(args)
        .arg("--cert")
        .arg(cluster.dir.path().join("cert.pem"))
        .arg("--api-key-file")
        .arg(cluster.dir.path().join("api-key"))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_backed_up_and_restored_serves_what_was_acknowledged() {
    let mut cluster = Cluster::new(4);
    cluster.start_all();
    let client = cluster.client(0).await;
    let partners = ["p0", "p1", "p2"];
    for p in partners {
        client.register_partner(common::partner_json(p, "EUR")).await.unwrap();
    }
    let mut acked = Vec::new();
    for round in 0..5 {
        let batch: Vec<_> = (0..30).map(|i| sale(format!("t{round}-{i}"), partners[i % 3])).collect();
        let results = client.submit(batch.clone()).await.unwrap();
        acked.extend(batch.into_iter().zip(results));
    }
    let mut balances = Vec::new();
    for p in partners {
        balances.push(client.balance(p).await.unwrap().payable);
    }
    client.close().await;

    let backups: Vec<_> = (0..3).map(|i| cluster.dir.path().join(format!("backup-{i}"))).collect();
    for (i, out) in backups.iter().enumerate() {
        let target = cluster.nodes[i].quic.unwrap().to_string();
        let args = ["backup", "--out", out.to_str().unwrap(), "--target", &target];
        let done = settle(&args, &cluster);
        assert!(done.status.success(), "backup of node {}: {}", i + 1, String::from_utf8_lossy(&done.stderr));
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["kind"], "cluster_member");
        assert!(out.join("raft").exists());
    }
    for (i, backup) in backups.iter().enumerate() {
        cluster.stop(i);
        std::fs::remove_dir_all(&cluster.nodes[i].data).unwrap();
        let done = std::process::Command::new(env!("CARGO_BIN_EXE_settle"))
            .args(["restore", "--from"])
            .arg(backup)
            .arg("--data")
            .arg(&cluster.nodes[i].data)
            .output()
            .unwrap();
        assert!(
            done.status.success(),
            "restore of node {}: {}",
            i + 1,
            String::from_utf8_lossy(&done.stderr)
        );
        assert!(String::from_utf8_lossy(&done.stderr).contains("--id"));
    }
    cluster.start_all();
    let client = cluster.client(1).await;
    for chunk in acked.chunks(50) {
        let again = client.submit(chunk.iter().map(|(tx, _)| tx.clone()).collect()).await.unwrap();
        for ((tx, first), again) in chunk.iter().zip(again) {
            assert!(again.duplicate, "{} was lost or applied again: {again:?}", tx.id);
            assert_eq!(again.outcome, first.outcome, "{}", tx.id);
        }
    }
    for (p, before) in partners.iter().zip(&balances) {
        assert_eq!(&client.balance(p).await.unwrap().payable, before, "{p}");
    }
    let fresh = client.submit(vec![sale("after-restore".into(), "p0")]).await.unwrap();
    assert!(!fresh[0].duplicate);
}
