//! Engine tests: real RocksDB in temporary directories, a manual clock, no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use settle_core::scenario::{parse_contract_version, parse_partner, parse_rate, parse_transaction};
use settle_core::tx::TxResult;
use settle_core::{ExceptionReason, Instant, Ledger, Minor, Outcome, Span, Statement, TxInput};
use settle_node::engine::{
    demo_partners_since, demo_rates, Clock, Engine, EngineConfig, EngineError, EngineHandle, ManualClock,
};
use settle_storage::{LogEntry, Store};
use std::path::Path;

fn t(s: &str) -> Instant {
    Instant::parse_rfc3339(s).unwrap()
}

const START: &str = "2026-01-02T10:00:00Z";

fn config(dir: &Path, clock: &ManualClock) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.tick_interval = None;
    config.clock = Clock::Manual(clock.clone());
    config.hash_seed = 7;
    config
}

fn acme() -> settle_core::Partner {
    parse_partner(
        &serde_json::json!({
            "id": "acme", "settlement_currency": "EUR", "since": "2026-01-01T00:00:00Z",
            "cycle": {"every": "weekly", "weekday": "mon", "cutoff": "00:00", "tz": "Europe/Berlin", "grace": "PT2H"},
            "contracts": [{
                "effective_from": "2026-01-01T00:00:00Z",
                "shares": [{"party": "partner", "percent": "70"}, {"party": "platform", "percent": "25"},
                           {"party": "affiliate:bob", "percent": "5"}],
                "fees": [{"kind": "percent", "bps": "150", "min": "0.10", "max": "50.00"}, {"kind": "fixed", "amount": "0.05"}],
                "chargeback_fee": "15.00",
                "period_fees": [{"kind": "tiered", "tiers": [{"up_to": "10000", "bps": "50"}, {"up_to": null, "bps": "25"}]},
                                {"kind": "minimum", "amount": "100.00"}]
            }]
        }),
        "acme",
    )
    .unwrap()
}

fn usd_eur() -> settle_core::FxRate {
    parse_rate(
        &serde_json::json!({"base": "USD", "quote": "EUR", "rate": "0.92", "at": "2026-01-02T00:00:00Z"}),
        "r",
    )
    .unwrap()
}

fn tx(value: serde_json::Value) -> TxInput {
    // received_at is ignored by the engine; give something.
    parse_transaction(&value, "tx", Some(Instant(0))).unwrap()
}

fn sale(id: &str, partner: &str, amount: &str, currency: &str, occurred: &str) -> TxInput {
    tx(serde_json::json!({"id": id, "partner": partner, "kind": "sale", "amount": amount,
                          "currency": currency, "occurred_at": occurred}))
}

async fn open(dir: &Path, clock: &ManualClock) -> EngineHandle {
    Engine::open(config(dir, clock)).await.unwrap()
}

fn exception(r: &TxResult) -> Option<ExceptionReason> {
    r.outcome.exception()
}

#[tokio::test]
async fn spec_example_settles_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-01-02T10:00:01Z"));
    let engine = open(dir.path(), &clock).await;
    engine.register_partner(acme()).await.unwrap();
    engine.publish_rates(vec![usd_eur()]).await.unwrap();
    let first = engine.submit(vec![sale("t1", "acme", "100.00", "USD", START)]).await.unwrap();
    assert!(first[0].outcome.is_applied(), "{first:?}");
    let balance = engine.balance("acme").await.unwrap().unwrap();
    assert_eq!(balance.payable, Minor(6_297)); // 64.40 - 1.38 - 0.05
    clock.set(t("2026-01-06T00:00:00Z"));
    engine.tick().await.unwrap();
    let statements = engine.statements("acme").await.unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(settle_core::replay::statement_json(&statements[0])["closing"], "-35.60");
    engine.shutdown().await.unwrap();

    let engine = open(dir.path(), &clock).await;
    assert_eq!(engine.balance("acme").await.unwrap().unwrap().payable, Minor(-3_560));
    assert_eq!(engine.statements("acme").await.unwrap(), statements);
    // Repeats after restart answer the first result; a changed content is a conflict.
    let again = engine.submit(vec![sale("t1", "acme", "100.00", "USD", START)]).await.unwrap();
    assert_eq!(again[0], TxResult { outcome: first[0].outcome.clone(), duplicate: true });
    let changed = engine.submit(vec![sale("t1", "acme", "100.01", "USD", START)]).await.unwrap();
    assert_eq!(exception(&changed[0]), Some(ExceptionReason::DuplicateConflict));
    assert!(matches!(engine.register_partner(acme()).await, Err(EngineError::Rejected(_))));
    engine.shutdown().await.unwrap();
}

