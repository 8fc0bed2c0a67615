//! Prometheus metrics and the live samples behind the dashboard. The ingress reports each
//! answered submission ([`Metrics::observe_submit`]: one histogram observation and a few counter
//! increments per batch, outside the engine); engine and storage figures are read when scraped.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use serde::Serialize;
use settle_core::tx::TxResult;
use settle_core::{ExceptionReason, Outcome, TxInput};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Partners that get their own label (the busiest ones); the rest are summed as `other`.
pub const TOP_PARTNERS: usize = 10;
/// Partners tracked for the top-N before the least busy are dropped (bounds memory).
pub const MAX_TRACKED_PARTNERS: usize = 10_000;
/// Live samples kept (one a second).
pub const SAMPLES_KEPT: usize = 300;
/// Upper bounds of the integer latency buckets, microseconds (the last one is open).
const LATENCY_BOUNDS_US: [u64; 16] = [
    250,
    500,
    1_000,
    2_000,
    4_000,
    8_000,
    16_000,
    32_000,
    64_000,
    128_000,
    256_000,
    512_000,
    1_000_000,
    2_000_000,
    5_000_000,
    u64::MAX,
];

/// One second of activity, as the dashboard plots it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Transactions acknowledged per second (through the ingress and the API).
    pub ingest_per_s: u64,
    /// Transactions logged per second by the engine.
    pub applied_per_s: u64,
    /// Acknowledgement latency percentiles in the second, microseconds (bucket upper bounds).
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    /// New exceptions in the second, by reason.
    pub exceptions: BTreeMap<String, u64>,
    /// Retries answered with their first result in the second (idempotent repeats).
    pub duplicates_per_s: u64,
    pub in_flight: u64,
    pub total_ingested: u64,
    pub total_exceptions: u64,
}

/// What the sampler remembers between two samples.
#[derive(Debug, Default)]
struct Previous {
    at_ms: u64,
    ingested: u64,
    duplicates: u64,
    applied: u64,
    buckets: [u64; LATENCY_BOUNDS_US.len()],
    exceptions: BTreeMap<String, u64>,
}

