//! Crash safety: `settle node` runs as a separate process and is SIGKILLed at seeded random
//! moments while clients push load. After each restart the clients carry on, retrying unanswered
//! batches with the same ids. At the end, every acknowledged transaction must still be on the
//! node exactly once (a repeat returns the first result, flagged duplicate), and every partner's
//! payable must equal a replay of the acked history through settle-core.
//!
//! The traffic is sales (in the settlement currency or USD, converted) and partial refunds of
//! acked sales, each sale refunded at most once: every transaction is applied whatever the
//! interleaving, so the final payable does not depend on the order the node chose.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use settle_client::{Client, ClientConfig, RetryPolicy};
use settle_core::scenario::{parse_partner, parse_rate, parse_transaction};
use settle_core::{Instant, Ledger, Span};
use settle_wire as wire;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEED: u64 = 0x5e77_1e42;
const KILLS: usize = 4;
const PARTNERS: usize = 12;
const WRITERS: usize = 3;
const BATCH: usize = 20;
const KEY: &str = "crash-test-key-0001";

fn free_port() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

struct Running {
    child: Child,
    cert: std::path::PathBuf,
    /// Receives once when the node prints `{"event":"stopped"}`.
    stopped: std::sync::mpsc::Receiver<()>,
}

fn start_node(data: &Path, key_file: &Path, addr: SocketAddr) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_settle"))
        .arg("node")
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--api-key-file")
        .arg(key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"ready\"") {
                let _ = tx.send(line);
            } else if line.contains("\"stopped\"") {
                let _ = stopped_tx.send(());
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).expect("the node did not become ready");
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["quic"].as_str().unwrap(), addr.to_string());
    Running { child, cert: ready["cert"].as_str().unwrap().into(), stopped }
}

#[derive(Default)]
struct State {
    /// Acked (transaction, first result), in acknowledgement order.
    acked: Vec<(wire::Transaction, wire::TxResult)>,
    /// Acked sales not yet refunded: (id, partner, amount, currency).
    refundable: Vec<(String, String, String, String)>,
}

fn tx_for(rng: &mut ChaCha8Rng, state: &Mutex<State>, writer: usize, n: &mut u64) -> wire::Transaction {
    *n += 1;
    let id = format!("w{writer}-{n}");
    let occurred_at = common::now_rfc3339();
    if rng.gen_range(0..100) < 20 {
        let mut s = state.lock().unwrap();
        if !s.refundable.is_empty() {
            let i = rng.gen_range(0..s.refundable.len());
            let (sale, partner, amount, currency) = s.refundable.swap_remove(i);
            let units: i128 = amount.replace('.', "").parse().unwrap();
            let part = rng.gen_range(1..=units);
            return wire::Transaction {
                id,
                partner: Some(partner),
                kind: wire::TxKind::Refund as i32,
                amount: Some(settle_core::Minor(part).format(2)),
                currency: Some(currency),
                occurred_at,
                original: Some(sale),
                ..Default::default()
            };
        }
    }
    let p = rng.gen_range(0..PARTNERS);
    let currency = if rng.gen_bool(0.3) { "USD" } else { "EUR" };
    wire::Transaction {
        id,
        partner: Some(format!("p{p:02}")),
        kind: wire::TxKind::Sale as i32,
        amount: Some(format!("{}.{:02}", rng.gen_range(1..400), rng.gen_range(0..100))),
        currency: Some(currency.into()),
        occurred_at,
        ..Default::default()
    }
}

async fn writer(client: Arc<Client>, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>, w: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ (w as u64 + 1));
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        let batch: Vec<_> = (0..BATCH).map(|_| tx_for(&mut rng, &state, w, &mut n)).collect();
        // Never give up on a batch: while the node is down the client's retries run out, and the
        // same batch (same ids) is sent again until it is answered.
        let results = loop {
            match client.submit(batch.clone()).await {
                Ok(r) => break r,
                Err(e) => assert!(e.is_retryable() || e.code().is_none(), "{e}"),
            }
        };
        let mut s = state.lock().unwrap();
        for (tx, r) in batch.into_iter().zip(results) {
            assert!(
                matches!(r.outcome, Some(wire::tx_result::Outcome::Applied(_))),
                "{} was not applied: {r:?}",
                tx.id
            );
            if tx.tx_kind() == wire::TxKind::Sale && tx.currency.as_deref() == Some("EUR") {
                s.refundable.push((
                    tx.id.clone(),
                    tx.partner.clone().unwrap(),
                    tx.amount.clone().unwrap(),
                    "EUR".into(),
                ));
            }
            s.acked.push((tx, r));
        }
    }
}

