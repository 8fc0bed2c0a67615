//! Partner files uploaded over HTTP against a running node: a stored mapping (validated, audited),
//! an upload streamed through it and submitted in batches, unmappable rows filed as exceptions
//! with their row number, a repeated upload that changes nothing, and a file of many batches.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http_common;

use http_common::*;
use serde_json::{json, Value};

fn example(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/import").join(name);
    std::fs::read_to_string(path).unwrap()
}

/// `partner_body`'s partner, from the first of January (the example files are of 2 January).
fn january_partner(id: &str) -> String {
    partner_body(id).replace("2026-03-02T00:00:00Z", "2026-01-01T00:00:00Z")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_partner_file_is_imported_once_through_a_stored_mapping() {
    let node = TestNode::start().await;
    let admin = node.admin_session().await;
    assert_eq!(node.post("/v1/partners", &admin, &january_partner("cafe-mitte")).await.status, 201);
    let op = Cred::Key(node.key(&admin, "operator", None).await);
    let ingest = Cred::Key(node.key(&admin, "ingest", None).await);
    let auditor = Cred::Key(node.key(&admin, "auditor", None).await);

    // Mappings: validated, stored by name, audited; auditors read them and change nothing.
    let toml = example("berlin-pos.toml");
    let r = node.req("PUT", "/v1/mappings/berlin", &op, Some("name = \"x\"\nformat = \"csv\"\n")).await;
    assert_eq!(r.status, 400, "a mapping without fields: {}", r.text());
    assert_eq!(node.req("PUT", "/v1/mappings/berlin", &auditor, Some(&toml)).await.status, 403);
    assert_eq!(node.req("PUT", "/v1/mappings/a%2Fb", &op, Some(&toml)).await.status, 400);
    let r = node.req("PUT", "/v1/mappings/berlin", &op, Some(&toml)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["mapping"], "berlin-pos");
    let list = node.get("/v1/mappings", &auditor).await.json();
    assert_eq!(list["mappings"][0]["name"], "berlin");

    let file = example("berlin-pos.csv");
    let path = "/v1/imports?mapping=berlin&file=berlin-pos.csv";
    assert_eq!(node.post(path, &auditor, &file).await.status, 403, "auditors submit nothing");
    assert_eq!(node.post("/v1/imports?mapping=nope", &ingest, &file).await.status, 404);
    let r = node.post(path, &ingest, &file).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json();
    assert_eq!(first["complete"], true);
    assert_eq!(first["rows"], 6, "{first}");
    assert_eq!(first["applied"], 4, "{first}");
    assert_eq!(first["exceptions"], json!({"invalid_amount": 1, "invalid_adjustment": 1}), "{first}");
    assert_eq!(first["duplicates"], 0);

    // Unmappable rows wait in the exception queue, with where they came from.
    let queue = node.get("/v1/exceptions?partner=cafe-mitte", &op).await.json();
    let items = queue["exceptions"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{queue}");
    let imported: Vec<&Value> =
        items.iter().filter_map(|e| e["transaction"]["metadata"].get("import")).collect();
    assert!(!imported.is_empty(), "{queue}");
    assert!(imported.iter().all(|m| m["row"].is_number() && m["file"] == "berlin-pos.csv"), "{queue}");

    // The same upload again changes nothing.
    let payable = node.get("/v1/partners/cafe-mitte/balance", &op).await.json()["payable"].clone();
    let again = node.post(path, &ingest, &file).await.json();
    assert_eq!((again["applied"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(6)), "{again}");
    assert_eq!(again["duplicate_exceptions"], first["exceptions"]);
    assert_eq!(node.get("/v1/partners/cafe-mitte/balance", &op).await.json()["payable"], payable);

    // A header the mapping does not fit: a clear error, nothing submitted.
    let r = node.post("/v1/imports?mapping=berlin&file=x.csv", &ingest, "a;b\n1;2\n").await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Many batches: every row once, in file order.
    let mut big =
        String::from("Beleg;Haendler;Buchungsart;Betrag;Waehrung;Datum;Uhrzeit;Bezug;Notiz;Terminal\n");
    let rows = 2 * settle_api::import::IMPORT_BATCH + 7;
    for i in 0..rows {
        big.push_str(&format!("B-{i:06};cafe-mitte;Verkauf;1,00;EUR;02.01.2026;14:00:00;;;T1\n"));
    }
    let r = node.post("/v1/imports?mapping=berlin&file=big.csv", &ingest, &big).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.json();
    assert_eq!((s["rows"].as_u64(), s["applied"].as_u64()), (Some(rows as u64), Some(rows as u64)), "{s}");
    assert_eq!(s["bytes"].as_u64(), Some(big.len() as u64));

    let audit = node.get("/v1/audit?limit=500", &op).await.json();
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"mapping.put"), "mapping changes are audited");
    node.stop().await;
}
