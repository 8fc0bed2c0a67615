//! Properties of the settlement semantics over random inputs: splits, double entry, statement
//! identities, idempotency, period tiling across DST changes and replay determinism.
//!
//! Runs are deterministic: proptest uses a fixed seed and writes no regression files, and random
//! scenarios come from a seeded generator, so a failure names the seed that reproduces it.

// Test and benchmark helpers fail loudly on broken fixtures; that is their job.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use serde_json::{json, Value};
use settle_core::account::AccountImage;
use settle_core::cycle::{parse_cutoff, parse_tz, Cycle, CycleKind, WeekdayName};
use settle_core::split::largest_remainder;
use settle_core::{
    ExceptionReason, IdCheck, IdIndex, Instant, Ledger, Outcome, PartnerAccount, Span, Statement,
};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x005e_771e),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// SplitMix64: a tiny deterministic generator, so that one `u64` from proptest names a whole
/// scenario.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn rfc3339(unix_seconds: i64) -> String {
    Instant::from_unix_seconds(unix_seconds).to_rfc3339()
}

/// `units * 10^-exponent` as the spec's amount text.
fn amount_text(units: i64, exponent: u32) -> String {
    settle_core::decimal::format_scaled(i128::from(units), exponent)
}

const CURRENCIES: &[(&str, u32)] = &[("EUR", 2), ("USD", 2), ("JPY", 0), ("BHD", 3)];
const ZONES: &[&str] = &["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney"];
const PARTIES: &[&str] = &["platform", "affiliate:a", "agent:b", "reseller:c"];
const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400;

/// Percents at scale 2 that sum to exactly 100, as strings.
fn random_percents(g: &mut Gen, parties: usize) -> Vec<String> {
    let mut cuts: Vec<i64> = (1..parties).map(|_| g.range(0, 10_000)).collect();
    cuts.push(0);
    cuts.push(10_000);
    cuts.sort_unstable();
    cuts.windows(2).map(|w| amount_text(w[1] - w[0], 2)).collect()
}

fn random_contract(g: &mut Gen, exponent: u32, effective_from: i64) -> Value {
    let party_count = g.range(1, 4) as usize;
    let mut parties: Vec<&str> = Vec::new();
    if g.chance(90) {
        parties.push("partner");
    }
    for &p in PARTIES {
        if parties.len() < party_count && !parties.contains(&p) && g.chance(70) {
            parties.push(p);
        }
    }
    if parties.is_empty() {
        parties.push("partner");
    }
    let shares: Vec<Value> = parties
        .iter()
        .zip(random_percents(g, parties.len()))
        .map(|(p, pct)| json!({"party": p, "percent": pct}))
        .collect();
    let unit = 10i64.pow(exponent);
    let mut fees = Vec::new();
    for _ in 0..g.range(0, 2) {
        if g.chance(60) {
            let mut fee = json!({"kind": "percent", "bps": amount_text(g.range(0, 5_000), 1)});
            let min = g.range(0, 2 * unit);
            let max = min + g.range(0, 100 * unit);
            if g.chance(50) {
                fee["min"] = json!(amount_text(min, exponent));
            }
            if g.chance(50) {
                fee["max"] = json!(amount_text(max, exponent));
            }
            fees.push(fee);
        } else {
            fees.push(json!({"kind": "fixed", "amount": amount_text(g.range(0, unit), exponent)}));
        }
    }
    let mut version = json!({
        "effective_from": rfc3339(effective_from),
        "shares": shares,
        "fees": fees,
    });
    if g.chance(60) {
        version["chargeback_fee"] = json!(amount_text(g.range(0, 20 * unit), exponent));
    }
    let mut period_fees = Vec::new();
    if g.chance(50) {
        let mut tiers = Vec::new();
        let mut bound = 0;
        for _ in 0..g.range(0, 2) {
            bound += g.range(1, 5_000);
            tiers.push(json!({"up_to": bound.to_string(), "bps": g.range(0, 300).to_string()}));
        }
        tiers.push(json!({"up_to": null, "bps": amount_text(g.range(0, 300), 1)}));
        period_fees.push(json!({"kind": "tiered", "tiers": tiers}));
    }
    if g.chance(40) {
        period_fees.push(json!({"kind": "minimum", "amount": amount_text(g.range(0, 50 * unit), exponent)}));
    }
    version["period_fees"] = json!(period_fees);
    version
}

