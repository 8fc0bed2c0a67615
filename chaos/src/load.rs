//! The load driver: closed-loop workers sending the load tester's realistic traffic, and one
//! probe per probe partner that writes a small sale every `PROBE_INTERVAL` to measure how long
//! each partner (hence its shard) accepted no writes.
//!
//! Every request goes to one node and, when that node does not answer, to the next one, always
//! with the same transaction ids: a node that is down, paused or cut off must not stall the load,
//! and a retry can never apply a transaction twice. A batch whose outcome stays unknown is kept
//! and sent again after the faults are healed, so that the acked history is complete.

use crate::schedule::NodeId;
use settle_client::{Client, ClientConfig, ClientError, RetryPolicy};
use settle_core::{Instant, Minor};
use settle_loadtest::traffic::{Generator, History, Issued, PartnerDef};
use settle_loadtest::verify::NodeBalance;
use settle_wire as wire;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Time between two probe writes of one partner: the resolution of the unavailability figure.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// One request to one node may take this long before the driver tries another node. Long enough
/// that a slow (debug, loaded) cluster is not flooded with resubmissions, short enough to leave a
/// paused or cut-off node soon.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A batch is retried over the nodes for this long before its outcome is set aside as unknown.
pub const BATCH_DEADLINE: Duration = Duration::from_secs(30);
/// A probe write gives up sooner, so that the next probe write measures again.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// A probe write not answered within this time is sent to the next node too (same id, so it is
/// applied at most once): the probe measures the shard, not how long a client waits on a node
/// that was killed or paused before trying another.
pub const PROBE_HEDGE_AFTER: Duration = Duration::from_millis(250);
/// Repeat batches in flight during the verification.
const VERIFY_CONCURRENCY: usize = 16;
/// Transactions per batch when the acked history is submitted again: far larger than the
/// traffic's batches (the per-request cost dominated the repeat, which timed out after long
/// runs) and far below `wire::MAX_BATCH_TXS` and the frame limit.
const VERIFY_BATCH_TXS: usize = 1000;
/// Pause after every node refused a request, before going round again.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

