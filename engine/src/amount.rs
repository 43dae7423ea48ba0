//! Fixed-point amounts (SPEC §2).
//!
//! Points travel as decimal strings with at most two fraction digits and are kept in
//! hundredths; reductions travel as kilograms with at most three fraction digits and are kept
//! in grams. Parsing is exact: anything that would need rounding is an error naming the field.

use std::fmt;

/// The largest magnitude accepted on the wire, in whole units (points or kilograms).
pub const MAX_WHOLE_UNITS: i64 = 1_000_000_000_000;

/// A number of points, in hundredths of a point (`1.00` point = `100`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Points(pub i64);

/// A quantity of emission reduction, in grams of CO2e (`1.000` kg = `1000`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grams(pub i64);

/// Why a wire amount was refused. Always carries the name of the field it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct AmountError {
    /// The wire field name, e.g. `transactionPointA`.
    pub field: String,
    /// A human-readable reason, e.g. `more than 2 fraction digits`.
    pub reason: String,
}

impl Points {
    /// Fraction digits on the wire.
    pub const SCALE: u32 = 2;
    /// Zero points.
    pub const ZERO: Points = Points(0);

    /// Parses a wire string such as `"12.5"` or `"-10"` exactly.
    pub fn parse(field: &str, text: &str) -> Result<Self, AmountError> {
        parse_fixed(field, text, Self::SCALE).map(Points)
    }

    /// The number of hundredths.
    pub fn hundredths(self) -> i64 {
        self.0
    }

    /// Whole points, from an integer number of points (test and CLI convenience).
    pub fn whole(points: i64) -> Self {
        Points(points * 100)
    }
}

impl Grams {
    /// Fraction digits of kilograms on the wire.
    pub const SCALE: u32 = 3;
    /// Zero grams.
    pub const ZERO: Grams = Grams(0);

    /// Parses a kilogram wire string such as `"1.25"` exactly into grams.
    pub fn parse_kg(field: &str, text: &str) -> Result<Self, AmountError> {
        parse_fixed(field, text, Self::SCALE).map(Grams)
    }

    /// The number of grams.
    pub fn grams(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Points {
    /// The shortest exact form: `"100"`, `"12.5"`, `"0.05"`, `"-3"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format_fixed(self.0, Self::SCALE))
    }
}

impl fmt::Display for Grams {
    /// Kilograms in the shortest exact form: `"1.25"` for 1250 g.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format_fixed(self.0, Self::SCALE))
    }
}

fn refuse(field: &str, reason: impl Into<String>) -> AmountError {
    AmountError { field: field.to_owned(), reason: reason.into() }
}

