//! After the run: is every acknowledged transaction on the node exactly once, and does every
//! partner's payable equal what settle-core computes from the acked history?
//!
//! 1. Repeat: every acked transaction is submitted again, unchanged. The node must answer each
//!    with `duplicate = true` and the first result. Not flagged: `lost` (the node had forgotten
//!    it, and has now applied it again). Flagged but with another outcome: `duplicated`.
//! 2. Replay: a fresh `settle_core::Ledger` with the same partners and rates applies the acked
//!    history in acknowledgement order (received_at = occurred_at). The traffic model makes the
//!    final payable independent of the node's actual interleaving (see `traffic`), so each
//!    partner's payable on the node must equal the ledger's, to the minor unit. Each
//!    transaction's outcome kind (applied, or the exception reason) must agree too.

#![allow(clippy::float_arithmetic)] // timing of the report only

use crate::traffic::{History, PartnerDef};
use crate::SETUP_CONCURRENCY;
use anyhow::{anyhow, Context};
use serde_json::{Map, Value};
use settle_client::Client;
use settle_core::scenario::{parse_partner, parse_rate, parse_transaction};
use settle_core::{Instant, Ledger, Outcome, Span, TxInput};
use settle_wire as wire;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::task::JoinSet;

#[derive(Debug, Default)]
pub struct Report {
    pub verified: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub exceptions: u64,
    pub outcome_mismatches: u64,
    pub balances_checked: u64,
    pub balance_mismatches: u64,
    /// Open-period statements (the node's `preview_json`) compared with settle-core's preview.
    pub statements_checked: u64,
    pub statement_mismatches: u64,
    /// Not comparable: a period closed during the run (which transactions are late then depends
    /// on timing the client cannot observe), or the node gave no preview.
    pub statements_skipped: u64,
    pub seconds: f64,
    pub messages: Vec<String>,
}

/// Turns a wire transaction into the core's input, the way the node does (JSON through
/// `parse_transaction`), so both sides read it identically.
pub fn to_input(tx: &wire::Transaction, received_at: Option<Instant>) -> anyhow::Result<TxInput> {
    let kind = match tx.tx_kind() {
        wire::TxKind::Sale => "sale",
        wire::TxKind::Refund => "refund",
        wire::TxKind::Chargeback => "chargeback",
        wire::TxKind::Payout => "payout",
        wire::TxKind::Adjustment => "adjustment",
        wire::TxKind::Unspecified => return Err(anyhow!("transaction {} has no kind", tx.id)),
    };
    let mut map = Map::new();
    map.insert("id".into(), Value::String(tx.id.clone()));
    map.insert("kind".into(), Value::String(kind.into()));
    map.insert("occurred_at".into(), Value::String(tx.occurred_at.clone()));
    for (k, v) in [
        ("partner", &tx.partner),
        ("amount", &tx.amount),
        ("currency", &tx.currency),
        ("original", &tx.original),
        ("reason", &tx.reason),
    ] {
        if let Some(v) = v {
            map.insert(k.into(), Value::String(v.clone()));
        }
    }
    if let Some(m) = &tx.metadata_json {
        map.insert("metadata".into(), serde_json::from_str(m)?);
    }
    let occurred = Instant::parse_rfc3339(&tx.occurred_at).ok_or_else(|| anyhow!("bad occurred_at"))?;
    parse_transaction(&Value::Object(map), "tx", Some(received_at.unwrap_or(occurred)))
        .map_err(|e| anyhow!("{e}"))
}

fn outcome_label(r: &wire::TxResult) -> String {
    match &r.outcome {
        Some(wire::tx_result::Outcome::Applied(_)) => "applied".into(),
        Some(wire::tx_result::Outcome::Exception(e)) => e.reason.clone(),
        None => "none".into(),
    }
}

/// How the node answered the repeat of an acknowledged transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepeatVerdict {
    /// Flagged duplicate, with exactly the first result.
    Verified,
    /// Not flagged: the node had forgotten the acknowledged transaction (and applied it now).
    Lost,
    /// Flagged, but with another outcome: the transaction took effect twice or changed.
    Duplicated,
}

