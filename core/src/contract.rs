//! Contracts: versions with shares, sale fees, the chargeback fee and period fees, and the choice
//! of the version in force at an instant.

use crate::currency::{Currency, MAX_EXPONENT};
use crate::decimal::{
    mul_div_half_even, pow10, round_parts_half_even, Dec, Minor, MAX_FIGURE, MAX_PERIOD_FEE,
};
use crate::split::{largest_remainder, Parts, MAX_PARTIES};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The party that is the partner itself: its part goes to the partner's payable.
pub const PARTNER_PARTY: &str = "partner";
/// The platform's part is platform revenue.
pub const PLATFORM_PARTY: &str = "platform";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub party: String,
    pub percent: Dec,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaleFee {
    /// `round(A_S * bps / 10000)`, clamped to `min` and `max` (minor units of S).
    Percent { bps: Dec, min: Option<Minor>, max: Option<Minor> },
    /// A fixed amount in S per sale.
    Fixed { amount: Minor },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Upper bound in units of S (not minor units); `None` for the last, unbounded tier.
    pub up_to: Option<Dec>,
    pub bps: Dec,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeriodFee {
    /// Marginal tiers over the period's net volume.
    Tiered { tiers: Vec<Tier> },
    /// Tops the period's net fees up to `amount`.
    Minimum { amount: Minor },
}

/// One version of a partner's contract. Build with [`ContractVersion::new`], which validates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractVersion {
    pub effective_from: Instant,
    pub shares: Vec<Share>,
    pub fees: Vec<SaleFee>,
    pub chargeback_fee: Option<Minor>,
    pub period_fees: Vec<PeriodFee>,
    /// Share percents as mantissas at `share_scale`, in contract order.
    share_mantissas: Vec<i128>,
    share_scale: u32,
}

/// A contract that cannot be used; the field names the offending part.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ContractError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ContractError {
    ContractError { field: field.into(), message: message.into() }
}

impl ContractVersion {
    pub fn new(
        effective_from: Instant,
        shares: Vec<Share>,
        fees: Vec<SaleFee>,
        chargeback_fee: Option<Minor>,
        period_fees: Vec<PeriodFee>,
    ) -> Result<ContractVersion, ContractError> {
        if shares.is_empty() {
            return Err(invalid("shares", "at least one party is required"));
        }
        if shares.len() > MAX_PARTIES {
            return Err(invalid("shares", format!("at most {MAX_PARTIES} parties")));
        }
        for (i, share) in shares.iter().enumerate() {
            if share.party.is_empty() {
                return Err(invalid(format!("shares[{i}].party"), "must not be empty"));
            }
            if shares[..i].iter().any(|s| s.party == share.party) {
                return Err(invalid(
                    format!("shares[{i}].party"),
                    format!("party {:?} is listed twice", share.party),
                ));
            }
            if share.percent.is_negative() {
                return Err(invalid(format!("shares[{i}].percent"), "must not be negative"));
            }
        }
        let share_scale = shares.iter().map(|s| s.percent.scale).max().unwrap_or(0);
        let share_mantissas = shares
            .iter()
            .map(|s| s.percent.mantissa_at(share_scale))
            .collect::<Option<Vec<i128>>>()
            .ok_or_else(|| invalid("shares", "percents are too precise"))?;
        let hundred = pow10(share_scale)
            .and_then(|p| p.checked_mul(100))
            .ok_or_else(|| invalid("shares", "percents are too precise"))?;
        let sum = share_mantissas.iter().try_fold(0i128, |a, &m| a.checked_add(m));
        if sum != Some(hundred) {
            let total = sum.map(|s| Dec::new(s, share_scale).to_string()).unwrap_or_default();
            return Err(invalid("shares", format!("percents sum to {total}, not exactly 100")));
        }
        for (i, fee) in fees.iter().enumerate() {
            match fee {
                SaleFee::Percent { bps, min, max } => {
                    if bps.is_negative() {
                        return Err(invalid(format!("fees[{i}].bps"), "must not be negative"));
                    }
                    if let (Some(lo), Some(hi)) = (min, max) {
                        if lo > hi {
                            return Err(invalid(format!("fees[{i}].min"), "is above max"));
                        }
                    }
                    if min.is_some_and(|m| m.0 < 0) || max.is_some_and(|m| m.0 < 0) {
                        return Err(invalid(format!("fees[{i}]"), "min and max must not be negative"));
                    }
                }
                SaleFee::Fixed { amount } => {
                    if amount.0 < 0 {
                        return Err(invalid(format!("fees[{i}].amount"), "must not be negative"));
                    }
                }
            }
        }
        if chargeback_fee.is_some_and(|f| f.0 < 0) {
            return Err(invalid("chargeback_fee", "must not be negative"));
        }
        let mut minimums = 0;
        for (i, fee) in period_fees.iter().enumerate() {
            match fee {
                PeriodFee::Minimum { amount } => {
                    minimums += 1;
                    if minimums > 1 {
                        return Err(invalid(format!("period_fees[{i}]"), "at most one minimum fee"));
                    }
                    if amount.0 < 0 {
                        return Err(invalid(format!("period_fees[{i}].amount"), "must not be negative"));
                    }
                }
                PeriodFee::Tiered { tiers } => validate_tiers(tiers, i)?,
            }
        }
        // The tiered fee grows with the volume, and so does every intermediate value of its
        // exact computation: if it computes within bounds at the largest volume a period can
        // have, it does at every volume, and a close can never fail.
        for (i, fee) in period_fees.iter().enumerate() {
            if let PeriodFee::Tiered { tiers } = fee {
                let fits = (0..=MAX_EXPONENT)
                    .all(|e| tiered(tiers, Minor(MAX_FIGURE), e).is_some_and(|f| f <= MAX_PERIOD_FEE));
                if !fits {
                    return Err(invalid(
                        format!("period_fees[{i}].tiers"),
                        "bounds or bps too large or too precise to compute the fee exactly",
                    ));
                }
            }
        }
        Ok(ContractVersion {
            effective_from,
            shares,
            fees,
            chargeback_fee,
            period_fees,
            share_mantissas,
            share_scale,
        })
    }