fn partner_named(id: &str) -> settle_core::Partner {
    let mut p = acme();
    p.id = id.to_string();
    p
}

#[tokio::test]
async fn ids_are_idempotent_across_partners_and_unknown_partners() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-01-02T10:00:01Z"));
    let engine = open(dir.path(), &clock).await;
    engine.register_partner(partner_named("acme")).await.unwrap();
    engine.register_partner(partner_named("beta")).await.unwrap();
    let no_partner = tx(serde_json::json!({"id": "n1", "kind": "sale", "amount": "1.00", "currency": "EUR",
                                           "occurred_at": START}));
    let results = engine
        .submit(vec![
            sale("t1", "acme", "10.00", "EUR", START),
            sale("t1", "beta", "10.00", "EUR", START), // same id, other partner
            sale("g1", "ghost", "10.00", "EUR", START),
            no_partner.clone(),
            sale("t1", "acme", "10.00", "EUR", START), // repeat inside the same submission
        ])
        .await
        .unwrap();
    assert!(results[0].outcome.is_applied());
    assert_eq!(exception(&results[1]), Some(ExceptionReason::DuplicateConflict));
    assert_eq!(exception(&results[2]), Some(ExceptionReason::UnknownPartner));
    assert_eq!(exception(&results[3]), Some(ExceptionReason::UnknownPartner));
    assert_eq!(results[4], TxResult { outcome: results[0].outcome.clone(), duplicate: true });

    // Registering "ghost" later does not change the first answer of g1.
    engine.register_partner(partner_named("ghost")).await.unwrap();
    let again = engine
        .submit(vec![
            sale("g1", "ghost", "10.00", "EUR", START),
            sale("g1", "ghost", "99.00", "EUR", START),
            no_partner,
        ])
        .await
        .unwrap();
    assert_eq!(again[0], TxResult { outcome: results[2].outcome.clone(), duplicate: true });
    assert_eq!(exception(&again[1]), Some(ExceptionReason::DuplicateConflict));
    assert!(again[2].duplicate);
    let beta = engine.balance("beta").await.unwrap().unwrap();
    assert_eq!(beta.payable, Minor(0));
    assert!(engine.balance("nobody").await.unwrap().is_none());
    let queue: Vec<(String, ExceptionReason)> =
        engine.exceptions(None, 100).await.unwrap().into_iter().map(|e| (e.id, e.reason)).collect();
    let expected = [
        ("t1", ExceptionReason::DuplicateConflict),
        ("g1", ExceptionReason::UnknownPartner),
        ("n1", ExceptionReason::UnknownPartner),
        ("g1", ExceptionReason::DuplicateConflict),
    ];
    assert_eq!(queue, expected.map(|(id, r)| (id.to_string(), r)));
    let (first, outcome) = engine.lookup("t1").await.unwrap().unwrap();
    assert_eq!(first.partner.as_deref(), Some("acme"));
    assert_eq!(first.received_at, t("2026-01-02T10:00:01Z"), "stamped by the engine");
    assert_eq!(outcome, results[0].outcome);
    assert!(engine.lookup("zzz").await.unwrap().is_none());
    let (unowned, unowned_outcome) = engine.lookup("g1").await.unwrap().unwrap();
    assert_eq!(unowned.partner.as_deref(), Some("ghost"), "the first content keeps the id");
    assert_eq!(unowned_outcome, results[2].outcome);
    engine.shutdown().await.unwrap();

    // The same answers after recovery.
    let engine = open(dir.path(), &clock).await;
    assert_eq!(engine.lookup("t1").await.unwrap(), Some((first, outcome)));
    assert_eq!(engine.lookup("g1").await.unwrap(), Some((unowned, unowned_outcome)));
    let after = engine.submit(vec![sale("t1", "beta", "10.00", "EUR", START)]).await.unwrap();
    assert_eq!(exception(&after[0]), Some(ExceptionReason::DuplicateConflict));
    let after = engine.submit(vec![sale("g1", "ghost", "10.00", "EUR", START)]).await.unwrap();
    assert_eq!(after[0], TxResult { outcome: results[2].outcome.clone(), duplicate: true });
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn admission_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-01-02T10:00:01Z"));
    let mut cfg = config(dir.path(), &clock);
    cfg.max_in_flight_txs = 4;
    let engine = Engine::open(cfg).await.unwrap();
    engine.register_partner(acme()).await.unwrap();
    let five: Vec<TxInput> = (0..5).map(|i| sale(&format!("a{i}"), "acme", "1.00", "EUR", START)).collect();
    assert!(matches!(engine.submit(five.clone()).await, Err(EngineError::Overloaded)));
    assert_eq!(engine.in_flight(), 0, "a refused submission holds nothing");
    let four = five[..4].to_vec();
    assert_eq!(engine.submit(four).await.unwrap().len(), 4);
    assert_eq!(engine.in_flight(), 0);
    // Overloaded changed nothing: the fifth id is new.
    let last = engine.submit(vec![five[4].clone()]).await.unwrap();
    assert!(!last[0].duplicate && last[0].outcome.is_applied());
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_write_stops_the_engine_and_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-01-02T10:00:01Z"));
    let engine = open(dir.path(), &clock).await;
    engine.register_partner(acme()).await.unwrap();
    engine.submit(vec![sale("ok", "acme", "1.00", "EUR", START)]).await.unwrap();
    engine.inject_commit_failures().unwrap();
    let watcher = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.stopped().await })
    };
    let failed = engine.submit(vec![sale("lost", "acme", "1.00", "EUR", START)]).await;
    assert!(matches!(failed, Err(EngineError::Stopped(_))), "{failed:?}");
    let later = engine.submit(vec![sale("later", "acme", "1.00", "EUR", START)]).await;
    assert!(matches!(later, Err(EngineError::Stopped(_))));
    assert!(engine.stopped_reason().unwrap().contains("durable write failed"));
    assert!(watcher.await.unwrap().contains("durable write failed"));
    assert!(matches!(engine.balance("acme").await, Err(EngineError::Stopped(_))));
    let _ = engine.shutdown().await;

    let engine = open(dir.path(), &clock).await;
    let results = engine
        .submit(vec![sale("ok", "acme", "1.00", "EUR", START), sale("lost", "acme", "1.00", "EUR", START)])
        .await
        .unwrap();
    assert!(results[0].duplicate, "the acknowledged one survived");
    assert!(!results[1].duplicate, "the failed one was never applied");
    engine.shutdown().await.unwrap();
}

