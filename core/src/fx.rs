//! The FX table: rates per currency pair over time, and the conversion of a sale into the
//! settlement currency (direct rate first, then the inverse one; no cross rates).

use crate::currency::Currency;
use crate::decimal::{pow10, round_div_half_even, Dec, Minor};
use crate::time::{Instant, Span};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A published rate: one unit of `base` is worth `rate` units of `quote` from `at` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxRate {
    pub base: Currency,
    pub quote: Currency,
    pub rate: Dec,
    pub at: Instant,
    /// Who published it (a provider name); recorded with every conversion that uses it.
    pub source: Option<String>,
}

/// The rate a conversion used, recorded with the transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateUsed {
    pub base: Currency,
    pub quote: Currency,
    pub rate: Dec,
    pub at: Instant,
    /// True when the rate was quoted S -> currency and the amount was divided by it.
    pub inverse: bool,
    pub source: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FxError {
    Unavailable,
    Stale,
    Overflow,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxTable {
    /// Per (base, quote): rates ordered by `at`, publication order kept for equal instants.
    pairs: BTreeMap<(Currency, Currency), Vec<FxRate>>,
}

impl FxTable {
    pub fn new() -> FxTable {
        FxTable::default()
    }

    /// Adds a rate. For two rates of one pair at the same instant, the later added wins.
    pub fn insert(&mut self, rate: FxRate) {
        let list = self.pairs.entry((rate.base, rate.quote)).or_default();
        let at = list.partition_point(|r| r.at <= rate.at);
        list.insert(at, rate);
    }

    pub fn len(&self) -> usize {
        self.pairs.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn rates(&self) -> impl Iterator<Item = &FxRate> {
        self.pairs.values().flatten()
    }

    /// The newest rate of each pair (greatest `at`; the later published for equal instants), by
    /// pair. Staleness alerts watch these.
    pub fn newest(&self) -> impl Iterator<Item = &FxRate> {
        self.pairs.values().filter_map(|list| list.last())
    }

    fn latest(&self, base: Currency, quote: Currency, t: Instant) -> Option<&FxRate> {
        let list = self.pairs.get(&(base, quote))?;
        let n = list.partition_point(|r| r.at <= t);
        n.checked_sub(1).and_then(|i| list.get(i))
    }

    /// Converts `amount` (minor units of `from`) into `to` at `occurred_at`.
    pub fn convert(
        &self,
        amount: Minor,
        from: Currency,
        to: Currency,
        occurred_at: Instant,
        max_age: Span,
    ) -> Result<(Minor, Option<RateUsed>), FxError> {
        if from == to {
            return Ok((amount, None));
        }
        let from_exp = u32::from(from.exponent());
        let to_exp = u32::from(to.exponent());
        let (converted, rate, inverse) = if let Some(r) = self.latest(from, to, occurred_at) {
            // A_S = round(A * r): minor_S = A_minor * r_m * 10^to_exp / 10^(from_exp + r_scale)
            let num = amount
                .0
                .checked_mul(r.rate.mantissa)
                .and_then(|x| x.checked_mul(pow10(to_exp)?))
                .ok_or(FxError::Overflow)?;
            let den = pow10(from_exp + r.rate.scale).ok_or(FxError::Overflow)?;
            (round_div_half_even(num, den).ok_or(FxError::Overflow)?, r, false)
        } else if let Some(r) = self.latest(to, from, occurred_at) {
            if r.rate.mantissa <= 0 {
                return Err(FxError::Unavailable);
            }
            // A_S = round(A / r): minor_S = A_minor * 10^(r_scale + to_exp) / (10^from_exp * r_m)
            let num = amount
                .0
                .checked_mul(pow10(r.rate.scale + to_exp).ok_or(FxError::Overflow)?)
                .ok_or(FxError::Overflow)?;
            let den =
                pow10(from_exp).and_then(|p| p.checked_mul(r.rate.mantissa)).ok_or(FxError::Overflow)?;
            (round_div_half_even(num, den).ok_or(FxError::Overflow)?, r, true)
        } else {
            return Err(FxError::Unavailable);
        };
        if occurred_at.since(rate.at) > max_age {
            return Err(FxError::Stale);
        }
        Ok((
            Minor(converted),
            Some(RateUsed {
                base: rate.base,
                quote: rate.quote,
                rate: rate.rate,
                at: rate.at,
                inverse,
                source: rate.source.clone(),
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    fn t(s: &str) -> Instant {
        Instant::parse_rfc3339(s).unwrap()
    }

    fn rate(base: &str, quote: &str, r: &str, at: &str) -> FxRate {
        FxRate {
            base: c(base),
            quote: c(quote),
            rate: Dec::parse(r, false).unwrap(),
            at: t(at),
            source: None,
        }
    }

    #[test]
    fn newest_is_the_latest_instant_of_each_pair() {
        let mut fx = FxTable::new();
        fx.insert(rate("JPY", "EUR", "0.007", "2026-05-04T12:00:00Z"));
        fx.insert(rate("JPY", "EUR", "0.006211", "2026-05-04T06:00:00Z"));
        fx.insert(rate("EUR", "GBP", "0.85", "2026-01-01T00:00:00Z"));
        fx.insert(rate("EUR", "GBP", "0.86", "2026-01-01T00:00:00Z"));
        let newest: Vec<(String, String)> = fx
            .newest()
            .map(|r| (format!("{}/{}", r.base.code(), r.quote.code()), r.rate.to_string()))
            .collect();
        assert_eq!(newest, vec![("EUR/GBP".into(), "0.86".into()), ("JPY/EUR".into(), "0.007".into())]);
    }

    #[test]
    fn conversions_table() {
        let mut fx = FxTable::new();
        fx.insert(rate("USD", "EUR", "0.92", "2026-01-02T00:00:00Z"));
        fx.insert(rate("JPY", "EUR", "0.006211", "2026-05-04T06:00:00Z"));
        fx.insert(rate("JPY", "EUR", "0.007", "2026-05-04T12:00:00Z"));
        fx.insert(rate("EUR", "GBP", "0.85", "2026-01-01T00:00:00Z"));
        fx.insert(rate("EUR", "GBP", "0.86", "2026-01-01T00:00:00Z")); // same instant: later wins
        let day = Span::from_hours(24);
        let cases: &[(i128, &str, &str, &str, Result<i128, FxError>)] = &[
            (10000, "USD", "EUR", "2026-01-02T10:00:00Z", Ok(9200)),
            (2751, "JPY", "EUR", "2026-05-04T08:00:00Z", Ok(1709)),
            (2751, "JPY", "EUR", "2026-05-04T12:00:00Z", Ok(1926)),
            // inverse: 100.00 GBP / 0.86 = 116.279.. EUR
            (10000, "GBP", "EUR", "2026-01-01T12:00:00Z", Ok(11628)),
            (10000, "USD", "EUR", "2026-01-01T10:00:00Z", Err(FxError::Unavailable)),
            (10000, "USD", "EUR", "2026-01-03T00:00:01Z", Err(FxError::Stale)),
            (10000, "USD", "EUR", "2026-01-03T00:00:00Z", Ok(9200)),
            (10000, "CHF", "EUR", "2026-01-03T00:00:00Z", Err(FxError::Unavailable)),
            (500, "EUR", "EUR", "2026-01-03T00:00:00Z", Ok(500)),
        ];
        for &(amount, from, to, at, expected) in cases {
            let got = fx.convert(Minor(amount), c(from), c(to), t(at), day).map(|(m, _)| m.0);
            assert_eq!(got, expected, "{amount} {from}->{to} at {at}");
        }
    }
}
