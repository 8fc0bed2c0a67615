//! settle-loadtest as a user runs it: it starts its own `settle node` process, drives closed-loop
//! and open-loop traffic over QUIC, verifies every acked transaction, and reports JSON.
//! The `settle` binary is taken from `SETTLE_BIN` or next to this crate's binary (a workspace
//! test run builds both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn run(extra: &[&str]) -> serde_json::Value {
    let me = std::path::PathBuf::from(env!("CARGO_BIN_EXE_settle-loadtest"));
    let settle = std::env::var_os("SETTLE_BIN").map_or_else(|| me.with_file_name("settle"), Into::into);
    assert!(settle.exists(), "build the settle binary first (cargo build -p settle-node), or set SETTLE_BIN");
    let out = Command::new(&me)
        .args(["--partners", "200", "--duration", "2s", "--batch", "50", "--seed", "7", "--json"])
        .args(extra)
        .env("SETTLE_BIN", &settle)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().find(|l| l.starts_with('{')).expect("a JSON line");
    serde_json::from_str(line).unwrap()
}

fn check(report: &serde_json::Value) {
    for key in ["offered_tps", "accepted_tps", "p50_ms", "p99_ms", "p999_ms", "errors", "acked", "verified"] {
        assert!(report[key].is_number(), "{key} missing: {report}");
    }
    assert!(report["acked"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["verified"], report["acked"], "{report}");
    for key in [
        "lost",
        "duplicated",
        "balance_mismatches",
        "outcome_mismatches",
        "statement_mismatches",
        "exceptions",
    ] {
        assert_eq!(report[key], 0, "{key}: {report}");
    }
    assert_eq!(report["balances_checked"], 200);
}

#[test]
fn closed_loop_with_skew_verifies_everything() {
    let report = run(&["--zipf", "1.2", "--connections", "2"]);
    assert_eq!(report["mode"], "closed");
    check(&report);
}

#[test]
fn open_loop_holds_the_offered_rate() {
    let report = run(&["--rate", "2000"]);
    assert_eq!(report["mode"], "open");
    check(&report);
}
