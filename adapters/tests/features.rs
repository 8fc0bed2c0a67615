//! One test per mapping feature, on small in-memory files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use settle_adapters::{canonical_json, Mapping, MappingError, ReadError, Rows};

fn rows(mapping: &str, data: &str) -> Vec<Value> {
    let mapping = Mapping::from_toml(mapping).unwrap();
    Rows::new(mapping, data.as_bytes(), "f.csv").unwrap().map(|r| canonical_json(&r.unwrap().tx)).collect()
}

const BASE: &str = r#"
name = "t"
format = "csv"
[fields]
id = "id"
amount = "amount"
occurred_at = "at"
[constants]
partner = "p"
kind = "sale"
currency = "EUR"
"#;

#[test]
fn quoted_delimiters_and_line_breaks_stay_in_their_field() {
    let m = BASE.replace("[fields]", "[metadata]\ncolumns = [\"note\"]\n[fields]");
    let out = rows(&m, "id,amount,at,note\n1,\"1,5\",2026-01-02T10:00:00Z,\"a, \"\"b\"\"\nc\"\n");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["metadata"]["source"]["note"], "a, \"b\"\nc");
    // "1,5" is not a number under `.` decimals: sent as is.
    assert_eq!(out[0]["amount"], "1,5");
}

#[test]
fn tab_delimiter_without_header_and_preamble() {
    let m = r#"
name = "t"
format = "csv"
[csv]
delimiter = "\t"
header = false
columns = ["id", "amount", "at"]
skip_lines = 2
[fields]
id = "id"
amount = "amount"
occurred_at = "at"
[constants]
partner = "p"
kind = "payout"
currency = "EUR"
"#;
    let out = rows(m, "Report\nGenerated today\nx1\t10.00\t2026-01-02T10:00:00Z\n");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["id"], "x1");
    assert_eq!(out[0]["kind"], "payout");
}

#[test]
fn separate_debit_and_credit_columns() {
    let m = r#"
name = "t"
format = "csv"
[fields]
id = "id"
debit = "debit"
credit = "credit"
occurred_at = "at"
[constants]
partner = "p"
kind = "adjustment"
currency = "EUR"
reason = "bank correction"
"#;
    let out = rows(m, "id,debit,credit,at\n1,5.00,,2026-01-02T10:00:00Z\n2,,7.00,2026-01-02T10:00:00Z\n3,1,2,2026-01-02T10:00:00Z\n");
    assert_eq!(out[0]["amount"], "-5.00");
    assert_eq!(out[1]["amount"], "7.00");
    assert!(out[2]["metadata"]["import"]["error"].as_str().unwrap().contains("both"));
}

#[test]
fn negative_amounts_as_refunds() {
    let m = BASE.replace("[constants]", "[amount]\nnegative = \"refund\"\n[constants]");
    let out = rows(&m, "id,amount,at\n1,-3.00,2026-01-02T10:00:00Z\n2,3.00,2026-01-02T10:00:00Z\n");
    assert_eq!((out[0]["kind"].as_str(), out[0]["amount"].as_str()), (Some("refund"), Some("3.00")));
    assert_eq!((out[1]["kind"].as_str(), out[1]["amount"].as_str()), (Some("sale"), Some("3.00")));
}

#[test]
fn negative_kept_by_default() {
    let out = rows(BASE, "id,amount,at\n1,-3.00,2026-01-02T10:00:00Z\n");
    assert_eq!(out[0]["amount"], "-3.00");
}

#[test]
fn defaults_fill_blanks_and_constants_win() {
    let m = r#"
name = "t"
format = "csv"
[fields]
id = "id"
partner = "partner"
kind = "kind"
amount = "amount"
currency = "currency"
occurred_at = "at"
[defaults]
currency = "USD"
kind = "sale"
[constants]
partner = "always"
"#;
    let out = rows(m, "id,partner,kind,amount,currency,at\n1,other,,1.00,,2026-01-02T10:00:00Z\n2,x,Refund,1.00,EUR,2026-01-02T10:00:00Z\n");
    assert_eq!(out[0]["partner"], "always");
    assert_eq!(out[0]["currency"], "USD");
    assert_eq!(out[0]["kind"], "sale");
    assert_eq!(out[1]["kind"], "refund", "kind names are read case-insensitively without a code table");
    assert_eq!(out[1]["currency"], "EUR");
}

#[test]
fn derived_ids_are_stable_and_number_identical_rows_apart() {
    let m = BASE.replace("id = \"id\"\n", "");
    let data =
        "id,amount,at\n,1.00,2026-01-02T10:00:00Z\n,1.00,2026-01-02T10:00:00Z\n,2.00,2026-01-02T10:00:00Z\n";
    let a = rows(&m, data);
    let b = rows(&m, data);
    assert_eq!(a, b);
    let ids: Vec<&str> = a.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert!(ids[0].starts_with("h-") && ids[0].len() == 34);
    assert_eq!(ids[1], format!("{}-2", ids[0]));
    assert_ne!(ids[2], ids[0]);
    // Another mapping name gives other ids for the same rows.
    let other = rows(&m.replace("name = \"t\"", "name = \"u\""), data);
    assert_ne!(other[0]["id"], a[0]["id"]);
}

