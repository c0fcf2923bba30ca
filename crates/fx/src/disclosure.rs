//! Regulation E (12 CFR 1005 subpart B) disclosures built from a quote: the pre-payment
//! disclosure ([`Disclosure::from_quote`]) and the receipt given once paid
//! ([`Disclosure::receipt`]). Both state the date funds will be available to the recipient
//! (§1005.31(b)(2)(ii)) and, for remittances, the cancellation window actually enforced.

use puente_money::{Currency, CurrencyTable, Rounding};
use rust_decimal::Decimal;

use crate::decimal::{convert_minor, convert_minor_inverse};
use crate::error::FxError;
use crate::pricing::Segment;
use crate::quote::{Quote, QuoteId};

/// The sender's right to cancel a remittance transfer for a full refund: 30 minutes after
/// payment (unless the funds were already picked up or deposited), 12 CFR 1005.34. A provider
/// may grant longer, never shorter: the server refuses a shorter configured window.
pub const CANCELLATION_WINDOW_MS: u64 = 30 * 60 * 1_000;

/// Language of a rendered disclosure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Es,
}

/// The figures a sender must see before paying. All amounts in minor units of the named
/// currency; they add up exactly (see [`Disclosure::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclosure {
    pub quote_id: QuoteId,
    pub send_currency: Currency,
    pub receive_currency: Currency,
    /// Amount transferred (converted), in the send currency.
    pub transfer_amount_minor: u64,
    /// The provider's fees, in the send currency.
    pub transfer_fees_minor: u64,
    /// Taxes collected by the provider, in the send currency (zero unless configured).
    pub transfer_taxes_minor: u64,
    /// `transfer_amount + transfer_fees + transfer_taxes`.
    pub total_minor: u64,
    /// Units of the receive currency per 1 unit of the send currency.
    pub exchange_rate: Decimal,
    /// Amount transferred in the recipient's currency (before covered third-party fees).
    pub converted_amount_minor: u64,
    /// Covered third-party fees, in the receive currency.
    pub third_party_fees_minor: u64,
    /// `converted_amount − third_party_fees`: the amount received.
    pub received_minor: u64,
    /// For consumer remittances (segment `Remittance`), the cancellation window enforced;
    /// `None` otherwise.
    pub cancellation_window_ms: Option<u64>,
    pub valid_until_ms: u64,
    /// When the funds are available to the recipient: a held remittance posts when its
    /// cancellation window closes, anything else when paid. Before payment (a quote) this is
    /// the latest such time if paid while the quote is valid ("no later than").
    pub funds_available_ms: u64,
    /// `Some(paid_at_ms)` for a receipt; `None` for the pre-payment disclosure.
    pub paid_at_ms: Option<u64>,
}

impl Disclosure {
    /// Builds the pre-payment disclosure for `quote`, with the remittance cancellation window
    /// the server enforces; fails if the quote's figures do not add up.
    pub fn from_quote(
        quote: &Quote,
        currencies: &CurrencyTable,
        cancellation_window_ms: u64,
    ) -> Result<Self, FxError> {
        Disclosure::build(quote, currencies, cancellation_window_ms, None)
    }

    /// Builds the receipt for `quote` paid at `paid_at_ms`, held (for a remittance) for
    /// `cancellation_window_ms`.
    pub fn receipt(
        quote: &Quote,
        currencies: &CurrencyTable,
        cancellation_window_ms: u64,
        paid_at_ms: u64,
    ) -> Result<Self, FxError> {
        Disclosure::build(quote, currencies, cancellation_window_ms, Some(paid_at_ms))
    }

    fn build(
        quote: &Quote,
        currencies: &CurrencyTable,
        cancellation_window_ms: u64,
        paid_at_ms: Option<u64>,
    ) -> Result<Self, FxError> {
        quote.check_consistency()?;
        let window = (quote.segment == Segment::Remittance).then_some(cancellation_window_ms);
        // Paid at the latest when the quote expires.
        let paid = paid_at_ms.unwrap_or(quote.expires_at_ms);
        let funds_available_ms = paid.checked_add(window.unwrap_or(0)).ok_or(FxError::Overflow)?;
        let disclosure = Disclosure {
            quote_id: quote.id,
            send_currency: currencies.get(quote.pair.base)?,
            receive_currency: currencies.get(quote.pair.quote)?,
            transfer_amount_minor: quote.send_amount_minor,
            transfer_fees_minor: quote.fee_total_minor,
            transfer_taxes_minor: quote.tax_minor,
            total_minor: quote.total_debit_minor,
            exchange_rate: quote.customer_rate.normalize(),
            converted_amount_minor: quote.converted_amount_minor,
            third_party_fees_minor: quote.third_party_fee_minor,
            received_minor: quote.receive_amount_minor,
            cancellation_window_ms: window,
            valid_until_ms: quote.expires_at_ms,
            funds_available_ms,
            paid_at_ms,
        };
        disclosure.check()?;
        Ok(disclosure)
    }

