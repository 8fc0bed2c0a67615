//! The traffic model: partners, rates, and a generator of realistic transactions whose final
//! balances do not depend on the order in which concurrent transactions are applied.
//!
//! Why that matters: the node stamps `received_at` itself and applies concurrent batches in an
//! order the load generator cannot observe. To check every partner's balance against
//! `settle_core::Ledger` we make the outcome independent of that order:
//! - the partners' contracts have no period fees, so closing a period never moves `payable`
//!   (the period a transaction lands in, and whether it is `late`, depend on timing);
//! - refunds and chargebacks reference sales that were already acknowledged, and never reverse
//!   more than what is left of the sale (the generator reserves the amount when it issues one);
//!   reversals are cumulative in the spec, so their total does not depend on their order;
//! - payouts draw on a conservative, order-independent lower bound of the partner's payable
//!   (`budget`), so none can be `insufficient_balance` whatever the interleaving.
//!
//! Every transaction is therefore applied, and the final payable is a sum that any order gives.

#![allow(clippy::float_arithmetic)] // Zipf weights only; money is integer minor units.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use settle_core::{Currency, Dec, Instant, Minor};
use settle_wire as wire;

/// Settlement currencies the partners rotate through.
pub const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "JPY"];
/// Rates published before the run (1 base = rate quote); every settlement currency has a pair
/// with USD, and USD partners take EUR sales through the inverse of USD->EUR.
pub const RATES: [(&str, &str, &str); 3] =
    [("USD", "EUR", "0.92"), ("USD", "GBP", "0.79"), ("USD", "JPY", "151.3")];
/// Share of the partner in every contract, percent.
const PARTNER_PERCENT: i128 = 80;
/// Sale amounts, in major units of the sale currency.
const SALE_MIN_MAJOR: u64 = 5;
const SALE_MAX_MAJOR: u64 = 500;
/// Sales that may later be refunded or charged back, per partner (oldest dropped).
const REVERSIBLE_PER_PARTNER: usize = 64;

/// Percent of generated transactions by kind (the rest are sales). A refund, chargeback or payout
/// that cannot be issued (nothing to reverse, no budget) becomes a sale.
pub const REFUND_PERCENT: u32 = 12;
pub const CHARGEBACK_PERCENT: u32 = 3;
pub const PAYOUT_PERCENT: u32 = 10;
/// Percent of sales in a foreign currency (converted with the published rates).
pub const FOREIGN_SALE_PERCENT: u32 = 20;
/// Percent of acked sales kept as candidates for reversal.
const REVERSIBLE_SALE_PERCENT: u32 = 40;

#[derive(Clone, Debug)]
pub struct PartnerDef {
    pub id: String,
    pub currency: Currency,
    pub json: String,
}

fn minor(units: i128, exp: u8) -> String {
    Minor(units).format(exp)
}

fn pow10(e: u8) -> i128 {
    10i128.pow(u32::from(e))
}

/// Fixed fee per sale in minor units of the settlement currency (0.10 of a major unit, or 10 JPY).
pub fn fixed_fee(c: Currency) -> i128 {
    if c.exponent() >= 1 {
        pow10(c.exponent()) / 10
    } else {
        10
    }
}

/// Chargeback fee, 5 major units.
pub fn chargeback_fee(c: Currency) -> i128 {
    5 * pow10(c.exponent())
}

pub fn partners(prefix: &str, n: usize, since: Instant) -> Vec<PartnerDef> {
    (0..n)
        .filter_map(|i| {
            let code = CURRENCIES[i % CURRENCIES.len()];
            let currency = Currency::from_code(code)?;
            let id = format!("{prefix}-{i:06}");
            let e = currency.exponent();
            let json = format!(
                r#"{{"id":"{id}","settlement_currency":"{code}","since":"{since}","cycle":{{"every":"daily","cutoff":"00:00","tz":"UTC","grace":"PT1H"}},"contracts":[{{"effective_from":"{since}","shares":[{{"party":"partner","percent":"{PARTNER_PERCENT}"}},{{"party":"platform","percent":"{platform}"}}],"fees":[{{"kind":"percent","bps":"150"}},{{"kind":"fixed","amount":"{fixed}"}}],"chargeback_fee":"{cb}"}}]}}"#,
                since = since.to_rfc3339(),
                platform = 100 - PARTNER_PERCENT,
                fixed = minor(fixed_fee(currency), e),
                cb = minor(chargeback_fee(currency), e),
            );
            Some(PartnerDef { id, currency, json })
        })
        .collect()
}

