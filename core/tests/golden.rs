//! Golden replays: every `tests/golden/NAME.json` scenario must replay to exactly
//! `tests/golden/NAME.expected.json`. The expected files are hand-checked against the spec, never
//! copied from the program's output.

// Test and benchmark helpers fail loudly on broken fixtures; that is their job.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
// The golden runner reads its fixtures; the no-I/O rule is for the library, not its tests.
#![allow(clippy::disallowed_methods)]

use serde_json::Value;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden")
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".json") && !name.ends_with(".expected.json")
        })
        .collect();
    files.sort();
    files
}

/// Party names of every statement's `shares`, in document order. `Value` equality ignores key
/// order, but the spec fixes it (parties of the version in force first, then new ones), so the
/// order is read with a visitor that sees the entries as they appear in the text.
fn share_orders(text: &str) -> Vec<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Output {
        statements: Vec<StatementShares>,
    }
    #[derive(serde::Deserialize)]
    struct StatementShares {
        shares: KeysInOrder,
    }
    struct KeysInOrder(Vec<String>);
    impl<'de> serde::Deserialize<'de> for KeysInOrder {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = KeysInOrder;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a shares object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<KeysInOrder, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(KeysInOrder(keys))
                }
            }
            d.deserialize_map(Visitor)
        }
    }
    let output: Output = serde_json::from_str(text).expect("replay output has statements with shares");
    output.statements.into_iter().map(|s| s.shares.0).collect()
}

fn replay(text: &str) -> String {
    let scenario = settle_core::scenario::parse(text).expect("golden scenario is well formed");
    settle_core::replay::run(&scenario).expect("golden scenario replays").to_json()
}

#[test]
fn every_golden_scenario_replays_to_its_expected_output() {
    let files = scenario_files();
    assert!(files.len() >= 10, "expected at least ten golden scenarios, found {}", files.len());
    let mut failures = Vec::new();
    for scenario_path in files {
        let name = scenario_path.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
        let expected_path = golden_dir().join(format!("{name}.expected.json"));
        let scenario_text = std::fs::read_to_string(&scenario_path).expect("scenario readable");
        let expected_text = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{name}: missing {}: {e}", expected_path.display()));
        let actual_text = replay(&scenario_text);
        let actual: Value = serde_json::from_str(&actual_text).expect("replay prints JSON");
        let expected: Value = serde_json::from_str(&expected_text).expect("expected file is JSON");
        if actual != expected {
            failures.push(format!("{name}: output differs\n--- actual ---\n{actual_text}"));
            continue;
        }
        let (actual_order, expected_order) = (share_orders(&actual_text), share_orders(&expected_text));
        if actual_order != expected_order {
            failures
                .push(format!("{name}: shares key order differs: {actual_order:?} != {expected_order:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn replay_output_is_byte_identical_across_runs() {
    for scenario_path in scenario_files() {
        let text = std::fs::read_to_string(&scenario_path).expect("scenario readable");
        assert_eq!(replay(&text), replay(&text), "{}", scenario_path.display());
    }
}
