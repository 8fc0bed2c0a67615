//! ISO 4217 currencies with a minor unit, as the list stood on 2026-01-01 (funds codes included,
//! such as BOV, CLF and XAD, the Arab Accounting Dinar added by amendment 179 in 2025).
//!
//! Codes without a minor unit (precious metals, XDR, XSU, XUA, test and "no currency" codes) and
//! withdrawn codes (for example HRK, BGN, ANG, ZWL, SLL, CUC, VEF, MRO, STD) are unknown here.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest minor-unit exponent of the list (CLF and UYW: 4).
pub const MAX_EXPONENT: u8 = 4;

/// A currency with its ISO 4217 code and minor-unit exponent.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

impl Currency {
    /// Looks a code up; only upper-case codes of the list are known.
    pub fn from_code(code: &str) -> Option<Currency> {
        let bytes: [u8; 3] = code.as_bytes().try_into().ok()?;
        let index = ISO_4217.binary_search_by(|(c, _)| c.as_bytes().cmp(&bytes[..])).ok()?;
        let (_, exponent) = ISO_4217[index];
        Some(Currency { code: bytes, exponent })
    }

    pub fn code(&self) -> &str {
        // Codes come from the table, which is ASCII.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Number of decimals of the minor unit (2 for EUR, 0 for JPY, 3 for BHD, 4 for CLF).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// ISO 4217 list one on 2026-01-01, codes with a minor unit only, sorted by code.
#[rustfmt::skip]
const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("AOA", 2), ("ARS", 2), ("AUD", 2), ("AWG", 2),
    ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2),
    ("BOB", 2), ("BOV", 2), ("BRL", 2), ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2),
    ("CAD", 2), ("CDF", 2), ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2),
    ("COP", 2), ("COU", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0), ("DKK", 2),
    ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2), ("FKP", 2),
    ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0), ("GTQ", 2), ("GYD", 2),
    ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2), ("IQD", 3),
    ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3), ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2),
    ("KMF", 0), ("KPW", 2), ("KRW", 0), ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2),
    ("LKR", 2), ("LRD", 2), ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2), ("MKD", 2),
    ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2), ("MXN", 2),
    ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2), ("NPR", 2),
    ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2), ("PKR", 2), ("PLN", 2),
    ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2), ("RWF", 0), ("SAR", 2), ("SBD", 2),
    ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2), ("SHP", 2), ("SLE", 2), ("SOS", 2), ("SRD", 2),
    ("SSP", 2), ("STN", 2), ("SVC", 2), ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2),
    ("TND", 3), ("TOP", 2), ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0),
    ("USD", 2), ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2), ("VES", 2),
    ("VND", 0), ("VUV", 0), ("WST", 2), ("XAD", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0), ("XPF", 0),
    ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(ISO_4217.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(ISO_4217.iter().map(|&(_, e)| e).max(), Some(MAX_EXPONENT));
    }

    #[test]
    fn exponents_and_unknown_codes() {
        let cases: &[(&str, Option<u8>)] = &[
            ("USD", Some(2)),
            ("EUR", Some(2)),
            ("GBP", Some(2)),
            ("CHF", Some(2)),
            ("KRW", Some(0)),
            ("JPY", Some(0)),
            ("BHD", Some(3)),
            ("KWD", Some(3)),
            ("CLF", Some(4)),
            ("XAD", Some(2)),
            ("XCG", Some(2)),
            ("ZWG", Some(2)),
            ("BGN", None),
            ("ANG", None),
            ("usd", None),
            ("XAU", None),
            ("XDR", None),
            ("DEM", None),
            ("HRK", None),
            ("US", None),
            ("USDX", None),
            ("", None),
        ];
        for &(code, exponent) in cases {
            assert_eq!(Currency::from_code(code).map(|c| c.exponent()), exponent, "{code}");
        }
    }
}
