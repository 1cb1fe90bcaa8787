//! Time as a value. The core never reads a clock: every transition receives
//! `now` as a [`Timestamp`], which keeps decisions deterministic and testable.

use std::time::Duration;

/// Milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating instead of overflowing.
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// `self - d`, saturating instead of overflowing.
    pub fn minus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(ms))
    }

    /// How long from `self` until `later`; zero if `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        u64::try_from(later.0.saturating_sub(self.0))
            .map(Duration::from_millis)
            .unwrap_or(Duration::ZERO)
    }
}

impl Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T15:26:40.689Z`.
    /// Computed here (proleptic Gregorian calendar) so audit details read
    /// well without the core depending on a time library.
    pub fn to_rfc3339(self) -> String {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod % 3600) / 60,
            sod % 60
        )
    }
}

/// A duration as people write it in the config: `1h`, `1h30m`, `90s`, `2d`
/// (whole units, largest first; below a second, `0s`).
/// Exponential backoff after `attempts` failed attempts: `base`, doubling
/// with each further attempt, never more than `cap`.
pub fn capped_backoff(base: Duration, cap: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

pub fn human_duration(d: Duration) -> String {
    let mut left = d.as_secs();
    if left == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

/// Parses a duration as people write one in config files and policy
/// annotations: `"90s"`, `"30m"`, `"2h"`, `"1h 30m"`. A bare number other
/// than zero is refused: it is too easy to mean minutes or hours by.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if raw.bytes().all(|b| b == b'0') && !raw.is_empty() {
        return Ok(Duration::ZERO);
    }
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{raw}` has no unit; say which, e.g. `{raw}s`, `{raw}m` or `{raw}h`"
        ));
    }
    humantime::parse_duration(raw)
        .map_err(|e| format!("`{raw}` is not a duration ({e}); use e.g. `90s`, `30m`, `2h`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_config_writes_them() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (3600, "1h"),
            (5400, "1h30m"),
            (90_061, "1d1h1m1s"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_795_447_600_689, "2026-11-23T15:26:40.689Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(Timestamp::from_unix_millis(ms).to_rfc3339(), text);
        }
    }

    #[test]
    fn arithmetic_saturates_and_until_never_goes_negative() {
        let t = Timestamp::from_unix_millis(1_000);
        assert_eq!(t.plus(Duration::from_secs(1)).unix_millis(), 2_000);
        assert_eq!(t.minus(Duration::from_millis(1)).unix_millis(), 999);
        assert_eq!(t.until(Timestamp::from_unix_millis(500)), Duration::ZERO);
        assert_eq!(
            Timestamp::from_unix_millis(i64::MAX - 1)
                .plus(Duration::from_secs(10))
                .unix_millis(),
            i64::MAX
        );
    }
}
