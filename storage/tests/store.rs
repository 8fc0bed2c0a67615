//! Store tests against a real RocksDB in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use settle_core::scenario::{parse_contract_version, parse_partner, parse_rate, parse_transaction};
use settle_core::{Currency, ExceptionReason, Instant, Minor, Outcome, Period};
use settle_storage::keys;
use settle_storage::{LogEntry, StorageError, Store, TxLog, FORMAT_VERSION};

fn t(s: &str) -> Instant {
    Instant::parse_rfc3339(s).unwrap()
}

fn partner_json(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "settlement_currency": "EUR", "since": "2026-01-01T00:00:00Z",
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
    })
}

fn tx(id: &str, partner: &str) -> settle_core::TxInput {
    parse_transaction(
        &serde_json::json!({"id": id, "partner": partner, "kind": "sale", "amount": "10.00", "currency": "EUR",
                            "occurred_at": "2026-01-02T10:00:00Z", "metadata": {"b": 1, "a": [1, 2]}}),
        "tx",
        Some(t("2026-01-02T10:00:01Z")),
    )
    .unwrap()
}

#[test]
fn everything_written_reads_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let partner = parse_partner(&partner_json("acme"), "p").unwrap();
    let version = parse_contract_version(
        &serde_json::json!({"effective_from": "2026-02-01T00:00:00Z",
                            "shares": [{"party": "partner", "percent": "100"}]}),
        "v",
        partner.currency,
    )
    .unwrap();
    let rate = parse_rate(
        &serde_json::json!({"base": "USD", "quote": "EUR", "rate": "0.92", "at": "2026-01-02T00:00:00Z"}),
        "r",
    )
    .unwrap();
    let ok = tx("t1", "acme");
    let bad = tx("t2", "nobody");
    let applied = Outcome::Applied(settle_core::tx::Applied {
        period: Period { start: t("2025-12-28T23:00:00Z"), end: t("2026-01-04T23:00:00Z") },
        late: false,
        amount_s: Minor(1000),
        payable_after: Minor(700),
        rate: None,
    });
    let unknown = Outcome::Exception(ExceptionReason::UnknownPartner);
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_seq().unwrap(), None);
        let mut batch = store.batch().unwrap();
        batch.append_partner(0, &partner);
        batch.append_contract_version(1, "acme", 1, &version);
        batch.append_rates(2, std::slice::from_ref(&rate));
        let mut txs = TxLog::new();
        txs.push(3, &ok, &applied);
        txs.push(4, &bad, &unknown);
        batch.append_txs(&txs);
        batch.append_tick(5, t("2026-01-05T01:00:00Z"));
        store.commit(batch).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_seq().unwrap(), Some(5));
    let entries: Vec<(u64, LogEntry)> = store.log_from(0).unwrap().map(Result::unwrap).collect();
    let seqs: Vec<u64> = entries.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(entries[0].1, LogEntry::Partner(partner.clone()));
    assert_eq!(entries[1].1, LogEntry::ContractVersion { partner: "acme".into(), version: version.clone() });
    assert_eq!(entries[2].1, LogEntry::Rates(vec![rate.clone()]));
    assert_eq!(entries[3].1, LogEntry::Tx { tx: ok.clone(), outcome: applied.clone() });
    assert_eq!(entries[5].1, LogEntry::Tick(t("2026-01-05T01:00:00Z")));
    assert_eq!(store.log_from(4).unwrap().count(), 2);

    let exceptions = store.exceptions(None, 10).unwrap();
    assert_eq!(exceptions.len(), 1);
    assert_eq!((exceptions[0].seq, exceptions[0].id.as_str()), (4, "t2"));
    assert_eq!(exceptions[0].reason, ExceptionReason::UnknownPartner);
    assert!(store.exceptions(Some(4), 10).unwrap().is_empty());
    let partners = store.partners().unwrap();
    assert_eq!(partners.len(), 1);
    assert_eq!(partners[0].contract.versions().len(), 2);
    assert_eq!(store.rates().unwrap(), vec![rate]);
}

