//! A key's rate limit: at most N allowed requests per second, minute or hour (`N/UNIT`, e.g. `100/m`).

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// The largest N accepted in `N/UNIT`.
pub const MAX_RATE_LIMIT: u32 = 1_000_000_000;

/// The unit of a [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateUnit {
    /// Per second (`s`).
    Second,
    /// Per minute (`m`).
    Minute,
    /// Per hour (`h`).
    Hour,
}

impl RateUnit {
    /// The unit's letter: `s`, `m` or `h`.
    pub fn as_str(self) -> &'static str {
        match self {
            RateUnit::Second => "s",
            RateUnit::Minute => "m",
            RateUnit::Hour => "h",
        }
    }

    /// The unit's length.
    pub fn period(self) -> Duration {
        Duration::from_secs(match self {
            RateUnit::Second => 1,
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
        })
    }
}

/// At most [`count`](Self::count) allowed requests per [`unit`](Self::unit), written `N/UNIT` (`100/m`). Stored with
/// the key; copied by rotation.
///
/// ```
/// use scopegate::credential::api_key::{RateLimit, RateUnit};
///
/// let limit: RateLimit = "100/m".parse().unwrap();
/// assert_eq!((limit.count().get(), limit.unit()), (100, RateUnit::Minute));
/// assert_eq!(limit.to_string(), "100/m");
/// assert!("0/m".parse::<RateLimit>().is_err());
/// assert!("100/d".parse::<RateLimit>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    count: NonZeroU32,
    unit: RateUnit,
}

/// Why a rate limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate limit {shown:?}: expected N/UNIT with N from 1 to {MAX_RATE_LIMIT} and UNIT s, m or h (e.g. 100/m)"
)]
pub struct RateLimitError {
    shown: String,
}

impl RateLimit {
    /// `count` requests per `unit`; `None` when `count` is zero or above [`MAX_RATE_LIMIT`].
    pub fn new(count: u32, unit: RateUnit) -> Option<Self> {
        NonZeroU32::new(count)
            .filter(|n| n.get() <= MAX_RATE_LIMIT)
            .map(|count| RateLimit { count, unit })
    }

    /// N.
    pub fn count(&self) -> NonZeroU32 {
        self.count
    }

    /// The unit.
    pub fn unit(&self) -> RateUnit {
        self.unit
    }
}

impl FromStr for RateLimit {
    type Err = RateLimitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || RateLimitError {
            shown: text.chars().take(40).collect(),
        };
        let (count, unit) = text.split_once('/').ok_or_else(error)?;
        // Digits only: no sign, no spaces, no leading `+` that `u32::from_str` would take (which refuses "").
        if count.len() > 10 || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error());
        }
        let count: u32 = count.parse().map_err(|_| error())?;
        let unit = match unit {
            "s" => RateUnit::Second,
            "m" => RateUnit::Minute,
            "h" => RateUnit::Hour,
            _ => return Err(error()),
        };
        RateLimit::new(count, unit).ok_or_else(error)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_nothing_looser() {
        for text in ["1/s", "100/m", "5000/h", "1000000000/s"] {
            let limit: RateLimit = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(limit.to_string(), text);
        }
        for text in [
            "",
            "/m",
            "10",
            "10/",
            "0/m",
            "-1/m",
            "+5/m",
            " 5/m",
            "5/m ",
            "5/min",
            "5/M",
            "5/d",
            "1000000001/s",
            "99999999999/s",
            "5//m",
            "٣/m",
            "5/m/s",
        ] {
            assert!(text.parse::<RateLimit>().is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn an_error_names_the_value_and_the_syntax() {
        let error = "7/fortnight".parse::<RateLimit>().unwrap_err().to_string();
        assert!(
            error.contains("\"7/fortnight\"") && error.contains("N/UNIT"),
            "{error}"
        );
    }
}