pub fn instant_now() -> Instant {
    Instant::from_system_time(std::time::SystemTime::now())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update; the data is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the node understood the request and refused it for good (as opposed to failing to
/// answer, or answering "try again").
fn refused(e: &ClientError) -> bool {
    match e {
        ClientError::Exhausted { last, .. } => refused(last),
        ClientError::Server { retryable, .. } => !retryable,
        _ => false,
    }
}

/// One node's clients: one for the load, one for the probes (so probes never queue behind load).
#[derive(Debug)]
pub struct Endpoint {
    pub node: NodeId,
    pub load: Arc<Client>,
    pub probe: Arc<Client>,
}

/// A client that fails over fast: few attempts, short timeouts.
pub fn client(addr: SocketAddr, pem: &[u8], key: &str) -> anyhow::Result<Arc<Client>> {
    let mut config = ClientConfig::new(addr, pem.to_vec(), key);
    config.connect_timeout = CONNECT_TIMEOUT;
    config.request_timeout = REQUEST_TIMEOUT;
    // One attempt per node: on failure the driver moves to the next node at once.
    config.retry = RetryPolicy {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    Ok(Arc::new(Client::connect_lazy(config)?))
}

pub fn endpoint(node: NodeId, addr: SocketAddr, pem: &[u8], key: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint { node, load: client(addr, pem, key)?, probe: client(addr, pem, key)? })
}

/// Availability as one probe partner saw it.
#[derive(Clone, Debug)]
pub struct Probe {
    pub partner: usize,
    pub last_ack: std::time::Instant,
    pub max_gap: Duration,
    /// When the longest gap began, from the start of the traffic.
    pub max_gap_from: Duration,
    /// Every gap longer than [`GAP_RECORD_MIN`]: (start from the start of the traffic, length).
    pub gaps: Vec<(Duration, Duration)>,
}

/// Gaps between two probe acknowledgements longer than this are kept, to attribute them to the
/// faults during which they began (a healthy probe acknowledges every `PROBE_INTERVAL` or so).
pub const GAP_RECORD_MIN: Duration = Duration::from_millis(500);
/// Most gaps kept per probe partner.
pub const MAX_GAPS_PER_PROBE: usize = 4096;

#[derive(Debug, Default)]
pub struct Stats {
    pub batches_acked: u64,
    pub failed: u64,
    pub failovers: u64,
    /// Requests each node failed to answer (it was down, paused, cut off, or could not forward).
    pub failures_by_node: std::collections::BTreeMap<NodeId, u64>,
    pub last_error: Option<String>,
}

/// Everything the workers, probes and the final checks share.
#[derive(Debug)]
pub struct Load {
    pub generator: Mutex<Generator>,
    pub history: Mutex<History>,
    pub unknown: Mutex<Vec<Vec<Issued>>>,
    pub stats: Mutex<Stats>,
    pub probes: Mutex<Vec<Probe>>,
    pub endpoints: RwLock<Vec<Arc<Endpoint>>>,
    pub acked: AtomicU64,
    pub stop_workers: AtomicBool,
    pub stop_probes: AtomicBool,
    pub started: std::time::Instant,
    partners: Vec<PartnerDef>,
    run: String,
    batch: usize,
}

impl Load {
    pub fn new(
        partners: Vec<PartnerDef>,
        seed: u64,
        run: String,
        batch: usize,
        probes: usize,
        endpoints: Vec<Arc<Endpoint>>,
    ) -> Load {
        let started = std::time::Instant::now();
        let n = partners.len().max(1);
        let count = probes.min(partners.len());
        let probes = (0..count)
            .map(|k| Probe {
                partner: k * n / count.max(1),
                last_ack: started,
                max_gap: Duration::ZERO,
                max_gap_from: Duration::ZERO,
                gaps: Vec::new(),
            })
            .collect();
        Load {
            generator: Mutex::new(Generator::new(partners.clone(), 0.0, seed, run.clone())),
            history: Mutex::new(History::default()),
            unknown: Mutex::new(Vec::new()),
            stats: Mutex::new(Stats::default()),
            probes: Mutex::new(probes),
            endpoints: RwLock::new(endpoints),
            acked: AtomicU64::new(0),
            stop_workers: AtomicBool::new(false),
            stop_probes: AtomicBool::new(false),
            started,
            partners,
            run,
            batch,
        }
    }

    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_endpoints(&self, list: Vec<Arc<Endpoint>>) {
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = list;
    }

    /// Sends `txs` to the node at `*preferred` and, on failure, to the others in turn until one
    /// answers or `deadline` passes. `*preferred` follows the node that answered.
    pub async fn submit_failover(
        &self,
        txs: &[wire::Transaction],
        preferred: &mut usize,
        deadline: std::time::Instant,
    ) -> Result<Vec<wire::TxResult>, String> {
        let mut last = String::from("no node to send to");
        loop {
            let endpoints = self.endpoints();
            for k in 0..endpoints.len() {
                let i = (*preferred + k) % endpoints.len();
                match endpoints[i].load.submit(txs.to_vec()).await {
                    Ok(results) => {
                        *preferred = i;
                        return Ok(results);
                    }
                    Err(e) if refused(&e) => {
                        // MALFORMED and the like: the harness built a bad request; no node will
                        // take it, and nothing of it was applied.
                        return Err(format!("refused by node {}: {e}", endpoints[i].node));
                    }
                    Err(e) => {
                        let mut stats = lock(&self.stats);
                        stats.failovers += 1;
                        *stats.failures_by_node.entry(endpoints[i].node).or_default() += 1;
                        drop(stats);
                        last = format!("node {}: {e}", endpoints[i].node);
                    }
                }
                if std::time::Instant::now() >= deadline {
                    return Err(last);
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    /// A probe write: to the node at `*preferred`, then hedged to the next node every
    /// PROBE_HEDGE_AFTER while none answered, until one answers or `deadline` passes; the first
    /// answer counts and the other requests are dropped (idempotency makes that harmless).
    pub async fn submit_hedged(
        &self,
        txs: &[wire::Transaction],
        preferred: &mut usize,
        deadline: std::time::Instant,
    ) -> Result<Vec<wire::TxResult>, String> {
        let mut last = String::from("no node to send to");
        loop {
            let endpoints = self.endpoints();
            let n = endpoints.len();
            let mut set = tokio::task::JoinSet::new();
            let mut launched = 0;
            while launched < n || !set.is_empty() {
                if launched < n && (launched == 0 || set.is_empty()) {
                    let i = (*preferred + launched) % n;
                    let (ep, txs) = (Arc::clone(&endpoints[i]), txs.to_vec());
                    set.spawn(async move { (i, ep.probe.submit(txs).await) });
                    launched += 1;
                    continue;
                }
                let hedge = tokio::time::sleep(PROBE_HEDGE_AFTER);
                tokio::select! {
                    done = set.join_next() => {
                        let Some(done) = done else { continue };
                        let Ok((i, answer)) = done else { continue };
                        match answer {
                            Ok(results) => {
                                *preferred = i;
                                set.abort_all();
                                return Ok(results);
                            }
                            Err(e) if refused(&e) => {
                                return Err(format!("refused by node {}: {e}", endpoints[i].node));
                            }
                            Err(e) => {
                                let mut stats = lock(&self.stats);
                                stats.failovers += 1;
                                *stats.failures_by_node.entry(endpoints[i].node).or_default() += 1;
                                drop(stats);
                                last = format!("node {}: {e}", endpoints[i].node);
                            }
                        }
                    }
                    () = hedge, if launched < n => {
                        let i = (*preferred + launched) % n;
                        let (ep, txs) = (Arc::clone(&endpoints[i]), txs.to_vec());
                        set.spawn(async move { (i, ep.probe.submit(txs).await) });
                        launched += 1;
                    }
                }
                if std::time::Instant::now() >= deadline {
                    return Err(last);
                }
            }
            if n == 0 || std::time::Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    fn record(&self, issued: Vec<Issued>, results: Vec<wire::TxResult>, learn: bool) {
        if learn {
            let mut g = lock(&self.generator);
            for (i, r) in issued.iter().zip(&results) {
                g.acked(i, r);
            }
        }
        let n = issued.len() as u64;
        let acked: Vec<_> = issued.into_iter().map(|i| i.tx).zip(results).collect();
        lock(&self.history).push_batch(acked);
        self.acked.fetch_add(n, Ordering::Relaxed);
    }

    fn failed(&self, issued: Vec<Issued>, error: String) {
        {
            let mut s = lock(&self.stats);
            s.failed += 1;
            s.last_error = Some(error);
        }
        lock(&self.unknown).push(issued);
    }

    /// One closed-loop worker, until `stop_workers`.
    pub async fn worker(self: Arc<Self>, index: usize) {
        let mut preferred = index;
        while !self.stop_workers.load(Ordering::Relaxed) {
            let issued = lock(&self.generator).batch(self.batch, instant_now());
            let txs: Vec<_> = issued.iter().map(|i| i.tx.clone()).collect();
            let deadline = std::time::Instant::now() + BATCH_DEADLINE;
            match self.submit_failover(&txs, &mut preferred, deadline).await {
                Ok(results) => {
                    lock(&self.stats).batches_acked += 1;
                    self.record(issued, results, true);
                }
                Err(e) => self.failed(issued, e),
            }
        }
    }

    /// One probe: a small sale for its partner every PROBE_INTERVAL, until `stop_probes`.
    pub async fn probe(self: Arc<Self>, k: usize) {
        let Some(partner) = lock(&self.probes).get(k).map(|p| p.partner) else { return };
        let Some(def) = self.partners.get(partner).cloned() else { return };
        let exp = def.currency.exponent();
        let amount = Minor(5 * 10i128.pow(u32::from(exp))).format(exp);
        let mut preferred = k;
        let mut n = 0u64;
        while !self.stop_probes.load(Ordering::Relaxed) {
            n += 1;
            let tx = wire::Transaction {
                id: format!("{}-p{k}-{n}", self.run),
                partner: Some(def.id.clone()),
                kind: wire::TxKind::Sale as i32,
                amount: Some(amount.clone()),
                currency: Some(def.currency.code().to_string()),
                occurred_at: instant_now().to_rfc3339(),
                metadata_json: Some(r#"{"probe":true}"#.into()),
                ..Default::default()
            };
            let issued = vec![Issued { partner, tx: tx.clone() }];
            let deadline = std::time::Instant::now() + PROBE_DEADLINE;
            match self.submit_hedged(std::slice::from_ref(&tx), &mut preferred, deadline).await {
                Ok(results) => {
                    let now = std::time::Instant::now();
                    {
                        let mut probes = lock(&self.probes);
                        if let Some(p) = probes.get_mut(k) {
                            let gap = now.saturating_duration_since(p.last_ack);
                            let from = p.last_ack.saturating_duration_since(self.started);
                            if gap > p.max_gap {
                                p.max_gap = gap;
                                p.max_gap_from = from;
                            }
                            if gap > GAP_RECORD_MIN && p.gaps.len() < MAX_GAPS_PER_PROBE {
                                p.gaps.push((from, gap));
                            }
                            p.last_ack = now;
                        }
                    }
                    // Probe sales only raise the payable, so the generator's payout budget (a
                    // lower bound) stays safe without learning from them.
                    self.record(issued, results, false);
                }
                Err(e) => self.failed(issued, e),
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Whether every probe has been acknowledged since `since`.
    pub fn all_probes_since(&self, since: std::time::Instant) -> bool {
        lock(&self.probes).iter().all(|p| p.last_ack > since)
    }

    /// The longest gap of any probe that began in `[from, to)` (from the start of the traffic).
    pub fn max_gap_between(&self, from: Duration, to: Duration) -> Duration {
        let probes = lock(&self.probes);
        let gaps = probes.iter().flat_map(|p| p.gaps.iter());
        gaps.filter(|(start, _)| *start >= from && *start < to).map(|(_, gap)| *gap).max().unwrap_or_default()
    }

    /// The longest time any probe partner accepted no write: (gap, partner id, gap start).
    pub fn max_unavailability(&self) -> Option<(Duration, String, Duration)> {
        let probes = lock(&self.probes);
        let worst = probes.iter().max_by_key(|p| p.max_gap)?;
        let id = self.partners.get(worst.partner).map(|d| d.id.clone()).unwrap_or_default();
        Some((worst.max_gap, id, worst.max_gap_from))
    }

    /// Submits every acked transaction again, unchanged, in chunks of [`VERIFY_BATCH_TXS`], each sent
    /// to the nodes in turn until one answers (so that one node that cannot forward does not keep
    /// the verification from learning what the cluster holds). Answers in history order.
    pub async fn repeat_all(
        self: &Arc<Self>,
        history: &History,
        deadline: std::time::Instant,
    ) -> anyhow::Result<Vec<wire::TxResult>> {
        let sem = Arc::new(tokio::sync::Semaphore::new(VERIFY_CONCURRENCY));
        let mut set = tokio::task::JoinSet::new();
        let chunks = settle_loadtest::verify::tx_chunks(history, VERIFY_BATCH_TXS);
        let count = chunks.len();
        for (i, txs) in chunks.into_iter().enumerate() {
            let permit = sem.clone().acquire_owned().await?;
            let load = self.clone();
            set.spawn(async move {
                let mut preferred = i;
                let r = load.submit_failover(&txs, &mut preferred, deadline).await;
                drop(permit);
                (i, r)
            });
        }
        let mut answers: Vec<Option<Vec<wire::TxResult>>> = vec![None; count];
        while let Some(done) = set.join_next().await {
            let (i, r) = done?;
            let results = r.map_err(|e| anyhow::anyhow!("no node answered the repeat of a batch: {e}"))?;
            if let Some(slot) = answers.get_mut(i) {
                *slot = Some(results);
            }
        }
        Ok(answers.into_iter().flatten().flatten().collect())
    }

    /// Every partner's balance, each asked of the nodes in turn until one answers.
    pub async fn balances_all(
        &self,
        deadline: std::time::Instant,
    ) -> anyhow::Result<std::collections::BTreeMap<String, NodeBalance>> {
        let mut out = std::collections::BTreeMap::new();
        for (k, p) in self.partners.iter().enumerate() {
            let mut last = String::from("no node to ask");
            let mut answer = None;
            while answer.is_none() && std::time::Instant::now() < deadline {
                let endpoints = self.endpoints();
                for j in 0..endpoints.len() {
                    let e = &endpoints[(k + j) % endpoints.len()];
                    match e.load.balance(&p.id).await {
                        Ok(b) => {
                            answer =
                                Some(NodeBalance { payable: b.payable, preview_json: Some(b.preview_json) });
                            break;
                        }
                        Err(err) if refused(&err) => {
                            answer = Some(NodeBalance {
                                payable: format!("(refused: {err})"),
                                preview_json: None,
                            });
                            break;
                        }
                        Err(err) => {
                            *lock(&self.stats).failures_by_node.entry(e.node).or_default() += 1;
                            last = format!("node {}: {err}", e.node);
                        }
                    }
                }
                if answer.is_none() {
                    tokio::time::sleep(ROUND_PAUSE).await;
                }
            }
            let answer =
                answer.ok_or_else(|| anyhow::anyhow!("no node answered the balance of {}: {last}", p.id))?;
            out.insert(p.id.clone(), answer);
        }
        Ok(out)
    }

    /// Sends the batches whose outcome stayed unknown again, unchanged, until answered or
    /// `deadline`; returns how many transactions are still unknown.
    pub async fn reconcile(&self, deadline: std::time::Instant) -> u64 {
        let pending: Vec<Vec<Issued>> = std::mem::take(&mut *lock(&self.unknown));
        let mut left = 0u64;
        let mut preferred = 0;
        for issued in pending {
            if std::time::Instant::now() >= deadline {
                // Past the deadline each batch would still cost a round of timeouts: stop asking.
                left += issued.len() as u64;
                lock(&self.unknown).push(issued);
                continue;
            }
            let txs: Vec<_> = issued.iter().map(|i| i.tx.clone()).collect();
            match self.submit_failover(&txs, &mut preferred, deadline).await {
                Ok(results) => self.record(issued, results, false),
                Err(e) => {
                    left += issued.len() as u64;
                    lock(&self.stats).last_error = Some(e);
                    lock(&self.unknown).push(issued);
                }
            }
        }
        left
    }
}
