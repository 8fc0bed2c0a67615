//! A cluster member's side of the API seam: `settle-api`'s traits over `ClusterHandle`. Reads go
//! to the shards' leaders and are merged in the cluster's global order
//! (`settle_cluster::reads`); mutations go through the same paths as QUIC clients'; the control
//! store is the metadata Raft group, so every member serves the same users, keys, sessions and
//! audit chain; exceptions are resolved in their shard's log.

use crate::api::{balance_view, tx_filter};
use crate::ingress::{Backend, BackendError as IngressError};
use settle_api::audit::AuditRecord;
use settle_api::model::{
    BackendError, BalanceView, BoxFuture, ClusterView, ControlOp, ControlStore, EngineCounters,
    ExceptionItem, ExceptionPage, ExceptionQuery, Mutations, NodeView, RaftStats, ReadModel, ReplicaView,
    ResolutionKind, ResolutionView, ResolveAction, ResolveResult, ShardView, Space, StoreError, TxPage,
    TxQuery, TxRecord, MAX_PAGE,
};
use settle_cluster::control::ControlError;
use settle_cluster::meta::ControlOp as MetaOp;
use settle_cluster::reads::{ExceptionEntry, ExceptionPos, HistoryPos};
use settle_cluster::resolve::{ResolveAction as ClusterResolve, ResolveOutcome};
use settle_cluster::{ClusterError, ClusterHandle};
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, FxRate, Instant, Partner, Statement, TxInput};
use settle_storage::{keys, RaftDb, ResolutionAction};
use std::sync::{Arc, Mutex};

/// RocksDB statistics exported per column family of the cluster database.
const ROCKSDB_STATS: [(&str, &str); 3] = crate::api::ROCKSDB_STATS;

fn backend_error(e: ClusterError) -> BackendError {
    match e {
        ClusterError::Unavailable(m) => BackendError::Unavailable(m),
        ClusterError::Rejected(m) => BackendError::Rejected(m),
        other @ (ClusterError::Storage(_) | ClusterError::Startup(_)) => {
            BackendError::Internal(other.to_string())
        }
    }
}

fn ingress_error(e: IngressError) -> BackendError {
    match e {
        IngressError::Overloaded => BackendError::Overloaded,
        IngressError::Stopped(m) => BackendError::Unavailable(m),
        IngressError::Rejected(m) => BackendError::Rejected(m),
        IngressError::Internal(m) => BackendError::Internal(m),
    }
}

fn exception_item(e: ExceptionEntry) -> ExceptionItem {
    let resolution = e.resolution.as_ref().map(|r| ResolutionView {
        kind: match &r.action {
            ResolutionAction::Reject { reason } => ResolutionKind::Reject { reason: reason.clone() },
            ResolutionAction::Retry { tx, outcome } => ResolutionKind::Retry {
                retry_id: tx.id.as_str().to_string(),
                outcome: outcome.clone(),
                settlement_currency: e.currency,
            },
        },
        by: r.by.clone(),
        at: r.at,
    });
    ExceptionItem {
        seq: e.seq(),
        id: e.tx.id.as_str().to_string(),
        reason: e.reason,
        tx: Some(e.tx),
        resolution,
    }
}

/// The API's read model and mutations over a cluster member.
#[derive(Debug)]
pub struct ClusterApi {
    handle: ClusterHandle,
    /// The last cluster view (the dashboard asks every few seconds; `nodes` answers from it).
    last_view: Mutex<Option<ClusterView>>,
}

impl ClusterApi {
    pub fn new(handle: ClusterHandle) -> ClusterApi {
        ClusterApi { handle, last_view: Mutex::new(None) }
    }
}

