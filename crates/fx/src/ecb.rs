//! Importer for the European Central Bank reference-rate history (`eurofxref-hist.csv`).
//!
//! Format: a header `Date,USD,JPY,...,` then one line per business day, newest first, each
//! `YYYY-MM-DD,<rate>,<rate>,...,`; rates are units of the currency per 1 EUR, `N/A` (or an
//! empty cell) where the ECB published none; every line may end with a trailing comma; `\n` or
//! `\r\n` line ends.

use std::collections::BTreeMap;

use puente_money::CurrencyCode;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::error::FxError;
use crate::rates::{Pair, RateBook};

/// Largest input accepted, in bytes (the full history since 1999 is about 1.9 MB).
pub const ECB_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Most lines accepted, header included (about 77 years of business days).
pub const ECB_MAX_LINES: usize = 20_000;
/// Most currency columns accepted.
pub const ECB_MAX_COLUMNS: usize = 64;
/// Longest rate cell accepted, in bytes.
pub const ECB_FIELD_LEN_MAX: usize = 16;
/// Decimal places of cross rates computed from the file (`MXN ÷ USD` for USD/MXN), rounded
/// half-even (banker's rounding).
pub const ECB_CROSS_DP: u32 = 6;

fn is_eur(code: CurrencyCode) -> bool {
    code.as_bytes() == *b"EUR"
}

/// One business day of ECB reference rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcbDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// USD/MXN (MXN per 1 USD) = `MXN per EUR ÷ USD per EUR`, rounded half-even to
    /// [`ECB_CROSS_DP`] decimals; `None` when either is missing that day.
    pub usd_mxn: Option<Decimal>,
    /// Units of each currency per 1 EUR, as published (only the currencies quoted that day).
    pub rates_per_eur: BTreeMap<CurrencyCode, Decimal>,
}

impl EcbDay {
    /// Units of `code` per 1 EUR (`1` for EUR itself).
    pub fn per_eur(&self, code: CurrencyCode) -> Option<Decimal> {
        if is_eur(code) {
            return Some(Decimal::ONE);
        }
        self.rates_per_eur.get(&code).copied()
    }

    /// The cross rate `quote` per 1 `base` (`per_eur(quote) ÷ per_eur(base)`), rounded half-even
    /// to [`ECB_CROSS_DP`] decimals and normalized. `None` when a leg is missing or the result
    /// rounds to zero.
    pub fn cross(&self, base: CurrencyCode, quote: CurrencyCode) -> Option<Decimal> {
        let value = self.per_eur(quote)?.checked_div(self.per_eur(base)?)?;
        let rounded =
            value.round_dp_with_strategy(ECB_CROSS_DP, RoundingStrategy::MidpointNearestEven).normalize();
        if rounded.is_zero() { None } else { Some(rounded) }
    }

    /// Sets `USD/<code>` in `book` for every currency quoted that day (EUR included), from
    /// [`EcbDay::cross`], dated `as_of_ms`, source `"ecb"`. With a book crossing through USD
    /// this prices any pair of them. Returns how many pairs were set.
    pub fn load_into(&self, book: &mut RateBook, as_of_ms: u64) -> Result<usize, FxError> {
        let usd = CurrencyCode::USD;
        if !self.rates_per_eur.contains_key(&usd) {
            return Ok(0);
        }
        let eur = CurrencyCode::parse("EUR")?;
        let mut count = 0;
        for code in self.rates_per_eur.keys().copied().chain([eur]) {
            if code == usd {
                continue;
            }
            if let Some(rate) = self.cross(usd, code) {
                book.set(Pair::new(usd, code)?, rate, as_of_ms, "ecb")?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Midnight UTC at the start of `date`, in unix milliseconds.
    pub fn date_ms(&self) -> Result<u64, FxError> {
        date_to_unix_ms(&self.date)
    }
}

/// Parses `YYYY-MM-DD` (years 1970..=9999) into unix milliseconds at midnight UTC.
pub fn date_to_unix_ms(date: &str) -> Result<u64, FxError> {
    let (year, month, day) =
        parse_date(date).ok_or(FxError::InvalidArgument("date is not a valid YYYY-MM-DD"))?;
    if year < 1970 {
        return Err(FxError::InvalidArgument("date before 1970"));
    }
    // Days from civil (proleptic Gregorian), H. Hinnant's algorithm, all non-negative here.
    let y = if month <= 2 { year - 1 } else { year } as u64;
    let era = y / 400;
    let yoe = y - era * 400;
    let m = month as u64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as u64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400_000)
}

fn parse_date(text: &str) -> Option<(u32, u32, u32)> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &bytes[range];
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0u32, |acc, b| acc * 10 + (b - b'0') as u32))
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year == 0 || day == 0 || day > days_in_month {
        return None;
    }
    Some((year, month, day))
}

