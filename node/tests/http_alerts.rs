//! Alert rules against a running node: a threshold on a partner's balance fires once when it is
//! crossed and resolves once when it clears, delivered by signed webhook and by SMTP to
//! listeners in the test; an unreachable webhook ends in the dead-letter list.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http_common;

use http_common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(20);

/// A minimal SMTP server: sends each message's DATA.
async fn smtp_listener() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"220 test ESMTP\r\n").await.unwrap();
            let mut data = None::<String>;
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(d) = data.as_mut() {
                    if line == "." {
                        let _ = tx.send(data.take().unwrap());
                        w.write_all(b"250 queued\r\n").await.unwrap();
                    } else {
                        d.push_str(&line);
                        d.push('\n');
                    }
                    continue;
                }
                let cmd = line.to_uppercase();
                if cmd.starts_with("EHLO") {
                    w.write_all(b"250-test\r\n250 8BITMIME\r\n").await.unwrap();
                } else if cmd.starts_with("DATA") {
                    data = Some(String::new());
                    w.write_all(b"354 go ahead\r\n").await.unwrap();
                } else if cmd.starts_with("QUIT") {
                    w.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                } else {
                    w.write_all(b"250 ok\r\n").await.unwrap();
                }
            }
        }
    });
    (addr, rx)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(DEADLINE, rx.recv()).await.expect("nothing delivered before the deadline").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_alert_fires_once_resolves_once_over_webhook_and_email() {
    let node = TestNode::start().await;
    let admin = node.admin_session().await;
    assert_eq!(node.post("/v1/partners", &admin, &partner_body("p1")).await.status, 201);
    let op = Cred::Key(node.key(&admin, "operator", None).await);
    let (url, mut hooks) = webhook_receiver().await;
    let (smtp, mut mails) = smtp_listener().await;
    let secret = "s3cret-for-hmac";
    let rule = json!({
        "name": "p1 owed money", "metric": "partner_payable:p1", "severity": "warning", "for_s": 0,
        "condition": {"kind": "threshold", "comparator": ">", "threshold": 0, "window_s": 1},
        "webhook": {"url": url, "secret": secret},
        "email": {"smtp": smtp, "from": "settle@test", "to": ["ops@test"]},
    });
    let r = node.post("/v1/alerts/rules", &op, &rule.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["webhook"]["secret"], "***", "secrets are not echoed");
    let rule_id = r.json()["id"].as_str().unwrap().to_string();
    // A second rule whose webhook is unreachable: its deliveries end as dead letters.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/gone", dead.local_addr().unwrap());
    drop(dead);
    let mut rule2 = rule.clone();
    rule2["name"] = json!("unreachable");
    rule2["webhook"] = json!({"url": dead_url, "secret": "x"});
    rule2.as_object_mut().unwrap().remove("email");
    assert_eq!(node.post("/v1/alerts/rules", &op, &rule2.to_string()).await.status, 201);

    // Crossing: a sale makes p1's payable positive.
    let sale = json!({"transactions": [sale("s1", "p1", "100.00", "EUR")]});
    assert_eq!(node.post("/v1/transactions", &op, &sale.to_string()).await.status, 200);
    let (sig, body) = next(&mut hooks).await;
    assert_eq!(sig, settle_api::alerts::sign(secret, body.as_bytes()), "HMAC signature");
    let fired: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((fired["status"].as_str(), fired["rule"].as_str()), (Some("firing"), Some(rule_id.as_str())));
    let mail = next(&mut mails).await;
    assert!(mail.contains("Subject: [settle] firing p1 owed money"), "{mail}");
    // Acknowledge (audited); it stays firing.
    let r = node.post(&format!("/v1/alerts/{rule_id}/ack"), &op, "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["firing"], true);

    // Clearing: pay out the whole balance.
    let payable =
        node.get("/v1/partners/p1/balance", &op).await.json()["payable"].as_str().unwrap().to_string();
    let payout = json!({"transactions": [{"id": "po1", "partner": "p1", "kind": "payout", "amount": payable,
        "currency": "EUR", "occurred_at": "2026-03-02T09:30:00Z"}]});
    let r = node.post("/v1/transactions", &op, &payout.to_string()).await;
    assert_eq!(r.json()["results"][0]["status"], "applied", "{}", r.text());
    let (_, body) = next(&mut hooks).await;
    let resolved: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resolved["status"], "resolved", "one firing, then resolved: {body}");
    assert!(next(&mut mails).await.contains("Subject: [settle] resolved"));
    let alerts = node.get("/v1/alerts", &op).await.json();
    let state =
        alerts["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == rule_id.as_str()).unwrap().clone();
    assert_eq!((state["fired_count"].as_u64(), state["firing"].as_bool()), (Some(1), Some(false)));

    // The unreachable webhook's notifications are dead letters after their retries.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let letters = node.get("/v1/alerts/dead-letters", &op).await.json();
        if let Some(l) = letters["dead_letters"].as_array().unwrap().first() {
            assert_eq!(l["channel"], "webhook");
            assert!(l["error"].as_str().unwrap().contains("3 attempts"), "{l}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Silencing is audited too, and every rule change is in the trail.
    assert_eq!(
        node.post(&format!("/v1/alerts/{rule_id}/silence"), &op, r#"{"minutes": 10}"#).await.status,
        200
    );
    let audit = node.get("/v1/audit?limit=500", &op).await.json();
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["alert_rule.create", "alert.ack", "alert.silence"] {
        assert!(actions.contains(&a), "{a} not audited");
    }
    node.stop().await;
}

/// Waits until the rule has a value (its figures were read at least once) and returns it.
async fn rule_value(node: &TestNode, cred: &Cred, rule: &str) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let alerts = node.get("/v1/alerts", cred).await.json();
        let found = alerts["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == rule).cloned();
        if let Some(state) = found {
            return state["value"].as_str().map_or_else(|| state["value"].to_string(), str::to_string);
        }
        assert!(tokio::time::Instant::now() < deadline, "rule {rule} never evaluated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn add_rule(
    node: &TestNode,
    cred: &Cred,
    name: &str,
    metric: &str,
    threshold: i64,
    url: &str,
) -> String {
    let rule = json!({
        "name": name, "metric": metric, "severity": "warning", "for_s": 0,
        "condition": {"kind": "threshold", "comparator": ">", "threshold": threshold, "window_s": 1},
        "webhook": {"url": url, "secret": "k"},
    });
    let r = node.post("/v1/alerts/rules", cred, &rule.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// The anomaly inputs: a partner's own volume rate, bursts of duplicate submissions, and the age
/// of the newest FX rate of a pair each drive a rule and fire it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_volume_duplicates_and_fx_staleness_drive_rules() {
    let node = TestNode::start().await;
    let admin = node.admin_session().await;
    assert_eq!(node.post("/v1/partners", &admin, &partner_body("p1")).await.status, 201);
    let op = Cred::Key(node.key(&admin, "operator", None).await);
    let (url, mut hooks) = webhook_receiver().await;
    let volume = add_rule(&node, &op, "p1 busy", "partner_tx_per_s:p1", 0, &url).await;
    let amount = add_rule(&node, &op, "p1 big", "partner_amount_per_s:p1", 0, &url).await;
    let dupes = add_rule(&node, &op, "retries", "duplicates_per_s", 0, &url).await;
    let stale = add_rule(&node, &op, "usd stale", "fx_age_s:USD/EUR", 3600, &url).await;
    let bad = json!({"name": "x", "metric": "fx_age_s:USD-EUR", "severity": "warning",
        "condition": {"kind": "threshold", "comparator": ">", "threshold": 1, "window_s": 1}});
    assert_eq!(node.post("/v1/alerts/rules", &op, &bad.to_string()).await.status, 400, "pair is BASE/QUOTE");
    // A rate published for a March instant is months old by the wall clock the rules read.
    let rates =
        json!({"rates": [{"base": "USD", "quote": "EUR", "rate": "0.9", "at": "2026-03-02T00:00:00Z"}]});
    assert_eq!(node.post("/v1/fx/rates", &op, &rates.to_string()).await.status, 200);
    // The partner's rates need a reading before the sale to count from.
    assert_eq!(rule_value(&node, &op, &volume).await, "0");
    assert_eq!(rule_value(&node, &op, &amount).await, "0");
    let sale = json!({"transactions": [sale("s1", "p1", "100.00", "EUR")]});
    assert_eq!(node.post("/v1/transactions", &op, &sale.to_string()).await.status, 200);
    let retry = node.post("/v1/transactions", &op, &sale.to_string()).await;
    assert_eq!(retry.json()["results"][0]["duplicate"], true, "{}", retry.text());

    let mut fired = std::collections::BTreeSet::new();
    while fired.len() < 4 {
        let (_, body) = next(&mut hooks).await;
        let n: Value = serde_json::from_str(&body).unwrap();
        if n["status"] == "firing" {
            fired.insert(n["rule"].as_str().unwrap().to_string());
        }
    }
    let expected: std::collections::BTreeSet<String> = [volume, amount, dupes, stale].into_iter().collect();
    assert_eq!(fired, expected);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_statements_are_announced_once_each_by_signed_webhook() {
    let node = TestNode::start().await;
    let admin = node.admin_session().await;
    for p in ["p1", "p2"] {
        assert_eq!(node.post("/v1/partners", &admin, &partner_body(p)).await.status, 201);
    }
    let op = Cred::Key(node.key(&admin, "operator", None).await);
    let (url, mut hooks) = webhook_receiver().await;
    let secret = "statement-secret";
    let hook = json!({"url": url, "secret": secret, "partner": "p1", "from": "2026-03-01T00:00:00Z"});
    // Only an administrator subscribes; the URL and the partner are checked.
    assert_eq!(node.post("/v1/statement-hooks", &op, &hook.to_string()).await.status, 403);
    let mut bad = hook.clone();
    bad["url"] = json!("https://example.test/hook");
    assert_eq!(node.post("/v1/statement-hooks", &admin, &bad.to_string()).await.status, 400);
    let mut bad = hook.clone();
    bad["partner"] = json!("nobody");
    assert_eq!(node.post("/v1/statement-hooks", &admin, &bad.to_string()).await.status, 404);
    let r = node.post("/v1/statement-hooks", &admin, &hook.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["secret"], "***", "secrets are not echoed");
    let hook_id = r.json()["id"].as_str().unwrap().to_string();

    let sales =
        json!({"transactions": [sale("s1", "p1", "100.00", "EUR"), sale("s2", "p2", "50.00", "EUR")]});
    assert_eq!(node.post("/v1/transactions", &op, &sales.to_string()).await.status, 200);
    // 2 March closes at 01:00 on the 3rd (cut-off midnight UTC, one hour of grace).
    node.advance_to("2026-03-03T02:00:00Z").await;
    let (sig, body) = next(&mut hooks).await;
    assert_eq!(sig, settle_api::alerts::sign(secret, body.as_bytes()), "HMAC signature");
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["event"], "statement.closed");
    assert_eq!((first["hook"].as_str(), first["partner"].as_str()), (Some(hook_id.as_str()), Some("p1")));
    let stored = node.get("/v1/partners/p1/statements", &op).await.json()["statements"][0].clone();
    assert_eq!(first["statement"], stored, "the statement as the API serves it");
    assert_eq!(first["statement"]["period_start"], "2026-03-02T00:00:00Z");
    // The next day closes too; the first statement is not announced again, p2's never. A member
    // claimed the next one two minutes ago and died before posting: the claim is taken over.
    let start = settle_core::Instant::parse_rfc3339("2026-03-03T00:00:00Z").unwrap().to_rfc3339();
    let stale = json!({"status": "claimed", "at": unix_now() - 120}).to_string().into_bytes();
    let key = format!("{hook_id}/p1/{start}");
    let claim =
        settle_api::model::ControlOp::Put { space: settle_api::model::Space::Announced, key, value: stale };
    node.control.write(vec![claim]).await.unwrap();
    node.advance_to("2026-03-04T02:00:00Z").await;
    let (_, body) = next(&mut hooks).await;
    let second: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(second["partner"], "p1");
    assert_eq!(second["statement"]["period_start"], "2026-03-03T00:00:00Z", "{body}");
    assert_ne!(first["delivery"], second["delivery"]);

    let list = node.get("/v1/statement-hooks", &op).await.json();
    assert_eq!(list["hooks"].as_array().unwrap().len(), 1);
    assert_eq!(list["hooks"][0]["secret"], "***");
    let r = node.req("DELETE", &format!("/v1/statement-hooks/{hook_id}"), &admin, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let audit = node.get("/v1/audit?limit=500", &op).await.json();
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["statement_hook.create", "statement_hook.delete"] {
        assert!(actions.contains(&a), "{a} not audited");
    }
    assert!(hooks.try_recv().is_err(), "nothing delivered twice");
    node.stop().await;
}
