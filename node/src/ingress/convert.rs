//! Wire messages to settle-core values and back. The transaction rules are settle-core's own
//! (`scenario::parse_transaction` and friends), so a transaction sent over QUIC is read exactly as
//! the same transaction in a scenario file would be.
//!
//! Shape errors refuse the whole batch as MALFORMED with a message naming the index and the field
//! (`transactions[3].occurred_at: ...`): a missing or malformed id, kind or instant, or metadata
//! that is not a JSON object. Content that the spec turns into exceptions (a malformed amount, an
//! unknown currency, a missing partner) is passed through and settled as that exception.

use super::backend::BalanceView;
use serde_json::{Map, Value};
use settle_core::scenario::{parse_contract_version, parse_partner, parse_rate, parse_transaction};
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, Currency, FxRate, Instant, Outcome, Partner, TxInput};
use settle_wire as wire;

/// A request field that cannot be read; the message names where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn put(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        map.insert(key.to_string(), Value::String(v.clone()));
    }
}

/// Reads one wire transaction, stamped with `received_at` (the engine may stamp again).
pub fn transaction(tx: &wire::Transaction, index: usize, received_at: Instant) -> Result<TxInput, Malformed> {
    let path = format!("transactions[{index}]");
    let kind = match tx.tx_kind() {
        wire::TxKind::Unspecified => {
            return Err(Malformed(format!("{path}.kind: {} is not a transaction kind", tx.kind)));
        }
        wire::TxKind::Sale => "sale",
        wire::TxKind::Refund => "refund",
        wire::TxKind::Chargeback => "chargeback",
        wire::TxKind::Payout => "payout",
        wire::TxKind::Adjustment => "adjustment",
    };
    let mut map = Map::new();
    map.insert("id".into(), Value::String(tx.id.clone()));
    map.insert("kind".into(), Value::String(kind.into()));
    map.insert("occurred_at".into(), Value::String(tx.occurred_at.clone()));
    put(&mut map, "partner", &tx.partner);
    put(&mut map, "amount", &tx.amount);
    put(&mut map, "currency", &tx.currency);
    put(&mut map, "original", &tx.original);
    put(&mut map, "reason", &tx.reason);
    if let Some(text) = &tx.metadata_json {
        match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => {
                map.insert("metadata".into(), v);
            }
            Ok(_) => return Err(Malformed(format!("{path}.metadata_json: not a JSON object"))),
            Err(e) => return Err(Malformed(format!("{path}.metadata_json: {e}"))),
        }
    }
    parse_transaction(&Value::Object(map), &path, Some(received_at)).map_err(|e| Malformed(e.to_string()))
}

pub fn transactions(txs: &[wire::Transaction], received_at: Instant) -> Result<Vec<TxInput>, Malformed> {
    txs.iter().enumerate().map(|(i, tx)| transaction(tx, i, received_at)).collect()
}

pub fn rates(rates: &[wire::FxRate]) -> Result<Vec<FxRate>, Malformed> {
    rates
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut map = Map::new();
            map.insert("base".into(), Value::String(r.base.clone()));
            map.insert("quote".into(), Value::String(r.quote.clone()));
            map.insert("rate".into(), Value::String(r.rate.clone()));
            map.insert("at".into(), Value::String(r.at.clone()));
            put(&mut map, "source", &r.source);
            parse_rate(&Value::Object(map), &format!("rates[{i}]")).map_err(|e| Malformed(e.to_string()))
        })
        .collect()
}

fn json(text: &str, what: &str) -> Result<Value, Malformed> {
    serde_json::from_str(text).map_err(|e| Malformed(format!("{what}: {e}")))
}

pub fn partner(partner_json: &str) -> Result<Partner, Malformed> {
    parse_partner(&json(partner_json, "partner_json")?, "partner").map_err(|e| Malformed(e.to_string()))
}

pub fn contract_version(version_json: &str, currency: Currency) -> Result<ContractVersion, Malformed> {
    parse_contract_version(&json(version_json, "version_json")?, "version", currency)
        .map_err(|e| Malformed(e.to_string()))
}

/// One result on the wire. `currency` is the partner's settlement currency (needed to format the
/// amounts of an applied transaction; `None` only when the partner is unknown, and then the
/// outcome is an exception).
pub fn tx_result(result: &TxResult, currency: Option<Currency>) -> wire::TxResult {
    let outcome = match &result.outcome {
        Outcome::Applied(a) => {
            let (code, exp) = currency.map_or((String::new(), 0), |c| (c.code().to_string(), c.exponent()));
            wire::tx_result::Outcome::Applied(wire::Applied {
                payable_after: a.payable_after.format(exp),
                amount_s: a.amount_s.format(exp),
                period_start: a.period.start.to_rfc3339(),
                period_end: a.period.end.to_rfc3339(),
                late: a.late,
                currency: code,
            })
        }
        Outcome::Exception(reason) => {
            wire::tx_result::Outcome::Exception(wire::Exception { reason: reason.as_str().to_string() })
        }
    };
    wire::TxResult { outcome: Some(outcome), duplicate: result.duplicate }
}

pub fn balance(view: &BalanceView) -> wire::Balance {
    let exp = view.currency.exponent();
    wire::Balance {
        partner: view.partner.clone(),
        currency: view.currency.code().to_string(),
        payable: view.payable.format(exp),
        open_period_start: view.open_period.start.to_rfc3339(),
        open_period_end: view.open_period.end.to_rfc3339(),
        preview_json: settle_core::replay::statement_json(&view.preview).to_string(),
    }
}
