//! Settlement cycles and their periods in local time, with the spec's DST rules: a cut-off in a
//! DST gap moves to the instant the gap ends; an ambiguous one takes the earlier instant.

use crate::time::{Instant, Span};
use chrono::{Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How far a period search may walk before giving up (a guard, not a tuning knob: real cycles need
/// at most two steps).
const MAX_PERIOD_SEARCH_STEPS: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CycleKind {
    Daily,
    Weekly(WeekdayName),
    /// Day of the month, 1..=28.
    Monthly(u8),
}

/// A weekday as written in scenarios (`mon`..`sun`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeekdayName(pub u8);

impl WeekdayName {
    pub fn parse(text: &str) -> Option<WeekdayName> {
        let index = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].iter().position(|&d| d == text)?;
        u8::try_from(index).ok().map(WeekdayName)
    }

    fn days_from_monday(self) -> u64 {
        u64::from(self.0)
    }
}

/// A period `[start, end)` of a partner's cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Period {
    pub start: Instant,
    pub end: Instant,
}

impl Period {
    pub fn contains(&self, t: Instant) -> bool {
        self.start <= t && t < self.end
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cycle {
    pub kind: CycleKind,
    /// Local cut-off time, minutes after midnight.
    pub cutoff_minutes: u16,
    #[serde(with = "tz_name")]
    pub tz: Tz,
    pub grace: Span,
}

mod tz_name {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a strict `HH:MM` cut-off into minutes after midnight.
pub fn parse_cutoff(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
        return None;
    }
    let hours = u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0');
    let minutes = u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0');
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

/// Parses an IANA time-zone name (exact spelling).
pub fn parse_tz(text: &str) -> Option<Tz> {
    text.parse().ok()
}

fn epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 5).unwrap_or_default() // a Monday
}

impl Cycle {
    /// The instant of the cut-off on local date `date`, with the DST rules applied.
    fn cutoff_on(&self, date: NaiveDate) -> Option<Instant> {
        let time = NaiveTime::from_num_seconds_from_midnight_opt(u32::from(self.cutoff_minutes) * 60, 0)?;
        resolve_local(&self.tz, date.and_time(time))
    }

    /// The local date of boundary number `n` of this cycle.
    fn boundary_date(&self, n: i64) -> Option<NaiveDate> {
        let base = epoch_date();
        match self.kind {
            CycleKind::Daily => shift_days(base, n),
            CycleKind::Weekly(day) => {
                shift_days(base, n.checked_mul(7)?)?.checked_add_days(Days::new(day.days_from_monday()))
            }
            CycleKind::Monthly(day) => {
                let year = i32::try_from(n.div_euclid(12)).ok()?;
                let month = u32::try_from(n.rem_euclid(12)).ok()? + 1;
                NaiveDate::from_ymd_opt(year, month, u32::from(day))
            }
        }
    }

    fn boundary(&self, n: i64) -> Option<Instant> {
        self.cutoff_on(self.boundary_date(n)?)
    }

    /// An index whose boundary is near the local date `date`.
    fn approximate_index(&self, date: NaiveDate) -> i64 {
        let days = date.signed_duration_since(epoch_date()).num_days();
        match self.kind {
            CycleKind::Daily => days,
            CycleKind::Weekly(_) => days.div_euclid(7),
            CycleKind::Monthly(_) => i64::from(date.year()) * 12 + i64::from(date.month0()),
        }
    }

    /// The period containing `t`: the last cut-off at or before `t` to the next one after it.
    pub fn period_containing(&self, t: Instant) -> Option<Period> {
        let local = self.tz.from_utc_datetime(&t.to_chrono()?.naive_utc()).naive_local();
        let mut n = self.approximate_index(local.date());
        let mut steps = 0;
        while self.boundary(n)? > t {
            n -= 1;
            steps += 1;
            if steps > MAX_PERIOD_SEARCH_STEPS {
                return None;
            }
        }
        while self.boundary(n + 1)? <= t {
            n += 1;
            steps += 1;
            if steps > MAX_PERIOD_SEARCH_STEPS {
                return None;
            }
        }
        let period = Period { start: self.boundary(n)?, end: self.boundary(n + 1)? };
        debug_assert!(period.contains(t));
        Some(period)
    }

    /// The period right after `period`.
    pub fn next_period(&self, period: Period) -> Option<Period> {
        self.period_containing(period.end)
    }

    /// The instant from which `period` counts as closed.
    pub fn closes_at(&self, period: Period) -> Instant {
        period.end.saturating_add(self.grace)
    }
}

fn shift_days(base: NaiveDate, n: i64) -> Option<NaiveDate> {
    if n >= 0 {
        base.checked_add_days(Days::new(u64::try_from(n).ok()?))
    } else {
        base.checked_sub_days(Days::new(n.unsigned_abs()))
    }
}

/// Maps a local wall-clock time to an instant: the single match, the earlier of two in a fold,
/// or, in a gap, the instant the gap ends.
pub fn resolve_local(tz: &Tz, local: NaiveDateTime) -> Option<Instant> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(Instant::from_chrono(t.to_utc())),
        LocalResult::Ambiguous(a, b) => Some(Instant::from_chrono(a.to_utc().min(b.to_utc()))),
        LocalResult::None => gap_end(tz, local),
    }
}

