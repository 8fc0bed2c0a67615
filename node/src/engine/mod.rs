//! The live engine: a sequencer that stamps and orders everything, one ractor actor per partner
//! account applying transactions through `settle-core`, and a committer that makes each group of
//! submissions durable with one write batch and one fsync before anyone is answered.
//!
//! ```text
//! submit ──► sequencer (stamp received_at, seq, cross-partner ids, group by partner)
//!               │ one message per partner per group (with the FX snapshot)
//!               ▼
//!            partner actors (core apply, encode log records)  ──►  sequencer collects
//!               │
//!               ▼
//!            committer thread: one WriteBatch + one fsync for one or more groups, then answers
//! ```
//! While the committer syncs group N, the sequencer and actors work on group N+1.
//!
//! Recovery replays the durable log through the same code (`AccountCell::apply`,
//! `Router::route`) in log order, and checks every replayed outcome against the logged one.

mod account;
mod committer;
mod demo;
mod listing;
mod recovery;
mod router;
mod sequencer;

pub use demo::{demo_partners, demo_partners_since, demo_rates, DEMO_SINCE};
pub use listing::{ListPage, ListQuery};

use settle_core::tx::TxResult;
use settle_core::{ContractVersion, FxRate, Instant, Outcome, Partner, Span, Statement, TxInput};
use settle_storage::{ExceptionRecord, StorageError, Store};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Transactions admitted but not yet answered, across all submitters. Beyond it `submit`
/// answers `Overloaded` at once instead of queueing without bound.
pub const MAX_IN_FLIGHT_TXS: usize = 262_144;
/// Most transactions in one `submit` call.
pub const MAX_SUBMIT_TXS: usize = 65_536;
/// Most transactions the sequencer puts into one group (one round of actor messages).
pub const MAX_GROUP_TXS: usize = 32_768;
/// Groups waiting for the committer; past it the sequencer waits (back-pressure).
pub const COMMIT_QUEUE_GROUPS: usize = 4;
/// Most groups the committer merges into one write batch and one fsync.
pub const MAX_COMMIT_GROUPS: usize = 16;
/// Longest partner id accepted at registration, in bytes.
pub const MAX_PARTNER_ID_BYTES: usize = 128;
/// Most rates in one publication.
pub const MAX_RATES_PER_PUBLICATION: usize = 10_000;
/// How often the scheduler closes due periods.
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_secs(1);

/// Where the engine reads the time. The sequencer's stamp is the engine's only clock read.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    /// A clock the caller sets (tests, simulations).
    Manual(ManualClock),
}

/// A settable clock.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    pub fn new(at: Instant) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    pub fn set(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::from_system_time(std::time::SystemTime::now()),
            Clock::Manual(m) => m.now(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub fx_max_age: Span,
    pub hash_seed: u64,
    /// Admission limit (see [`MAX_IN_FLIGHT_TXS`]).
    pub max_in_flight_txs: usize,
    /// Period-close scheduler interval; `None` disables it (ticks only through `tick`).
    pub tick_interval: Option<Duration>,
    pub clock: Clock,
}

impl EngineConfig {
    /// Defaults: `fx_max_age` PT24H, hash seed 0, the named limits, a tick every second, the
    /// system clock.
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            fx_max_age: Span::from_hours(settle_core::ledger::DEFAULT_FX_MAX_AGE_HOURS),
            hash_seed: 0,
            max_in_flight_txs: MAX_IN_FLIGHT_TXS,
            tick_interval: Some(DEFAULT_TICK_INTERVAL),
            clock: Clock::System,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Too much in flight: retry later with the same ids.
    #[error("overloaded: too many transactions in flight, retry later")]
    Overloaded,
    /// The engine stopped (a failed write, a shutdown); nothing more is accepted.
    #[error("engine stopped: {0}")]
    Stopped(String),
    /// The request was refused and changed nothing.
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The durable log does not replay to what was acknowledged; the engine refuses to start.
    #[error("recovery: {0}")]
    Recovery(String),
}

pub use settle_cluster::account::Balance;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// Counters since the engine opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Durable commits: one write batch and one fsync each.
    pub commits: u64,
    /// Sequencer groups those commits carried (a commit merges the groups waiting for it).
    pub groups: u64,
    /// Transactions logged by those commits (plain repeats are answered without a log entry).
    pub transactions: u64,
    /// Transactions admitted and not yet answered.
    pub in_flight: usize,
}

