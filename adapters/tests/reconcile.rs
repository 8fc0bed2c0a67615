//! Reconciliation on a fabricated report that has one case of every category.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use settle_adapters::reconcile::{reconcile, to_csv, Category, Item, Scope, Tolerances};
use std::str::FromStr;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn tol() -> Tolerances {
    Tolerances {
        amount: Decimal::from_str("0.01").unwrap(),
        time: Duration::minutes(5),
        aggregate_window: Duration::hours(24),
    }
}

fn scope() -> Scope {
    Scope { partner: "p".into(), start: at("2026-01-02T00:00:00Z"), end: at("2026-01-03T00:00:00Z") }
}

fn category_of(report: &settle_adapters::reconcile::Report, their_id: &str) -> Category {
    report.lines.iter().find(|l| l.theirs.as_ref().is_some_and(|t| t.id == their_id)).unwrap().category
}

#[test]
fn every_category() {
    let ours = vec![
        Item::new("a", "sale", "10.00", "EUR", "2026-01-02T10:00:00Z"),
        Item::new("b", "sale", "20.00", "EUR", "2026-01-02T11:00:00Z"),
        Item::new("c", "sale", "30.00", "EUR", "2026-01-02T12:00:00Z"),
        // Matched by value (their id differs), 2 minutes apart, 0.01 off.
        Item::new("d", "refund", "5.00", "EUR", "2026-01-02T13:00:00Z"),
        // Three sales that their daily total stands for.
        Item::new("e1", "sale", "1.00", "EUR", "2026-01-02T14:00:00Z"),
        Item::new("e2", "sale", "2.50", "EUR", "2026-01-02T15:00:00Z"),
        Item::new("e3", "sale", "3.00", "EUR", "2026-01-02T16:00:00Z"),
        // Only ours.
        Item::new("f", "payout", "7.00", "EUR", "2026-01-02T17:00:00Z"),
        // Only ours but outside the period: not reported.
        Item::new("g", "sale", "8.00", "EUR", "2026-01-03T00:01:00Z"),
        // Ours was an exception: their line counts as missing on our side.
        {
            let mut x = Item::new("h", "sale", "9.00", "EUR", "2026-01-02T18:00:00Z");
            x.exception = Some("fx_stale".into());
            x
        },
    ];
    let theirs = vec![
        Item::new("a", "sale", "10.00", "EUR", "2026-01-02T10:00:00Z"),
        Item::new("b", "sale", "21.00", "EUR", "2026-01-02T11:00:00Z"),
        Item::new("c", "sale", "30.00", "USD", "2026-01-02T12:00:00Z"),
        Item::new("their-d", "refund", "5.01", "EUR", "2026-01-02T13:02:00Z"),
        Item::new("daily", "sale", "6.50", "EUR", "2026-01-02T23:59:00Z"),
        Item::new("z", "sale", "99.00", "EUR", "2026-01-02T19:00:00Z"),
        Item::new("h", "sale", "9.00", "EUR", "2026-01-02T18:00:00Z"),
        {
            let mut x = Item::new("h-bad", "sale", "12,x", "EUR", "2026-01-02T18:00:00Z");
            x.error = Some("amount \"12,x\" is not a number".into());
            x.row = Some(9);
            x
        },
    ];
    let report = reconcile(&scope(), &tol(), theirs, ours);
    assert_eq!(category_of(&report, "a"), Category::Matched);
    assert_eq!(category_of(&report, "b"), Category::AmountMismatch);
    assert_eq!(category_of(&report, "c"), Category::CurrencyMismatch);
    assert_eq!(category_of(&report, "their-d"), Category::Matched);
    assert_eq!(category_of(&report, "daily"), Category::OneToMany);
    assert_eq!(category_of(&report, "z"), Category::MissingOurs);
    assert_eq!(category_of(&report, "h"), Category::MissingOurs);
    assert_eq!(category_of(&report, "h-bad"), Category::Unreadable);
    let daily = report.lines.iter().find(|l| l.category == Category::OneToMany).unwrap();
    assert_eq!(daily.ours.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["e1", "e2", "e3"]);
    assert_eq!(daily.difference.as_deref(), Some("0"));
    let b = report.lines.iter().find(|l| l.category == Category::AmountMismatch).unwrap();
    assert_eq!(b.difference.as_deref(), Some("1"));
    let missing_theirs: Vec<_> = report
        .lines
        .iter()
        .filter(|l| l.category == Category::MissingTheirs)
        .map(|l| l.ours[0].id.as_str())
        .collect();
    assert_eq!(missing_theirs, ["f"]);

    let totals = &report.totals;
    assert_eq!(totals[&Category::Matched].count, 2);
    assert_eq!(totals[&Category::Matched].theirs["EUR"], "4.99");
    assert_eq!(totals[&Category::OneToMany].ours["EUR"], "6.5");
    assert_eq!(totals[&Category::MissingTheirs].ours["EUR"], "-7");
    assert_eq!(totals[&Category::MissingOurs].count, 2);
    assert_eq!(report.discrepancies().count(), 6);

    // Keys are stable across runs and distinct across lines.
    let again =
        reconcile(&scope(), &tol(), report.lines.iter().filter_map(|l| l.theirs.clone()).collect(), vec![]);
    assert!(again.lines.iter().all(|l| l.key.starts_with("d-")));
    let mut keys: Vec<_> = report.lines.iter().map(|l| l.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), report.lines.len());

    let csv = String::from_utf8(to_csv(&report).unwrap()).unwrap();
    assert!(csv.starts_with("key,category,their_row"));
    assert!(csv.contains("one_to_many"));
    assert!(csv.contains("e1;e2;e3"));
    assert!(csv.contains("ours is an exception: fx_stale"));
    assert_eq!(csv.lines().count(), report.lines.len() + 1);
}