/// The cluster's status JSON (`settle cluster status --json`) as the dashboard's view.
fn cluster_view(status: &serde_json::Value, me: u64) -> ClusterView {
    let mut shards = Vec::new();
    for s in status["shards"].as_array().into_iter().flatten() {
        let replicas = s["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| ReplicaView {
                node: r["node"].as_u64().unwrap_or(0),
                applied_index: r["applied_index"].as_u64(),
                lag: r["lag"].as_u64(),
            })
            .collect();
        shards.push(ShardView {
            shard: u32::try_from(s["shard"].as_u64().unwrap_or(0)).unwrap_or(u32::MAX),
            leader: s["leader"].as_u64(),
            replicas,
        });
    }
    let nodes = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let id = n["id"].as_u64().unwrap_or(0);
            let leads = shards.iter().filter(|s| s.leader == Some(id)).count();
            let http = n["http"].as_str().map_or(String::new(), |h| format!(", http {h}"));
            NodeView {
                id,
                role: if id == me {
                    format!("member (this one), leads {leads}")
                } else {
                    format!("member, leads {leads}")
                },
                up: n["up"].as_bool() == Some(true),
                detail: format!(
                    "peer {}, quic {}{http}",
                    n["peer"].as_str().unwrap_or("?"),
                    n["quic"].as_str().unwrap_or("?")
                ),
            }
        })
        .collect();
    ClusterView { nodes, shards }
}

impl ReadModel for ClusterApi {
    fn partners(&self) -> BoxFuture<'_, Result<Vec<Partner>, BackendError>> {
        Box::pin(async move { self.handle.partners().await.map_err(backend_error) })
    }

    fn balance(&self, partner: &str) -> BoxFuture<'_, Result<Option<BalanceView>, BackendError>> {
        let partner = partner.to_string();
        Box::pin(async move {
            let b = self.handle.balance(&partner).await.map_err(backend_error)?;
            Ok(b.map(balance_view))
        })
    }

    fn newest_rates(&self) -> BoxFuture<'_, Result<Vec<FxRate>, BackendError>> {
        Box::pin(async move { self.handle.newest_rates().await.map_err(backend_error) })
    }

    fn statements(&self, partner: &str) -> BoxFuture<'_, Result<Vec<Statement>, BackendError>> {
        let partner = partner.to_string();
        Box::pin(async move { self.handle.statements(&partner).await.map_err(backend_error) })
    }

    fn transactions(&self, query: TxQuery) -> BoxFuture<'_, Result<TxPage, BackendError>> {
        Box::pin(async move {
            let before = query
                .before
                .as_deref()
                .map(|c| {
                    HistoryPos::parse(c)
                        .ok_or_else(|| BackendError::Invalid(format!("cursor: {c:?} is not a cursor")))
                })
                .transpose()?;
            let limit = query.limit.clamp(1, MAX_PAGE);
            let (items, next) =
                self.handle.transactions(tx_filter(&query), before, limit).await.map_err(backend_error)?;
            Ok(TxPage {
                items: items
                    .into_iter()
                    .map(|e| TxRecord {
                        seq: None,
                        tx: e.tx,
                        outcome: e.outcome,
                        settlement_currency: e.currency,
                    })
                    .collect(),
                next: next.map(|n| n.to_cursor()),
            })
        })
    }

    fn transaction(&self, id: &str) -> BoxFuture<'_, Result<Option<TxRecord>, BackendError>> {
        let id = id.to_string();
        Box::pin(async move {
            let found = self.handle.lookup(&id).await.map_err(backend_error)?;
            Ok(found.map(|e| TxRecord {
                seq: None,
                tx: e.tx,
                outcome: e.outcome,
                settlement_currency: e.currency,
            }))
        })
    }

    fn exceptions(&self, query: ExceptionQuery) -> BoxFuture<'_, Result<ExceptionPage, BackendError>> {
        Box::pin(async move {
            let after = query
                .after
                .as_deref()
                .map(|c| {
                    ExceptionPos::parse(c)
                        .ok_or_else(|| BackendError::Invalid(format!("cursor: {c:?} is not a cursor")))
                })
                .transpose()?;
            let limit = query.limit.clamp(1, MAX_PAGE);
            let (items, next) = self
                .handle
                .exceptions(query.partner, query.reason, after, limit)
                .await
                .map_err(backend_error)?;
            Ok(ExceptionPage {
                items: items.into_iter().map(exception_item).collect(),
                next: next.map(|n| n.to_cursor()),
            })
        })
    }

    fn exception(&self, seq: u64) -> BoxFuture<'_, Result<Option<ExceptionItem>, BackendError>> {
        Box::pin(
            async move { Ok(self.handle.exception(seq).await.map_err(backend_error)?.map(exception_item)) },
        )
    }

    fn counters(&self) -> EngineCounters {
        let c = self.handle.counters();
        EngineCounters { commits: c.entries, transactions: c.transactions, in_flight: c.in_flight }
    }

    fn storage_stats(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for cf in keys::RAFT_CFS {
            for (name, property) in ROCKSDB_STATS {
                if let Some(v) = self.handle.cf_property(cf, property) {
                    out.push((name.to_string(), cf.to_string(), v));
                }
            }
        }
        out
    }

    fn nodes(&self) -> Vec<NodeView> {
        if let Some(view) = self.last_view.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return view.nodes.clone();
        }
        self.handle
            .nodes()
            .values()
            .map(|n| NodeView {
                id: n.id,
                role: "member".into(),
                up: n.id == self.handle.node_id(),
                detail: format!("peer {}", n.peer),
            })
            .collect()
    }

    fn cluster(&self) -> BoxFuture<'_, Result<Option<ClusterView>, BackendError>> {
        Box::pin(async move {
            let view = cluster_view(&self.handle.cluster_status().await, self.handle.node_id());
            *self.last_view.lock().unwrap_or_else(|e| e.into_inner()) = Some(view.clone());
            Ok(Some(view))
        })
    }

    fn readiness(&self) -> Result<(), Vec<String>> {
        self.handle.readiness()
    }

    fn raft_stats(&self) -> Option<RaftStats> {
        let r = self.handle.raft_summary();
        Some(RaftStats {
            groups: r.groups,
            leaders: r.leaders,
            followers: r.followers,
            learners: r.learners,
            candidates: r.candidates,
            leader_changes: r.leader_changes,
            applied_index_sum: r.applied_index_sum,
            apply_lag_max: r.apply_lag_max,
            apply_lag_sum: r.apply_lag_sum,
            replication_lag_max: r.replication_lag_max,
            replication_lag_sum: r.replication_lag_sum,
        })
    }
}