/// Judges one repeat answer against the first (acknowledged) result.
pub fn judge_repeat(first: &wire::TxResult, again: &wire::TxResult) -> RepeatVerdict {
    if !again.duplicate {
        RepeatVerdict::Lost
    } else if again.outcome != first.outcome {
        RepeatVerdict::Duplicated
    } else {
        RepeatVerdict::Verified
    }
}

/// The acked transactions in history order, in chunks of `batch` (the repeat's requests).
pub fn tx_chunks(history: &History, batch: usize) -> Vec<Vec<wire::Transaction>> {
    let all: Vec<&(wire::Transaction, wire::TxResult)> = history.iter().collect();
    all.chunks(batch.max(1)).map(|c| c.iter().map(|(t, _)| t.clone()).collect()).collect()
}

/// Submits every acknowledged transaction again, unchanged, and returns the answers in history
/// order.
pub async fn repeat(
    clients: &[Arc<Client>],
    history: &History,
    batch: usize,
) -> anyhow::Result<Vec<wire::TxResult>> {
    anyhow::ensure!(!clients.is_empty(), "no client to verify with");
    let sem = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, txs) in tx_chunks(history, batch).into_iter().enumerate() {
        let client = clients[i % clients.len()].clone();
        let permit = sem.clone().acquire_owned().await?;
        set.spawn(async move {
            let results = client.submit(txs).await;
            drop(permit);
            results.map(|r| (i, r))
        });
    }
    let mut answers: Vec<Option<Vec<wire::TxResult>>> = vec![None; history.len().div_ceil(batch.max(1))];
    while let Some(done) = set.join_next().await {
        let (i, results) = done?.context("repeat submission failed")?;
        if let Some(slot) = answers.get_mut(i) {
            *slot = Some(results);
        }
    }
    Ok(answers.into_iter().flatten().flatten().collect())
}

/// What the node reports for one partner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeBalance {
    /// Decimal text, or a note when the node refused to answer.
    pub payable: String,
    /// The open period's statement so far (replay output format), when the node gave one.
    pub preview_json: Option<String>,
}

/// Every partner's balance as the node reports it, by partner id.
pub async fn balances(
    clients: &[Arc<Client>],
    partners: &[PartnerDef],
) -> anyhow::Result<BTreeMap<String, NodeBalance>> {
    anyhow::ensure!(!clients.is_empty(), "no client to verify with");
    let sem = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, p) in partners.iter().enumerate() {
        let client = clients[i % clients.len()].clone();
        let id = p.id.clone();
        let permit = sem.clone().acquire_owned().await?;
        set.spawn(async move {
            let b = client.balance(&id).await;
            drop(permit);
            match b {
                Ok(b) => Ok((id, NodeBalance { payable: b.payable, preview_json: Some(b.preview_json) })),
                // The node refused (e.g. it no longer knows the partner): a mismatch to report,
                // not a reason to stop verifying.
                Err(e @ settle_client::ClientError::Server { retryable: false, .. }) => {
                    Ok((id, NodeBalance { payable: format!("(refused: {e})"), preview_json: None }))
                }
                Err(e) => Err(e),
            }
        });
    }
    let mut out = BTreeMap::new();
    while let Some(done) = set.join_next().await {
        let (id, payable) = done?.context("balance query failed")?;
        out.insert(id, payable);
    }
    Ok(out)
}

