//! `settle replay`: runs a scenario through a ledger and renders the spec's output JSON.

use crate::ledger::Ledger;
use crate::scenario::Scenario;
use crate::statement::Statement;
use crate::tx::{ExceptionReason, TxId};
use crate::Minor;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// Hash seed of replay ledgers. Output never depends on it; fixing it keeps runs identical.
const REPLAY_HASH_SEED: u64 = 0x5e77_1e5e_771e;

#[derive(Clone, Debug)]
pub struct ReplayOutcome {
    /// Ordered by partner id (byte order), then period start.
    pub statements: Vec<Statement>,
    /// In the order they arose.
    pub exceptions: Vec<(TxId, ExceptionReason)>,
    /// Every partner with its payable, ordered by id.
    pub balances: Vec<(String, Minor, u8)>,
    /// The ledger at the end, for callers that inspect more.
    pub ledger: Ledger,
}

/// Builds the ledger of a scenario without applying any transaction.
pub fn ledger_for(scenario: &Scenario) -> Result<Ledger, crate::ledger::LedgerError> {
    let mut ledger = Ledger::new(scenario.fx_max_age, REPLAY_HASH_SEED);
    for partner in &scenario.partners {
        ledger.add_partner(partner.clone())?;
    }
    for rate in &scenario.rates {
        ledger.add_rate(rate.clone());
    }
    Ok(ledger)
}

/// Applies every transaction in order of `received_at` (ties: file order), closing periods up to
/// `close_until` only.
pub fn run(scenario: &Scenario) -> Result<ReplayOutcome, crate::ledger::LedgerError> {
    let mut ledger = ledger_for(scenario)?;
    let mut order: Vec<&crate::tx::TxInput> = scenario.transactions.iter().collect();
    order.sort_by_key(|tx| tx.received_at); // stable: ties keep file order
    let mut statements = Vec::new();
    let mut exceptions = Vec::new();
    for tx in order {
        let id = tx.id.clone();
        let result = ledger.apply(tx.clone(), scenario.close_until, &mut statements);
        if let (Some(reason), false) = (result.outcome.exception(), result.duplicate) {
            exceptions.push((id, reason));
        }
    }
    ledger.close_due(scenario.close_until, &mut statements);
    statements.sort_by(|a, b| a.partner.cmp(&b.partner).then(a.period.start.cmp(&b.period.start)));
    let balances = ledger
        .accounts_by_id()
        .into_iter()
        .map(|a| (a.id().to_string(), a.payable(), a.currency().exponent()))
        .collect();
    Ok(ReplayOutcome { statements, exceptions, balances, ledger })
}

struct Amount(Minor, u8);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.format(self.1))
    }
}

struct Shares<'a>(&'a [(String, Minor)], u8);

impl Serialize for Shares<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (party, amount) in self.0 {
            map.serialize_entry(party, &Amount(*amount, self.1))?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct FeesOut {
    percent: Amount,
    fixed: Amount,
    chargeback: Amount,
    tiered: Amount,
    minimum: Amount,
}

#[derive(Serialize)]
struct StatementOut<'a> {
    partner: &'a str,
    period_start: String,
    period_end: String,
    currency: &'a str,
    opening: Amount,
    gross_sales: Amount,
    refunds: Amount,
    chargebacks: Amount,
    shares: Shares<'a>,
    fees: FeesOut,
    adjustments: Amount,
    payouts: Amount,
    closing: Amount,
    transaction_count: u64,
    late_count: u64,
}

impl<'a> StatementOut<'a> {
    fn new(s: &'a Statement) -> StatementOut<'a> {
        let e = s.currency.exponent();
        StatementOut {
            partner: &s.partner,
            period_start: s.period.start.to_rfc3339(),
            period_end: s.period.end.to_rfc3339(),
            currency: s.currency.code(),
            opening: Amount(s.opening, e),
            gross_sales: Amount(s.gross_sales, e),
            refunds: Amount(s.refunds, e),
            chargebacks: Amount(s.chargebacks, e),
            shares: Shares(&s.shares, e),
            fees: FeesOut {
                percent: Amount(s.fees.percent, e),
                fixed: Amount(s.fees.fixed, e),
                chargeback: Amount(s.fees.chargeback, e),
                tiered: Amount(s.fees.tiered, e),
                minimum: Amount(s.fees.minimum, e),
            },
            adjustments: Amount(s.adjustments, e),
            payouts: Amount(s.payouts, e),
            closing: Amount(s.closing, e),
            transaction_count: s.transaction_count,
            late_count: s.late_count,
        }
    }
}

#[derive(Serialize)]
struct ExceptionOut<'a> {
    id: &'a str,
    reason: &'static str,
}

#[derive(Serialize)]
struct BalanceOut<'a> {
    partner: &'a str,
    payable: Amount,
}

#[derive(Serialize)]
struct Output<'a> {
    statements: Vec<StatementOut<'a>>,
    exceptions: Vec<ExceptionOut<'a>>,
    balances: Vec<BalanceOut<'a>>,
}

/// Renders one statement as the spec's JSON object.
pub fn statement_json(statement: &Statement) -> serde_json::Value {
    serde_json::to_value(StatementOut::new(statement)).unwrap_or(serde_json::Value::Null)
}

impl ReplayOutcome {
    /// The spec's replay output, pretty-printed, with a trailing newline.
    pub fn to_json(&self) -> String {
        let output = Output {
            statements: self.statements.iter().map(StatementOut::new).collect(),
            exceptions: self
                .exceptions
                .iter()
                .map(|(id, reason)| ExceptionOut { id: id.as_str(), reason: reason.as_str() })
                .collect(),
            balances: self
                .balances
                .iter()
                .map(|(partner, payable, e)| BalanceOut { partner, payable: Amount(*payable, *e) })
                .collect(),
        };
        // Serialising plain strings and integers cannot fail.
        let mut text = serde_json::to_string_pretty(&output).unwrap_or_default();
        text.push('\n');
        text
    }
}
