//! Statement downloads: CSV (one row per statement) and a one-page PDF written by hand (PDF 1.4,
//! the standard Helvetica font, no external dependency). Amounts are the exact decimal strings.

use crate::views::money;
use settle_core::Statement;

const CSV_HEADER: &str = "partner,period_start,period_end,currency,opening,gross_sales,refunds,chargebacks,fees,adjustments,payouts,closing,transaction_count,late_count";

fn csv_field(s: &str) -> String {
    // Quote anything that could split a field or start a formula in a spreadsheet.
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(['=', '+', '@']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn statements_csv(statements: &[Statement]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for s in statements {
        let c = s.currency;
        let fees = s.fees.total().map(|f| money(f, c)).unwrap_or_default();
        let row = [
            csv_field(&s.partner),
            s.period.start.to_rfc3339(),
            s.period.end.to_rfc3339(),
            c.code().to_string(),
            money(s.opening, c),
            money(s.gross_sales, c),
            money(s.refunds, c),
            money(s.chargebacks, c),
            fees,
            money(s.adjustments, c),
            money(s.payouts, c),
            money(s.closing, c),
            s.transaction_count.to_string(),
            s.late_count.to_string(),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

fn pdf_text(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .map(|c| match c {
            '(' | ')' | '\\' => format!("\\{c}"),
            other => other.to_string(),
        })
        .collect()
}

/// The lines of a statement as printed.
fn statement_lines(s: &Statement) -> Vec<String> {
    let c = s.currency;
    let mut lines = vec![
        format!("Settlement statement: {}", s.partner),
        format!("Period {} to {}", s.period.start.to_rfc3339(), s.period.end.to_rfc3339()),
        format!("Currency {}", c.code()),
        String::new(),
        format!("Opening balance      {}", money(s.opening, c)),
        format!("Gross sales          {}", money(s.gross_sales, c)),
        format!("Refunds              {}", money(s.refunds, c)),
        format!("Chargebacks          {}", money(s.chargebacks, c)),
    ];
    for (party, amount) in &s.shares {
        lines.push(format!("Share {party:<15}{}", money(*amount, c)));
    }
    lines.extend([
        format!("Fees: percent        {}", money(s.fees.percent, c)),
        format!("Fees: fixed          {}", money(s.fees.fixed, c)),
        format!("Fees: chargeback     {}", money(s.fees.chargeback, c)),
        format!("Fees: tiered         {}", money(s.fees.tiered, c)),
        format!("Fees: minimum        {}", money(s.fees.minimum, c)),
        format!("Adjustments          {}", money(s.adjustments, c)),
        format!("Payouts              {}", money(s.payouts, c)),
        format!("Closing balance      {}", money(s.closing, c)),
        String::new(),
        format!("Transactions {}, late {}", s.transaction_count, s.late_count),
    ]);
    lines
}

/// A one-page PDF of the statement.
pub fn statement_pdf(s: &Statement) -> Vec<u8> {
    let mut content = String::from("BT /F1 11 Tf 14 TL 56 780 Td\n");
    for line in statement_lines(s) {
        content.push_str(&format!("({}) Tj T*\n", pdf_text(&line)));
    }
    content.push_str("ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>".to_string(),
    ];
    let mut out = String::from("%PDF-1.4\n");
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.push_str(&format!("{} 0 obj\n{body}\nendobj\n", i + 1));
    }
    let xref = out.len();
    out.push_str(&format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1));
    for o in offsets {
        out.push_str(&format!("{o:010} 00000 n \n"));
    }
    out.push_str(&format!(
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    ));
    out.into_bytes()
}
