//! One load-test run: set up (node, partners, rates), drive traffic, reconcile, verify, report.

#![allow(clippy::float_arithmetic)] // rates and percentiles of the report only

use crate::node::{SpawnedCluster, SpawnedNode};
use crate::Args;
use anyhow::{anyhow, Context};
use settle_client::{Client, ClientConfig, RetryPolicy};
use settle_core::Instant;
use settle_loadtest::traffic::{self, Generator, History, Issued};
use settle_loadtest::{register, verify};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// Open loop: batches allowed in flight before new ones are shed (counted, not sent).
pub const MAX_OUTSTANDING_BATCHES: usize = 4096;
/// Attempts for batches whose outcome stayed unknown, in the reconciliation after the run.
const RECONCILE_ATTEMPTS: u32 = 50;

pub fn instant_now() -> Instant {
    Instant::from_system_time(std::time::SystemTime::now())
}

#[derive(Debug, Default)]
pub struct Stats {
    pub offered: u64,
    pub acked: u64,
    pub errors: u64,
    pub shed: u64,
    pub latencies_us: Vec<u64>,
    pub last_error: Option<String>,
}

pub struct Shared {
    pub generator: Mutex<Generator>,
    pub history: Mutex<History>,
    pub stats: Mutex<Stats>,
    /// Batches that failed after the client's retries: their outcome is unknown until reconciled.
    pub unknown: Mutex<Vec<Vec<Issued>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update; the counters are still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn send_batch(client: &Client, shared: &Shared, issued: Vec<Issued>, started: std::time::Instant) {
    let txs: Vec<_> = issued.iter().map(|i| i.tx.clone()).collect();
    let n = issued.len() as u64;
    lock(&shared.stats).offered += n;
    match client.submit(txs).await {
        Ok(results) => {
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            {
                let mut g = lock(&shared.generator);
                for (i, r) in issued.iter().zip(&results) {
                    g.acked(i, r);
                }
            }
            let acked: Vec<_> = issued.into_iter().map(|i| i.tx).zip(results).collect();
            lock(&shared.history).push_batch(acked);
            let mut s = lock(&shared.stats);
            s.acked += n;
            s.latencies_us.push(micros);
        }
        Err(e) => {
            {
                let mut s = lock(&shared.stats);
                s.errors += 1;
                s.last_error = Some(e.to_string());
            }
            lock(&shared.unknown).push(issued);
        }
    }
}

pub async fn connect(
    args: &Args,
    addr: std::net::SocketAddr,
    pem: &[u8],
    key: &str,
) -> anyhow::Result<Client> {
    let mut config = ClientConfig::new(addr, pem.to_vec(), key);
    config.server_name = args.server_name.clone();
    config.retry = RetryPolicy {
        max_attempts: 20,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(1),
    };
    Client::connect(config).await.with_context(|| format!("cannot connect to {addr}"))
}

pub async fn main(args: Args) -> anyhow::Result<bool> {
    if args.batch == 0 || args.batch > settle_wire::MAX_BATCH_TXS {
        return Err(anyhow!("--batch must be 1..={}", settle_wire::MAX_BATCH_TXS));
    }
    if let Some(n) = args.cluster {
        if n == 0 {
            return Err(anyhow!("--cluster needs at least one node"));
        }
        let cluster = tokio::task::spawn_blocking(move || SpawnedCluster::start(n)).await??;
        let addrs: Vec<_> = cluster.nodes.iter().map(|node| node.addr).collect();
        let target = (addrs, std::fs::read(&cluster.cert)?, cluster.api_key.clone());
        let outcome = drive(&args, Some(target)).await;
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
        return outcome;
    }
    let spawned = match args.target {
        Some(_) => None,
        None => Some(tokio::task::spawn_blocking(SpawnedNode::start).await??),
    };
    let target = match &spawned {
        Some(node) => Some((vec![node.addr], std::fs::read(&node.cert)?, node.api_key.clone())),
        None => None,
    };
    let outcome = drive(&args, target).await;
    if let Some(node) = spawned {
        tokio::task::spawn_blocking(move || node.stop()).await??;
    }
    outcome
}

/// The members to connect to (connections are spread over them), the certificate and the key.
type Target = (Vec<std::net::SocketAddr>, Vec<u8>, String);

async fn drive(args: &Args, spawned: Option<Target>) -> anyhow::Result<bool> {
    let (addrs, pem, key) = match (spawned, args.target) {
        (Some(target), _) => target,
        (None, Some(addr)) => {
            let cert = args.cert.as_ref().ok_or_else(|| anyhow!("--target needs --cert"))?;
            let pem = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let key = match (&args.api_key, &args.api_key_file) {
                (Some(k), _) => k.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)?.trim().to_string(),
                (None, None) => return Err(anyhow!("--target needs --api-key or --api-key-file")),
            };
            (vec![addr], pem, key)
        }
        (None, None) => return Err(anyhow!("no node")),
    };
    let addr = *addrs.first().ok_or_else(|| anyhow!("no node"))?;
    let mut clients = Vec::new();
    for i in 0..args.connections.max(1) {
        clients.push(Arc::new(connect(args, addrs[i % addrs.len()], &pem, &key).await?));
    }
    let now = instant_now();
    let run = args.run_id.clone().unwrap_or_else(|| format!("lt{}x{:x}", args.seed, now.unix_seconds()));
    let partners = traffic::partners(&run, args.partners, now.start_of_utc_day());
    let rates_at = now.saturating_sub(settle_core::Span::from_minutes(1));
    let rates = traffic::rates(rates_at);

