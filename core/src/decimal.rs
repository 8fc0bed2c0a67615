//! Exact decimals and integer minor units.
//!
//! Amounts are held as integer minor units (`Minor`), and every other decimal of the spec (rates,
//! percents, basis points, tier bounds) as an exact `Dec` (mantissa and power-of-ten scale).
//! All arithmetic is checked: an overflow is `None`, never a wrap or a panic.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest number of decimal digits accepted in one amount or parameter. Keeps every product of
/// the settlement formulas inside `i128` for realistic inputs; anything larger is refused.
pub const MAX_DIGITS: usize = 30;

/// An amount in minor units of some currency (cents for EUR, yen for JPY, fils for BHD).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Minor(pub i128);

impl Minor {
    pub const ZERO: Minor = Minor(0);

    pub fn checked_add(self, other: Minor) -> Option<Minor> {
        self.0.checked_add(other.0).map(Minor)
    }

    pub fn checked_sub(self, other: Minor) -> Option<Minor> {
        self.0.checked_sub(other.0).map(Minor)
    }

    pub fn checked_neg(self) -> Option<Minor> {
        self.0.checked_neg().map(Minor)
    }

    /// Formats with exactly `exponent` decimals; zero is never negative.
    pub fn format(self, exponent: u8) -> String {
        format_scaled(self.0, u32::from(exponent))
    }
}

