//! What the ingress needs from the engine, as a trait, so that the network edge depends on a
//! narrow surface (and the engine on nothing of the network). `EngineHandle` implements it.

use settle_core::cycle::Period;
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, Currency, FxRate, Minor, Partner, Statement, TxInput};
use std::future::Future;

/// A partner's balance as the ingress reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceView {
    pub partner: String,
    pub currency: Currency,
    pub payable: Minor,
    pub open_period: Period,
    pub preview: Statement,
}

/// Why the engine could not do what was asked. Business exceptions are not errors: they are
/// outcomes inside `TxResult`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// At capacity; nothing was done. Retryable.
    #[error("overloaded")]
    Overloaded,
    /// Shutting down or stopped; the outcome of the request is unknown. Retryable elsewhere/later.
    #[error("stopped: {0}")]
    Stopped(String),
    /// Understood and refused (e.g. a partner registered twice).
    #[error("rejected: {0}")]
    Rejected(String),
    /// Storage or another internal failure; the outcome is unknown.
    #[error("internal: {0}")]
    Internal(String),
}

/// The engine operations the ingress calls. Every method is async and cancellation-safe from the
/// ingress's point of view: `submit` resolves `Ok` only once the batch is durably committed.
pub trait Backend: Clone + Send + Sync + 'static {
    fn submit(&self, txs: Vec<TxInput>) -> impl Future<Output = Result<Vec<TxResult>, BackendError>> + Send;
    fn publish_rates(&self, rates: Vec<FxRate>) -> impl Future<Output = Result<(), BackendError>> + Send;
    fn balance(
        &self,
        partner: &str,
    ) -> impl Future<Output = Result<Option<BalanceView>, BackendError>> + Send;
    fn register_partner(&self, partner: Partner) -> impl Future<Output = Result<(), BackendError>> + Send;
    fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// The cluster's status as JSON; `None` when the backend is not a cluster member.
    fn cluster_status(&self) -> impl Future<Output = Result<Option<String>, BackendError>> + Send {
        async { Ok(None) }
    }
    /// Operations: a page of a partner's transactions by a bounded log scan (`settle reconcile`).
    /// Backends without a log refuse it.
    fn list_transactions(
        &self,
        _query: crate::engine::ListQuery,
    ) -> impl Future<Output = Result<crate::engine::ListPage, BackendError>> + Send {
        async { Err(BackendError::Rejected("this node cannot list transactions".into())) }
    }
    /// Admin: a consistent checkpoint of the store in `dir` (`settle backup`); returns a log
    /// sequence it holds at least.
    fn checkpoint(
        &self,
        _dir: std::path::PathBuf,
    ) -> impl Future<Output = Result<Option<u64>, BackendError>> + Send {
        async { Err(BackendError::Rejected("this node cannot take a checkpoint".into())) }
    }
    /// Runs a membership command (JSON, see `wire::ClusterCommand`); `None` when the backend
    /// is not a cluster member.
    fn cluster_command(
        &self,
        _command_json: &str,
    ) -> impl Future<Output = Result<Option<String>, BackendError>> + Send {
        async { Ok(None) }
    }
}

impl From<crate::engine::EngineError> for BackendError {
    fn from(e: crate::engine::EngineError) -> BackendError {
        use crate::engine::EngineError;
        match e {
            EngineError::Overloaded => BackendError::Overloaded,
            EngineError::Stopped(m) => BackendError::Stopped(m),
            EngineError::Rejected(m) => BackendError::Rejected(m),
            other @ (EngineError::Storage(_) | EngineError::Recovery(_)) => {
                BackendError::Internal(other.to_string())
            }
        }
    }
}

/// The live engine behind the ingress.
impl Backend for crate::engine::EngineHandle {
    async fn submit(&self, txs: Vec<TxInput>) -> Result<Vec<TxResult>, BackendError> {
        Ok(crate::engine::EngineHandle::submit(self, txs).await?)
    }

    async fn publish_rates(&self, rates: Vec<FxRate>) -> Result<(), BackendError> {
        Ok(crate::engine::EngineHandle::publish_rates(self, rates).await?)
    }

    async fn balance(&self, partner: &str) -> Result<Option<BalanceView>, BackendError> {
        let balance = crate::engine::EngineHandle::balance(self, partner).await?;
        Ok(balance.map(|b| BalanceView {
            partner: b.partner,
            currency: b.currency,
            payable: b.payable,
            open_period: b.open_period,
            preview: b.preview,
        }))
    }

    async fn register_partner(&self, partner: Partner) -> Result<(), BackendError> {
        Ok(crate::engine::EngineHandle::register_partner(self, partner).await?)
    }

    async fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> Result<(), BackendError> {
        Ok(crate::engine::EngineHandle::add_contract_version(self, partner, version).await?)
    }

    async fn list_transactions(
        &self,
        query: crate::engine::ListQuery,
    ) -> Result<crate::engine::ListPage, BackendError> {
        Ok(crate::engine::EngineHandle::list_transactions(self, query).await?)
    }

    async fn checkpoint(&self, dir: std::path::PathBuf) -> Result<Option<u64>, BackendError> {
        Ok(crate::engine::EngineHandle::checkpoint(self, dir).await?)
    }
}
