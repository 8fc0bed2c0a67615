//! Instants and durations. Time is always an input to the core: nothing here reads a clock.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// An instant on the UTC time line, in nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Instant(pub i128);

impl Instant {
    /// Parses RFC 3339 (any offset; converted to UTC).
    pub fn parse_rfc3339(text: &str) -> Option<Instant> {
        let parsed = DateTime::parse_from_rfc3339(text).ok()?;
        Some(Instant::from_chrono(parsed.with_timezone(&Utc)))
    }

    pub fn from_chrono(t: DateTime<Utc>) -> Instant {
        Instant(i128::from(t.timestamp()) * NANOS_PER_SECOND + i128::from(t.timestamp_subsec_nanos()))
    }

    pub fn from_unix_seconds(seconds: i64) -> Instant {
        Instant(i128::from(seconds) * NANOS_PER_SECOND)
    }

    pub fn from_unix_nanos(nanos: i128) -> Instant {
        Instant(nanos)
    }

    /// Converts a system-clock reading taken by the caller (the core never reads a clock itself).
    pub fn from_system_time(t: std::time::SystemTime) -> Instant {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => Instant(i128::try_from(after.as_nanos()).unwrap_or(i128::MAX)),
            Err(before) => Instant(-i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX)),
        }
    }

    /// Midnight UTC of the day containing this instant.
    pub fn start_of_utc_day(self) -> Instant {
        const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;
        Instant(self.0.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY)
    }

    pub fn to_chrono(self) -> Option<DateTime<Utc>> {
        let seconds = i64::try_from(self.0.div_euclid(NANOS_PER_SECOND)).ok()?;
        let nanos = u32::try_from(self.0.rem_euclid(NANOS_PER_SECOND)).ok()?;
        DateTime::from_timestamp(seconds, nanos)
    }

    /// Seconds since the epoch, rounded down.
    pub fn unix_seconds(self) -> i128 {
        self.0.div_euclid(NANOS_PER_SECOND)
    }

    pub fn checked_add(self, span: Span) -> Option<Instant> {
        self.0.checked_add(span.0).map(Instant)
    }

    pub fn checked_sub(self, span: Span) -> Option<Instant> {
        self.0.checked_sub(span.0).map(Instant)
    }

    pub fn saturating_add(self, span: Span) -> Instant {
        Instant(self.0.saturating_add(span.0))
    }

    pub fn saturating_sub(self, span: Span) -> Instant {
        Instant(self.0.saturating_sub(span.0))
    }

    /// `self - earlier` as a span.
    pub fn since(self, earlier: Instant) -> Span {
        Span(self.0.saturating_sub(earlier.0))
    }

    pub const MAX: Instant = Instant(i128::MAX);
    pub const MIN: Instant = Instant(i128::MIN);

    /// RFC 3339 in UTC with `Z`, without fractional seconds when there are none.
    pub fn to_rfc3339(self) -> String {
        match self.to_chrono() {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => format!("@{}ns", self.0),
        }
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A non-negative duration in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Span(pub i128);

impl Span {
    pub const ZERO: Span = Span(0);

    pub fn from_seconds(seconds: i64) -> Span {
        Span(i128::from(seconds) * NANOS_PER_SECOND)
    }

    pub fn from_minutes(minutes: i64) -> Span {
        Span::from_seconds(minutes.saturating_mul(60))
    }

    pub fn from_hours(hours: i64) -> Span {
        Span::from_seconds(hours.saturating_mul(3600))
    }

    /// Parses an ISO 8601 duration made of W, D, H, M and S parts only (`P1W`, `PT2H`,
    /// `P1DT12H`, `PT0.5S`); a day is 24 hours and a week 7 days. Only the seconds may carry a
    /// fraction. Signs, years and months are refused.
    pub fn parse_iso8601(text: &str) -> Option<Span> {
        let rest = text.strip_prefix('P')?;
        let (date_part, time_part) = match rest.find('T') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let mut total: i128 = 0;
        let mut parts = 0;
        let mut last_rank = 0;
        let mut consume = |segment: &str, units: &[(char, i128, u8)]| -> Option<()> {
            let mut number = String::new();
            for c in segment.chars() {
                if c.is_ascii_digit() || c == '.' {
                    number.push(c);
                    continue;
                }
                let &(_, seconds, rank) = units.iter().find(|(u, _, _)| *u == c)?;
                if rank <= last_rank || number.is_empty() {
                    return None;
                }
                last_rank = rank;
                let nanos = if c == 'S' {
                    let d = crate::Dec::parse(&number, false)?;
                    if d.scale > 9 {
                        return None;
                    }
                    d.mantissa.checked_mul(crate::decimal::pow10(9 - d.scale)?)?
                } else {
                    if number.contains('.') {
                        return None;
                    }
                    let n: i128 = number.parse().ok()?;
                    n.checked_mul(seconds)?.checked_mul(NANOS_PER_SECOND)?
                };
                total = total.checked_add(nanos)?;
                parts += 1;
                number.clear();
            }
            if number.is_empty() {
                Some(())
            } else {
                None
            }
        };
        consume(date_part, &[('W', 7 * 86_400, 1), ('D', 86_400, 2)])?;
        if let Some(time_part) = time_part {
            if time_part.is_empty() {
                return None;
            }
            consume(time_part, &[('H', 3_600, 3), ('M', 60, 4), ('S', 1, 5)])?;
        }
        if parts == 0 {
            return None;
        }
        Some(Span(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let t = Instant::parse_rfc3339("2026-01-02T11:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T10:00:00Z");
        assert_eq!(t, Instant::parse_rfc3339("2026-01-02T10:00:00Z").unwrap());
        let f = Instant::parse_rfc3339("2026-01-02T10:00:00.5Z").unwrap();
        assert_eq!(f.0 - t.0, 500_000_000);
        for bad in ["2026-01-02", "2026-01-02T10:00:00", "yesterday", "", "2026-13-01T00:00:00Z"] {
            assert!(Instant::parse_rfc3339(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn system_time_and_day_start() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(1_767_268_800_500_000_000);
        let i = Instant::from_system_time(t);
        assert_eq!(i.to_rfc3339(), "2026-01-01T12:00:00.500Z");
        assert_eq!(i.start_of_utc_day().to_rfc3339(), "2026-01-01T00:00:00Z");
        let before = std::time::UNIX_EPOCH - std::time::Duration::from_secs(1);
        assert_eq!(Instant::from_system_time(before), Instant::from_unix_seconds(-1));
    }

    #[test]
    fn iso8601_durations() {
        let cases: &[(&str, Option<i64>)] = &[
            ("PT0S", Some(0)),
            ("PT2H", Some(7_200)),
            ("PT24H", Some(86_400)),
            ("P1D", Some(86_400)),
            ("P1W", Some(604_800)),
            ("P1DT12H", Some(129_600)),
            ("PT90M", Some(5_400)),
            ("P1W2DT3H4M5S", Some(604_800 + 2 * 86_400 + 3 * 3_600 + 4 * 60 + 5)),
            ("P", None),
            ("PT", None),
            ("P1Y", None),
            ("P1M", None),
            ("PT1H2H", None),
            ("PT2M1H", None),
            ("-PT1H", None),
            ("2H", None),
            ("P1.5D", None),
        ];
        for &(text, seconds) in cases {
            assert_eq!(Span::parse_iso8601(text), seconds.map(Span::from_seconds), "{text}");
        }
        assert_eq!(Span::parse_iso8601("PT0.5S"), Some(Span(500_000_000)));
    }
}
