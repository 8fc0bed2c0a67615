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

use crate::run::SETUP_CONCURRENCY;
use crate::traffic::{History, PartnerDef};
use anyhow::{anyhow, Context};
use serde_json::{Map, Value};
use settle_client::Client;
use settle_core::scenario::{parse_partner, parse_rate, parse_transaction};
use settle_core::{Instant, Ledger, Outcome, Span, TxInput};
use settle_wire as wire;
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

pub async fn run(
    clients: &[Arc<Client>],
    partners: &[PartnerDef],
    rates: &[wire::FxRate],
    history: &History,
    batch: usize,
    seed: u64,
) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let mut report = Report::default();

    // 1. Repeat every acked transaction.
    let chunks: Vec<Vec<(wire::Transaction, wire::TxResult)>> =
        history.iter().cloned().collect::<Vec<_>>().chunks(batch.max(1)).map(|c| c.to_vec()).collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let client = clients[i % clients.len()].clone();
        let permit = sem.clone().acquire_owned().await?;
        set.spawn(async move {
            let txs: Vec<_> = chunk.iter().map(|(t, _)| t.clone()).collect();
            let results = client.submit(txs).await;
            drop(permit);
            results.map(|r| (chunk, r))
        });
    }
    while let Some(done) = set.join_next().await {
        let (chunk, results) = done?.context("repeat submission failed")?;
        for ((tx, first), again) in chunk.iter().zip(results) {
            if !again.duplicate {
                report.lost += 1;
                report.messages.push(format!("lost: {} was not known to the node", tx.id));
            } else if again.outcome != first.outcome {
                report.duplicated += 1;
                report.messages.push(format!("duplicated: {} answered {:?} then {:?}", tx.id, first, again));
            } else {
                report.verified += 1;
            }
        }
    }

    // 2. Replay the acked history through settle-core.
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
    let mut set = JoinSet::new();
    for (i, p) in partners.iter().enumerate() {
        let client = clients[i % clients.len()].clone();
        let id = p.id.clone();
        let permit = sem.clone().acquire_owned().await?;
        set.spawn(async move {
            let b = client.balance(&id).await;
            drop(permit);
            b.map(|b| (id, b))
        });
    }
    while let Some(done) = set.join_next().await {
        let (id, balance) = done?.context("balance query failed")?;
        report.balances_checked += 1;
        let expected = ledger
            .account(&id)
            .map(|a| a.payable().format(a.currency().exponent()))
            .ok_or_else(|| anyhow!("{id} missing from the ledger"))?;
        if balance.payable != expected {
            report.balance_mismatches += 1;
            report
                .messages
                .push(format!("balance of {id}: node {}, settle-core {expected}", balance.payable));
        }
    }
    report.seconds = started.elapsed().as_millis() as f64 / 1000.0;
    Ok(report)
}