fn parse_rate(cell: &str, line: usize) -> Result<Option<Decimal>, FxError> {
    if cell.is_empty() || cell == "N/A" {
        return Ok(None);
    }
    let bad = || FxError::EcbFormat { line, reason: "rate is not a positive decimal" };
    if cell.len() > ECB_FIELD_LEN_MAX {
        return Err(FxError::EcbFormat { line, reason: "rate cell too long" });
    }
    if cell.starts_with('.')
        || cell.ends_with('.')
        || !cell.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || cell.bytes().filter(|b| *b == b'.').count() > 1
    {
        return Err(bad());
    }
    let value = Decimal::from_str_exact(cell).map_err(|_| bad())?;
    if value.is_zero() {
        return Err(bad());
    }
    Ok(Some(value.normalize()))
}

/// Splits a line into cells, dropping one trailing empty cell (the trailing comma).
fn cells(line: &str) -> Vec<&str> {
    let mut cells: Vec<&str> = line.split(',').collect();
    if cells.len() > 1 && cells.last() == Some(&"") {
        cells.pop();
    }
    cells
}

/// Parses the ECB history file. Bounded: rejects input over [`ECB_MAX_BYTES`] bytes,
/// [`ECB_MAX_LINES`] lines or [`ECB_MAX_COLUMNS`] currencies. Strict: every row must have as
/// many cells as the header, dates must be valid and strictly decreasing (newest first), rates
/// positive plain decimals or `N/A`. Blank lines are skipped. Returns days newest first.
pub fn parse_ecb_csv(text: &str) -> Result<Vec<EcbDay>, FxError> {
    if text.len() > ECB_MAX_BYTES {
        return Err(FxError::LimitExceeded { what: "ECB file size (bytes)", limit: ECB_MAX_BYTES as u64 });
    }
    let mut lines = text.split('\n').enumerate().map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let Some((_, header)) = lines.next() else {
        return Err(FxError::EcbFormat { line: 1, reason: "empty file" });
    };
    let header = cells(header);
    if header.first() != Some(&"Date") {
        return Err(FxError::EcbFormat { line: 1, reason: "header must start with Date" });
    }
    let columns = header.len() - 1;
    if columns > ECB_MAX_COLUMNS {
        return Err(FxError::LimitExceeded { what: "ECB currency columns", limit: ECB_MAX_COLUMNS as u64 });
    }
    let mut codes = Vec::with_capacity(columns);
    for cell in &header[1..] {
        let code = CurrencyCode::parse(cell)
            .map_err(|_| FxError::EcbFormat { line: 1, reason: "header cell is not a currency code" })?;
        if codes.contains(&code) || is_eur(code) {
            return Err(FxError::EcbFormat { line: 1, reason: "duplicate or EUR currency column" });
        }
        codes.push(code);
    }
    let mut days: Vec<EcbDay> = Vec::new();
    for (number, line) in lines {
        if number > ECB_MAX_LINES {
            return Err(FxError::LimitExceeded { what: "ECB file lines", limit: ECB_MAX_LINES as u64 });
        }
        if line.trim().is_empty() {
            continue;
        }
        let row = cells(line);
        if row.len() != header.len() {
            return Err(FxError::EcbFormat { line: number, reason: "cell count differs from header" });
        }
        let date = row[0];
        if parse_date(date).is_none() {
            return Err(FxError::EcbFormat { line: number, reason: "invalid date" });
        }
        if days.last().is_some_and(|previous| date >= previous.date.as_str()) {
            return Err(FxError::EcbFormat { line: number, reason: "dates must be strictly decreasing" });
        }
        let mut rates_per_eur = BTreeMap::new();
        for (code, cell) in codes.iter().zip(&row[1..]) {
            if let Some(rate) = parse_rate(cell, number)? {
                rates_per_eur.insert(*code, rate);
            }
        }
        let mut day = EcbDay { date: date.to_owned(), usd_mxn: None, rates_per_eur };
        day.usd_mxn = day.cross(CurrencyCode::USD, CurrencyCode::MXN);
        days.push(day);
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const SAMPLE: &str = "Date,USD,JPY,MXN,CAD,\n\
        2026-10-30,1.1172,175.68,21.1237,1.5606,\n\
        2026-10-29,1.113,175.92,N/A,1.5577,\r\n\
        1999-01-04,1.1789,133.73,N/A,1.8004,\n";

    #[test]
    fn parses_sample_and_crosses() {
        let days = parse_ecb_csv(SAMPLE).unwrap();
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].date, "2026-10-30");
        // 21.1237 / 1.1172 = 18.907715717866...
        assert_eq!(days[0].usd_mxn, Some(Decimal::from_str("18.907716").unwrap()));
        assert_eq!(days[1].usd_mxn, None);
        assert_eq!(days[0].per_eur(CurrencyCode::CAD), Some(Decimal::from_str("1.5606").unwrap()));
        assert_eq!(days[0].per_eur(CurrencyCode::parse("EUR").unwrap()), Some(Decimal::ONE));
        assert_eq!(
            days[0].cross(CurrencyCode::USD, CurrencyCode::CAD),
            Some(Decimal::from_str("1.396885").unwrap())
        );
        assert_eq!(days[2].date_ms().unwrap(), 915_408_000_000);
        assert_eq!(date_to_unix_ms("1970-01-01").unwrap(), 0);
        assert_eq!(date_to_unix_ms("2024-02-29").unwrap(), 1_709_164_800_000);
        assert!(date_to_unix_ms("2023-02-29").is_err());
    }

    #[test]
    fn loads_usd_crosses_into_a_book() {
        let days = parse_ecb_csv(SAMPLE).unwrap();
        let mut book = RateBook::with_cross_currency(CurrencyCode::USD);
        assert_eq!(days[0].load_into(&mut book, 5).unwrap(), 4); // JPY, MXN, CAD, EUR
        let usd_mxn = Pair::new(CurrencyCode::USD, CurrencyCode::MXN).unwrap();
        assert_eq!(book.get(usd_mxn, 5, 0).unwrap().mid, days[0].usd_mxn.unwrap());
        let cad_mxn = Pair::new(CurrencyCode::CAD, CurrencyCode::MXN).unwrap();
        // (21.1237/1.1172 rounded) / (1.5606/1.1172 rounded), 12 significant digits.
        assert_eq!(book.get(cad_mxn, 5, 0).unwrap().mid, Decimal::from_str("13.5356282013").unwrap());
    }

    #[test]
    fn rejects_malformed_input() {
        let bad = [
            "",
            "Day,USD,\n2026-01-01,1,\n",
            "Date,usd,\n",
            "Date,USD,USD,\n",
            "Date,USD,\n2026-01-01,1,2,\n",
            "Date,USD,\n2026-13-01,1,\n",
            "Date,USD,\n2026-01-01,-1,\n",
            "Date,USD,\n2026-01-01,1e3,\n",
            "Date,USD,\n2026-01-01,0,\n",
            "Date,USD,\n2026-01-01,12345678901234567,\n",
            "Date,USD,\n2026-01-01,1,\n2026-01-02,1,\n",
            "Date,USD,\n2026-01-01,1,\n2026-01-01,1,\n",
        ];
        for text in bad {
            assert!(parse_ecb_csv(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn enforces_limits() {
        let big = "x".repeat(ECB_MAX_BYTES + 1);
        assert!(matches!(parse_ecb_csv(&big), Err(FxError::LimitExceeded { .. })));
        let many = format!("Date,USD,\n{}", "\n".repeat(ECB_MAX_LINES));
        assert!(matches!(parse_ecb_csv(&many), Err(FxError::LimitExceeded { .. })));
        let mut header = String::from("Date");
        for i in 0..=ECB_MAX_COLUMNS {
            let code = [b'A' + (i / 26) as u8, b'A' + (i % 26) as u8, b'Q'];
            header.push(',');
            header.push_str(std::str::from_utf8(&code).unwrap());
        }
        assert!(matches!(parse_ecb_csv(&header), Err(FxError::LimitExceeded { .. })));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_ecb_csv(&text);
            let _ = parse_ecb_csv(&format!("Date,USD,MXN,\n{text}"));
        }
    }
}
