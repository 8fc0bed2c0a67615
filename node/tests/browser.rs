//! The dashboard and the partner portal in real headless Chromium (Debian's `chromium`, driven
//! by playwright-core from `tests/browser`): log in with TOTP, numbers move under load, drill
//! into a partner; the portal shows only its own partner and offers statement downloads. Once
//! on a standalone node, once on a real 3-process cluster (the dashboard then shows every node
//! up and every shard's leader; the portal is served by another member than the dashboard).
//! `scripts/setup.sh` installs Chromium and the npm package; the tests are skipped (with a
//! message) only where they cannot be installed. SETTLE_UPDATE_SCREENSHOTS=1 makes the cluster
//! test write the screenshots to docs/img.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster_common;
mod common;
mod http_common;

use http_common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);
const OWN: &str = "p00000";
const OTHER: &str = "p00001";

fn amount(currency: &str, i: usize) -> String {
    if currency == "JPY" {
        format!("{}", 1000 + (i * 37) % 9000)
    } else {
        format!("{}.{:02}", 10 + (i * 7) % 190, (i * 13) % 100)
    }
}

fn traffic(batch: usize, from: usize, at: &str) -> serde_json::Value {
    let currencies = ["EUR", "USD", "GBP", "JPY"];
    let txs: Vec<_> = (from..from + batch)
        .map(|i| {
            let p = i % 6;
            let currency = if i % 251 == 5 { "XXX" } else { currencies[p % 4] };
            json!({"id": format!("t{i}"), "partner": format!("p{p:05}"), "kind": "sale",
                   "amount": amount(currencies[p % 4], i), "currency": currency, "occurred_at": at})
        })
        .collect();
    json!({"transactions": txs})
}

/// The browser script, or `None` (with a message) where Chromium, node or the npm package are
/// missing.
fn browser_script() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let package = root.join("tests/browser/node_modules/playwright-core");
    let node_ok =
        std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !PathBuf::from(CHROMIUM).exists() || !package.exists() || !node_ok {
        eprintln!("SKIPPED: the browser test needs {CHROMIUM}, node and tests/browser/node_modules (run scripts/setup.sh)");
        return None;
    }
    Some(root.join("tests/browser/run.mjs"))
}

/// Load while the browser watches: batches through `POST /v1/transactions` at `addr` until
/// stopped.
fn load(addr: SocketAddr, ingest: Cred, at: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = 1_000_000;
        while !stop.load(Ordering::Relaxed) {
            let body = traffic(200, next, &at).to_string();
            let r = http(addr, "POST", "/v1/transactions", &ingest, Some(&body)).await;
            assert_eq!(r.status, 200, "{}", r.text());
            next += 200;
        }
    })
}

