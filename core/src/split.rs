//! Largest-remainder allocation: splits an amount in minor units over percent shares so that the
//! parts sum to the amount exactly and the leftover units go, one each, to the largest fractional
//! parts, ties broken by the order of the parties in the contract.

/// The most parties one contract version may name. Splits use fixed-size buffers of this size so
/// the hot path does not allocate.
pub const MAX_PARTIES: usize = 16;

/// Parts of one split, in contract order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    len: usize,
    units: [i128; MAX_PARTIES],
}

impl Parts {
    pub fn as_slice(&self) -> &[i128] {
        &self.units[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> i128 {
        self.as_slice().get(i).copied().unwrap_or(0)
    }
}

/// Splits `amount` (minor units, at least 0) over shares given as mantissas at a common `scale`
/// (percent = mantissa * 10^-scale) that sum to exactly 100. `None` on overflow or bad input.
pub fn largest_remainder(amount: i128, mantissas: &[i128], scale: u32) -> Option<Parts> {
    if amount < 0 || mantissas.is_empty() || mantissas.len() > MAX_PARTIES {
        return None;
    }
    let denominator = 100i128.checked_mul(crate::decimal::pow10(scale)?)?;
    let mut units = [0i128; MAX_PARTIES];
    let mut remainders = [0i128; MAX_PARTIES];
    let mut allocated: i128 = 0;
    for (i, &m) in mantissas.iter().enumerate() {
        (units[i], remainders[i]) = match amount.checked_mul(m) {
            // The 64-bit division is much cheaper than the 128-bit one and gives the same result.
            Some(product) => match (i64::try_from(product), i64::try_from(denominator)) {
                (Ok(p), Ok(d)) => (i128::from(p / d), i128::from(p % d)),
                _ => (product / denominator, product % denominator),
            },
            // A huge amount times a precise percent: exact through a 256-bit product.
            None => crate::decimal::mul_divmod(amount, m, denominator)?,
        };
        allocated = allocated.checked_add(units[i])?;
    }
    let mut leftover = amount.checked_sub(allocated)?;
    // Parts lose less than one unit each, so at most n - 1 units are left over.
    assert!(leftover >= 0 && leftover < mantissas.len() as i128);
    while leftover > 0 {
        // Largest remainder first; on a tie, the earlier party (strict comparison keeps it).
        let mut best: Option<usize> = None;
        for i in 0..mantissas.len() {
            if remainders[i] < 0 {
                continue; // already given a unit
            }
            match best {
                Some(b) if remainders[i] <= remainders[b] => {}
                _ => best = Some(i),
            }
        }
        let winner = best?;
        units[winner] += 1;
        remainders[winner] = -1;
        leftover -= 1;
    }
    Some(Parts { len: mantissas.len(), units })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_splits() {
        // (amount, percents at scale, scale, expected parts)
        let cases: &[(i128, &[i128], u32, &[i128])] = &[
            (9200, &[70, 25, 5], 0, &[6440, 2300, 460]),
            (3, &[25, 25, 25, 25], 0, &[1, 1, 1, 0]),
            (6, &[25, 25, 25, 25], 0, &[2, 2, 1, 1]),
            (7, &[25, 25, 25, 25], 0, &[2, 2, 2, 1]),
            (100, &[333_333, 333_333, 333_334], 4, &[33, 33, 34]),
            (2, &[333_333, 333_333, 333_334], 4, &[1, 0, 1]),
            (1, &[50, 50], 0, &[1, 0]),
            (1709, &[617, 333, 50], 1, &[1055, 569, 85]),
            (913, &[617, 333, 50], 1, &[563, 304, 46]),
            (0, &[50, 50], 0, &[0, 0]),
            // 10^34 - 1 over 66.6667 / 33.3333: the products need more than 128 bits.
            (
                10i128.pow(34) - 1,
                &[666_667, 333_333],
                4,
                // floors ...999.333333 and ...999.666667: the one leftover unit goes to the second.
                &[666_667 * 10i128.pow(28) - 1, 333_333 * 10i128.pow(28)],
            ),
        ];
        for &(amount, m, scale, expected) in cases {
            let parts = largest_remainder(amount, m, scale).unwrap();
            assert_eq!(parts.as_slice(), expected, "{amount} over {m:?}");
        }
    }
}