    /// Share percents as mantissas at one common scale, in contract order, and that scale.
    pub fn share_mantissas(&self) -> (&[i128], u32) {
        (&self.share_mantissas, self.share_scale)
    }

    /// Largest-remainder split of `amount` (minor units of S) over this version's shares.
    pub fn split(&self, amount: Minor) -> Option<Parts> {
        largest_remainder(amount.0, &self.share_mantissas, self.share_scale)
    }

    /// The percent fees (all together, each clamped) and the fixed fees of a sale of `amount_s`.
    pub fn sale_fees(&self, amount_s: Minor) -> Option<(Minor, Minor)> {
        let mut percent: i128 = 0;
        let mut fixed: i128 = 0;
        for fee in &self.fees {
            match fee {
                SaleFee::Percent { bps, min, max } => {
                    let den = pow10(bps.scale)?.checked_mul(10_000)?;
                    let mut f = mul_div_half_even(amount_s.0, bps.mantissa, den)?;
                    if let Some(lo) = min {
                        f = f.max(lo.0);
                    }
                    if let Some(hi) = max {
                        f = f.min(hi.0);
                    }
                    percent = percent.checked_add(f)?;
                }
                SaleFee::Fixed { amount } => fixed = fixed.checked_add(amount.0)?,
            }
        }
        Some((Minor(percent), Minor(fixed)))
    }

    /// The tiered fee (all tiered schedules summed) on a period's net volume `basis` (minor units
    /// of S, at least 0).
    pub fn tiered_fee(&self, basis: Minor, currency: Currency) -> Option<Minor> {
        let mut total: i128 = 0;
        for fee in &self.period_fees {
            if let PeriodFee::Tiered { tiers } = fee {
                total = total.checked_add(tiered(tiers, basis, currency.exponent())?)?;
            }
        }
        Some(Minor(total))
    }

    pub fn minimum_fee(&self) -> Option<Minor> {
        self.period_fees.iter().find_map(|f| match f {
            PeriodFee::Minimum { amount } => Some(*amount),
            PeriodFee::Tiered { .. } => None,
        })
    }
}

fn validate_tiers(tiers: &[Tier], fee_index: usize) -> Result<(), ContractError> {
    let field = |j: usize, name: &str| format!("period_fees[{fee_index}].tiers[{j}].{name}");
    if tiers.is_empty() {
        return Err(invalid(format!("period_fees[{fee_index}].tiers"), "at least one tier"));
    }
    let mut previous: Option<Dec> = None;
    for (j, tier) in tiers.iter().enumerate() {
        if tier.bps.is_negative() {
            return Err(invalid(field(j, "bps"), "must not be negative"));
        }
        let last = j + 1 == tiers.len();
        match (tier.up_to, last) {
            (None, true) => {}
            (None, false) => return Err(invalid(field(j, "up_to"), "only the last tier is unbounded")),
            (Some(_), true) => {
                return Err(invalid(field(j, "up_to"), "the last tier must be unbounded (null)"))
            }
            (Some(bound), false) => {
                if bound.mantissa <= 0 {
                    return Err(invalid(field(j, "up_to"), "must be positive"));
                }
                if let Some(prev) = previous {
                    if compare(bound, prev) != Some(std::cmp::Ordering::Greater) {
                        return Err(invalid(field(j, "up_to"), "bounds must increase"));
                    }
                }
                previous = Some(bound);
            }
        }
    }
    Ok(())
}

