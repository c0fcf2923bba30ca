//! `puente.v1.FxService`: the wire for the FX desk.

use std::str::FromStr;
use std::sync::Arc;

use crate::grpc::fx_service_server::FxService;
use puente_fx::{Disclosure, FixedSide, FxError, Lang, Pair, QuoteRequest, Segment};
use puente_money::{CurrencyCode, CurrencyTable};
use puente_proto::v1 as pb;
use rust_decimal::Decimal;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth;
use crate::convert::{self, timestamp};
use crate::error::{ApiError, Violation, check};
use crate::fx_desk::{DeskError, Execution, FxDesk, IssuedQuote, PendingOrPosted, StoredRate, now_ms};

/// Most updates one StreamRates call applies.
pub const RATE_STREAM_UPDATES_MAX: u64 = 10_000_000;

pub struct FxApi {
    desk: Arc<FxDesk>,
}

impl FxApi {
    pub fn new(desk: Arc<FxDesk>) -> FxApi {
        FxApi { desk }
    }
}

fn money(currencies: &CurrencyTable, code: CurrencyCode, minor: u64) -> Option<pb::Money> {
    Some(convert::money(currencies, code, u128::from(minor)))
}

fn segment_in(value: i32) -> Option<Segment> {
    match pb::FxSegment::try_from(value) {
        Ok(pb::FxSegment::Sme) => Some(Segment::Sme),
        Ok(pb::FxSegment::Remittance) => Some(Segment::Remittance),
        Ok(pb::FxSegment::Institution) => Some(Segment::Institution),
        _ => None,
    }
}

fn segment_out(segment: Segment) -> pb::FxSegment {
    match segment {
        Segment::Sme => pb::FxSegment::Sme,
        Segment::Remittance => pb::FxSegment::Remittance,
        Segment::Institution => pb::FxSegment::Institution,
    }
}

fn ms_timestamp(ms: u64) -> Option<prost_types::Timestamp> {
    timestamp(ms.saturating_mul(1_000_000))
}

/// The wire form of a disclosure (before payment) or receipt (after).
fn disclosure_out(disclosure: &Disclosure, currencies: &CurrencyTable) -> pb::FxDisclosure {
    let (sell, buy) = (disclosure.send_currency.code, disclosure.receive_currency.code);
    pb::FxDisclosure {
        transfer_amount: money(currencies, sell, disclosure.transfer_amount_minor),
        transfer_fees: money(currencies, sell, disclosure.transfer_fees_minor),
        transfer_taxes: money(currencies, sell, disclosure.transfer_taxes_minor),
        total: money(currencies, sell, disclosure.total_minor),
        exchange_rate: disclosure.exchange_rate.normalize().to_string(),
        converted_amount: money(currencies, buy, disclosure.converted_amount_minor),
        third_party_fees: money(currencies, buy, disclosure.third_party_fees_minor),
        amount_received: money(currencies, buy, disclosure.received_minor),
        text_en: disclosure.render(Lang::En),
        text_es: disclosure.render(Lang::Es),
        cancellation_window_ms: disclosure.cancellation_window_ms.unwrap_or(0),
        funds_available_time: ms_timestamp(disclosure.funds_available_ms),
        payment_time: disclosure.paid_at_ms.and_then(ms_timestamp),
    }
}

/// The wire form of an issued quote, with its signature and disclosure (stating the
/// cancellation window this server enforces).
pub fn quote_out(issued: &IssuedQuote, desk: &FxDesk) -> Result<pb::FxQuote, ApiError> {
    let (quote, currencies) = (&issued.quote, desk.currencies());
    let disclosure =
        Disclosure::from_quote(quote, currencies, desk.cancellation_window_ms()).map_err(ApiError::from)?;
    let (sell, buy) = (quote.pair.base, quote.pair.quote);
    Ok(pb::FxQuote {
        id: uuid::Uuid::from_bytes(quote.id).to_string(),
        participant: quote.participant.clone(),
        segment: segment_out(quote.segment) as i32,
        sell_currency: sell.to_string(),
        buy_currency: buy.to_string(),
        mid_rate: quote.mid_rate.normalize().to_string(),
        customer_rate: quote.customer_rate.normalize().to_string(),
        spread_bps: quote.spread_bps,
        send_amount: money(currencies, sell, quote.send_amount_minor),
        fee_total: money(currencies, sell, quote.fee_total_minor),
        tax: money(currencies, sell, quote.tax_minor),
        total_debit: money(currencies, sell, quote.total_debit_minor),
        receive_amount: money(currencies, buy, quote.receive_amount_minor),
        create_time: ms_timestamp(quote.created_at_ms),
        expire_time: ms_timestamp(quote.expires_at_ms),
        canonical: issued.canonical.clone(),
        signature: issued.signature.clone(),
        fee_fixed: money(currencies, sell, quote.fee_fixed_minor),
        fee_percentage: money(currencies, sell, quote.fee_pct_minor),
        disclosure: Some(disclosure_out(&disclosure, currencies)),
        signing_key_id: issued.key_id.clone(),
    })
}

