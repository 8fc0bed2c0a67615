//! The standalone node's side of the API seam: `settle-api`'s traits implemented over the live
//! engine and its store. Reads use what the engine already writes (the `log`, `exceptions`,
//! `statements` and `partners` families); nothing here adds work to the commit path. A cluster
//! implements the same traits over its shards and its metadata group.

use crate::engine::{EngineError, EngineHandle};
use crate::ingress::{BackendError as IngressError, BalanceView as IngressBalance};
use settle_api::metrics::Metrics;
use settle_api::model::{
    BackendError, BalanceView, BoxFuture, ControlOp, ControlStore, EngineCounters, ExceptionItem,
    ExceptionPage, ExceptionQuery, Mutations, NodeView, ReadModel, Space, StoreError, TxPage, TxQuery,
    TxRecord, TxStatus, MAX_PAGE, MAX_SCAN_PER_PAGE,
};
use settle_cluster::reads::TxFilter;
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, Currency, FxRate, Partner, Statement, TxInput};
use settle_storage::{keys, ControlWrite, LogEntry, StorageError, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Statistics exported per column family.
pub const ROCKSDB_STATS: [(&str, &str); 3] = [
    ("estimate_num_keys", "rocksdb.estimate-num-keys"),
    ("sst_bytes", "rocksdb.total-sst-files-size"),
    ("memtable_bytes", "rocksdb.cur-size-all-mem-tables"),
];

fn backend_error(e: EngineError) -> BackendError {
    match e {
        EngineError::Overloaded => BackendError::Overloaded,
        EngineError::Stopped(m) => BackendError::Unavailable(m),
        EngineError::Rejected(m) => BackendError::Rejected(m),
        other @ (EngineError::Storage(_) | EngineError::Recovery(_)) => {
            BackendError::Internal(other.to_string())
        }
    }
}

/// A partner account's balance as the API shows it (the engine and every replica hold the
/// same account cell).
pub fn balance_view(b: settle_cluster::account::Balance) -> BalanceView {
    BalanceView {
        partner: b.partner,
        currency: b.currency,
        payable: b.payable,
        open_period: b.open_period,
        preview: b.preview,
    }
}

fn storage_error(e: StorageError) -> BackendError {
    BackendError::Internal(e.to_string())
}

/// The control store over a node's RocksDB (`control` and `audit` families).
#[derive(Clone, Debug)]
pub struct StoreControl(pub Arc<Store>);

fn store_error(e: StorageError) -> StoreError {
    StoreError::Failed(e.to_string())
}

/// One control write at a time in this process, so a batch's preconditions are checked and
/// its writes made with nothing in between (the API serves one store per process).
static CONTROL_WRITES: Mutex<()> = Mutex::new(());

impl StoreControl {
    fn write_checked(&self, ops: Vec<ControlOp>) -> Result<(), StoreError> {
        let _one = CONTROL_WRITES.lock().unwrap_or_else(|e| e.into_inner());
        let mut next_audit =
            self.0.audit_last().map_err(store_error)?.map_or(0, |(seq, _)| seq.saturating_add(1));
        let mut writes = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                ControlOp::Expect { space, key, value } => {
                    if self.0.control_get(space as u8, key.as_bytes()).map_err(store_error)? != value {
                        return Err(StoreError::Changed(format!("record {key:?} changed meanwhile")));
                    }
                }
                ControlOp::Put { space, key, value } => {
                    writes.push(ControlWrite::Put { space: space as u8, key: key.into_bytes(), value })
                }
                ControlOp::Delete { space, key } => {
                    writes.push(ControlWrite::Delete { space: space as u8, key: key.into_bytes() })
                }
                ControlOp::Audit { seq, record } => {
                    if seq != next_audit {
                        return Err(StoreError::AuditHeadMoved);
                    }
                    next_audit = seq.saturating_add(1);
                    writes.push(ControlWrite::Audit { seq, record });
                }
            }
        }
        self.0.control_write(&writes).map_err(store_error)
    }

    /// Writes records as given, without preconditions (tests that tamper with a chain).
    #[doc(hidden)]
    pub fn write_unchecked(&self, ops: Vec<ControlOp>) -> Result<(), StoreError> {
        let writes: Vec<ControlWrite> = ops
            .into_iter()
            .filter_map(|op| match op {
                ControlOp::Put { space, key, value } => {
                    Some(ControlWrite::Put { space: space as u8, key: key.into_bytes(), value })
                }
                ControlOp::Delete { space, key } => {
                    Some(ControlWrite::Delete { space: space as u8, key: key.into_bytes() })
                }
                ControlOp::Audit { seq, record } => Some(ControlWrite::Audit { seq, record }),
                ControlOp::Expect { .. } => None,
            })
            .collect();
        self.0.control_write(&writes).map_err(store_error)
    }
}

