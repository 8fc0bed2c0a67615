//! The scenario format of `settle replay` (spec "Scenario file"): parsing and validation.
//!
//! A scenario that is not well formed is refused as a whole with an error naming the field by its
//! path (`partners[0].cycle.tz`) and, for JSON syntax, the line and column. Transaction fields that
//! the spec turns into exceptions (a missing partner, currency or amount, a malformed amount) are
//! kept as they are and become exceptions when applied.

use crate::account::Partner;
use crate::contract::{Contract, ContractVersion, PeriodFee, SaleFee, Share, Tier};
use crate::currency::Currency;
use crate::cycle::{parse_cutoff, parse_tz, Cycle, CycleKind, WeekdayName};
use crate::decimal::{Dec, Minor};
use crate::fx::FxRate;
use crate::ledger::DEFAULT_FX_MAX_AGE_HOURS;
use crate::time::{Instant, Span};
use crate::tx::{keep_string, AmountField, TxId, TxInput, TxKind, MAX_TX_ID_BYTES, NON_STRING_MARK};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use thiserror::Error;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub partners: Vec<Partner>,
    pub rates: Vec<FxRate>,
    pub fx_max_age: Span,
    /// In file order; replay applies them in order of `received_at`, ties in this order.
    pub transactions: Vec<TxInput>,
    pub close_until: Instant,
}

/// Why a scenario was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ScenarioError {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json { line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Field { path: String, message: String },
}

type Result<T> = std::result::Result<T, ScenarioError>;

fn field_error(path: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Field { path: path.to_string(), message: message.into() }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!("{}...", &text[..text.char_indices().nth(57).map_or(text.len(), |(i, _)| i)])
    } else {
        text
    }
}

/// A JSON object with its path, for reading fields with precise errors.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: &str) -> Result<Obj<'a>> {
        match value {
            Value::Object(map) => Ok(Obj { map, path: path.to_string() }),
            other => Err(field_error(path, format!("expected an object, found {}", show(other)))),
        }
    }

    fn path(&self, key: &str) -> String {
        child(&self.path, key)
    }

    /// The field, treating `null` as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &str) -> Result<&'a Value> {
        self.get(key).ok_or_else(|| field_error(&self.path(key), "is missing"))
    }

    fn string(&self, key: &str) -> Result<&'a str> {
        let v = self.required(key)?;
        v.as_str()
            .ok_or_else(|| field_error(&self.path(key), format!("expected a string, found {}", show(v))))
    }

    fn opt_string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| field_error(&self.path(key), format!("expected a string, found {}", show(v)))),
        }
    }

    fn array(&self, key: &str) -> Result<&'a [Value]> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(v) => Err(field_error(&self.path(key), format!("expected an array, found {}", show(v)))),
        }
    }

    fn instant(&self, key: &str) -> Result<Instant> {
        let text = self.string(key)?;
        Instant::parse_rfc3339(text)
            .ok_or_else(|| field_error(&self.path(key), format!("{text:?} is not an RFC 3339 instant")))
    }

    /// A decimal given as a string (or a plain JSON number).
    fn decimal(&self, key: &str, allow_sign: bool) -> Result<Dec> {
        let v = self.required(key)?;
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(field_error(
                    &self.path(key),
                    format!("expected a decimal, found {}", show(other)),
                ))
            }
        };
        Dec::parse(&text, allow_sign)
            .ok_or_else(|| field_error(&self.path(key), format!("{text:?} is not a decimal")))
    }

    /// An amount in `currency`, positive or zero.
    fn money(&self, key: &str, currency: Currency) -> Result<Minor> {
        let d = self.decimal(key, false)?;
        d.to_minor(currency.exponent()).ok_or_else(|| {
            field_error(&self.path(key), format!("{d} has more decimals than {currency} allows"))
        })
    }

    fn opt_money(&self, key: &str, currency: Currency) -> Result<Option<Minor>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.money(key, currency).map(Some),
        }
    }
}

fn parse_currency(obj: &Obj<'_>, key: &str) -> Result<Currency> {
    let code = obj.string(key)?;
    Currency::from_code(code).ok_or_else(|| {
        field_error(&obj.path(key), format!("{code:?} is not an ISO 4217 currency with a minor unit"))
    })
}

fn parse_duration(obj: &Obj<'_>, key: &str, default: Span) -> Result<Span> {
    match obj.opt_string(key)? {
        None => Ok(default),
        Some(text) => Span::parse_iso8601(text).ok_or_else(|| {
            field_error(
                &obj.path(key),
                format!("{text:?} is not an ISO 8601 duration of W, D, H, M and S parts"),
            )
        }),
    }
}