/// Replays the durable log through `settle_core::Ledger` and checks that it gives the logged
/// outcome for every transaction; returns the ledger and the statements it issued.
fn replay_with_core(dir: &Path, fx_max_age: Span) -> (Ledger, Vec<Statement>) {
    let store = Store::open(dir).unwrap();
    let mut ledger = Ledger::new(fx_max_age, 1);
    let mut statements = Vec::new();
    for item in store.log_from(0).unwrap() {
        let (seq, entry) = item.unwrap();
        match entry {
            LogEntry::Partner(p) => ledger.add_partner(p).unwrap(),
            LogEntry::ContractVersion { partner, version } => {
                ledger.account_mut(&partner).unwrap().add_contract_version(version).unwrap()
            }
            LogEntry::Rates(rates) => rates.into_iter().for_each(|r| ledger.add_rate(r)),
            LogEntry::Tick(at) => ledger.close_due(at, &mut statements),
            LogEntry::FxMaxAge(span) => assert_eq!(span, fx_max_age),
            LogEntry::Tx { tx, outcome } => {
                let result = ledger.apply(tx, Instant::MAX, &mut statements);
                assert_eq!((result.outcome, result.duplicate), (outcome, false), "log entry {seq}");
            }
        }
    }
    statements.sort_by(|a, b| a.partner.cmp(&b.partner).then(a.period.start.cmp(&b.period.start)));
    (ledger, statements)
}