fn compare(a: Dec, b: Dec) -> Option<std::cmp::Ordering> {
    let scale = a.scale.max(b.scale);
    Some(a.mantissa_at(scale)?.cmp(&b.mantissa_at(scale)?))
}

/// `round(sum over tiers of portion * bps / 10000)`, exactly, on a common denominator.
fn tiered(tiers: &[Tier], basis: Minor, exponent: u8) -> Option<i128> {
    let exponent = u32::from(exponent);
    // Work in units of 10^-(exponent + extra) so every bound is an integer.
    let bound_scale = tiers.iter().filter_map(|t| t.up_to.map(|u| u.scale)).max().unwrap_or(0);
    let extra = bound_scale.saturating_sub(exponent);
    let unit_scale = exponent + extra;
    let bps_scale = tiers.iter().map(|t| t.bps.scale).max().unwrap_or(0);
    let basis = basis.0.max(0).checked_mul(pow10(extra)?)?;
    let denominator = pow10(bps_scale)?.checked_mul(10_000)?.checked_mul(pow10(extra)?)?;
    // fee = round(sum(portion * bps) / D). Each portion is split as a * D + c so that the large
    // part contributes a * bps whole units and only c * bps (< D * bps) is summed as a fraction:
    // exact, and free of overflow for any fee that itself fits.
    let mut whole: i128 = 0;
    let mut fraction: i128 = 0;
    let mut lower: i128 = 0;
    for tier in tiers {
        let upper = match tier.up_to {
            Some(bound) => bound.mantissa_at(unit_scale)?,
            None => i128::MAX,
        };
        let portion = basis.min(upper) - lower;
        if portion > 0 {
            let bps = tier.bps.mantissa_at(bps_scale)?;
            whole = whole.checked_add((portion / denominator).checked_mul(bps)?)?;
            fraction = fraction.checked_add((portion % denominator).checked_mul(bps)?)?;
        }
        if basis <= upper {
            break;
        }
        lower = upper;
    }
    let integral = whole.checked_add(fraction / denominator)?;
    round_parts_half_even(integral, fraction % denominator, denominator)
}

/// All versions of a partner's contract. Versions keep their registration index for ever (sales
/// refer to the version they were priced with); the in-force lookup uses an index ordered by
/// `effective_from`, stable so that the later registered wins for equal instants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    versions: Vec<ContractVersion>,
    by_time: Vec<usize>,
}

impl Contract {
    pub fn new(versions: Vec<ContractVersion>) -> Result<Contract, ContractError> {
        if versions.is_empty() {
            return Err(invalid("contracts", "a partner needs at least one contract version"));
        }
        let mut contract = Contract { versions: Vec::new(), by_time: Vec::new() };
        for v in versions {
            contract.push(v);
        }
        Ok(contract)
    }

    /// All versions in registration order.
    pub fn versions(&self) -> &[ContractVersion] {
        &self.versions
    }

    /// Adds a version and returns its index.
    pub fn push(&mut self, version: ContractVersion) -> usize {
        let index = self.versions.len();
        let versions = &self.versions;
        let at = self.by_time.partition_point(|&i| versions[i].effective_from <= version.effective_from);
        self.by_time.insert(at, index);
        self.versions.push(version);
        index
    }

    /// Index of the version in force at `t`: the latest `effective_from <= t`; before the first,
    /// the earliest. On equal instants the later registered wins.
    pub fn index_in_force(&self, t: Instant) -> usize {
        // Most partners have one version; answering without touching the time index saves a
        // cache miss on every transaction.
        if self.versions.len() == 1 {
            return 0;
        }
        let versions = &self.versions;
        let after = self.by_time.partition_point(|&i| versions[i].effective_from <= t);
        let position = if after > 0 {
            after - 1
        } else {
            let first = self.by_time.first().map(|&i| versions[i].effective_from);
            self.by_time.partition_point(|&i| Some(versions[i].effective_from) == first).saturating_sub(1)
        };
        self.by_time.get(position).copied().unwrap_or(0)
    }

    pub fn in_force(&self, t: Instant) -> &ContractVersion {
        &self.versions[self.index_in_force(t)]
    }

