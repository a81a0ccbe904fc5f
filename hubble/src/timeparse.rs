//! Time values of `--since`/`--until` (RFC 3339, a few date layouts, or a Go-style relative
//! duration such as `5m` or `1h30m` meaning "that long ago") and Go-style durations for
//! `--timeout`.

use crate::error::{Error, Result};
use lumen_api::wkt::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a Go `time.ParseDuration` string (`300ms`, `1.5h`, `1h30m`, `10s`); no sign.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || Error::InvalidArgument(format!("invalid duration {s:?}"));
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += value * unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Parses a `--since`/`--until` value relative to `now`: an absolute time (RFC 3339, or
/// `YYYY-MM-DDTHH:MM:SS`, `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DD`, taken as
/// UTC) or a duration before `now`.
pub fn parse_time(flag: &str, s: &str, now: SystemTime) -> Result<Timestamp> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        });
    }
    for layout in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, layout) {
            let t = t.and_utc();
            return Ok(Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            });
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        return Ok(Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        });
    }
    let ago = parse_duration(s).map_err(|_| {
        Error::InvalidArgument(format!(
            "failed to parse the {flag} time {s:?}: expected RFC 3339 (2006-01-02T15:04:05Z) or a duration (5m, 1h30m)"
        ))
    })?;
    let at = now
        .checked_sub(ago)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .ok_or_else(|| Error::InvalidArgument(format!("{flag} time {s:?} is out of range")))?;
    Ok(Timestamp {
        seconds: at.as_secs() as i64,
        nanos: at.subsec_nanos() as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "5", "m", "5x", "-5m", "1h 2m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = parse_time("since", "5m", now).unwrap();
        assert_eq!((t.seconds, t.nanos), (1_000_000 - 300, 0));
        let t = parse_time("since", "2026-11-27T09:00:00.5+01:00", now).unwrap();
        assert_eq!((t.seconds, t.nanos), (1_795_770_000 - 3600, 500_000_000));
        let t = parse_time("since", "2026-11-27", now).unwrap();
        assert_eq!(t.seconds, 1_795_737_600);
        let e = parse_time("since", "yesterday", now).unwrap_err();
        assert!(
            e.to_string().contains("failed to parse the since time"),
            "{e}"
        );
    }
}
