//! A node with the HTTP API on a temp dir (real engine, real RocksDB, real sockets) and a tiny
//! HTTP/1.1 client, for the API tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use settle_api::model::ControlStore;
use settle_core::Instant;
use settle_node::engine::{Clock, Engine, EngineConfig, EngineHandle, ManualClock};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Cheap argon2 for tests (the production cost is the same code with more memory).
pub const TEST_ARGON2_KIB: u32 = 1024;
pub const T0: &str = "2026-03-02T10:00:00Z";

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("").to_string()
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Cred {
    None,
    Key(String),
    Session {
        cookie: String,
        csrf: String,
    },
    /// A session cookie without the CSRF header.
    CookieOnly(String),
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(pos) = body.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(std::str::from_utf8(&body[..pos]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[pos + 2..pos + 2 + size]);
        body = &body[pos + 2 + size + 2..];
    }
}

pub async fn http(addr: SocketAddr, method: &str, path: &str, cred: &Cred, body: Option<&str>) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    match cred {
        Cred::None => {}
        Cred::Key(k) => req.push_str(&format!("Authorization: Bearer {k}\r\n")),
        Cred::Session { cookie, csrf } => {
            req.push_str(&format!("Cookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\n"))
        }
        Cred::CookieOnly(cookie) => req.push_str(&format!("Cookie: {cookie}\r\n")),
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no header end");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Resp { status, headers, body }
}