/// Requests to the sequencer, in arrival order.
#[derive(Debug)]
pub(crate) enum Command {
    Submit { txs: Vec<TxInput>, reply: Reply<Vec<TxResult>>, permit: Permit },
    Rates { rates: Vec<FxRate>, reply: Reply<()> },
    Register { partner: Partner, reply: Reply<()> },
    AddVersion { partner: String, version: ContractVersion, reply: Reply<()> },
    Balance { partner: String, reply: Reply<Option<Balance>> },
    Lookup { id: String, reply: Reply<Option<(TxInput, Outcome)>> },
    NewestRates { reply: Reply<Vec<FxRate>> },
    Tick { reply: Option<Reply<()>> },
    Shutdown,
}

/// State every part of the engine sees.
#[derive(Debug)]
pub(crate) struct Shared {
    stopped: OnceLock<String>,
    /// Woken when `stopped` is set.
    stop_notify: tokio::sync::Notify,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    store: Mutex<Option<Arc<Store>>>,
    /// Durable commits (one fsync each) and what they carried, for metrics.
    commits: AtomicU64,
    committed_groups: AtomicU64,
    committed_txs: AtomicU64,
    /// Test hook: while true the committer holds its next commit (see `pause_commits`).
    commits_paused: Mutex<bool>,
    commits_resumed: Condvar,
}

impl Shared {
    /// Blocks the committer thread while a test holds commits.
    pub(crate) fn wait_while_paused(&self) {
        let mut paused = self.commits_paused.lock().unwrap_or_else(|e| e.into_inner());
        while *paused {
            paused = self.commits_resumed.wait(paused).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(crate) fn count_commit(&self, groups: usize, txs: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed_groups.fetch_add(groups as u64, Ordering::Relaxed);
        self.committed_txs.fetch_add(txs as u64, Ordering::Relaxed);
    }

    fn set_commits_paused(&self, value: bool) {
        *self.commits_paused.lock().unwrap_or_else(|e| e.into_inner()) = value;
        self.commits_resumed.notify_all();
    }

    /// Stops the engine for good; the first reason is kept.
    pub(crate) fn stop(&self, reason: String) {
        if self.stopped.set(reason.clone()).is_ok() {
            tracing::error!("settle engine stopped: {reason}");
        }
        self.stop_notify.notify_waiters();
    }

    pub(crate) fn stopped(&self) -> Option<&str> {
        self.stopped.get().map(String::as_str)
    }

    fn stopped_error(&self) -> EngineError {
        EngineError::Stopped(self.stopped().unwrap_or("the engine is not running").to_string())
    }

    fn store(&self) -> Result<Arc<Store>, EngineError> {
        let guard = self.store.lock().unwrap_or_else(|e| e.into_inner());
        guard.clone().ok_or_else(|| self.stopped_error())
    }
}

/// Admission of `n` transactions; released when the submission is answered (or dropped).
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
    n: usize,
}

impl Permit {
    fn acquire(shared: &Arc<Shared>, n: usize) -> Option<Permit> {
        let before = shared.in_flight.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > shared.max_in_flight {
            shared.in_flight.fetch_sub(n, Ordering::AcqRel);
            return None;
        }
        Some(Permit { shared: Arc::clone(shared), n })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(self.n, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Tasks {
    sequencer: tokio::task::JoinHandle<()>,
    committer: std::thread::JoinHandle<()>,
    scheduler: Option<tokio::task::JoinHandle<()>>,
}

/// Opens engines.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// Opens the store in `config.data_dir`, rebuilds every account by replaying the log, and
    /// starts the sequencer, the actors, the committer and (if configured) the scheduler.
    pub async fn open(config: EngineConfig) -> Result<EngineHandle, EngineError> {
        if config.max_in_flight_txs == 0 {
            return Err(EngineError::Rejected("max_in_flight_txs must be at least 1".into()));
        }
        if config.tick_interval.is_some_and(|every| every.is_zero()) {
            return Err(EngineError::Rejected("tick_interval must not be zero".into()));
        }
        let dir = config.data_dir.clone();
        let fx_max_age = config.fx_max_age;
        let hash_seed = config.hash_seed;
        let (store, recovered) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&dir)?;
            let recovered = recovery::recover_and_pin(&store, fx_max_age, hash_seed)?;
            Ok::<_, EngineError>((Arc::new(store), recovered))
        })
        .await
        .map_err(|e| EngineError::Recovery(format!("recovery task failed: {e}")))??;