    /// The figures add up exactly: total = amount + fees + taxes; received = converted −
    /// third-party fees; and converted is the documented rounding of amount × rate: either
    /// `floor(amount × rate)` (send fixed, or a tier-gap receive quote) or, for receive fixed,
    /// `amount = ceil(converted ÷ rate)` with `converted ≤ amount × rate`.
    pub fn check(&self) -> Result<(), FxError> {
        let bad = FxError::InconsistentQuote;
        let total = self
            .transfer_amount_minor
            .checked_add(self.transfer_fees_minor)
            .and_then(|v| v.checked_add(self.transfer_taxes_minor));
        if total != Some(self.total_minor) {
            return Err(bad("disclosed total is not amount + fees + taxes"));
        }
        if self.converted_amount_minor.checked_sub(self.third_party_fees_minor) != Some(self.received_minor) {
            return Err(bad("disclosed amount received is not converted − third-party fees"));
        }
        let (from, to) = (self.send_currency.scale, self.receive_currency.scale);
        let floor = convert_minor(self.transfer_amount_minor, self.exchange_rate, from, to, Rounding::Down)?;
        let ceil_send =
            convert_minor_inverse(self.converted_amount_minor, self.exchange_rate, from, to, Rounding::Up)?;
        if self.converted_amount_minor > floor {
            return Err(bad("converted amount exceeds amount × rate"));
        }
        if self.converted_amount_minor != floor && self.transfer_amount_minor != ceil_send {
            return Err(bad("converted amount is not a documented rounding of amount × rate"));
        }
        Ok(())
    }

    fn money(currency: &Currency, amount_minor: u64) -> String {
        format!("{} {}", currency.format_amount(amount_minor as u128), currency.code)
    }

    /// The disclosure (or receipt) as plain text in English or Spanish.
    pub fn render(&self, lang: Lang) -> String {
        let send = |amount| Self::money(&self.send_currency, amount);
        let receive = |amount| Self::money(&self.receive_currency, amount);
        let rate =
            format!("1 {} = {} {}", self.send_currency.code, self.exchange_rate, self.receive_currency.code);
        let available = format_utc(self.funds_available_ms);
        let funds = match (lang, self.paid_at_ms) {
            (Lang::En, None) => format!("no later than {available}, if paid before the quote expires"),
            (Lang::Es, None) => {
                format!("a más tardar el {available}, si se paga antes de que venza la cotización")
            }
            (_, Some(_)) => available,
        };
        let mut rows: Vec<(&str, String)> = match lang {
            Lang::En => vec![
                ("Transfer amount", send(self.transfer_amount_minor)),
                ("Transfer fees", send(self.transfer_fees_minor)),
                ("Transfer taxes", send(self.transfer_taxes_minor)),
                ("Total", send(self.total_minor)),
                ("Exchange rate", rate),
                ("Transfer amount", receive(self.converted_amount_minor)),
                ("Other fees (covered third-party)", receive(self.third_party_fees_minor)),
                ("Total to recipient", receive(self.received_minor)),
                ("Date funds available", funds),
            ],
            Lang::Es => vec![
                ("Cantidad a transferir", send(self.transfer_amount_minor)),
                ("Cargos de transferencia", send(self.transfer_fees_minor)),
                ("Impuestos de transferencia", send(self.transfer_taxes_minor)),
                ("Total", send(self.total_minor)),
                ("Tipo de cambio", rate),
                ("Cantidad transferida", receive(self.converted_amount_minor)),
                ("Otros cargos (de terceros cubiertos)", receive(self.third_party_fees_minor)),
                ("Total a recibir", receive(self.received_minor)),
                ("Fecha de disponibilidad de los fondos", funds),
            ],
        };
        match (lang, self.paid_at_ms) {
            (Lang::En, None) => rows.push(("Quote valid until", format_utc(self.valid_until_ms))),
            (Lang::Es, None) => rows.push(("Cotización válida hasta", format_utc(self.valid_until_ms))),
            (Lang::En, Some(paid)) => rows.insert(0, ("Date of payment", format_utc(paid))),
            (Lang::Es, Some(paid)) => rows.insert(0, ("Fecha de pago", format_utc(paid))),
        }
        let mut out = String::from(match (lang, self.paid_at_ms) {
            (Lang::En, None) => "PRE-PAYMENT DISCLOSURE\n",
            (Lang::Es, None) => "DIVULGACIÓN PREVIA AL PAGO\n",
            (Lang::En, Some(_)) => "RECEIPT\n",
            (Lang::Es, Some(_)) => "RECIBO\n",
        });
        for (label, value) in rows {
            out.push_str(&format!("{label}: {value}\n"));
        }
        out.push_str(match lang {
            Lang::En => "Other fees may apply: the recipient may receive less due to fees charged by the recipient's bank and foreign taxes.\n",
            Lang::Es => "Pueden aplicarse otros cargos: el destinatario podría recibir menos debido a cargos cobrados por el banco del destinatario e impuestos extranjeros.\n",
        });
        if let Some(window_ms) = self.cancellation_window_ms {
            out.push_str(&self.cancellation_right(window_ms, lang));
        }
        out
    }