#[tokio::test]
async fn concurrent_submitters_agree_with_core_replay() {
    let dir = tempfile::tempdir().unwrap();
    let since = t("2026-01-01T00:00:00Z");
    let clock = ManualClock::new(t("2026-01-02T10:00:00Z"));
    let engine = open(dir.path(), &clock).await;
    let partners = demo_partners_since(9, since);
    for p in &partners {
        engine.register_partner(p.clone()).await.unwrap();
    }
    engine.publish_rates(demo_rates(t("2026-01-02T00:00:00Z"))).await.unwrap();
    let version = parse_contract_version(
        &serde_json::json!({"effective_from": "2026-01-03T00:00:00Z",
                            "shares": [{"party": "partner", "percent": "90"}, {"party": "platform", "percent": "10"}]}),
        "v",
        partners[0].currency,
    )
    .unwrap();
    engine.add_contract_version(&partners[0].id, version).await.unwrap();

    let currencies = ["EUR", "USD", "GBP", "JPY"];
    let mut answered = Vec::new();
    for round in 0..3u32 {
        let occurred = format!("2026-01-0{}T09:00:00Z", 2 + round);
        let mut tasks = Vec::new();
        for worker in 0..6u32 {
            let engine = engine.clone();
            let partners: Vec<String> = partners.iter().map(|p| p.id.clone()).collect();
            let occurred = occurred.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for batch in 0..10u32 {
                    let txs: Vec<TxInput> = (0..20u32)
                        .map(|i| {
                            let n = (round * 1000 + worker * 100 + batch) * 20 + i;
                            let partner = &partners[(n as usize) % partners.len()];
                            let currency = currencies[(n as usize / 7) % 4];
                            let amount = if currency == "JPY" { format!("{}", 100 + n % 900) } else { format!("{}.{:02}", 1 + n % 500, n % 100) };
                            match n % 10 {
                                // Refunds of earlier sales of the same partner, payouts and repeats.
                                7 if n >= 200 => tx(serde_json::json!({"id": format!("r{n}"), "partner": partner,
                                    "kind": "refund", "amount": "0.01", "currency": currency,
                                    "original": format!("s{}", n - 180), "occurred_at": occurred})),
                                8 => tx(serde_json::json!({"id": format!("p{n}"), "partner": partner, "kind": "payout",
                                    "amount": "1.00", "currency": "EUR", "occurred_at": occurred})),
                                9 => sale(&format!("s{}", n - 9), partner, "1.00", currency, &occurred),
                                _ => sale(&format!("s{n}"), partner, &amount, currency, &occurred),
                            }
                        })
                        .collect();
                    out.push(engine.submit(txs).await.unwrap());
                }
                out
            }));
        }
        for task in tasks {
            answered.extend(task.await.unwrap());
        }
        // Let a day pass and close what is due, as the scheduler would.
        clock.set(t(&format!("2026-01-0{}T10:00:00Z", 3 + round)));
        engine.tick().await.unwrap();
    }
    let applied = answered.iter().flatten().filter(|r| r.outcome.is_applied()).count();
    let mut reasons = std::collections::BTreeMap::new();
    for r in answered.iter().flatten() {
        *reasons.entry(format!("{:?}/{}", r.outcome.exception(), r.duplicate)).or_insert(0) += 1;
    }
    assert!(applied > 1000, "only {applied} applied: {reasons:?}");
    let mut live_balances = Vec::new();
    for p in &partners {
        live_balances.push(engine.balance(&p.id).await.unwrap().unwrap());
    }
    let mut live_statements = Vec::new();
    for p in &partners {
        live_statements.extend(engine.statements(&p.id).await.unwrap());
    }
    assert!(!live_statements.is_empty());
    engine.shutdown().await.unwrap();

    let (ledger, core_statements) = replay_with_core(dir.path(), Span::from_hours(24));
    for balance in &live_balances {
        let account = ledger.account(&balance.partner).unwrap();
        assert_eq!(balance.payable, account.payable(), "{}", balance.partner);
        assert_eq!(balance.open_period, account.next_to_close());
        assert_eq!(balance.preview, account.preview());
    }
    assert_eq!(live_statements, core_statements);

    // And the engine recovers to the same balances.
    let engine = open(dir.path(), &clock).await;
    for balance in &live_balances {
        assert_eq!(engine.balance(&balance.partner).await.unwrap().as_ref(), Some(balance));
    }
    engine.shutdown().await.unwrap();
}

