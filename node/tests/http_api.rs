//! The HTTP API against a real engine on a temp dir over real sockets: authentication, every
//! RBAC denial, the read model, exception resolution, the audit chain, metrics and downloads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http_common;

use http_common::*;
use serde_json::{json, Value};

/// Registers p1 and p2, submits traffic for both (and an exception each, and one for an unknown
/// partner), closes 2026-03-02 so both have a statement. Returns (admin session, keys by role).
struct World {
    admin: Cred,
    p1: Cred,
    p2: Cred,
    auditor: Cred,
    ingest: Cred,
    operator_key: Cred,
}

async fn world(node: &TestNode) -> World {
    let admin = node.admin_session().await;
    for id in ["p1", "p2"] {
        let r = node.post("/v1/partners", &admin, &partner_body(id)).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let w = World {
        p1: Cred::Key(node.key(&admin, "partner", Some("p1")).await),
        p2: Cred::Key(node.key(&admin, "partner", Some("p2")).await),
        auditor: Cred::Key(node.key(&admin, "auditor", None).await),
        ingest: Cred::Key(node.key(&admin, "ingest", None).await),
        operator_key: Cred::Key(node.key(&admin, "operator", None).await),
        admin,
    };
    let mut txs = Vec::new();
    for i in 0..12 {
        txs.push(sale(&format!("p1-s{i}"), "p1", "100.00", "EUR"));
    }
    for i in 0..5 {
        txs.push(sale(&format!("p2-s{i}"), "p2", "50.00", "EUR"));
    }
    txs.push(json!({"id": "p1-r0", "partner": "p1", "kind": "refund", "amount": "10.00", "currency": "EUR",
                    "occurred_at": "2026-03-02T09:30:00Z", "original": "p1-s0"}));
    txs.push(sale("p1-bad", "p1", "10.00", "XXX"));
    txs.push(sale("p2-bad", "p2", "10.00", "XXX"));
    txs.push(sale("nobody-1", "nobody", "10.00", "EUR"));
    let r = node.post("/v1/transactions", &w.ingest, &json!({"transactions": txs}).to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), txs.len());
    assert_eq!(results[0]["status"], "applied");
    assert_eq!(results[results.len() - 2]["reason"], "unknown_currency");
    // Close 2026-03-02 (cut-off 00:00 UTC + 1 h grace).
    node.advance_to("2026-03-03T01:30:00Z").await;
    w
}

