//! settle-chaos as a user runs it: real `settle node` processes (in network namespaces when the
//! test runs as root), real load over QUIC, seeded faults, and the full check at the end. A short
//! standalone run always; a short 3-node run once the `settle` binary speaks the cluster flags of
//! `docs/cluster-interface.md`.
//! The `settle` binary is taken from `SETTLE_BIN` or next to this crate's binary (a workspace
//! test run builds both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn settle() -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_settle-chaos"));
    let settle = std::env::var_os("SETTLE_BIN").map_or_else(|| me.with_file_name("settle"), Into::into);
    assert!(settle.exists(), "build the settle binary first (cargo build -p settle-node), or set SETTLE_BIN");
    settle
}

/// Runs settle-chaos and returns its exit code and JSON report.
fn chaos_exit(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_settle-chaos"))
        .args(args)
        .arg("--json")
        .arg("--settle")
        .arg(settle())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with('{')) else {
        panic!("no JSON line; exit {:?}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
    };
    (out.status.code(), serde_json::from_str(line).unwrap())
}

fn chaos(args: &[&str]) -> serde_json::Value {
    let (code, report) = chaos_exit(args);
    assert_eq!(code, Some(0), "{report}");
    report
}

fn assert_clean(report: &serde_json::Value) {
    for key in ["acked", "lost", "duplicated", "divergent_shards", "violations", "max_unavailability_ms"] {
        assert!(report[key].is_number(), "{key} missing: {report}");
    }
    assert!(report["acked"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["verified"], report["acked"], "{report}");
    for key in ["lost", "duplicated", "divergent_shards", "violations", "balance_mismatches", "unreconciled"]
    {
        assert_eq!(report[key], 0, "{key}: {report}");
    }
    assert!(report["liveness_ms"].is_number(), "{report}");
}

fn kinds(report: &serde_json::Value) -> BTreeSet<String> {
    report["faults"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_standalone_node_survives_kills_pauses_and_restarts() {
    let report = chaos(&["--nodes", "1", "--duration", "15s", "--seed", "3", "--partners", "40"]);
    assert_clean(&report);
    assert_eq!(report["mode"], "standalone");
    let injected = report["faults_injected"].as_u64().unwrap();
    assert!(injected >= 3, "{report}");
    let expected: BTreeSet<String> =
        ["kill", "pause", "rolling-restart"].map(String::from).into_iter().collect();
    assert_eq!(kinds(&report), expected, "{report}");
    // Cluster faults are skipped, each with its reason.
    let skipped: BTreeSet<&str> =
        report["skipped_faults"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert!(skipped.contains("split") && skipped.contains("add-node"), "{report}");
    // A kill makes the only node unavailable for a while, and the driver sees it.
    assert!(report["max_unavailability_ms"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn the_harness_notices_lost_transactions() {
    // A deliberate bug: a killed node comes back with an empty data directory.
    let (code, report) = chaos_exit(&[
        "--nodes",
        "1",
        "--duration",
        "8s",
        "--seed",
        "5",
        "--partners",
        "20",
        "--faults",
        "kill",
        "--inject-bug",
        "lose-data",
    ]);
    if let Some(dir) = report["workdir"].as_str() {
        let _ = std::fs::remove_dir_all(dir);
    }
    assert_eq!(code, Some(1), "a violated invariant exits 1: {report}");
    assert!(report["lost"].as_u64().unwrap() > 0, "{report}");
    assert!(report["violations"].as_u64().unwrap() >= report["lost"].as_u64().unwrap(), "{report}");
}

/// Whether the `settle` binary under test has the cluster flags (the cluster is built on its own
/// branch; until it is merged there is nothing to run this against).
fn cluster_available() -> bool {
    let out = Command::new(settle()).args(["node", "--help"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("--peer-listen")
}

/// Kills of followers and leaders against a 3-node cluster. (It was ignored while writes stalled
/// for over a minute after kills on a loaded machine: that was the client's reconnect storm, each
/// failed request closing its successor connection; see docs/chaos.md, "Known findings".)
#[test]
fn a_three_node_cluster_keeps_every_invariant_while_nodes_and_leaders_are_killed() {
    if !cluster_available() {
        eprintln!("skipped: this `settle` binary has no cluster mode (no --peer-listen)");
        return;
    }
    let report =
        chaos(&["--nodes", "3", "--duration", "25s", "--seed", "11", "--partners", "40", "--faults", "kill"]);
    assert_clean(&report);
    assert_eq!(report["mode"], "cluster");
    assert_eq!(report["unconverged_shards"], 0, "{report}");
    assert!(report["faults_injected"].as_u64().unwrap() >= 3, "{report}");
}

/// Every fault kind the seed's schedule draws in a minute against a 3-node cluster (node add and
/// remove among them).
#[test]
fn a_three_node_cluster_keeps_every_invariant_under_every_fault_kind() {
    if !cluster_available() {
        eprintln!("skipped: this `settle` binary has no cluster mode (no --peer-listen)");
        return;
    }
    let report = chaos(&["--nodes", "3", "--duration", "60s", "--seed", "7", "--partners", "60"]);
    assert_clean(&report);
    assert_eq!(report["mode"], "cluster");
    assert_eq!(report["unconverged_shards"], 0, "{report}");
    // How many faults fit in the minute depends on how fast the machine restarts nodes (a
    // rolling restart took 24 s alone and 41 s beside the other tests); the seed's first ones
    // always run: a node added, then every node restarted in turn.
    let kinds: Vec<&str> =
        report["faults"].as_array().unwrap().iter().filter_map(|f| f["kind"].as_str()).collect();
    assert!(kinds.starts_with(&["add-node", "rolling-restart"]), "{report}");
    assert!(report["faults_injected"].as_u64().unwrap() >= 3, "{report}");
}
