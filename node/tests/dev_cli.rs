//! `settle dev`, the README's main command, end to end: a local 3-node cluster that prints the
//! dashboard's address and the first login (shown once), refuses anonymous API requests, accepts
//! the printed credentials with their TOTP code, and stops every node on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http_common;

use http_common::{http, login_at, totp_now, Cred};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Time `settle dev` has to print its banner (three debug nodes start and elect leaders).
const BANNER_TIMEOUT: Duration = Duration::from_secs(180);
const SEED_DEADLINE: Duration = Duration::from_secs(60);

/// A base port `b` with `b..b+3` (QUIC) and `b+1000..b+1003` (peers) free for UDP and
/// `b+2000..b+2003` (HTTP) free for TCP, as `settle dev` lays them out here.
fn free_base() -> u16 {
    let udp = |p: u16| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok();
    let tcp = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let seed = std::process::id() as u16;
    for k in 0..2000u16 {
        let base = 20_000 + (seed.wrapping_add(k.wrapping_mul(7)) % 10_000);
        if (0..3).all(|i| udp(base + i) && udp(base + 1000 + i) && tcp(base + 2000 + i)) {
            return base;
        }
    }
    panic!("no free ports for settle dev");
}

/// The value after `label` on a banner line (`  label value`).
fn field(lines: &[String], label: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(label).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{label} not printed:\n{}", lines.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_dev_prints_the_dashboard_and_a_first_login_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base();
    let mut child = Command::new(env!("CARGO_BIN_EXE_settle"))
        .args(["dev", "--quiet", "--partners", "3", "--data"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{base}"), "--http", &format!("127.0.0.1:{}", base + 2000)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    loop {
        let line = rx.recv_timeout(BANNER_TIMEOUT).expect("settle dev printed its banner");
        let done = line.trim_start().starts_with("stop:");
        banner.push(line);
        if done {
            break;
        }
    }
    let dashboard = field(&banner, "dashboard:");
    let url = dashboard.split_whitespace().next().unwrap().to_string();
    let addr: SocketAddr = url.strip_prefix("http://").expect("an http:// address").parse().unwrap();
    assert_eq!(addr.port(), base + 2000, "{dashboard}");
    assert!(dashboard.contains("/portal"), "the portal is printed too: {dashboard}");

    let r = http(addr, "GET", "/v1/partners", &Cred::None, None).await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated".to_string()));
    let (username, password, secret) =
        (field(&banner, "username:"), field(&banner, "password:"), field(&banner, "TOTP secret:"));
    let session = login_at(addr, &username, &password, Some(&totp_now(&secret))).await;
    // Node 1 seeds the demo partners once serving; every node's API shows them.
    let start = std::time::Instant::now();
    loop {
        let r = http(addr, "GET", "/v1/partners", &session, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if r.json()["partners"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(start.elapsed() < SEED_DEADLINE, "demo partners not seeded: {}", r.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let other: SocketAddr = format!("127.0.0.1:{}", base + 2002).parse().unwrap();
    assert_eq!(http(other, "GET", "/v1/me", &session, None).await.status, 200, "the session works on node 3");

    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "settle dev exited with {:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"stopped\""));
    // Every node is gone: nothing listens on their HTTP ports any more.
    for i in 0..3 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", base + 2000 + i)).is_err(),
            "node {} still serves",
            i + 1
        );
    }
}
