//! `settle import` end to end against a real `settle node` process: the three example partner
//! files are imported, unmappable rows land in the exception queue with the spec's reasons, and a
//! second import of the same files changes nothing (all duplicates, balances unchanged).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod opsnode;

use opsnode::{example, NodeProcess};
use serde_json::{json, Value};

fn summary(out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no summary; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(last).unwrap()
}

#[test]
fn import_examples_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(settle_client::Client::connect(node.client_config())).unwrap();
    rt.block_on(client.register_partner(common::partner_json("cafe-mitte", "EUR"))).unwrap();
    rt.block_on(client.register_partner(common::partner_json("corner-shop", "USD"))).unwrap();

    let files = [
        ("berlin-pos.toml", "berlin-pos.csv", json!({"invalid_amount": 1, "invalid_adjustment": 1}), 4),
        (
            "shopflow.toml",
            "shopflow.jsonl",
            json!({"invalid_adjustment": 1, "unknown_currency": 1, "unknown_partner": 1}),
            4,
        ),
        ("bank-fixed.toml", "bank-fixed.txt", json!({"invalid_amount": 1}), 4),
    ];
    for (mapping, data, exceptions, applied) in &files {
        let out = node.run(&["import", "--mapping", &example(mapping), &example(data), "--batch", "3"]);
        assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
        let s = summary(&out);
        assert_eq!(s["applied"], *applied, "{data}: {s}");
        assert_eq!(s["exceptions"], *exceptions, "{data}: {s}");
        assert_eq!(s["duplicates"], 0, "{data}: {s}");
    }
    let before: Vec<_> = ["cafe-mitte", "corner-shop"]
        .iter()
        .map(|p| rt.block_on(client.balance(p)).unwrap().payable)
        .collect();

    for (mapping, data, exceptions, applied) in &files {
        let out = node.run(&["import", "--mapping", &example(mapping), &example(data)]);
        assert_eq!(out.status.code(), Some(3));
        let s = summary(&out);
        assert_eq!(s["applied"], 0, "{data}: {s}");
        assert_eq!(s["exceptions"], json!({}), "{data}: {s}");
        let total =
            applied + exceptions.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>();
        assert_eq!(s["duplicates"], total, "{data}: {s}");
        assert_eq!(s["duplicate_exceptions"], *exceptions, "{data}: {s}");
    }
    let after: Vec<_> = ["cafe-mitte", "corner-shop"]
        .iter()
        .map(|p| rt.block_on(client.balance(p)).unwrap().payable)
        .collect();
    assert_eq!(before, after);

    // A time that cannot be read becomes future_timestamp, and a clean file exits 0.
    let mapping = dir.path().join("m.toml");
    std::fs::write(
        &mapping,
        "name = \"t\"\nformat = \"csv\"\n[fields]\nid = \"id\"\namount = \"amount\"\noccurred_at = \"at\"\n\
         [constants]\npartner = \"cafe-mitte\"\nkind = \"sale\"\ncurrency = \"EUR\"\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "id,amount,at\nt1,1.00,31/02/2026\n").unwrap();
    let out = node.run(&["import", "--mapping", mapping.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(summary(&out)["exceptions"], json!({"future_timestamp": 1}));
    let good = dir.path().join("good.csv");
    std::fs::write(&good, format!("id,amount,at\nt2,1.00,{}\n", common::now_rfc3339())).unwrap();
    let out = node.run(&["import", "--mapping", mapping.to_str().unwrap(), good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary(&out)["applied"], 1);

    // An unusable mapping sends nothing and exits 2.
    std::fs::write(&mapping, "name = \"t\"\nformat = \"csv\"\n").unwrap();
    let out = node.run(&["import", "--mapping", mapping.to_str().unwrap(), good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("occurred_at"));

    rt.block_on(client.close());
    node.stop();
}
