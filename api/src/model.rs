//! The seam between the API and whatever runs the settlement: the traits the API needs (read
//! model, mutations, control-plane persistence) and the plain records that cross it. The
//! standalone node implements them over its engine; a cluster implements the same traits over
//! its shards and its metadata Raft group, and the API does not change.

use settle_core::tx::TxResult;
use settle_core::{
    ContractVersion, Currency, ExceptionReason, FxRate, Instant, Minor, Outcome, Partner, Period, Statement,
    TxInput, TxKind,
};
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the backend could not answer. Business exceptions are not errors: they are outcomes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Understood and refused; nothing changed (e.g. a contract version in a closed period).
    #[error("{0}")]
    Rejected(String),
    /// Not well formed (e.g. a cursor this backend did not issue); nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// At capacity; nothing was done. Retry later.
    #[error("overloaded")]
    Overloaded,
    /// Stopped or unreachable; the outcome is unknown.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// A partner's balance as of the last durable commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceView {
    pub partner: String,
    pub currency: Currency,
    pub payable: Minor,
    pub open_period: Period,
    /// The statement the open period would get if it closed now.
    pub preview: Statement,
}

/// Whether a transaction was applied or went to the exception queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    Applied,
    Exception,
}

/// Most transactions one page can hold.
pub const MAX_PAGE: usize = 500;
/// Most log entries one page request may examine. A page with few matches ends early with a
/// cursor, so a selective filter never turns one request into a scan of the whole log.
pub const MAX_SCAN_PER_PAGE: usize = 50_000;

/// A page request over the transaction log. Pages are newest first and continue strictly past
/// the cursor, an opaque string the backend issued (a standalone node's log sequence; a
/// cluster's place in its global order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxQuery {
    pub partner: Option<String>,
    pub kind: Option<TxKind>,
    pub status: Option<TxStatus>,
    pub reason: Option<ExceptionReason>,
    /// Only transactions assigned to the period starting here (applied ones).
    pub period_start: Option<Instant>,
    /// `received_at` in `[received_from, received_to)`.
    pub received_from: Option<Instant>,
    pub received_to: Option<Instant>,
    pub before: Option<String>,
    pub limit: usize,
}

/// One logged transaction with its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct TxRecord {
    /// The log sequence, where the read knows it (pages do; a lookup by id may not).
    pub seq: Option<u64>,
    pub tx: TxInput,
    pub outcome: Outcome,
    /// The partner's settlement currency (formats the outcome's settled amounts).
    pub settlement_currency: Option<Currency>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxPage {
    pub items: Vec<TxRecord>,
    /// Where the next page starts (exclusive), when there may be more.
    pub next: Option<String>,
}

/// A page request over the exception queue, oldest first, after the cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExceptionQuery {
    pub partner: Option<String>,
    pub reason: Option<ExceptionReason>,
    /// An opaque cursor the backend issued.
    pub after: Option<String>,
    pub limit: usize,
}

/// An exception queue entry with the transaction it concerns.
#[derive(Clone, Debug, PartialEq)]
pub struct ExceptionItem {
    pub seq: u64,
    pub id: String,
    pub reason: ExceptionReason,
    pub tx: Option<TxInput>,
    /// Its resolution, when the backend keeps resolutions ([`Mutations::resolves_exceptions`]);
    /// otherwise the API keeps them in the control store.
    pub resolution: Option<ResolutionView>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExceptionPage {
    pub items: Vec<ExceptionItem>,
    pub next: Option<String>,
}

/// How an exception was resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolutionKind {
    Reject {
        reason: String,
    },
    /// Submitted again under `retry_id`; `outcome` is `None` while the retry is in progress.
    Retry {
        retry_id: String,
        outcome: Option<Outcome>,
        settlement_currency: Option<Currency>,
    },
}

/// An exception's resolution: what, by whom, when.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolutionView {
    pub kind: ResolutionKind,
    pub by: String,
    pub at: Instant,
}

/// What to do with an exception.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolveAction {
    Reject {
        reason: String,
    },
    /// Submit this corrected transaction, under its (new) id, in the exception's place.
    Retry {
        tx: Box<TxInput>,
    },
}