fn random_cycle(g: &mut Gen) -> Value {
    let cutoff = format!("{:02}:{:02}", g.range(0, 23), *g.pick(&[0, 15, 30, 59]));
    let mut cycle = match g.below(3) {
        0 => json!({"every": "daily"}),
        1 => {
            json!({"every": "weekly", "weekday": g.pick(&["mon", "tue", "wed", "thu", "fri", "sat", "sun"])})
        }
        _ => json!({"every": "monthly", "day": g.range(1, 28)}),
    };
    cycle["cutoff"] = json!(cutoff);
    cycle["tz"] = json!(g.pick(ZONES));
    cycle["grace"] = json!(g.pick(&["PT0S", "PT2H", "P1D", "PT30M"]));
    cycle
}

/// A random scenario: 1-3 partners with 1-2 contract versions, rates between the currencies, and a
/// mix of valid and invalid sales, refunds, chargebacks, payouts and adjustments over ~80 days.
fn random_scenario(seed: u64) -> Value {
    let mut g = Gen(seed);
    let partner_count = g.range(1, 3) as usize;
    let mut partners = Vec::new();
    let mut settlement = Vec::new();
    for i in 0..partner_count {
        let &(code, exponent) = g.pick(CURRENCIES);
        settlement.push((code, exponent));
        let since = T0 + g.range(0, 10 * DAY);
        let first_from = T0 + g.range(-5 * DAY, 5 * DAY);
        let mut contracts = vec![random_contract(&mut g, exponent, first_from)];
        if g.chance(50) {
            let later_from = T0 + g.range(0, 60 * DAY);
            contracts.push(random_contract(&mut g, exponent, later_from));
        }
        partners.push(json!({
            "id": format!("p{i}"),
            "settlement_currency": code,
            "since": rfc3339(since),
            "cycle": random_cycle(&mut g),
            "contracts": contracts,
        }));
    }
    let mut rates = Vec::new();
    for _ in 0..g.range(0, 8) {
        let (base, _) = *g.pick(CURRENCIES);
        let (quote, _) = *g.pick(CURRENCIES);
        if base != quote {
            let rate = amount_text(g.range(1, 2_000_000), 4);
            rates.push(json!({"base": base, "quote": quote, "rate": rate, "at": rfc3339(T0 + g.range(-DAY, 70 * DAY))}));
        }
    }
    let mut transactions: Vec<Value> = Vec::new();
    let mut sale_ids: Vec<String> = Vec::new();
    let mut received = T0 + g.range(0, DAY);
    for n in 0..g.range(10, 60) {
        received += g.range(0, 2 * DAY);
        let p = g.below(partner_count as u64 + 1) as usize; // the last index is an unknown partner
        let (own_code, own_exponent) = settlement.get(p).copied().unwrap_or(("EUR", 2));
        let occurred = match g.below(10) {
            0 => received - g.range(0, 20 * DAY), // often late
            1 => received + g.range(0, 600),      // around the future limit
            _ => received - g.range(0, 3_600),
        };
        let (code, exponent) = if g.chance(80) { (own_code, own_exponent) } else { *g.pick(CURRENCIES) };
        let unit = 10i64.pow(exponent);
        let kind = *g.pick(&["sale", "sale", "sale", "refund", "chargeback", "payout", "adjustment"]);
        let units = match kind {
            "adjustment" => g.range(-50 * unit, 50 * unit),
            "payout" => g.range(0, 200 * unit),
            _ => g.range(0, 500 * unit),
        };
        let id = if g.chance(5) && !transactions.is_empty() {
            // Reuse an id: sometimes the same content (a repeat), sometimes not (a conflict).
            let earlier = g.pick(&transactions).clone();
            if g.chance(50) {
                let mut repeat = earlier;
                repeat["received_at"] = json!(rfc3339(received));
                transactions.push(repeat);
                continue;
            }
            earlier["id"].as_str().unwrap_or("x").to_string()
        } else {
            format!("t{n}")
        };
        let mut tx = json!({
            "id": id,
            "kind": kind,
            "amount": amount_text(units, exponent),
            "currency": code,
            "occurred_at": rfc3339(occurred),
            "received_at": rfc3339(received),
        });
        if p < partner_count {
            tx["partner"] = json!(format!("p{p}"));
        } else if g.chance(50) {
            tx["partner"] = json!("nobody");
        }
        if g.chance(3) {
            tx["amount"] = json!("1.0005"); // too precise for every currency here
        }
        if matches!(kind, "refund" | "chargeback") {
            if let (false, true) = (sale_ids.is_empty(), g.chance(85)) {
                tx["original"] = json!(g.pick(&sale_ids));
            } else {
                tx["original"] = json!("no-such-sale");
            }
            // Reverse a small part, so that several reversals of one sale can apply.
            let small = g.range(1, 50 * unit);
            tx["amount"] = json!(amount_text(small, exponent));
        }
        if kind == "adjustment" && g.chance(80) {
            tx["reason"] = json!(g.pick(&["goodwill", "correction", " "]));
        }
        if kind == "sale" {
            sale_ids.push(id);
        }
        transactions.push(tx);
    }
    let close_until = received + g.range(0, 10 * DAY);
    json!({
        "partners": partners,
        "rates": rates,
        "fx_max_age": g.pick(&["PT24H", "P7D", "PT1H"]),
        "transactions": transactions,
        "close_until": rfc3339(close_until),
    })
}