/// Parses `-?digits(.digits)?` into an integer scaled by `10^scale`, refusing anything that
/// would have to be rounded, any exponent, sign other than a leading `-`, or whitespace.
fn parse_fixed(field: &str, text: &str, scale: u32) -> Result<i64, AmountError> {
    if text.is_empty() {
        return Err(refuse(field, "empty amount"));
    }
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (body, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(refuse(
            field,
            format!("`{text}` is not a plain decimal number (digits, one optional `.`, optional leading `-`)"),
        ));
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > scale as usize {
        return Err(refuse(
            field,
            format!("`{text}` has more than {scale} fraction digits; amounts are never rounded"),
        ));
    }
    let whole_trimmed = whole.trim_start_matches('0');
    // 13 digits is the most a value ≤ 10^12 can have; checking length first avoids overflow.
    let too_large = || refuse(field, format!("`{text}` exceeds the largest accepted magnitude 10^12"));
    if whole_trimmed.len() > 13 {
        return Err(too_large());
    }
    let whole_value: i64 = if whole_trimmed.is_empty() { 0 } else { whole_trimmed.parse().map_err(|_| too_large())? };
    let mut fraction_value: i64 = 0;
    for digit in fraction.bytes() {
        fraction_value = fraction_value * 10 + i64::from(digit - b'0');
    }
    fraction_value *= 10_i64.pow(scale - fraction.len() as u32);
    let unit = 10_i64.pow(scale);
    let magnitude = whole_value * unit + fraction_value;
    if magnitude > MAX_WHOLE_UNITS * unit {
        return Err(too_large());
    }
    Ok(if negative { -magnitude } else { magnitude })
}

fn format_fixed(value: i64, scale: u32) -> String {
    let unit = 10_u64.pow(scale);
    let magnitude = value.unsigned_abs();
    let whole = magnitude / unit;
    let fraction = magnitude % unit;
    let sign = if value < 0 { "-" } else { "" };
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let digits = format!("{fraction:0width$}", width = scale as usize);
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_examples() {
        let cases = [
            ("123", 12300, "123"),
            ("12.5", 1250, "12.5"),
            ("12.50", 1250, "12.5"),
            ("0.05", 5, "0.05"),
            ("-10", -1000, "-10"),
            ("-0.01", -1, "-0.01"),
            ("007", 700, "7"),
            ("1000000000000", 100_000_000_000_000, "1000000000000"),
        ];
        for (text, hundredths, canonical) in cases {
            let points = Points::parse("p", text).unwrap();
            assert_eq!(points.hundredths(), hundredths, "{text}");
            assert_eq!(points.to_string(), canonical, "{text}");
        }
        assert_eq!(Grams::parse_kg("kg", "1.25").unwrap(), Grams(1250));
        assert_eq!(Grams(1250).to_string(), "1.25");
        assert_eq!(Grams(1).to_string(), "0.001");
    }

    #[test]
    fn refuses_what_is_not_exact_or_plain() {
        let bad = [
            "",
            " 1",
            "1 ",
            "+1",
            "1e3",
            "1E3",
            "NaN",
            "inf",
            ".5",
            "5.",
            "1.234",
            "1,5",
            "--1",
            "-",
            "1.2.3",
            "0x10",
            "1000000000000.01",
            "10000000000000",
            "99999999999999999999999",
        ];
        for text in bad {
            let err = Points::parse("transactionPointA", text).unwrap_err();
            assert_eq!(err.field, "transactionPointA", "{text}");
        }
        assert!(Grams::parse_kg("kg", "1.2345").is_err());
    }

    #[test]
    fn error_names_field_and_reason() {
        let err = Points::parse("transactionPointB", "1.001").unwrap_err();
        assert_eq!(
            err.to_string(),
            "transactionPointB: `1.001` has more than 2 fraction digits; amounts are never rounded"
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        const LIMIT_HUNDREDTHS: i64 = MAX_WHOLE_UNITS * 100;
        const LIMIT_GRAMS: i64 = MAX_WHOLE_UNITS * 1000;

        proptest! {
            #[test]
            fn points_parse_inverts_format(value in -LIMIT_HUNDREDTHS..=LIMIT_HUNDREDTHS) {
                let text = Points(value).to_string();
                prop_assert_eq!(Points::parse("p", &text).unwrap(), Points(value));
            }

            #[test]
            fn grams_parse_inverts_format(value in -LIMIT_GRAMS..=LIMIT_GRAMS) {
                let text = Grams(value).to_string();
                prop_assert_eq!(Grams::parse_kg("g", &text).unwrap(), Grams(value));
            }

            /// Any decimal with more fraction digits than the scale, whose extra digits are not
            /// all zero, is refused rather than rounded.
            #[test]
            fn never_rounds(whole in 0_i64..1_000_000, fraction in 1_u32..1000) {
                prop_assume!(fraction % 10 != 0);
                let text = format!("{whole}.{fraction:03}");
                prop_assert!(Points::parse("p", &text).is_err());
            }

            /// Whatever parses, formats back to a string that parses to the same value, and the
            /// value equals the decimal read by exact integer arithmetic.
            #[test]
            fn parsed_value_is_exact(whole in 0_i64..10_000_000, cents in 0_i64..100, negative: bool) {
                let text = format!("{}{whole}.{cents:02}", if negative { "-" } else { "" });
                let parsed = Points::parse("p", &text).unwrap();
                let expected = (whole * 100 + cents) * if negative { -1 } else { 1 };
                prop_assert_eq!(parsed, Points(expected));
                prop_assert_eq!(Points::parse("p", &parsed.to_string()).unwrap(), parsed);
            }
        }
    }
}
