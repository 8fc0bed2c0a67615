//! The HTTP API on a real 3-node cluster (three `settle node --id N --http` processes over real
//! sockets): anonymous requests are refused on every member; the first administrator is created
//! once and logs in with TOTP on node 1, and the session and keys work on the others at once (the
//! control plane is the metadata group); partners are created through node 2, traffic comes
//! over QUIC to nodes 1 and 3, and what node 3 reads (transactions across shards, balances,
//! statements, exceptions) equals `settle_core::Ledger` fed the same history; an exception
//! resolved through node 2 is resolved on every member; a partner key sees nothing of another
//! partner anywhere; the audit chain is the same on every member, also on disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster_common;
mod common;
mod http_common;

use cluster_common::Cluster;
use http_common::{graphql_at, http, key_at, login_at, totp_now, Cred, Resp};
use serde_json::{json, Value};
use settle_core::{Instant, Ledger, Span};
use settle_wire as wire;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const SHARDS: u32 = 16;
const PARTNERS: [&str; 4] = ["pa", "pb", "pc", "pd"];
/// How long the members may take to agree (replication to followers is asynchronous).
const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

/// A daily UTC EUR partner whose first period began three days ago (so the periods before
/// today are closed and have statements), 80/20 split, 1.5% + 0.10 fees.
fn partner_body(id: &str) -> String {
    let since = common::now().start_of_utc_day().saturating_sub(Span::from_hours(72)).to_rfc3339();
    json!({
        "id": id, "settlement_currency": "EUR", "since": since,
        "cycle": {"every": "daily", "cutoff": "00:00", "tz": "UTC", "grace": "PT1H"},
        "contracts": [{"effective_from": since,
            "shares": [{"party": "partner", "percent": "80"}, {"party": "platform", "percent": "20"}],
            "fees": [{"kind": "percent", "bps": "150"}, {"kind": "fixed", "amount": "0.10"}],
            "chargeback_fee": "15.00"}]
    })
    .to_string()
}

fn tx(id: String, partner: &str, amount: &str, currency: &str) -> wire::Transaction {
    wire::Transaction {
        id,
        partner: Some(partner.to_string()),
        kind: wire::TxKind::Sale as i32,
        amount: Some(amount.to_string()),
        currency: Some(currency.into()),
        occurred_at: common::minutes_ago_rfc3339(5),
        ..Default::default()
    }
}