/// The pure half of the verification: judges the repeat answers (`repeats[i]` answers
/// the i-th acked transaction), replays the acked history through settle-core and compares each
/// partner's payable with `balances` (what the node reported). No I/O, so that fabricated
/// histories can test it.
pub fn check(
    partners: &[PartnerDef],
    rates: &[wire::FxRate],
    history: &History,
    repeats: &[wire::TxResult],
    balances: &BTreeMap<String, NodeBalance>,
    seed: u64,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    if repeats.len() != history.len() {
        return Err(anyhow!("{} repeat answers for {} acked transactions", repeats.len(), history.len()));
    }
    for ((tx, first), again) in history.iter().zip(repeats) {
        match judge_repeat(first, again) {
            RepeatVerdict::Verified => report.verified += 1,
            RepeatVerdict::Lost => {
                report.lost += 1;
                report.messages.push(format!("lost: {} was not known to the node", tx.id));
            }
            RepeatVerdict::Duplicated => {
                report.duplicated += 1;
                report.messages.push(format!("duplicated: {} answered {:?} then {:?}", tx.id, first, again));
            }
        }
    }

    let mut ledger = Ledger::new(Span::from_hours(24), seed);
    for p in partners {
        let value: Value = serde_json::from_str(&p.json)?;
        ledger.add_partner(parse_partner(&value, "partner").map_err(|e| anyhow!("{e}"))?)?;
    }
    for r in rates {
        let value = serde_json::json!({"base": r.base, "quote": r.quote, "rate": r.rate, "at": r.at});
        ledger.add_rate(parse_rate(&value, "rate").map_err(|e| anyhow!("{e}"))?);
    }
    let mut statements = Vec::new();
    for (tx, first) in history.iter() {
        let input = to_input(tx, None)?;
        let at = input.received_at;
        let expected = ledger.apply(input, at, &mut statements);
        let label = match &expected.outcome {
            Outcome::Applied(_) => "applied".to_string(),
            Outcome::Exception(r) => r.as_str().to_string(),
        };
        let got = outcome_label(first);
        if got != "applied" {
            report.exceptions += 1;
        }
        if label != got {
            report.outcome_mismatches += 1;
            report.messages.push(format!("outcome of {}: node {got}, settle-core {label}", tx.id));
        }
    }
    let periods_closed = !statements.is_empty();
    for p in partners {
        report.balances_checked += 1;
        let account = ledger.account(&p.id).ok_or_else(|| anyhow!("{} missing from the ledger", p.id))?;
        let expected = account.payable().format(account.currency().exponent());
        let node = balances.get(&p.id);
        let got = node.map_or("(none)", |b| b.payable.as_str());
        if got != expected {
            report.balance_mismatches += 1;
            report.messages.push(format!("balance of {}: node {got}, settle-core {expected}", p.id));
        }
        let expected_preview = comparable_statement(settle_core::replay::statement_json(&account.preview()));
        let got_preview = node
            .and_then(|b| b.preview_json.as_deref())
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .map(comparable_statement);
        match got_preview {
            Some(got) if !periods_closed && got["period_start"] == expected_preview["period_start"] => {
                report.statements_checked += 1;
                if got != expected_preview {
                    report.statement_mismatches += 1;
                    report.messages.push(format!(
                        "open statement of {}: node {got}, settle-core {expected_preview}",
                        p.id
                    ));
                }
            }
            _ => report.statements_skipped += 1,
        }
    }
    Ok(report)
}

/// A statement in the form that any order of the traffic gives. A sale reversed by both a refund
/// and a chargeback puts each reversal's rounding unit on whichever came later (the spec rounds
/// the cumulative amount), so `refunds` and `chargebacks` are order-dependent by one minor unit
/// each while their sum is not: they are compared as one `reversals` figure (in minor units).
fn comparable_statement(mut statement: Value) -> Value {
    let minor = |v: &Value| -> Option<i128> { v.as_str()?.replace('.', "").parse().ok() };
    if let Some(map) = statement.as_object_mut() {
        let refunds = map.remove("refunds");
        let chargebacks = map.remove("chargebacks");
        let sum =
            refunds.as_ref().and_then(minor).zip(chargebacks.as_ref().and_then(minor)).map(|(r, c)| r + c);
        map.insert("reversals".into(), sum.map_or(Value::Null, |s| Value::String(s.to_string())));
    }
    statement
}

/// Repeats every acked transaction, reads every partner's balance, and checks both.
pub async fn run(
    clients: &[Arc<Client>],
    partners: &[PartnerDef],
    rates: &[wire::FxRate],
    history: &History,
    batch: usize,
    seed: u64,
) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let repeats = repeat(clients, history, batch).await?;
    let node_balances = balances(clients, partners).await?;
    let mut report = check(partners, rates, history, &repeats, &node_balances, seed)?;
    report.seconds = started.elapsed().as_millis() as f64 / 1000.0;
    Ok(report)
}