impl ControlStore for StoreControl {
    fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.control_get(space as u8, key.as_bytes()).map_err(store_error)
    }

    fn scan(&self, space: Space) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = self.0.control_scan(space as u8).map_err(store_error)?;
        Ok(rows.into_iter().map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)).collect())
    }

    fn write(&self, ops: Vec<ControlOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.write_checked(ops) })
    }

    fn audit_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.0.audit_after(after, limit).map_err(store_error)
    }

    fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.0.audit_last().map_err(store_error)
    }
}

/// The API's read model and mutations over a standalone engine.
#[derive(Clone, Debug)]
pub struct EngineApi {
    engine: EngineHandle,
    store: Arc<Store>,
    /// Settlement currency by partner (partners are never removed, currencies never change).
    currencies: Arc<Mutex<HashMap<String, Currency>>>,
}

impl EngineApi {
    pub fn new(engine: EngineHandle) -> Result<EngineApi, EngineError> {
        let store = engine.store()?;
        Ok(EngineApi { engine, store, currencies: Arc::new(Mutex::new(HashMap::new())) })
    }

    pub fn control(&self) -> StoreControl {
        StoreControl(Arc::clone(&self.store))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store, &Mutex<HashMap<String, Currency>>) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, BackendError> {
        if let Some(reason) = self.engine.stopped_reason() {
            return Err(BackendError::Unavailable(reason));
        }
        let store = Arc::clone(&self.store);
        let currencies = Arc::clone(&self.currencies);
        tokio::task::spawn_blocking(move || f(&store, &currencies))
            .await
            .map_err(|e| BackendError::Internal(format!("read task failed: {e}")))?
            .map_err(storage_error)
    }
}

/// Settlement currencies by partner; a partner not in the cache reloads the registrations once
/// per read (`reloaded`), so unknown partner ids in the log cost at most one reload.
fn currency_of(
    store: &Store,
    cache: &Mutex<HashMap<String, Currency>>,
    partner: Option<&str>,
    reloaded: &mut bool,
) -> Result<Option<Currency>, StorageError> {
    let Some(partner) = partner else { return Ok(None) };
    if let Some(c) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(partner) {
        return Ok(Some(*c));
    }
    if *reloaded {
        return Ok(None);
    }
    *reloaded = true;
    let all = store.partners()?;
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    for p in all {
        map.insert(p.id, p.currency);
    }
    Ok(map.get(partner).copied())
}

/// The query's filters (the cluster's filter type: one reading of them for both modes).
pub fn tx_filter(q: &TxQuery) -> TxFilter {
    TxFilter {
        partner: q.partner.clone(),
        kind: q.kind,
        applied: q.status.map(|s| s == TxStatus::Applied),
        reason: q.reason,
        period_start: q.period_start,
        received_from: q.received_from,
        received_to: q.received_to,
    }
}

/// A standalone cursor: a log sequence.
fn seq_cursor(cursor: Option<&String>) -> Result<Option<u64>, BackendError> {
    cursor
        .map(|c| {
            c.parse::<u64>().map_err(|_| BackendError::Invalid(format!("cursor: {c:?} is not a cursor")))
        })
        .transpose()
}