/// What a resolution request found.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolveResult {
    /// Resolved by this request.
    Resolved(Box<ExceptionItem>),
    /// Resolved earlier (or by another request meanwhile): nothing changed.
    AlreadyResolved(Box<ExceptionItem>),
    NotFound,
}

/// Counters of the engine since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Durable commits (one fsync each).
    pub commits: u64,
    /// Transactions logged.
    pub transactions: u64,
    /// Admitted and not yet answered (the queue depth).
    pub in_flight: u64,
}

/// One member as the dashboard shows it. A standalone node is a cluster of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: u64,
    pub role: String,
    pub up: bool,
    pub detail: String,
}

/// One replica of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    pub node: u64,
    pub applied_index: Option<u64>,
    /// Entries behind the leader's last log index.
    pub lag: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardView {
    pub shard: u32,
    pub leader: Option<u64>,
    pub replicas: Vec<ReplicaView>,
}

/// A cluster's health as every reachable member reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub shards: Vec<ShardView>,
}

/// A member's Raft groups, aggregated (no label per group).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftStats {
    pub groups: u64,
    pub leaders: u64,
    pub followers: u64,
    pub learners: u64,
    pub candidates: u64,
    pub leader_changes: u64,
    pub applied_index_sum: u64,
    pub apply_lag_max: u64,
    pub apply_lag_sum: u64,
    pub replication_lag_max: u64,
    pub replication_lag_sum: u64,
}

/// What the API reads. Every read sees only durable state.
pub trait ReadModel: Send + Sync + 'static {
    /// Every partner with every contract version, by id.
    fn partners(&self) -> BoxFuture<'_, Result<Vec<Partner>, BackendError>>;
    fn balance(&self, partner: &str) -> BoxFuture<'_, Result<Option<BalanceView>, BackendError>>;
    /// Every statement issued to the partner, by period.
    fn statements(&self, partner: &str) -> BoxFuture<'_, Result<Vec<Statement>, BackendError>>;
    fn transactions(&self, query: TxQuery) -> BoxFuture<'_, Result<TxPage, BackendError>>;
    /// The first durable occurrence of an id.
    fn transaction(&self, id: &str) -> BoxFuture<'_, Result<Option<TxRecord>, BackendError>>;
    fn exceptions(&self, query: ExceptionQuery) -> BoxFuture<'_, Result<ExceptionPage, BackendError>>;
    fn exception(&self, seq: u64) -> BoxFuture<'_, Result<Option<ExceptionItem>, BackendError>>;
    /// The newest FX rate of each pair, by pair (what staleness alerts watch).
    fn newest_rates(&self) -> BoxFuture<'_, Result<Vec<FxRate>, BackendError>>;
    fn counters(&self) -> EngineCounters;
    /// Storage statistics as (metric suffix, column family, value).
    fn storage_stats(&self) -> Vec<(String, String, u64)>;
    fn nodes(&self) -> Vec<NodeView>;
    /// Nodes and shards as the cluster reports them now; `None` when this is not a cluster.
    fn cluster(&self) -> BoxFuture<'_, Result<Option<ClusterView>, BackendError>> {
        Box::pin(async { Ok(None) })
    }
    /// Raft figures of this member; `None` when this is not a cluster member.
    fn raft_stats(&self) -> Option<RaftStats> {
        None
    }
    /// Whether this node should get traffic now (`GET /readyz`); `Err` names what it waits for
    /// (a cluster member: a shard without a leader, or a replica not caught up). A standalone
    /// engine is ready once it serves (it rebuilt its state before the API started).
    fn readiness(&self) -> Result<(), Vec<String>> {
        Ok(())
    }
}