    /// The right to cancel within `window_ms` of payment (with its end, on a receipt).
    fn cancellation_right(&self, window_ms: u64, lang: Lang) -> String {
        let window = duration_text(window_ms, lang);
        let until = self.paid_at_ms.and_then(|paid| paid.checked_add(window_ms)).map(format_utc);
        match (lang, until) {
            (Lang::En, None) => format!(
                "You have a right to cancel within {window} of payment for a full refund, including fees, unless the funds have been picked up or deposited.\n"
            ),
            (Lang::En, Some(until)) => format!(
                "You have a right to cancel within {window} of payment (until {until}) for a full refund, including fees, unless the funds have been picked up or deposited.\n"
            ),
            (Lang::Es, None) => format!(
                "Usted tiene derecho a cancelar dentro de los {window} siguientes a su pago para obtener un reembolso total, incluidos los cargos, a menos que los fondos ya hayan sido recogidos o depositados.\n"
            ),
            (Lang::Es, Some(until)) => format!(
                "Usted tiene derecho a cancelar dentro de los {window} siguientes a su pago (hasta el {until}) para obtener un reembolso total, incluidos los cargos, a menos que los fondos ya hayan sido recogidos o depositados.\n"
            ),
        }
    }
}

/// A window in the largest unit that states it exactly: "30 minutes", "90 seconds",
/// "1500 milliseconds" (Spanish: minutos, segundos, milisegundos).
fn duration_text(ms: u64, lang: Lang) -> String {
    let (n, unit) = if ms.is_multiple_of(60_000) {
        (ms / 60_000, ["minute", "minutes", "minuto", "minutos"])
    } else if ms.is_multiple_of(1_000) {
        (ms / 1_000, ["second", "seconds", "segundo", "segundos"])
    } else {
        (ms, ["millisecond", "milliseconds", "milisegundo", "milisegundos"])
    };
    let plural = usize::from(n != 1);
    let unit = match lang {
        Lang::En => unit[plural],
        Lang::Es => unit[2 + plural],
    };
    format!("{n} {unit}")
}

