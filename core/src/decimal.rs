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

/// Largest magnitude, in minor units, of any balance an account keeps and of any figure of a
/// period (gross sales, a party's share, a fee total, ...). A transaction that would take one
/// beyond it is `invalid_amount`. It leaves room (i128 reaches 1.7 * 10^38) for the few sums a
/// statement adds up and for the period fees posted at close, so that closing a period, which
/// cannot be refused, never overflows.
pub const MAX_FIGURE: i128 = 10i128.pow(34);

/// Largest tiered fee of one period, in minor units. A contract whose tiered schedules could
/// charge more, or could not be computed exactly in 128 bits, for a period volume of
/// [`MAX_FIGURE`] is refused when it is registered.
pub const MAX_PERIOD_FEE: i128 = 10i128.pow(36);

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

/// `a * b / den` rounded half to even, exactly. `den` must be positive. The product may exceed
/// 128 bits (a full reversal computes `A_S * c / a` with `A_S` and `c` both large); only the
/// result has to fit.
pub fn mul_div_half_even(a: i128, b: i128, den: i128) -> Option<i128> {
    match a.checked_mul(b) {
        Some(product) => round_div_half_even(product, den),
        None => wide_mul_div_half_even(a, b, den),
    }
}

/// `mul_div_half_even` through a 256-bit product, for products beyond 128 bits. Half-even
/// rounding is symmetric (`round(-x) = -round(x)`), so magnitudes are rounded and the sign put
/// back.
fn wide_mul_div_half_even(a: i128, b: i128, den: i128) -> Option<i128> {
    if den <= 0 {
        return None;
    }
    let negative = (a < 0) != (b < 0);
    let (hi, lo) = mul_u128(a.unsigned_abs(), b.unsigned_abs());
    let (quotient, remainder) = div_u256(hi, lo, den.unsigned_abs())?;
    let magnitude =
        round_parts_half_even(i128::try_from(quotient).ok()?, i128::try_from(remainder).ok()?, den)?;
    if negative {
        magnitude.checked_neg()
    } else {
        Some(magnitude)
    }
}

/// `a * b` divided by `den` (all non-negative, `den` positive): quotient and remainder, exact
/// also when the product exceeds 128 bits; `None` if the quotient does not fit.
pub fn mul_divmod(a: i128, b: i128, den: i128) -> Option<(i128, i128)> {
    if a < 0 || b < 0 || den <= 0 {
        return None;
    }
    if let Some(product) = a.checked_mul(b) {
        return Some((product / den, product % den));
    }
    let (hi, lo) = mul_u128(a.unsigned_abs(), b.unsigned_abs());
    let (quotient, remainder) = div_u256(hi, lo, den.unsigned_abs())?;
    Some((i128::try_from(quotient).ok()?, i128::try_from(remainder).ok()?))
}

/// The full 256-bit product of two `u128`, as (high, low) halves.
fn mul_u128(a: u128, b: u128) -> (u128, u128) {
    const LOW: u128 = u64::MAX as u128;
    let (a_hi, a_lo) = (a >> 64, a & LOW);
    let (b_hi, b_lo) = (b >> 64, b & LOW);
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    // The middle column: each term < 2^128 - 2^65 + 1, and their sum is carried explicitly.
    let (middle, carry_middle) = hi_lo.overflowing_add(lo_hi);
    let (low, carry_low) = lo_lo.overflowing_add(middle << 64);
    let high = hi_hi + (middle >> 64) + (u128::from(carry_middle) << 64) + u128::from(carry_low);
    (high, low)
}

/// `(high * 2^128 + low) / den` and its remainder, if the quotient fits in 128 bits. `den` must
/// be below 2^127 (it comes from a positive `i128`), so the running remainder never overflows.
fn div_u256(high: u128, low: u128, den: u128) -> Option<(u128, u128)> {
    if den == 0 || high >= den {
        return None; // the quotient would need more than 128 bits
    }
    // Binary long division over the low half, starting from the high half's remainder.
    let mut remainder = high;
    let mut quotient: u128 = 0;
    for bit in (0..128).rev() {
        remainder = (remainder << 1) | ((low >> bit) & 1);
        quotient <<= 1;
        if remainder >= den {
            remainder -= den;
            quotient |= 1;
        }
    }
    Some((quotient, remainder))
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
    fn products_beyond_128_bits_divide_exactly() {
        let e30 = 10i128.pow(30);
        let e34 = 10i128.pow(34);
        // A full reversal of a huge sale: A_S * c / a with c = a.
        assert_eq!(mul_div_half_even(e34 - 7, e30 - 1, e30 - 1), Some(e34 - 7));
        // Half of an odd amount: 3 * 10^34 * (10^30 / 2) / 10^30 = 1.5 * 10^34 exactly.
        assert_eq!(mul_div_half_even(3 * e34, e30 / 2, e30), Some(15 * e34 / 10));
        // Ties to even, with signs: (10^34 + 1) * 10^30 / (2 * 10^30) = 5 * 10^33 + 0.5.
        assert_eq!(mul_div_half_even(e34 + 1, e30, 2 * e30), Some(5 * 10i128.pow(33)));
        assert_eq!(mul_div_half_even(e34 + 3, e30, 2 * e30), Some(5 * 10i128.pow(33) + 2));
        assert_eq!(mul_div_half_even(-(e34 + 3), e30, 2 * e30), Some(-(5 * 10i128.pow(33) + 2)));
        assert_eq!(mul_div_half_even(e34 + 3, -e30, 2 * e30), Some(-(5 * 10i128.pow(33) + 2)));
        // The same answers as the 128-bit path where both apply.
        for (a, b, d) in [(12_345i128, 6_789i128, 1_000i128), (-5, 3, 2), (7, 7, 7), (1, 1, 3)] {
            assert_eq!(wide_mul_div_half_even(a, b, d), round_div_half_even(a * b, d), "{a}*{b}/{d}");
        }
        // A quotient beyond 128 bits is still None.
        assert_eq!(mul_div_half_even(i128::MAX, i128::MAX, 3), None);
        let (hi, lo) = mul_u128(u128::MAX, u128::MAX);
        assert_eq!((hi, lo), (u128::MAX - 1, 1));
    }

    #[test]
    fn overflow_is_none() {
        assert_eq!(mul_div_half_even(i128::MAX, 2, 1), None);
        assert_eq!(Dec::parse("1234567890123456789012345678901", false), None);
    }
}
