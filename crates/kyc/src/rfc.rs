//! The Mexican RFC (Registro Federal de Contribuyentes), format only.
//!
//! * Persona moral (a business), 12 characters: 3 name characters from `[A-Z Ñ &]`, the date
//!   `YYMMDD`, a 3-character homoclave.
//! * Persona física (an individual), 13 characters: 4 name characters from `[A-Z Ñ &]`, the date
//!   `YYMMDD`, a 3-character homoclave.
//!
//! The homoclave is two characters from `[A-Z0-9]` followed by the check digit, which SAT
//! computes modulo 11 and so is always one of `[0-9A]`. Only the format and the date are
//! checked: the check digit's *value* is not verified (nor SAT's list of forbidden words), so a
//! well-formed RFC that SAT never issued is accepted. The generic RFCs `XAXX010101000` and
//! `XEXX010101000` are well-formed.
//!
//! The date must exist as `19YY-MM-DD` or as `20YY-MM-DD`; so 29 February is accepted for
//! `YY = 00` (2000 was a leap year) and every `YY` divisible by 4.
//!
//! Input is trimmed, ASCII letters are uppercased and `ñ` becomes `Ñ`. `Ñ` counts as one
//! character (a decomposed `N` + combining tilde is refused). Errors give the length or the
//! 1-based position of the problem, never the input's text.

use std::fmt;

/// Length of a persona moral RFC, in characters.
pub const RFC_MORAL_LEN: usize = 12;
/// Length of a persona física RFC, in characters.
pub const RFC_FISICA_LEN: usize = 13;

/// What is wrong with an RFC. Never contains the input's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RfcError {
    /// The input has neither 12 nor 13 characters after trimming.
    #[error(
        "RFC has {len_chars} characters: expected {RFC_MORAL_LEN} (persona moral) or \
         {RFC_FISICA_LEN} (persona física)"
    )]
    InvalidLength {
        /// The number of characters after trimming.
        len_chars: usize,
    },
    /// A character is not allowed at its position.
    #[error("RFC character {position} is invalid: expected {expected}")]
    InvalidChar {
        /// The position, counted from 1.
        position: usize,
        /// What is allowed there.
        expected: &'static str,
    },
    /// The `YYMMDD` part is not a calendar date.
    #[error("RFC date is invalid: {reason}")]
    InvalidDate {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The kind of taxpayer an RFC names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RfcKind {
    /// Persona moral: a business, 12 characters.
    Moral,
    /// Persona física: an individual, 13 characters.
    Fisica,
}

/// A well-formed RFC, uppercase. Its `Debug` shows the text: an individual's RFC is personal
/// data (it holds the birth date), so wrap it in [`crate::Redacted`] before logging.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rfc {
    text: String,
    kind: RfcKind,
}

const NAME_EXPECTED: &str = "a letter A-Z, Ñ or &";
const DIGIT_EXPECTED: &str = "a digit 0-9 (date YYMMDD)";
const HOMOCLAVE_EXPECTED: &str = "a letter A-Z or digit 0-9 (homoclave)";
const CHECK_DIGIT_EXPECTED: &str = "a digit 0-9 or A (check digit)";