/// Waits until more than `more` transactions were acked after the call, and returns the count at
/// the call. Polling a counter, not sleeping for a guess: the wait ends as soon as it holds.
async fn wait_for_progress(state: &Mutex<State>, more: usize) -> usize {
    let start = state.lock().unwrap().acked.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while state.lock().unwrap().acked.len() <= start + more {
        assert!(std::time::Instant::now() < deadline, "no progress after a restart");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start
}

fn client_config(addr: SocketAddr, pem: Vec<u8>) -> ClientConfig {
    let mut c = ClientConfig::new(addr, pem, KEY);
    c.retry = RetryPolicy {
        max_attempts: 20,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
    };
    // A killed node is noticed through the restarted node's stateless reset; these bound the
    // wait while no node is up at all.
    c.connect_timeout = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(5);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_transactions_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let addr = free_port();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);

    let mut node = start_node(&data, &key_file, addr);
    let pem = std::fs::read(&node.cert).unwrap();
    let setup = Client::connect(client_config(addr, pem.clone())).await.unwrap();
    let partners: Vec<String> =
        (0..PARTNERS).map(|p| common::partner_json(&format!("p{p:02}"), "EUR")).collect();
    for p in &partners {
        setup.register_partner(p.clone()).await.unwrap();
    }
    let rate = wire::FxRate {
        base: "USD".into(),
        quote: "EUR".into(),
        rate: "0.92".into(),
        at: common::minutes_ago_rfc3339(1),
        source: None,
    };
    setup.publish_rates(vec![rate.clone()]).await.unwrap();
    setup.close().await;

    let state = Arc::new(Mutex::new(State::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = Arc::new(Client::connect_lazy(client_config(addr, pem.clone())).unwrap());
        writers.push(tokio::spawn(writer(client, state.clone(), stop.clone(), w)));
    }

    for cycle in 0..KILLS {
        // Kill mid-traffic: once this node has acked something, after a seeded delay.
        let restarted = std::time::Instant::now();
        let before = wait_for_progress(&state, 0).await;
        let resumed = restarted.elapsed();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
        node.child.kill().unwrap(); // SIGKILL
        node.child.wait().unwrap();
        let at_kill = state.lock().unwrap().acked.len();
        eprintln!(
            "cycle {cycle}: traffic resumed after {resumed:?}; killed with {at_kill} acked ({} since then)",
            at_kill - before
        );
        node = start_node(&data, &key_file, addr);
    }
    // Let the writers get through a few batches on the final node, then stop them.
    wait_for_progress(&state, WRITERS * BATCH).await;
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }

    let verify = Client::connect(client_config(addr, pem.clone())).await.unwrap();
    let acked = std::mem::take(&mut state.lock().unwrap().acked);
    assert!(acked.len() > KILLS * BATCH, "too little traffic: {}", acked.len());
    // Every acked transaction is there exactly once: a repeat is a duplicate with the first result.
    for chunk in acked.chunks(200) {
        let again = verify.submit(chunk.iter().map(|(t, _)| t.clone()).collect()).await.unwrap();
        for ((tx, first), again) in chunk.iter().zip(again) {
            assert!(again.duplicate, "{} was lost", tx.id);
            assert_eq!(first.outcome, again.outcome, "{} changed", tx.id);
        }
    }
    // Balances equal a replay of the acked history through settle-core.
    let mut ledger = Ledger::new(Span::from_hours(24), 1);
    for p in &partners {
        ledger.add_partner(parse_partner(&serde_json::from_str(p).unwrap(), "p").unwrap()).unwrap();
    }
    let r = serde_json::json!({"base": rate.base, "quote": rate.quote, "rate": rate.rate, "at": rate.at});
    ledger.add_rate(parse_rate(&r, "rate").unwrap());
    let mut statements = Vec::new();
    for (tx, _) in &acked {
        let mut v = serde_json::json!({
            "id": tx.id, "partner": tx.partner, "amount": tx.amount, "currency": tx.currency,
            "occurred_at": tx.occurred_at,
            "kind": if tx.tx_kind() == wire::TxKind::Sale { "sale" } else { "refund" },
        });
        if let Some(o) = &tx.original {
            v["original"] = serde_json::Value::String(o.clone());
        }
        let at = Instant::parse_rfc3339(&tx.occurred_at).unwrap();
        let input = parse_transaction(&v, "tx", Some(at)).unwrap();
        let result = ledger.apply(input, at, &mut statements);
        assert!(result.outcome.is_applied(), "{}: {:?}", tx.id, result.outcome);
    }
    for p in 0..PARTNERS {
        let id = format!("p{p:02}");
        let node_balance = verify.balance(&id).await.unwrap();
        let expected = ledger.account(&id).unwrap().payable().format(2);
        assert_eq!(node_balance.payable, expected, "payable of {id}");
    }
    eprintln!("{} acked transactions survived {KILLS} SIGKILLs exactly once", acked.len());
    verify.close().await;
    // And a graceful stop: SIGTERM, a clean exit, the `stopped` line.
    let status = Command::new("kill").arg("-TERM").arg(node.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let exit = node.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(node.stopped.recv_timeout(Duration::from_secs(20)).is_ok(), "no stopped line");
}
