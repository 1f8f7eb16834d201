//! Go duration strings (`"300ms"`, `"1h30m"`, `"2160h"`), as Dex's config uses them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a Go duration string. The empty string means "unset, use
/// the default", so the original text is kept for messages and for `check-config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoDuration {
    pub text: String,
}

impl GoDuration {
    pub fn is_unset(&self) -> bool {
        self.text.is_empty()
    }

    /// Parses the text; `Ok(None)` when unset.
    pub fn parse(&self) -> Result<Option<Duration>, DurationError> {
        if self.text.is_empty() {
            return Ok(None);
        }
        parse_go_duration(&self.text).map(Some)
    }
}

impl From<&str> for GoDuration {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_owned(),
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?.unwrap_or_default();
        Ok(Self { text })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error(
        "time: unknown unit {unit:?} in duration {text:?} (use ns, us, ms, s, m or h; Go durations have no d)"
    )]
    UnknownUnit { unit: String, text: String },
    #[error("negative duration {0:?} is not allowed here")]
    Negative(String),
    #[error("time: invalid duration {0:?}: too large")]
    Overflow(String),
}

/// Parses Go's `time.ParseDuration` syntax: an optional sign, then one or more
/// decimal numbers each followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`).
/// `"0"` alone is allowed. Negative durations are refused: no setting takes one.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(text.to_owned());
    let mut rest = text;
    let mut negative = false;
    if let Some(stripped) = rest.strip_prefix('-') {
        negative = true;
        rest = stripped;
    } else if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_nanos: u128 = match unit {
            "" => return Err(DurationError::MissingUnit(text.to_owned())),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_owned(),
                    text: text.to_owned(),
                });
            }
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| DurationError::Overflow(text.to_owned()))?
        };
        let mut part = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| DurationError::Overflow(text.to_owned()))?;
        let mut scale = unit_nanos;
        for digit in fraction.chars() {
            scale /= 10;
            let d = u128::from(digit.to_digit(10).ok_or_else(invalid)?);
            part += d * scale;
        }
        total_nanos = total_nanos
            .checked_add(part)
            .ok_or_else(|| DurationError::Overflow(text.to_owned()))?;
    }
    if total_nanos > i64::MAX as u128 {
        return Err(DurationError::Overflow(text.to_owned()));
    }
    if negative && total_nanos != 0 {
        return Err(DurationError::Negative(text.to_owned()));
    }
    let secs = (total_nanos / 1_000_000_000) as u64;
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        assert_eq!(
            parse_go_duration("24h").unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            parse_go_duration("300ms").unwrap(),
            Duration::from_millis(300)
        );
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5_400)
        );
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5_400)
        );
        assert_eq!(
            parse_go_duration("2h45m30.5s").unwrap(),
            Duration::from_millis(9_930_500)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_go_duration("10us").unwrap(),
            Duration::from_micros(10)
        );
        assert_eq!(
            parse_go_duration("10µs").unwrap(),
            Duration::from_micros(10)
        );
    }

    #[test]
    fn refuses_what_go_refuses() {
        assert!(matches!(
            parse_go_duration("1d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_go_duration("10"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_go_duration(""),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_go_duration("h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_go_duration("1..5h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_go_duration("-5m"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_go_duration("99999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }
}
