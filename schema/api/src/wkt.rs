//! Well-known types that need a JSON form other than [`pbjson_types`] gives.
//!
//! Every other `google.protobuf` type in the generated code is the one of [`pbjson_types`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// `google.protobuf.Timestamp`: a point in time, as seconds and nanoseconds since the Unix
/// epoch (UTC).
///
/// Same wire encoding and fields as [`pbjson_types::Timestamp`] and
/// [`prost_types::Timestamp`] (with conversions to and from both). It exists for its JSON
/// form: the protobuf JSON mapping, as Hubble prints it, is RFC 3339 normalised to `Z`
/// with 0, 3, 6 or 9 fractional digits (`"2026-11-27T09:00:00.223456789Z"`), where
/// `pbjson_types` prints a `+00:00` offset. Parsing accepts any RFC 3339 offset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fraction of a second, 0..=999_999_999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl prost::Name for Timestamp {
    const NAME: &'static str = "Timestamp";
    const PACKAGE: &'static str = "google.protobuf";

    /// The conventional URL prefix, as `prost_types` uses for the well-known types.
    fn type_url() -> String {
        "type.googleapis.com/google.protobuf.Timestamp".into()
    }
}

impl Timestamp {
    /// The time as a UTC date-time, or `None` if `nanos` is out of range or the time is
    /// outside what `chrono` represents.
    fn to_datetime(self) -> Option<DateTime<Utc>> {
        let nanos = u32::try_from(self.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        DateTime::from_timestamp(self.seconds, nanos)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with a `Z` offset, as in the protobuf JSON mapping; out-of-range values
    /// print as `seconds.nanos`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => write!(f, "{}.{:09}", self.seconds, self.nanos),
        }
    }
}

impl From<pbjson_types::Timestamp> for Timestamp {
    fn from(t: pbjson_types::Timestamp) -> Self {
        Self {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

impl From<Timestamp> for pbjson_types::Timestamp {
    fn from(t: Timestamp) -> Self {
        Self {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

impl From<prost_types::Timestamp> for Timestamp {
    fn from(t: prost_types::Timestamp) -> Self {
        Self {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

impl From<Timestamp> for prost_types::Timestamp {
    fn from(t: Timestamp) -> Self {
        Self {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let (seconds, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            // Before the epoch: round the seconds down so that nanos stays non-negative.
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
                if n == 0 {
                    (-s, 0)
                } else {
                    (-s - 1, 1_000_000_000 - n)
                }
            }
        };
        Self {
            seconds,
            nanos: nanos as i32,
        }
    }
}

impl TryFrom<Timestamp> for SystemTime {
    type Error = Timestamp;

    /// Fails (returning the input) when `nanos` is out of range or the time does not fit.
    fn try_from(t: Timestamp) -> Result<Self, Timestamp> {
        let nanos = u32::try_from(t.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .ok_or(t)?;
        let secs = Duration::from_secs(t.seconds.unsigned_abs());
        let time = if t.seconds >= 0 {
            UNIX_EPOCH.checked_add(secs)
        } else {
            UNIX_EPOCH.checked_sub(secs)
        };
        time.and_then(|s| s.checked_add(Duration::from_nanos(u64::from(nanos))))
            .ok_or(t)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self
            .to_datetime()
            .ok_or_else(|| serde::ser::Error::custom(format!("invalid timestamp {self:?}")))?;
        serializer.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                let t = DateTime::parse_from_rfc3339(s).map_err(E::custom)?;
                Ok(Timestamp {
                    seconds: t.timestamp(),
                    nanos: t.timestamp_subsec_nanos() as i32,
                })
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(t: Timestamp) -> String {
        serde_json::to_string(&t).unwrap()
    }

    #[test]
    fn json_is_z_normalised_with_0_3_6_or_9_digits() {
        let t = |seconds, nanos| Timestamp { seconds, nanos };
        assert_eq!(json(t(1_795_770_000, 0)), r#""2026-11-27T09:00:00Z""#);
        assert_eq!(
            json(t(1_795_770_000, 223_000_000)),
            r#""2026-11-27T09:00:00.223Z""#
        );
        assert_eq!(
            json(t(1_795_770_000, 223_456_000)),
            r#""2026-11-27T09:00:00.223456Z""#
        );
        assert_eq!(
            json(t(1_795_770_000, 223_456_789)),
            r#""2026-11-27T09:00:00.223456789Z""#
        );
        assert_eq!(json(t(0, 0)), r#""1970-01-01T00:00:00Z""#);
        assert!(serde_json::to_string(&t(0, -1)).is_err());
    }

    #[test]
    fn json_parses_any_offset() {
        let parse = |s: &str| serde_json::from_str::<Timestamp>(s).unwrap();
        let want = Timestamp {
            seconds: 1_795_770_000,
            nanos: 223_456_789,
        };
        assert_eq!(parse(r#""2026-11-27T09:00:00.223456789Z""#), want);
        assert_eq!(parse(r#""2026-11-27T10:00:00.223456789+01:00""#), want);
        assert!(serde_json::from_str::<Timestamp>(r#""yesterday""#).is_err());
    }

    #[test]
    fn system_time_round_trip() {
        for t in [
            Timestamp {
                seconds: 1_795_770_000,
                nanos: 5,
            },
            Timestamp {
                seconds: -2,
                nanos: 999_999_999,
            },
            Timestamp {
                seconds: -2,
                nanos: 0,
            },
        ] {
            let s = SystemTime::try_from(t).unwrap();
            assert_eq!(Timestamp::from(s), t);
        }
        assert!(SystemTime::try_from(Timestamp {
            seconds: 0,
            nanos: -1
        })
        .is_err());
    }

    #[test]
    fn wire_matches_prost_types() {
        use prost::Message;
        let ours = Timestamp {
            seconds: 1_795_770_000,
            nanos: 223_456_789,
        };
        let theirs = prost_types::Timestamp::from(ours);
        assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec());
        assert_eq!(
            <Timestamp as prost::Name>::type_url(),
            "type.googleapis.com/google.protobuf.Timestamp"
        );
    }
}