#[test]
fn statements_are_per_partner_in_period_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let eur = Currency::from_code("EUR").unwrap();
    let statement = |partner: &str, start: i128| settle_core::Statement {
        partner: partner.into(),
        period: Period { start: Instant(start), end: Instant(start + 10) },
        currency: eur,
        opening: Minor(0),
        gross_sales: Minor(0),
        refunds: Minor(0),
        chargebacks: Minor(0),
        shares: vec![("partner".into(), Minor(0))],
        fees: Default::default(),
        adjustments: Minor(0),
        payouts: Minor(0),
        closing: Minor(0),
        transaction_count: 0,
        late_count: 0,
    };
    let mut batch = store.batch().unwrap();
    // Written out of order, and with a partner whose id extends another's.
    for (p, s) in [("ab", 30), ("abc", 10), ("ab", -10), ("ab", 10), ("a", 20)] {
        batch.put_statement(&statement(p, s));
    }
    store.commit(batch).unwrap();
    let starts: Vec<i128> = store.statements("ab").unwrap().iter().map(|s| s.period.start.0).collect();
    assert_eq!(starts, vec![-10, 10, 30]);
    assert_eq!(store.statements("abc").unwrap().len(), 1);
    assert!(store.statements("b").unwrap().is_empty());
}

#[test]
fn a_batch_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let outcome = Outcome::Exception(ExceptionReason::UnknownPartner);
    // A failed commit leaves nothing behind.
    store.inject_commit_failures(true);
    let mut batch = store.batch().unwrap();
    let mut txs = TxLog::new();
    for i in 0..1000u64 {
        txs.push(i, &tx(&format!("id{i}"), "x"), &outcome);
    }
    batch.append_txs(&txs);
    assert!(matches!(store.commit(batch), Err(StorageError::CommitRefused(_))));
    assert_eq!(store.last_seq().unwrap(), None);
    assert_eq!(store.log_from(0).unwrap().count(), 0);
    // A batch dropped without commit leaves nothing either; one committed is all there.
    store.inject_commit_failures(false);
    let mut dropped = store.batch().unwrap();
    dropped.append_txs(&txs);
    drop(dropped);
    assert_eq!(store.last_seq().unwrap(), None);
    let mut batch = store.batch().unwrap();
    batch.append_txs(&txs);
    store.commit(batch).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.log_from(0).unwrap().count(), 1000);
    assert_eq!(store.exceptions(None, usize::MAX).unwrap().len(), 1000);
}

#[test]
fn commits_become_records_that_replay_in_sequence_order() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = Outcome::Exception(ExceptionReason::UnknownPartner);
    {
        let store = Store::open(dir.path()).unwrap();
        // Three commits; inside each, partners' logs interleave their sequences as the
        // committer gathers them (actor by actor, not in sequence order).
        for commit in 0..3u64 {
            let base = commit * 100;
            let mut batch = store.batch().unwrap();
            for partner in 0..4u64 {
                let mut txs = TxLog::new();
                for i in (partner..40).step_by(4) {
                    txs.push(base + i, &tx(&format!("c{commit}-{i}"), "x"), &outcome);
                }
                batch.append_txs(&txs);
            }
            batch.append_tick(base + 40, t("2026-01-05T01:00:00Z"));
            assert_eq!(batch.len(), 1 + 40, "one log record plus the exception queue entries");
            store.commit(batch).unwrap();
        }
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_seq().unwrap(), Some(240));
    let all: Vec<u64> = store.log_from(0).unwrap().map(|e| e.unwrap().0).collect();
    let expected: Vec<u64> = (0..3).flat_map(|c| (0..=40).map(move |i| c * 100 + i)).collect();
    assert_eq!(all, expected);
    // From inside a record, and from a gap between records.
    let from_inside: Vec<u64> = store.log_from(117).unwrap().map(|e| e.unwrap().0).collect();
    assert_eq!(from_inside, expected.iter().copied().filter(|s| *s >= 117).collect::<Vec<_>>());
    assert_eq!(store.log_from(150).unwrap().next().unwrap().unwrap().0, 200);
    assert_eq!(store.log_from(241).unwrap().count(), 0);
    let LogEntry::Tx { tx: first, .. } = store.log_from(5).unwrap().next().unwrap().unwrap().1 else {
        panic!("entry 5 is a transaction")
    };
    assert_eq!(first.id.as_str(), "c0-5");
}

#[test]
fn missing_parent_directories_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b").join("db");
    drop(Store::open(&nested).unwrap());
    assert!(Store::open(&nested).unwrap().last_seq().unwrap().is_none());
}

#[test]
fn unknown_format_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    {
        // Rewrite the version with a raw RocksDB handle, as a future build would.
        let cfs: Vec<&str> = keys::ALL_CFS.to_vec();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        let meta = db.cf_handle(keys::CF_META).unwrap();
        db.put_cf(meta, keys::META_FORMAT_VERSION, (FORMAT_VERSION + 1).to_be_bytes()).unwrap();
    }
    match Store::open(dir.path()) {
        Err(StorageError::UnsupportedFormat { found }) => assert_eq!(found, FORMAT_VERSION + 1),
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}
