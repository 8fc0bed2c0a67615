//! `settle archive`: closed periods of a real engine store (driven by a manual clock so that
//! periods close deterministically) exported read-only to zstd JSON lines, verified, restored
//! for an audit; a damaged archive is refused; the store keeps every entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use settle_core::scenario::{parse_partner, parse_transaction};
use settle_core::{Instant, TxInput};
use settle_node::engine::{Clock, Engine, EngineConfig, ManualClock};
use std::process::Command;

fn t(s: &str) -> Instant {
    Instant::parse_rfc3339(s).unwrap()
}

fn sale(id: &str, occurred: &str) -> TxInput {
    let v = serde_json::json!({"id": id, "partner": "shop", "kind": "sale", "amount": "10.00",
                               "currency": "EUR", "occurred_at": occurred});
    parse_transaction(&v, "tx", Some(Instant(0))).unwrap()
}

fn settle(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_settle")).args(args).output().unwrap()
}

#[tokio::test]
async fn export_verify_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = ManualClock::new(t("2026-01-02T10:00:00Z"));
    let mut config = EngineConfig::new(data.join("engine"));
    config.tick_interval = None;
    config.clock = Clock::Manual(clock.clone());
    let engine = Engine::open(config.clone()).await.unwrap();
    let partner = parse_partner(
        &serde_json::json!({
            "id": "shop", "settlement_currency": "EUR", "since": "2026-01-01T00:00:00Z",
            "cycle": {"every": "daily", "cutoff": "00:00", "tz": "UTC", "grace": "PT1H"},
            "contracts": [{"effective_from": "2026-01-01T00:00:00Z",
                           "shares": [{"party": "partner", "percent": "90"}, {"party": "platform", "percent": "10"}]}]
        }),
        "shop",
    )
    .unwrap();
    engine.register_partner(partner).await.unwrap();
    engine
        .submit(vec![sale("a1", "2026-01-02T09:00:00Z"), sale("a2", "2026-01-02T09:30:00Z")])
        .await
        .unwrap();
    clock.set(t("2026-01-03T10:00:00Z"));
    engine.submit(vec![sale("b1", "2026-01-03T09:00:00Z")]).await.unwrap();
    clock.set(t("2026-01-05T10:00:00Z"));
    engine.tick().await.unwrap();
    // A sale in the open period: never archived.
    engine.submit(vec![sale("c1", "2026-01-05T09:00:00Z")]).await.unwrap();
    engine.shutdown().await.unwrap();

    let arch = dir.path().join("arch");
    let (data_s, arch_s) = (data.to_str().unwrap(), arch.to_str().unwrap());
    let o =
        settle(&["archive", "export", "--data", data_s, "--out", arch_s, "--before", "2026-01-04T00:00:00Z"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(arch.join("manifest.json")).unwrap()).unwrap();
    let periods: Vec<(String, u64)> = manifest["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["period_start"].as_str().unwrap().to_string(), p["transactions"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        periods,
        [
            ("2026-01-01T00:00:00Z".to_string(), 0),
            ("2026-01-02T00:00:00Z".to_string(), 2),
            ("2026-01-03T00:00:00Z".to_string(), 1)
        ]
    );

    let o = settle(&["archive", "verify", "--from", arch_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = settle(&["archive", "restore", "--from", arch_s]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
    let audit = dir.path().join("audit");
    let o = settle(&["archive", "restore", "--from", arch_s, "--out", audit.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let txs = std::fs::read_to_string(audit.join("transactions.jsonl")).unwrap();
    let ids: Vec<String> = txs
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["tx"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids, ["a1", "a2", "b1"]);
    assert_eq!(std::fs::read_to_string(audit.join("statements.jsonl")).unwrap().lines().count(), 3);

    // The store still holds everything: it reopens and replays, with the archived sales known.
    let engine = Engine::open(config).await.unwrap();
    assert!(engine.lookup("a1").await.unwrap().is_some());
    engine.shutdown().await.unwrap();

    // A damaged archive is refused.
    let f = arch.join("transactions.jsonl.zst");
    let mut bytes = std::fs::read(&f).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let o = settle(&["archive", "verify", "--from", arch_s]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("checksum"));
}