/// `YYYY-MM-DD HH:MM:SS UTC` for unix milliseconds (no clock read; pure arithmetic).
fn format_utc(unix_ms: u64) -> String {
    let seconds = unix_ms / 1_000;
    let (days, rem) = (seconds / 86_400, seconds % 86_400);
    // Civil from days (H. Hinnant), non-negative days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3_600, rem % 3_600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quote::tests::sample;

    #[test]
    fn renders_both_languages() {
        let quote = sample();
        let disclosure =
            Disclosure::from_quote(&quote, &CurrencyTable::default(), CANCELLATION_WINDOW_MS).unwrap();
        assert_eq!(disclosure.total_minor, 20_299);
        let en = disclosure.render(Lang::En);
        assert!(en.contains("Transfer amount: 200.00 USD"), "{en}");
        assert!(en.contains("Transfer fees: 2.99 USD"));
        assert!(en.contains("Total: 202.99 USD"));
        assert!(en.contains("Exchange rate: 1 USD = 16.99125 MXN"));
        assert!(en.contains("Total to recipient: 3398.25 MXN"));
        assert!(en.contains("Other fees may apply"));
        assert!(en.contains("within 30 minutes"));
        assert!(en.contains("1970-01-01 00:30:02 UTC"));
        let es = disclosure.render(Lang::Es);
        assert!(es.contains("Cantidad a transferir: 200.00 USD"), "{es}");
        assert!(es.contains("Tipo de cambio: 1 USD = 16.99125 MXN"));
        assert!(es.contains("Total a recibir: 3398.25 MXN"));
        assert!(es.contains("30 minutos"));
        let mut institution = quote.clone();
        institution.segment = Segment::Institution;
        let text = Disclosure::from_quote(&institution, &CurrencyTable::default(), CANCELLATION_WINDOW_MS)
            .unwrap()
            .render(Lang::En);
        assert!(!text.contains("cancel"));
    }

    #[test]
    fn date_funds_available_in_both_languages() {
        // The sample expires at 00:30:02; a remittance is held 30 minutes after payment.
        let quote = sample();
        let currencies = CurrencyTable::default();
        let before = Disclosure::from_quote(&quote, &currencies, CANCELLATION_WINDOW_MS).unwrap();
        assert_eq!(before.funds_available_ms, quote.expires_at_ms + CANCELLATION_WINDOW_MS);
        let en = before.render(Lang::En);
        assert!(
            en.contains("Date funds available: no later than 1970-01-01 01:00:02 UTC, if paid before the quote expires"),
            "{en}"
        );
        let es = before.render(Lang::Es);
        assert!(
            es.contains("Fecha de disponibilidad de los fondos: a más tardar el 1970-01-01 01:00:02 UTC"),
            "{es}"
        );
        // The receipt: paid at 00:10:00, held until 00:40:00, available then.
        let paid = 600_000;
        let receipt = Disclosure::receipt(&quote, &currencies, CANCELLATION_WINDOW_MS, paid).unwrap();
        assert_eq!(receipt.funds_available_ms, paid + CANCELLATION_WINDOW_MS);
        let en = receipt.render(Lang::En);
        assert!(en.starts_with("RECEIPT\n"), "{en}");
        assert!(en.contains("Date of payment: 1970-01-01 00:10:00 UTC"), "{en}");
        assert!(en.contains("Date funds available: 1970-01-01 00:40:00 UTC\n"), "{en}");
        assert!(en.contains("within 30 minutes of payment (until 1970-01-01 00:40:00 UTC)"), "{en}");
        assert!(en.contains("Total to recipient: 3398.25 MXN"), "{en}");
        let es = receipt.render(Lang::Es);
        assert!(es.starts_with("RECIBO\n"), "{es}");
        assert!(es.contains("Fecha de pago: 1970-01-01 00:10:00 UTC"), "{es}");
        assert!(es.contains("Fecha de disponibilidad de los fondos: 1970-01-01 00:40:00 UTC\n"), "{es}");
        assert!(es.contains("30 minutos siguientes a su pago (hasta el 1970-01-01 00:40:00 UTC)"), "{es}");
        // Not held: available when paid (or, before payment, by the quote's expiry).
        let mut sme = quote.clone();
        sme.segment = Segment::Sme;
        let receipt = Disclosure::receipt(&sme, &currencies, CANCELLATION_WINDOW_MS, paid).unwrap();
        assert_eq!((receipt.funds_available_ms, receipt.cancellation_window_ms), (paid, None));
        assert!(receipt.render(Lang::En).contains("Date funds available: 1970-01-01 00:10:00 UTC"));
        let before = Disclosure::from_quote(&sme, &currencies, CANCELLATION_WINDOW_MS).unwrap();
        assert_eq!(before.funds_available_ms, quote.expires_at_ms);
    }

    #[test]
    fn states_the_window_enforced() {
        let quote = sample();
        let currencies = CurrencyTable::default();
        for (window_ms, en, es) in [
            (45 * 60_000, "within 45 minutes of payment", "dentro de los 45 minutos"),
            (8_000, "within 8 seconds of payment", "dentro de los 8 segundos"),
            (1_500, "within 1500 milliseconds of payment", "dentro de los 1500 milisegundos"),
        ] {
            let disclosure = Disclosure::from_quote(&quote, &currencies, window_ms).unwrap();
            assert_eq!(disclosure.cancellation_window_ms, Some(window_ms));
            let text = disclosure.render(Lang::En);
            assert!(text.contains(en) && !text.contains("30 minutes"), "{text}");
            let text = disclosure.render(Lang::Es);
            assert!(text.contains(es) && !text.contains("30 minutos"), "{text}");
        }
    }

    #[test]
    fn rejects_figures_that_do_not_add_up() {
        let mut quote = sample();
        quote.converted_amount_minor += 1;
        quote.receive_amount_minor += 1;
        assert!(Disclosure::from_quote(&quote, &CurrencyTable::default(), CANCELLATION_WINDOW_MS).is_err());
        let mut quote = sample();
        quote.converted_amount_minor -= 200;
        quote.receive_amount_minor -= 200;
        assert!(Disclosure::from_quote(&quote, &CurrencyTable::default(), CANCELLATION_WINDOW_MS).is_err());
        assert_eq!(format_utc(1_709_164_800_000), "2024-02-29 00:00:00 UTC");
    }
}
