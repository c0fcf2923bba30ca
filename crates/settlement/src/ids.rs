//! Bank identifiers and their check digits: CLABE (18 digits, weights 3-7-1 mod 10 over the
//! first 17) and ABA routing numbers (9 digits, 3(d1+d4+d7) + 7(d2+d5+d8) + (d3+d6+d9) ≡ 0 mod 10).

/// Checks a CLABE: 18 digits (3 bank, 3 city, 11 account, 1 check digit). For i = 0..16,
/// pᵢ = (dᵢ · wᵢ) mod 10 with weights 3, 7, 1 repeating; check = (10 − Σpᵢ mod 10) mod 10.
pub fn clabe_valid(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if text.len() != 18 || digits.len() != 18 {
        return false;
    }
    clabe_check_digit(&digits[..17]) == digits[17]
}

/// The check digit of the first 17 digits of a CLABE.
pub fn clabe_check_digit(first17: &[u32]) -> u32 {
    const WEIGHTS: [u32; 3] = [3, 7, 1];
    let sum: u32 = first17.iter().enumerate().map(|(i, d)| (d * WEIGHTS[i % 3]) % 10).sum();
    (10 - sum % 10) % 10
}

/// Checks an ABA routing number: 9 digits with 3(d1+d4+d7) + 7(d2+d5+d8) + (d3+d6+d9) ≡ 0
/// (mod 10).
pub fn aba_valid(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if text.len() != 9 || digits.len() != 9 {
        return false;
    }
    aba_check_digit(&digits[..8]) == digits[8]
}

/// The ninth digit that makes the first eight digits a valid ABA routing number.
pub fn aba_check_digit(first8: &[u32]) -> u32 {
    let weighted = 3 * (first8[0] + first8[3] + first8[6])
        + 7 * (first8[1] + first8[4] + first8[7])
        + first8[2]
        + first8[5];
    (10 - weighted % 10) % 10
}

/// Checks a BIC (ISO 9362: 4 letters/digits institution, 2 letters country, 2 letters/digits
/// location, optional 3 letters/digits branch), as the ISO 20022 `BICFIDec2014Identifier`.
pub fn bic_valid(text: &str) -> bool {
    let b = text.as_bytes();
    let alnum = |c: &u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    (b.len() == 8 || b.len() == 11)
        && b[..4].iter().all(alnum)
        && b[4..6].iter().all(u8::is_ascii_uppercase)
        && b[6..].iter().all(alnum)
}

/// Completes 17 digits into a valid CLABE.
pub fn make_clabe(first17: &str) -> Option<String> {
    let digits: Vec<u32> = first17.chars().filter_map(|c| c.to_digit(10)).collect();
    (first17.len() == 17 && digits.len() == 17).then(|| format!("{first17}{}", clabe_check_digit(&digits)))
}

/// Completes 8 digits into a valid ABA routing number.
pub fn make_aba(first8: &str) -> Option<String> {
    let digits: Vec<u32> = first8.chars().filter_map(|c| c.to_digit(10)).collect();
    (first8.len() == 8 && digits.len() == 8).then(|| format!("{first8}{}", aba_check_digit(&digits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_examples() {
        assert!(clabe_valid("032180000118359719"));
        assert!(!clabe_valid("032180000118359718"));
        assert!(!clabe_valid("03218000011835971"));
        assert!(!clabe_valid("03218000011835971a"));
        assert!(aba_valid("021000021"));
        assert!(aba_valid("011000015"));
        assert!(!aba_valid("021000022"));
        assert!(!aba_valid("02100002"));
        assert!(!aba_valid("+21000021"));
        assert_eq!(make_clabe("03218000011835971").as_deref(), Some("032180000118359719"));
        assert_eq!(make_aba("02100002").as_deref(), Some("021000021"));
        assert!(bic_valid("BOFAUS3N") && bic_valid("BNMXMXMMXXX"));
        assert!(!bic_valid("bofaus3n") && !bic_valid("BOFA12") && !bic_valid("BOFAU53N"));
    }

    #[test]
    fn every_single_digit_error_is_caught() {
        for (valid, check) in
            [("032180000118359719", clabe_valid as fn(&str) -> bool), ("021000021", aba_valid)]
        {
            for i in 0..valid.len() {
                for d in b'0'..=b'9' {
                    let mut bytes = valid.as_bytes().to_vec();
                    if bytes[i] == d {
                        continue;
                    }
                    bytes[i] = d;
                    assert!(!check(std::str::from_utf8(&bytes).unwrap()), "{valid} digit {i}");
                }
            }
        }
    }
}

/// Property targets for the bank-identifier validators (outside input from profiles).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// The ABA checksum written out from its definition, independent of `aba_check_digit`.
    fn aba_checksum_holds(text: &str) -> bool {
        let d: Vec<u32> = text.bytes().map(|b| u32::from(b - b'0')).collect();
        (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5] + d[8])).is_multiple_of(10)
    }

    /// The CLABE check digit written out from its definition (Banxico: weights 3, 7, 1; each
    /// product taken mod 10; check = (10 − sum mod 10) mod 10).
    fn clabe_check_holds(text: &str) -> bool {
        let d: Vec<u32> = text.bytes().map(|b| u32::from(b - b'0')).collect();
        let weights = [3, 7, 1, 3, 7, 1, 3, 7, 1, 3, 7, 1, 3, 7, 1, 3, 7];
        let sum: u32 = (0..17).map(|i| d[i] * weights[i] % 10).sum();
        (10 - sum % 10) % 10 == d[17]
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9]{0,20}",
            "[0-9 +\\-a]{8,19}",
            "[A-Z0-9]{0,12}",
            "\\PC{0,20}",
            (any::<String>(), 1usize..2_000).prop_map(|(s, n)| s.repeat(n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn validators_never_panic_on_any_text(text in any_text()) {
            let aba = aba_valid(&text);
            let clabe = clabe_valid(&text);
            let _ = bic_valid(&text);
            prop_assert!(!aba || (text.len() == 9 && text.bytes().all(|b| b.is_ascii_digit())));
            prop_assert!(!clabe || (text.len() == 18 && text.bytes().all(|b| b.is_ascii_digit())));
            if let Some(clabe) = make_clabe(&text) {
                prop_assert!(clabe_valid(&clabe) && clabe.starts_with(&text));
            }
            if let Some(aba) = make_aba(&text) {
                prop_assert!(aba_valid(&aba) && aba.starts_with(&text));
            }
        }

        #[test]
        fn aba_accepted_exactly_when_the_weighted_checksum_holds(text in "[0-9]{9}") {
            prop_assert_eq!(aba_valid(&text), aba_checksum_holds(&text), "{}", text);
            prop_assert!(aba_checksum_holds(&make_aba(&text[..8]).unwrap()));
        }

        #[test]
        fn clabe_accepted_exactly_when_the_check_digit_is_right(text in "[0-9]{18}") {
            prop_assert_eq!(clabe_valid(&text), clabe_check_holds(&text), "{}", text);
            prop_assert!(clabe_check_holds(&make_clabe(&text[..17]).unwrap()));
        }
    }
}
