//! Throughput of `Ledger::apply`, the path every transaction takes: 10,000 partner accounts with
//! three parties and two sale fees, a third of the sales in a foreign currency, and a mix of
//! sales, refunds and payouts. Inputs are built outside the timed part.
//!
//! Run: `cargo bench -p settle-core --bench apply`

// Test and benchmark helpers fail loudly on broken fixtures; that is their job.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use settle_core::contract::{SaleFee, Share};
use settle_core::cycle::{parse_tz, Cycle, CycleKind};
use settle_core::{
    AmountField, Contract, ContractVersion, Currency, Dec, FxRate, Instant, Ledger, Minor, Partner, Span,
    TxId, TxInput, TxKind,
};
use std::hint::black_box;

const PARTNERS: usize = 10_000;
const TRANSACTIONS: usize = 200_000;

fn currency(code: &str) -> Currency {
    Currency::from_code(code).expect("known currency")
}

fn dec(text: &str) -> Dec {
    Dec::parse(text, true).expect("decimal literal")
}

fn partner_id(i: usize) -> String {
    format!("partner-{i:05}")
}

fn ledger(partners: usize) -> Ledger {
    let start = Instant::from_unix_seconds(1_767_225_600); // 2026-01-01T00:00:00Z
    let mut ledger = Ledger::new(Span::from_hours(24), 7);
    ledger.add_rate(FxRate {
        base: currency("USD"),
        quote: currency("EUR"),
        rate: dec("0.9213"),
        at: start,
        source: None,
    });
    for i in 0..partners {
        let version = ContractVersion::new(
            start,
            vec![
                Share { party: "partner".into(), percent: dec("70") },
                Share { party: "platform".into(), percent: dec("25.5") },
                Share { party: format!("affiliate:{}", i % 97), percent: dec("4.5") },
            ],
            vec![
                SaleFee::Percent { bps: dec("150"), min: Some(Minor(10)), max: Some(Minor(5_000)) },
                SaleFee::Fixed { amount: Minor(5) },
            ],
            Some(Minor(1_500)),
            vec![],
        )
        .expect("valid contract");
        ledger
            .add_partner(Partner {
                id: partner_id(i),
                currency: currency("EUR"),
                since: start,
                cycle: Cycle {
                    kind: CycleKind::Daily,
                    cutoff_minutes: 0,
                    tz: parse_tz("UTC").expect("UTC"),
                    grace: Span::ZERO,
                },
                contract: Contract::new(vec![version]).expect("one version"),
            })
            .expect("new partner");
    }
    ledger
}

/// Within one day, so the benchmark measures apply and not period closing. Partners take turns in
/// a stride order (no partner is hot in the cache), and each partner's own sequence repeats
/// every 20 transactions: 12 sales (a third of them in USD), 5 partial refunds of its latest EUR
/// sale, 3 payouts small enough to be covered. That is 60% sales, 25% refunds, 15% payouts.
fn inputs(partners: usize) -> Vec<TxInput> {
    let day_start = 1_767_225_600i64 + 3_600;
    let mut txs = Vec::with_capacity(TRANSACTIONS);
    let mut seen = vec![0usize; partners];
    let mut last_eur_sale: Vec<Option<usize>> = vec![None; partners];
    for n in 0..TRANSACTIONS {
        let p = (n * 7_919) % partners;
        let k = seen[p];
        seen[p] += 1;
        let t = Instant::from_unix_seconds(day_start + (n as i64) * 80_000 / TRANSACTIONS as i64);
        let (kind, amount, code, original) = match (k % 20, last_eur_sale[p]) {
            (12..=16, Some(sale)) => (TxKind::Refund, "1.25", "EUR", Some(format!("t{sale}"))),
            (17..=19, _) => (TxKind::Payout, "0.50", "EUR", None),
            (slot, _) if slot % 3 == 0 => (TxKind::Sale, "42.17", "USD", None),
            _ => {
                last_eur_sale[p] = Some(n);
                (TxKind::Sale, "129.99", "EUR", None)
            }
        };
        txs.push(TxInput {
            id: TxId::new(format!("t{n}")).expect("short id"),
            partner: Some(partner_id(p)),
            kind,
            amount: AmountField::Decimal(dec(amount)),
            currency: Some(code.to_string()),
            occurred_at: t,
            received_at: t,
            original,
            reason: None,
            metadata: None,
        });
    }
    txs
}

fn apply_throughput(c: &mut Criterion) {
    let close_limit = Instant::from_unix_seconds(1_767_225_600 + 2 * 86_400);
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(TRANSACTIONS as u64));
    group.sample_size(10);
    // 10,000 partners is the target case; 1,000 (whose accounts fit in the last-level cache) shows
    // how much of the cost is memory latency.
    for partners in [PARTNERS, PARTNERS / 10] {
        let base_ledger = ledger(partners);
        let base_inputs = inputs(partners);
        {
            // The mix must really be applied, not rejected.
            let mut ledger = base_ledger.clone();
            let mut statements = Vec::new();
            let applied = base_inputs
                .iter()
                .filter(|tx| ledger.apply((*tx).clone(), close_limit, &mut statements).outcome.is_applied())
                .count();
            assert_eq!(applied, TRANSACTIONS, "every benchmark transaction applies");
            let count = |kind: TxKind| base_inputs.iter().filter(|tx| tx.kind == kind).count();
            assert_eq!(
                (count(TxKind::Sale), count(TxKind::Refund), count(TxKind::Payout)),
                (TRANSACTIONS * 12 / 20, TRANSACTIONS * 5 / 20, TRANSACTIONS * 3 / 20)
            );
        }
        group.bench_function(format!("apply_200k_over_{partners}_partners"), |b| {
            b.iter_batched(
                || {
                    // Capacity as a live shard takes it at start-up (static allocation: the id
                    // index's memory is taken and touched there, not per transaction); sizing
                    // is not applying, so it stays outside the timed part.
                    let mut ledger = base_ledger.clone();
                    ledger.reserve(TRANSACTIONS, TRANSACTIONS * 12 / 20 / partners);
                    (ledger, base_inputs.clone(), Vec::with_capacity(16))
                },
                |(mut ledger, txs, mut statements)| {
                    let results = ledger.apply_batch(txs, close_limit, &mut statements);
                    (ledger, statements, black_box(results))
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, apply_throughput);
criterion_main!(benches);