#[test]
fn outside_tolerance_is_not_a_match() {
    let ours = vec![Item::new("x", "sale", "10.00", "EUR", "2026-01-02T10:00:00Z")];
    let theirs = vec![Item::new("y", "sale", "10.00", "EUR", "2026-01-02T10:06:00Z")];
    let report = reconcile(&scope(), &tol(), theirs, ours);
    let cats: Vec<_> = report.lines.iter().map(|l| l.category).collect();
    assert_eq!(cats, [Category::MissingOurs, Category::MissingTheirs]);
}

mod conservation {
    use super::*;
    use proptest::prelude::*;

    fn item(prefix: &str, i: usize, (cents, minute, kind, usd): (i64, u32, usize, bool)) -> Item {
        let kind = ["sale", "refund", "payout", "adjustment"][kind];
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let at = format!("2026-01-02T{:02}:{:02}:00Z", minute / 60, minute % 60);
        Item::new(&format!("{prefix}{i}"), kind, &amount, if usd { "USD" } else { "EUR" }, &at)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Every line of theirs and every item of ours inside the period appears in exactly one
        /// result line, whatever the data; nothing is lost or counted twice.
        #[test]
        fn every_item_accounted_once(
            ours in proptest::collection::vec((1i64..2000, 0u32..1440, 0usize..4, any::<bool>()), 0..25),
            theirs in proptest::collection::vec((1i64..2000, 0u32..1440, 0usize..4, any::<bool>()), 0..25),
            shared in 0usize..25,
        ) {
            let ours: Vec<Item> = ours.into_iter().enumerate().map(|(i, x)| item("o", i, x)).collect();
            // Some of theirs carry our ids, to exercise the id pass.
            let theirs: Vec<Item> = theirs
                .into_iter()
                .enumerate()
                .map(|(i, x)| item(if i < shared { "o" } else { "t" }, i, x))
                .collect();
            let report = reconcile(&scope(), &tol(), theirs.clone(), ours.clone());
            let mut their_ids: Vec<&str> = report.lines.iter().filter_map(|l| l.theirs.as_ref()).map(|t| t.id.as_str()).collect();
            let mut our_ids: Vec<&str> = report.lines.iter().flat_map(|l| l.ours.iter()).map(|o| o.id.as_str()).collect();
            their_ids.sort();
            our_ids.sort();
            let mut want_theirs: Vec<&str> = theirs.iter().map(|t| t.id.as_str()).collect();
            let mut want_ours: Vec<&str> = ours.iter().map(|o| o.id.as_str()).collect();
            want_theirs.sort();
            want_ours.sort();
            prop_assert_eq!(their_ids, want_theirs);
            prop_assert_eq!(our_ids, want_ours);
            let counted: u64 = report.totals.values().map(|t| t.count).sum();
            prop_assert_eq!(counted, report.lines.len() as u64);
        }
    }
}
