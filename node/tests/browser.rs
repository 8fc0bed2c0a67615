//! The dashboard and the partner portal in real headless Chromium (Debian's `chromium`, driven
//! by playwright-core from `tests/browser`): log in with TOTP, numbers move under load, drill
//! into a partner; the portal shows only its own partner and offers statement downloads.
//! `scripts/setup.sh` installs Chromium and the npm package; the test is skipped (with a
//! message) only where they cannot be installed. SETTLE_UPDATE_SCREENSHOTS=1 writes the
//! screenshots to docs/img.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http_common;

use http_common::*;
use serde_json::json;
use std::path::PathBuf;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_portal_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/browser/run.mjs");
    let package = root.join("tests/browser/node_modules/playwright-core");
    let node_ok =
        std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !PathBuf::from(CHROMIUM).exists() || !package.exists() || !node_ok {
        eprintln!("SKIPPED: the browser test needs {CHROMIUM}, node and tests/browser/node_modules (run scripts/setup.sh)");
        return;
    }
    let node = TestNode::start().await;
    let since = settle_core::Instant::parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
    for p in settle_node::engine::demo_partners_since(6, since) {
        node.engine.register_partner(p).await.unwrap();
    }
    let rates_at = settle_core::Instant::parse_rfc3339("2026-03-02T09:00:00Z").unwrap();
    node.engine.publish_rates(settle_node::engine::demo_rates(rates_at)).await.unwrap();
    let admin = node.direct_key(settle_api::auth::Role::Admin).await;
    let ingest = Cred::Key(node.key(&admin, "ingest", None).await);
    let r = node
        .post(
            "/v1/users",
            &admin,
            &json!({"username": "partner0", "role": "partner", "partner": OWN}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let partner_password = r.json()["credentials"]["password"].as_str().unwrap().to_string();
    // A first day of traffic, then close it so that the portal has statements.
    let r =
        node.post("/v1/transactions", &ingest, &traffic(300, 0, "2026-03-02T09:30:00Z").to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    node.advance_to("2026-03-03T12:00:00Z").await;
    // Load while the browser watches.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let addr = node.addr;
        let ingest = ingest.clone();
        tokio::spawn(async move {
            let mut next = 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let body = traffic(200, next, "2026-03-03T11:00:00Z").to_string();
                let r = http(addr, "POST", "/v1/transactions", &ingest, Some(&body)).await;
                assert_eq!(r.status, 200, "{}", r.text());
                next += 200;
            }
        })
    };
    let shots = match std::env::var_os("SETTLE_UPDATE_SCREENSHOTS") {
        Some(_) => root.join("docs/img"),
        None => node.dir.path().join("shots"),
    };
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .env("SETTLE_URL", format!("http://{}", node.addr))
        .env("SETTLE_ADMIN_USER", &node.admin.username)
        .env("SETTLE_ADMIN_PASSWORD", &node.admin.password)
        .env("SETTLE_ADMIN_TOTP", node.admin.totp_secret.clone().unwrap())
        .env("SETTLE_PARTNER_USER", "partner0")
        .env("SETTLE_PARTNER_PASSWORD", &partner_password)
        .env("SETTLE_PARTNER", OWN)
        .env("SETTLE_OTHER_PARTNER", OTHER)
        .env("SETTLE_SCREENSHOT_DIR", &shots)
        .kill_on_drop(true);
    let out = tokio::time::timeout(BROWSER_TIMEOUT, cmd.output())
        .await
        .expect("the browser test timed out")
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser checks failed:\n{stdout}\n{stderr}");
    assert!(shots.join("dashboard.png").exists() && shots.join("portal.png").exists());
    node.stop().await;
}