    // Setup: partners and rates.
    let setup_started = std::time::Instant::now();
    register(&clients, &partners).await?;
    clients[0].publish_rates(rates.clone()).await.context("cannot publish rates")?;
    if !args.json {
        eprintln!(
            "registered {} partners and {} rates in {:.1}s",
            partners.len(),
            rates.len(),
            setup_started.elapsed().as_secs_f64()
        );
    }

    let shared = Arc::new(Shared {
        generator: Mutex::new(Generator::new(partners.clone(), args.zipf, args.seed, run.clone())),
        history: Mutex::new(History::default()),
        stats: Mutex::new(Stats::default()),
        unknown: Mutex::new(Vec::new()),
    });

    // Traffic.
    let started = std::time::Instant::now();
    let deadline = started + args.duration;
    let progress = tokio::spawn(progress(shared.clone(), started, args.duration));
    let mut tasks = JoinSet::new();
    match args.rate {
        None => {
            for w in 0..clients.len() * args.concurrency.max(1) {
                let client = clients[w % clients.len()].clone();
                let shared = shared.clone();
                let batch = args.batch;
                tasks.spawn(async move {
                    while std::time::Instant::now() < deadline {
                        let issued = lock(&shared.generator).batch(batch, instant_now());
                        let t0 = std::time::Instant::now();
                        send_batch(&client, &shared, issued, t0).await;
                    }
                });
            }
        }
        Some(rate) => {
            let rate = rate.max(1);
            let interval = Duration::from_secs_f64(args.batch as f64 / rate as f64);
            let outstanding = Arc::new(tokio::sync::Semaphore::new(MAX_OUTSTANDING_BATCHES));
            let mut k: u32 = 0;
            loop {
                let scheduled = started + interval.saturating_mul(k);
                if scheduled >= deadline {
                    break;
                }
                tokio::time::sleep_until(tokio::time::Instant::from_std(scheduled)).await;
                let client = clients[k as usize % clients.len()].clone();
                k = k.saturating_add(1);
                let Ok(permit) = outstanding.clone().try_acquire_owned() else {
                    lock(&shared.stats).shed += args.batch as u64;
                    continue;
                };
                let issued = lock(&shared.generator).batch(args.batch, instant_now());
                let shared = shared.clone();
                tasks.spawn(async move {
                    // Latency from the scheduled instant: queueing delay counts (no coordinated
                    // omission).
                    send_batch(&client, &shared, issued, scheduled).await;
                    drop(permit);
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    progress.abort();
    if !args.json && std::io::stderr().is_terminal() {
        eprintln!();
    }

    // Reconciliation: batches whose outcome is unknown are sent again with the same ids until
    // answered, so that the acked history is complete before it is verified.
    let pending: Vec<Vec<Issued>> = std::mem::take(&mut *lock(&shared.unknown));
    let mut unreconciled = 0u64;
    if !pending.is_empty() {
        let mut config = ClientConfig::new(addr, pem.clone(), key.clone());
        config.server_name = args.server_name.clone();
        config.retry = RetryPolicy {
            max_attempts: RECONCILE_ATTEMPTS,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        };
        let client = Client::connect(config).await?;
        for issued in pending {
            let txs: Vec<_> = issued.iter().map(|i| i.tx.clone()).collect();
            match client.submit(txs).await {
                Ok(results) => {
                    let acked: Vec<_> = issued.into_iter().map(|i| i.tx).zip(results).collect();
                    lock(&shared.history).push_batch(acked);
                }
                Err(_) => unreconciled += issued.len() as u64,
            }
        }
    }

    let (stats_offered, _stats_acked, errors, shed, last_error, mut lat) = {
        let s = lock(&shared.stats);
        (s.offered, s.acked, s.errors, s.shed, s.last_error.clone(), s.latencies_us.clone())
    };
    lat.sort_unstable();
    let history = std::mem::take(&mut *lock(&shared.history));
    let acked_in_run = history.len() as u64;

    let report = if args.no_verify {
        verify::Report::default()
    } else {
        verify::run(&clients, &partners, &rates, &history, args.batch, args.seed).await?
    };

    let secs = elapsed.as_secs_f64().max(1e-9);
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let idx = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[idx.min(lat.len() - 1)] as f64 / 1000.0
    };
    let mut by_kind = std::collections::BTreeMap::new();
    for (tx, _) in history.iter() {
        *by_kind.entry(format!("{:?}", tx.tx_kind()).to_lowercase()).or_insert(0u64) += 1;
    }
    let json = serde_json::json!({
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "target": addr.to_string(),
        "cluster_nodes": args.cluster,
        "partners": partners.len(),
        "zipf": args.zipf,
        "batch": args.batch,
        "connections": clients.len(),
        "concurrency": args.concurrency,
        "rate": args.rate,
        "seed": args.seed,
        "run_id": run,
        "duration_s": (secs * 1000.0).round() / 1000.0,
        "offered_tps": ((stats_offered + shed) as f64 / secs).round(),
        "accepted_tps": (acked_in_run as f64 / secs).round(),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": pct(1.0),
        "errors": errors,
        "shed": shed,
        "unreconciled": unreconciled,
        "last_error": last_error,
        "acked": acked_in_run,
        "by_kind": by_kind,
        "exceptions": report.exceptions,
        "verified": report.verified,
        "lost": report.lost,
        "duplicated": report.duplicated,
        "outcome_mismatches": report.outcome_mismatches,
        "balances_checked": report.balances_checked,
        "balance_mismatches": report.balance_mismatches,
        "statements_checked": report.statements_checked,
        "statement_mismatches": report.statement_mismatches,
        "verify_s": report.seconds,
    });
    let ok = report.lost == 0
        && report.duplicated == 0
        && report.balance_mismatches == 0
        && report.statement_mismatches == 0
        && report.outcome_mismatches == 0
        && unreconciled == 0;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{json}")?;
    } else {
        // The table in reading order; the JSON object carries the same fields.
        const ORDER: [&str; 33] = [
            "mode",
            "target",
            "partners",
            "zipf",
            "batch",
            "connections",
            "concurrency",
            "rate",
            "seed",
            "run_id",
            "duration_s",
            "offered_tps",
            "accepted_tps",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "errors",
            "shed",
            "unreconciled",
            "last_error",
            "acked",
            "by_kind",
            "exceptions",
            "verified",
            "lost",
            "duplicated",
            "outcome_mismatches",
            "balances_checked",
            "balance_mismatches",
            "statements_checked",
            "statement_mismatches",
            "verify_s",
        ];
        writeln!(out, "{:<22} value", "metric")?;
        for key in ORDER.iter().filter(|k| !k.is_empty()) {
            writeln!(out, "{key:<22} {}", json[*key])?;
        }
        writeln!(out, "{:<22} {}", "result", if ok { "PASS" } else { "FAIL" })?;
        for m in report.messages.iter().take(10) {
            writeln!(out, "  {m}")?;
        }
    }
    out.flush()?;
    Ok(ok)
}

async fn progress(shared: Arc<Shared>, started: std::time::Instant, total: Duration) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty { Duration::from_secs(1) } else { Duration::from_secs(5) };
    let mut last = 0u64;
    loop {
        tokio::time::sleep(every).await;
        let (acked_now, errors) = {
            let s = lock(&shared.stats);
            (s.acked, s.errors)
        };
        let tps = (acked_now - last.min(acked_now)) as f64 / every.as_secs_f64();
        last = acked_now;
        let line = format!(
            "[{:>5.1}s/{:.0}s] acked {acked_now} ({tps:.0} tx/s) errors {errors}",
            started.elapsed().as_secs_f64(),
            total.as_secs_f64()
        );
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
}
