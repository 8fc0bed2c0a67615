//! Read-only operations views of the engine for `settle reconcile` and `settle backup`: a
//! partner's transactions in a time range by a bounded scan of the durable log (nothing is added
//! to the commit path), and a RocksDB checkpoint of the store.

use super::{EngineError, EngineHandle};
use settle_core::cycle::Period;
use settle_core::{Currency, Instant, Outcome, TxInput};
use settle_storage::{LogEntry, StorageError, Store};
use std::path::PathBuf;

/// What to list: a partner's transactions with `from <= occurred_at < to` (`to` None: the end of
/// the partner's period containing `from`), after log sequence `after_seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub partner: String,
    pub from: Instant,
    pub to: Option<Instant>,
    pub after_seq: u64,
    pub limit: usize,
    /// Most log entries read for this page.
    pub max_scan: usize,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct ListPage {
    pub items: Vec<(u64, TxInput, Outcome)>,
    /// The partner's settlement currency (formats applied amounts).
    pub currency: Currency,
    /// The last log sequence read: the next page starts after it.
    pub next_after_seq: u64,
    /// The scan reached the end of the log.
    pub done: bool,
    pub period: Period,
}

impl EngineHandle {
    /// A page of the partner's transactions (applied and exceptions), in log order. `Rejected`
    /// for an unknown partner or an instant before its first period.
    pub async fn list_transactions(&self, query: ListQuery) -> Result<ListPage, EngineError> {
        self.read(move |store| {
            let partners = store.partners()?;
            let Some(partner) = partners.into_iter().find(|p| p.id == query.partner) else {
                return Ok(Err(format!("unknown partner {:?}", query.partner)));
            };
            let Some(period) = partner.cycle.period_containing(query.from) else {
                return Ok(Err("no period of the partner contains `from`".to_string()));
            };
            let to = query.to.unwrap_or(period.end);
            let (items, next_after_seq, done) = scan(store, &query, to)?;
            Ok(Ok(ListPage { items, currency: partner.currency, next_after_seq, done, period }))
        })
        .await?
        .map_err(EngineError::Rejected)
    }

    /// A consistent RocksDB checkpoint of the store in `dir` (must not exist); returns a log
    /// sequence the checkpoint holds at least.
    pub async fn checkpoint(&self, dir: PathBuf) -> Result<Option<u64>, EngineError> {
        self.read(move |store| store.checkpoint(&dir)).await
    }
}

type Scanned = (Vec<(u64, TxInput, Outcome)>, u64, bool);

/// Reads at most `max_scan` log entries after `after_seq`; stops early at `limit` items.
fn scan(store: &Store, query: &ListQuery, to: Instant) -> Result<Scanned, StorageError> {
    let mut items = Vec::new();
    let mut last = query.after_seq;
    let mut scanned = 0usize;
    for entry in store.log_from(query.after_seq.saturating_add(1))? {
        let (seq, entry) = entry?;
        last = seq;
        scanned += 1;
        if let LogEntry::Tx { tx, outcome } = entry {
            let ours = tx.partner.as_deref() == Some(query.partner.as_str());
            if ours && tx.occurred_at >= query.from && tx.occurred_at < to {
                items.push((seq, tx, outcome));
            }
        }
        if items.len() >= query.limit || scanned >= query.max_scan {
            return Ok((items, last, false));
        }
    }
    Ok((items, last, true))
}
