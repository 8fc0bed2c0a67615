//! Partner amounts to the spec's amount strings (`[-]digits[.digits]`), by text manipulation only:
//! no floating point, no rounding. Whether the number of decimals fits the currency is the
//! engine's check, not ours.

/// Most minor-unit decimals a mapping may declare (CLF has 4; headroom for odd feeds).
pub const MAX_MINOR_UNITS: u32 = 8;
/// Longest amount text accepted; anything longer is not a money amount.
pub const MAX_AMOUNT_CHARS: usize = 64;

/// How the partner writes numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumberStyle {
    pub decimal_separator: char,
    pub thousands_separator: Option<char>,
    pub minor_units: Option<u32>,
}

/// A parsed amount: its sign and the unsigned canonical digits (`12.34`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Amount {
    pub negative: bool,
    pub digits: String,
}

impl Amount {
    /// The spec's text: a leading `-` for negatives (zero is never negative).
    pub fn to_canonical(&self) -> String {
        if self.negative && !self.is_zero() {
            format!("-{}", self.digits)
        } else {
            self.digits.clone()
        }
    }

    pub fn is_zero(&self) -> bool {
        self.digits.bytes().all(|b| b == b'0' || b == b'.')
    }

    pub fn negated(self) -> Amount {
        Amount { negative: !self.negative, digits: self.digits }
    }
}

fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{a0}' || c == '\u{202f}'
}

/// Reads a partner amount. Accepts a leading `+`/`-`, a trailing `-` (as some bank formats
/// write debits), surrounding spaces, the configured separators, and (with `minor_units`) an
/// integer count of minor units. Returns why not otherwise.
pub fn parse_amount(raw: &str, style: NumberStyle) -> Result<Amount, String> {
    let text = raw.trim_matches(is_space);
    if text.is_empty() {
        return Err("amount is blank".into());
    }
    if text.chars().count() > MAX_AMOUNT_CHARS {
        return Err(format!("amount is longer than {MAX_AMOUNT_CHARS} characters"));
    }
    let (mut negative, mut body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if let Some(rest) = body.strip_suffix('-') {
        if negative {
            return Err(format!("amount {raw:?} has two signs"));
        }
        negative = true;
        body = rest;
    }
    let body = body.trim_matches(is_space);
    let (int_part, frac_part) = match body.split_once(style.decimal_separator) {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let mut int_digits = String::with_capacity(int_part.len());
    for (i, c) in int_part.chars().enumerate() {
        if c.is_ascii_digit() {
            int_digits.push(c);
        } else if Some(c) == style.thousands_separator && i > 0 {
            continue;
        } else {
            return Err(format!("amount {raw:?} is not a number"));
        }
    }
    if int_digits.is_empty() || !grouping_ok(int_part, style.thousands_separator) {
        return Err(format!("amount {raw:?} is not a number"));
    }
    // Zero-padded fields (fixed-width files) carry no meaning in their leading zeros.
    let significant = int_digits.trim_start_matches('0');
    let int_digits = if significant.is_empty() { "0".to_string() } else { significant.to_string() };
    let frac_digits = match frac_part {
        None => None,
        Some(f) if !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()) => Some(f.to_string()),
        Some(_) => return Err(format!("amount {raw:?} is not a number")),
    };
    let digits = match (style.minor_units, frac_digits) {
        (Some(_), Some(_)) => return Err(format!("amount {raw:?} has decimals but is given in minor units")),
        (Some(0), None) | (None, None) => int_digits,
        (Some(units), None) => shift(&int_digits, units),
        (None, Some(frac)) => format!("{int_digits}.{frac}"),
    };
    Ok(Amount { negative, digits })
}

/// Thousands groups, when present, are 1-3 digits then exactly 3 each, so that `12.34` under
/// `.` thousands is refused rather than read as 1234.
fn grouping_ok(int_part: &str, sep: Option<char>) -> bool {
    let Some(sep) = sep else { return true };
    if !int_part.contains(sep) {
        return true;
    }
    let groups: Vec<&str> = int_part.split(sep).collect();
    groups.iter().enumerate().all(|(i, g)| {
        let n = g.chars().count();
        if i == 0 {
            (1..=3).contains(&n)
        } else {
            n == 3
        }
    })
}

/// `12345`, 2 -> `123.45`; `5`, 2 -> `0.05`.
fn shift(int_digits: &str, units: u32) -> String {
    let units = units as usize;
    let padded = if int_digits.len() <= units {
        format!("{}{}", "0".repeat(units + 1 - int_digits.len()), int_digits)
    } else {
        int_digits.to_string()
    };
    let (i, f) = padded.split_at(padded.len() - units);
    format!("{i}.{f}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DOT: NumberStyle =
        NumberStyle { decimal_separator: '.', thousands_separator: None, minor_units: None };
    const EU: NumberStyle =
        NumberStyle { decimal_separator: ',', thousands_separator: Some('.'), minor_units: None };
    const CENTS: NumberStyle =
        NumberStyle { decimal_separator: '.', thousands_separator: None, minor_units: Some(2) };

    fn ok(raw: &str, style: NumberStyle) -> String {
        parse_amount(raw, style).unwrap().to_canonical()
    }

    #[test]
    fn plain_and_signed() {
        assert_eq!(ok("12.34", DOT), "12.34");
        assert_eq!(ok(" +12.34 ", DOT), "12.34");
        assert_eq!(ok("-12.34", DOT), "-12.34");
        assert_eq!(ok("12.34-", DOT), "-12.34");
        assert_eq!(ok("100", DOT), "100");
        assert_eq!(ok("-0.00", DOT), "0.00");
    }

    #[test]
    fn european_separators() {
        assert_eq!(ok("1.234,56", EU), "1234.56");
        assert_eq!(ok("-1.234.567,5", EU), "-1234567.5");
        assert_eq!(ok("0,99", EU), "0.99");
        assert!(parse_amount(".234,56", EU).is_err());
        assert!(parse_amount("1.,5", EU).is_err());
        assert!(parse_amount("1,2,3", EU).is_err());
        assert!(parse_amount("12.34", EU).is_err(), "a misplaced group is not a thousands separator");
        assert!(parse_amount("1234.567,5", EU).is_err());
    }

    #[test]
    fn minor_units() {
        assert_eq!(ok("12345", CENTS), "123.45");
        assert_eq!(ok("5", CENTS), "0.05");
        assert_eq!(ok("-99", CENTS), "-0.99");
        assert_eq!(ok("0", CENTS), "0.00");
        assert_eq!(ok("000000250000", CENTS), "2500.00");
        assert_eq!(ok("007", DOT), "7");
        assert!(parse_amount("1.5", CENTS).is_err());
    }

    #[test]
    fn rejects_non_numbers() {
        for bad in ["", "  ", "abc", "1e3", ".5", "5.", "--5", "-5-", "1 000", "12.3.4", "٣"] {
            assert!(parse_amount(bad, DOT).is_err(), "{bad:?}");
        }
    }
}
