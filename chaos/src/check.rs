//! The invariants, judged from evidence gathered after the run. Pure: fabricated evidence tests it.
//!
//! - Every acked transaction is present exactly once: its repeat must be flagged duplicate with
//!   its first result (`lost` / `duplicated`, from `settle_loadtest::verify`).
//! - Balances and open-period statements equal a replay of the acked history through settle-core
//!   (`balance_mismatches`, `statement_mismatches`, `outcome_mismatches`), which also catches a
//!   transaction applied twice by the replica that answers reads.
//! - Replicas of each shard agree: once they have applied the same log index their state hashes
//!   are equal (`divergent_shards`), and after the heal they all catch up (`unconverged_shards`). A replica that applied a transaction twice has another state,
//!   so this is also the check that no replica applied anything twice.
//! - Liveness: after the heal every probe partner accepted a write, and every batch whose outcome
//!   was unknown got answered.

use crate::cluster::Status;
use settle_loadtest::traffic::{History, PartnerDef};
use settle_loadtest::verify::{self, NodeBalance};
use settle_wire as wire;
use std::collections::{BTreeMap, BTreeSet};

/// Violation messages kept in the report (the counts are always complete).
pub const MAX_DETAILS: usize = 50;

#[derive(Debug)]
pub struct Evidence<'a> {
    pub partners: &'a [PartnerDef],
    pub rates: &'a [wire::FxRate],
    pub history: &'a History,
    /// The answer to the repeat of each acked transaction, in history order.
    pub repeats: &'a [wire::TxResult],
    /// Every partner's payable as the cluster reports it.
    pub balances: &'a BTreeMap<String, NodeBalance>,
    pub seed: u64,
    /// Transactions whose outcome stayed unknown after the heal.
    pub unreconciled: u64,
    /// The cluster's last status (None for a standalone node: one replica, nothing to compare).
    pub status: Option<&'a Status>,
    /// Problems found while running (a node that did not come back, no progress after the heal).
    pub run_problems: &'a [String],
}

#[derive(Debug, Default)]
pub struct Verdict {
    pub acked: u64,
    pub verified: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub divergent_shards: u64,
    pub unconverged_shards: u64,
    pub balances_checked: u64,
    pub balance_mismatches: u64,
    pub outcome_mismatches: u64,
    pub statements_checked: u64,
    pub statement_mismatches: u64,
    pub exceptions: u64,
    pub unreconciled: u64,
    /// Every violation of any invariant, counted once each.
    pub violations: u64,
    pub details: Vec<String>,
}

impl Verdict {
    /// The verdict when the evidence could not be gathered (the cluster did not answer after the
    /// heal): nothing is known to be lost, but the run failed.
    pub fn unverified(acked: u64, unreconciled: u64, problems: &[String]) -> Verdict {
        let mut v = Verdict { acked, unreconciled, ..Verdict::default() };
        if unreconciled > 0 {
            v.violation(format!("{unreconciled} transactions still had no answer after the heal"));
        }
        for p in problems {
            v.violation(p.clone());
        }
        v
    }

    pub fn passed(&self) -> bool {
        self.violations == 0
    }

    fn violation(&mut self, message: String) {
        self.violations += 1;
        if self.details.len() < MAX_DETAILS {
            self.details.push(message);
        }
    }
}

/// How the replicas of one shard disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disagreement {
    /// Two replicas at the same applied index have different state hashes: they applied the same
    /// log differently (a safety violation).
    Diverged,
    /// The replicas are at different applied indexes (or one did not report) after the wait:
    /// replication did not catch up (a liveness violation); their hashes cannot be compared.
    Unconverged,
}

/// Every shard whose member replicas disagree, with how and a description.
pub fn disagreements(status: &Status) -> Vec<(u32, Disagreement, String)> {
    let mut out = Vec::new();
    for shard in &status.shards {
        let members: BTreeSet<_> = shard.members.iter().copied().collect();
        let replicas: Vec<_> =
            shard.replicas.iter().filter(|r| members.is_empty() || members.contains(&r.node)).collect();
        let mut hashes_at: BTreeMap<Option<u64>, BTreeSet<String>> = BTreeMap::new();
        for r in &replicas {
            hashes_at.entry(r.applied_index).or_default().insert(r.state_hash.to_string());
        }
        let diverged = hashes_at.iter().any(|(index, hashes)| index.is_some() && hashes.len() > 1);
        let kind = if diverged {
            Disagreement::Diverged
        } else if hashes_at.len() > 1 || hashes_at.contains_key(&None) {
            Disagreement::Unconverged
        } else {
            continue;
        };
        let view: Vec<String> = replicas
            .iter()
            .map(|r| {
                let at = r.applied_index.map_or("(no report)".to_string(), |i| i.to_string());
                format!("node {} at {at} hash {}", r.node, r.state_hash)
            })
            .collect();
        out.push((shard.shard, kind, view.join("; ")));
    }
    out
}