/// Formats `mantissa * 10^-scale` with exactly `scale` decimals.
pub fn format_scaled(mantissa: i128, scale: u32) -> String {
    let negative = mantissa < 0;
    let digits = mantissa.unsigned_abs().to_string();
    let scale = scale as usize;
    let mut out = String::with_capacity(digits.len() + scale + 3);
    if negative {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(&digits);
        return out;
    }
    if digits.len() <= scale {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// An exact decimal `mantissa * 10^-scale`, normalised so that the mantissa has no trailing zero
/// digit (so equal values have equal representations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dec {
    pub mantissa: i128,
    pub scale: u32,
}

impl Dec {
    pub const ZERO: Dec = Dec { mantissa: 0, scale: 0 };

    pub fn new(mantissa: i128, scale: u32) -> Dec {
        let mut d = Dec { mantissa, scale };
        while d.scale > 0 && d.mantissa % 10 == 0 {
            d.mantissa /= 10;
            d.scale -= 1;
        }
        if d.mantissa == 0 {
            d.scale = 0;
        }
        d
    }

    /// Parses the spec's amount grammar `[-]digits[.digits]` exactly. `allow_sign` says whether
    /// a leading `-` is acceptable. Returns `None` for anything else (`+1`, `1e3`, `.5`, `5.`,
    /// spaces, too many digits).
    pub fn parse(text: &str, allow_sign: bool) -> Option<Dec> {
        let bytes = text.as_bytes();
        let (negative, body) = match bytes.first() {
            Some(b'-') if allow_sign => (true, &bytes[1..]),
            _ => (false, bytes),
        };
        let (int, frac) = match body.iter().position(|&b| b == b'.') {
            Some(dot) => (&body[..dot], &body[dot + 1..]),
            None => (body, &body[body.len()..]),
        };
        let has_dot = int.len() != body.len();
        if int.is_empty() || (has_dot && frac.is_empty()) {
            return None;
        }
        if !int.iter().chain(frac).all(u8::is_ascii_digit) {
            return None;
        }
        // Decimals count by value: trailing zeros of the fraction change nothing ("1.500" is
        // 1.5), so they are dropped before the digit limit is applied.
        let frac = &frac[..frac.iter().rposition(|&b| b != b'0').map_or(0, |i| i + 1)];
        // Leading zeros do not count towards the digit limit either.
        let significant = int.iter().skip_while(|&&b| b == b'0').count() + frac.len();
        if significant > MAX_DIGITS {
            return None;
        }
        let mut mantissa: i128 = 0;
        for &b in int.iter().chain(frac) {
            mantissa = mantissa.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        if negative {
            mantissa = -mantissa;
        }
        let scale = u32::try_from(frac.len()).ok()?;
        Some(Dec::new(mantissa, scale))
    }

    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// The value in units of `10^-exponent`, if it has no more decimals than that.
    pub fn to_minor(self, exponent: u8) -> Option<Minor> {
        let exponent = u32::from(exponent);
        if self.scale > exponent {
            return None;
        }
        let factor = pow10(exponent - self.scale)?;
        self.mantissa.checked_mul(factor).map(Minor)
    }

    /// The mantissa rescaled to `scale` (which must be at least `self.scale`).
    pub fn mantissa_at(self, scale: u32) -> Option<i128> {
        let up = scale.checked_sub(self.scale)?;
        self.mantissa.checked_mul(pow10(up)?)
    }

    pub fn from_decimal(d: rust_decimal::Decimal) -> Dec {
        Dec::new(d.mantissa(), d.scale())
    }

    pub fn to_decimal(self) -> Option<rust_decimal::Decimal> {
        rust_decimal::Decimal::try_from_i128_with_scale(self.mantissa, self.scale).ok()
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_scaled(self.mantissa, self.scale))
    }
}

/// `10^n`, if it fits.
pub fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// `quotient + remainder / den` (with `0 <= remainder < den`) rounded half to even, for any
/// integer type; `None` on overflow.
macro_rules! half_even {
    ($quotient:expr, $remainder:expr, $den:expr) => {{
        let (quotient, remainder, den) = ($quotient, $remainder, $den);
        match remainder.checked_mul(2).map(|twice| twice.cmp(&den)) {
            None => None,
            Some(std::cmp::Ordering::Less) => Some(quotient),
            Some(std::cmp::Ordering::Greater) => quotient.checked_add(1),
            Some(std::cmp::Ordering::Equal) if quotient % 2 == 0 => Some(quotient),
            Some(std::cmp::Ordering::Equal) => quotient.checked_add(1),
        }
    }};
}

/// `quotient + remainder / den` (with `0 <= remainder < den`) rounded half to even.
pub fn round_parts_half_even(quotient: i128, remainder: i128, den: i128) -> Option<i128> {
    half_even!(quotient, remainder, den)
}

/// `num / den` rounded half to even. `den` must be positive.
pub fn round_div_half_even(num: i128, den: i128) -> Option<i128> {
    if den <= 0 {
        return None;
    }
    // 128-bit division is a library call several times slower than the 64-bit instruction, and
    // realistic amounts fit in 64 bits; the result is the same either way.
    // The 64-bit path answers None only on its own overflow; the 128-bit path then decides.
    if let (Ok(num), Ok(den)) = (i64::try_from(num), i64::try_from(den)) {
        if let Some(rounded) = half_even!(num.div_euclid(den), num.rem_euclid(den), den) {
            return Some(i128::from(rounded));
        }
    }
    half_even!(num.div_euclid(den), num.rem_euclid(den), den)
}

/// `a * b / den` rounded half to even, exactly.
pub fn mul_div_half_even(a: i128, b: i128, den: i128) -> Option<i128> {
    round_div_half_even(a.checked_mul(b)?, den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_the_spec_grammar_only() {
        let cases: &[(&str, bool, Option<(i128, u32)>)] = &[
            ("100.00", false, Some((100, 0))),
            ("1.500", false, Some((15, 1))),
            ("0.05", false, Some((5, 2))),
            ("-3.10", true, Some((-31, 1))),
            ("-3.10", false, None),
            ("+3", true, None),
            ("1e3", false, None),
            (".5", false, None),
            ("5.", false, None),
            (" 5", false, None),
            ("5 ", false, None),
            ("", false, None),
            ("-", true, None),
            ("1.2.3", false, None),
            ("0", false, Some((0, 0))),
            ("007.10", false, Some((71, 1))),
            // Trailing zeros of the fraction do not count towards the 30-digit limit.
            ("1.0000000000000000000000000000000000000000", false, Some((1, 0))),
            ("0.000000000000000000000000000000000000", false, Some((0, 0))),
            ("000000000000000000000000000000000000001.5", false, Some((15, 1))),
        ];
        for &(text, signed, expected) in cases {
            let got = Dec::parse(text, signed).map(|d| (d.mantissa, d.scale));
            assert_eq!(got, expected, "{text:?}");
        }
    }

    #[test]
    fn to_minor_counts_decimals_by_value() {
        let d = |s: &str| Dec::parse(s, true).unwrap();
        assert_eq!(d("100.0").to_minor(0), Some(Minor(100)));
        assert_eq!(d("1.500").to_minor(2), Some(Minor(150)));
        assert_eq!(d("1.005").to_minor(2), None);
        assert_eq!(d("1.005").to_minor(3), Some(Minor(1005)));
    }

    #[test]
    fn half_even_rounding_table() {
        let cases: &[(i128, i128, i128)] = &[
            (5, 10, 0),
            (15, 10, 2),
            (25, 10, 2),
            (26, 10, 3),
            (-5, 10, 0),
            (-15, 10, -2),
            (-25, 10, -2),
            (-26, 10, -3),
            (14, 10, 1),
            (1, 3, 0),
            (2, 3, 1),
        ];
        for &(n, d, r) in cases {
            assert_eq!(round_div_half_even(n, d), Some(r), "{n}/{d}");
        }
    }

    #[test]
    fn formatting_pads_and_never_prints_negative_zero() {
        assert_eq!(Minor(-35_60).format(2), "-35.60");
        assert_eq!(Minor(5).format(2), "0.05");
        assert_eq!(Minor(0).format(2), "0.00");
        assert_eq!(Minor(46).format(0), "46");
        assert_eq!(Minor(-1).format(3), "-0.001");
        assert_eq!(Minor(12345).format(4), "1.2345");
    }

    #[test]
    fn overflow_is_none() {
        assert_eq!(mul_div_half_even(i128::MAX, 2, 1), None);
        assert_eq!(Dec::parse("1234567890123456789012345678901", false), None);
    }
}