/// The Regulation E receipt of an execution.
fn receipt_out(execution: &Execution, currencies: &CurrencyTable) -> Result<pb::FxDisclosure, ApiError> {
    let receipt = Disclosure::receipt(
        &execution.quote,
        currencies,
        execution.cancellation_window_ms,
        execution.paid_at_ms,
    )
    .map_err(ApiError::from)?;
    Ok(disclosure_out(&receipt, currencies))
}

fn rate_in(
    rate: &pb::FxRate,
    field: &str,
    currencies: &CurrencyTable,
    violations: &mut Vec<Violation>,
) -> Option<StoredRate> {
    let before = violations.len();
    let mut currency = |text: &str, name: &str| match currencies.lookup(text) {
        Ok(c) => Some(c.code),
        Err(e) => {
            violations.push(Violation::new(format!("{field}.{name}"), e.to_string()));
            None
        }
    };
    let base = currency(&rate.base_currency, "base_currency");
    let quote = currency(&rate.quote_currency, "quote_currency");
    let mid = match Decimal::from_str_exact(&rate.mid_rate) {
        Ok(mid) if mid > Decimal::ZERO && !rate.mid_rate.contains(['e', 'E']) => Some(mid),
        _ => {
            violations.push(Violation::new(
                format!("{field}.mid_rate"),
                "must be a positive decimal, e.g. 18.9125",
            ));
            None
        }
    };
    let as_of_ms = match convert::timestamp_ns(&rate.rate_time, &format!("{field}.rate_time"), violations) {
        Some(ns) => ns / 1_000_000,
        None => now_ms(),
    };
    if rate.source.len() > 64 {
        violations.push(Violation::new(format!("{field}.source"), "at most 64 bytes"));
    }
    let pair = match (base, quote) {
        (Some(base), Some(quote)) => match Pair::new(base, quote) {
            Ok(pair) => Some(pair),
            Err(e) => {
                violations.push(Violation::new(format!("{field}.quote_currency"), e.to_string()));
                None
            }
        },
        _ => None,
    };
    if violations.len() > before {
        return None;
    }
    let source = if rate.source.is_empty() { "operator".to_owned() } else { rate.source.clone() };
    Some(StoredRate { pair: pair?, mid: mid?, as_of_ms, source })
}

fn rate_out(rate: &StoredRate) -> pb::FxRate {
    pb::FxRate {
        base_currency: rate.pair.base.to_string(),
        quote_currency: rate.pair.quote.to_string(),
        mid_rate: rate.mid.normalize().to_string(),
        rate_time: ms_timestamp(rate.as_of_ms),
        source: rate.source.clone(),
    }
}

fn quote_id(text: &str, field: &str, violations: &mut Vec<Violation>) -> [u8; 16] {
    convert::required_id(text, field, violations).to_be_bytes()
}

