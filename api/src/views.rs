//! JSON renderings of the read model. Money is always a decimal string with exactly the
//! currency's decimals (the spec's representation), never a JSON number; instants are RFC 3339.

use crate::model::{BalanceView, ClusterView, ExceptionItem, ResolutionKind, ResolutionView, TxRecord};
use serde_json::{json, Value};
use settle_core::contract::{PeriodFee, SaleFee};
use settle_core::cycle::CycleKind;
use settle_core::{
    AmountField, ContractVersion, Currency, Minor, Outcome, Partner, Span, Statement, TxInput,
};

pub fn money(amount: Minor, currency: Currency) -> String {
    amount.format(currency.exponent())
}

fn opt_money(amount: Option<Minor>, currency: Currency) -> Value {
    amount.map_or(Value::Null, |m| Value::String(money(m, currency)))
}

/// A span as ISO 8601 seconds (`PT7200S`); exact, whole seconds and nanoseconds.
pub fn span(s: Span) -> String {
    let nanos = s.0;
    let secs = nanos / 1_000_000_000;
    let rest = nanos % 1_000_000_000;
    if rest == 0 {
        format!("PT{secs}S")
    } else {
        format!("PT{secs}.{rest:09}S")
    }
}

pub fn contract_version(v: &ContractVersion, currency: Currency) -> Value {
    let shares: Vec<Value> =
        v.shares.iter().map(|s| json!({"party": s.party, "percent": s.percent.to_string()})).collect();
    let fees: Vec<Value> = v
        .fees
        .iter()
        .map(|f| match f {
            SaleFee::Percent { bps, min, max } => json!({
                "kind": "percent", "bps": bps.to_string(),
                "min": opt_money(*min, currency), "max": opt_money(*max, currency),
            }),
            SaleFee::Fixed { amount } => json!({"kind": "fixed", "amount": money(*amount, currency)}),
        })
        .collect();
    let period_fees: Vec<Value> = v
        .period_fees
        .iter()
        .map(|f| match f {
            PeriodFee::Tiered { tiers } => json!({
                "kind": "tiered",
                "tiers": tiers.iter().map(|t| json!({
                    "up_to": t.up_to.map(|u| u.to_string()), "bps": t.bps.to_string(),
                })).collect::<Vec<_>>(),
            }),
            PeriodFee::Minimum { amount } => json!({"kind": "minimum", "amount": money(*amount, currency)}),
        })
        .collect();
    json!({
        "effective_from": v.effective_from.to_rfc3339(),
        "shares": shares,
        "fees": fees,
        "chargeback_fee": opt_money(v.chargeback_fee, currency),
        "period_fees": period_fees,
    })
}

pub fn partner(p: &Partner) -> Value {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let mut cycle = match p.cycle.kind {
        CycleKind::Daily => json!({"every": "daily"}),
        CycleKind::Weekly(d) => json!({"every": "weekly", "weekday": DAYS.get(usize::from(d.0)).copied()}),
        CycleKind::Monthly(day) => json!({"every": "monthly", "day": day}),
    };
    if let Value::Object(map) = &mut cycle {
        let (h, m) = (p.cycle.cutoff_minutes / 60, p.cycle.cutoff_minutes % 60);
        map.insert("cutoff".into(), Value::String(format!("{h:02}:{m:02}")));
        map.insert("tz".into(), Value::String(p.cycle.tz.name().to_string()));
        map.insert("grace".into(), Value::String(span(p.cycle.grace)));
    }
    json!({
        "id": p.id,
        "settlement_currency": p.currency.code(),
        "since": p.since.to_rfc3339(),
        "cycle": cycle,
        "contracts": p.contract.versions().iter().map(|v| contract_version(v, p.currency)).collect::<Vec<_>>(),
    })
}

pub fn statement(s: &Statement) -> Value {
    settle_core::replay::statement_json(s)
}

pub fn balance(b: &BalanceView) -> Value {
    json!({
        "partner": b.partner,
        "currency": b.currency.code(),
        "payable": money(b.payable, b.currency),
        "open_period": {"start": b.open_period.start.to_rfc3339(), "end": b.open_period.end.to_rfc3339()},
        "preview": statement(&b.preview),
    })
}

