//! One table per rule of the spec, with hand-computed expectations: the order of the exception
//! checks, the future-timestamp boundary, payouts, adjustments, cumulative reversals, the
//! chargeback fee's version, late transactions, period fees, contract versions, FX and
//! idempotency.

// Test helpers fail loudly on broken fixtures; that is their job.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde_json::{json, Value};
use settle_core::tx::TxResult;
use settle_core::{ExceptionReason as R, Instant, Ledger, Minor, Outcome, Statement, TxInput};

/// A partner definition with EUR settlement, a daily UTC cycle and `contract` as its only version.
fn partner(id: &str, contracts: Value) -> Value {
    json!({
        "id": id, "settlement_currency": "EUR", "since": "2026-03-01T00:00:00Z",
        "cycle": {"every": "daily", "cutoff": "00:00", "tz": "UTC", "grace": "PT1H"},
        "contracts": contracts,
    })
}

fn simple_contract() -> Value {
    json!([{
        "effective_from": "2026-01-01T00:00:00Z",
        "shares": [{"party": "partner", "percent": "90"}, {"party": "platform", "percent": "10"}],
        "fees": [{"kind": "percent", "bps": "100"}, {"kind": "fixed", "amount": "0.30"}],
        "chargeback_fee": "5.00"
    }])
}

/// A ledger built the way `settle replay` builds it, from scenario JSON without transactions.
fn ledger(partners: Vec<Value>, rates: Value, fx_max_age: &str) -> Ledger {
    let scenario = json!({
        "partners": partners, "rates": rates, "fx_max_age": fx_max_age,
        "transactions": [], "close_until": "2030-01-01T00:00:00Z",
    });
    let scenario = settle_core::scenario::parse(&scenario.to_string()).expect("fixture scenario");
    settle_core::replay::ledger_for(&scenario).expect("fixture ledger")
}

fn tx(value: Value) -> TxInput {
    settle_core::scenario::parse_transaction(&value, "tx", None).expect("fixture transaction")
}