fn tx_page(
    store: &Store,
    cache: &Mutex<HashMap<String, Currency>>,
    q: &TxQuery,
    before: Option<u64>,
) -> Result<TxPage, StorageError> {
    let start = match before {
        Some(0) => return Ok(TxPage::default()),
        Some(b) => b - 1,
        None => u64::MAX,
    };
    let filter = tx_filter(q);
    let limit = q.limit.clamp(1, MAX_PAGE);
    let mut items = Vec::new();
    let mut reloaded = false;
    for (scanned, item) in store.log_down_from(start)?.enumerate() {
        let (seq, entry) = item?;
        if let LogEntry::Tx { tx, outcome } = entry {
            // The log is in stamping order, so received_at never increases going down.
            if q.received_from.is_some_and(|from| tx.received_at < from) {
                return Ok(TxPage { items, next: None });
            }
            if filter.matches(&tx, &outcome) {
                let settlement_currency = currency_of(store, cache, tx.partner.as_deref(), &mut reloaded)?;
                items.push(TxRecord { seq: Some(seq), tx, outcome, settlement_currency });
                if items.len() == limit {
                    return Ok(TxPage { items, next: Some(seq.to_string()) });
                }
            }
        }
        if scanned + 1 >= MAX_SCAN_PER_PAGE {
            return Ok(TxPage { items, next: Some(seq.to_string()) });
        }
    }
    Ok(TxPage { items, next: None })
}

fn exception_item(
    store: &Store,
    seq: u64,
    id: String,
    reason: settle_core::ExceptionReason,
) -> Result<ExceptionItem, StorageError> {
    let tx = match store.log_entry(seq)? {
        Some(LogEntry::Tx { tx, .. }) => Some(tx),
        _ => None,
    };
    Ok(ExceptionItem { seq, id, reason, tx, resolution: None })
}

/// Exceptions examined per storage read while filtering.
const EXCEPTION_CHUNK: usize = 1_000;

fn exception_page(
    store: &Store,
    q: &ExceptionQuery,
    after: Option<u64>,
) -> Result<ExceptionPage, StorageError> {
    let limit = q.limit.clamp(1, MAX_PAGE);
    let mut after = after;
    let mut items = Vec::new();
    let mut scanned = 0usize;
    loop {
        let chunk = store.exceptions(after, EXCEPTION_CHUNK)?;
        let exhausted = chunk.len() < EXCEPTION_CHUNK;
        for record in chunk {
            scanned += 1;
            after = Some(record.seq);
            if q.reason.is_some_and(|r| r != record.reason) {
                continue;
            }
            let item = exception_item(store, record.seq, record.id, record.reason)?;
            let partner = item.tx.as_ref().and_then(|t| t.partner.as_deref());
            if q.partner.as_deref().is_some_and(|p| partner != Some(p)) {
                continue;
            }
            items.push(item);
            if items.len() == limit || scanned >= MAX_SCAN_PER_PAGE {
                return Ok(ExceptionPage { items, next: after.map(|a| a.to_string()) });
            }
        }
        if exhausted {
            return Ok(ExceptionPage { items, next: None });
        }
    }
}

impl ReadModel for EngineApi {
    fn partners(&self) -> BoxFuture<'_, Result<Vec<Partner>, BackendError>> {
        Box::pin(self.blocking(|store, _| store.partners()))
    }

    fn balance(&self, partner: &str) -> BoxFuture<'_, Result<Option<BalanceView>, BackendError>> {
        let partner = partner.to_string();
        Box::pin(async move {
            let b = self.engine.balance(&partner).await.map_err(backend_error)?;
            Ok(b.map(balance_view))
        })
    }

    fn newest_rates(&self) -> BoxFuture<'_, Result<Vec<FxRate>, BackendError>> {
        Box::pin(async move { self.engine.newest_rates().await.map_err(backend_error) })
    }

    fn statements(&self, partner: &str) -> BoxFuture<'_, Result<Vec<Statement>, BackendError>> {
        let partner = partner.to_string();
        Box::pin(self.blocking(move |store, _| store.statements(&partner)))
    }

    fn transactions(&self, query: TxQuery) -> BoxFuture<'_, Result<TxPage, BackendError>> {
        Box::pin(async move {
            let before = seq_cursor(query.before.as_ref())?;
            self.blocking(move |store, cache| tx_page(store, cache, &query, before)).await
        })
    }

    fn transaction(&self, id: &str) -> BoxFuture<'_, Result<Option<TxRecord>, BackendError>> {
        let id = id.to_string();
        Box::pin(async move {
            // The engine answers lookups from its id index (there is no id index on disk).
            let Some((tx, outcome)) = self.engine.lookup(&id).await.map_err(backend_error)? else {
                return Ok(None);
            };
            let partner = tx.partner.clone();
            let settlement_currency = self
                .blocking(move |store, cache| currency_of(store, cache, partner.as_deref(), &mut false))
                .await?;
            Ok(Some(TxRecord { seq: None, tx, outcome, settlement_currency }))
        })
    }

    fn exceptions(&self, query: ExceptionQuery) -> BoxFuture<'_, Result<ExceptionPage, BackendError>> {
        Box::pin(async move {
            let after = seq_cursor(query.after.as_ref())?;
            self.blocking(move |store, _| exception_page(store, &query, after)).await
        })
    }

    fn exception(&self, seq: u64) -> BoxFuture<'_, Result<Option<ExceptionItem>, BackendError>> {
        Box::pin(self.blocking(move |store, _| {
            let found = store.exceptions(seq.checked_sub(1), 1)?.into_iter().find(|r| r.seq == seq);
            found.map(|r| exception_item(store, r.seq, r.id, r.reason)).transpose()
        }))
    }

    fn counters(&self) -> EngineCounters {
        let s = self.engine.stats();
        EngineCounters { commits: s.commits, transactions: s.transactions, in_flight: s.in_flight as u64 }
    }

    fn storage_stats(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for cf in keys::ALL_CFS {
            for (name, property) in ROCKSDB_STATS {
                if let Ok(Some(v)) = self.store.cf_property(cf, property) {
                    out.push((name.to_string(), cf.to_string(), v));
                }
            }
        }
        out
    }

    fn nodes(&self) -> Vec<NodeView> {
        let stopped = self.engine.stopped_reason();
        vec![NodeView {
            id: 1,
            role: "standalone".into(),
            up: stopped.is_none(),
            detail: stopped.unwrap_or_else(|| "one node, no replication".into()),
        }]
    }
}

