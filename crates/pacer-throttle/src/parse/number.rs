//! Lenient number parsing for header values found in the field: never panics, never overflows.

use std::time::Duration;

/// A decimal number as written in a header: sign, whole part (saturated) and up to nine
/// fractional digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    pub(crate) negative: bool,
    pub(crate) whole: u64,
    pub(crate) nanos: u32,
}

impl Decimal {
    /// Parses `[-]digits[.digits]`, surrounding whitespace allowed. Whole parts too large for a
    /// `u64` saturate; fractional digits beyond the ninth are checked and dropped. Anything else
    /// (`+1`, `1e3`, `.5`, `inf`, empty) is `None`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let text = text.trim_matches(|c: char| c == ' ' || c == '\t');
        let (negative, text) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole_digits, fraction_digits) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        if whole_digits.is_empty() || !whole_digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let whole = whole_digits.bytes().fold(0_u64, |acc, digit| {
            acc.saturating_mul(10)
                .saturating_add(u64::from(digit - b'0'))
        });
        let mut nanos = 0_u32;
        if let Some(fraction) = fraction_digits {
            if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            for (position, digit) in fraction.bytes().take(9).enumerate() {
                nanos += u32::from(digit - b'0') * 10_u32.pow(8 - position as u32);
            }
        }
        Some(Self {
            negative,
            whole,
            nanos,
        })
    }

    /// The number as a duration in seconds, negative values as zero, clamped to `max`.
    pub(crate) fn as_seconds(self, max: Duration) -> Duration {
        if self.negative {
            return Duration::ZERO;
        }
        if self.whole > max.as_secs() {
            return max;
        }
        Duration::new(self.whole, self.nanos).min(max)
    }

    /// The whole part as a count, negative values as zero.
    pub(crate) fn as_count(self) -> u64 {
        if self.negative {
            0
        } else {
            self.whole
        }
    }
}

/// The first element of a header value that may be a list (`100, 100;w=60`), without its
/// parameters: how legacy headers that grew structured syntax are read.
pub(crate) fn first_element(value: &str) -> &str {
    let element = value.split(',').next().unwrap_or_default();
    element.split(';').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    fn seconds(text: &str) -> Option<Duration> {
        Decimal::parse(text).map(|d| d.as_seconds(MAX))
    }

    #[test]
    fn reads_what_servers_send() {
        assert_eq!(seconds("120"), Some(MAX));
        assert_eq!(seconds("30"), Some(Duration::from_secs(30)));
        assert_eq!(seconds(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(seconds("1.0000000019"), Some(Duration::new(1, 1)));
        assert_eq!(seconds("0"), Some(Duration::ZERO));
        assert_eq!(seconds("-5"), Some(Duration::ZERO));
        assert_eq!(seconds("-0.5"), Some(Duration::ZERO));
        assert_eq!(seconds("99999999999"), Some(MAX));
        assert_eq!(seconds("184467440737095516160000"), Some(MAX));
    }

    #[test]
    fn refuses_what_is_not_a_plain_decimal() {
        for garbage in [
            "", " ", "abc", "+1", "1e3", ".5", "5.", "1.2.3", "inf", "NaN", "--1", "1 2", "٣",
        ] {
            assert_eq!(Decimal::parse(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn takes_the_first_list_element_without_parameters() {
        assert_eq!(first_element("100, 100;w=60"), "100");
        assert_eq!(first_element("100;w=60"), "100");
        assert_eq!(first_element(""), "");
    }
}
