//! The night's settlement report as one self-contained HTML page: inline CSS and SVG, no
//! script, no font, no link to anything (a Content-Security-Policy of `default-src 'none'`
//! makes any slip a console error, which the browser test catches).
//!
//! The first screen answers: did the night settle (the verdict), how much crossed the border
//! against the gross, what netting saved in bank fees, and whether reconciliation found
//! exceptions. Below: per window, gross vs net per participant as bars, the settlement
//! payments between participants as a flow picture, the payments and fees as tables; the FX
//! cover (the house's one conversion per cutoff and what it saved); the exceptions; the
//! journal chain head.
//!
//! Every amount is exact decimal text from minor units; floats are used only for pixel
//! geometry. The key numbers carry an `id` and `data-minor` / `data-value` attributes, so a
//! test (or a person with the developer tools) can compare them with the JSON report.

use std::fmt::Write as _;

use puente_ledger::settlement::WindowState;

use crate::datetime_text;
use crate::reconcile::Reconciliation;
use crate::report::SettlementReport;

/// Most participants drawn in a window's charts (the tables list every one).
pub const CHART_PARTICIPANTS_MAX: usize = 40;
/// Most payments drawn in a window's flow picture (the table lists every one).
pub const CHART_PAYMENTS_MAX: usize = 60;

/// One window of the night.
#[derive(Debug, Clone)]
pub struct NightWindow {
    pub report: SettlementReport,
    /// Decimals of the window's currency.
    pub scale: u32,
}

/// What the page shows.
#[derive(Debug, Clone)]
pub struct Night<'a> {
    /// When the page was made (the caller's clock).
    pub generated_ns: u64,
    pub windows: &'a [NightWindow],
    /// The latest reconciliation, if any.
    pub reconciliation: Option<&'a Reconciliation>,
    /// The journal's chain head when the reports were generated: (seq, SHA-256 hex).
    pub chain_head: Option<(u64, String)>,
}

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// Minor units as decimal text with thousands separators (`1,234,567.89`): exact, and easier
/// to read than the bare digits of the JSON and CSV documents.
pub fn money(minor: u128, scale: u32) -> String {
    group(&puente_money::format_minor(minor, scale))
}

/// Signed minor units, grouped like [`money`].
pub fn signed_money(minor: i128, scale: u32) -> String {
    let text = money(minor.unsigned_abs(), scale);
    if minor < 0 { format!("-{text}") } else { text }
}

