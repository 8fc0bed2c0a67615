//! Demo data for `settle dev` and load tests: realistic partners and FX rates.

use serde_json::json;
use settle_core::scenario::{parse_partner, parse_rate};
use settle_core::{FxRate, Instant, Partner};

/// `since` of demo partners: recent, so that a fresh demo does not close a year of periods.
pub const DEMO_SINCE: &str = "2026-11-01T00:00:00Z";

const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "JPY"];
const ZONES: [&str; 6] =
    ["Europe/Berlin", "America/New_York", "Europe/London", "Asia/Tokyo", "UTC", "Australia/Sydney"];
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `n` demo partners (`p00000`, `p00001`, ...) with `since` = [`DEMO_SINCE`].
pub fn demo_partners(n: usize) -> Vec<Partner> {
    let since = Instant::parse_rfc3339(DEMO_SINCE).unwrap_or(Instant(0));
    demo_partners_since(n, since)
}

/// Amount `units` of `currency` as a decimal string (JPY has no minor unit).
fn money(currency: &str, units: u32, cents: u32) -> String {
    if currency == "JPY" {
        // About 150 yen to the euro.
        format!("{}", (units * 100 + cents) * 150 / 100)
    } else {
        format!("{units}.{cents:02}")
    }
}

/// `n` demo partners: settlement currencies EUR/USD/GBP/JPY; daily, weekly and monthly cycles
/// in several time zones; three parties (partner, platform, an affiliate); a percent fee with
/// min and max, a fixed fee, a chargeback fee, tiered and minimum period fees.
pub fn demo_partners_since(n: usize, since: Instant) -> Vec<Partner> {
    let since_text = since.to_rfc3339();
    (0..n)
        .filter_map(|i| {
            let currency = CURRENCIES[i % CURRENCIES.len()];
            let tz = ZONES[i % ZONES.len()];
            let cycle = match i % 3 {
                0 => json!({"every": "daily", "cutoff": "00:00", "tz": tz, "grace": "PT1H"}),
                1 => json!({"every": "weekly", "weekday": WEEKDAYS[i % 7], "cutoff": "06:00", "tz": tz,
                            "grace": "PT2H"}),
                _ => json!({"every": "monthly", "day": 1 + (i % 28), "cutoff": "00:00", "tz": tz,
                            "grace": "P1D"}),
            };
            let affiliate_percent = 2 + (i % 4); // 2..=5 %
            let platform_percent = 20 + (i % 3) * 5;
            let partner_percent = 100 - affiliate_percent - platform_percent;
            let value = json!({
                "id": format!("p{i:05}"),
                "settlement_currency": currency,
                "since": since_text,
                "cycle": cycle,
                "contracts": [{
                    "effective_from": since_text,
                    "shares": [
                        {"party": "partner", "percent": partner_percent.to_string()},
                        {"party": "platform", "percent": platform_percent.to_string()},
                        {"party": format!("affiliate:a{}", i % 17), "percent": affiliate_percent.to_string()}
                    ],
                    "fees": [
                        {"kind": "percent", "bps": format!("{}", 100 + (i % 5) * 25),
                         "min": money(currency, 0, 10), "max": money(currency, 50, 0)},
                        {"kind": "fixed", "amount": money(currency, 0, 5 + (i % 3) as u32 * 10)}
                    ],
                    "chargeback_fee": money(currency, 15, 0),
                    "period_fees": [
                        {"kind": "tiered", "tiers": [
                            {"up_to": money(currency, 10_000, 0), "bps": "50"},
                            {"up_to": money(currency, 100_000, 0), "bps": "25"},
                            {"up_to": null, "bps": "10"}]},
                        {"kind": "minimum", "amount": money(currency, 25, 0)}
                    ]
                }]
            });
            parse_partner(&value, "demo").ok()
        })
        .collect()
}

/// Rates between every pair of the demo currencies, published at `at`.
pub fn demo_rates(at: Instant) -> Vec<FxRate> {
    let at_text = at.to_rfc3339();
    let pairs = [
        ("USD", "EUR", "0.92"),
        ("GBP", "EUR", "1.17"),
        ("JPY", "EUR", "0.0062"),
        ("GBP", "USD", "1.27"),
        ("USD", "JPY", "149.5"),
        ("GBP", "JPY", "189.9"),
    ];
    pairs
        .iter()
        .filter_map(|(base, quote, rate)| {
            let value = json!({"base": base, "quote": quote, "rate": rate, "at": at_text, "source": "demo"});
            parse_rate(&value, "demo").ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_data_is_complete_and_valid() {
        let partners = demo_partners(24);
        assert_eq!(partners.len(), 24, "every demo partner must parse");
        let currencies: std::collections::BTreeSet<&str> =
            partners.iter().map(|p| p.currency.code()).collect();
        assert_eq!(currencies.len(), 4);
        for p in &partners {
            let v = &p.contract.versions()[0];
            assert_eq!(v.shares.len(), 3);
            assert_eq!(v.fees.len(), 2);
            assert!(v.chargeback_fee.is_some());
            assert_eq!(v.period_fees.len(), 2);
        }
        let at = Instant::parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
        assert_eq!(demo_rates(at).len(), 6);
    }
}