fn is_name_char(c: char) -> bool {
    c.is_ascii_uppercase() || c == 'Ñ' || c == '&'
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Checks `YYMMDD` (six ASCII digits): valid if it exists in 19YY or 20YY.
fn check_date(digits: &[u32; 6]) -> Result<(), RfcError> {
    let [y1, y2, m1, m2, d1, d2] = *digits;
    let yy = y1 * 10 + y2;
    let month = m1 * 10 + m2;
    let day = d1 * 10 + d2;
    if !(1..=12).contains(&month) {
        return Err(RfcError::InvalidDate { reason: "month must be 01 to 12" });
    }
    let day_max = days_in_month(1900 + yy, month).max(days_in_month(2000 + yy, month));
    if day == 0 || day > day_max {
        return Err(RfcError::InvalidDate { reason: "day does not exist in that month" });
    }
    Ok(())
}

impl Rfc {
    /// Parses and normalizes an RFC; see the module documentation for the rules.
    pub fn parse(input: &str) -> Result<Rfc, RfcError> {
        let trimmed = input.trim();
        let chars: Vec<char> = trimmed
            .chars()
            .take(RFC_FISICA_LEN + 1)
            .map(|c| if c == 'ñ' { 'Ñ' } else { c.to_ascii_uppercase() })
            .collect();
        let (kind, name_len) = match chars.len() {
            RFC_MORAL_LEN => (RfcKind::Moral, 3),
            RFC_FISICA_LEN => (RfcKind::Fisica, 4),
            _ => return Err(RfcError::InvalidLength { len_chars: trimmed.chars().count() }),
        };
        let mut digits = [0u32; 6];
        for (i, &c) in chars.iter().enumerate() {
            let position = i + 1;
            let ok = if i < name_len {
                is_name_char(c)
            } else if i < name_len + 6 {
                match c.to_digit(10) {
                    Some(d) if c.is_ascii_digit() => {
                        digits[i - name_len] = d;
                        true
                    }
                    _ => false,
                }
            } else if i < name_len + 8 {
                c.is_ascii_uppercase() || c.is_ascii_digit()
            } else {
                c.is_ascii_digit() || c == 'A'
            };
            if !ok {
                let expected = if i < name_len {
                    NAME_EXPECTED
                } else if i < name_len + 6 {
                    DIGIT_EXPECTED
                } else if i < name_len + 8 {
                    HOMOCLAVE_EXPECTED
                } else {
                    CHECK_DIGIT_EXPECTED
                };
                return Err(RfcError::InvalidChar { position, expected });
            }
        }
        check_date(&digits)?;
        Ok(Rfc { text: chars.into_iter().collect(), kind })
    }

    /// The normalized text (uppercase, trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Persona moral or física.
    pub fn kind(&self) -> RfcKind {
        self.kind
    }
}

impl fmt::Display for Rfc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples_accepted() {
        let moral = Rfc::parse("ABC010101AB1").unwrap();
        assert_eq!((moral.as_str(), moral.kind()), ("ABC010101AB1", RfcKind::Moral));
        let fisica = Rfc::parse("GODE561231GR8").unwrap();
        assert_eq!((fisica.as_str(), fisica.kind()), ("GODE561231GR8", RfcKind::Fisica));
        assert_eq!(Rfc::parse("XAXX010101000").unwrap().kind(), RfcKind::Fisica);
        assert_eq!(Rfc::parse("XEXX010101000").unwrap().kind(), RfcKind::Fisica);
        let lower = Rfc::parse("  abc010101ab1\n").unwrap();
        assert_eq!(lower.as_str(), "ABC010101AB1");
        assert_eq!(lower.to_string(), "ABC010101AB1");
        let enie = Rfc::parse("ñ&O840229AAA").unwrap();
        assert_eq!(enie.as_str(), "Ñ&O840229AAA");
        assert_eq!(enie.kind(), RfcKind::Moral);
        assert_eq!(Rfc::parse("MUÑO850101XY9").unwrap().kind(), RfcKind::Fisica);
    }

    #[test]
    fn examples_refused() {
        assert_eq!(
            Rfc::parse("ABC0101011AB").unwrap_err(),
            RfcError::InvalidChar { position: 12, expected: CHECK_DIGIT_EXPECTED }
        );
        assert_eq!(
            Rfc::parse("ABC011301AB1").unwrap_err(),
            RfcError::InvalidDate { reason: "month must be 01 to 12" }
        );
        assert_eq!(
            Rfc::parse("ABC010230AB1").unwrap_err(),
            RfcError::InvalidDate { reason: "day does not exist in that month" }
        );
        assert!(matches!(Rfc::parse("ABC010100AB1"), Err(RfcError::InvalidDate { .. })));
        assert!(matches!(Rfc::parse("ABC010431AB1"), Err(RfcError::InvalidDate { .. })));
        assert!(matches!(Rfc::parse("ABC000001AB1"), Err(RfcError::InvalidDate { .. })));
        assert_eq!(Rfc::parse("").unwrap_err(), RfcError::InvalidLength { len_chars: 0 });
        assert_eq!(Rfc::parse("ABC010101AB").unwrap_err(), RfcError::InvalidLength { len_chars: 11 });
        assert_eq!(Rfc::parse("ABCDE010101AB1").unwrap_err(), RfcError::InvalidLength { len_chars: 14 });
        assert_eq!(
            Rfc::parse("AB1010101AB1").unwrap_err(),
            RfcError::InvalidChar { position: 3, expected: NAME_EXPECTED }
        );
        assert_eq!(
            Rfc::parse("ABC01O101AB1").unwrap_err(),
            RfcError::InvalidChar { position: 6, expected: DIGIT_EXPECTED }
        );
        assert_eq!(
            Rfc::parse("ABC010101-B1").unwrap_err(),
            RfcError::InvalidChar { position: 10, expected: HOMOCLAVE_EXPECTED }
        );
        assert_eq!(
            Rfc::parse("ABC010101ÑB1").unwrap_err(),
            RfcError::InvalidChar { position: 10, expected: HOMOCLAVE_EXPECTED }
        );
        // Arabic-Indic digits are digits to Unicode, not to an RFC.
        assert!(matches!(Rfc::parse("ABC01010١AB1"), Err(RfcError::InvalidChar { position: 9, .. })));
        // Decomposed Ñ is two characters.
        assert!(matches!(Rfc::parse("N\u{303}BC010101AB1"), Err(RfcError::InvalidChar { position: 2, .. })));
        assert!(matches!(Rfc::parse("AB C010101AB1"), Err(RfcError::InvalidChar { position: 3, .. })));
    }

    #[test]
    fn leap_days() {
        assert!(Rfc::parse("ABC000229AB1").is_ok(), "2000 was leap");
        assert!(Rfc::parse("ABC040229AB1").is_ok());
        assert!(Rfc::parse("ABC960229AB1").is_ok());
        assert!(Rfc::parse("ABC010229AB1").is_err());
        assert!(Rfc::parse("ABC990229AB1").is_err());
        assert!(Rfc::parse("ABC000230AB1").is_err());
    }

    #[test]
    fn errors_do_not_echo_input() {
        for input in ["GODE561231GR", "GODE56123XGR8", "GODE561331GR8", "GODE561231GR8XYZ"] {
            let shown = format!("{0} {0:?}", Rfc::parse(input).unwrap_err());
            assert!(!shown.contains("GODE") && !shown.contains("5612"), "{shown}");
        }
    }

    fn name_char() -> impl Strategy<Value = char> {
        prop_oneof![
            10 => proptest::char::range('A', 'Z'),
            1 => Just('Ñ'),
            1 => Just('&'),
            1 => Just('ñ'),
            3 => proptest::char::range('a', 'z'),
        ]
    }

    fn alnum() -> impl Strategy<Value = char> {
        prop_oneof![
            proptest::char::range('A', 'Z'),
            proptest::char::range('a', 'z'),
            proptest::char::range('0', '9')
        ]
    }

    fn check_char() -> impl Strategy<Value = char> {
        prop_oneof![proptest::char::range('0', '9'), Just('A'), Just('a')]
    }

    /// A valid date as YYMMDD, with the day drawn among the days of the month in 19YY or 20YY.
    fn date() -> impl Strategy<Value = String> {
        (0u32..100, 1u32..=12).prop_flat_map(|(yy, month)| {
            let day_max = days_in_month(1900 + yy, month).max(days_in_month(2000 + yy, month));
            (1..=day_max).prop_map(move |day| format!("{yy:02}{month:02}{day:02}"))
        })
    }

    proptest! {
        #[test]
        fn never_panics(input in any::<String>()) {
            let _ = Rfc::parse(&input);
        }

        #[test]
        fn never_panics_near_valid(
            input in "[A-Za-zÑñ& 0-9\u{303}١]{10,15}",
        ) {
            if let Ok(rfc) = Rfc::parse(&input) {
                prop_assert!(matches!(rfc.as_str().chars().count(), RFC_MORAL_LEN | RFC_FISICA_LEN));
            }
        }

        #[test]
        fn grammar_accepted(
            fisica in any::<bool>(),
            name in proptest::collection::vec(name_char(), 4),
            date in date(),
            homoclave in proptest::collection::vec(alnum(), 2),
            check in check_char(),
            pad in "[ \t]{0,2}",
        ) {
            let name_len = if fisica { 4 } else { 3 };
            let body: String = name[..name_len]
                .iter()
                .chain(date.chars().collect::<Vec<_>>().iter())
                .chain(homoclave.iter())
                .chain(std::iter::once(&check))
                .collect();
            let input = format!("{pad}{body}{pad}");
            let rfc = Rfc::parse(&input);
            prop_assert!(rfc.is_ok(), "{:?} -> {:?}", input, rfc);
            let rfc = rfc.unwrap();
            let expected: String =
                body.chars().map(|c| if c == 'ñ' { 'Ñ' } else { c.to_ascii_uppercase() }).collect();
            prop_assert_eq!(rfc.as_str(), expected.as_str());
            prop_assert_eq!(rfc.kind(), if fisica { RfcKind::Fisica } else { RfcKind::Moral });
            prop_assert_eq!(Rfc::parse(rfc.as_str()).unwrap(), rfc);
        }

        #[test]
        fn invalid_dates_refused(yy in 0u32..100, month in 0u32..=99, day in 0u32..=99) {
            let valid = (1..=12).contains(&month)
                && day >= 1
                && day <= days_in_month(1900 + yy, month).max(days_in_month(2000 + yy, month));
            let input = format!("ABC{yy:02}{month:02}{day:02}AB1");
            prop_assert_eq!(Rfc::parse(&input).is_ok(), valid, "{}", input);
        }
    }
}
