//! Partner timestamps to RFC 3339 UTC instants. Local times follow the spec's rule for cut-offs
//! so that one convention holds everywhere: a local time in a DST gap moves to the instant the
//! gap ends; an ambiguous one takes the earlier instant.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Longest DST gap searched for its end (real gaps are at most 2 hours; 30-minute steps exist).
const MAX_GAP_MINUTES: i64 = 3 * 60;
/// Longest timestamp text accepted.
pub const MAX_TIME_CHARS: usize = 64;

/// Rejects strftime patterns that chrono cannot use, so a mapping error is not reported per row.
pub fn check_formats(formats: &[String]) -> Result<(), String> {
    for f in formats {
        if matches!(f.as_str(), "rfc3339" | "unix" | "unix_ms") {
            continue;
        }
        let items = chrono::format::StrftimeItems::new(f);
        if items.clone().any(|i| matches!(i, chrono::format::Item::Error)) {
            return Err(format!("{f:?} is not a valid strftime pattern"));
        }
    }
    Ok(())
}

/// The instant of `raw`, as `2026-01-02T10:00:00Z` (fractions kept when present).
pub fn parse_instant(raw: &str, formats: &[String], tz: Tz) -> Result<String, String> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("time is blank".into());
    }
    if text.chars().count() > MAX_TIME_CHARS {
        return Err(format!("time is longer than {MAX_TIME_CHARS} characters"));
    }
    for f in formats {
        if let Some(utc) = try_format(text, f, tz) {
            return Ok(utc.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
    }
    Err(format!("time {text:?} matches none of the formats {formats:?}"))
}

fn try_format(text: &str, format: &str, tz: Tz) -> Option<DateTime<Utc>> {
    match format {
        "rfc3339" => DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc)),
        "unix" => text.parse::<i64>().ok().and_then(|s| DateTime::from_timestamp(s, 0)),
        "unix_ms" => text.parse::<i64>().ok().and_then(DateTime::from_timestamp_millis),
        pattern => {
            if let Ok(t) = DateTime::parse_from_str(text, pattern) {
                return Some(t.with_timezone(&Utc));
            }
            let local = match NaiveDateTime::parse_from_str(text, pattern) {
                Ok(t) => t,
                Err(_) => NaiveDate::parse_from_str(text, pattern).ok()?.and_hms_opt(0, 0, 0)?,
            };
            local_to_utc(local, tz)
        }
    }
}

/// Local time in `tz` to UTC: gap -> the instant the gap ends; ambiguous -> the earlier.
pub fn local_to_utc(local: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => {
            // The first existing local minute after the gap is the gap's end; its instant is the
            // transition itself.
            let minute = local.with_second(0)?.with_nanosecond(0)?;
            (1..=MAX_GAP_MINUTES).find_map(|m| {
                let candidate = minute.checked_add_signed(chrono::Duration::minutes(m))?;
                match tz.from_local_datetime(&candidate) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
                    LocalResult::None => None,
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(raw: &str, format: &str, tz: &str) -> Result<String, String> {
        parse_instant(raw, &[format.to_string()], tz.parse().unwrap())
    }

    #[test]
    fn berlin_local_times() {
        assert_eq!(
            parse("02.01.2026 10:00:00", "%d.%m.%Y %H:%M:%S", "Europe/Berlin").unwrap(),
            "2026-01-02T09:00:00Z"
        );
        assert_eq!(
            parse("02.07.2026 10:00:00", "%d.%m.%Y %H:%M:%S", "Europe/Berlin").unwrap(),
            "2026-07-02T08:00:00Z"
        );
        // Gap: 02:30 on 2026-03-29 does not exist; it becomes 03:00 CEST = 01:00Z.
        assert_eq!(
            parse("29.03.2026 02:30:00", "%d.%m.%Y %H:%M:%S", "Europe/Berlin").unwrap(),
            "2026-03-29T01:00:00Z"
        );
        // Ambiguous: the earlier (CEST) instant.
        assert_eq!(
            parse("25.10.2026 02:30:00", "%d.%m.%Y %H:%M:%S", "Europe/Berlin").unwrap(),
            "2026-10-25T00:30:00Z"
        );
    }

    #[test]
    fn date_only_offsets_and_epochs() {
        assert_eq!(parse("20260102", "%Y%m%d", "Europe/Berlin").unwrap(), "2026-01-01T23:00:00Z");
        assert_eq!(
            parse("2026-01-02 10:00 +0100", "%Y-%m-%d %H:%M %z", "UTC").unwrap(),
            "2026-01-02T09:00:00Z"
        );
        assert_eq!(
            parse("2026-01-02T10:00:00.250+01:00", "rfc3339", "UTC").unwrap(),
            "2026-01-02T09:00:00.250Z"
        );
        assert_eq!(parse("1767348000", "unix", "UTC").unwrap(), "2026-01-02T10:00:00Z");
        assert_eq!(parse("1767348000500", "unix_ms", "UTC").unwrap(), "2026-01-02T10:00:00.500Z");
    }

    #[test]
    fn formats_tried_in_order() {
        let formats = vec!["%d/%m/%Y".to_string(), "rfc3339".to_string()];
        assert_eq!(parse_instant("2026-01-02T10:00:00Z", &formats, Tz::UTC).unwrap(), "2026-01-02T10:00:00Z");
        assert_eq!(parse_instant("02/01/2026", &formats, Tz::UTC).unwrap(), "2026-01-02T00:00:00Z");
        assert!(parse_instant("yesterday", &formats, Tz::UTC).is_err());
        assert!(parse_instant("", &formats, Tz::UTC).is_err());
    }

    #[test]
    fn bad_patterns_are_mapping_errors() {
        assert!(check_formats(&["%Q".to_string()]).is_err());
        assert!(check_formats(&["%Y-%m-%d".to_string(), "unix".to_string()]).is_ok());
    }
}