/// Parses and validates a scenario file.
pub fn parse(text: &str) -> Result<Scenario> {
    let root: Value = serde_json::from_str(text).map_err(|e| ScenarioError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let top = Obj::new(&root, "")?;

    let mut partners = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, value) in top.array("partners")?.iter().enumerate() {
        let path = format!("partners[{i}]");
        let partner = parse_partner(value, &path)?;
        if !seen.insert(partner.id.clone()) {
            return Err(field_error(
                &child(&path, "id"),
                format!("partner {:?} is listed twice", partner.id),
            ));
        }
        partners.push(partner);
    }

    let mut rates = Vec::new();
    for (i, value) in top.array("rates")?.iter().enumerate() {
        rates.push(parse_rate(value, &format!("rates[{i}]"))?);
    }

    let fx_max_age = parse_duration(&top, "fx_max_age", Span::from_hours(DEFAULT_FX_MAX_AGE_HOURS))?;

    let mut transactions = Vec::new();
    for (i, value) in top.array("transactions")?.iter().enumerate() {
        transactions.push(parse_transaction(value, &format!("transactions[{i}]"), None)?);
    }
    let close_until = top.instant("close_until")?;
    Ok(Scenario { partners, rates, fx_max_age, transactions, close_until })
}

/// Parses one partner definition (also used by the engine's registration API).
pub fn parse_partner(value: &Value, path: &str) -> Result<Partner> {
    let obj = Obj::new(value, path)?;
    let id = obj.string("id")?;
    if id.is_empty() {
        return Err(field_error(&obj.path("id"), "must not be empty"));
    }
    let currency = parse_currency(&obj, "settlement_currency")?;
    let since = obj.instant("since")?;
    let cycle = parse_cycle(obj.required("cycle")?, &obj.path("cycle"))?;
    let contract_values = obj.array("contracts")?;
    if contract_values.is_empty() {
        return Err(field_error(&obj.path("contracts"), "a partner needs at least one contract version"));
    }
    let mut versions = Vec::new();
    for (i, v) in contract_values.iter().enumerate() {
        versions.push(parse_contract_version(v, &format!("{}[{i}]", obj.path("contracts")), currency)?);
    }
    let contract = Contract::new(versions).map_err(|e| field_error(&obj.path("contracts"), e.to_string()))?;
    if cycle.period_containing(since).is_none() {
        return Err(field_error(&obj.path("since"), "no settlement period contains this instant"));
    }
    Ok(Partner { id: id.to_string(), currency, since, cycle, contract })
}

fn parse_cycle(value: &Value, path: &str) -> Result<Cycle> {
    let obj = Obj::new(value, path)?;
    let every = obj.string("every")?;
    let kind = match every {
        "daily" => CycleKind::Daily,
        "weekly" => {
            let day = obj.string("weekday")?;
            CycleKind::Weekly(WeekdayName::parse(day).ok_or_else(|| {
                field_error(
                    &obj.path("weekday"),
                    format!("{day:?} is not one of mon, tue, wed, thu, fri, sat, sun"),
                )
            })?)
        }
        "monthly" => {
            let v = obj.required("day")?;
            let day = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse::<u64>().ok(),
                _ => None,
            }
            .filter(|d| (1..=28).contains(d))
            .ok_or_else(|| {
                field_error(
                    &obj.path("day"),
                    format!("expected a day of the month 1..=28, found {}", show(v)),
                )
            })?;
            CycleKind::Monthly(u8::try_from(day).unwrap_or(1))
        }
        other => {
            return Err(field_error(
                &obj.path("every"),
                format!("{other:?} is not daily, weekly or monthly"),
            ));
        }
    };
    let cutoff = obj.string("cutoff")?;
    let cutoff_minutes = parse_cutoff(cutoff)
        .ok_or_else(|| field_error(&obj.path("cutoff"), format!("{cutoff:?} is not HH:MM")))?;
    let tz_name = obj.string("tz")?;
    let tz = parse_tz(tz_name)
        .ok_or_else(|| field_error(&obj.path("tz"), format!("{tz_name:?} is not an IANA time zone")))?;
    let grace = parse_duration(&obj, "grace", Span::ZERO)?;
    Ok(Cycle { kind, cutoff_minutes, tz, grace })
}