pub fn rates(at: Instant) -> Vec<wire::FxRate> {
    RATES
        .iter()
        .map(|(b, q, r)| wire::FxRate {
            base: b.to_string(),
            quote: q.to_string(),
            rate: r.to_string(),
            at: at.to_rfc3339(),
            source: Some("settle-loadtest".into()),
        })
        .collect()
}

/// Picks partner indexes: uniform, or Zipf with exponent `s` (rank 1 the hottest).
#[derive(Debug)]
pub struct PartnerPicker {
    cdf: Option<Vec<f64>>,
    n: usize,
}

impl PartnerPicker {
    pub fn new(n: usize, zipf_s: f64) -> PartnerPicker {
        if zipf_s <= 0.0 || n == 0 {
            return PartnerPicker { cdf: None, n };
        }
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(zipf_s);
            cdf.push(total);
        }
        for v in &mut cdf {
            *v /= total;
        }
        PartnerPicker { cdf: Some(cdf), n }
    }

    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        match &self.cdf {
            None => rng.gen_range(0..self.n.max(1)),
            Some(cdf) => {
                let u: f64 = rng.gen();
                cdf.partition_point(|&c| c < u).min(self.n.saturating_sub(1))
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Reversible {
    id: String,
    currency: Currency,
    /// What is left to reverse, in minor units of the sale currency.
    remaining: i128,
}

#[derive(Debug, Default)]
struct PartnerState {
    reversible: Vec<Reversible>,
    /// Lower bound of payable (minor units of S) that no interleaving can undercut.
    budget: i128,
}

/// What the generator needs to remember about an issued transaction until its result arrives.
#[derive(Clone, Debug)]
pub struct Issued {
    pub partner: usize,
    pub tx: wire::Transaction,
}

/// The shared generator state. One lock for all workers: generating is cheap next to a round trip.
#[derive(Debug)]
pub struct Generator {
    partners: Vec<PartnerDef>,
    state: Vec<PartnerState>,
    picker: PartnerPicker,
    rng: ChaCha8Rng,
    run: String,
    counter: u64,
}

impl Generator {
    pub fn new(partners: Vec<PartnerDef>, zipf_s: f64, seed: u64, run: String) -> Generator {
        let picker = PartnerPicker::new(partners.len(), zipf_s);
        let state = partners.iter().map(|_| PartnerState::default()).collect();
        Generator { partners, state, picker, rng: ChaCha8Rng::seed_from_u64(seed), run, counter: 0 }
    }

    fn next_id(&mut self) -> String {
        self.counter += 1;
        format!("{}-{}", self.run, self.counter)
    }

    /// A batch of `n` transactions occurring at `now`.
    pub fn batch(&mut self, n: usize, now: Instant) -> Vec<Issued> {
        (0..n).map(|_| self.one(now)).collect()
    }

    fn one(&mut self, now: Instant) -> Issued {
        let p = self.picker.pick(&mut self.rng);
        let roll = self.rng.gen_range(0..100u32);
        let occurred_at = now.to_rfc3339();
        if roll < REFUND_PERCENT + CHARGEBACK_PERCENT {
            let chargeback = roll >= REFUND_PERCENT;
            if let Some(tx) = self.reversal(p, chargeback, &occurred_at) {
                return Issued { partner: p, tx };
            }
        } else if roll < REFUND_PERCENT + CHARGEBACK_PERCENT + PAYOUT_PERCENT {
            if let Some(tx) = self.payout(p, &occurred_at) {
                return Issued { partner: p, tx };
            }
        }
        let tx = self.sale(p, &occurred_at);
        Issued { partner: p, tx }
    }

    fn sale(&mut self, p: usize, occurred_at: &str) -> wire::Transaction {
        let s = self.partners[p].currency;
        let currency = if self.rng.gen_range(0..100) < FOREIGN_SALE_PERCENT {
            if s.code() == "USD" {
                "EUR"
            } else {
                "USD"
            }
        } else {
            s.code()
        };
        let c = Currency::from_code(currency).unwrap_or(s);
        let major = self.rng.gen_range(SALE_MIN_MAJOR..=SALE_MAX_MAJOR);
        let frac = if c.exponent() > 0 { self.rng.gen_range(0..pow10(c.exponent())) } else { 0 };
        let units = i128::from(major) * pow10(c.exponent()) + frac;
        let id = self.next_id();
        wire::Transaction {
            id,
            partner: Some(self.partners[p].id.clone()),
            kind: wire::TxKind::Sale as i32,
            amount: Some(minor(units, c.exponent())),
            currency: Some(c.code().to_string()),
            occurred_at: occurred_at.to_string(),
            metadata_json: Some(format!(r#"{{"order":"o-{}","channel":"web"}}"#, self.counter)),
            ..Default::default()
        }
    }

    fn reversal(&mut self, p: usize, chargeback: bool, occurred_at: &str) -> Option<wire::Transaction> {
        let s = self.partners[p].currency;
        if chargeback && self.state[p].budget < chargeback_fee(s) {
            return None;
        }
        let len = self.state[p].reversible.len();
        if len == 0 {
            return None;
        }
        let i = self.rng.gen_range(0..len);
        let full = self.rng.gen_bool(0.5);
        let r = &mut self.state[p].reversible[i];
        let amount = if full || r.remaining == 1 { r.remaining } else { self.rng.gen_range(1..r.remaining) };
        r.remaining -= amount;
        let (original, currency) = (r.id.clone(), r.currency);
        if r.remaining == 0 {
            self.state[p].reversible.swap_remove(i);
        }
        if chargeback {
            self.state[p].budget -= chargeback_fee(s);
        }
        let id = self.next_id();
        Some(wire::Transaction {
            id,
            partner: Some(self.partners[p].id.clone()),
            kind: if chargeback { wire::TxKind::Chargeback } else { wire::TxKind::Refund } as i32,
            amount: Some(minor(amount, currency.exponent())),
            currency: Some(currency.code().to_string()),
            occurred_at: occurred_at.to_string(),
            original: Some(original),
            ..Default::default()
        })
    }

    fn payout(&mut self, p: usize, occurred_at: &str) -> Option<wire::Transaction> {
        let s = self.partners[p].currency;
        let budget = self.state[p].budget;
        if budget < 2 {
            return None;
        }
        let amount = self.rng.gen_range(1..=budget / 2);
        self.state[p].budget -= amount;
        let id = self.next_id();
        Some(wire::Transaction {
            id,
            partner: Some(self.partners[p].id.clone()),
            kind: wire::TxKind::Payout as i32,
            amount: Some(minor(amount, s.exponent())),
            currency: Some(s.code().to_string()),
            occurred_at: occurred_at.to_string(),
            ..Default::default()
        })
    }

    /// Learns from an acknowledged result: an applied sale raises the budget (or becomes a
    /// reversal candidate, whose worst case then lowers it).
    pub fn acked(&mut self, issued: &Issued, result: &wire::TxResult) {
        let Some(wire::tx_result::Outcome::Applied(applied)) = &result.outcome else { return };
        if issued.tx.tx_kind() != wire::TxKind::Sale {
            return;
        }
        let s = self.partners[issued.partner].currency;
        let Some(amount_s) = Dec::parse(&applied.amount_s, false).and_then(|d| d.to_minor(s.exponent()))
        else {
            return;
        };
        let sale_currency = issued.tx.currency.as_deref().and_then(Currency::from_code).unwrap_or(s);
        let Some(units) = issued
            .tx
            .amount
            .as_deref()
            .and_then(|a| Dec::parse(a, false))
            .and_then(|d| d.to_minor(sale_currency.exponent()))
        else {
            return;
        };
        let reversible = self.rng.gen_range(0..100) < REVERSIBLE_SALE_PERCENT;
        let state = &mut self.state[issued.partner];
        // Worst case of a sale that may be reversed in full: the fixed fee stays charged, plus a
        // few units of rounding. Otherwise at least half the amount stays with the partner
        // (its share is 80% less 1.5%), minus the fixed fee and rounding.
        let fixed = fixed_fee(s);
        if reversible {
            state.budget -= fixed + 4;
            state.reversible.push(Reversible {
                id: issued.tx.id.clone(),
                currency: sale_currency,
                remaining: units.0,
            });
            if state.reversible.len() > REVERSIBLE_PER_PARTNER {
                // Forgetting a candidate only means it will never be reversed: still safe.
                state.reversible.remove(0);
            }
        } else {
            state.budget += amount_s.0 / 2 - fixed - 2;
        }
    }
}

/// Every acknowledged transaction, in acknowledgement order, with its first result.
///
/// Kept batch by batch: one vector of millions of entries would be copied whole each time it
/// grows, stalling every task waiting for the lock, and those stalls would show up as node
/// latency.
#[derive(Debug, Default)]
pub struct History {
    batches: Vec<Vec<(wire::Transaction, wire::TxResult)>>,
    len: usize,
}

impl History {
    pub fn push_batch(&mut self, batch: Vec<(wire::Transaction, wire::TxResult)>) {
        self.len += batch.len();
        self.batches.push(batch);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &(wire::Transaction, wire::TxResult)> {
        self.batches.iter().flatten()
    }
}
