//! Property tests: reading never panics on any input, CSV quoting round-trips any field, and
//! amounts in any separator style come out as the same exact number.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use settle_adapters::number::{parse_amount, NumberStyle};
use settle_adapters::{Mapping, Rows};

fn mapping(format: &str, delimiter: char) -> Mapping {
    let extra = match format {
        "fixed" => "[fixed]\ncolumns = [{ name = \"id\", start = 1, len = 4 }, { name = \"amount\", start = 5, len = 8 }, { name = \"at\", start = 13, len = 20 }]\n",
        _ => "",
    };
    let text = format!(
        "name = \"p\"\nformat = \"{format}\"\n[csv]\ndelimiter = \"{}\"\n{extra}[fields]\nid = \"id\"\namount = \"amount\"\noccurred_at = \"at\"\n[constants]\npartner = \"p\"\nkind = \"sale\"\ncurrency = \"EUR\"\n",
        delimiter.escape_default()
    );
    Mapping::from_toml(&text).unwrap()
}

fn quote(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), which in 0usize..3) {
        let format = ["csv", "jsonl", "fixed"][which];
        let m = mapping(format, ',');
        // CSV wants its header; give it one so that the rows, not the header, are fuzzed.
        let mut input = if format == "csv" { b"id,amount,at\n".to_vec() } else { Vec::new() };
        input.extend_from_slice(&data);
        if let Ok(rows) = Rows::new(m, input.as_slice(), "fuzz") {
            let mut last = 0;
            for row in rows {
                let row = row.unwrap();
                prop_assert!(!row.tx.id.is_empty() && row.tx.id.len() <= 64);
                prop_assert!(row.bytes_read >= last);
                last = row.bytes_read;
            }
        }
    }

    #[test]
    fn quoted_fields_keep_delimiters_quotes_and_newlines(
        note in "[a-z;,\t\"\n ]{0,20}",
        delimiter in prop::sample::select(vec![',', ';', '|', '\t']),
    ) {
        let m = Mapping::from_toml(&format!(
            "name = \"q\"\nformat = \"csv\"\n[csv]\ndelimiter = \"{}\"\n[fields]\nid = \"id\"\namount = \"amount\"\noccurred_at = \"at\"\n[constants]\npartner = \"p\"\nkind = \"sale\"\ncurrency = \"EUR\"\n[metadata]\ncolumns = [\"note\"]\n",
            delimiter.escape_default()
        )).unwrap();
        let d = delimiter.to_string();
        let data = format!("id{d}amount{d}at{d}note\n1{d}1.00{d}2026-01-02T10:00:00Z{d}{}\n", quote(&note));
        let rows: Vec<_> = Rows::new(m, data.as_bytes(), "q").unwrap().map(|r| r.unwrap()).collect();
        prop_assert_eq!(rows.len(), 1);
        let meta: serde_json::Value = serde_json::from_str(rows[0].tx.metadata_json.as_deref().unwrap()).unwrap();
        // Fields are trimmed of surrounding spaces; everything inside the quotes stays.
        prop_assert_eq!(meta["source"]["note"].as_str().unwrap(), note.trim());
        prop_assert_eq!(rows[0].tx.amount.as_deref(), Some("1.00"));
    }

    #[test]
    fn separator_styles_agree(int in 0u64..10_000_000_000, frac in 0u32..100, negative: bool) {
        let plain = format!("{}{int}.{frac:02}", if negative { "-" } else { "" });
        let digits = int.to_string();
        let grouped: Vec<String> = {
            let bytes = digits.as_bytes();
            let head = bytes.len() % 3;
            let mut groups = Vec::new();
            if head > 0 { groups.push(digits[..head].to_string()); }
            for i in (head..bytes.len()).step_by(3) { groups.push(digits[i..i + 3].to_string()); }
            groups
        };
        let eu = format!("{}{},{frac:02}", if negative { "-" } else { "" }, grouped.join("."));
        let ch = format!("{}{}.{frac:02}{}", "", grouped.join("'"), if negative { "-" } else { "" });
        let cents = format!("{}{}", if negative { "-" } else { "" }, u128::from(int) * 100 + u128::from(frac));
        let dot = NumberStyle { decimal_separator: '.', thousands_separator: None, minor_units: None };
        let eu_style = NumberStyle { decimal_separator: ',', thousands_separator: Some('.'), minor_units: None };
        let ch_style = NumberStyle { decimal_separator: '.', thousands_separator: Some('\''), minor_units: None };
        let cents_style = NumberStyle { decimal_separator: '.', thousands_separator: None, minor_units: Some(2) };
        let want = parse_amount(&plain, dot).unwrap().to_canonical();
        prop_assert_eq!(&parse_amount(&eu, eu_style).unwrap().to_canonical(), &want);
        prop_assert_eq!(&parse_amount(&ch, ch_style).unwrap().to_canonical(), &want);
        prop_assert_eq!(&parse_amount(&cents, cents_style).unwrap().to_canonical(), &want);
    }

    #[test]
    fn parse_amount_never_panics(s in "\\PC{0,40}", dec in prop::sample::select(vec!['.', ',']), minor in proptest::option::of(0u32..5)) {
        let style = NumberStyle { decimal_separator: dec, thousands_separator: None, minor_units: minor };
        if let Ok(a) = parse_amount(&s, style) {
            prop_assert!(settle_adapters::rows::is_spec_amount(&a.to_canonical()));
        }
    }
}