/// The amount as received; with the currency's decimals when the currency is known and the
/// amount has no more decimals than it (so `100.00` EUR shows as `"100.00"`, not `"100"`).
pub fn amount_field(a: &AmountField, currency: Option<&str>) -> Value {
    match a {
        AmountField::Missing => Value::Null,
        AmountField::Decimal(d) => {
            let exact = currency
                .and_then(Currency::from_code)
                .and_then(|c| d.to_minor(c.exponent()).map(|m| money(m, c)));
            Value::String(exact.unwrap_or_else(|| d.to_string()))
        }
        AmountField::Malformed(raw) => Value::String(raw.clone()),
    }
}

pub fn tx_input(tx: &TxInput) -> Value {
    json!({
        "id": tx.id.as_str(),
        "partner": tx.partner,
        "kind": tx.kind.as_str(),
        "amount": amount_field(&tx.amount, tx.currency.as_deref()),
        "currency": tx.currency,
        "occurred_at": tx.occurred_at.to_rfc3339(),
        "received_at": tx.received_at.to_rfc3339(),
        "original": tx.original,
        "reason": tx.reason,
        "metadata": tx.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
    })
}

pub fn outcome(o: &Outcome, currency: Option<Currency>) -> Value {
    match o {
        Outcome::Exception(reason) => json!({"status": "exception", "reason": reason.as_str()}),
        Outcome::Applied(a) => {
            let fmt = |m: Minor| currency.map_or(Value::Null, |c| Value::String(money(m, c)));
            json!({
                "status": "applied",
                "period": {"start": a.period.start.to_rfc3339(), "end": a.period.end.to_rfc3339()},
                "late": a.late,
                "settled_amount": fmt(a.amount_s),
                "payable_after": fmt(a.payable_after),
                "fx": a.rate.as_ref().map(|r| json!({
                    "base": r.base.code(), "quote": r.quote.code(), "rate": r.rate.to_string(),
                    "at": r.at.to_rfc3339(), "inverse": r.inverse, "source": r.source,
                })),
            })
        }
    }
}

pub fn tx_record(r: &TxRecord) -> Value {
    let mut v = tx_input(&r.tx);
    if let Value::Object(map) = &mut v {
        map.insert("seq".into(), json!(r.seq.map(|s| s.to_string())));
        map.insert("outcome".into(), outcome(&r.outcome, r.settlement_currency));
    }
    v
}

pub fn exception(e: &ExceptionItem, resolution: Option<&Value>) -> Value {
    json!({
        "seq": e.seq.to_string(),
        "id": e.id,
        "reason": e.reason.as_str(),
        "partner": e.tx.as_ref().and_then(|t| t.partner.clone()),
        "transaction": e.tx.as_ref().map(tx_input),
        "status": if resolution.is_some() { "resolved" } else { "open" },
        "resolution": resolution.cloned(),
    })
}

/// A resolution in the shape the control-store resolutions have: `action`, `reason` or
/// `retry_id` and `outcome`, `by`, `at` (and `pending` while a retry has no outcome yet).
pub fn resolution(r: &ResolutionView) -> Value {
    let at = r.at.to_rfc3339();
    match &r.kind {
        ResolutionKind::Reject { reason } => {
            json!({"action": "reject", "reason": reason, "by": r.by, "at": at})
        }
        ResolutionKind::Retry { retry_id, outcome, settlement_currency } => json!({
            "action": "retry", "retry_id": retry_id,
            "outcome": outcome.as_ref().map(|o| self::outcome(o, *settlement_currency)),
            "pending": outcome.is_none(), "by": r.by, "at": at,
        }),
    }
}

/// Cluster health: per shard its leader and replicas (applied index, lag), and a summary.
pub fn cluster(c: &ClusterView) -> Value {
    let led = |node: u64| c.shards.iter().filter(|s| s.leader == Some(node)).count();
    let max_lag = c.shards.iter().flat_map(|s| s.replicas.iter().filter_map(|r| r.lag)).max();
    json!({
        "nodes": c.nodes.iter().map(|n| json!({
            "id": n.id, "role": n.role, "up": n.up, "detail": n.detail, "leads": led(n.id),
        })).collect::<Vec<_>>(),
        "shards": c.shards.iter().map(|s| json!({
            "shard": s.shard, "leader": s.leader,
            "replicas": s.replicas.iter().map(|r| json!({
                "node": r.node, "applied_index": r.applied_index.map(|i| i.to_string()), "lag": r.lag,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "shards_without_leader": c.shards.iter().filter(|s| s.leader.is_none()).count(),
        "max_lag": max_lag,
    })
}