        let shared = Arc::new(Shared {
            stopped: OnceLock::new(),
            stop_notify: tokio::sync::Notify::new(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: config.max_in_flight_txs,
            store: Mutex::new(Some(Arc::clone(&store))),
            commits: AtomicU64::new(0),
            committed_groups: AtomicU64::new(0),
            committed_txs: AtomicU64::new(0),
            commits_paused: Mutex::new(false),
            commits_resumed: Condvar::new(),
        });
        let (commit_tx, commit_rx) = mpsc::channel(COMMIT_QUEUE_GROUPS);
        let committer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("settle-committer".into())
                .spawn(move || committer::run(store, shared, commit_rx))
                .map_err(|e| EngineError::Stopped(format!("cannot start the committer thread: {e}")))?
        };
        let (commands, command_rx) = mpsc::unbounded_channel();
        let sequencer =
            sequencer::Sequencer::start(Arc::clone(&shared), &config, recovered, commit_tx).await?;
        let sequencer = tokio::spawn(sequencer.run(command_rx));
        let scheduler = config.tick_interval.map(|every| {
            let weak = commands.downgrade();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    interval.tick().await;
                    let Some(commands) = weak.upgrade() else { return };
                    if commands.send(Command::Tick { reply: None }).is_err() {
                        return;
                    }
                }
            })
        });
        Ok(EngineHandle {
            shared,
            commands,
            tasks: Arc::new(Mutex::new(Some(Tasks { sequencer, committer, scheduler }))),
        })
    }
}

/// A handle to a running engine; cheap to clone, `Send + Sync`.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    tasks: Arc<Mutex<Option<Tasks>>>,
}