/// Runs the browser script with `env` (the URL, credentials, screenshot directory, ...).
async fn run_browser(script: &Path, env: &[(&str, String)], shots: &Path) {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script).env("SETTLE_SCREENSHOT_DIR", shots).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(BROWSER_TIMEOUT, cmd.output())
        .await
        .expect("the browser test timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser checks failed:\n{stdout}\n{stderr}");
    assert!(shots.join("dashboard.png").exists() && shots.join("portal.png").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_portal_in_headless_chromium() {
    let Some(script) = browser_script() else { return };
    let node = TestNode::start().await;
    let since = settle_core::Instant::parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
    for p in settle_node::engine::demo_partners_since(6, since) {
        node.engine.register_partner(p).await.unwrap();
    }
    let rates_at = settle_core::Instant::parse_rfc3339("2026-03-02T09:00:00Z").unwrap();
    node.engine.publish_rates(settle_node::engine::demo_rates(rates_at)).await.unwrap();
    let admin = node.direct_key(settle_api::auth::Role::Admin).await;
    let ingest = Cred::Key(node.key(&admin, "ingest", None).await);
    let partner_password = partner_user(node.addr, &admin).await;
    // A first day of traffic, then close it so that the portal has statements.
    let r =
        node.post("/v1/transactions", &ingest, &traffic(300, 0, "2026-03-02T09:30:00Z").to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    node.advance_to("2026-03-03T12:00:00Z").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(node.addr, ingest, "2026-03-03T11:00:00Z".into(), Arc::clone(&stop));
    let url = format!("http://{}", node.addr);
    let env = browser_env(&url, &url, &node.admin, &partner_password);
    run_browser(&script, &env, &node.dir.path().join("shots")).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    node.stop().await;
}

/// Creates the portal's user for partner `OWN`; returns its password.
async fn partner_user(addr: SocketAddr, admin: &Cred) -> String {
    let body = json!({"username": "partner0", "role": "partner", "partner": OWN}).to_string();
    let r = http(addr, "POST", "/v1/users", admin, Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["credentials"]["password"].as_str().unwrap().to_string()
}

fn browser_env(
    url: &str,
    portal: &str,
    admin: &settle_api::BootstrapAdmin,
    partner_password: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("SETTLE_URL", url.to_string()),
        ("SETTLE_PORTAL_URL", portal.to_string()),
        ("SETTLE_ADMIN_USER", admin.username.clone()),
        ("SETTLE_ADMIN_PASSWORD", admin.password.clone()),
        ("SETTLE_ADMIN_TOTP", admin.totp_secret.clone().unwrap()),
        ("SETTLE_PARTNER_USER", "partner0".into()),
        ("SETTLE_PARTNER_PASSWORD", partner_password.to_string()),
        ("SETTLE_PARTNER", OWN.into()),
        ("SETTLE_OTHER_PARTNER", OTHER.into()),
    ]
}

/// Shards of the browser test's cluster (one cell each on the dashboard).
const CLUSTER_SHARDS: u32 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_portal_on_a_cluster_in_headless_chromium() {
    let Some(script) = browser_script() else { return };
    let mut cluster = cluster_common::Cluster::new(CLUSTER_SHARDS).with_http();
    cluster.start_all();
    let nodes: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.http.unwrap()).collect();
    let a = cluster
        .nodes
        .iter()
        .map(|n| &n.ready.as_ref().unwrap()["bootstrap_admin"])
        .find(|a| !a.is_null())
        .unwrap();
    let admin_creds = settle_api::BootstrapAdmin {
        username: a["username"].as_str().unwrap().into(),
        password: a["password"].as_str().unwrap().into(),
        totp_secret: a["totp_secret"].as_str().map(str::to_string),
        otpauth_uri: None,
    };
    // This login uses the current TOTP step; the browser logs in with the next one.
    let secret = admin_creds.totp_secret.clone().unwrap();
    let admin =
        login_at(nodes[1], &admin_creds.username, &admin_creds.password, Some(&totp_now(&secret))).await;
    // Demo partners whose first periods closed days ago (the portal has statements), and rates.
    let since = common::now().start_of_utc_day().saturating_sub(settle_core::Span::from_hours(72));
    for p in settle_node::engine::demo_partners_since(6, since) {
        let r =
            http(nodes[1], "POST", "/v1/partners", &admin, Some(&settle_api::views::partner(&p).to_string()))
                .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let rates: Vec<serde_json::Value> = settle_node::engine::demo_rates(common::now().saturating_sub(settle_core::Span::from_minutes(1)))
        .iter()
        .map(|r| json!({"base": r.base.code(), "quote": r.quote.code(), "rate": r.rate.to_string(), "at": r.at.to_rfc3339()}))
        .collect();
    let r = http(nodes[1], "POST", "/v1/fx/rates", &admin, Some(&json!({"rates": rates}).to_string())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ingest = Cred::Key(key_at(nodes[1], &admin, "ingest", None).await);
    let partner_password = partner_user(nodes[1], &admin).await;
    // Load through node 1, whose dashboard the browser watches; the portal is node 3's.
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(nodes[0], ingest, common::minutes_ago_rfc3339(1), Arc::clone(&stop));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shots = match std::env::var_os("SETTLE_UPDATE_SCREENSHOTS") {
        Some(_) => root.join("docs/img"),
        None => cluster.dir.path().join("shots"),
    };
    let mut env = browser_env(
        &format!("http://{}", nodes[0]),
        &format!("http://{}", nodes[2]),
        &admin_creds,
        &partner_password,
    );
    env.push(("SETTLE_TOTP_STEP_OFFSET", "1".into()));
    env.push(("SETTLE_EXPECT_NODES", "3".into()));
    env.push(("SETTLE_EXPECT_SHARDS", CLUSTER_SHARDS.to_string()));
    run_browser(&script, &env, &shots).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
}
