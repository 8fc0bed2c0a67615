//! `settle reconcile` end to end: our side submitted to a real `settle node` process, a
//! fabricated partner report with one case of every category, JSON and CSV output, the dispute
//! journal (opened once, resolved with a note).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod opsnode;

use opsnode::NodeProcess;
use serde_json::Value;
use settle_core::{Instant, Span};
use settle_wire as wire;

fn tx(id: &str, kind: wire::TxKind, amount: &str, at: Instant) -> wire::Transaction {
    wire::Transaction {
        id: id.into(),
        partner: Some("cafe-mitte".into()),
        kind: kind as i32,
        amount: Some(amount.into()),
        currency: Some("EUR".into()),
        occurred_at: at.to_rfc3339(),
        ..Default::default()
    }
}

#[test]
fn reconcile_report_with_every_category() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(settle_client::Client::connect(node.client_config())).unwrap();
    rt.block_on(client.register_partner(common::partner_json("cafe-mitte", "EUR"))).unwrap();
    rt.block_on(client.register_partner(common::partner_json("other", "EUR"))).unwrap();

    // Every instant inside today's (UTC) period, at most seconds after now.
    let now = common::now();
    let day = now.start_of_utc_day();
    let base = if now.saturating_sub(Span::from_seconds(60)) < day {
        day
    } else {
        now.saturating_sub(Span::from_seconds(60))
    };
    let t = |s: i64| base.saturating_add(Span::from_seconds(s));
    use wire::TxKind::Sale;
    let ours = vec![
        tx("s1", Sale, "10.00", t(1)),
        tx("s2", Sale, "20.00", t(2)),
        tx("s3", Sale, "30.00", t(3)),
        tx("s4", Sale, "5.00", t(4)),
        tx("e1", Sale, "1.00", t(10)),
        tx("e2", Sale, "2.50", t(11)),
        tx("e3", Sale, "3.00", t(12)),
        tx("f", Sale, "7.00", t(13)),
    ];
    let mut other = tx("o1", Sale, "10.00", t(1));
    other.partner = Some("other".into());
    let results = rt.block_on(client.submit([ours, vec![other]].concat())).unwrap();
    assert!(results.iter().all(|r| matches!(r.outcome, Some(wire::tx_result::Outcome::Applied(_)))));

    // The listing, three items a page: every transaction of the partner once, in log order.
    let mut listed = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = rt
            .block_on(client.list_transactions(wire::ListTransactions {
                partner: "cafe-mitte".into(),
                from: day.to_rfc3339(),
                to: String::new(),
                after_seq,
                limit: 3,
            }))
            .unwrap();
        assert_eq!(page.period_start, day.to_rfc3339());
        listed.extend(page.items.iter().map(|i| i.tx.as_ref().unwrap().id.clone()));
        if page.done {
            break;
        }
        assert!(page.next_after_seq > after_seq);
        after_seq = page.next_after_seq;
    }
    assert_eq!(listed, ["s1", "s2", "s3", "s4", "e1", "e2", "e3", "f"]);
    let refused = rt.block_on(client.list_transactions(wire::ListTransactions {
        partner: "nobody".into(),
        from: day.to_rfc3339(),
        to: String::new(),
        after_seq: 0,
        limit: 3,
    }));
    assert!(matches!(
        refused,
        Err(settle_client::ClientError::Server { code: wire::ErrorCode::Rejected, .. })
    ));

    let mapping = dir.path().join("report.toml");
    std::fs::write(
        &mapping,
        "name = \"cafe-report\"\nformat = \"csv\"\n[fields]\nid = \"ref\"\nkind = \"type\"\namount = \"amount\"\n\
         currency = \"ccy\"\noccurred_at = \"time\"\n[constants]\npartner = \"cafe-mitte\"\n",
    )
    .unwrap();
    let report = dir.path().join("report.csv");
    let r = |s: i64| t(s).to_rfc3339();
    std::fs::write(
        &report,
        format!(
            "ref,type,amount,ccy,time\ns1,sale,10.00,EUR,{}\ns2,sale,21.00,EUR,{}\ns3,sale,30.00,USD,{}\n\
             x4,sale,5.00,EUR,{}\ndaily,sale,6.50,EUR,{}\nz,sale,99.00,EUR,{}\nbad,sale,1x,EUR,{}\n",
            r(1),
            r(2),
            r(3),
            r(34),
            r(50),
            r(20),
            r(21)
        ),
    )
    .unwrap();
    let out = dir.path().join("out.json");
    let journal = dir.path().join("disputes.jsonl");
    let args = |format: &str, out: &std::path::Path| {
        vec![
            "reconcile".to_string(),
            "--partner".into(),
            "cafe-mitte".into(),
            "--period".into(),
            day.to_rfc3339(),
            "--report".into(),
            report.display().to_string(),
            "--mapping".into(),
            mapping.display().to_string(),
            "--format".into(),
            format.into(),
            "--out".into(),
            out.display().to_string(),
            "--amount-tolerance".into(),
            "0.01".into(),
            "--time-tolerance".into(),
            "2m".into(),
            "--disputes".into(),
            journal.display().to_string(),
        ]
    };
    let run = |a: Vec<String>| node.run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let o = run(args("json", &out));
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let category = |their: &str| -> String {
        result["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["theirs"]["id"] == their)
            .map(|l| l["category"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(category("s1"), "matched");
    assert_eq!(category("s2"), "amount_mismatch");
    assert_eq!(category("s3"), "currency_mismatch");
    assert_eq!(category("x4"), "matched");
    assert_eq!(category("daily"), "one_to_many");
    assert_eq!(category("z"), "missing_ours");
    assert_eq!(category("bad"), "unreadable");
    let totals = &result["totals"];
    assert_eq!(totals["missing_theirs"]["count"], 1, "{totals}");
    assert_eq!(totals["missing_theirs"]["ours"]["EUR"], "7", "{totals}");
    assert_eq!(totals["matched"]["count"], 2);
    assert_eq!(result["period_start"], day.to_rfc3339());
    let journal_text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(journal_text.lines().count(), 5);

    // Again, as CSV: the same discrepancies, none opened twice.
    let csv_out = dir.path().join("out.csv");
    let o = run(args("csv", &csv_out));
    assert_eq!(o.status.code(), Some(3));
    let csv = std::fs::read_to_string(&csv_out).unwrap();
    assert!(csv.contains("one_to_many") && csv.contains("e1;e2;e3"), "{csv}");
    assert_eq!(std::fs::read_to_string(&journal).unwrap().lines().count(), 5);

    // Resolve one; the journal lists four open.
    let first: Value = serde_json::from_str(journal_text.lines().next().unwrap()).unwrap();
    let key = first["key"].as_str().unwrap();
    let settle = env!("CARGO_BIN_EXE_settle");
    let j = journal.display().to_string();
    let o = std::process::Command::new(settle)
        .args(["reconcile", "resolve", key, "--note", "partner confirmed", "--by", "ops", "--disputes", &j])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new(settle)
        .args(["reconcile", "disputes", "--disputes", &j])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 4);
    let o = std::process::Command::new(settle)
        .args(["reconcile", "resolve", key, "--note", "again", "--disputes", &j])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "a resolved item cannot be resolved twice");

    rt.block_on(client.close());
    node.stop();
}