impl Mutations for ClusterApi {
    fn register_partner(&self, partner: Partner) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { Backend::register_partner(&self.handle, partner).await.map_err(ingress_error) })
    }

    fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        let partner = partner.to_string();
        Box::pin(async move {
            Backend::add_contract_version(&self.handle, &partner, version).await.map_err(ingress_error)
        })
    }

    fn submit(&self, txs: Vec<TxInput>) -> BoxFuture<'_, Result<Vec<TxResult>, BackendError>> {
        Box::pin(async move { Backend::submit(&self.handle, txs).await.map_err(ingress_error) })
    }

    fn publish_rates(&self, rates: Vec<FxRate>) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { Backend::publish_rates(&self.handle, rates).await.map_err(ingress_error) })
    }

    fn resolves_exceptions(&self) -> bool {
        true
    }

    fn resolve_exception(
        &self,
        seq: u64,
        action: ResolveAction,
        by: String,
        at: Instant,
    ) -> BoxFuture<'_, Result<ResolveResult, BackendError>> {
        Box::pin(async move {
            let action = match action {
                ResolveAction::Reject { reason } => ClusterResolve::Reject { reason },
                ResolveAction::Retry { tx } => ClusterResolve::Retry { tx },
            };
            Ok(match self.handle.resolve_exception(seq, action, by, at).await.map_err(backend_error)? {
                ResolveOutcome::Resolved(e) => ResolveResult::Resolved(Box::new(exception_item(*e))),
                ResolveOutcome::AlreadyResolved(e) => {
                    ResolveResult::AlreadyResolved(Box::new(exception_item(*e)))
                }
                ResolveOutcome::NotFound => ResolveResult::NotFound,
            })
        })
    }

    fn prune_archived(
        &self,
        periods: Vec<settle_api::model::ArchivedPeriod>,
        cutoff: Instant,
    ) -> BoxFuture<'_, Result<settle_api::model::PruneSummary, BackendError>> {
        Box::pin(async move {
            let periods = periods
                .into_iter()
                .map(|p| settle_cluster::prune::ArchivedPeriod {
                    partner: p.partner,
                    period_start: p.period_start,
                    transactions: p.transactions,
                })
                .collect();
            let r = self.handle.prune_archived(periods, cutoff).await.map_err(backend_error)?;
            Ok(settle_api::model::PruneSummary {
                shards: r.shards,
                rows_removed: r.rows_removed,
                transactions_removed: r.transactions_removed,
                exception_records_removed: r.exception_records_removed,
                rows_kept: r.rows_kept,
            })
        })
    }
}