/// Parses one contract version in settlement currency `currency`.
pub fn parse_contract_version(value: &Value, path: &str, currency: Currency) -> Result<ContractVersion> {
    let obj = Obj::new(value, path)?;
    let effective_from = obj.instant("effective_from")?;
    let mut shares = Vec::new();
    for (i, v) in obj.array("shares")?.iter().enumerate() {
        let s = Obj::new(v, &format!("{}[{i}]", obj.path("shares")))?;
        let party = s.string("party")?.to_string();
        let percent = s.decimal("percent", false)?;
        shares.push(Share { party, percent });
    }
    let mut fees = Vec::new();
    for (i, v) in obj.array("fees")?.iter().enumerate() {
        let f = Obj::new(v, &format!("{}[{i}]", obj.path("fees")))?;
        let fee = match f.string("kind")? {
            "percent" => SaleFee::Percent {
                bps: f.decimal("bps", false)?,
                min: f.opt_money("min", currency)?,
                max: f.opt_money("max", currency)?,
            },
            "fixed" => SaleFee::Fixed { amount: f.money("amount", currency)? },
            other => return Err(field_error(&f.path("kind"), format!("{other:?} is not percent or fixed"))),
        };
        fees.push(fee);
    }
    let chargeback_fee = obj.opt_money("chargeback_fee", currency)?;
    let mut period_fees = Vec::new();
    for (i, v) in obj.array("period_fees")?.iter().enumerate() {
        let f = Obj::new(v, &format!("{}[{i}]", obj.path("period_fees")))?;
        let fee = match f.string("kind")? {
            "tiered" => {
                let mut tiers = Vec::new();
                for (j, t) in f.array("tiers")?.iter().enumerate() {
                    let t = Obj::new(t, &format!("{}[{j}]", f.path("tiers")))?;
                    let up_to = match t.get("up_to") {
                        None => None,
                        Some(_) => Some(t.decimal("up_to", false)?),
                    };
                    tiers.push(Tier { up_to, bps: t.decimal("bps", false)? });
                }
                PeriodFee::Tiered { tiers }
            }
            "minimum" => PeriodFee::Minimum { amount: f.money("amount", currency)? },
            other => return Err(field_error(&f.path("kind"), format!("{other:?} is not tiered or minimum"))),
        };
        period_fees.push(fee);
    }
    ContractVersion::new(effective_from, shares, fees, chargeback_fee, period_fees)
        .map_err(|e| field_error(&child(path, &e.field), e.message))
}

/// Parses one FX rate.
pub fn parse_rate(value: &Value, path: &str) -> Result<FxRate> {
    let obj = Obj::new(value, path)?;
    let base = parse_currency(&obj, "base")?;
    let quote = parse_currency(&obj, "quote")?;
    let rate = obj.decimal("rate", false)?;
    if rate.is_zero() {
        return Err(field_error(&obj.path("rate"), "must be positive"));
    }
    let at = obj.instant("at")?;
    let source = obj.opt_string("source")?.map(str::to_string);
    Ok(FxRate { base, quote, rate, at, source })
}

/// Canonical JSON text of a value: object keys sorted and numbers written by value, so equal
/// values give equal text (`{"b": 1, "a": 1.0}` and `{"a": 1, "b": 1e0}` both give
/// `{"a":1,"b":1}`).
pub fn canonical_json(value: &Value) -> String {
    fn canonical(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            Value::Number(n) => canonical_number(n),
            other => other.clone(),
        }
    }
    canonical(value).to_string()
}

/// A JSON number by its value. Integers parse as `u64`/`i64` and other numbers as `f64`, so the
/// same value can arrive in two forms (`1` and `1.0`, `100` and `1e2`); an integral float that
/// an integer type holds exactly is turned into that integer (and `-0.0` into `0`). Larger
/// floats need nothing: every literal of one value parses to the same `f64`.
fn canonical_number(n: &serde_json::Number) -> Value {
    // 2^63 and 2^64 are exact in f64, and integral floats below them convert exactly.
    const MINUS_TWO_63: f64 = -9_223_372_036_854_775_808.0;
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    match n.as_f64() {
        Some(x) if n.is_f64() && x.fract() == 0.0 => {
            if (MINUS_TWO_63..TWO_63).contains(&x) {
                return Value::from(x as i64);
            }
            if (0.0..TWO_64).contains(&x) {
                return Value::from(x as u64);
            }
            Value::Number(n.clone())
        }
        _ => Value::Number(n.clone()),
    }
}