/// What the API changes in the settlement state. Each call is durable when it returns `Ok`.
pub trait Mutations: Send + Sync + 'static {
    fn register_partner(&self, partner: Partner) -> BoxFuture<'_, Result<(), BackendError>>;
    fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> BoxFuture<'_, Result<(), BackendError>>;
    fn submit(&self, txs: Vec<TxInput>) -> BoxFuture<'_, Result<Vec<TxResult>, BackendError>>;
    fn publish_rates(&self, rates: Vec<FxRate>) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Whether the backend keeps exception resolutions itself (a cluster: in the exception's
    /// shard log, agreed by every replica); if not, the API keeps them in the control store.
    fn resolves_exceptions(&self) -> bool {
        false
    }
    /// Resolves exception `seq` on behalf of `by` at `at` (backends that resolve exceptions).
    fn resolve_exception(
        &self,
        _seq: u64,
        _action: ResolveAction,
        _by: String,
        _at: Instant,
    ) -> BoxFuture<'_, Result<ResolveResult, BackendError>> {
        Box::pin(async { Err(BackendError::Internal("this backend does not resolve exceptions".into())) })
    }
    /// Removes the transactions of archived periods (closed, ended by `cutoff`) from the hot
    /// history; balances, ids, statements and the exception queue stay. A backend that rebuilds
    /// its state from that history refuses.
    fn prune_archived(
        &self,
        _periods: Vec<ArchivedPeriod>,
        _cutoff: Instant,
    ) -> BoxFuture<'_, Result<PruneSummary, BackendError>> {
        Box::pin(async {
            Err(BackendError::Rejected(
                "a standalone node rebuilds its state from its whole log, so it keeps it; archived \
                 periods are removed from a cluster's history only (docs/import-and-reconcile.md)"
                    .into(),
            ))
        })
    }
}

/// A period of an archive (`settle archive export`'s manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedPeriod {
    pub partner: String,
    pub period_start: Instant,
    pub transactions: u64,
}

/// What removing archived periods did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneSummary {
    pub shards: u32,
    pub rows_removed: u64,
    pub transactions_removed: u64,
    pub exception_records_removed: u64,
    /// Rows holding archived transactions next to ones of periods not archived yet: they stay
    /// until those periods are archived too.
    pub rows_kept: u64,
}

/// Record spaces of the control store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Space {
    Users = 1,
    ApiKeys = 2,
    Sessions = 3,
    AlertRules = 4,
    Resolutions = 5,
    DeadLetters = 6,
    Settings = 7,
    /// Statement webhook subscriptions, by id.
    StatementHooks = 8,
    /// Claims and outcomes of statement announcements, by hook/partner/period start.
    Announced = 9,
    /// Stored import mappings (TOML), by name.
    Mappings = 10,
}

/// One write of an atomic control batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlOp {
    Put {
        space: Space,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        space: Space,
        key: String,
    },
    /// A precondition: the batch is written only if the record is exactly `value` now
    /// (`None`: absent), else nothing is and the write answers [`StoreError::Changed`]. Makes a
    /// read-modify-write (failed-login counters, the TOTP step used, "create if absent")
    /// linearizable wherever the store is shared.
    Expect {
        space: Space,
        key: String,
        value: Option<Vec<u8>>,
    },
    /// The audit record `seq`; it must follow the chain's last record (else nothing is written
    /// and the write answers [`StoreError::AuditHeadMoved`]).
    Audit {
        seq: u64,
        record: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("control store: {0}")]
    Failed(String),
    /// Not known to be written (a replicated store found no leader in time); retry.
    #[error("control store unavailable: {0}")]
    Unavailable(String),
    /// Another writer appended to the audit chain first; nothing was written.
    #[error("control store: the audit chain moved on")]
    AuditHeadMoved,
    /// A record an `Expect` named changed; nothing was written.
    #[error("control store: {0}")]
    Changed(String),
}

/// Durable records of the control plane: users, keys, sessions, alert rules, exception
/// resolutions and the audit chain. On a standalone node it is the node's RocksDB (`control`
/// and `audit` families); in a cluster it is the metadata Raft group, so that every member sees
/// the same users and the same audit chain.
pub trait ControlStore: Send + Sync + 'static {
    fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(&self, space: Space) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// All or nothing, durable when it returns `Ok`; once it returns (either way), reads here
    /// see what it did.
    fn write(&self, ops: Vec<ControlOp>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Makes later reads here see every write any member completed before this call (a
    /// replicated store catches up with its leader; a local one has nothing to do).
    fn sync(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// Whether reads here are current enough to authenticate with (a replica cut off from its
    /// leader is not: a revocation may not have reached it).
    fn current(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn audit_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    /// Whether this member should do the cluster-wide background work now (announcing closed
    /// statements): where members share the store, only its leader, so the work is not done
    /// once per member; a store of one node always.
    fn leads(&self) -> bool {
        true
    }
}