async fn p2_exception_seq(node: &TestNode, w: &World) -> String {
    let r = node.get("/v1/exceptions?partner=p2", &w.admin).await;
    assert_eq!(r.status, 200);
    r.json()["exceptions"][0]["seq"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_get_401_json() {
    let node = TestNode::start().await;
    for path in [
        "/v1/partners",
        "/v1/partners/p1/balance",
        "/v1/transactions",
        "/v1/audit",
        "/v1/me",
        "/metrics",
        "/v1/live",
    ] {
        let r = node.get(path, &Cred::None).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.code(), "unauthenticated", "{path}");
        assert!(r.json()["error"]["message"].as_str().unwrap().len() > 5);
    }
    let r = node.post("/graphql", &Cred::None, r#"{"query":"{ partners { id } }"}"#).await;
    assert_eq!(r.status, 401);
    let r = node.get("/v1/partners", &Cred::Key("sk_nope.nope".into())).await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
    // Public: the OpenAPI document, the pages, health.
    let doc = node.get("/v1/openapi.json", &Cred::None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["openapi"].as_str().unwrap().chars().next(), Some('3'));
    for p in ["/v1/partners/{id}/balance", "/v1/transactions", "/v1/exceptions/{seq}/resolve", "/v1/audit"] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from the OpenAPI document");
    }
    let page = node.get("/dashboard", &Cred::None).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'self'"));
    assert!(!page.text().contains("http://") && !page.text().contains("https://"), "no external resources");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_key_sees_only_its_own_partner_everywhere() {
    let node = TestNode::start().await;
    let w = world(&node).await;
    let p2_seq = p2_exception_seq(&node, &w).await;
    let stmt = node.get("/v1/partners/p2/statements", &w.admin).await.json();
    let start = stmt["statements"][0]["period_start"].as_str().unwrap().to_string();
    let enc = start.replace(':', "%3A");
    // Every per-partner endpoint about p2, with p1's key: 404 (existence is not revealed).
    let denied = [
        "/v1/partners/p2".to_string(),
        "/v1/partners/p2/balance".into(),
        "/v1/partners/p2/contracts".into(),
        "/v1/partners/p2/statements".into(),
        "/v1/partners/p2/statements?format=csv".into(),
        format!("/v1/partners/p2/statements/{enc}"),
        format!("/v1/partners/p2/statements/{enc}?format=pdf"),
        format!("/v1/partners/p2/statements/{enc}?format=csv"),
        "/v1/partners/p2/overview".into(),
        "/v1/transactions?partner=p2".into(),
        "/v1/transactions/p2-s0".into(),
        "/v1/transactions/nobody-1".into(),
        "/v1/exceptions?partner=p2".into(),
        format!("/v1/exceptions/{p2_seq}"),
    ];
    for path in &denied {
        let r = node.get(path, &w.p1).await;
        assert!(r.status == 404 || r.status == 403, "{path}: {} {}", r.status, r.text());
        let body = r.json();
        assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["error"], "{path} leaked: {body}");
        // The same request with p2's key works (the denial is about ownership, not the path).
        if !path.contains("nobody") {
            assert_eq!(node.get(path, &w.p2).await.status, 200, "{path} with p2's key");
        }
    }
    // Lists are filtered to the own partner.
    let partners = node.get("/v1/partners", &w.p1).await.json();
    assert_eq!(partners["partners"].as_array().unwrap().len(), 1);
    assert_eq!(partners["partners"][0]["id"], "p1");
    let txs = node.get("/v1/transactions?limit=500", &w.p1).await.json();
    let txs = txs["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 14);
    assert!(txs.iter().all(|t| t["partner"] == "p1"));
    let ex = node.get("/v1/exceptions", &w.p1).await.json();
    assert!(ex["exceptions"].as_array().unwrap().iter().all(|e| e["partner"] == "p1"));
    assert_eq!(ex["exceptions"].as_array().unwrap().len(), 1);
    // Operator-wide views are forbidden.
    for path in [
        "/v1/audit",
        "/v1/audit/export",
        "/v1/overview",
        "/metrics",
        "/v1/users",
        "/v1/api-keys",
        "/v1/alerts",
    ] {
        assert_eq!(node.get(path, &w.p1).await.status, 403, "{path}");
    }
    // GraphQL: the same rules.
    let g = node.graphql(&w.p1, r#"{ partners { id } }"#).await;
    assert_eq!(g["data"]["partners"], json!([{"id": "p1"}]));
    for q in [
        r#"{ balance(partner: "p2") { payable } }"#,
        r#"{ statements(partner: "p2") { closing } }"#,
        r#"{ transactions(partner: "p2") { items { id } } }"#,
        r#"{ exceptions(partner: "p2") { id } }"#,
        r#"{ auditEvents { seq } }"#,
    ] {
        let g = node.graphql(&w.p1, q).await;
        assert!(g["errors"].is_array(), "{q}: {g}");
        assert!(!g.to_string().contains("p2-s"), "{q} leaked: {g}");
    }
    let g = node.graphql(&w.p1, r#"{ transaction(id: "p2-s1") { id } }"#).await;
    assert_eq!(g["data"]["transaction"], Value::Null);
    let g = node.graphql(&w.p1, r#"{ transactions(limit: 100) { items { partner } } }"#).await;
    let items = g["data"]["transactions"]["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.iter().all(|t| t["partner"] == "p1"));
    let g = node.graphql(&w.p1, r#"{ balance(partner: "p1") { payable currency } }"#).await;
    assert_eq!(g["data"]["balance"]["currency"], "EUR");
    // A partner cannot change anything either.
    assert_eq!(node.post("/v1/transactions", &w.p1, r#"{"transactions":[]}"#).await.status, 403);
    assert_eq!(node.post("/v1/partners", &w.p1, &partner_body("p3")).await.status, 403);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_reads_everything_and_changes_nothing() {
    let node = TestNode::start().await;
    let w = world(&node).await;
    let seq = p2_exception_seq(&node, &w).await;
    for path in [
        "/v1/partners",
        "/v1/partners/p2/balance",
        "/v1/transactions",
        "/v1/exceptions",
        "/v1/audit",
        "/v1/overview",
        "/metrics",
        "/v1/users",
        "/v1/alerts/rules",
    ] {
        assert_eq!(node.get(path, &w.auditor).await.status, 200, "{path}");
    }
    let audit_before =
        node.get("/v1/audit?limit=500", &w.auditor).await.json()["events"].as_array().unwrap().len();
    let mutations: Vec<(&str, String, String)> = vec![
        ("POST", "/v1/partners".into(), partner_body("p9")),
        ("POST", "/v1/partners/p1/contracts".into(), json!({"effective_from": "2026-04-01T00:00:00Z", "shares": [{"party": "partner", "percent": "100"}], "fees": []}).to_string()),
        ("POST", format!("/v1/exceptions/{seq}/resolve"), json!({"action": "reject", "reason": "no"}).to_string()),
        ("POST", "/v1/fx/rates".into(), json!({"rates": [{"base": "USD", "quote": "EUR", "rate": "0.9", "at": "2026-03-02T00:00:00Z"}]}).to_string()),
        ("POST", "/v1/transactions".into(), json!({"transactions": [sale("a1", "p1", "1.00", "EUR")]}).to_string()),
        ("POST", "/v1/users".into(), json!({"username": "eve", "role": "admin"}).to_string()),
        ("POST", "/v1/api-keys".into(), json!({"name": "k", "role": "admin"}).to_string()),
        ("DELETE", "/v1/api-keys/whatever".into(), String::new()),
        ("DELETE", "/v1/users/admin".into(), String::new()),
        ("POST", "/v1/alerts/rules".into(), json!({"name": "r", "metric": "in_flight", "condition": {"kind": "threshold", "comparator": ">", "threshold": 1, "window_s": 1}, "severity": "info"}).to_string()),
        ("POST", "/v1/alerts/x/ack".into(), String::new()),
        ("POST", "/v1/alerts/x/silence".into(), json!({"minutes": 5}).to_string()),
    ];
    for (method, path, body) in &mutations {
        let r = node.req(method, path, &w.auditor, Some(body)).await;
        assert_eq!((r.status, r.code()), (403, "forbidden".to_string()), "{method} {path}: {}", r.text());
    }
    let audit_after =
        node.get("/v1/audit?limit=500", &w.auditor).await.json()["events"].as_array().unwrap().len();
    assert_eq!(audit_before, audit_after, "a denied request changed something");
    // Ingest may submit and nothing else.
    assert_eq!(node.get("/v1/partners", &w.ingest).await.status, 403);
    assert_eq!(node.get("/v1/transactions", &w.ingest).await.status, 403);
    assert_eq!(node.post("/graphql", &w.ingest, r#"{"query":"{ partners { id } }"}"#).await.status, 403);
    assert_eq!(node.post("/v1/partners", &w.ingest, &partner_body("p8")).await.status, 403);
    // An operator key may change settlement configuration but not users or keys.
    assert_eq!(
        node.post("/v1/api-keys", &w.operator_key, &json!({"name": "k", "role": "admin"}).to_string())
            .await
            .status,
        403
    );
    assert_eq!(node.post("/v1/partners", &w.operator_key, &partner_body("p3")).await.status, 201);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_need_totp_for_admins_lock_out_and_sessions_need_csrf() {
    let node = TestNode::start().await;
    let secret = node.admin.totp_secret.clone().unwrap();
    let login =
        |u: &str, p: &str, t: Option<String>| json!({"username": u, "password": p, "totp": t}).to_string();
    // Password alone is not enough for an admin.
    let r = node.post("/v1/auth/login", &Cred::None, &login("admin", &node.admin.password, None)).await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("TOTP"), "{}", r.text());
    let code = totp_now(&secret);
    let admin = node.login("admin", &node.admin.password, Some(&code)).await;
    // The same code is not accepted twice.
    let r = node
        .post("/v1/auth/login", &Cred::None, &login("admin", &node.admin.password, Some(code.clone())))
        .await;
    assert_eq!(r.status, 401);
    let r = node.post("/v1/auth/login", &Cred::None, &login("admin", "wrong", Some(code))).await;
    assert_eq!(r.status, 401);
    // CSRF: a cookie-authenticated change without the token is refused, with it accepted.
    let Cred::Session { cookie, .. } = &admin else { panic!() };
    let body = json!({"username": "olivia", "role": "operator"}).to_string();
    let r = node.post("/v1/users", &Cred::CookieOnly(cookie.clone()), &body).await;
    assert_eq!((r.status, r.code()), (403, "csrf_failed".to_string()));
    let r = node.post("/v1/users", &admin, &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let creds = r.json()["credentials"].clone();
    let (pw, osecret) =
        (creds["password"].as_str().unwrap().to_string(), creds["totp_secret"].as_str().unwrap().to_string());
    assert!(creds["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"));
    // Secrets are shown once: the list never contains them.
    let users = node.get("/v1/users", &admin).await.text();
    assert!(!users.contains(&pw) && !users.contains(&osecret));
    // Session cookie attributes.
    let r = node.post("/v1/auth/login", &Cred::None, &login("olivia", &pw, Some(totp_now(&osecret)))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(c.contains(attr), "{c}");
    }
    // Five wrong passwords lock the account; then even the right one is refused.
    for _ in 0..5 {
        let r = node
            .post("/v1/auth/login", &Cred::None, &login("olivia", "not-it", Some(totp_now(&osecret))))
            .await;
        assert!(r.status == 401 || r.status == 429);
    }
    let r = node.post("/v1/auth/login", &Cred::None, &login("olivia", &pw, Some(totp_now(&osecret)))).await;
    assert_eq!((r.status, r.code()), (429, "locked_out".to_string()));
    // Logout ends the session.
    assert_eq!(node.post("/v1/auth/logout", &admin, "{}").await.status, 200);
    assert_eq!(node.get("/v1/me", &admin).await.status, 401);
    let audit =
        node.get("/v1/audit?limit=500", &node.direct_key(settle_api::auth::Role::Auditor).await).await.json();
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["user.create", "session.create", "user.lockout", "session.delete"] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_shown_once_revocable_and_expire() {
    let node = TestNode::start().await;
    let admin = node.admin_session().await;
    let r = node.post("/v1/api-keys", &admin, &json!({"name": "svc", "role": "auditor"}).to_string()).await;
    let key = r.json()["key"].as_str().unwrap().to_string();
    let id = r.json()["api_key"]["id"].as_str().unwrap().to_string();
    assert_eq!(node.get("/v1/partners", &Cred::Key(key.clone())).await.status, 200);
    let list = node.get("/v1/api-keys", &admin).await.text();
    assert!(list.contains(&id) && !list.contains(key.split('.').nth(1).unwrap()));
    assert_eq!(node.req("DELETE", &format!("/v1/api-keys/{id}"), &admin, None).await.status, 200);
    let r = node.get("/v1/partners", &Cred::Key(key)).await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("revoked"));
    // Expiry: a key whose expiry has passed is refused.
    let auth = settle_api::auth::Auth::new(node.control.clone(), TEST_ARGON2_KIB);
    let (mut record, key) = auth.new_key("old", settle_api::auth::Role::Auditor, None, None, "test").unwrap();
    record.expires_at = Some(1);
    node.control.write(vec![settle_api::auth::Auth::put_key_op(&record).unwrap()]).await.unwrap();
    let r = node.get("/v1/partners", &Cred::Key(key)).await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("expired"));
    let r = node
        .post("/v1/api-keys", &admin, &json!({"name": "x", "role": "auditor", "expires_at": 1}).to_string())
        .await;
    assert_eq!(r.status, 400);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_pages_filters_statements_and_downloads() {
    let node = TestNode::start().await;
    let w = world(&node).await;
    let admin = &w.operator_key;
    // Cursor pagination over every transaction: no overlap, nothing missing, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/transactions?limit=7&cursor={c}"),
            None => "/v1/transactions?limit=7".into(),
        };
        let page = node.get(&path, admin).await.json();
        for t in page["transactions"].as_array().unwrap() {
            seen.push(t["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 21, "{seen:?}");
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 21);
    assert_eq!(seen[0], "nobody-1");
    // Filters.
    let refunds = node.get("/v1/transactions?kind=refund", admin).await.json();
    assert_eq!(refunds["transactions"].as_array().unwrap().len(), 1);
    let exc = node.get("/v1/transactions?status=exception&partner=p1", admin).await.json();
    assert_eq!(exc["transactions"][0]["id"], "p1-bad");
    assert_eq!(exc["transactions"][0]["outcome"]["reason"], "unknown_currency");
    let period = node.get("/v1/transactions?partner=p2&period=2026-03-02T00:00:00Z", admin).await.json();
    assert_eq!(period["transactions"].as_array().unwrap().len(), 5);
    let t = node.get("/v1/transactions/p1-s3", admin).await.json();
    assert_eq!(t["amount"], "100.00");
    assert_eq!(t["outcome"]["status"], "applied");
    assert!(t["outcome"]["settled_amount"].is_string(), "money is a decimal string: {t}");
    assert_eq!(node.get("/v1/transactions?kind=gift", admin).await.status, 400);
    // Balance and statements: exact decimal strings.
    let b = node.get("/v1/partners/p1/balance", admin).await.json();
    assert!(b["payable"].as_str().unwrap().contains('.'));
    let s = node.get("/v1/partners/p1/statements", &w.p1).await.json();
    let st = &s["statements"][0];
    assert_eq!(st["gross_sales"], "1200.00");
    assert_eq!(st["refunds"], "10.00");
    assert_eq!(st["transaction_count"], 13);
    let start = st["period_start"].as_str().unwrap().replace(':', "%3A");
    let pdf = node.get(&format!("/v1/partners/p1/statements/{start}?format=pdf"), &w.p1).await;
    assert_eq!(pdf.status, 200);
    assert_eq!(pdf.header("content-type"), Some("application/pdf"));
    assert!(pdf.body.starts_with(b"%PDF-1.4") && pdf.text().contains("%%EOF"));
    assert!(pdf.text().contains("1200.00"));
    let csv = node.get("/v1/partners/p1/statements?format=csv", &w.p1).await;
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("partner,period_start"));
    assert!(
        lines[1].starts_with("p1,2026-03-02T00:00:00Z") && lines[1].contains(",1200.00,"),
        "{}",
        lines[1]
    );
    // A contract version in a closed period is refused; a valid one is accepted and audited.
    let closed = json!({"effective_from": "2026-03-02T12:00:00Z", "shares": [{"party": "partner", "percent": "100"}], "fees": []});
    let r = node.post("/v1/partners/p1/contracts", &w.admin, &closed.to_string()).await;
    assert_eq!((r.status, r.code()), (422, "rejected".to_string()), "{}", r.text());
    let ok = json!({"effective_from": "2026-03-10T00:00:00Z", "shares": [{"party": "partner", "percent": "100"}], "fees": []});
    assert_eq!(node.post("/v1/partners/p1/contracts", &w.admin, &ok.to_string()).await.status, 201);
    let bad = json!({"id": "p5", "settlement_currency": "EUR", "since": "2026-03-02T00:00:00Z", "cycle": {"every": "daily", "cutoff": "00:00", "tz": "Mars/Olympus"}, "contracts": []});
    let r = node.post("/v1/partners", &w.admin, &bad.to_string()).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Mars/Olympus"));
    // Metrics.
    let m = node.get("/metrics", admin).await.text();
    for needle in [
        "settle_ack_latency_seconds_bucket",
        "settle_exceptions_total{reason=\"unknown_currency\"} 2",
        "settle_rocksdb{cf=\"log\"",
        "settle_partner_transactions{partner=\"p1\"}",
        "settle_engine_in_flight",
    ] {
        assert!(m.contains(needle), "{needle} missing from /metrics");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_resolve_by_retry_or_reject_and_every_step_is_audited() {
    let node = TestNode::start().await;
    let w = world(&node).await;
    let open = node.get("/v1/exceptions?status=open", &w.admin).await.json();
    let open = open["exceptions"].as_array().unwrap().clone();
    assert_eq!(open.len(), 3);
    let p1_bad = open.iter().find(|e| e["id"] == "p1-bad").unwrap()["seq"].as_str().unwrap().to_string();
    let p2_bad = open.iter().find(|e| e["id"] == "p2-bad").unwrap()["seq"].as_str().unwrap().to_string();
    // Retry with the currency corrected: applied under a new id.
    let body = json!({"action": "retry", "corrections": {"currency": "EUR"}}).to_string();
    let r = node.post(&format!("/v1/exceptions/{p1_bad}/resolve"), &w.admin, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let res = r.json();
    assert_eq!(res["status"], "resolved");
    assert_eq!(res["resolution"]["outcome"]["status"], "applied");
    let retry_id = res["resolution"]["retry_id"].as_str().unwrap().to_string();
    assert_eq!(node.get(&format!("/v1/transactions/{retry_id}"), &w.p1).await.json()["currency"], "EUR");
    // Resolved once only.
    assert_eq!(node.post(&format!("/v1/exceptions/{p1_bad}/resolve"), &w.admin, &body).await.status, 409);
    // Reject needs a reason.
    let r = node.post(&format!("/v1/exceptions/{p2_bad}/resolve"), &w.admin, r#"{"action":"reject"}"#).await;
    assert_eq!(r.status, 400);
    let r = node
        .post(
            &format!("/v1/exceptions/{p2_bad}/resolve"),
            &w.admin,
            r#"{"action":"reject","reason":"test data"}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    // Nothing is dropped from the queue: resolved entries stay, with their resolution.
    let all = node.get("/v1/exceptions", &w.admin).await.json();
    assert_eq!(all["exceptions"].as_array().unwrap().len(), 3);
    let open = node.get("/v1/exceptions?status=open", &w.admin).await.json();
    assert_eq!(open["exceptions"].as_array().unwrap().len(), 1);
    // The partner sees its own exception's resolution.
    let mine = node.get(&format!("/v1/exceptions/{p2_bad}"), &w.p2).await.json();
    assert_eq!(mine["resolution"]["reason"], "test data");
    // Audit: who, what, before and after, chained.
    let audit = node.get("/v1/audit?limit=500", &w.auditor).await.json();
    let events = audit["events"].as_array().unwrap();
    let resolves: Vec<&Value> = events.iter().filter(|e| e["action"] == "exception.resolve").collect();
    assert_eq!(resolves.len(), 2);
    assert_eq!(resolves[0]["before"]["status"], "open");
    assert_eq!(resolves[0]["after"]["action"], "retry");
    assert!(resolves[0]["actor"].as_str().unwrap().starts_with("user:admin"));
    for pair in events.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
    }
    let v = node.get("/v1/audit/verify", &w.auditor).await.json();
    assert_eq!(v["ok"], true, "{v}");
    let export = node.get("/v1/audit/export", &w.auditor).await;
    assert_eq!(export.text().lines().count(), events.len());
    let g = node.graphql(&w.auditor, "{ auditEvents(limit: 500) { action actor hash } }").await;
    assert_eq!(g["data"]["auditEvents"].as_array().unwrap().len(), events.len());
    // Tampering with a stored record breaks the chain at that record.
    let mut altered: Value = events[3].clone();
    altered["actor"] = json!("user:mallory");
    let seq: u64 = altered["seq"].as_u64().unwrap();
    node.raw
        .write_unchecked(vec![settle_api::model::ControlOp::Audit {
            seq,
            record: serde_json::to_vec(&altered).unwrap(),
        }])
        .unwrap();
    let v = node.get("/v1/audit/verify", &w.auditor).await.json();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains(&format!("audit record {seq}")), "{v}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_audit_verify_checks_the_chain_of_a_data_dir() {
    let node = TestNode::start().await;
    let admin = node.admin_session().await;
    assert_eq!(node.post("/v1/partners", &admin, &partner_body("p1")).await.status, 201);
    node.key(&admin, "auditor", None).await;
    let third = settle_api::audit::read(node.control.as_ref(), Some(1), 1).unwrap().remove(0);
    let tmp = node.stop_keep_dir().await;
    let dir = tmp.path().to_path_buf();
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_settle"))
            .args(["audit", "verify", "--data"])
            .arg(&dir)
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["records"].as_u64().unwrap() >= 4, "{report}");
    // Alter one record on disk: the chain breaks there.
    {
        let store = std::sync::Arc::new(settle_storage::Store::open(&dir.join("engine")).unwrap());
        let control = settle_node::api::StoreControl(store);
        let mut altered = third.clone();
        altered.after = json!({"forged": true});
        control
            .write_unchecked(vec![settle_api::model::ControlOp::Audit {
                seq: third.seq,
                record: serde_json::to_vec(&altered).unwrap(),
            }])
            .unwrap();
    }
    let out = verify();
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["error"].as_str().unwrap().contains(&format!("audit record {}", third.seq)), "{report}");
    drop(tmp);
}