/// A read, retried while it answers 503 as any client should (a member that briefly has no
/// metadata or shard leader, e.g. during an election on a loaded machine, says "unavailable").
async fn get(addr: SocketAddr, path: &str, cred: &Cred) -> Resp {
    let start = std::time::Instant::now();
    loop {
        let r = http(addr, "GET", path, cred, None).await;
        if r.status != 503 || start.elapsed() >= CONVERGE_DEADLINE {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(addr: SocketAddr, path: &str, cred: &Cred, body: &str) -> Resp {
    http(addr, "POST", path, cred, Some(body)).await
}

/// Every page of a list, following `next_cursor`.
async fn all_pages(addr: SocketAddr, path: &str, field: &str, cred: &Cred) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let page_path = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let r = get(addr, &page_path, cred).await;
        assert_eq!(r.status, 200, "{page_path}: {}", r.text());
        let page = r.json();
        out.extend(page[field].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// The transaction as `settle_core` reads it back from the API's rendering.
fn tx_input(t: &Value) -> settle_core::TxInput {
    let mut fields = serde_json::Map::new();
    for k in
        ["id", "partner", "kind", "amount", "currency", "occurred_at", "received_at", "original", "reason"]
    {
        if !t[k].is_null() {
            fields.insert(k.into(), t[k].clone());
        }
    }
    settle_core::scenario::parse_transaction(&Value::Object(fields), "tx", None).unwrap()
}

/// Polls `f` until it holds, within the deadline.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < CONVERGE_DEADLINE, "{what} did not happen within {CONVERGE_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_on_a_three_node_cluster_is_one_system() {
    let mut cluster = Cluster::new(SHARDS).with_http();
    cluster.start_all();
    let nodes: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.http.unwrap()).collect();

    // Anonymous requests are refused everywhere.
    for &addr in &nodes {
        for path in ["/v1/partners", "/v1/transactions", "/v1/exceptions", "/v1/audit", "/metrics"] {
            let r = get(addr, path, &Cred::None).await;
            assert_eq!((r.status, r.code()), (401, "unauthenticated".to_string()), "{addr}{path}");
        }
        assert_eq!(
            post(addr, "/graphql", &Cred::None, r#"{"query":"{ partners { id } }"}"#).await.status,
            401
        );
    }

    // The first administrator was created once, by one member.
    let admins: Vec<&Value> = cluster
        .nodes
        .iter()
        .map(|n| &n.ready.as_ref().unwrap()["bootstrap_admin"])
        .filter(|a| !a.is_null())
        .collect();
    assert_eq!(admins.len(), 1, "one bootstrap admin for the cluster: {admins:?}");
    let (user, password, secret) = (
        admins[0]["username"].as_str().unwrap().to_string(),
        admins[0]["password"].as_str().unwrap().to_string(),
        admins[0]["totp_secret"].as_str().unwrap().to_string(),
    );
    let code = totp_now(&secret);
    let admin = login_at(nodes[0], &user, &password, Some(&code)).await;
    // The code was used on node 1: node 2 refuses it (one linearizable record of the step).
    let again = json!({"username": user, "password": password, "totp": code}).to_string();
    assert_eq!(post(nodes[1], "/v1/auth/login", &Cred::None, &again).await.status, 401);
    // The session made on node 1 works on nodes 2 and 3 at once; so does a key made there.
    for &addr in &nodes[1..] {
        let me = get(addr, "/v1/me", &admin).await;
        assert_eq!(me.status, 200, "{}", me.text());
        assert_eq!(me.json()["subject"], format!("user:{user}"));
    }
    let ops = Cred::Key(key_at(nodes[0], &admin, "operator", None).await);
    let auditor = Cred::Key(key_at(nodes[0], &admin, "auditor", None).await);
    assert_eq!(get(nodes[2], "/v1/partners", &ops).await.status, 200);

    // Partners created through node 2 (with node 1's session and its CSRF token).
    for p in PARTNERS {
        let r = post(nodes[1], "/v1/partners", &admin, &partner_body(p)).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    assert_eq!(post(nodes[2], "/v1/partners", &ops, &partner_body("pa")).await.status, 422);

    // Traffic over QUIC through nodes 1 and 3: sales, bad currencies, an unknown partner.
    let clients = [cluster.client(0).await, cluster.client(2).await];
    let mut submitted = 0usize;
    for round in 0..6usize {
        let mut batch = Vec::new();
        for (i, p) in PARTNERS.iter().enumerate() {
            for k in 0..5usize {
                let n = round * 100 + i * 10 + k;
                batch.push(tx(format!("t{n:04}"), p, &format!("{}.{:02}", 10 + n % 90, n % 100), "EUR"));
            }
        }
        batch.push(tx(format!("bad-{round}"), PARTNERS[round % 4], "10.00", "XXX"));
        batch.push(tx(format!("nobody-{round}"), "nobody", "10.00", "EUR"));
        submitted += batch.len();
        let results = clients[round % 2].submit(batch).await.unwrap();
        assert!(results.iter().all(|r| !r.duplicate));
    }

    // Everything, read through node 3 across the shards, newest first, no page overlapping.
    let txs = all_pages(nodes[2], "/v1/transactions?limit=7", "transactions", &ops).await;
    assert_eq!(txs.len(), submitted);
    let mut ids: Vec<&str> = txs.iter().map(|t| t["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), submitted, "pages overlapped");
    let stamps: Vec<Instant> =
        txs.iter().map(|t| Instant::parse_rfc3339(t["received_at"].as_str().unwrap()).unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // The same history through settle_core gives the same outcomes, balances and statements.
    let mut ledger = Ledger::new(Span::from_hours(settle_core::ledger::DEFAULT_FX_MAX_AGE_HOURS), 0);
    for p in PARTNERS {
        let value: Value = serde_json::from_str(&partner_body(p)).unwrap();
        ledger.add_partner(settle_core::scenario::parse_partner(&value, "partner").unwrap()).unwrap();
    }
    let mut statements = Vec::new();
    let mut exceptions = 0;
    for t in txs.iter().rev() {
        let result = ledger.apply(tx_input(t), Instant::MAX, &mut statements);
        let expected = settle_api::views::outcome(
            &result.outcome,
            Some(settle_core::Currency::from_code("EUR").unwrap()),
        );
        let got = &t["outcome"];
        assert_eq!(got["status"], expected["status"], "{t}");
        assert_eq!(got["reason"], expected["reason"], "{t}");
        if expected["status"] == "applied" {
            assert_eq!(got["payable_after"], expected["payable_after"], "{t}");
            assert_eq!(got["settled_amount"], expected["settled_amount"], "{t}");
        } else {
            exceptions += 1;
        }
    }
    for p in PARTNERS {
        let b = get(nodes[2], &format!("/v1/partners/{p}/balance"), &ops).await.json();
        let payable = ledger.account(p).unwrap().payable();
        assert_eq!(
            b["payable"],
            settle_api::views::money(payable, settle_core::Currency::from_code("EUR").unwrap())
        );
        let got = get(nodes[2], &format!("/v1/partners/{p}/statements"), &ops).await.json();
        let mut want: Vec<Value> =
            statements.iter().filter(|s| s.partner == p).map(settle_api::views::statement).collect();
        want.reverse();
        assert!(!want.is_empty(), "the days before today closed");
        assert_eq!(got["statements"], Value::Array(want), "{p}");
    }
    // Every closed statement is announced once to a statement hook (by the metadata leader, which
    // claims each delivery in the shared control store first).
    let (url, mut hooks) = http_common::webhook_receiver().await;
    let hook = json!({"url": url, "secret": "s", "from": "2000-01-01T00:00:00Z"}).to_string();
    let r = post(nodes[0], "/v1/statement-hooks", &admin, &hook).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let hook_id = r.json()["id"].as_str().unwrap().to_string();
    let mut announced = std::collections::BTreeSet::new();
    while announced.len() < statements.len() {
        let (_, body) = tokio::time::timeout(CONVERGE_DEADLINE, hooks.recv()).await.unwrap().unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        let key = (v["partner"].as_str().unwrap().to_string(), v["statement"]["period_start"].to_string());
        assert!(announced.insert(key), "announced twice: {body}");
    }
    let want: std::collections::BTreeSet<(String, String)> = statements
        .iter()
        .map(|s| (s.partner.clone(), settle_api::views::statement(s)["period_start"].to_string()))
        .collect();
    assert_eq!(announced, want);
    // Bounded look for a duplicate: a later round would have delivered it by now.
    let wait = settle_api::announce::ANNOUNCE_INTERVAL * 2 + Duration::from_secs(1);
    assert!(tokio::time::timeout(wait, hooks.recv()).await.is_err(), "a statement was announced twice");
    let r = http(nodes[2], "DELETE", &format!("/v1/statement-hooks/{hook_id}"), &admin, None).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let queue = all_pages(nodes[2], "/v1/exceptions?limit=3", "exceptions", &ops).await;
    assert_eq!(queue.len(), exceptions);
    assert!(queue.iter().all(|e| e["status"] == "open" && e["transaction"].is_object()));

    // Resolve through node 2: a retry with the currency corrected, a rejection.
    let find = |id: &str| queue.iter().find(|e| e["id"] == id).unwrap()["seq"].as_str().unwrap().to_string();
    let (bad, nobody) = (find("bad-0"), find("nobody-2"));
    let body = json!({"action": "retry", "corrections": {"currency": "EUR"}}).to_string();
    let r = post(nodes[1], &format!("/v1/exceptions/{bad}/resolve"), &admin, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resolved = r.json();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolution"]["outcome"]["status"], "applied");
    let retry_id = resolved["resolution"]["retry_id"].as_str().unwrap().to_string();
    let body = json!({"action": "reject", "reason": "test data"}).to_string();
    assert_eq!(post(nodes[1], &format!("/v1/exceptions/{nobody}/resolve"), &admin, &body).await.status, 200);
    for &addr in &nodes {
        let e = get(addr, &format!("/v1/exceptions/{bad}"), &ops).await.json();
        assert_eq!(e["resolution"], resolved["resolution"], "{addr}");
        let r = get(addr, &format!("/v1/exceptions/{nobody}"), &ops).await;
        assert_eq!(r.json()["resolution"]["reason"], "test data", "{addr}: {} {}", r.status, r.text());
        assert_eq!(get(addr, &format!("/v1/transactions/{retry_id}"), &ops).await.json()["currency"], "EUR");
    }
    assert_eq!(post(nodes[2], &format!("/v1/exceptions/{bad}/resolve"), &ops, &body).await.status, 409);
    let open = all_pages(nodes[0], "/v1/exceptions?status=open", "exceptions", &ops).await;
    assert_eq!(open.len(), exceptions - 2);

    // A partner key sees only its own partner, on every member, in REST and GraphQL.
    let pa = Cred::Key(key_at(nodes[0], &admin, "partner", Some("pa")).await);
    for &addr in &nodes {
        for path in [
            "/v1/partners/pb",
            "/v1/partners/pb/balance",
            "/v1/partners/pb/statements",
            "/v1/transactions?partner=pb",
            "/v1/exceptions?partner=pb",
            "/v1/transactions/t0010",
        ] {
            let r = get(addr, path, &pa).await;
            assert!(r.status == 404 || r.status == 403, "{addr}{path}: {} {}", r.status, r.text());
            let body = r.json();
            assert_eq!(
                body.as_object().unwrap().keys().collect::<Vec<_>>(),
                ["error"],
                "{path} leaked: {body}"
            );
        }
        let mine = all_pages(addr, "/v1/transactions?limit=50", "transactions", &pa).await;
        let pa_count = txs.iter().filter(|t| t["partner"] == "pa").count() + 1;
        assert_eq!(mine.len(), pa_count, "pa's transactions and the retry ({addr})");
        assert!(mine.iter().all(|t| t["partner"] == "pa"));
        let g = graphql_at(addr, &pa, r#"{ balance(partner: "pb") { payable } }"#).await;
        assert!(g["errors"].is_array(), "{g}");
        let g = graphql_at(addr, &pa, r#"{ transactions(limit: 100) { items { partner } } }"#).await;
        let items = g["data"]["transactions"]["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.iter().all(|t| t["partner"] == "pa"), "{g}");
    }

    // A staleness rule on node 3 reads the FX table a rate published through node 1 went to.
    let rates =
        json!({"rates": [{"base": "USD", "quote": "EUR", "rate": "0.9", "at": "2026-03-02T00:00:00Z"}]});
    assert_eq!(post(nodes[0], "/v1/fx/rates", &ops, &rates.to_string()).await.status, 200);
    let rule = json!({"name": "usd stale", "metric": "fx_age_s:USD/EUR", "severity": "warning",
        "condition": {"kind": "threshold", "comparator": ">", "threshold": 3600, "window_s": 1}});
    let r = post(nodes[2], "/v1/alerts/rules", &ops, &rule.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let rule_id = r.json()["id"].as_str().unwrap().to_string();
    eventually("the FX staleness alert firing on node 3", || async {
        let alerts = get(nodes[2], "/v1/alerts", &ops).await.json();
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == rule_id.as_str() && a["firing"] == true)
    })
    .await;

    // The audit chain is the same on every member.
    eventually("equal audit chains on every member", || async {
        let mut heads = Vec::new();
        for &addr in &nodes {
            let v = get(addr, "/v1/audit/verify", &auditor).await.json();
            heads.push((v["ok"].clone(), v["records"].clone(), v["head"].clone()));
        }
        heads.iter().all(|h| h == &heads[0] && h.0 == true)
    })
    .await;
    let chain = get(nodes[0], "/v1/audit?limit=500", &auditor).await.json();
    let actions: Vec<&str> =
        chain["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["user.create", "session.create", "api_key.create", "partner.create", "exception.resolve"] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    for &addr in &nodes[1..] {
        assert_eq!(get(addr, "/v1/audit?limit=500", &auditor).await.json(), chain);
    }

    // A member's health and Raft figures.
    let overview = get(nodes[2], "/v1/overview", &ops).await.json();
    let shards = overview["cluster"]["shards"].as_array().unwrap();
    assert_eq!(shards.len(), SHARDS as usize);
    assert!(shards.iter().all(|s| s["leader"].is_u64()), "{overview}");
    assert_eq!(overview["nodes"].as_array().unwrap().len(), 3);
    let metrics = get(nodes[2], "/metrics", &ops).await.text();
    for needle in [
        "settle_raft_groups{state=\"leader\"}",
        "settle_raft_leader_changes_total",
        "settle_raft_applied_index_total",
        "settle_raft_apply_lag{stat=\"max\"}",
        "settle_rocksdb{cf=\"shard_history\"",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }

    // The listing `settle reconcile` reads (QUIC ListTransactions) works on a member.
    let mut listed = Vec::new();
    let mut after = 0;
    loop {
        let q = wire::ListTransactions {
            partner: "pa".into(),
            from: common::now().start_of_utc_day().saturating_sub(Span::from_hours(24)).to_rfc3339(),
            to: common::now().saturating_add(Span::from_hours(24)).to_rfc3339(),
            after_seq: after,
            limit: 4,
        };
        let page = clients[1].list_transactions(q).await.unwrap();
        listed.extend(page.items.iter().map(|i| i.tx.as_ref().unwrap().id.clone()));
        after = page.next_after_seq;
        if page.done {
            break;
        }
    }
    let mut want: Vec<String> = txs
        .iter()
        .rev()
        .filter(|t| t["partner"] == "pa")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    want.push(retry_id.clone());
    assert_eq!(listed, want, "the partner's transactions in log order");

    // On disk, every member holds the same chain (settle audit verify on a stopped member).
    let mut reports = BTreeMap::new();
    for i in 0..3 {
        cluster.stop(i);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_settle"))
            .args(["audit", "verify", "--data"])
            .arg(&cluster.nodes[i].data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        reports.insert(i, (report["records"].clone(), report["head"].clone()));
    }
    assert!(reports.values().all(|r| r == &reports[&0]), "{reports:?}");
    assert_eq!(reports[&0].0, json!(actions.len()));
}

/// A daily UTC partner without grace whose current period ends at `cutoff` (HH:MM), registered
/// during that period: 70/30 split, 2% + 0.25 fees, a 15.00 chargeback fee.
fn closing_partner_body(id: &str, cutoff: &str, since: Instant) -> Value {
    json!({
        "id": id, "settlement_currency": "EUR", "since": since.to_rfc3339(),
        "cycle": {"every": "daily", "cutoff": cutoff, "tz": "UTC", "grace": "PT0S"},
        "contracts": [{"effective_from": since.to_rfc3339(),
            "shares": [{"party": "partner", "percent": "70"}, {"party": "platform", "percent": "30"}],
            "fees": [{"kind": "percent", "bps": "200"}, {"kind": "fixed", "amount": "0.25"}],
            "chargeback_fee": "15.00"}]
    })
}

/// The period a live cluster closes on schedule (its leaders' ticks, through the shard logs)
/// gives the statements `settle replay` computes from the same history: traffic is sent in a
/// period that ends at the next whole minute, the cluster closes it, and the transactions read
/// back (with the `received_at` the leaders stamped) are replayed by the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_closed_live_by_the_cluster_equals_settle_replay() {
    const MINUTE: i128 = 60_000_000_000;
    let start = common::now();
    // The next whole minute at least 30 s away: time to register and send before it ends.
    let mut end = Instant((start.0 / MINUTE + 1) * MINUTE);
    if end.0 - start.0 < 30 * 1_000_000_000 {
        end = Instant(end.0 + MINUTE);
    }
    let cutoff = end.to_rfc3339()[11..16].to_string();
    let since = start.saturating_sub(Span::from_minutes(10));
    let partners: Vec<(String, Value)> =
        ["qa", "qb"].iter().map(|p| (p.to_string(), closing_partner_body(p, &cutoff, since))).collect();

    let mut cluster = Cluster::new(SHARDS).with_http();
    cluster.start_all();
    let nodes: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.http.unwrap()).collect();
    let admin_line = cluster
        .nodes
        .iter()
        .map(|n| n.ready.as_ref().unwrap()["bootstrap_admin"].clone())
        .find(|a| !a.is_null())
        .unwrap();
    let admin = login_at(
        nodes[0],
        admin_line["username"].as_str().unwrap(),
        admin_line["password"].as_str().unwrap(),
        Some(&totp_now(admin_line["totp_secret"].as_str().unwrap())),
    )
    .await;
    let ops = Cred::Key(key_at(nodes[0], &admin, "operator", None).await);
    for (_, body) in &partners {
        let r = post(nodes[1], "/v1/partners", &admin, &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }

    // Sales, a refund and a chargeback of some of them, through two members.
    let clients = [cluster.client(0).await, cluster.client(2).await];
    for (i, (p, _)) in partners.iter().enumerate() {
        let mut sales: Vec<wire::Transaction> = (0..12usize)
            .map(|k| tx(format!("{p}-s{k:02}"), p, &format!("{}.{:02}", 7 + k * 13, (k * 37) % 100), "EUR"))
            .collect();
        let results = clients[i % 2].submit(sales.clone()).await.unwrap();
        assert!(results.iter().all(|r| matches!(r.outcome, Some(wire::tx_result::Outcome::Applied(_)))));
        let mut refund = sales.remove(3);
        refund.id = format!("{p}-r03");
        refund.kind = wire::TxKind::Refund as i32;
        refund.amount = Some("2.50".into());
        refund.original = Some(format!("{p}-s03"));
        let mut chargeback = sales.remove(5);
        chargeback.id = format!("{p}-c06");
        chargeback.kind = wire::TxKind::Chargeback as i32;
        chargeback.original = Some(format!("{p}-s06"));
        let results = clients[(i + 1) % 2].submit(vec![refund, chargeback]).await.unwrap();
        assert!(
            results.iter().all(|r| matches!(r.outcome, Some(wire::tx_result::Outcome::Applied(_)))),
            "{results:?}"
        );
    }
    assert!(common::now() < end, "the traffic was sent before the period ended");

    // The leaders close the period once it ends; every member then serves its statements.
    let deadline = std::time::Instant::now()
        + Duration::from_nanos(u64::try_from(end.0 - common::now().0).unwrap_or(0))
        + CONVERGE_DEADLINE;
    let mut live = BTreeMap::new();
    for (p, _) in &partners {
        for &addr in &nodes {
            loop {
                let got = get(addr, &format!("/v1/partners/{p}/statements"), &ops).await.json();
                if got["statements"].as_array().is_some_and(|s| !s.is_empty()) {
                    live.insert(p.clone(), got["statements"].clone());
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "no statement of {p} on {addr}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    // The same history, as the cluster recorded it, through `settle replay`.
    let txs = all_pages(nodes[2], "/v1/transactions?limit=50", "transactions", &ops).await;
    let fields =
        ["id", "partner", "kind", "amount", "currency", "occurred_at", "received_at", "original", "reason"];
    let history: Vec<Value> = txs
        .iter()
        .rev()
        .map(|t| {
            Value::Object(
                fields.iter().filter(|k| !t[**k].is_null()).map(|k| (k.to_string(), t[*k].clone())).collect(),
            )
        })
        .collect();
    assert_eq!(history.len(), 28);
    let scenario = json!({
        "partners": partners.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
        "rates": [],
        "transactions": history,
        "close_until": common::now().to_rfc3339(),
    });
    let file = cluster.dir.path().join("live-history.json");
    std::fs::write(&file, scenario.to_string()).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_settle")).arg("replay").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replayed: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (p, _) in &partners {
        let mut want: Vec<Value> = replayed["statements"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["partner"] == p.as_str())
            .cloned()
            .collect();
        want.reverse();
        assert_eq!(want.len(), 1, "one period closed: {want:?}");
        assert_eq!(live[p], Value::Array(want), "{p}: live statements differ from settle replay");
        let balance = get(nodes[0], &format!("/v1/partners/{p}/balance"), &ops).await.json();
        let replayed_balance =
            replayed["balances"].as_array().unwrap().iter().find(|b| b["partner"] == p.as_str()).unwrap();
        assert_eq!(balance["payable"], replayed_balance["payable"], "{p}");
    }

    // The closed period archived from a member's backup, then removed from the hot history:
    // the statements and balances stay, an archived id still answers as a duplicate.
    let dir = cluster.dir.path();
    let cli = |args: Vec<String>| async move {
        let out =
            tokio::process::Command::new(env!("CARGO_BIN_EXE_settle")).args(&args).output().await.unwrap();
        assert!(out.status.success(), "settle {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let quic = cluster.nodes[0].quic.unwrap().to_string();
    cli(vec![
        "backup".into(),
        "--out".into(),
        path("member-backup"),
        "--target".into(),
        quic,
        "--cert".into(),
        path("cert.pem"),
        "--api-key-file".into(),
        path("api-key"),
    ])
    .await;
    cli(vec![
        "archive".into(),
        "export".into(),
        "--data".into(),
        path("member-backup"),
        "--out".into(),
        path("archive"),
        "--before".into(),
        end.to_rfc3339(),
    ])
    .await;
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("archive/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["periods"].as_array().unwrap().len(), 2, "{manifest}");
    assert_eq!(manifest["files"][1]["lines"], 28, "{manifest}");
    std::fs::write(dir.join("admin-key"), key_at(nodes[0], &admin, "admin", None).await).unwrap();
    let prune = |api: SocketAddr| {
        vec![
            "archive".into(),
            "prune".into(),
            "--from".into(),
            path("archive"),
            "--api".into(),
            format!("http://{api}"),
            "--api-key-file".into(),
            path("admin-key"),
        ]
    };
    cli(prune(nodes[1])).await;
    for &addr in &nodes {
        let left = all_pages(addr, "/v1/transactions?limit=50", "transactions", &ops).await;
        assert!(left.is_empty(), "{addr}: archived transactions still listed: {left:?}");
        for (p, _) in &partners {
            let got = get(addr, &format!("/v1/partners/{p}/statements"), &ops).await.json();
            assert_eq!(got["statements"], live[p], "{p} on {addr}");
        }
    }
    // Again: nothing more to remove.
    cli(prune(nodes[2])).await;
    let again = clients[0]
        .submit(vec![tx(format!("{}-s00", partners[0].0), &partners[0].0, "7.00", "EUR")])
        .await
        .unwrap();
    // (Same id, another occurred_at: the id is still known, so it conflicts instead of applying.)
    let known = matches!(&again[0].outcome, Some(wire::tx_result::Outcome::Exception(e)) if e.reason == "duplicate_conflict");
    assert!(known, "an archived id is still known: {again:?}");
    let audit = get(nodes[0], "/v1/audit", &admin).await.json();
    assert!(audit.to_string().contains("archive.prune"), "{audit}");
}