fn parse(scenario: &Value) -> settle_core::scenario::Scenario {
    settle_core::scenario::parse(&scenario.to_string()).expect("generated scenarios are well formed")
}

/// The spec's identities, checked field by field rather than through `identities_hold` alone.
fn check_statements(statements: &[Statement]) {
    let mut previous: Option<&Statement> = None;
    for s in statements {
        assert!(s.identities_hold(), "identities of {} {:?}", s.partner, s.period);
        let shares: i128 = s.shares.iter().map(|(_, m)| m.0).sum();
        assert_eq!(s.gross_sales.0 - s.refunds.0 - s.chargebacks.0, shares, "volume of {:?}", s.period);
        let fees =
            s.fees.percent.0 + s.fees.fixed.0 + s.fees.chargeback.0 + s.fees.tiered.0 + s.fees.minimum.0;
        let closing = s.opening.0 + s.share_of("partner").0 - fees + s.adjustments.0 - s.payouts.0;
        assert_eq!(closing, s.closing.0, "closing of {:?}", s.period);
        assert!(s.fees.minimum.0 >= 0 && s.fees.tiered.0 >= 0);
        assert!(s.late_count <= s.transaction_count);
        assert!(s.period.start < s.period.end);
        match previous {
            Some(p) if p.partner == s.partner => {
                assert_eq!(s.opening, p.closing, "opening is the previous closing");
                assert_eq!(s.period.start, p.period.end, "periods of one partner tile");
            }
            _ => assert_eq!(s.opening.0, 0, "a partner's first statement opens at zero"),
        }
        previous = Some(s);
    }
}