/// The first instant whose local time is at or after `local`, which lies inside a gap.
fn gap_end(tz: &Tz, local: NaiveDateTime) -> Option<Instant> {
    use chrono::Offset;
    let as_utc = local.and_utc();
    let offset_at = |t: chrono::DateTime<chrono::Utc>| {
        i64::from(tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc())
    };
    let day = chrono::TimeDelta::try_days(1)?;
    let before = offset_at(as_utc.checked_sub_signed(day)?);
    let after = offset_at(as_utc.checked_add_signed(day)?);
    let base = as_utc.timestamp();
    let (mut lo, mut hi) = {
        let a = base - after;
        let b = base - before;
        (a.min(b), a.max(b))
    };
    let local_at = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0)
            .map(|t| tz.from_utc_datetime(&t.naive_utc()).naive_local())
    };
    if local_at(hi)? < local {
        return None;
    }
    // Invariant: local_at(hi) >= local; find the first such second.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if local_at(mid)? >= local {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(Instant::from_unix_seconds(hi))
}

/// Weekday helper kept for callers that show cycles to people.
pub fn weekday_label(day: WeekdayName) -> &'static str {
    match Weekday::try_from(day.0).unwrap_or(Weekday::Mon) {
        Weekday::Mon => "mon",
        Weekday::Tue => "tue",
        Weekday::Wed => "wed",
        Weekday::Thu => "thu",
        Weekday::Fri => "fri",
        Weekday::Sat => "sat",
        Weekday::Sun => "sun",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Instant {
        Instant::parse_rfc3339(s).unwrap()
    }

    fn cycle(kind: CycleKind, cutoff: &str, tz: &str) -> Cycle {
        Cycle {
            kind,
            cutoff_minutes: parse_cutoff(cutoff).unwrap(),
            tz: parse_tz(tz).unwrap(),
            grace: Span::ZERO,
        }
    }

    #[test]
    fn dst_gap_and_fold_follow_the_spec() {
        let tz = parse_tz("Europe/Berlin").unwrap();
        let gap = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap().and_hms_opt(2, 30, 0).unwrap();
        assert_eq!(resolve_local(&tz, gap), Some(at("2026-03-29T01:00:00Z")));
        let fold = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap().and_hms_opt(2, 30, 0).unwrap();
        assert_eq!(resolve_local(&tz, fold), Some(at("2026-10-25T00:30:00Z")));
    }

    #[test]
    fn periods_table() {
        let weekly_mon = cycle(CycleKind::Weekly(WeekdayName(0)), "00:00", "Europe/Berlin");
        let daily_gap = cycle(CycleKind::Daily, "02:30", "Europe/Berlin");
        let weekly_ny = cycle(CycleKind::Weekly(WeekdayName(6)), "02:30", "America/New_York");
        let monthly = cycle(CycleKind::Monthly(15), "18:00", "Australia/Sydney");
        let cases: &[(&Cycle, &str, &str, &str)] = &[
            (&weekly_mon, "2026-01-02T10:00:00Z", "2025-12-28T23:00:00Z", "2026-01-04T23:00:00Z"),
            (&daily_gap, "2026-03-29T00:59:59Z", "2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z"),
            (&daily_gap, "2026-03-29T01:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"),
            (&weekly_ny, "2026-03-08T06:59:59Z", "2026-03-01T07:30:00Z", "2026-03-08T07:00:00Z"),
            (&weekly_ny, "2026-03-08T07:00:00Z", "2026-03-08T07:00:00Z", "2026-03-15T06:30:00Z"),
            (&monthly, "2026-04-10T00:00:00Z", "2026-03-15T07:00:00Z", "2026-04-15T08:00:00Z"),
        ];
        for &(c, t, start, end) in cases {
            let p = c.period_containing(at(t)).unwrap();
            assert_eq!((p.start, p.end), (at(start), at(end)), "{t}");
        }
    }

    #[test]
    fn strict_cutoff_and_weekday_parsing() {
        assert_eq!(parse_cutoff("00:00"), Some(0));
        assert_eq!(parse_cutoff("23:59"), Some(1439));
        for bad in ["24:00", "9:00", "09:60", "0900", "09:00 "] {
            assert_eq!(parse_cutoff(bad), None, "{bad}");
        }
        assert_eq!(WeekdayName::parse("sun"), Some(WeekdayName(6)));
        assert_eq!(WeekdayName::parse("Sun"), None);
        assert_eq!(weekday_label(WeekdayName(2)), "wed");
    }
}