#[tonic::async_trait]
impl FxService for FxApi {
    async fn set_rates(
        &self,
        request: Request<pb::SetRatesRequest>,
    ) -> Result<Response<pb::SetRatesResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        if request.rates.is_empty() {
            violations.push(Violation::new("rates", "at least one rate"));
        }
        let rates: Vec<_> = request
            .rates
            .iter()
            .enumerate()
            .filter_map(|(i, r)| rate_in(r, &format!("rates[{i}]"), self.desk.currencies(), &mut violations))
            .collect();
        check(violations)?;
        let rates_set = self.desk.set_rates(&rates).map_err(ApiError::from)? as u32;
        Ok(Response::new(pb::SetRatesResponse { rates_set }))
    }

    async fn stream_rates(
        &self,
        request: Request<Streaming<pb::StreamRatesRequest>>,
    ) -> Result<Response<pb::StreamRatesResponse>, Status> {
        let mut stream = request.into_inner();
        let mut rates_set = 0u64;
        while let Some(update) = stream.next().await {
            let update = update?;
            let mut violations = Vec::new();
            let rates: Vec<_> = update
                .rates
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    rate_in(r, &format!("rates[{i}]"), self.desk.currencies(), &mut violations)
                })
                .collect();
            check(violations)?;
            rates_set += self.desk.set_rates(&rates).map_err(ApiError::from)? as u64;
            if rates_set > RATE_STREAM_UPDATES_MAX {
                return Err(ApiError::from(FxError::LimitExceeded {
                    what: "rate updates per stream",
                    limit: RATE_STREAM_UPDATES_MAX,
                })
                .into());
            }
        }
        Ok(Response::new(pb::StreamRatesResponse { rates_set }))
    }

    async fn list_rates(
        &self,
        _: Request<pb::ListRatesRequest>,
    ) -> Result<Response<pb::ListRatesResponse>, Status> {
        let rates = self.desk.list_rates().map_err(ApiError::from)?;
        Ok(Response::new(pb::ListRatesResponse { rates: rates.iter().map(rate_out).collect() }))
    }

    async fn get_quote(
        &self,
        request: Request<pb::GetQuoteRequest>,
    ) -> Result<Response<pb::GetQuoteResponse>, Status> {
        let (caller, mut r) = auth::caller_and_body(request)?;
        // A participant quotes for itself (empty means itself); naming another is NOT_FOUND.
        r.participant = auth::named_participant(&caller, &r.participant)?;
        let currencies = self.desk.currencies();
        let mut violations = Vec::new();
        if !puente_ledger::participant_valid(&r.participant) {
            violations
                .push(Violation::new("participant", "1-64 characters of letters, digits, '-', '_', '.'"));
        }
        let segment = segment_in(r.segment);
        if segment.is_none() {
            violations.push(Violation::new("segment", "required: SME, REMITTANCE or INSTITUTION"));
        }
        let mut currency = |text: &str, field: &str| match currencies.lookup(text) {
            Ok(c) => Some(c),
            Err(e) => {
                violations.push(Violation::new(field, e.to_string()));
                None
            }
        };
        let sell = currency(&r.sell_currency, "sell_currency");
        let buy = currency(&r.buy_currency, "buy_currency");
        let fixed = match (r.send_amount.is_empty(), r.receive_amount.is_empty()) {
            (false, true) => sell.and_then(|c| match c.parse_amount(&r.send_amount) {
                Ok(a) => Some(FixedSide::Send(a)),
                Err(e) => {
                    violations.push(Violation::new("send_amount", e.to_string()));
                    None
                }
            }),
            (true, false) => buy.and_then(|c| match c.parse_amount(&r.receive_amount) {
                Ok(a) => Some(FixedSide::Receive(a)),
                Err(e) => {
                    violations.push(Violation::new("receive_amount", e.to_string()));
                    None
                }
            }),
            _ => {
                violations
                    .push(Violation::new("send_amount", "set exactly one of send_amount and receive_amount"));
                None
            }
        };
        check(violations)?;
        let (Some(segment), Some(sell), Some(buy), Some(fixed)) = (segment, sell, buy, fixed) else {
            return Err(ApiError::invalid("request", "incomplete").into());
        };
        let request =
            QuoteRequest { participant: r.participant, segment, sell: sell.code, buy: buy.code, fixed };
        let issued = self.desk.quote(&request).map_err(ApiError::from)?;
        Ok(Response::new(pb::GetQuoteResponse { quote: Some(quote_out(&issued, &self.desk)?) }))
    }

    async fn get_quote_by_id(
        &self,
        request: Request<pb::GetQuoteByIdRequest>,
    ) -> Result<Response<pb::GetQuoteByIdResponse>, Status> {
        let caller = auth::caller(&request)?;
        let mut violations = Vec::new();
        let id = quote_id(&request.get_ref().id, "id", &mut violations);
        check(violations)?;
        let issued = self.desk.get_quote(&id).map_err(ApiError::from)?;
        if !caller.may_see(&issued.quote.participant) {
            return Err(ApiError::from(DeskError::QuoteNotFound(request.get_ref().id.clone())).into());
        }
        Ok(Response::new(pb::GetQuoteByIdResponse { quote: Some(quote_out(&issued, &self.desk)?) }))
    }

    async fn list_quotes(
        &self,
        request: Request<pb::ListQuotesRequest>,
    ) -> Result<Response<pb::ListQuotesResponse>, Status> {
        let (caller, mut r) = auth::caller_and_body(request)?;
        // A participant lists its own quotes; naming another lists nothing.
        let Ok(participant) = auth::named_participant(&caller, &r.participant) else {
            return Ok(Response::new(pb::ListQuotesResponse::default()));
        };
        r.participant = participant;
        let mut violations = Vec::new();
        let page_size = convert::page_size(r.page_size, "page_size", &mut violations);
        let after = if r.page_token.is_empty() {
            None
        } else {
            match (0..r.page_token.len())
                .step_by(2)
                .map(|i| r.page_token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect::<Option<Vec<u8>>>()
            {
                Some(bytes) => Some(bytes),
                None => {
                    violations.push(Violation::new("page_token", "not a token from a previous response"));
                    None
                }
            }
        };
        if r.participant.is_empty() {
            violations.push(Violation::new("participant", "required"));
        }
        check(violations)?;
        let (quotes, next) =
            self.desk.list_quotes(&r.participant, after.as_deref(), page_size).map_err(ApiError::from)?;
        let quotes = quotes.iter().map(|q| quote_out(q, &self.desk)).collect::<Result<Vec<_>, _>>()?;
        let next_page_token =
            next.map(|k| k.iter().map(|b| format!("{b:02x}")).collect()).unwrap_or_default();
        Ok(Response::new(pb::ListQuotesResponse { quotes, next_page_token }))
    }

    async fn execute_quote(
        &self,
        request: Request<pb::ExecuteQuoteRequest>,
    ) -> Result<Response<pb::ExecuteQuoteResponse>, Status> {
        let (caller, r) = auth::caller_and_body(request)?;
        let mut violations = Vec::new();
        if r.canonical.is_empty() {
            violations.push(Violation::new("canonical", "required: the quote's canonical bytes"));
        }
        if r.signature.is_empty() {
            violations.push(Violation::new("signature", "required: the quote's signature"));
        }
        let source = convert::required_id(&r.source_account_id, "source_account_id", &mut violations);
        let destination =
            convert::required_id(&r.destination_account_id, "destination_account_id", &mut violations);
        let execution_id = convert::required_id(&r.execution_id, "execution_id", &mut violations);
        check(violations)?;
        let execution = self
            .desk
            .execute(
                &caller,
                &r.canonical,
                &r.signature,
                &r.signing_key_id,
                source,
                destination,
                execution_id,
            )
            .await
            .map_err(ApiError::from)?;
        let receipt = receipt_out(&execution, self.desk.currencies())?;
        Ok(Response::new(pb::ExecuteQuoteResponse {
            quote_id: uuid::Uuid::from_bytes(execution.quote.id).to_string(),
            transfer_ids: execution.transfer_ids.iter().map(|id| convert::format_id(*id)).collect(),
            replayed: execution.replayed,
            state: match execution.state {
                PendingOrPosted::Posted => pb::FxExecutionState::Posted,
                PendingOrPosted::Held => pb::FxExecutionState::Held,
                PendingOrPosted::Cancelled => pb::FxExecutionState::Cancelled,
            } as i32,
            cancel_deadline: if execution.cancel_deadline_ms > 0 {
                ms_timestamp(execution.cancel_deadline_ms)
            } else {
                None
            },
            receipt: Some(receipt),
        }))
    }

    async fn cancel_transfer(
        &self,
        request: Request<pb::CancelTransferRequest>,
    ) -> Result<Response<pb::CancelTransferResponse>, Status> {
        let caller = auth::caller(&request)?;
        let mut violations = Vec::new();
        let id = quote_id(&request.get_ref().quote_id, "quote_id", &mut violations);
        check(violations)?;
        let (currency, refunded, replayed) = self.desk.cancel(&caller, &id).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::CancelTransferResponse {
            refunded: money(self.desk.currencies(), currency, refunded),
            replayed,
        }))
    }

    async fn get_public_key(
        &self,
        _: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        let keys: Vec<pb::FxPublicKey> = self
            .desk
            .public_keys()
            .into_iter()
            .map(|k| pb::FxPublicKey { key_id: k.key_id, public_key: k.public_key.to_vec() })
            .collect();
        let active = keys.first().cloned().unwrap_or_default();
        Ok(Response::new(pb::GetPublicKeyResponse {
            algorithm: "ED25519".into(),
            public_key: active.public_key,
            encoding_version: puente_fx::quote::QUOTE_ENCODING_VERSION as u32,
            key_id: active.key_id,
            keys,
        }))
    }

    async fn get_exposure(
        &self,
        _: Request<pb::GetExposureRequest>,
    ) -> Result<Response<pb::GetExposureResponse>, Status> {
        let currencies = self.desk.currencies();
        let positions = self.desk.exposure().map_err(ApiError::from)?;
        let signed = |code, minor| convert::signed(currencies, code, minor);
        Ok(Response::new(pb::GetExposureResponse {
            positions: positions
                .iter()
                .map(|p| pb::FxPosition {
                    currency_code: p.currency.to_string(),
                    posted_position: signed(p.currency, p.posted_minor),
                    projected_position: signed(p.currency, p.projected_minor),
                    fee_revenue: signed(p.currency, p.fee_revenue_minor),
                })
                .collect(),
        }))
    }
}

/// Parses a decimal rate text (for the CLI and tests).
pub fn parse_rate(text: &str) -> Option<Decimal> {
    Decimal::from_str(text).ok().filter(|d| *d > Decimal::ZERO)
}