#[test]
fn blank_or_too_long_ids_are_derived() {
    let long = "x".repeat(70);
    let out =
        rows(BASE, &format!("id,amount,at\n,1.00,2026-01-02T10:00:00Z\n{long},1.00,2026-01-02T10:00:00Z\n"));
    assert!(out[0]["id"].as_str().unwrap().starts_with("h-"));
    assert!(out[1]["id"].as_str().unwrap().starts_with("h-"));
}

#[test]
fn unreadable_time_gets_the_far_future_instant() {
    let out = rows(BASE, "id,amount,at\n1,1.00,yesterday\n");
    assert_eq!(out[0]["occurred_at"], "9999-12-31T23:59:59Z");
    assert_eq!(out[0]["amount"], "1.00", "the amount stays: the time alone makes it an exception");
    assert!(out[0]["metadata"]["import"]["error"].as_str().unwrap().contains("yesterday"));
}

#[test]
fn missing_column_in_row_is_an_error_row() {
    let out = rows(BASE, "id,amount,at\n1\n");
    assert_eq!(out.len(), 1);
    assert!(out[0].get("amount").is_none());
    assert_eq!(out[0]["metadata"]["import"]["row"], 2);
}

#[test]
fn header_without_a_mapped_column_is_refused_before_any_row() {
    let mapping = Mapping::from_toml(BASE).unwrap();
    let err = Rows::new(mapping, "id,amt,at\n".as_bytes(), "f").unwrap_err();
    assert!(matches!(err, ReadError::Header(_)), "{err}");
}

#[test]
fn bom_is_not_part_of_the_first_column_name() {
    let out = rows(BASE, "\u{feff}id,amount,at\n1,1.00,2026-01-02T10:00:00Z\n");
    assert_eq!(out[0]["id"], "1");
}

#[test]
fn non_utf8_row_is_kept_as_error_row() {
    let mapping = Mapping::from_toml(BASE).unwrap();
    let data: &[u8] = b"id,amount,at\n1,\xff,2026-01-02T10:00:00Z\n2,1.00,2026-01-02T10:00:00Z\n";
    let out: Vec<_> = Rows::new(mapping, data, "f").unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(out.len(), 2);
    assert!(out[0].error.as_deref().unwrap().contains("UTF-8"));
    assert!(out[1].error.is_none());
    assert_eq!(out[1].bytes_read, data.len() as u64);
}

#[test]
fn mapping_errors_name_the_key() {
    let cases = [
        (BASE.replace("occurred_at = \"at\"\n", ""), "occurred_at"),
        (BASE.replace("kind = \"sale\"", "kind = \"sell\""), "constants.kind"),
        (BASE.replace("[constants]", "[time]\ntimezone = \"Mars/Olympus\"\n[constants]"), "timezone"),
        (BASE.replace("[constants]", "[amount]\nnegative = \"drop\"\n[constants]"), "amount.negative"),
        (
            BASE.replace(
                "[constants]",
                "[amount]\ndecimal_separator = \",\"\nthousands_separator = \",\"\n[constants]",
            ),
            "thousands",
        ),
        (BASE.replace("[constants]", "[codes.kind]\nX = \"gift\"\n[constants]"), "codes.kind"),
        (BASE.replace("[fields]", "[fields]\nbogus = \"x\""), "bogus"),
        (BASE.replace("format = \"csv\"", "format = \"xml\""), "xml"),
        (BASE.replace("format = \"csv\"", "format = \"fixed\""), "fixed.columns"),
    ];
    for (text, needle) in cases {
        let err = Mapping::from_toml(&text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(needle), "{needle}: {msg}");
        assert!(matches!(err, MappingError::Invalid(_) | MappingError::Toml(_)));
    }
}

#[test]
fn batches_keep_file_order_and_cut_by_rows_or_bytes() {
    let data: String = std::iter::once("id,amount,at\n".to_string())
        .chain((1..=7).map(|i| format!("{i},1.00,2026-01-02T10:00:00Z\n")))
        .collect();
    let batches = |max_rows, max_bytes| -> Vec<Vec<u64>> {
        let mapping = Mapping::from_toml(BASE).unwrap();
        Rows::new(mapping, data.as_bytes(), "f")
            .unwrap()
            .batches(max_rows, max_bytes)
            .map(|b| b.unwrap().iter().map(|r| r.row).collect())
            .collect()
    };
    assert_eq!(batches(3, usize::MAX), vec![vec![2, 3, 4], vec![5, 6, 7], vec![8]]);
    // One byte is reached by every row: one row per batch.
    assert_eq!(batches(100, 1).len(), 7);
    assert_eq!(batches(100, usize::MAX), vec![(2..=8).collect::<Vec<u64>>()]);
}