fn check_double_entry(ledger: &Ledger) {
    for account in ledger.accounts_by_id() {
        assert_eq!(account.ledger_sum(), 0, "sub-ledgers of {} sum to zero", account.id());
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn largest_remainder_parts_sum_to_the_amount(
        amount in 0i128..1_000_000_000_000_000,
        cuts in proptest::collection::vec(0i128..=1_000_000, 0..8),
        scale in 0u32..=4,
    ) {
        let hundred = 100 * 10i128.pow(scale);
        let mut points: Vec<i128> = cuts.iter().map(|c| c * hundred / 1_000_000).collect();
        points.push(0);
        points.push(hundred);
        points.sort_unstable();
        let mantissas: Vec<i128> = points.windows(2).map(|w| w[1] - w[0]).collect();
        let parts = largest_remainder(amount, &mantissas, scale).expect("splits");
        prop_assert_eq!(parts.as_slice().iter().sum::<i128>(), amount);
        for (part, m) in parts.as_slice().iter().zip(&mantissas) {
            // Each part is its exact share rounded down or up.
            let floor = amount * m / hundred;
            prop_assert!(*part == floor || *part == floor + 1, "{} vs floor {}", part, floor);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_scenarios_keep_double_entry_and_statement_identities(seed in any::<u64>()) {
        let scenario = parse(&random_scenario(seed));
        let outcome = settle_core::replay::run(&scenario).expect("replays");
        check_double_entry(&outcome.ledger);
        check_statements(&outcome.statements);
        for (partner, payable, _) in &outcome.balances {
            let account = outcome.ledger.account(partner).expect("listed partner exists");
            prop_assert_eq!(*payable, account.payable());
        }
    }

    #[test]
    fn applying_every_transaction_twice_equals_applying_it_once(seed in any::<u64>()) {
        let scenario = parse(&random_scenario(seed));
        let mut order = scenario.transactions.clone();
        order.sort_by_key(|tx| tx.received_at);
        let mut once = settle_core::replay::ledger_for(&scenario).expect("ledger");
        let mut twice = settle_core::replay::ledger_for(&scenario).expect("ledger");
        let (mut once_statements, mut twice_statements) = (Vec::new(), Vec::new());
        for tx in order {
            let first_once = once.apply(tx.clone(), scenario.close_until, &mut once_statements);
            let first = twice.apply(tx.clone(), scenario.close_until, &mut twice_statements);
            let again = twice.apply(tx, scenario.close_until, &mut twice_statements);
            prop_assert_eq!(&first.outcome, &first_once.outcome);
            prop_assert_eq!(&again.outcome, &first.outcome, "the second submission returns the first result");
            let conflict = first.outcome.exception() == Some(settle_core::ExceptionReason::DuplicateConflict);
            prop_assert_eq!(again.duplicate, !conflict);
        }
        once.close_due(scenario.close_until, &mut once_statements);
        twice.close_due(scenario.close_until, &mut twice_statements);
        prop_assert_eq!(&once_statements, &twice_statements);
        for (a, b) in once.accounts_by_id().into_iter().zip(twice.accounts_by_id()) {
            prop_assert_eq!(a.sub_ledgers(), b.sub_ledgers());
        }
    }

    #[test]
    fn apply_batch_equals_applying_one_by_one(seed in any::<u64>(), cut in 0usize..40) {
        let scenario = parse(&random_scenario(seed));
        let mut order = scenario.transactions.clone();
        order.sort_by_key(|tx| tx.received_at);
        // Repeats (same content, and so within one warm group too) exercise the id index.
        let repeats: Vec<_> = order.iter().step_by(3).cloned().collect();
        order.extend(repeats);
        let mut single = settle_core::replay::ledger_for(&scenario).expect("ledger");
        let mut batched = settle_core::replay::ledger_for(&scenario).expect("ledger");
        // Capacity hints change nothing observable.
        batched.reserve(order.len(), cut % 7);
        let (mut single_statements, mut batched_statements) = (Vec::new(), Vec::new());
        let single_results: Vec<_> = order
            .iter()
            .map(|tx| single.apply(tx.clone(), scenario.close_until, &mut single_statements))
            .collect();
        // Two batches, cut anywhere, give the same as one.
        let cut = cut.min(order.len());
        let mut batched_results = batched.apply_batch(order[..cut].to_vec(), scenario.close_until, &mut batched_statements);
        batched_results.extend(batched.apply_batch(order[cut..].to_vec(), scenario.close_until, &mut batched_statements));
        prop_assert_eq!(&single_results, &batched_results);
        prop_assert_eq!(&single_statements, &batched_statements);
        prop_assert_eq!(single.transaction_count(), batched.transaction_count());
        for tx in &order {
            prop_assert_eq!(single.lookup(tx.id.as_str()), batched.lookup(tx.id.as_str()));
        }
        for (a, b) in single.accounts_by_id().into_iter().zip(batched.accounts_by_id()) {
            prop_assert_eq!(a.sub_ledgers(), b.sub_ledgers());
            prop_assert_eq!(a.preview(), b.preview());
        }
    }

    #[test]
    fn replaying_a_scenario_twice_gives_identical_bytes(seed in any::<u64>()) {
        let text = random_scenario(seed).to_string();
        let first = settle_core::replay::run(&settle_core::scenario::parse(&text).expect("parses")).expect("runs");
        let second = settle_core::replay::run(&settle_core::scenario::parse(&text).expect("parses")).expect("runs");
        prop_assert_eq!(first.to_json(), second.to_json());
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// A Raft snapshot carries accounts as images: an account restored from its image (through
    /// bincode, the snapshot's codec, and with another hash seed) answers every later
    /// transaction and close exactly as the account it was taken of.
    #[test]
    fn an_account_restored_from_its_image_behaves_as_the_original(seed in any::<u64>(), cut in 0usize..60) {
        let scenario = parse(&random_scenario(seed));
        let mut order = scenario.transactions.clone();
        order.sort_by_key(|tx| tx.received_at);
        let cut = cut.min(order.len());
        let mut original = settle_core::replay::ledger_for(&scenario).expect("ledger");
        let mut restored = settle_core::replay::ledger_for(&scenario).expect("ledger");
        let (mut original_statements, mut restored_statements) = (Vec::new(), Vec::new());
        for tx in &order[..cut] {
            original.apply(tx.clone(), scenario.close_until, &mut original_statements);
            restored.apply(tx.clone(), scenario.close_until, &mut restored_statements);
        }
        let ids: Vec<String> = restored.accounts_by_id().iter().map(|a| a.id().to_string()).collect();
        for id in &ids {
            let account = restored.account_mut(id).expect("listed");
            let image = account.image();
            let bytes = bincode::serialize(&image).expect("encodes");
            let decoded: AccountImage = bincode::deserialize(&bytes).expect("decodes");
            prop_assert_eq!(&decoded, &image);
            let back = PartnerAccount::from_image(decoded, seed ^ 0x5eed).expect("restores");
            prop_assert_eq!(back.image(), image, "the image of the restored account is the same");
            *account = back;
        }
        for tx in &order[cut..] {
            let a = original.apply(tx.clone(), scenario.close_until, &mut original_statements);
            let b = restored.apply(tx.clone(), scenario.close_until, &mut restored_statements);
            prop_assert_eq!(a, b, "{}", tx.id.as_str());
        }
        original.close_due(scenario.close_until, &mut original_statements);
        restored.close_due(scenario.close_until, &mut restored_statements);
        prop_assert_eq!(&original_statements, &restored_statements);
        for (a, b) in original.accounts_by_id().into_iter().zip(restored.accounts_by_id()) {
            prop_assert_eq!(a.sub_ledgers(), b.sub_ledgers());
            prop_assert_eq!(a.preview(), b.preview());
            prop_assert_eq!(a.next_to_close(), b.next_to_close());
            prop_assert_eq!(a.image(), b.image());
        }
    }

    /// Recording an index's entries, in their order, into a new index (with another seed)
    /// rebuilds it: every id answers alike.
    #[test]
    fn an_id_index_rebuilt_from_its_entries_answers_alike(seed in any::<u64>()) {
        let scenario = parse(&random_scenario(seed));
        let mut index = IdIndex::new(seed);
        for (n, tx) in scenario.transactions.iter().enumerate() {
            if index.check(tx) == IdCheck::New {
                let outcome = if n % 2 == 0 {
                    Outcome::Exception(ExceptionReason::UnknownPartner)
                } else {
                    Outcome::Exception(ExceptionReason::FxStale)
                };
                index.record(tx.clone(), outcome);
            }
        }
        let mut rebuilt = IdIndex::new(seed.rotate_left(7));
        for (tx, outcome) in index.entries() {
            rebuilt.record(tx.clone(), outcome.clone());
        }
        prop_assert_eq!(rebuilt.len(), index.len());
        prop_assert!(rebuilt.entries().eq(index.entries()));
        for tx in &scenario.transactions {
            prop_assert_eq!(rebuilt.check(tx), index.check(tx));
        }
    }
}

fn cycle_strategy() -> impl Strategy<Value = Cycle> {
    let kind = prop_oneof![
        Just(CycleKind::Daily),
        (0u8..7).prop_map(|d| CycleKind::Weekly(WeekdayName(d))),
        (1u8..=28).prop_map(CycleKind::Monthly),
    ];
    // Cut-offs around the DST switch hours (01:00-03:59) are the interesting ones; others too.
    let cutoff = prop_oneof![(1u16..4, 0u16..60), (0u16..24, prop::sample::select(vec![0u16, 30, 59]))];
    let zone = prop::sample::select(vec!["Europe/Berlin", "America/New_York", "Australia/Sydney"]);
    (kind, cutoff, zone).prop_map(|(kind, (h, m), zone)| Cycle {
        kind,
        cutoff_minutes: parse_cutoff(&format!("{h:02}:{m:02}")).expect("valid cut-off"),
        tz: parse_tz(zone).expect("known zone"),
        grace: Span::ZERO,
    })
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn periods_tile_time_across_dst_changes(
        cycle in cycle_strategy(),
        probes in proptest::collection::vec(0i64..3 * 365 * DAY, 16),
    ) {
        let from = Instant::parse_rfc3339("2025-01-01T00:00:00Z").expect("instant");
        let until = Instant::parse_rfc3339("2028-01-01T00:00:00Z").expect("instant");
        let mut period = cycle.period_containing(from).expect("a period contains 2025-01-01");
        prop_assert!(period.contains(from));
        while period.end < until {
            prop_assert!(period.start < period.end, "non-empty: {:?}", period);
            // No period is longer than a month plus a DST hour, none shorter than a day minus one.
            prop_assert!(period.end.since(period.start) <= Span::from_hours(31 * 24 + 1));
            prop_assert!(period.end.since(period.start) >= Span::from_hours(23));
            let next = cycle.next_period(period).expect("a next period");
            prop_assert_eq!(next.start, period.end, "no gap or overlap");
            period = next;
        }
        for offset in probes {
            let t = Instant::from_unix_seconds(1_735_689_600 + offset);
            let p = cycle.period_containing(t).expect("a period contains t");
            prop_assert!(p.contains(t), "{:?} contains {:?}", p, t);
        }
    }
}

#[test]
fn generated_scenarios_exercise_every_outcome() {
    // Guards the generator itself: over a fixed set of seeds, sales apply, reversals and payouts
    // apply, exceptions arise and periods close, so the properties above test something.
    let mut applied_kinds = std::collections::BTreeSet::new();
    let mut reasons = std::collections::BTreeSet::new();
    let mut statements = 0;
    let mut late = 0;
    for seed in 0..64u64 {
        let scenario = parse(&random_scenario(seed));
        let outcome = settle_core::replay::run(&scenario).expect("replays");
        statements += outcome.statements.len();
        late += outcome.statements.iter().map(|s| s.late_count).sum::<u64>();
        for (_, reason) in &outcome.exceptions {
            reasons.insert(reason.as_str());
        }
        for tx in &scenario.transactions {
            if outcome.ledger.lookup(tx.id.as_str()).is_some_and(|o| o.is_applied()) {
                applied_kinds.insert(tx.kind.as_str());
            }
        }
    }
    assert_eq!(applied_kinds.len(), 5, "{applied_kinds:?}");
    assert!(reasons.len() >= 9, "{reasons:?}");
    assert!(statements > 100 && late > 0, "{statements} statements, {late} late");
}

/// Every JSON pointer into `value` (objects by key, arrays by index), the root excluded.
fn pointers(value: &Value, prefix: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{prefix}/{i}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A scenario with a few fields replaced by junk is either refused with a field-naming error or
    /// replayed with the identities intact; it never panics.
    #[test]
    fn mangled_scenarios_are_refused_or_replayed_never_panic(seed in any::<u64>(), edits in 1usize..4) {
        let mut scenario = random_scenario(seed);
        let mut g = Gen(seed ^ 0xdead_beef);
        let junk = [
            json!(null), json!(""), json!("-1"), json!("1e3"), json!(0), json!(-7), json!(true), json!([]),
            json!({}), json!("9".repeat(40)), json!("2026-13-01T00:00:00Z"), json!("P1Y"), json!("0.0000001"),
            json!("mon"), json!("99:99"), json!("Mars/Olympus"), json!("x".repeat(65)), json!(1.5),
        ];
        for _ in 0..edits {
            let mut all = Vec::new();
            pointers(&scenario, String::new(), &mut all);
            if all.is_empty() {
                break;
            }
            let target = g.pick(&all).clone();
            let replacement = g.pick(&junk).clone();
            if let Some(slot) = scenario.pointer_mut(&target) {
                *slot = replacement;
            }
        }
        match settle_core::scenario::parse(&scenario.to_string()) {
            Err(settle_core::scenario::ScenarioError::Field { path, .. }) => prop_assert!(!path.is_empty()),
            Err(settle_core::scenario::ScenarioError::Json { .. }) => {}
            Ok(parsed) => {
                if let Ok(outcome) = settle_core::replay::run(&parsed) {
                    check_double_entry(&outcome.ledger);
                    check_statements(&outcome.statements);
                    let _ = outcome.to_json();
                }
            }
        }
    }
}