impl EngineHandle {
    fn running(&self) -> Result<(), EngineError> {
        match self.shared.stopped() {
            Some(_) => Err(self.shared.stopped_error()),
            None => Ok(()),
        }
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        self.running()?;
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).map_err(|_| self.shared.stopped_error())?;
        answer.await.map_err(|_| self.shared.stopped_error())?
    }

    /// Submits transactions. `received_at` of each input is ignored: the engine stamps it. One
    /// result per input, in order. `Ok` only after the results are durable (WAL fsync'd).
    pub async fn submit(&self, txs: Vec<TxInput>) -> Result<Vec<TxResult>, EngineError> {
        self.running()?;
        if txs.is_empty() {
            return Ok(Vec::new());
        }
        if txs.len() > MAX_SUBMIT_TXS {
            return Err(EngineError::Rejected(format!(
                "{} transactions in one submission; at most {MAX_SUBMIT_TXS}",
                txs.len()
            )));
        }
        let permit = Permit::acquire(&self.shared, txs.len()).ok_or(EngineError::Overloaded)?;
        self.request(|reply| Command::Submit { txs, reply, permit }).await
    }

    /// Publishes FX rates; they apply to every transaction sequenced after them.
    pub async fn publish_rates(&self, rates: Vec<FxRate>) -> Result<(), EngineError> {
        if rates.len() > MAX_RATES_PER_PUBLICATION {
            return Err(EngineError::Rejected(format!("at most {MAX_RATES_PER_PUBLICATION} rates at once")));
        }
        if let Some(bad) = rates.iter().find(|r| r.rate.mantissa <= 0) {
            return Err(EngineError::Rejected(format!(
                "rate {}->{} must be positive",
                bad.base.code(),
                bad.quote.code()
            )));
        }
        if rates.is_empty() {
            return Ok(());
        }
        self.request(|reply| Command::Rates { rates, reply }).await
    }

    /// The newest FX rate of each pair, as the sequencer converts with now (a rate published an
    /// instant ago may still be on its way to disk). Staleness alerts watch these.
    pub async fn newest_rates(&self) -> Result<Vec<FxRate>, EngineError> {
        self.request(|reply| Command::NewestRates { reply }).await
    }

    /// The partner's balance as of the last durable commit; `None` for an unknown partner.
    pub async fn balance(&self, partner: &str) -> Result<Option<Balance>, EngineError> {
        let partner = partner.to_string();
        self.request(|reply| Command::Balance { partner, reply }).await
    }

    /// Registers a partner; durable before it returns. `Rejected` for a duplicate id or an
    /// unusable definition.
    pub async fn register_partner(&self, partner: Partner) -> Result<(), EngineError> {
        self.request(|reply| Command::Register { partner, reply }).await
    }

    /// Adds a contract version to a partner; durable before it returns. `Rejected` for an
    /// unknown partner or a version that would take effect in a closed period.
    pub async fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> Result<(), EngineError> {
        let partner = partner.to_string();
        self.request(|reply| Command::AddVersion { partner, version, reply }).await
    }

    /// Runs a read on the store off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, EngineError> {
        self.running()?;
        let store = self.shared.store()?;
        tokio::task::spawn_blocking(move || query(&store))
            .await
            .map_err(|e| EngineError::Stopped(format!("a storage read failed: {e}")))?
            .map_err(EngineError::from)
    }

    /// Every statement issued to the partner, by period (durable ones only).
    pub async fn statements(&self, partner: &str) -> Result<Vec<Statement>, EngineError> {
        let partner = partner.to_string();
        self.read(move |store| store.statements(&partner)).await
    }

    /// Up to `limit` entries of the exception queue after log sequence `after`, oldest first.
    pub async fn exceptions(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ExceptionRecord>, EngineError> {
        self.read(move |store| store.exceptions(after, limit)).await
    }

    /// The first durable occurrence of a transaction id: its content (with the stamped
    /// `received_at`) and its outcome.
    ///
    /// Answered from the idempotency indexes in memory, after the commit of the group it joined,
    /// so it never shows a transaction that is not durable.
    pub async fn lookup(&self, id: &str) -> Result<Option<(TxInput, Outcome)>, EngineError> {
        let id = id.to_string();
        self.request(|reply| Command::Lookup { id, reply }).await
    }

    /// Closes every period due now (as the scheduler does every second); durable when it returns.
    pub async fn tick(&self) -> Result<(), EngineError> {
        self.request(|reply| Command::Tick { reply: Some(reply) }).await
    }

    /// The engine's store, for read-only queries (log pages, single entries, statistics) and
    /// the control-plane families. Never for engine batches: those go through the committer.
    pub fn store(&self) -> Result<Arc<Store>, EngineError> {
        self.running()?;
        self.shared.store()
    }

    /// Transactions admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            groups: self.shared.committed_groups.load(Ordering::Relaxed),
            transactions: self.shared.committed_txs.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
        }
    }

    /// Resolves when the engine stops (a failed durable write, a failed actor, a shutdown), with
    /// the reason: the node should exit with it rather than keep serving.
    pub async fn stopped(&self) -> String {
        loop {
            // Created before the check: `notify_waiters` wakes futures created before it.
            let notified = self.shared.stop_notify.notified();
            if let Some(reason) = self.shared.stopped() {
                return reason.to_string();
            }
            notified.await;
        }
    }

    /// Why the engine stopped, if it did.
    pub fn stopped_reason(&self) -> Option<String> {
        self.shared.stopped().map(str::to_string)
    }

    /// Test hook: makes every later commit fail as a failed disk write would.
    #[doc(hidden)]
    pub fn inject_commit_failures(&self) -> Result<(), EngineError> {
        self.shared.store()?.inject_commit_failures(true);
        Ok(())
    }

    /// Test hook: holds every commit (so nothing is answered) until [`Self::resume_commits`].
    #[doc(hidden)]
    pub fn pause_commits(&self) {
        self.shared.set_commits_paused(true);
    }

    #[doc(hidden)]
    pub fn resume_commits(&self) {
        self.shared.set_commits_paused(false);
    }

    /// Finishes what was submitted before, stops the actors, closes the store. Other clones of
    /// the handle get `Stopped` afterwards.
    pub async fn shutdown(self) -> Result<(), EngineError> {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(tasks) = tasks else { return Ok(()) };
        self.shared.set_commits_paused(false);
        let _ = self.commands.send(Command::Shutdown);
        if let Some(scheduler) = tasks.scheduler {
            scheduler.abort();
        }
        let sequencer = tasks.sequencer.await;
        let committer = tasks.committer;
        let joined = tokio::task::spawn_blocking(move || committer.join()).await;
        let earlier = self.shared.stopped().map(str::to_string);
        // A clean stop: later calls on other clones of the handle get `Stopped`.
        let _ = self.shared.stopped.set("the engine was shut down".into());
        self.shared.stop_notify.notify_waiters();
        self.shared.store.lock().unwrap_or_else(|e| e.into_inner()).take();
        if sequencer.is_err() || !matches!(joined, Ok(Ok(()))) {
            return Err(EngineError::Stopped("an engine task failed during shutdown".into()));
        }
        match earlier {
            Some(reason) => Err(EngineError::Stopped(reason)),
            None => Ok(()),
        }
    }
}