/// Throughput of the whole engine (sequencer, actors, synced group commit). Ignored: run with
/// `cargo test -p settle-node --test engine throughput -- --ignored --nocapture` (numbers from a
/// debug build are far below release ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.tick_interval = None;
    let engine = Engine::open(cfg).await.unwrap();
    let now = Instant(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128
    );
    let partners = demo_partners_since(100, now.checked_sub(Span::from_hours(1)).unwrap());
    for p in &partners {
        engine.register_partner(p.clone()).await.unwrap();
    }
    engine.publish_rates(demo_rates(now.checked_sub(Span::from_hours(1)).unwrap())).await.unwrap();
    let occurred = now.checked_sub(Span::from_seconds(1)).unwrap().to_rfc3339();
    let submitters = 32u64;
    let batches = 20u64;
    let per_batch = 1000u64;
    let ids: Vec<String> = partners.iter().map(|p| p.id.clone()).collect();
    let work: Vec<Vec<Vec<TxInput>>> = (0..submitters)
        .map(|s| {
            (0..batches)
                .map(|b| {
                    (0..per_batch)
                        .map(|i| {
                            let n = (s * batches + b) * per_batch + i;
                            sale(&format!("x{n}"), &ids[(n % 100) as usize], "12.34", "EUR", &occurred)
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    // Latency of one lone transaction: one group, one fsync.
    let lone = std::time::Instant::now();
    for i in 0..100 {
        engine.submit(vec![sale(&format!("lone{i}"), &ids[0], "1.00", "EUR", &occurred)]).await.unwrap();
    }
    eprintln!("a lone submission takes {:?} (one synced commit)", lone.elapsed() / 100);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for batches in work {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut applied = 0usize;
            for txs in batches {
                loop {
                    match engine.submit(txs.clone()).await {
                        Ok(results) => {
                            applied += results.iter().filter(|r| r.outcome.is_applied()).count();
                            break;
                        }
                        Err(EngineError::Overloaded) => tokio::task::yield_now().await,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            applied
        }));
    }
    let mut applied = 0;
    for task in tasks {
        applied += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = submitters * batches * per_batch;
    let per_second = u128::from(total) * 1_000_000 / elapsed.as_micros().max(1);
    // Resident memory: mostly the idempotency index and the sales kept for refunds.
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS")).map(str::to_string))
        .unwrap_or_default();
    eprintln!(
        "{total} transactions ({applied} applied) in {elapsed:?}: {per_second} tx/s; {:?}; {rss}",
        engine.stats()
    );
    engine.shutdown().await.unwrap();
    let started = std::time::Instant::now();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.tick_interval = None;
    let engine = Engine::open(cfg).await.unwrap();
    eprintln!("recovery of {total} transactions took {:?}", started.elapsed());
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_changed_fx_max_age_applies_from_then_on_and_replay_still_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-01-02T20:00:00Z"));
    let engine = open(dir.path(), &clock).await;
    engine.register_partner(acme()).await.unwrap();
    engine.publish_rates(vec![usd_eur()]).await.unwrap(); // at 2026-01-02T00:00Z
    let r = engine.submit(vec![sale("a", "acme", "10.00", "USD", "2026-01-02T19:00:00Z")]).await.unwrap();
    assert!(r[0].outcome.is_applied());
    engine.shutdown().await.unwrap();

    let mut cfg = config(dir.path(), &clock);
    cfg.fx_max_age = Span::from_hours(1);
    let engine = Engine::open(cfg.clone()).await.unwrap();
    let r = engine.submit(vec![sale("b", "acme", "10.00", "USD", "2026-01-02T19:00:00Z")]).await.unwrap();
    assert_eq!(exception(&r[0]), Some(ExceptionReason::FxStale));
    // The first answer stands: the log says which fx_max_age judged it.
    let r = engine.submit(vec![sale("a", "acme", "10.00", "USD", "2026-01-02T19:00:00Z")]).await.unwrap();
    assert!(r[0].duplicate && r[0].outcome.is_applied());
    engine.shutdown().await.unwrap();
    let engine = Engine::open(cfg).await.unwrap();
    assert_eq!(engine.balance("acme").await.unwrap().unwrap().payable.0, 644 - 14 - 5);
    engine.shutdown().await.unwrap();
}

/// Yields to the runtime until `condition` holds (no sleeping: the runtime runs the engine's
/// tasks in between).
async fn until(mut condition: impl FnMut() -> bool) {
    for _ in 0..1_000_000 {
        if condition() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_answered_before_it_is_durable_and_a_full_engine_says_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-01-02T10:00:01Z"));
    let mut cfg = config(dir.path(), &clock);
    cfg.max_in_flight_txs = 10;
    let engine = Engine::open(cfg).await.unwrap();
    engine.register_partner(acme()).await.unwrap();
    engine.pause_commits();
    let held = {
        let engine = engine.clone();
        let txs: Vec<TxInput> =
            (0..8).map(|i| sale(&format!("h{i}"), "acme", "1.00", "EUR", START)).collect();
        tokio::spawn(async move { engine.submit(txs).await })
    };
    until(|| engine.in_flight() == 8).await;
    let three: Vec<TxInput> = (0..3).map(|i| sale(&format!("o{i}"), "acme", "1.00", "EUR", START)).collect();
    assert!(matches!(engine.submit(three).await, Err(EngineError::Overloaded)));
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert!(!held.is_finished(), "answered before its commit");
    engine.resume_commits();
    let results = held.await.unwrap().unwrap();
    assert!(results.iter().all(|r| r.outcome.is_applied()));
    assert_eq!(engine.in_flight(), 0);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_log_that_does_not_replay_to_what_was_acknowledged_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-01-02T10:00:01Z"));
    let engine = open(dir.path(), &clock).await;
    engine.register_partner(acme()).await.unwrap();
    engine.submit(vec![sale("a", "acme", "1.00", "EUR", START)]).await.unwrap();
    engine.shutdown().await.unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let next = store.last_seq().unwrap().unwrap() + 1;
        let mut forged = sale("b", "acme", "1.00", "EUR", START);
        forged.received_at = t("2026-01-02T10:00:02Z");
        let mut batch = store.batch().unwrap();
        // A valid sale logged as an exception: replay disagrees.
        let outcome = settle_core::Outcome::Exception(ExceptionReason::FxStale);
        batch.append_tx(next, &forged, &outcome);
        store.commit(batch).unwrap();
    }
    match Engine::open(config(dir.path(), &clock)).await {
        Err(EngineError::Recovery(message)) => assert!(message.contains("replay gives"), "{message}"),
        other => panic!("expected a recovery error, got {other:?}"),
    }
}

#[test]
fn the_handle_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<EngineHandle>();
}

/// What `settle dev` does: demo partners and rates on the system clock with the scheduler on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_seeding_on_the_system_clock() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    let partners = settle_node::engine::demo_partners(12);
    for p in &partners {
        engine.register_partner(p.clone()).await.unwrap();
    }
    let now = Instant(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128
    );
    engine.publish_rates(demo_rates(now.checked_sub(Span::from_hours(1)).unwrap())).await.unwrap();
    let occurred = now.checked_sub(Span::from_seconds(30)).unwrap().to_rfc3339();
    let txs: Vec<TxInput> = partners
        .iter()
        .enumerate()
        .map(|(i, p)| sale(&format!("d{i}"), &p.id, "25.00", ["EUR", "USD", "GBP"][i % 3], &occurred))
        .collect();
    let results = engine.submit(txs).await.unwrap();
    assert!(results.iter().all(|r| r.outcome.is_applied()), "{results:?}");
    engine.tick().await.unwrap();
    for p in &partners {
        let balance = engine.balance(&p.id).await.unwrap().unwrap();
        // After the tick nothing due is left open.
        assert!(p.cycle.closes_at(balance.open_period) > now);
        assert!(balance.preview.identities_hold());
    }
    // Periods since DEMO_SINCE closed with statements that satisfy the spec's identities.
    let statements = engine.statements(&partners[0].id).await.unwrap();
    assert!(!statements.is_empty());
    assert!(statements.iter().all(Statement::identities_hold));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t("2026-01-20T10:00:00Z"));
    let engine = open(dir.path(), &clock).await;
    engine.register_partner(acme()).await.unwrap();
    let long = partner_named(&"x".repeat(settle_node::engine::MAX_PARTNER_ID_BYTES + 1));
    assert!(matches!(engine.register_partner(long).await, Err(EngineError::Rejected(_))));
    let version = |from: &str| {
        parse_contract_version(
            &serde_json::json!({"effective_from": from, "shares": [{"party": "partner", "percent": "100"}]}),
            "v",
            acme().currency,
        )
        .unwrap()
    };
    // Periods up to 2026-01-18/19 are closed once a transaction or tick at 01-20 ran.
    engine.tick().await.unwrap();
    let closed = engine.add_contract_version("acme", version("2026-01-05T00:00:00Z")).await;
    assert!(matches!(closed, Err(EngineError::Rejected(_))), "{closed:?}");
    let unknown = engine.add_contract_version("nobody", version("2026-02-01T00:00:00Z")).await;
    assert!(matches!(unknown, Err(EngineError::Rejected(_))));
    let mut bad_rate = usd_eur();
    bad_rate.rate.mantissa = 0;
    assert!(matches!(engine.publish_rates(vec![bad_rate]).await, Err(EngineError::Rejected(_))));
    let too_many: Vec<TxInput> = (0..settle_node::engine::MAX_SUBMIT_TXS + 1)
        .map(|i| sale(&format!("m{i}"), "acme", "1.00", "EUR", "2026-01-20T09:00:00Z"))
        .collect();
    assert!(matches!(engine.submit(too_many).await, Err(EngineError::Rejected(_))));
    assert_eq!(engine.submit(Vec::new()).await.unwrap(), Vec::new());
    // A later version is accepted and used from its effective_from on, also after a restart.
    engine.add_contract_version("acme", version("2026-01-20T00:00:00Z")).await.unwrap();
    engine.shutdown().await.unwrap();
    let engine = open(dir.path(), &clock).await;
    let r = engine.submit(vec![sale("m0", "acme", "10.00", "EUR", "2026-01-20T09:00:00Z")]).await.unwrap();
    assert!(!r[0].duplicate, "the rejected oversized submission left nothing behind");
    let balance = engine.balance("acme").await.unwrap().unwrap();
    assert_eq!(
        balance.payable,
        Minor(-30_000 + 1_000),
        "three closed weeks of minimum fees, then 100% of 10.00"
    );
    engine.shutdown().await.unwrap();
}

/// A small deterministic generator (no RNG crate, same sequence every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

/// Every answer the engine gives, across restarts, ticks and rate publications, equals what
/// `settle_core::Ledger` answers for the same inputs at the same stamped instants.
#[tokio::test]
async fn every_answer_equals_core_ledger_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut now = t("2026-01-02T08:00:00Z");
    let clock = ManualClock::new(now);
    let mut engine = open(dir.path(), &clock).await;
    let mut ledger = Ledger::new(Span::from_hours(24), 5);
    let mut core_statements = Vec::new();
    let partners = demo_partners_since(5, t("2026-01-01T00:00:00Z"));
    for p in &partners {
        engine.register_partner(p.clone()).await.unwrap();
        ledger.add_partner(p.clone()).unwrap();
    }
    let mut rng = Lcg(42);
    let mut history: Vec<TxInput> = Vec::new();
    let currencies = ["EUR", "USD", "GBP", "JPY", "XYZ", "eur"];
    let kinds = ["sale", "sale", "sale", "refund", "chargeback", "payout", "adjustment"];
    for step in 0..60u64 {
        now = now.checked_add(Span::from_minutes(10 + rng.next(600) as i64)).unwrap();
        clock.set(now);
        match rng.next(10) {
            0 => {
                let rates = demo_rates(now.checked_sub(Span::from_minutes(rng.next(120) as i64)).unwrap());
                engine.publish_rates(rates.clone()).await.unwrap();
                rates.into_iter().for_each(|r| ledger.add_rate(r));
            }
            1 => {
                engine.tick().await.unwrap();
                ledger.close_due(now, &mut core_statements);
            }
            2 => {
                engine.shutdown().await.unwrap();
                engine = open(dir.path(), &clock).await;
            }
            _ => {}
        }
        let mut batch = Vec::new();
        for i in 0..1 + rng.next(20) {
            let occurred = now.checked_sub(Span::from_minutes(rng.next(300) as i64)).unwrap().to_rfc3339();
            let partner = if rng.next(30) == 0 {
                "ghost".to_string()
            } else {
                partners[rng.next(5) as usize].id.clone()
            };
            let tx = match rng.next(8) {
                // Exact or altered repeats of earlier transactions.
                0 if !history.is_empty() => history[rng.next(history.len() as u64) as usize].clone(),
                1 if !history.is_empty() => {
                    let mut altered = history[rng.next(history.len() as u64) as usize].clone();
                    altered.reason = Some("changed".into());
                    altered
                }
                _ => {
                    let kind = kinds[rng.next(kinds.len() as u64) as usize];
                    let choices = if rng.next(5) == 0 { 6 } else { 4 };
                    let currency = currencies[rng.next(choices) as usize];
                    let amount = match (kind, currency, rng.next(12)) {
                        (_, _, 0) => "1e3".to_string(),
                        ("adjustment", _, 1) => "-5.00".to_string(),
                        (_, "JPY", _) => format!("{}", 1 + rng.next(50_000)),
                        _ => format!("{}.{:02}", rng.next(2_000), rng.next(100)),
                    };
                    let mut value = serde_json::json!({"id": format!("k{step}-{i}"), "partner": partner,
                        "kind": kind, "amount": amount, "currency": currency, "occurred_at": occurred});
                    if matches!(kind, "refund" | "chargeback") {
                        let original = history.get(rng.next(history.len().max(1) as u64) as usize);
                        value["original"] = original.map_or("none".into(), |o| o.id.as_str().into());
                    }
                    if kind == "adjustment" && rng.next(3) > 0 {
                        value["reason"] = "goodwill".into();
                    }
                    tx(value)
                }
            };
            batch.push(tx);
        }
        let answers = engine.submit(batch.clone()).await.unwrap();
        for (tx, answer) in batch.into_iter().zip(answers) {
            let mut stamped = tx.clone();
            stamped.received_at = now;
            let expected = ledger.apply(stamped, Instant::MAX, &mut core_statements);
            assert_eq!(answer, expected, "step {step}: {tx:?}");
            history.push(tx);
        }
    }
    for p in &partners {
        let balance = engine.balance(&p.id).await.unwrap().unwrap();
        assert_eq!(balance.payable, ledger.account(&p.id).unwrap().payable());
        let mut expected: Vec<&Statement> = core_statements.iter().filter(|s| s.partner == p.id).collect();
        expected.sort_by_key(|s| s.period.start);
        let live = engine.statements(&p.id).await.unwrap();
        assert_eq!(live.iter().collect::<Vec<_>>(), expected, "{}", p.id);
    }
    let kinds_seen: std::collections::BTreeSet<String> = history
        .iter()
        .filter_map(|tx| ledger.lookup(tx.id.as_str()).and_then(|o| o.exception()).map(|r| r.to_string()))
        .collect();
    assert!(kinds_seen.len() >= 6, "too few exception kinds exercised: {kinds_seen:?}");
    let applied =
        history.iter().filter(|tx| ledger.lookup(tx.id.as_str()).is_some_and(Outcome::is_applied)).count();
    let statements: usize = core_statements.len();
    eprintln!(
        "{} transactions, {applied} applied, {statements} statements, exceptions {kinds_seen:?}",
        history.len()
    );
    assert!(applied >= 100 && statements >= 10, "{applied} applied, {statements} statements");
    engine.shutdown().await.unwrap();
}