impl Mutations for EngineApi {
    fn register_partner(&self, partner: Partner) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.engine.register_partner(partner).await.map_err(backend_error) })
    }

    fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        let partner = partner.to_string();
        Box::pin(
            async move { self.engine.add_contract_version(&partner, version).await.map_err(backend_error) },
        )
    }

    fn submit(&self, txs: Vec<TxInput>) -> BoxFuture<'_, Result<Vec<TxResult>, BackendError>> {
        Box::pin(async move { self.engine.submit(txs).await.map_err(backend_error) })
    }

    fn publish_rates(&self, rates: Vec<FxRate>) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.engine.publish_rates(rates).await.map_err(backend_error) })
    }
}

/// The ingress backend with metrics: times each submission to its durable answer and counts
/// outcomes (per batch, outside the engine).
#[derive(Clone, Debug)]
pub struct Metered<B> {
    inner: B,
    metrics: Arc<Metrics>,
}

impl<B> Metered<B> {
    pub fn new(inner: B, metrics: Arc<Metrics>) -> Metered<B> {
        Metered { inner, metrics }
    }
}

impl<B: crate::ingress::Backend> crate::ingress::Backend for Metered<B> {
    async fn submit(&self, txs: Vec<TxInput>) -> Result<Vec<TxResult>, IngressError> {
        let started = std::time::Instant::now();
        let counts = Metrics::partner_counts(&txs);
        let results = self.inner.submit(txs).await?;
        self.metrics.observe_submit(started.elapsed(), &counts, &results);
        Ok(results)
    }

    async fn publish_rates(&self, rates: Vec<FxRate>) -> Result<(), IngressError> {
        self.inner.publish_rates(rates).await
    }

    async fn balance(&self, partner: &str) -> Result<Option<IngressBalance>, IngressError> {
        self.inner.balance(partner).await
    }

    async fn register_partner(&self, partner: Partner) -> Result<(), IngressError> {
        self.inner.register_partner(partner).await
    }

    async fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> Result<(), IngressError> {
        self.inner.add_contract_version(partner, version).await
    }

    async fn cluster_status(&self) -> Result<Option<String>, IngressError> {
        self.inner.cluster_status().await
    }

    async fn list_transactions(
        &self,
        query: crate::engine::ListQuery,
    ) -> Result<crate::engine::ListPage, IngressError> {
        self.inner.list_transactions(query).await
    }

    async fn checkpoint(&self, dir: std::path::PathBuf) -> Result<Option<u64>, IngressError> {
        self.inner.checkpoint(dir).await
    }

    async fn cluster_command(&self, command_json: &str) -> Result<Option<String>, IngressError> {
        self.inner.cluster_command(command_json).await
    }
}
