//! Time as records keep it: RFC 3339 UTC with millisecond precision, and
//! durations written the way people read them (`2m 34s`).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Timestamps are written as RFC 3339 UTC with millisecond precision.
pub type Timestamp = DateTime<Utc>;

/// The current time, truncated to what we store (milliseconds), so a record
/// read back from disk equals the one kept in memory.
pub fn now() -> Timestamp {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("current time is representable")
}

/// serde helpers for [`Timestamp`] as RFC 3339 with milliseconds.
pub mod ts {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Timestamp>` (null when absent).
    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => DateTime::parse_from_rfc3339(&s)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

/// RFC 3339 with milliseconds and a `Z`, as every timestamp is written.
pub fn format_ts(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a humantime duration (`15s`, `7d`, `2m 34s`; `M` is months), as
/// flags and query parameters (`?max_age=7d`) take them.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration (e.g. 15s, 7d): {e}"))
}

/// A point in time given as a humantime duration back from `now` (`10m`,
/// `2h 30m`) or as an RFC 3339 time (`2026-12-01T10:00:00Z`): what
/// `?since=`/`?until=` and `prochub follow --since` take. A duration
/// reaching before the earliest representable time means "from the
/// beginning". The error says what was expected.
pub fn parse_when(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let d = humantime::parse_duration(s).map_err(|_| {
        format!(
            "{s:?} is neither a duration back from now (e.g. 10m, 2h) nor an RFC 3339 time (e.g. 2026-12-01T10:00:00Z)"
        )
    })?;
    Ok(chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC))
}

/// Formats a duration the way records show it: humantime, whole
/// milliseconds at most (`2m 34s`, `1s 250ms`).
pub fn format_duration(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}