/// The control store of a cluster member: the metadata group.
#[derive(Clone, Debug)]
pub struct ClusterControl(pub ClusterHandle);

fn meta_op(op: ControlOp) -> Result<MetaOp, StoreError> {
    Ok(match op {
        ControlOp::Put { space, key, value } => MetaOp::Put { space: space as u8, key, value },
        ControlOp::Delete { space, key } => MetaOp::Delete { space: space as u8, key },
        ControlOp::Expect { space, key, value } => MetaOp::Expect { space: space as u8, key, value },
        ControlOp::Audit { seq, record } => {
            // The metadata group checks the chain's order with the record's own links.
            let parsed: AuditRecord = serde_json::from_slice(&record)
                .map_err(|e| StoreError::Failed(format!("audit record {seq} does not parse: {e}")))?;
            MetaOp::Audit { seq, prev: parsed.prev, hash: parsed.hash, record }
        }
    })
}

impl ControlStore for ClusterControl {
    fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.control_get(space as u8, key))
    }

    fn scan(&self, space: Space) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self.0.control_scan(space as u8))
    }

    fn write(&self, ops: Vec<ControlOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let ops = ops.into_iter().map(meta_op).collect::<Result<Vec<_>, _>>()?;
            self.0.control_write(ops).await.map_err(|e| match e {
                ControlError::AuditHeadMoved => StoreError::AuditHeadMoved,
                ControlError::Changed(m) => StoreError::Changed(m),
                ControlError::Unavailable(m) => StoreError::Unavailable(m),
            })
        })
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.0.meta_sync().await.map_err(|e| StoreError::Unavailable(e.to_string())) })
    }

    fn current(&self) -> Result<(), StoreError> {
        self.0.meta_current().map_err(StoreError::Unavailable)
    }

    fn leads(&self) -> bool {
        self.0.meta_leads()
    }

    fn audit_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.0.audit_after(after, limit).map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.0.audit_last())
    }
}

/// The audit chain in a stopped member's data dir, read-only (`settle audit verify`).
#[derive(Debug)]
pub struct MemberAuditFile(pub Arc<RaftDb>);

impl ControlStore for MemberAuditFile {
    fn get(&self, _: Space, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::Failed("only the audit chain is read here".into()))
    }

    fn scan(&self, _: Space) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Err(StoreError::Failed("only the audit chain is read here".into()))
    }

    fn write(&self, _: Vec<ControlOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::Failed("a data dir is read-only here".into())) })
    }

    fn audit_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.0
            .audit_after(settle_cluster::types::META_GROUP, after, limit)
            .map_err(|e| StoreError::Failed(e.to_string()))
    }

    fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.0.audit_last(settle_cluster::types::META_GROUP).map_err(|e| StoreError::Failed(e.to_string()))
    }
}