/// Parses one transaction. `received_at` overrides the field (the live engine stamps it); in a
/// scenario the field is required.
pub fn parse_transaction(value: &Value, path: &str, received_at: Option<Instant>) -> Result<TxInput> {
    let obj = Obj::new(value, path)?;
    let id_text = obj.string("id")?;
    let id = TxId::new(id_text).ok_or_else(|| {
        field_error(&obj.path("id"), format!("must be 1..={MAX_TX_ID_BYTES} bytes, found {}", id_text.len()))
    })?;
    let kind_text = obj.string("kind")?;
    let kind = TxKind::parse(kind_text).ok_or_else(|| {
        field_error(
            &obj.path("kind"),
            format!("{kind_text:?} is not sale, refund, chargeback, payout or adjustment"),
        )
    })?;
    let occurred_at = obj.instant("occurred_at")?;
    let received_at = match received_at {
        Some(t) => t,
        None => obj.instant("received_at")?,
    };
    // A text field given as another JSON type is kept, marked, for content comparison only: it
    // names no partner, currency or sale and explains no adjustment (see `NON_STRING_MARK`).
    let text_of = |key: &str| match obj.get(key) {
        None => None,
        Some(Value::String(s)) => Some(keep_string(s)),
        Some(other) => Some(format!("{NON_STRING_MARK}{}", canonical_json(other))),
    };
    let amount = match obj.get("amount") {
        None => AmountField::Missing,
        Some(Value::String(s)) => match Dec::parse(s, true) {
            Some(d) => AmountField::Decimal(d),
            None => AmountField::Malformed(s.clone()),
        },
        Some(other) => AmountField::Malformed(other.to_string()),
    };
    let reason = text_of("reason");
    Ok(TxInput {
        id,
        partner: text_of("partner"),
        kind,
        amount,
        currency: text_of("currency"),
        occurred_at,
        received_at,
        original: text_of("original"),
        reason,
        metadata: obj.get("metadata").map(canonical_json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
      "partners": [{"id": "p", "settlement_currency": "EUR", "since": "2026-01-01T00:00:00Z",
        "cycle": {"every": "daily", "cutoff": "00:00", "tz": "UTC"},
        "contracts": [{"effective_from": "2026-01-01T00:00:00Z",
                       "shares": [{"party": "partner", "percent": "100"}]}]}],
      "transactions": [], "close_until": "2026-01-02T00:00:00Z"}"#;

    fn refuse(edit: impl Fn(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(MINIMAL).unwrap();
        edit(&mut v);
        parse(&v.to_string()).unwrap_err().to_string()
    }

    #[test]
    fn minimal_scenario_parses() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.partners.len(), 1);
        assert_eq!(s.fx_max_age, Span::from_hours(24));
    }

    #[test]
    fn malformed_scenarios_name_the_field() {
        let cases: Vec<(Box<dyn Fn(&mut Value)>, &str)> = vec![
            (Box::new(|v| v["partners"][0]["cycle"]["tz"] = "Mars/Olympus".into()), "partners[0].cycle.tz"),
            (
                Box::new(|v| v["partners"][0]["contracts"][0]["shares"][0]["percent"] = "99".into()),
                "partners[0].contracts[0].shares",
            ),
            (Box::new(|v| v["partners"][0]["contracts"] = serde_json::json!([])), "partners[0].contracts"),
            (Box::new(|v| v["close_until"] = "soon".into()), "close_until"),
            (
                Box::new(|v| {
                    v["transactions"] = serde_json::json!([{"id": "", "kind": "sale",
                        "occurred_at": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z"}])
                }),
                "transactions[0].id",
            ),
            (
                Box::new(|v| {
                    v["transactions"] = serde_json::json!([{"id": "a", "kind": "gift",
                        "occurred_at": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z"}])
                }),
                "transactions[0].kind",
            ),
            (
                Box::new(|v| {
                    v["transactions"] = serde_json::json!([{"id": "a", "kind": "sale",
                        "occurred_at": "2026-01-01T00:00:00Z"}])
                }),
                "transactions[0].received_at",
            ),
            (
                Box::new(|v| {
                    v["partners"][0]["contracts"][0]["fees"] =
                        serde_json::json!([{"kind": "percent", "bps": "100", "min": "5.00", "max": "1.00"}])
                }),
                "partners[0].contracts[0].fees[0].min",
            ),
            (
                Box::new(|v| {
                    v["partners"][0]["contracts"][0]["period_fees"] = serde_json::json!([
                        {"kind": "minimum", "amount": "1.00"}, {"kind": "minimum", "amount": "2.00"}])
                }),
                "partners[0].contracts[0].period_fees[1]",
            ),
            (
                Box::new(|v| {
                    v["partners"][0]["contracts"][0]["shares"] = serde_json::json!([
                        {"party": "partner", "percent": "50"}, {"party": "partner", "percent": "50"}])
                }),
                "partners[0].contracts[0].shares[1].party",
            ),
        ];
        for (edit, path) in cases {
            let message = refuse(edit);
            assert!(message.starts_with(path), "{message} should name {path}");
        }
    }

    #[test]
    fn bad_json_reports_line_and_column() {
        let e = parse("{\n  \"partners\": [,]\n}").unwrap_err();
        assert!(matches!(e, ScenarioError::Json { line: 2, .. }), "{e}");
    }
}