pub fn judge(e: &Evidence<'_>) -> anyhow::Result<Verdict> {
    let mut v = Verdict { acked: e.history.len() as u64, ..Verdict::default() };

    // The same id acknowledged twice with different results: applied twice, or changed.
    let mut first: BTreeMap<&str, &wire::TxResult> = BTreeMap::new();
    for (tx, result) in e.history.iter() {
        if let Some(earlier) = first.insert(tx.id.as_str(), result) {
            if earlier.outcome != result.outcome {
                v.duplicated += 1;
                v.violation(format!("duplicated: {} acknowledged as {earlier:?} and as {result:?}", tx.id));
            }
        }
    }

    let report = verify::check(e.partners, e.rates, e.history, e.repeats, e.balances, e.seed)?;
    v.verified = report.verified;
    v.lost = report.lost;
    v.duplicated += report.duplicated;
    v.balances_checked = report.balances_checked;
    v.balance_mismatches = report.balance_mismatches;
    v.outcome_mismatches = report.outcome_mismatches;
    v.statements_checked = report.statements_checked;
    v.statement_mismatches = report.statement_mismatches;
    v.exceptions = report.exceptions;
    let counted = report.lost
        + report.duplicated
        + report.balance_mismatches
        + report.outcome_mismatches
        + report.statement_mismatches;
    v.violations += counted;
    v.details.extend(report.messages.into_iter().take(MAX_DETAILS));

    if let Some(status) = e.status {
        for (shard, kind, view) in disagreements(status) {
            match kind {
                Disagreement::Diverged => {
                    v.divergent_shards += 1;
                    v.violation(format!("shard {shard}: replicas diverged: {view}"));
                }
                Disagreement::Unconverged => {
                    v.unconverged_shards += 1;
                    v.violation(format!("shard {shard}: replicas did not catch up: {view}"));
                }
            }
        }
    }
    v.unreconciled = e.unreconciled;
    if e.unreconciled > 0 {
        v.violation(format!("{} transactions still had no answer after the heal", e.unreconciled));
    }
    for problem in e.run_problems {
        v.violation(problem.clone());
    }
    v.details.truncate(MAX_DETAILS);
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::cluster::{StatusReplica, StatusShard};
    use settle_core::Instant;
    use settle_loadtest::traffic;

    fn applied(payable_after: &str, duplicate: bool) -> wire::TxResult {
        wire::TxResult {
            outcome: Some(wire::tx_result::Outcome::Applied(wire::Applied {
                payable_after: payable_after.into(),
                ..Default::default()
            })),
            duplicate,
        }
    }

    fn sale(id: &str, partner: &str, amount: &str) -> wire::Transaction {
        wire::Transaction {
            id: id.into(),
            partner: Some(partner.into()),
            kind: wire::TxKind::Sale as i32,
            amount: Some(amount.into()),
            currency: Some("EUR".into()),
            // In the partners' first (daily) period, so no period closes in the replay.
            occurred_at: "2026-01-01T10:00:00Z".into(),
            ..Default::default()
        }
    }

    fn node_balance(payable: &str) -> NodeBalance {
        NodeBalance { payable: payable.into(), preview_json: None }
    }

    struct World {
        partners: Vec<PartnerDef>,
        rates: Vec<wire::FxRate>,
        history: History,
        /// What an honest cluster answers to the repeats, and its balances.
        repeats: Vec<wire::TxResult>,
        balances: BTreeMap<String, NodeBalance>,
    }

    /// Three acked EUR sales of 100.00 to one partner (80% share, 1.5% and 0.10 fees:
    /// 80.00 - 1.50 - 0.10 = 78.40 each).
    fn world() -> World {
        let since = Instant::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let partners = traffic::partners("T", 1, since);
        let rates = traffic::rates(since);
        let id = partners[0].id.clone();
        let mut history = History::default();
        for (n, after) in [(1, "78.40"), (2, "156.80"), (3, "235.20")] {
            history.push_batch(vec![(sale(&format!("t{n}"), &id, "100.00"), applied(after, false))]);
        }
        let repeats = history.iter().map(|(_, r)| wire::TxResult { duplicate: true, ..r.clone() }).collect();
        let balances = [(id, node_balance("235.20"))].into_iter().collect();
        World { partners, rates, history, repeats, balances }
    }

    fn judge_world(w: &World, status: Option<&Status>) -> Verdict {
        judge_run(w, status, 0, &[])
    }

    fn judge_run(w: &World, status: Option<&Status>, unreconciled: u64, run_problems: &[String]) -> Verdict {
        judge(&Evidence {
            partners: &w.partners,
            rates: &w.rates,
            history: &w.history,
            repeats: &w.repeats,
            balances: &w.balances,
            seed: 1,
            unreconciled,
            status,
            run_problems,
        })
        .unwrap()
    }

    #[test]
    fn an_honest_history_passes() {
        let v = judge_world(&world(), None);
        assert!(v.passed(), "{v:?}");
        assert_eq!((v.acked, v.verified, v.balances_checked), (3, 3, 1));
    }

    #[test]
    fn a_lost_transaction_is_reported() {
        let mut w = world();
        // The cluster forgot t2: its repeat is applied afresh, not flagged duplicate.
        w.repeats[1] = applied("235.20", false);
        let v = judge_world(&w, None);
        assert_eq!((v.lost, v.duplicated, v.violations), (1, 0, 1), "{v:?}");
        assert!(v.details[0].contains("lost: t2"), "{v:?}");
    }

    #[test]
    fn a_duplicated_transaction_is_reported() {
        let mut w = world();
        // t3 was applied twice: the repeat answers another result, and the balance shows it.
        w.repeats[2] = applied("313.60", true);
        w.balances.insert(w.partners[0].id.clone(), node_balance("313.60"));
        let v = judge_world(&w, None);
        assert_eq!((v.lost, v.duplicated, v.balance_mismatches), (0, 1, 1), "{v:?}");
        assert_eq!(v.violations, 2);
    }

    #[test]
    fn a_statement_that_differs_from_the_replay_is_reported() {
        let mut w = world();
        let preview = r#"{"period_start":"2026-01-01T00:00:00Z","transaction_count":4}"#;
        let id = w.partners[0].id.clone();
        w.balances.insert(id, NodeBalance { payable: "235.20".into(), preview_json: Some(preview.into()) });
        let v = judge_world(&w, None);
        assert_eq!((v.statements_checked, v.statement_mismatches, v.violations), (1, 1, 1), "{v:?}");
    }

    #[test]
    fn an_id_acknowledged_twice_with_different_results_is_duplicated() {
        let mut w = world();
        let first = w.history.iter().next().map(|(tx, _)| tx.clone()).unwrap();
        w.history.push_batch(vec![(first, applied("313.60", false))]);
        w.repeats.push(w.repeats[0].clone());
        let v = judge_world(&w, None);
        assert!(v.duplicated >= 1 && !v.passed(), "{v:?}");
    }

    #[test]
    fn divergent_replicas_are_reported_per_shard() {
        let replica = |node, index, hash: &str| StatusReplica {
            node,
            applied_index: Some(index),
            state_hash: serde_json::Value::String(hash.into()),
        };
        let shard =
            |shard, replicas| StatusShard { shard, leader: Some(1), members: vec![1, 2, 3], replicas };
        let status = Status {
            nodes: vec![],
            shards: vec![
                shard(0, vec![replica(1, 9, "aa"), replica(2, 9, "aa"), replica(3, 9, "aa")]),
                shard(1, vec![replica(1, 9, "aa"), replica(2, 9, "bb"), replica(3, 9, "aa")]),
                shard(2, vec![replica(1, 9, "aa"), replica(2, 7, "cc"), replica(3, 9, "aa")]),
                // A replica of a node that is no longer a member does not count.
                shard(
                    3,
                    vec![replica(1, 5, "dd"), replica(2, 5, "dd"), replica(3, 5, "dd"), replica(4, 1, "x")],
                ),
            ],
        };
        let found: Vec<(u32, Disagreement)> =
            disagreements(&status).into_iter().map(|(s, kind, _)| (s, kind)).collect();
        assert_eq!(found, vec![(1, Disagreement::Diverged), (2, Disagreement::Unconverged)]);
        let v = judge_world(&world(), Some(&status));
        assert_eq!((v.divergent_shards, v.unconverged_shards, v.violations), (1, 1, 2), "{v:?}");
    }

    #[test]
    fn no_answer_after_the_heal_is_a_violation() {
        let problems = vec!["no write accepted after the heal".to_string()];
        let v = judge_run(&world(), None, 4, &problems);
        assert_eq!((v.unreconciled, v.violations), (4, 2), "{v:?}");
    }
}