    pub fn version(&self, index: usize) -> Option<&ContractVersion> {
        self.versions.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Dec {
        Dec::parse(s, true).unwrap()
    }

    fn version(from: &str, shares: &[(&str, &str)]) -> ContractVersion {
        ContractVersion::new(
            Instant::parse_rfc3339(from).unwrap(),
            shares.iter().map(|(p, x)| Share { party: p.to_string(), percent: d(x) }).collect(),
            vec![],
            None,
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn shares_must_sum_to_exactly_100_and_be_unique() {
        let t = Instant::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let mk = |shares: &[(&str, &str)]| {
            ContractVersion::new(
                t,
                shares.iter().map(|(p, x)| Share { party: p.to_string(), percent: d(x) }).collect(),
                vec![],
                None,
                vec![],
            )
        };
        assert!(mk(&[("partner", "70"), ("platform", "30.000")]).is_ok());
        assert!(mk(&[("partner", "70"), ("platform", "29.99")]).is_err());
        assert!(mk(&[("partner", "50"), ("partner", "50")]).is_err());
        assert!(mk(&[]).is_err());
    }

    #[test]
    fn percent_fee_clamps_and_rounds_half_even() {
        let t = Instant::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let v = ContractVersion::new(
            t,
            vec![Share { party: "partner".into(), percent: d("100") }],
            vec![
                SaleFee::Percent { bps: d("150"), min: Some(Minor(10)), max: Some(Minor(5000)) },
                SaleFee::Fixed { amount: Minor(5) },
            ],
            None,
            vec![],
        )
        .unwrap();
        let cases: &[(i128, i128, i128)] = &[
            (9200, 138, 5),       // 92.00 * 1.5% = 1.38
            (100, 10, 5),         // 0.015 -> 0.02 -> min 0.10
            (1_000_000, 5000, 5), // 150.00 -> max 50.00
            (300, 10, 5),         // 0.045 -> 0.04 -> min 0.10
            (1_100, 16, 5),       // 0.165 -> 0.16 (half even)
        ];
        for &(amount, percent, fixed) in cases {
            assert_eq!(v.sale_fees(Minor(amount)), Some((Minor(percent), Minor(fixed))), "{amount}");
        }
    }

    #[test]
    fn marginal_tiers() {
        let t = Instant::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let eur = Currency::from_code("EUR").unwrap();
        let v = ContractVersion::new(
            t,
            vec![Share { party: "partner".into(), percent: d("100") }],
            vec![],
            None,
            vec![PeriodFee::Tiered {
                tiers: vec![
                    Tier { up_to: Some(d("10000")), bps: d("50") },
                    Tier { up_to: None, bps: d("25") },
                ],
            }],
        )
        .unwrap();
        let cases: &[(i128, i128)] = &[
            (9200, 46),        // 92.00 * 0.5%
            (1_000_000, 5000), // 10000.00 * 0.5% = 50.00
            (1_500_000, 6250), // 50.00 + 5000 * 0.25% = 62.50
            (0, 0),
            (1, 0), // 0.00005 -> 0.00
        ];
        for &(basis, fee) in cases {
            assert_eq!(v.tiered_fee(Minor(basis), eur), Some(Minor(fee)), "{basis}");
        }
    }

    #[test]
    fn tiered_fee_rounds_half_even_and_does_not_overflow() {
        let t = Instant::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let eur = Currency::from_code("EUR").unwrap();
        let make = |bps: &str| {
            ContractVersion::new(
                t,
                vec![Share { party: "partner".into(), percent: d("100") }],
                vec![],
                None,
                vec![PeriodFee::Tiered { tiers: vec![Tier { up_to: None, bps: d(bps) }] }],
            )
            .unwrap()
        };
        let cases: &[(&str, i128, i128)] = &[
            ("50", 100, 0), // 0.5 minor unit: to even (0)
            ("50", 300, 2), // 1.5: to even (2)
            ("50", 500, 2), // 2.5: to even (2)
            ("50", 700, 4), // 3.5: to even (4)
            ("50", 701, 4), // 3.505: up
            // A precise rate on a huge basis: the exact product needs more than 128 bits.
            ("25.0000000001", 10i128.pow(35), 250_000_000_001 * 10i128.pow(21)),
        ];
        for &(bps, basis, fee) in cases {
            assert_eq!(make(bps).tiered_fee(Minor(basis), eur), Some(Minor(fee)), "{bps} on {basis}");
        }
    }

    #[test]
    fn version_in_force() {
        let c = Contract::new(vec![
            version("2026-02-01T00:00:00Z", &[("partner", "100")]),
            version("2026-01-01T00:00:00Z", &[("partner", "90"), ("platform", "10")]),
            version("2026-01-01T00:00:00Z", &[("partner", "80"), ("platform", "20")]),
        ])
        .unwrap();
        let at = |s: &str| c.in_force(Instant::parse_rfc3339(s).unwrap()).shares[0].percent;
        assert_eq!(at("2025-06-01T00:00:00Z"), d("80")); // before the first: earliest, later in list
        assert_eq!(at("2026-01-15T00:00:00Z"), d("80"));
        assert_eq!(at("2026-02-01T00:00:00Z"), d("100"));
    }
}
