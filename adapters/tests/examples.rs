//! The shipped example mappings (`examples/import/`) against their sample files: every row comes
//! out as the documented canonical transaction, and unmappable rows carry their row and reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use settle_adapters::{canonical_json, Mapping, Rows};
use std::path::PathBuf;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/import").join(name)
}

fn map_example(mapping: &str, data: &str) -> Vec<Value> {
    let mapping = Mapping::from_toml(&std::fs::read_to_string(example(mapping)).unwrap()).unwrap();
    let file = std::fs::File::open(example(data)).unwrap();
    Rows::new(mapping, file, data).unwrap().map(|r| canonical_json(&r.unwrap().tx)).collect()
}

fn error_of(tx: &Value) -> &str {
    tx["metadata"]["import"]["error"].as_str().unwrap_or("")
}

#[test]
fn berlin_pos_semicolon_csv() {
    let txs = map_example("berlin-pos.toml", "berlin-pos.csv");
    assert_eq!(txs.len(), 6, "{txs:#?}");
    assert_eq!(
        txs[0],
        json!({"id": "bp-V-1001", "kind": "sale", "partner": "cafe-mitte", "amount": "1234.56", "currency": "EUR",
               "occurred_at": "2026-01-02T09:15:00Z", "metadata": {"source": {"Terminal": "T1; Theke"}}})
    );
    assert_eq!(txs[1]["amount"], "19.90");
    assert_eq!(txs[1]["occurred_at"], "2026-01-02T10:00:30Z");
    assert_eq!(txs[2]["kind"], "refund");
    assert_eq!(txs[2]["amount"], "4.90");
    assert_eq!(txs[2]["original"], "bp-V-1002");
    // Adjustments keep their sign.
    assert_eq!(txs[3]["kind"], "adjustment");
    assert_eq!(txs[3]["amount"], "-1.00");
    assert_eq!(txs[3]["reason"], "Kassendifferenz; Schicht 1");
    // Unparseable amount: sent as is (the engine files it as invalid_amount), with row and reason.
    assert_eq!(txs[4]["amount"], "12,3x");
    assert_eq!(txs[4]["metadata"]["import"]["row"], 6);
    assert_eq!(txs[4]["metadata"]["import"]["file"], "berlin-pos.csv");
    assert!(error_of(&txs[4]).contains("not a number"));
    // Unknown type: an adjustment without a reason (invalid_adjustment).
    assert_eq!(txs[5]["kind"], "adjustment");
    assert!(txs[5].get("reason").is_none());
    assert!(error_of(&txs[5]).contains("Gutschein"));
}

#[test]
fn shopflow_json_lines() {
    let txs = map_example("shopflow.toml", "shopflow.jsonl");
    assert_eq!(txs.len(), 7, "{txs:#?}");
    assert_eq!(
        txs[0],
        json!({"id": "sf-ev_01", "kind": "sale", "partner": "cafe-mitte", "amount": "25.99", "currency": "EUR",
               "occurred_at": "2026-01-02T10:00:00Z", "metadata": {"source": {"merchant.name": "Cafe Mitte"}}})
    );
    assert_eq!(txs[1]["amount"], "1000.00");
    assert_eq!(txs[2]["kind"], "refund");
    assert_eq!(txs[2]["original"], "sf-ev_01");
    assert_eq!(txs[3]["kind"], "chargeback");
    assert_eq!(txs[4]["metadata"]["import"]["row"], 6, "the blank line is counted");
    assert!(error_of(&txs[4]).contains("VOID"));
    // A currency outside the code table: the row is kept from being applied.
    assert!(error_of(&txs[5]).contains("gbp"));
    assert_eq!(txs[5]["amount"], "");
    // A line that is not JSON: a derived id, no amount, the unreadable-time instant.
    assert!(txs[6]["id"].as_str().unwrap().starts_with("h-"));
    assert!(txs[6].get("amount").is_none());
    assert_eq!(txs[6]["occurred_at"], "9999-12-31T23:59:59Z");
    assert_eq!(txs[6]["metadata"]["import"]["row"], 8);
}

#[test]
fn bank_fixed_width_with_debit_credit() {
    let txs = map_example("bank-fixed.toml", "bank-fixed.txt");
    assert_eq!(txs.len(), 5, "{txs:#?}");
    assert_eq!(
        txs[0],
        json!({"id": "bank-BK0000000001", "kind": "sale", "partner": "corner-shop", "amount": "2500.00",
               "currency": "USD", "occurred_at": "2026-01-02T14:15:00Z", "reason": "CARD SALES BATCH 1"})
    );
    assert_eq!(txs[1]["amount"], "123.45");
    assert_eq!(txs[2]["kind"], "adjustment");
    assert_eq!(txs[2]["amount"], "-10.50");
    assert_eq!(txs[3]["kind"], "payout");
    assert_eq!(txs[3]["amount"], "1000.00");
    assert!(error_of(&txs[4]).contains("\"X\""));
    assert_eq!(txs[4]["amount"], "");
    assert_eq!(txs[4]["metadata"]["import"]["row"], 6);
}

#[test]
fn mapping_twice_gives_identical_transactions() {
    for (m, d) in [
        ("berlin-pos.toml", "berlin-pos.csv"),
        ("shopflow.toml", "shopflow.jsonl"),
        ("bank-fixed.toml", "bank-fixed.txt"),
    ] {
        assert_eq!(map_example(m, d), map_example(m, d));
    }
}