pub struct Metrics {
    registry: Registry,
    ingested: IntCounter,
    batches: IntCounter,
    duplicates: IntCounter,
    ack_latency: Histogram,
    exceptions: IntCounterVec,
    commits: IntGauge,
    applied: IntGauge,
    in_flight: IntGauge,
    storage: IntGaugeVec,
    partner_txs: IntGaugeVec,
    http_requests: IntCounterVec,
    alerts_firing: IntGauge,
    raft_groups: IntGaugeVec,
    raft_leader_changes: IntGauge,
    raft_applied: IntGauge,
    raft_apply_lag: IntGaugeVec,
    raft_replication_lag: IntGaugeVec,
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len()],
    per_partner: Mutex<HashMap<String, u64>>,
    previous: Mutex<Previous>,
    samples: Mutex<VecDeque<Sample>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let ingested =
            IntCounter::new("settle_ingest_transactions_total", "Transactions acknowledged to clients")?;
        let batches = IntCounter::new("settle_ingest_batches_total", "Submissions acknowledged to clients")?;
        let duplicates = IntCounter::new(
            "settle_ingest_duplicates_total",
            "Transactions answered with the result of an earlier submission of the same id",
        )?;
        let ack_latency = Histogram::with_opts(
            HistogramOpts::new(
                "settle_ack_latency_seconds",
                "From receiving a submission to its durable answer",
            )
            .buckets(vec![
                0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0,
                2.0, 5.0,
            ]),
        )?;
        let exceptions = IntCounterVec::new(
            Opts::new("settle_exceptions_total", "Transactions sent to the exception queue, by reason"),
            &["reason"],
        )?;
        let commits =
            IntGauge::new("settle_engine_commits_total", "Durable commits (one fsync each) since start")?;
        let applied = IntGauge::new(
            "settle_engine_transactions_total",
            "Transactions logged by the engine since start",
        )?;
        let in_flight = IntGauge::new(
            "settle_engine_in_flight",
            "Transactions admitted and not yet answered (queue depth)",
        )?;
        let storage = IntGaugeVec::new(
            Opts::new("settle_rocksdb", "RocksDB statistics by column family"),
            &["cf", "stat"],
        )?;
        let partner_txs = IntGaugeVec::new(
            Opts::new(
                "settle_partner_transactions",
                "Transactions acknowledged for the busiest partners (top-N, rest as other)",
            ),
            &["partner"],
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new("settle_http_requests_total", "HTTP API requests by status class"),
            &["class"],
        )?;
        let alerts_firing = IntGauge::new("settle_alerts_firing", "Alerts currently firing")?;
        let raft_groups = IntGaugeVec::new(
            Opts::new("settle_raft_groups", "Raft groups this member holds a replica of, by state"),
            &["state"],
        )?;
        let raft_leader_changes = IntGauge::new(
            "settle_raft_leader_changes_total",
            "Changes of leader seen on this member's replicas since it started (sampled each second)",
        )?;
        let raft_applied = IntGauge::new(
            "settle_raft_applied_index_total",
            "Sum over this member's replicas of the last applied log index",
        )?;
        let raft_apply_lag = IntGaugeVec::new(
            Opts::new(
                "settle_raft_apply_lag",
                "Log entries of this member's replicas not yet applied (max and sum over groups)",
            ),
            &["stat"],
        )?;
        let raft_replication_lag = IntGaugeVec::new(
            Opts::new(
                "settle_raft_replication_lag",
                "Entries the followers of the groups this member leads lack (max and sum over followers)",
            ),
            &["stat"],
        )?;
        for c in [&commits, &applied, &in_flight, &alerts_firing] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(ingested.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        registry.register(Box::new(ack_latency.clone()))?;
        registry.register(Box::new(exceptions.clone()))?;
        registry.register(Box::new(storage.clone()))?;
        registry.register(Box::new(partner_txs.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(raft_groups.clone()))?;
        registry.register(Box::new(raft_leader_changes.clone()))?;
        registry.register(Box::new(raft_applied.clone()))?;
        registry.register(Box::new(raft_apply_lag.clone()))?;
        registry.register(Box::new(raft_replication_lag.clone()))?;
        for reason in ExceptionReason::ALL {
            exceptions.with_label_values(&[reason.as_str()]);
        }
        Ok(Metrics {
            registry,
            ingested,
            batches,
            duplicates,
            ack_latency,
            exceptions,
            commits,
            applied,
            in_flight,
            storage,
            partner_txs,
            http_requests,
            alerts_firing,
            raft_groups,
            raft_leader_changes,
            raft_applied,
            raft_apply_lag,
            raft_replication_lag,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            per_partner: Mutex::new(HashMap::new()),
            previous: Mutex::new(Previous::default()),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES_KEPT)),
        })
    }

    /// Transactions per partner in a submission (one entry per distinct partner), taken before
    /// the submission is handed over.
    pub fn partner_counts(txs: &[TxInput]) -> Vec<(String, u64)> {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for tx in txs {
            if let Some(p) = &tx.partner {
                *counts.entry(p.as_str()).or_insert(0) += 1;
            }
        }
        counts.into_iter().map(|(p, n)| (p.to_string(), n)).collect()
    }

    /// Records one answered submission.
    pub fn observe_submit(&self, elapsed: Duration, partner_counts: &[(String, u64)], results: &[TxResult]) {
        self.batches.inc();
        self.ingested.inc_by(results.len() as u64);
        self.ack_latency.observe(elapsed.as_secs_f64());
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(LATENCY_BOUNDS_US.len() - 1);
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        for r in results {
            match (&r.outcome, r.duplicate) {
                (_, true) => self.duplicates.inc(),
                (Outcome::Exception(reason), false) => {
                    self.exceptions.with_label_values(&[reason.as_str()]).inc()
                }
                (_, false) => {}
            }
        }
        let mut per = self.per_partner.lock().unwrap_or_else(|e| e.into_inner());
        for (p, k) in partner_counts {
            if let Some(n) = per.get_mut(p.as_str()) {
                *n = n.saturating_add(*k);
            } else if per.len() < MAX_TRACKED_PARTNERS {
                per.insert(p.clone(), *k);
            }
        }
    }

    pub fn count_http(&self, status: u16) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests.with_label_values(&[class]).inc();
    }

    pub fn set_alerts_firing(&self, n: usize) {
        self.alerts_firing.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn exceptions_by_reason(&self) -> BTreeMap<String, u64> {
        ExceptionReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), self.exceptions.with_label_values(&[r.as_str()]).get()))
            .collect()
    }

    /// The busiest partners by acknowledged transactions, most first.
    pub fn top_partners(&self, n: usize) -> Vec<(String, u64)> {
        let per = self.per_partner.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(String, u64)> = per.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// The Prometheus text exposition, with engine and storage figures read now.
    pub fn render(&self, read: &dyn crate::model::ReadModel) -> String {
        let c = read.counters();
        self.commits.set(i64::try_from(c.commits).unwrap_or(i64::MAX));
        self.applied.set(i64::try_from(c.transactions).unwrap_or(i64::MAX));
        self.in_flight.set(i64::try_from(c.in_flight).unwrap_or(i64::MAX));
        for (stat, cf, value) in read.storage_stats() {
            self.storage
                .with_label_values(&[cf.as_str(), stat.as_str()])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        if let Some(r) = read.raft_stats() {
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            for (state, n) in [
                ("leader", r.leaders),
                ("follower", r.followers),
                ("learner", r.learners),
                ("candidate", r.candidates),
            ] {
                self.raft_groups.with_label_values(&[state]).set(gauge(n));
            }
            self.raft_leader_changes.set(gauge(r.leader_changes));
            self.raft_applied.set(gauge(r.applied_index_sum));
            self.raft_apply_lag.with_label_values(&["max"]).set(gauge(r.apply_lag_max));
            self.raft_apply_lag.with_label_values(&["sum"]).set(gauge(r.apply_lag_sum));
            self.raft_replication_lag.with_label_values(&["max"]).set(gauge(r.replication_lag_max));
            self.raft_replication_lag.with_label_values(&["sum"]).set(gauge(r.replication_lag_sum));
        }
        self.partner_txs.reset();
        let top = self.top_partners(TOP_PARTNERS);
        let top_sum: u64 = top.iter().map(|(_, n)| *n).sum();
        let all: u64 = self.per_partner.lock().unwrap_or_else(|e| e.into_inner()).values().sum();
        for (p, n) in &top {
            self.partner_txs.with_label_values(&[p.as_str()]).set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.partner_txs
            .with_label_values(&["other"])
            .set(i64::try_from(all.saturating_sub(top_sum)).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Takes a sample: rates and percentiles since the previous one.
    pub fn sample(&self, read: &dyn crate::model::ReadModel, now_ms: u64) -> Sample {
        let counters = read.counters();
        let ingested = self.ingested.get();
        let duplicates = self.duplicates.get();
        let buckets: [u64; LATENCY_BOUNDS_US.len()] =
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        let exceptions = self.exceptions_by_reason();
        let mut prev = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed_ms = now_ms.saturating_sub(prev.at_ms).max(1);
        // Rounded to the nearest: one event in a tick of 1,001 ms is a rate of 1, not 0.
        let per_s = |now: u64, before: u64| {
            now.saturating_sub(before).saturating_mul(1000).saturating_add(elapsed_ms / 2) / elapsed_ms
        };
        let first = prev.at_ms == 0;
        let delta: Vec<u64> =
            buckets.iter().zip(prev.buckets.iter()).map(|(a, b)| a.saturating_sub(*b)).collect();
        let sample = Sample {
            at_ms: now_ms,
            ingest_per_s: if first { 0 } else { per_s(ingested, prev.ingested) },
            applied_per_s: if first { 0 } else { per_s(counters.transactions, prev.applied) },
            ack_p50_us: percentile(&delta, 50),
            ack_p99_us: percentile(&delta, 99),
            exceptions: exceptions
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(prev.exceptions.get(k).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect(),
            duplicates_per_s: if first { 0 } else { per_s(duplicates, prev.duplicates) },
            in_flight: counters.in_flight,
            total_ingested: ingested,
            total_exceptions: exceptions.values().sum(),
        };
        *prev = Previous {
            at_ms: now_ms,
            ingested,
            duplicates,
            applied: counters.transactions,
            buckets,
            exceptions,
        };
        drop(prev);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample.clone());
        sample
    }

    pub fn recent_samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

/// The upper bound of the bucket holding the `pct`-th percentile; 0 when nothing was observed.
fn percentile(counts: &[u64], pct: u64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = (total.saturating_mul(pct)).div_ceil(100).max(1);
    let mut seen = 0u64;
    for (i, c) in counts.iter().enumerate() {
        seen = seen.saturating_add(*c);
        if seen >= rank {
            return LATENCY_BOUNDS_US
                .get(i)
                .copied()
                .map_or(0, |b| if b == u64::MAX { 10_000_000 } else { b });
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_pick_bucket_bounds() {
        let mut counts = [0u64; 16];
        counts[2] = 98;
        counts[10] = 2;
        assert_eq!(percentile(&counts, 50), 1_000);
        assert_eq!(percentile(&counts, 99), 256_000);
        assert_eq!(percentile(&[0; 16], 99), 0);
    }
}
