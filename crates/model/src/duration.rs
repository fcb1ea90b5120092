//! Durations as workflow authors write them: `"30s"`, `"5m"`, `"1h30m"`, `"7d"`, `"250ms"`.
//!
//! A definition that says `"timeout": "7d"` must mean exactly seven days on every machine,
//! so the format is deliberately small: a sequence of `<integer><unit>` pairs with units in
//! strictly decreasing order (`d`, `h`, `m`, `s`, `ms`), no spaces, no fractions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time parsed from the workflow duration syntax.
///
/// Serialises back to the shortest canonical spelling (`5400s` → `"1h30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"30s\", \"5m\", \"1h30m\", \"7d\")")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// The standard-library value, for timers and arithmetic.
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// The value as a `chrono` duration, for deadline arithmetic on timestamps.
    pub fn as_chrono(self) -> chrono::TimeDelta {
        chrono::TimeDelta::milliseconds(i64::try_from(self.as_millis()).unwrap_or(i64::MAX))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseDurationError {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(err("it is empty"));
        }
        let bytes = input.as_bytes();
        let mut total: u64 = 0;
        let mut pos = 0;
        // Index into UNITS of the last unit seen; each next unit must be smaller.
        let mut last_unit: Option<usize> = None;
        while pos < bytes.len() {
            let start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            if start == pos {
                return Err(err("a number must come before each unit"));
            }
            let number: u64 = input[start..pos]
                .parse()
                .map_err(|_| err("the number is too large"))?;
            let unit_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
                pos += 1;
            }
            let unit = &input[unit_start..pos];
            if unit.is_empty() {
                return Err(err("each number needs a unit (d, h, m, s or ms)"));
            }
            let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
                return Err(err("unknown unit (use d, h, m, s or ms)"));
            };
            if last_unit.is_some_and(|last| index <= last) {
                return Err(err(
                    "units must go from largest to smallest, each at most once",
                ));
            }
            last_unit = Some(index);
            total = number
                .checked_mul(UNITS[index].1)
                .and_then(|ms| total.checked_add(ms))
                .ok_or_else(|| err("the duration is too large"))?;
        }
        Ok(Self::from_millis(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.as_millis();
        if rest == 0 {
            return f.write_str("0s");
        }
        for (name, ms) in UNITS {
            if rest >= ms {
                write!(f, "{}{name}", rest / ms)?;
                rest %= ms;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        for (text, ms) in [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("7d", 604_800_000),
            ("250ms", 250),
            ("1d2h3m4s5ms", 93_784_005),
            ("0s", 0),
        ] {
            assert_eq!(
                text.parse::<Duration>().map(Duration::as_millis),
                Ok(ms),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_malformed_forms() {
        for text in [
            "",
            "5",
            "m",
            "5x",
            "1m1h",
            "1h1h",
            "-5s",
            "1.5h",
            " 5s",
            "5s ",
            "99999999999999999999d",
        ] {
            assert!(
                text.parse::<Duration>().is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(Duration::from_millis(1500).to_string(), "1s500ms");
        assert_eq!(Duration::default().to_string(), "0s");
        for text in ["1d", "1h30m", "45s", "2d3h"] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
    }
}
