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

/// A page request over the transaction log. The cursor is a log sequence: pages are newest
/// first and continue strictly below the cursor.
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
    pub before: Option<u64>,
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
    pub next: Option<u64>,
}

/// A page request over the exception queue, oldest first, after the cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExceptionQuery {
    pub partner: Option<String>,
    pub reason: Option<ExceptionReason>,
    pub after: Option<u64>,
    pub limit: usize,
}

/// An exception queue entry with the transaction it concerns.
#[derive(Clone, Debug, PartialEq)]
pub struct ExceptionItem {
    pub seq: u64,
    pub id: String,
    pub reason: ExceptionReason,
    pub tx: Option<TxInput>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExceptionPage {
    pub items: Vec<ExceptionItem>,
    pub next: Option<u64>,
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
    fn counters(&self) -> EngineCounters;
    /// Storage statistics as (metric suffix, column family, value).
    fn storage_stats(&self) -> Vec<(String, String, u64)>;
    fn nodes(&self) -> Vec<NodeView>;
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
}

/// One write of an atomic control batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlOp {
    Put { space: Space, key: String, value: Vec<u8> },
    Delete { space: Space, key: String },
    Audit { seq: u64, record: Vec<u8> },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("control store: {0}")]
pub struct StoreError(pub String);

/// Durable records of the control plane: users, keys, sessions, alert rules, exception
/// resolutions and the audit chain. On a standalone node it is the node's RocksDB (`control`
/// and `audit` families); in a cluster it is the metadata Raft group, so that every member sees
/// the same users and the same audit chain.
pub trait ControlStore: Send + Sync + 'static {
    fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(&self, space: Space) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// All or nothing, durable when it returns `Ok`.
    fn write(&self, ops: Vec<ControlOp>) -> Result<(), StoreError>;
    fn audit_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
}