fn group(text: &str) -> String {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let mut out = String::with_capacity(text.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = fraction {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// The overall verdict: SETTLED when every window is, REJECTED when any is, else the least
/// advanced state.
fn verdict(windows: &[NightWindow]) -> (&'static str, &'static str, String) {
    if windows.is_empty() {
        return ("NO WINDOWS", "neutral", "No settlement window in this report.".into());
    }
    let states: Vec<WindowState> = windows.iter().map(|w| w.report.state).collect();
    let count = |s: WindowState| states.iter().filter(|x| **x == s).count();
    if states.iter().all(|s| *s == WindowState::Settled) {
        return ("SETTLED", "good", format!("All {} windows settled and confirmed.", states.len()));
    }
    let troubled: Vec<String> = [
        (WindowState::Rejected, "REJECTED (a bank rejected a settlement payment)"),
        (WindowState::Aborted, "ABORTED (settlement transfers refused)"),
        (WindowState::Failed, "FAILED (closing failed)"),
    ]
    .into_iter()
    .filter(|(s, _)| count(*s) > 0)
    .map(|(s, what)| format!("{} of {} windows {what}", count(s), states.len()))
    .collect();
    if !troubled.is_empty() {
        return ("ATTENTION", "bad", format!("{}.", troubled.join("; ")));
    }
    (
        "AWAITING CONFIRMATION",
        "wait",
        format!(
            "{} of {} windows settled; the rest wait for the banks' confirmations.",
            count(WindowState::Settled),
            states.len()
        ),
    )
}

fn amount_span(id: &str, minor: u128, scale: u32, currency: &str) -> String {
    format!(
        r#"<span class="amt" id="{id}" data-minor="{minor}" data-currency="{currency}">{}</span>&nbsp;{currency}"#,
        money(minor, scale)
    )
}

fn signed_span(id: &str, minor: i128, scale: u32, currency: &str) -> String {
    format!(
        r#"<span class="amt" id="{id}" data-minor="{minor}" data-currency="{currency}">{}</span>&nbsp;{currency}"#,
        signed_money(minor, scale)
    )
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{padding:18px 28px;background:#10243e;color:#fff}
header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c9d4e3;font-size:13px}
main{padding:18px 28px;max-width:1240px}
.verdict{display:flex;align-items:center;gap:18px;padding:14px 18px;border-radius:8px;margin-bottom:16px;font-size:15px}
.verdict b{font-size:24px;letter-spacing:.5px}
.good{background:#e3f4e8;border:2px solid #2e8b57}.wait{background:#fff6db;border:2px solid #c99a06}
.bad{background:#fde7e7;border:2px solid #c0392b}.neutral{background:#eceff3;border:2px solid #8795a1}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:12px;margin-bottom:18px}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card h3{margin:0 0 6px;font-size:12px;font-weight:600;color:#5a6b7b;text-transform:uppercase;letter-spacing:.4px}
.card .big{font-size:21px;font-weight:650}.card .sub{color:#5a6b7b;font-size:12px}
section{background:#fff;border-radius:8px;padding:14px 18px;margin-bottom:16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
section h2{margin:0 0 10px;font-size:17px}section h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #e3e7ec;text-align:left}
th{background:#f0f3f6;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.amt{font-variant-numeric:tabular-nums}.state{font-weight:650}
.charts{display:flex;flex-wrap:wrap;gap:18px}.charts figure{margin:0}.charts figcaption{font-size:12px;color:#5a6b7b}
.muted{color:#5a6b7b}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.k-MISSING,.k-REJECTED,.k-DUPLICATE,.k-AMOUNT_MISMATCH,.k-CURRENCY_MISMATCH{color:#b03a2e;font-weight:600}
";

/// The page.
#[expect(
    clippy::too_many_lines,
    reason = "the page's sections in reading order (each drawn by its own function)"
)]
pub fn render(night: &Night<'_>) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let (verdict_code, verdict_class, verdict_text) = verdict(night.windows);
    let exceptions = night.reconciliation.map(|r| r.exceptions.len());
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Puente settlement night — {verdict_code}</title><style>{STYLE}</style></head><body>"
    );
    let ids: Vec<String> = night.windows.iter().map(|w| w.report.window_id.to_string()).collect();
    let _ = writeln!(
        out,
        "<header><h1>Puente settlement night</h1><p>Windows {} · generated {} UTC</p></header><main>",
        if ids.is_empty() { "none".to_owned() } else { ids.join(", ") },
        escape(&datetime_text(night.generated_ns))
    );
    let exceptions_text = match exceptions {
        None => "not reconciled yet".to_owned(),
        Some(0) => "no exceptions".to_owned(),
        Some(n) => format!("{n} exceptions"),
    };
    let _ = writeln!(
        out,
        "<div class=\"verdict {verdict_class}\" id=\"verdict\" data-state=\"{verdict_code}\"><b>{verdict_code}</b>\
<span>{} Reconciliation: <span id=\"exceptions-count\" data-value=\"{}\">{exceptions_text}</span>.</span></div>",
        escape(&verdict_text),
        exceptions.map(|n| n.to_string()).unwrap_or_else(|| "none".into()),
    );
    // The headline cards: per window (one currency each), then the fees across the night.
    out.push_str("<div class=\"cards\">\n");
    let mut gross_fees = 0u128;
    let mut actual_fees = 0u128;
    for w in night.windows {
        let r = &w.report;
        let code = r.currency.as_str();
        let id = r.window_id;
        let Some(c) = r.netting.currencies.iter().find(|c| c.currency == r.currency) else { continue };
        gross_fees += r.netting.totals.gross_bank_fees_usd_minor;
        actual_fees += r.netting.totals.actual_bank_fees_usd_minor;
        let _ = writeln!(
            out,
            "<div class=\"card\"><h3>Window {id} · {code} · <span class=\"state\" id=\"w{id}-state\" data-value=\"{state}\">{state}</span></h3>\
<div class=\"big\">{net}</div><div class=\"sub\">moved at settlement (multilateral net), of {gross} gross in {count} obligations</div>\
<div class=\"sub\">crossed the border: {cb} in <span id=\"w{id}-cross-border-payments\" data-value=\"{cbn}\">{cbn}</span> payments, against {cbg} gross cross-border</div>\
<div class=\"sub\">netting efficiency <span id=\"w{id}-efficiency-bps\" data-value=\"{bps}\">{eff}</span> · <span id=\"w{id}-payments\" data-value=\"{pc}\">{pc}</span> payments</div></div>",
            state = r.state.code(),
            net = amount_span(&format!("w{id}-net"), c.multilateral_net_value_minor, w.scale, code),
            gross = amount_span(&format!("w{id}-gross"), c.gross_value_minor, w.scale, code),
            count = c.gross_count,
            cb = amount_span(
                &format!("w{id}-cross-border"),
                c.cross_border_payments_value_minor,
                w.scale,
                code
            ),
            cbn = c.cross_border_payments_count,
            cbg =
                amount_span(&format!("w{id}-cross-border-gross"), c.cross_border_value_minor, w.scale, code),
            bps = c.multilateral_efficiency_bps,
            eff = format_args!(
                "{}.{:02}%",
                c.multilateral_efficiency_bps / 100,
                c.multilateral_efficiency_bps % 100
            ),
            pc = r.payments.len(),
        );
    }
    let saving = gross_fees as i128 - actual_fees as i128;
    let _ = writeln!(
        out,
        "<div class=\"card\"><h3>Bank fees saved by netting</h3><div class=\"big\">{}</div>\
<div class=\"sub\">{} had every obligation been wired, {} for the settlement payments</div></div>",
        signed_span("fee-saving", saving, 2, "USD"),
        amount_span("fee-gross", gross_fees, 2, "USD"),
        amount_span("fee-actual", actual_fees, 2, "USD"),
    );
    out.push_str("</div>\n");

    for w in night.windows {
        window_section(&mut out, w);
    }

    fx_cover_section(&mut out, night.windows);

    exceptions_section(&mut out, night.reconciliation);

    match &night.chain_head {
        Some((seq, sha)) => {
            let _ = writeln!(
                out,
                "<section id=\"journal\"><h2>Journal chain head</h2><p>When these reports were generated the journal \
held records up to <b id=\"chain-seq\" data-value=\"{seq}\">seq {seq}</b> with SHA-256 chain hash \
<span class=\"mono\" id=\"chain-sha256\" data-value=\"{sha}\">{sha}</span>. Keep this page: \
<code>puente verify --expect-head {seq}:{sha}</code> checks later that the journal still holds it.</p></section>",
                sha = escape(sha)
            );
        }
        None => out.push_str("<section id=\"journal\"><h2>Journal chain head</h2><p class=\"muted\">Not known.</p></section>\n"),
    }
    out.push_str("</main></body></html>\n");
    out
}

/// The FX house's one conversion per cutoff (each pair of windows once), with what it saved
/// against converting every remittance one by one, and its signature.
fn fx_cover_section(out: &mut String, windows: &[NightWindow]) {
    out.push_str("<section id=\"fx-cover\"><h2>FX cover</h2>\n");
    let mut seen = Vec::new();
    for w in windows {
        let Some(signed) = &w.report.fx_cover else { continue };
        let c = &signed.cover;
        let key = (c.usd_window_id, c.mxn_window_id);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let id = format!("fx-{}-{}", c.usd_window_id, c.mxn_window_id);
        let _ = writeln!(
            out,
            "<h3>Windows {} (USD) and {} (MXN) — <span class=\"state\" id=\"{id}-status\" data-value=\"{status}\">{status}</span>{}</h3>\
<p>House <b>{}</b> nets {} and {} at <span id=\"{id}-rate\" data-value=\"{rate}\">{rate}</span> MXN per USD.</p>",
            c.usd_window_id,
            c.mxn_window_id,
            if signed.recorded { " · recorded" } else { " · planned (recorded when both windows settle)" },
            escape(&c.house),
            signed_span(&format!("{id}-house-usd-net"), c.house_usd_net_minor, 2, "USD"),
            signed_span(&format!("{id}-house-mxn-net"), c.house_mxn_net_minor, 2, "MXN"),
            status = c.status.code(),
            rate = escape(&c.rate_mxn_per_usd.to_string()),
        );
        if let Some(v) = &c.conversion {
            let s = &c.saving;
            let _ = writeln!(
                out,
                "<p>One conversion: sell {} and buy exactly {}.</p>\
<table><tr><th></th><th class=\"n\">Conversions</th><th class=\"n\">Bank fees (USD)</th><th class=\"n\">FX margin (USD)</th><th class=\"n\">Total (USD)</th></tr>\
<tr><td>Every remittance one by one</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\
<tr><td>One conversion</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>\
<p>Saved: <b>{}</b> ({}).</p>",
                amount_span(&format!("{id}-sell"), v.sell_amount_minor, 2, v.sell_currency.as_str()),
                amount_span(&format!("{id}-buy"), v.buy_amount_minor, 2, v.buy_currency.as_str()),
                s.remittances_count,
                money(s.one_by_one_fees_usd_minor, 2),
                money(s.one_by_one_margin_usd_minor, 2),
                amount_span(&format!("{id}-one-by-one"), s.one_by_one_total_usd_minor, 2, "USD"),
                s.cover_count,
                money(s.cover_fees_usd_minor, 2),
                money(s.cover_margin_usd_minor, 2),
                amount_span(&format!("{id}-cover-cost"), s.cover_total_usd_minor, 2, "USD"),
                signed_span(&format!("{id}-saving"), s.saving_usd_minor, 2, "USD"),
                s.saving_percent.map(|p| format!("{p}%")).unwrap_or_else(|| "n/a".into()),
            );
        }
        let _ = writeln!(
            out,
            "<p>After settlement and the conversion the house holds {} and {} from this cutoff.</p>\
<p class=\"muted\">Signed with FX key <span class=\"mono\" id=\"{id}-key-id\">{}</span>: \
<span class=\"mono\" id=\"{id}-signature\">{}</span></p>",
            signed_span(&format!("{id}-house-usd-after"), c.house_usd_after_minor, 2, "USD"),
            signed_span(&format!("{id}-house-mxn-after"), c.house_mxn_after_minor, 2, "MXN"),
            escape(&signed.key_id),
            escape(&signed.signature_hex),
        );
    }
    let status = if seen.is_empty() {
        "No FX cover (no USD and MXN windows closed at the same cutoff)."
    } else {
        "One conversion per cutoff covers the FX house's imbalance."
    };
    let _ = writeln!(
        out,
        "<p class=\"muted\" id=\"fx-cover-status\" data-value=\"{}\">{status}</p></section>",
        seen.len()
    );
}

fn window_section(out: &mut String, w: &NightWindow) {
    let r = &w.report;
    let id = r.window_id;
    let code = r.currency.as_str();
    let _ = writeln!(
        out,
        "<section id=\"window-{id}\"><h2>Window {id} ({code}) — <span class=\"state\">{}</span></h2><div class=\"charts\">",
        r.state.code()
    );
    bars(out, w);
    flows(out, w);
    out.push_str("</div>\n");
    // Positions and fees.
    let _ = writeln!(
        out,
        "<h3>Participants</h3><table><tr><th>Participant</th><th>Country</th><th class=\"n\">Paid ({code})</th>\
<th class=\"n\">Received ({code})</th><th class=\"n\">Net ({code})</th><th class=\"n\">Fees if gross (USD)</th>\
<th class=\"n\">Fees actual (USD)</th><th class=\"n\">Saving (USD)</th><th>Confirmed</th></tr>"
    );
    for p in &r.positions {
        let fees = r.netting.participants.iter().find(|f| f.participant.as_str() == p.participant);
        let pid = format!("w{id}-p-{}", escape(&p.participant));
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\" id=\"{pid}-net\" data-minor=\"{}\">{}</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&p.participant),
            p.country.code(),
            money(p.paid_minor, w.scale),
            money(p.received_minor, w.scale),
            p.net_minor,
            signed_money(p.net_minor, w.scale),
            fees.map(|f| money(f.gross_bank_fees_usd_minor, 2)).unwrap_or_default(),
            fees.map(|f| money(f.actual_bank_fees_usd_minor, 2)).unwrap_or_default(),
            fees.map(|f| signed_money(f.bank_fee_saving_usd_minor, 2)).unwrap_or_default(),
            if p.confirmed { "yes" } else { "no" }
        );
    }
    out.push_str("</table>\n");
    if !r.payments.is_empty() {
        let _ = writeln!(
            out,
            "<h3>Settlement payments (pacs.009)</h3><table><tr><th class=\"n\">#</th><th>EndToEndId</th><th>Payer</th>\
<th>Payee</th><th class=\"n\">Amount ({code})</th><th>Rail</th><th>UETR</th></tr>"
        );
        for p in &r.payments {
            let _ = writeln!(
                out,
                "<tr><td class=\"n\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td>\
<td class=\"n\" id=\"w{id}-pay-{}\" data-minor=\"{}\">{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
                p.index,
                escape(&p.end_to_end_id),
                escape(&p.payer),
                escape(&p.payee),
                p.index,
                p.amount_minor,
                money(p.amount_minor, w.scale),
                crate::report::rail_name(p.rail),
                escape(&p.uetr)
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</section>\n");
}

/// Gross (paid + received) against net (|received − paid|) per participant, as bars.
fn bars(out: &mut String, w: &NightWindow) {
    let r = &w.report;
    let shown: Vec<_> = r.positions.iter().take(CHART_PARTICIPANTS_MAX).collect();
    let max = shown.iter().map(|p| p.paid_minor + p.received_minor).max().unwrap_or(0).max(1);
    let row = 34.0;
    let (label_w, bar_w, value_w) = (120.0, 300.0, 130.0);
    let width = label_w + bar_w + value_w;
    let height = 28.0 + row * shown.len() as f64;
    let _ = writeln!(
        out,
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Gross versus net per participant\">\
<rect x=\"{label_w}\" y=\"4\" width=\"12\" height=\"10\" fill=\"#9db4cf\"/><text x=\"{}\" y=\"13\" font-size=\"11\">gross (paid + received)</text>\
<rect x=\"{}\" y=\"4\" width=\"12\" height=\"10\" fill=\"#1f6fb2\"/><text x=\"{}\" y=\"13\" font-size=\"11\">net settled</text>",
        label_w + 16.0,
        label_w + 170.0,
        label_w + 186.0
    );
    for (i, p) in shown.iter().enumerate() {
        let y = 24.0 + row * i as f64;
        let gross = p.paid_minor + p.received_minor;
        let net = p.net_minor.unsigned_abs();
        // Pixel geometry only: the labels are exact decimal text.
        let gw = bar_w * (gross as f64 / max as f64);
        let nw = bar_w * (net as f64 / max as f64);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{}</text>\
<rect x=\"{label_w}\" y=\"{y}\" width=\"{gw:.1}\" height=\"12\" fill=\"#9db4cf\"><title>gross {}</title></rect>\
<rect x=\"{label_w}\" y=\"{}\" width=\"{nw:.1}\" height=\"12\" fill=\"#1f6fb2\"><title>net {}</title></rect>\
<text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            label_w - 6.0,
            y + 16.0,
            escape(&p.participant),
            money(gross, w.scale),
            y + 13.0,
            signed_money(p.net_minor, w.scale),
            label_w + bar_w + 6.0,
            y + 10.0,
            money(gross, w.scale),
            label_w + bar_w + 6.0,
            y + 24.0,
            signed_money(p.net_minor, w.scale),
        );
    }
    let _ = writeln!(
        out,
        "</svg><figcaption>Gross vs net per participant ({}){}</figcaption></figure>",
        r.currency,
        if r.positions.len() > shown.len() {
            format!(", first {} of {}", shown.len(), r.positions.len())
        } else {
            String::new()
        }
    );
}

/// The settlement payments as arrows from payers (left) to payees (right), width by amount.
fn flows(out: &mut String, w: &NightWindow) {
    let r = &w.report;
    let payments: Vec<_> = r.payments.iter().take(CHART_PAYMENTS_MAX).collect();
    let mut payers: Vec<&str> = payments.iter().map(|p| p.payer.as_str()).collect();
    let mut payees: Vec<&str> = payments.iter().map(|p| p.payee.as_str()).collect();
    payers.sort_unstable();
    payers.dedup();
    payees.sort_unstable();
    payees.dedup();
    let rows = payers.len().max(payees.len()).max(1);
    let row = 40.0;
    let (width, left, right) = (520.0, 120.0, 400.0);
    let height = 30.0 + row * rows as f64;
    let max = payments.iter().map(|p| p.amount_minor).max().unwrap_or(0).max(1);
    let y_of = |list: &[&str], name: &str| {
        let i = list.iter().position(|n| *n == name).unwrap_or(0);
        let offset = (rows - list.len()) as f64 * row / 2.0;
        28.0 + offset + row * i as f64
    };
    let _ = writeln!(
        out,
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Settlement payments between participants\">\
<defs><marker id=\"arrow-{id}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerUnits=\"userSpaceOnUse\" markerWidth=\"10\" markerHeight=\"10\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#c0572b\"/></marker></defs>\
<text x=\"{left}\" y=\"12\" font-size=\"11\" text-anchor=\"end\" fill=\"#5a6b7b\">pays</text><text x=\"{right}\" y=\"12\" font-size=\"11\" fill=\"#5a6b7b\">receives</text>",
        id = r.window_id
    );
    if payments.is_empty() {
        out.push_str(
            "<text x=\"20\" y=\"40\" font-size=\"12\">No settlement payment: every net was zero.</text>",
        );
    }
    let n = payments.len();
    for (i, p) in payments.iter().enumerate() {
        let (y1, y2) = (y_of(&payers, &p.payer), y_of(&payees, &p.payee));
        let stroke = 1.5 + 8.0 * (p.amount_minor as f64 / max as f64);
        let (x0, x3) = (left + 6.0, right - 8.0);
        let mx = (left + right) / 2.0;
        // Each label sits on its own curve, spread along it so that labels of one payer or
        // payee do not overlap: the point at t of the cubic (x0,y1) (mx,y1) (mx,y2) (x3,y2).
        let t = if n <= 1 { 0.5 } else { 0.2 + 0.6 * i as f64 / (n - 1) as f64 };
        let u = 1.0 - t;
        let lx = u * u * u * x0 + 3.0 * u * u * t * mx + 3.0 * u * t * t * mx + t * t * t * x3;
        let ly = (u * u * u + 3.0 * u * u * t) * y1 + (3.0 * u * t * t + t * t * t) * y2;
        let _ = writeln!(
            out,
            "<path d=\"M{x0:.1},{y1:.1} C{mx:.1},{y1:.1} {mx:.1},{y2:.1} {x3:.1},{y2:.1}\" stroke=\"#c0572b\" stroke-opacity=\"0.6\" stroke-width=\"{stroke:.1}\" fill=\"none\" marker-end=\"url(#arrow-{})\"><title>{} → {}: {} {}</title></path>\
<text x=\"{lx:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#1b1f24\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">{}</text>",
            r.window_id,
            escape(&p.payer),
            escape(&p.payee),
            money(p.amount_minor, w.scale),
            r.currency,
            ly - 3.0,
            money(p.amount_minor, w.scale)
        );
    }
    participant_labels(out, &payers, &payees, left, right, y_of);
    let _ = write!(
        out,
        "</svg><figcaption>Settlement payments ({}, fewest payments){}</figcaption></figure>",
        r.currency,
        if r.payments.len() > payments.len() {
            format!(", first {} of {}", payments.len(), r.payments.len())
        } else {
            String::new()
        }
    );
}

/// The payers' names at the left of the flows and the payees' at the right, each at the height
/// `y_of` gives it.
fn participant_labels(
    out: &mut String,
    payers: &[&str],
    payees: &[&str],
    left: f64,
    right: f64,
    y_of: impl Fn(&[&str], &str) -> f64,
) {
    for name in payers {
        let _ = writeln!(
            out,
            "<text x=\"{left}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
            y_of(payers, name) + 4.0,
            escape(name)
        );
    }
    for name in payees {
        let _ = write!(
            out,
            "<text x=\"{right}\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            y_of(payees, name) + 4.0,
            escape(name)
        );
    }
}

fn exceptions_section(out: &mut String, reconciliation: Option<&Reconciliation>) {
    out.push_str("<section id=\"exceptions\"><h2>Reconciliation exceptions</h2>\n");
    let Some(rec) = reconciliation else {
        out.push_str(
            "<p class=\"muted\">Not reconciled yet: feed the banks' camt.053 / camt.054 / pacs.002 to \
<code>puente settlement reconcile</code>.</p></section>\n",
        );
        return;
    };
    let docs: Vec<String> =
        rec.documents.iter().map(|d| format!("{} ({})", escape(&d.name), d.kind.name())).collect();
    let _ = writeln!(
        out,
        "<p class=\"muted\">From {}.</p>",
        if docs.is_empty() { "no document".into() } else { docs.join(", ") }
    );
    if rec.exceptions.is_empty() {
        out.push_str("<p>No exceptions: every expected payment matched.</p></section>\n");
        return;
    }
    out.push_str(
        "<table><tr><th>Kind</th><th class=\"n\">Window</th><th>EndToEndId / UETR</th><th>Payer → payee</th>\
<th>Expected</th><th>Reported</th><th>Detail</th><th>Where</th></tr>\n",
    );
    for (i, e) in rec.exceptions.iter().enumerate() {
        let reference = if e.end_to_end_id.is_empty() { &e.uetr } else { &e.end_to_end_id };
        let _ = writeln!(
            out,
            "<tr id=\"exception-{i}\" data-kind=\"{kind}\"><td class=\"k-{kind}\">{kind}</td><td class=\"n\">{}</td><td class=\"mono\">{}</td>\
<td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            if e.window_id == 0 { String::new() } else { e.window_id.to_string() },
            escape(reference),
            if e.payer.is_empty() {
                String::new()
            } else {
                format!("{} → {}", escape(&e.payer), escape(&e.payee))
            },
            escape(&e.expected),
            escape(&e.reported),
            escape(&e.detail),
            escape(&e.document),
            kind = e.kind.code()
        );
    }
    out.push_str("</table></section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{profiles, window};
    use puente_netting::FeeModel;
    use rust_decimal::Decimal;

    #[test]
    fn amounts_are_grouped_exactly() {
        assert_eq!(money(0, 2), "0.00");
        assert_eq!(money(99_999, 2), "999.99");
        assert_eq!(money(100_000, 2), "1,000.00");
        assert_eq!(money(123_456_789_012, 2), "1,234,567,890.12");
        assert_eq!(money(1_000_000, 0), "1,000,000");
        assert_eq!(signed_money(-100_000_000, 2), "-1,000,000.00");
        assert_eq!(money(u128::MAX, 2).replace(',', ""), puente_money::format_minor(u128::MAX, 2));
    }

    #[test]
    fn the_page_is_self_contained_and_carries_the_numbers() {
        let report =
            crate::build_report(&window(), &profiles(), &FeeModel::default(), Decimal::new(18, 0)).unwrap();
        let windows = [NightWindow { report, scale: 2 }];
        let page = render(&Night {
            generated_ns: 1_700_000_000_000_000_000,
            windows: &windows,
            reconciliation: None,
            chain_head: Some((42, "ab".repeat(32))),
        });
        assert!(page.starts_with("<!DOCTYPE html>"));
        for outside in ["http://", "https://", "<script", "<link", "@import", "url(http"] {
            let hits: Vec<_> = page
                .match_indices(outside)
                .filter(|(i, _)| !page[*i..].starts_with("http://www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{outside} in the page");
        }
        assert!(page.contains(r#"id="w7-gross" data-minor="37500" data-currency="USD">375.00<"#), "{page}");
        assert!(page.contains(r#"id="w7-net" data-minor="27500""#));
        assert!(page.contains(r#"id="chain-seq" data-value="42""#));
        assert!(page.contains("Bank MX00 &amp;") || page.contains("MX00"));
        assert!(page.contains("AWAITING CONFIRMATION"));
        assert!(page.contains("not reconciled yet"));
        assert!(page.contains(r#"id="fx-cover-status" data-value="0""#), "{page}");
    }
}