/// A sale of `amount` EUR by `partner` at `at` (received when it occurred).
fn sale(id: &str, partner: &str, amount: &str, at: &str) -> Value {
    json!({"id": id, "partner": partner, "kind": "sale", "amount": amount, "currency": "EUR",
           "occurred_at": at, "received_at": at})
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().expect("changes object") {
        if v.is_null() {
            base.as_object_mut().expect("object").remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn at(text: &str) -> Instant {
    Instant::parse_rfc3339(text).expect("instant")
}

struct Run {
    ledger: Ledger,
    statements: Vec<Statement>,
}

impl Run {
    fn new(ledger: Ledger) -> Run {
        Run { ledger, statements: Vec::new() }
    }

    fn apply(&mut self, value: Value) -> TxResult {
        self.ledger.apply(tx(value), at("2030-01-01T00:00:00Z"), &mut self.statements)
    }

    fn ok(&mut self, value: Value) {
        let result = self.apply(value.clone());
        assert!(result.outcome.is_applied(), "{value}: {:?}", result.outcome);
    }

    fn payable(&self, partner: &str) -> Minor {
        self.ledger.account(partner).expect("partner").payable()
    }

    fn close(&mut self, now: &str) {
        self.ledger.close_due(at(now), &mut self.statements);
    }

    /// The statement of `partner`'s period containing `instant`.
    fn statement_at(&self, partner: &str, instant: &str) -> &Statement {
        let t = at(instant);
        self.statements
            .iter()
            .find(|s| s.partner == partner && s.period.contains(t))
            .unwrap_or_else(|| panic!("no statement of {partner} at {instant}"))
    }
}

/// acme (EUR, 90/10, 1% + 0.30, chargeback fee 5.00) with sale s1 of 100.00 applied, and other's
/// sale o1; USD->EUR has a rate that is 2 days old by 2026-03-10.
fn checks_fixture() -> Run {
    let rates = json!([{"base": "USD", "quote": "EUR", "rate": "0.9", "at": "2026-03-08T00:00:00Z"}]);
    let mut run = Run::new(ledger(
        vec![partner("acme", simple_contract()), partner("other", simple_contract())],
        rates,
        "PT24H",
    ));
    run.ok(sale("s1", "acme", "100.00", "2026-03-10T08:00:00Z"));
    run.ok(sale("o1", "other", "100.00", "2026-03-10T08:00:00Z"));
    run
}

#[test]
fn exception_checks_run_in_the_spec_order() {
    let base = sale("n1", "acme", "10.00", "2026-03-10T09:00:00Z");
    let future = "2026-03-10T09:05:01Z";
    // (row, changes to a valid sale, expected first failing check)
    let rows: Vec<(&str, Value, Option<R>)> = vec![
        ("valid sale", json!({}), None),
        ("same id, other content", json!({"id": "s1"}), Some(R::DuplicateConflict)),
        ("unknown partner", json!({"partner": "ghost"}), Some(R::UnknownPartner)),
        ("missing partner", json!({"partner": null}), Some(R::UnknownPartner)),
        ("unknown currency", json!({"currency": "XAU"}), Some(R::UnknownCurrency)),
        ("lower-case currency", json!({"currency": "eur"}), Some(R::UnknownCurrency)),
        ("withdrawn currency", json!({"currency": "HRK"}), Some(R::UnknownCurrency)),
        ("missing currency", json!({"currency": null}), Some(R::UnknownCurrency)),
        ("amount too precise", json!({"amount": "1.005"}), Some(R::InvalidAmount)),
        ("amount as a JSON number", json!({"amount": 10}), Some(R::InvalidAmount)),
        ("exponent notation", json!({"amount": "1e3"}), Some(R::InvalidAmount)),
        ("leading dot", json!({"amount": ".5"}), Some(R::InvalidAmount)),
        ("trailing dot", json!({"amount": "5."}), Some(R::InvalidAmount)),
        ("spaces", json!({"amount": " 5"}), Some(R::InvalidAmount)),
        ("zero", json!({"amount": "0"}), Some(R::InvalidAmount)),
        ("negative sale", json!({"amount": "-1.00"}), Some(R::InvalidAmount)),
        ("missing amount", json!({"amount": null}), Some(R::InvalidAmount)),
        ("future", json!({"occurred_at": future}), Some(R::FutureTimestamp)),
        ("blank reason", json!({"kind": "adjustment", "reason": " \t"}), Some(R::InvalidAdjustment)),
        ("no reason", json!({"kind": "adjustment"}), Some(R::InvalidAdjustment)),
        ("unknown original", json!({"kind": "refund", "original": "nope"}), Some(R::UnknownOriginal)),
        ("no original", json!({"kind": "refund"}), Some(R::UnknownOriginal)),
        ("another partner's sale", json!({"kind": "chargeback", "original": "o1"}), Some(R::UnknownOriginal)),
        (
            "reversal in another currency",
            json!({"kind": "refund", "original": "s1", "currency": "USD"}),
            Some(R::InvalidCurrency),
        ),
        ("payout not in S", json!({"kind": "payout", "currency": "USD"}), Some(R::InvalidCurrency)),
        (
            "adjustment not in S",
            json!({"kind": "adjustment", "currency": "USD", "reason": "x"}),
            Some(R::InvalidCurrency),
        ),
        (
            "refund above the sale",
            json!({"kind": "refund", "original": "s1", "amount": "100.01"}),
            Some(R::RefundExceedsOriginal),
        ),
        ("no rate", json!({"currency": "GBP"}), Some(R::FxUnavailable)),
        ("stale rate", json!({"currency": "USD"}), Some(R::FxStale)),
        (
            "payout above payable",
            json!({"kind": "payout", "amount": "1000.00"}),
            Some(R::InsufficientBalance),
        ),
        // Two checks fail: the first in the spec's order names the exception.
        ("conflict and unknown partner", json!({"id": "s1", "partner": "ghost"}), Some(R::DuplicateConflict)),
        (
            "unknown partner and currency",
            json!({"partner": "ghost", "currency": "XAU"}),
            Some(R::UnknownPartner),
        ),
        (
            "unknown currency and bad amount",
            json!({"currency": "XAU", "amount": "abc"}),
            Some(R::UnknownCurrency),
        ),
        ("bad amount and future", json!({"amount": "1.005", "occurred_at": future}), Some(R::InvalidAmount)),
        (
            "future and no reason",
            json!({"kind": "adjustment", "occurred_at": future}),
            Some(R::FutureTimestamp),
        ),
        (
            "no reason and other currency",
            json!({"kind": "adjustment", "currency": "USD"}),
            Some(R::InvalidAdjustment),
        ),
        (
            "unknown original and other currency",
            json!({"kind": "refund", "original": "nope", "currency": "USD"}),
            Some(R::UnknownOriginal),
        ),
        (
            "other currency and above the sale",
            json!({"kind": "refund", "original": "s1", "currency": "USD", "amount": "500.00"}),
            Some(R::InvalidCurrency),
        ),
        (
            "above the sale and future",
            json!({"kind": "refund", "original": "s1", "amount": "500.00", "occurred_at": future}),
            Some(R::FutureTimestamp),
        ),
        // Decimals are counted in the transaction's own currency, before its currency is compared
        // with the sale's: 1.5 JPY is not an amount at all.
        (
            "too precise for its currency and not the sale's",
            json!({"kind": "refund", "original": "s1", "currency": "JPY", "amount": "1.5"}),
            Some(R::InvalidAmount),
        ),
        (
            "payout in USD above payable",
            json!({"kind": "payout", "currency": "USD", "amount": "9999.00"}),
            Some(R::InvalidCurrency),
        ),
    ];
    for (row, changes, expected) in rows {
        let mut run = checks_fixture();
        let payable_before = run.payable("acme");
        let result = run.apply(with(base.clone(), changes));
        assert_eq!(result.outcome.exception(), expected, "{row}");
        if expected.is_some() {
            assert_eq!(run.payable("acme"), payable_before, "{row}: an exception changes no balance");
        }
    }
}

#[test]
fn future_timestamp_boundary_is_inclusive_at_five_minutes() {
    let rows: &[(&str, Option<R>)] = &[
        ("2026-03-10T09:05:00Z", None),
        ("2026-03-10T09:05:00.000000001Z", Some(R::FutureTimestamp)),
        ("2026-03-10T09:05:01Z", Some(R::FutureTimestamp)),
        ("2026-03-10T10:04:59+01:00", None),
        ("2026-03-10T08:00:00Z", None),
    ];
    for (i, &(occurred, expected)) in rows.iter().enumerate() {
        let mut run = checks_fixture();
        let value = json!({"id": format!("f{i}"), "partner": "acme", "kind": "sale", "amount": "1.00",
                           "currency": "EUR", "occurred_at": occurred, "received_at": "2026-03-10T09:00:00Z"});
        assert_eq!(run.apply(value).outcome.exception(), expected, "{occurred}");
    }
}

#[test]
fn payouts_up_to_the_payable_across_periods() {
    // s1: 90.00 - 1.00 - 0.30 = 88.70 on 03-10; s2 on 03-11: 18.00 - 0.20 - 0.30 = 17.50.
    let mut run = checks_fixture();
    run.ok(sale("s2", "acme", "20.00", "2026-03-11T08:00:00Z"));
    assert_eq!(run.payable("acme"), Minor(10_620));
    let payout = |id: &str, amount: &str| {
        json!({"id": id, "partner": "acme", "kind": "payout", "amount": amount, "currency": "EUR",
               "occurred_at": "2026-03-11T09:00:00Z", "received_at": "2026-03-11T09:00:00Z"})
    };
    assert_eq!(run.apply(payout("p1", "106.21")).outcome.exception(), Some(R::InsufficientBalance));
    run.ok(payout("p2", "106.20"));
    assert_eq!(run.payable("acme"), Minor(0));
    assert_eq!(run.apply(payout("p3", "0.01")).outcome.exception(), Some(R::InsufficientBalance));
}

#[test]
fn adjustments_move_payable_against_platform_revenue() {
    // (amount, reason, expected payable change in cents or the exception)
    let rows: &[(&str, Option<&str>, Result<i128, R>)] = &[
        ("5.00", Some("goodwill"), Ok(500)),
        ("-2.50", Some("correction"), Ok(-250)),
        ("-100.00", Some("clawback"), Ok(-10_000)), // may take the payable below zero
        ("5.00", Some(""), Err(R::InvalidAdjustment)),
        ("5.00", Some("   "), Err(R::InvalidAdjustment)),
        ("5.00", None, Err(R::InvalidAdjustment)),
        ("0.00", Some("nothing"), Err(R::InvalidAmount)),
    ];
    for (i, &(amount, reason, expected)) in rows.iter().enumerate() {
        let mut run = checks_fixture();
        let before = run.payable("acme");
        let platform = |run: &Run| {
            run.ledger
                .account("acme")
                .unwrap()
                .sub_ledgers()
                .into_iter()
                .find(|(n, _)| n == "party:platform")
                .unwrap()
                .1
        };
        let platform_before = platform(&run);
        let mut value = json!({"id": format!("j{i}"), "partner": "acme", "kind": "adjustment", "amount": amount,
                               "currency": "EUR", "occurred_at": "2026-03-10T09:00:00Z",
                               "received_at": "2026-03-10T09:00:00Z"});
        if let Some(reason) = reason {
            value["reason"] = json!(reason);
        }
        let result = run.apply(value);
        match expected {
            Ok(delta) => {
                assert!(result.outcome.is_applied(), "{amount} {reason:?}");
                assert_eq!(run.payable("acme").0 - before.0, delta, "{amount}");
                // Platform revenue is a credit balance: it falls by what the partner gains.
                assert_eq!(platform(&run).0 - platform_before.0, delta, "{amount}");
            }
            Err(reason_expected) => assert_eq!(result.outcome.exception(), Some(reason_expected)),
        }
    }
    let mut run = checks_fixture();
    run.ok(json!({"id": "j1", "partner": "acme", "kind": "adjustment", "amount": "5.00", "currency": "EUR",
                  "reason": "goodwill", "occurred_at": "2026-03-10T09:00:00Z", "received_at": "2026-03-10T09:00:00Z"}));
    run.ok(json!({"id": "j2", "partner": "acme", "kind": "adjustment", "amount": "-1.25", "currency": "EUR",
                  "reason": "fix", "occurred_at": "2026-03-10T10:00:00Z", "received_at": "2026-03-10T10:00:00Z"}));
    run.close("2026-03-11T01:00:00Z");
    let statement = run.statement_at("acme", "2026-03-10T12:00:00Z");
    assert_eq!(statement.adjustments, Minor(375));
    // 88.70 + 3.75
    assert_eq!(statement.closing, Minor(9_245));
}

#[test]
fn reversals_are_cumulative_and_end_at_exactly_zero() {
    // 33/33/34 three ways, 2.9% fee: a = 10.00 EUR, P = round(10.00 * 2.9%) = 0.29.
    let contract = json!([{
        "effective_from": "2026-01-01T00:00:00Z",
        "shares": [{"party": "partner", "percent": "33"}, {"party": "platform", "percent": "33"},
                   {"party": "agent", "percent": "34"}],
        "fees": [{"kind": "percent", "bps": "290"}, {"kind": "fixed", "amount": "0.25"}]
    }]);
    let mut run = Run::new(ledger(vec![partner("tri", contract)], json!([]), "PT24H"));
    run.ok(sale("s", "tri", "10.00", "2026-03-10T08:00:00Z"));
    // Sale: 3.30/3.30/3.40; fee 0.29 + 0.25; payable 3.30 - 0.54 = 2.76.
    assert_eq!(run.payable("tri"), Minor(276));
    // (amount, cumulative, amount_s moved, payable after)
    // 3.33: round(10.00*3.33/10.00) = 3.33; split(3.33) = 109.89/109.89/113.22 -> 109/109/113 + 2 leftover:
    //   remainders .89 .89 .22 -> 110/110/113; fee back round(0.29*0.333) = round(0.09657) = 0.10.
    //   payable 2.76 - 1.10 + 0.10 = 1.76
    // 3.33 more (6.66): split(6.66) = 219.78/219.78/226.44 -> 219/219/226 + 2 -> 220/220/226; minus previous
    //   110/110/113 -> 1.10/1.10/1.13; fee back round(0.29*0.666) = 0.19 - 0.10 = 0.09; payable 1.76 - 1.10 + 0.09 = 0.75
    // 3.34 (10.00): split(10.00) 330/330/340 minus 220/220/226 -> 1.10/1.10/1.14; fee back 0.29 - 0.19 = 0.10;
    //   payable 0.75 - 1.10 + 0.10 = -0.25 (only the fixed fee remains)
    let rows: &[(&str, &str, i128, i128)] =
        &[("r1", "3.33", 333, 176), ("r2", "3.33", 333, 75), ("r3", "3.34", 334, -25)];
    for &(id, amount, moved, payable) in rows {
        let result = run.apply(json!({"id": id, "partner": "tri", "kind": "refund", "amount": amount,
                                       "currency": "EUR", "original": "s",
                                       "occurred_at": "2026-03-10T09:00:00Z", "received_at": "2026-03-10T09:00:00Z"}));
        match result.outcome {
            Outcome::Applied(applied) => {
                assert_eq!(applied.amount_s, Minor(moved), "{id}");
                assert_eq!(applied.payable_after, Minor(payable), "{id}");
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    let over = run.apply(
        json!({"id": "r4", "partner": "tri", "kind": "refund", "amount": "0.01", "currency": "EUR",
                                "original": "s", "occurred_at": "2026-03-10T09:00:00Z",
                                "received_at": "2026-03-10T09:00:00Z"}),
    );
    assert_eq!(over.outcome.exception(), Some(R::RefundExceedsOriginal));
    run.close("2026-03-11T01:00:00Z");
    let s = run.statement_at("tri", "2026-03-10T12:00:00Z");
    assert!(s.shares.iter().all(|(_, m)| m.0 == 0), "{:?}", s.shares);
    assert_eq!((s.fees.percent, s.fees.fixed, s.closing), (Minor(0), Minor(25), Minor(-25)));
}

#[test]
fn chargeback_fee_comes_from_the_version_in_force_when_the_chargeback_occurred() {
    let version = |from: &str, fee: &str| json!({"effective_from": from, "shares": [{"party": "partner", "percent": "100"}], "chargeback_fee": fee});
    let contracts = json!([version("2026-01-01T00:00:00Z", "5.00"), version("2026-03-10T12:00:00Z", "7.00")]);
    // (chargeback occurred_at, received_at, expected fee in cents)
    let rows: &[(&str, &str, i128)] = &[
        ("2026-03-10T11:59:59Z", "2026-03-10T13:00:00Z", 500), // received later, occurred before the change
        ("2026-03-10T12:00:00Z", "2026-03-10T12:00:00Z", 700), // exactly at effective_from
        ("2026-03-11T09:00:00Z", "2026-03-11T09:00:00Z", 700),
    ];
    for (i, &(occurred, received, fee)) in rows.iter().enumerate() {
        let mut run = Run::new(ledger(vec![partner("cb", contracts.clone())], json!([]), "PT24H"));
        run.ok(sale("s", "cb", "50.00", "2026-03-10T08:00:00Z"));
        let before = run.payable("cb");
        run.ok(json!({"id": format!("c{i}"), "partner": "cb", "kind": "chargeback", "amount": "10.00",
                      "currency": "EUR", "original": "s", "occurred_at": occurred, "received_at": received}));
        assert_eq!(before.0 - run.payable("cb").0, 1_000 + fee, "{occurred}");
    }
}

#[test]
fn late_transactions_go_to_the_oldest_open_period() {
    // Daily UTC periods, grace PT1H, since 2026-03-01T00:00Z.
    // (occurred_at, received_at, expected period start, late)
    let rows: &[(&str, &str, &str, bool)] = &[
        ("2026-03-02T10:00:00Z", "2026-03-02T10:00:00Z", "2026-03-02T00:00:00Z", false),
        // Inside the previous period's grace: still on time.
        ("2026-03-01T23:30:00Z", "2026-03-02T00:59:59Z", "2026-03-01T00:00:00Z", false),
        // At end + grace the period is closed: late, to the oldest period open then.
        ("2026-03-01T23:30:00Z", "2026-03-02T01:00:00Z", "2026-03-02T00:00:00Z", true),
        // Before `since`'s period: late, to the first period (still open).
        ("2026-02-20T10:00:00Z", "2026-03-01T10:00:00Z", "2026-03-01T00:00:00Z", true),
        // Received inside the grace of the day before: the oldest open period is that one.
        ("2026-02-27T10:00:00Z", "2026-03-03T00:30:00Z", "2026-03-02T00:00:00Z", true),
    ];
    for (i, &(occurred, received, start, late)) in rows.iter().enumerate() {
        let mut run = Run::new(ledger(vec![partner("lt", simple_contract())], json!([]), "PT24H"));
        let result = run
            .apply(json!({"id": format!("l{i}"), "partner": "lt", "kind": "sale", "amount": "1.00",
                                       "currency": "EUR", "occurred_at": occurred, "received_at": received}));
        match result.outcome {
            Outcome::Applied(applied) => {
                assert_eq!(
                    (applied.period.start, applied.late),
                    (at(start), late),
                    "{occurred} / {received}"
                );
            }
            other => panic!("{occurred}: {other:?}"),
        }
    }
}

#[test]
fn period_fees_tiered_marginal_and_minimum_top_up() {
    let contract = |min: &str| {
        json!([{
            "effective_from": "2026-01-01T00:00:00Z",
            "shares": [{"party": "partner", "percent": "100"}],
            "fees": [{"kind": "percent", "bps": "1000"}],
            "period_fees": [{"kind": "tiered", "tiers": [{"up_to": "100", "bps": "100"}, {"up_to": "200.50", "bps": "50"},
                                                          {"up_to": null, "bps": "10"}]},
                            {"kind": "minimum", "amount": min}]
        }])
    };
    // Day 1: sale 300.00 -> percent 30.00; tiered 100*1% + 100.50*0.5% + 99.50*0.1% = 1 + 0.5025 + 0.0995 = 1.602
    //   -> 1.60; F = 31.60.
    // Day 2: refund 300.00 of it -> percent -30.00, volume -300 -> basis 0 -> tiered 0; F = -30.00 counts as 0.
    // (minimum, day-1 minimum fee, day-2 minimum fee)
    let rows: &[(&str, i128, i128)] = &[("0", 0, 0), ("20.00", 0, 2_000), ("40.00", 840, 4_000)];
    for &(minimum, day1, day2) in rows {
        let mut run = Run::new(ledger(vec![partner("pf", contract(minimum))], json!([]), "PT24H"));
        run.ok(sale("s", "pf", "300.00", "2026-03-01T10:00:00Z"));
        run.ok(json!({"id": "r", "partner": "pf", "kind": "refund", "amount": "300.00", "currency": "EUR",
                      "original": "s", "occurred_at": "2026-03-02T10:00:00Z", "received_at": "2026-03-02T10:00:00Z"}));
        run.close("2026-03-03T01:00:00Z");
        let fees: Vec<(i128, i128, i128)> =
            run.statements.iter().map(|s| (s.fees.percent.0, s.fees.tiered.0, s.fees.minimum.0)).collect();
        assert_eq!(fees, vec![(3_000, 160, day1), (-3_000, 0, day2)], "minimum {minimum}");
    }
}

#[test]
fn contract_version_in_force() {
    // Shares say which version priced a sale: the partner's part of a 100.00 sale.
    let version = |from: &str, partner_percent: &str| {
        let platform = format!("{}", 100 - partner_percent.parse::<i32>().unwrap());
        json!({"effective_from": from, "shares": [{"party": "partner", "percent": partner_percent},
                                                  {"party": "platform", "percent": platform}]})
    };
    let contracts = json!([
        version("2026-03-05T00:00:00Z", "60"),
        version("2026-03-02T00:00:00Z", "70"),
        version("2026-03-02T00:00:00Z", "75"), // same instant, later in the list: wins
        version("2026-03-08T00:00:00Z", "90"),
    ]);
    let rows: &[(&str, i128)] = &[
        ("2026-03-01T10:00:00Z", 7_500), // before the first: the earliest (the later of the two)
        ("2026-03-02T00:00:00Z", 7_500),
        ("2026-03-04T23:59:59Z", 7_500),
        ("2026-03-05T00:00:00Z", 6_000),
        ("2026-03-08T00:00:00Z", 9_000),
    ];
    for (i, &(occurred, partner_cents)) in rows.iter().enumerate() {
        let mut run = Run::new(ledger(vec![partner("cv", contracts.clone())], json!([]), "PT24H"));
        run.ok(json!({"id": format!("v{i}"), "partner": "cv", "kind": "sale", "amount": "100.00", "currency": "EUR",
                      "occurred_at": occurred, "received_at": occurred}));
        assert_eq!(run.payable("cv"), Minor(partner_cents), "{occurred}");
    }
}

#[test]
fn fx_direct_inverse_stale_and_unavailable() {
    let rates = json!([
        {"base": "USD", "quote": "EUR", "rate": "0.92", "at": "2026-03-10T00:00:00Z"},
        {"base": "USD", "quote": "EUR", "rate": "0.95", "at": "2026-03-10T00:00:00Z"},
        {"base": "EUR", "quote": "USD", "rate": "2", "at": "2026-03-10T06:00:00Z"},
        {"base": "EUR", "quote": "GBP", "rate": "0.8", "at": "2026-03-10T00:00:00Z"},
        {"base": "JPY", "quote": "USD", "rate": "0.0065", "at": "2026-03-10T00:00:00Z"},
        {"base": "CHF", "quote": "EUR", "rate": "1.05", "at": "2026-03-11T00:00:00Z"}
    ]);
    // (amount, currency, occurred_at, A_S in cents or the exception); partner 100%, no fees.
    let rows: &[(&str, &str, &str, Result<i128, R>)] = &[
        // Direct rate wins over the newer inverse one; of two at one instant the later listed (0.95).
        ("100.00", "USD", "2026-03-10T08:00:00Z", Ok(9_500)),
        // Inverse: 10.00 GBP / 0.8 = 12.50 EUR.
        ("10.00", "GBP", "2026-03-10T08:00:00Z", Ok(1_250)),
        // 0.01 GBP / 0.8 = 0.0125 -> 0.01 (half even).
        ("0.01", "GBP", "2026-03-10T08:00:00Z", Ok(1)),
        // Exactly fx_max_age old: fine; one second more: stale.
        ("1.00", "USD", "2026-03-11T00:00:00Z", Ok(95)),
        ("1.00", "USD", "2026-03-11T00:00:01Z", Err(R::FxStale)),
        // No rate yet at occurred_at.
        ("1.00", "USD", "2026-03-09T23:59:59Z", Err(R::FxUnavailable)),
        // JPY -> USD -> EUR would be a cross rate: not used.
        ("1000", "JPY", "2026-03-10T08:00:00Z", Err(R::FxUnavailable)),
        // The direct rate is chosen first, then its age checked: a fresh inverse rate does not
        // rescue a stale direct one (USD->EUR is 27 hours old here, EUR->USD only 21 hours).
        ("1.00", "USD", "2026-03-11T03:00:00Z", Err(R::FxStale)),
        // A rate published after occurred_at does not count.
        ("1.00", "CHF", "2026-03-10T23:00:00Z", Err(R::FxUnavailable)),
    ];
    let contract = json!([{"effective_from": "2026-01-01T00:00:00Z", "shares": [{"party": "partner", "percent": "100"}]}]);
    for (i, &(amount, currency, occurred, expected)) in rows.iter().enumerate() {
        let mut run = Run::new(ledger(vec![partner("fx", contract.clone())], rates.clone(), "PT24H"));
        let result = run.apply(json!({"id": format!("x{i}"), "partner": "fx", "kind": "sale", "amount": amount,
                                       "currency": currency, "occurred_at": occurred, "received_at": occurred}));
        let got = match result.outcome {
            Outcome::Applied(applied) => Ok(applied.amount_s.0),
            Outcome::Exception(reason) => Err(reason),
        };
        assert_eq!(got, expected, "{amount} {currency} at {occurred}");
    }
}

#[test]
fn idempotency_compares_content_by_value() {
    let first = json!({"id": "d", "partner": "acme", "kind": "sale", "amount": "100.00", "currency": "EUR",
                       "occurred_at": "2026-03-10T09:00:00Z", "received_at": "2026-03-10T09:00:00Z",
                       "metadata": {"order": 7, "tags": ["a"]}});
    // (row, changes to the first submission, is it a repeat?)
    let rows: Vec<(&str, Value, bool)> = vec![
        ("identical", json!({}), true),
        ("other received_at", json!({"received_at": "2026-03-10T11:00:00Z"}), true),
        ("amount spelled 100.0", json!({"amount": "100.0"}), true),
        ("amount spelled 100", json!({"amount": "100"}), true),
        ("occurred_at with an offset", json!({"occurred_at": "2026-03-10T10:00:00+01:00"}), true),
        ("metadata keys reordered", json!({"metadata": {"tags": ["a"], "order": 7}}), true),
        // JSON numbers compare by value: 7, 7.0 and 7e0 are one number.
        ("metadata number spelled 7.0", json!({"metadata": {"order": 7.0, "tags": ["a"]}}), true),
        ("metadata number spelled 7e0", json!({"metadata": {"tags": ["a"], "order": 7e0}}), true),
        ("metadata number 7.5", json!({"metadata": {"order": 7.5, "tags": ["a"]}}), false),
        ("metadata number as a string", json!({"metadata": {"order": "7", "tags": ["a"]}}), false),
        ("absent original equals null", json!({"original": null, "reason": null}), true),
        ("other amount", json!({"amount": "100.01"}), false),
        ("other occurred_at", json!({"occurred_at": "2026-03-10T09:00:01Z"}), false),
        ("other metadata", json!({"metadata": {"order": 8, "tags": ["a"]}}), false),
        ("no metadata", json!({"metadata": null}), false),
        ("a reason added", json!({"reason": "x"}), false),
        ("other kind", json!({"kind": "payout"}), false),
        // A malformed amount is kept as its JSON text: a number is not the string of its digits.
        ("amount as a JSON number", json!({"amount": 100}), false),
    ];
    for (row, changes, repeat) in rows {
        let mut run = checks_fixture();
        let first_result = run.apply(first.clone());
        assert!(first_result.outcome.is_applied(), "{row}");
        let payable = run.payable("acme");
        let again = run.apply(with(first.clone(), changes));
        if repeat {
            assert!(again.duplicate, "{row}");
            assert_eq!(again.outcome, first_result.outcome, "{row}: the first result is returned");
        } else {
            assert_eq!(again.outcome.exception(), Some(R::DuplicateConflict), "{row}");
        }
        assert_eq!(run.payable("acme"), payable, "{row}: nothing changes");
        // The first content keeps the id: sending it again is still a repeat.
        assert!(run.apply(first.clone()).duplicate, "{row}");
    }
}

#[test]
fn a_repeated_exception_returns_the_exception_and_is_listed_once() {
    let scenario = json!({
        "partners": [partner("acme", simple_contract())],
        "transactions": [
            {"id": "e", "partner": "acme", "kind": "sale", "amount": "1.00", "currency": "XAU",
             "occurred_at": "2026-03-10T09:00:00Z", "received_at": "2026-03-10T09:00:00Z"},
            {"id": "e", "partner": "acme", "kind": "sale", "amount": "1.0", "currency": "XAU",
             "occurred_at": "2026-03-10T09:00:00Z", "received_at": "2026-03-10T09:10:00Z"},
            {"id": "e", "partner": "acme", "kind": "sale", "amount": "2.00", "currency": "EUR",
             "occurred_at": "2026-03-10T09:00:00Z", "received_at": "2026-03-10T09:20:00Z"}
        ],
        "close_until": "2026-03-10T12:00:00Z"
    });
    let scenario = settle_core::scenario::parse(&scenario.to_string()).unwrap();
    let outcome = settle_core::replay::run(&scenario).unwrap();
    let listed: Vec<(&str, R)> = outcome.exceptions.iter().map(|(id, r)| (id.as_str(), *r)).collect();
    assert_eq!(listed, vec![("e", R::UnknownCurrency), ("e", R::DuplicateConflict)]);
    assert_eq!(outcome.ledger.lookup("e"), Some(&Outcome::Exception(R::UnknownCurrency)));
    assert_eq!(outcome.balances[0].1, Minor(0));
}

#[test]
fn non_string_text_fields_name_nothing() {
    // Partner "5" and sale "7" exist; the same digits as JSON numbers name neither, and a
    // number is no reason for an adjustment.
    let mut run = Run::new(ledger(vec![partner("5", simple_contract())], json!([]), "PT24H"));
    run.ok(sale("7", "5", "10.00", "2026-03-10T08:00:00Z"));
    let base = json!({"partner": "5", "currency": "EUR", "amount": "1.00",
                      "occurred_at": "2026-03-10T09:00:00Z", "received_at": "2026-03-10T09:00:00Z"});
    let rows: Vec<(&str, Value, R)> = vec![
        ("partner as a number", json!({"id": "n1", "kind": "sale", "partner": 5}), R::UnknownPartner),
        ("currency as a number", json!({"id": "n2", "kind": "sale", "currency": 978}), R::UnknownCurrency),
        ("original as a number", json!({"id": "n3", "kind": "refund", "original": 7}), R::UnknownOriginal),
        ("reason as a number", json!({"id": "n4", "kind": "adjustment", "reason": 5}), R::InvalidAdjustment),
        (
            "reason as an array",
            json!({"id": "n5", "kind": "adjustment", "reason": ["late fee"]}),
            R::InvalidAdjustment,
        ),
        (
            "reason as an object",
            json!({"id": "n6", "kind": "adjustment", "reason": {"why": "x"}}),
            R::InvalidAdjustment,
        ),
    ];
    for (row, changes, reason) in rows {
        let payable = run.payable("5");
        let result = run.apply(with(base.clone(), changes));
        assert_eq!(result.outcome.exception(), Some(reason), "{row}");
        assert_eq!(run.payable("5"), payable, "{row}: nothing changes");
    }
    // A string that starts with the mark used for non-strings (NUL) still names what it names.
    let mut odd = Run::new(ledger(vec![partner("\u{0}p", simple_contract())], json!([]), "PT24H"));
    odd.ok(sale("\u{0}s", "\u{0}p", "10.00", "2026-03-10T08:00:00Z"));
    let refund = json!({"id": "\u{0}r", "partner": "\u{0}p", "kind": "refund", "amount": "10.00", "currency": "EUR",
                        "original": "\u{0}s", "occurred_at": "2026-03-10T09:00:00Z", "received_at": "2026-03-10T09:00:00Z"});
    odd.ok(refund);
    assert_eq!(odd.payable("\u{0}p"), Minor(-30), "only the fixed fee stays");
    // The string forms do name them.
    run.ok(with(base.clone(), json!({"id": "s1", "kind": "refund", "original": "7"})));
    run.ok(with(base.clone(), json!({"id": "s2", "kind": "adjustment", "reason": "5"})));
    // A number and the string of its digits are different content for idempotency.
    let first = with(base.clone(), json!({"id": "d1", "kind": "adjustment", "reason": 5}));
    assert_eq!(run.apply(first.clone()).outcome.exception(), Some(R::InvalidAdjustment));
    assert!(run.apply(first.clone()).duplicate, "the same number again is a repeat");
    let other = with(first, json!({"reason": "5"}));
    assert_eq!(run.apply(other).outcome.exception(), Some(R::DuplicateConflict));
}

#[test]
fn amounts_count_decimals_by_value_and_xad_is_a_currency() {
    let mut run = Run::new(ledger(vec![partner("acme", simple_contract())], json!([]), "PT24H"));
    // 40 trailing zeros: still 1.00 EUR, however long the spelling.
    let long_one = format!("1.{}", "0".repeat(40));
    run.ok(sale("z1", "acme", &long_one, "2026-03-10T08:00:00Z"));
    run.ok(sale("z2", "acme", &format!("{}2.50", "0".repeat(40)), "2026-03-10T08:00:00Z"));
    // 90/10 of 1.00 and 2.50, less 1% (0.01 and 0.025 -> 0.02, half even) and 0.30 each.
    assert_eq!(run.payable("acme"), Minor(90 + 225 - 1 - 2 - 60));
    let still_too_precise = format!("1.00{}1", "0".repeat(40));
    assert_eq!(
        run.apply(sale("z3", "acme", &still_too_precise, "2026-03-10T08:00:00Z")).outcome.exception(),
        Some(R::InvalidAmount)
    );
    // XAD (Arab Accounting Dinar, 2 decimals) is on the ISO 4217 list of 2026-01-01: without a
    // rate it is fx_unavailable, not unknown_currency; XAU has no minor unit.
    let xad = with(sale("x1", "acme", "1.00", "2026-03-10T08:00:00Z"), json!({"currency": "XAD"}));
    assert_eq!(run.apply(xad).outcome.exception(), Some(R::FxUnavailable));
    let xad_cents = with(sale("x2", "acme", "1.005", "2026-03-10T08:00:00Z"), json!({"currency": "XAD"}));
    assert_eq!(run.apply(xad_cents).outcome.exception(), Some(R::InvalidAmount));
    let xau = with(sale("x3", "acme", "1", "2026-03-10T08:00:00Z"), json!({"currency": "XAU"}));
    assert_eq!(run.apply(xau).outcome.exception(), Some(R::UnknownCurrency));
}

#[test]
fn a_grace_longer_than_representable_time_still_places_late_transactions() {
    // `received_at - grace` lies before any instant the calendar can hold: nothing has closed by
    // time, so a sale that precedes the first period goes to the first period, flagged late
    // (it used to become an `invalid_amount` exception).
    let mut p = partner("acme", simple_contract());
    p["cycle"]["grace"] = json!("P14000000W");
    let mut run = Run::new(ledger(vec![p], json!([]), "PT24H"));
    let result = run.apply(sale("early", "acme", "10.00", "2026-02-20T08:00:00Z"));
    match result.outcome {
        Outcome::Applied(applied) => {
            assert!(applied.late);
            assert_eq!(applied.period.start, at("2026-03-01T00:00:00Z"));
        }
        other => panic!("expected the sale to be applied, got {other:?}"),
    }
}

#[test]
fn huge_amounts_are_typed_outcomes_and_a_full_reversal_still_ends_at_zero() {
    // A 30-digit USD amount at 9999 JPY per USD is 9.999 * 10^33 yen, within MAX_FIGURE (10^34);
    // a second one would take the period's gross sales beyond it: invalid_amount, nothing changes.
    let big = "9".repeat(30);
    let a_s = 9999 * (10i128.pow(30) - 1); // minor units of JPY
    let contract = json!([{
        "effective_from": "2026-01-01T00:00:00Z",
        "shares": [{"party": "partner", "percent": "66.6667"}, {"party": "platform", "percent": "33.3333"}],
        "fees": [{"kind": "percent", "bps": "250"}]
    }]);
    let mut p = partner("big", contract);
    p["settlement_currency"] = json!("JPY");
    let rates = json!([{"base": "USD", "quote": "JPY", "rate": "9999", "at": "2026-03-01T00:00:00Z"}]);
    let mut run = Run::new(ledger(vec![p], rates, "P30D"));
    let usd = |id: &str, kind: &str, original: Option<&str>| {
        json!({"id": id, "partner": "big", "kind": kind, "amount": big, "currency": "USD", "original": original,
               "occurred_at": "2026-03-10T08:00:00Z", "received_at": "2026-03-10T08:00:00Z"})
    };
    run.ok(usd("s1", "sale", None));
    let after_sale = run.payable("big");
    // By hand (A_S = 9998999999999999999999999999990001): the partner's 66.6667% is
    // 6666003332999999999999999999993333.996667, the platform's 33.3333% ...6667.003333; the
    // leftover unit goes to the partner (larger fraction): ...93334. 2.5% is
    // 249974999999999999999999999999750.025 -> ...750. Payable: the difference.
    assert_eq!(a_s, 9_998_999_999_999_999_999_999_999_999_990_001);
    assert_eq!(after_sale, Minor(6_416_028_332_999_999_999_999_999_999_993_584));
    let second = run.apply(usd("s2", "sale", None));
    assert_eq!(second.outcome.exception(), Some(R::InvalidAmount));
    assert_eq!(run.payable("big"), after_sale, "an exception changes nothing");
    // The full reversal needs A_S * c / a with a 10^64 product: exact, back to zero.
    run.ok(usd("r1", "refund", Some("s1")));
    assert_eq!(run.payable("big"), Minor(0));
    // A 31-digit amount is not an amount at all.
    let too_long = with(usd("s3", "sale", None), json!({"amount": "9".repeat(31)}));
    assert_eq!(run.apply(too_long).outcome.exception(), Some(R::InvalidAmount));
}

#[test]
fn a_tiered_schedule_that_cannot_be_computed_exactly_is_refused() {
    let contract = json!([{
        "effective_from": "2026-01-01T00:00:00Z",
        "shares": [{"party": "partner", "percent": "100"}],
        "period_fees": [{"kind": "tiered", "tiers": [
            {"up_to": "0.000000000000000000000000000001", "bps": "1"},
            {"up_to": null, "bps": "99999999999999999999999999999"}]}]
    }]);
    let scenario = json!({"partners": [partner("t", contract)], "transactions": [],
                          "close_until": "2026-03-02T00:00:00Z"});
    let error = settle_core::scenario::parse(&scenario.to_string()).unwrap_err().to_string();
    assert!(error.starts_with("partners[0].contracts[0].period_fees[0].tiers"), "{error}");
    // An ordinary precise schedule is fine.
    let contract = json!([{
        "effective_from": "2026-01-01T00:00:00Z",
        "shares": [{"party": "partner", "percent": "100"}],
        "period_fees": [{"kind": "tiered", "tiers": [
            {"up_to": "1000.005", "bps": "12.5"}, {"up_to": null, "bps": "7.25"}]}]
    }]);
    let scenario = json!({"partners": [partner("t", contract)], "transactions": [],
                          "close_until": "2026-03-02T00:00:00Z"});
    assert!(settle_core::scenario::parse(&scenario.to_string()).is_ok());
}
