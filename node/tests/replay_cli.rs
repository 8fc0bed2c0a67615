//! `settle replay` as a user runs it: golden output on stdout, and for a malformed scenario exit
//! code 2 with a message naming the field, never a panic.

// Test and benchmark helpers fail loudly on broken fixtures; that is their job.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("core").join("tests").join("golden")
}

fn run_replay(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_settle"))
        .arg("replay")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("settle binary runs")
}

/// Writes `text` into `dir` (a per-test temporary directory, removed when the test ends).
fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("temp file written");
    path
}

#[test]
fn golden_scenarios_print_their_expected_output() {
    let mut checked = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("core/tests/golden exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.ends_with(".json") && !n.ends_with(".expected.json")
        })
        .collect();
    entries.sort();
    for scenario in entries {
        let stem = scenario.file_stem().and_then(|s| s.to_str()).expect("utf-8 name").to_string();
        let expected_text =
            std::fs::read_to_string(golden_dir().join(format!("{stem}.expected.json"))).expect("expected");
        let output = run_replay(&scenario);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stem}: {stderr}");
        let actual: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
        let expected: Value = serde_json::from_str(&expected_text).expect("expected is JSON");
        assert_eq!(actual, expected, "{stem}");
        checked += 1;
    }
    assert!(checked >= 4);
}

/// A well-formed base scenario that each malformed case edits in one place.
fn base() -> Value {
    json!({
        "partners": [{
            "id": "p", "settlement_currency": "EUR", "since": "2026-01-01T00:00:00Z",
            "cycle": {"every": "daily", "cutoff": "00:00", "tz": "UTC"},
            "contracts": [{"effective_from": "2026-01-01T00:00:00Z",
                           "shares": [{"party": "partner", "percent": "90"},
                                      {"party": "platform", "percent": "10"}],
                           "fees": [{"kind": "percent", "bps": "100", "min": "0.10", "max": "5.00"}]}]
        }],
        "transactions": [{"id": "t1", "partner": "p", "kind": "sale", "amount": "10.00", "currency": "EUR",
                          "occurred_at": "2026-01-01T10:00:00Z", "received_at": "2026-01-01T10:00:00Z"}],
        "close_until": "2026-01-02T00:00:00Z"
    })
}

#[test]
fn base_scenario_is_well_formed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_temp(&dir, "base.json", &base().to_string());
    let output = run_replay(&path);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn malformed_scenarios_exit_2_naming_the_field() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("unknown_kind", Box::new(|v| v["transactions"][0]["kind"] = json!("gift")), "transactions[0].kind"),
        (
            "id_65_bytes",
            Box::new(|v| v["transactions"][0]["id"] = json!("x".repeat(65))),
            "transactions[0].id",
        ),
        ("empty_id", Box::new(|v| v["transactions"][0]["id"] = json!("")), "transactions[0].id"),
        (
            "missing_instant",
            Box::new(|v| {
                v["transactions"][0].as_object_mut().expect("object").remove("occurred_at");
            }),
            "transactions[0].occurred_at",
        ),
        (
            "malformed_instant",
            Box::new(|v| v["transactions"][0]["received_at"] = json!("2026-01-01 10:00")),
            "transactions[0].received_at",
        ),
        (
            "shares_not_100",
            Box::new(|v| v["partners"][0]["contracts"][0]["shares"][1]["percent"] = json!("9.99")),
            "partners[0].contracts[0].shares",
        ),
        (
            "party_twice",
            Box::new(|v| v["partners"][0]["contracts"][0]["shares"][1]["party"] = json!("partner")),
            "partners[0].contracts[0].shares[1].party",
        ),
        (
            "unknown_tz",
            Box::new(|v| v["partners"][0]["cycle"]["tz"] = json!("Europe/Atlantis")),
            "partners[0].cycle.tz",
        ),
        (
            "no_contract_versions",
            Box::new(|v| v["partners"][0]["contracts"] = json!([])),
            "partners[0].contracts",
        ),
        (
            "missing_contracts",
            Box::new(|v| {
                v["partners"][0].as_object_mut().expect("object").remove("contracts");
            }),
            "partners[0].contracts",
        ),
        (
            "min_above_max",
            Box::new(|v| v["partners"][0]["contracts"][0]["fees"][0]["min"] = json!("6.00")),
            "partners[0].contracts[0].fees[0].min",
        ),
        (
            "two_minimum_fees",
            Box::new(|v| {
                v["partners"][0]["contracts"][0]["period_fees"] =
                    json!([{"kind": "minimum", "amount": "1.00"}, {"kind": "minimum", "amount": "2.00"}])
            }),
            "partners[0].contracts[0].period_fees[1]",
        ),
        ("partners_not_an_array", Box::new(|v| v["partners"] = json!({})), "partners"),
        ("transaction_not_an_object", Box::new(|v| v["transactions"] = json!([5])), "transactions[0]"),
        (
            "monthly_day_29",
            Box::new(|v| {
                v["partners"][0]["cycle"] =
                    json!({"every": "monthly", "day": 29, "cutoff": "00:00", "tz": "UTC"})
            }),
            "partners[0].cycle.day",
        ),
        (
            "cutoff_25_00",
            Box::new(|v| v["partners"][0]["cycle"]["cutoff"] = json!("25:00")),
            "partners[0].cycle.cutoff",
        ),
        (
            "bps_not_a_decimal",
            Box::new(|v| v["partners"][0]["contracts"][0]["fees"][0]["bps"] = json!(true)),
            "partners[0].contracts[0].fees[0].bps",
        ),
        (
            "huge_percent",
            Box::new(|v| v["partners"][0]["contracts"][0]["shares"][0]["percent"] = json!("9".repeat(40))),
            "partners[0].contracts[0].shares[0].percent",
        ),
        (
            "missing_close_until",
            Box::new(|v| {
                v.as_object_mut().expect("object").remove("close_until");
            }),
            "close_until",
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, edit, field) in cases {
        let mut scenario = base();
        edit(&mut scenario);
        let path = write_temp(&dir, &format!("{name}.json"), &scenario.to_string());
        let output = run_replay(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(output.stdout.is_empty(), "{name}: nothing on stdout");
        assert!(stderr.contains(field), "{name}: {stderr:?} should name {field}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[test]
fn an_id_of_64_bytes_is_accepted() {
    let mut scenario = base();
    scenario["transactions"][0]["id"] = json!("x".repeat(64));
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run_replay(&write_temp(&dir, "id64.json", &scenario.to_string()));
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn bad_json_exits_2_with_line_and_column() {
    let cases: &[(&str, &str)] = &[
        ("trailing_comma", "{\n  \"partners\": [,]\n}"),
        ("not_json", "partners: []"),
        ("empty", ""),
        ("truncated", "{\"partners\": [{\"id\": \"p\""),
        ("top_level_array", "[]"),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for &(name, text) in cases {
        let path = write_temp(&dir, &format!("{name}.json"), text);
        let output = run_replay(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(stderr.contains("line") || stderr.contains("expected an object"), "{name}: {stderr}");
    }
}

#[test]
fn missing_file_is_refused_without_panic() {
    let output = run_replay(Path::new("/nonexistent/settle/scenario.json"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