/// Logs in at `addr`; panics unless it succeeds.
pub async fn login_at(addr: SocketAddr, username: &str, password: &str, totp: Option<&str>) -> Cred {
    let body = json!({"username": username, "password": password, "totp": totp}).to_string();
    let r = http(addr, "POST", "/v1/auth/login", &Cred::None, Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    Cred::Session { cookie, csrf: r.json()["csrf"].as_str().unwrap().to_string() }
}

/// Creates an API key through the API at `addr`; returns the key.
pub async fn key_at(addr: SocketAddr, admin: &Cred, role: &str, partner: Option<&str>) -> String {
    let body =
        json!({"name": format!("{role}-{}", partner.unwrap_or("all")), "role": role, "partner": partner})
            .to_string();
    let r = http(addr, "POST", "/v1/api-keys", admin, Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

pub async fn graphql_at(addr: SocketAddr, cred: &Cred, query: &str) -> Value {
    let r = http(addr, "POST", "/graphql", cred, Some(&json!({"query": query}).to_string())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub engine: EngineHandle,
    pub clock: ManualClock,
    pub server: Option<settle_api::ApiServer>,
    pub addr: SocketAddr,
    pub control: Arc<dyn ControlStore>,
    /// The same store, for tests that alter records behind the API's back.
    pub raw: settle_node::api::StoreControl,
    pub admin: settle_api::BootstrapAdmin,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn totp_now(secret_b32: &str) -> String {
    settle_api::totp::code(&settle_api::totp::base32_decode(secret_b32).unwrap(), unix_now())
}

/// A daily-UTC EUR partner from 2026-03-02 with an 80/20 split and 1.5% + 0.10 fees.
pub fn partner_body(id: &str) -> String {
    json!({
        "id": id, "settlement_currency": "EUR", "since": "2026-03-02T00:00:00Z",
        "cycle": {"every": "daily", "cutoff": "00:00", "tz": "UTC", "grace": "PT1H"},
        "contracts": [{"effective_from": "2026-03-02T00:00:00Z",
            "shares": [{"party": "partner", "percent": "80"}, {"party": "platform", "percent": "20"}],
            "fees": [{"kind": "percent", "bps": "150"}, {"kind": "fixed", "amount": "0.10"}],
            "chargeback_fee": "15.00"}]
    })
    .to_string()
}

pub fn sale(id: &str, partner: &str, amount: &str, currency: &str) -> Value {
    json!({"id": id, "partner": partner, "kind": "sale", "amount": amount, "currency": currency,
           "occurred_at": "2026-03-02T09:00:00Z"})
}

impl TestNode {
    pub async fn start() -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Instant::parse_rfc3339(T0).unwrap());
        let mut config = EngineConfig::new(dir.path().join("engine"));
        config.clock = Clock::Manual(clock.clone());
        config.tick_interval = None;
        let engine = Engine::open(config).await.unwrap();
        let api = settle_node::api::EngineApi::new(engine.clone()).unwrap();
        let raw = api.control();
        let control: Arc<dyn ControlStore> = Arc::new(api.control());
        let admin =
            settle_api::bootstrap_admin(Arc::clone(&control), TEST_ARGON2_KIB).await.unwrap().unwrap();
        let mut config = settle_api::ApiConfig::new("127.0.0.1:0".parse().unwrap());
        config.argon2_memory_kib = TEST_ARGON2_KIB;
        let metrics = Arc::new(settle_api::metrics::Metrics::new().unwrap());
        let shared = Arc::new(api);
        let server =
            settle_api::serve(config, shared.clone(), shared, Arc::clone(&control), metrics).await.unwrap();
        let addr = server.local_addr();
        TestNode { dir, engine, clock, server: Some(server), addr, control, raw, admin }
    }

    pub async fn req(&self, method: &str, path: &str, cred: &Cred, body: Option<&str>) -> Resp {
        http(self.addr, method, path, cred, body).await
    }

    pub async fn get(&self, path: &str, cred: &Cred) -> Resp {
        self.req("GET", path, cred, None).await
    }

    pub async fn post(&self, path: &str, cred: &Cred, body: &str) -> Resp {
        self.req("POST", path, cred, Some(body)).await
    }

    /// Logs in; panics unless it succeeds.
    pub async fn login(&self, username: &str, password: &str, totp: Option<&str>) -> Cred {
        login_at(self.addr, username, password, totp).await
    }

    pub async fn admin_session(&self) -> Cred {
        let secret = self.admin.totp_secret.clone().unwrap();
        self.login(&self.admin.username, &self.admin.password, Some(&totp_now(&secret))).await
    }

    /// An API key written straight into the control store (no login, so the admin's TOTP code
    /// of this 30-second step stays unused for a browser to log in with).
    pub async fn direct_key(&self, role: settle_api::auth::Role) -> Cred {
        let auth = settle_api::auth::Auth::new(self.control.clone(), TEST_ARGON2_KIB);
        let (record, key) = auth.new_key("direct", role, None, None, "test").unwrap();
        self.control.write(vec![settle_api::auth::Auth::put_key_op(&record).unwrap()]).await.unwrap();
        Cred::Key(key)
    }

    /// Creates an API key through the API; returns the key.
    pub async fn key(&self, admin: &Cred, role: &str, partner: Option<&str>) -> String {
        key_at(self.addr, admin, role, partner).await
    }

    pub async fn graphql(&self, cred: &Cred, query: &str) -> Value {
        graphql_at(self.addr, cred, query).await
    }

    /// Moves the engine's clock and closes due periods.
    pub async fn advance_to(&self, at: &str) {
        self.clock.set(Instant::parse_rfc3339(at).unwrap());
        self.engine.tick().await.unwrap();
    }

    /// Stops the server and the engine, and hands back the data directory.
    pub async fn stop_keep_dir(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.engine.clone().shutdown().await.unwrap();
        self.dir
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.engine.clone().shutdown().await.unwrap();
    }
}

/// Accepts webhook POSTs; sends (signature header, body) for each.
pub async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .unwrap()
                        .trim()
                        .parse::<usize>()
                        .unwrap();
                    break (pos + 4, len);
                }
            };
            while buf.len() < head_end + length {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let sig = head
                .lines()
                .find_map(|l| {
                    l.to_lowercase().strip_prefix("x-settle-signature:").map(|v| v.trim().to_string())
                })
                .unwrap();
            let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await.unwrap();
            let _ = tx.send((sig, body));
        }
    });
    (url, rx)
}
