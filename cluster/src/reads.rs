//! The cluster's read model: partners, statements, transaction history and the exception queue,
//! read on each shard's leader (linearizable: a read index confirmed by a heartbeat quorum, then
//! the records applied up to it, written) and merged across shards.
//!
//! **Global order.** A transaction's place is `(received_at, shard, log index, position in the
//! entry)`: stamps never decrease along a shard's log, so within a shard this is log order, and
//! across shards the stamp orders first with the shard number breaking ties. Exceptions are
//! ordered by `(received_at, shard, number)` the same way. A cursor is such a position; a page
//! continues strictly past it on every shard, so pages never overlap or skip, whatever the
//! shards' leaders do in between (positions of applied entries never change).
//!
//! A page examines a bounded number of transactions per shard ([`SHARD_SCAN_BUDGET`]); a shard
//! that stops early reports how far it looked, and the merged page ends there (it may be short,
//! with a cursor to continue), so a selective filter never turns one request into a scan of the
//! whole history.

use crate::account::Balance;
use crate::node::{ClusterError, ClusterHandle, Group, LEADER_WAIT};
use crate::state_machine::SmKind;
use crate::transport::{ForwardError, PeerReq, PeerResp};
use crate::types::{shard_group, shard_of, GroupId};
use openraft::error::{CheckIsLeaderError, RaftError};
use serde::{Deserialize, Serialize};
use settle_core::{
    Currency, ExceptionReason, FxRate, Instant, Outcome, Partner, Period, Statement, TxInput, TxKind,
};
use settle_storage::{codec, history, LogEntry, RaftDb, Resolution, ShardException, StorageError};
use std::sync::Arc;
use std::time::Duration;

/// Most transactions (or exceptions) one shard examines for one page.
pub const SHARD_SCAN_BUDGET: usize = 4096;
/// Most items one page may ask for.
pub const MAX_READ_PAGE: usize = 1000;
/// How long a read waits for the leader's applied records to be written.
pub const WRITTEN_WAIT: Duration = Duration::from_secs(5);
/// Time one shard read may take on the leader.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bits of an exception's global sequence holding its shard (`MAX_SHARDS` is 4096).
pub const EXCEPTION_SHARD_BITS: u32 = 12;
/// Bits of a listing position (`ListTransactions`) holding the transaction's place in its
/// entry (an entry holds fewer than 2^20 transactions: `codec::MAX_BATCH_TXS`).
pub const LIST_POS_BITS: u32 = 20;

/// Which transactions a page wants. `None` fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxFilter {
    pub partner: Option<String>,
    pub kind: Option<TxKind>,
    /// `Some(true)`: applied ones; `Some(false)`: exceptions.
    pub applied: Option<bool>,
    pub reason: Option<ExceptionReason>,
    /// Applied into the period starting here.
    pub period_start: Option<Instant>,
    /// `received_at` in `[received_from, received_to)`.
    pub received_from: Option<Instant>,
    pub received_to: Option<Instant>,
}

impl TxFilter {
    pub fn matches(&self, tx: &TxInput, outcome: &Outcome) -> bool {
        if self.partner.as_deref().is_some_and(|p| tx.partner.as_deref() != Some(p)) {
            return false;
        }
        if self.kind.is_some_and(|k| tx.kind != k) {
            return false;
        }
        if self.applied.is_some_and(|a| a != outcome.is_applied()) {
            return false;
        }
        if self.reason.is_some() && outcome.exception() != self.reason {
            return false;
        }
        if let Some(start) = self.period_start {
            match outcome {
                Outcome::Applied(a) if a.period.start == start => {}
                _ => return false,
            }
        }
        if self.received_from.is_some_and(|from| tx.received_at < from) {
            return false;
        }
        self.received_to.is_none_or(|to| tx.received_at < to)
    }
}

/// A transaction's place in the global order (field order is the order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HistoryPos {
    pub received_at: Instant,
    pub shard: u32,
    pub index: u64,
    pub pos: u32,
}

/// An exception's place in the global order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExceptionPos {
    pub received_at: Instant,
    pub shard: u32,
    pub number: u64,
}

fn parse_parts<const N: usize>(text: &str) -> Option<[i128; N]> {
    let mut out = [0i128; N];
    let mut parts = text.split('_');
    for slot in &mut out {
        *slot = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl HistoryPos {
    /// The cursor text: `STAMP_SHARD_INDEX_POS` (decimal numbers).
    pub fn to_cursor(&self) -> String {
        format!("{}_{}_{}_{}", self.received_at.0, self.shard, self.index, self.pos)
    }

    pub fn parse(text: &str) -> Option<HistoryPos> {
        let [t, shard, index, pos] = parse_parts::<4>(text)?;
        Some(HistoryPos {
            received_at: Instant(t),
            shard: u32::try_from(shard).ok()?,
            index: u64::try_from(index).ok()?,
            pos: u32::try_from(pos).ok()?,
        })
    }
}

impl ExceptionPos {
    /// The cursor text: `STAMP_SHARD_NUMBER`.
    pub fn to_cursor(&self) -> String {
        format!("{}_{}_{}", self.received_at.0, self.shard, self.number)
    }

    pub fn parse(text: &str) -> Option<ExceptionPos> {
        let [t, shard, number] = parse_parts::<3>(text)?;
        Some(ExceptionPos {
            received_at: Instant(t),
            shard: u32::try_from(shard).ok()?,
            number: u64::try_from(number).ok()?,
        })
    }

    /// The exception's sequence as the API names it: number and shard in one integer.
    pub fn seq(&self) -> u64 {
        (self.number << EXCEPTION_SHARD_BITS) | u64::from(self.shard)
    }
}

/// The shard and number of an exception's sequence.
pub fn split_exception_seq(seq: u64) -> (u32, u64) {
    ((seq & ((1 << EXCEPTION_SHARD_BITS) - 1)) as u32, seq >> EXCEPTION_SHARD_BITS)
}

/// A transaction of the history with its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct TxEntry {
    pub at: HistoryPos,
    pub tx: TxInput,
    pub outcome: Outcome,
    /// The partner's settlement currency, when the partner is registered.
    pub currency: Option<Currency>,
}

/// An exception of the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct ExceptionEntry {
    pub at: ExceptionPos,
    pub tx: TxInput,
    pub reason: ExceptionReason,
    pub resolution: Option<Resolution>,
    pub currency: Option<Currency>,
}

impl ExceptionEntry {
    pub fn seq(&self) -> u64 {
        self.at.seq()
    }
}

/// A page of one partner's transactions in log order (`settle reconcile`'s listing).
#[derive(Clone, Debug, PartialEq)]
pub struct ListAnswer {
    /// Each with its listing position (`index << 20 | position`).
    pub items: Vec<(u64, TxInput, Outcome)>,
    pub currency: Currency,
    pub period: Period,
    /// The last position examined: the next page starts after it.
    pub next_after: u64,
    /// The scan reached the end of the history.
    pub done: bool,
}

/// A read one shard's leader answers (peer request `Read`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShardRead {
    /// Confirms leadership and answers the index a linearizable read must see applied.
    ReadIndex,
    Partners,
    Statements {
        partner: String,
    },
    Lookup {
        id: String,
    },
    History {
        filter: TxFilter,
        before: Option<HistoryPos>,
        limit: u32,
    },
    Exceptions {
        partner: Option<String>,
        reason: Option<ExceptionReason>,
        after: Option<ExceptionPos>,
        limit: u32,
    },
    Exception {
        number: u64,
    },
    Balance {
        partner: String,
    },
    List {
        partner: String,
        from: Instant,
        to: Option<Instant>,
        after: u64,
        limit: u32,
        max_scan: u32,
    },
    /// The newest FX rate of each pair in the shard's table (new variants go last: the peer
    /// codec numbers them).
    NewestRates,
    /// Whether these archived periods may be pruned ([`crate::prune`]).
    PruneCheck {
        periods: Vec<crate::prune::ArchivedPeriod>,
        cutoff: Instant,
    },
    /// The prunable rows of the next slice of the history, from index `from` on.
    PruneScan {
        periods: Vec<crate::prune::ArchivedPeriod>,
        cutoff: Instant,
        from: u64,
    },
}

/// A transaction as it crosses the peer transport: the storage codec's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireTx {
    pub at: HistoryPos,
    pub record: Vec<u8>,
    pub currency: Option<Currency>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireException {
    pub at: ExceptionPos,
    /// The transaction record with its exception outcome.
    pub record: Vec<u8>,
    pub resolution: Option<Vec<u8>>,
    pub currency: Option<Currency>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShardAnswer {
    ReadIndex(Option<u64>),
    /// Encoded partner records.
    Partners(Vec<Vec<u8>>),
    Statements(Vec<Statement>),
    Lookup(Vec<WireTx>),
    /// Items newest first; `bound`: the last place examined when the shard stopped early.
    History {
        items: Vec<WireTx>,
        bound: Option<HistoryPos>,
    },
    /// Items oldest first; `bound` as for history.
    Exceptions {
        items: Vec<WireException>,
        bound: Option<ExceptionPos>,
    },
    Exception(Option<WireException>),
    Balance(Option<Box<Balance>>),
    Rates(Vec<FxRate>),
    List {
        items: Vec<(u64, Vec<u8>)>,
        currency: Currency,
        period: Period,
        next_after: u64,
        done: bool,
    },
    /// Understood and refused (e.g. an unknown partner); nothing to retry.
    Refused(String),
    PruneChecked,
    PruneSlice(crate::prune::PruneSlice),
}

fn storage(e: StorageError) -> ForwardError {
    ForwardError::Failed(format!("storage: {e}"))
}

fn tx_record(tx: &TxInput, outcome: &Outcome) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_tx(&mut out, tx, outcome);
    out
}

fn decode_tx(record: &[u8]) -> Result<(TxInput, Outcome), ClusterError> {
    match codec::decode_log_entry(record) {
        Ok(LogEntry::Tx { tx, outcome }) => Ok((tx, outcome)),
        Ok(_) => Err(ClusterError::Storage("a read answered a record that is not a transaction".into())),
        Err(e) => Err(ClusterError::Storage(e.to_string())),
    }
}

fn wire_exception(e: &ShardException, shard: u32, currency: Option<Currency>) -> WireException {
    let resolution = e.resolution.as_ref().map(|r| {
        let mut out = Vec::new();
        history::encode_resolution(&mut out, r);
        out
    });
    WireException {
        at: ExceptionPos { received_at: e.tx.received_at, shard, number: e.number },
        record: tx_record(&e.tx, &Outcome::Exception(e.reason)),
        resolution,
        currency,
    }
}

fn decode_exception(w: WireException) -> Result<ExceptionEntry, ClusterError> {
    let (tx, outcome) = decode_tx(&w.record)?;
    let reason =
        outcome.exception().ok_or_else(|| ClusterError::Storage("an exception without a reason".into()))?;
    let resolution = w
        .resolution
        .map(|r| history::decode_resolution(&r))
        .transpose()
        .map_err(|e| ClusterError::Storage(e.to_string()))?;
    Ok(ExceptionEntry { at: w.at, tx, reason, resolution, currency: w.currency })
}

/// A transaction a history scan found, with its place.
type ScannedTx = (HistoryPos, TxInput, Outcome);
/// A listing scan's answer: items (place and record), the last place examined, whether it
/// reached the end.
type ListScan = (Vec<(u64, Vec<u8>)>, u64, bool);

/// The leader's side of a history page, on its database.
fn scan_history(
    db: &RaftDb,
    group: GroupId,
    shard: u32,
    filter: &TxFilter,
    before: Option<HistoryPos>,
    limit: usize,
) -> Result<(Vec<ScannedTx>, Option<HistoryPos>), StorageError> {
    // The last row that may hold a transaction before the cursor (and before `received_to`).
    let before_stamp = |t: Instant, inclusive: bool| -> Result<Option<u64>, StorageError> {
        Ok(match db.history_first_after(group, t, inclusive)? {
            Some(0) => None,
            Some(first_after) => Some(first_after - 1),
            None => Some(u64::MAX),
        })
    };
    let mut start = Some(u64::MAX);
    if let Some(c) = before {
        start = if c.shard == shard {
            Some(c.index)
        } else {
            // Transactions stamped like the cursor come before it only on lower shards.
            before_stamp(c.received_at, shard > c.shard)?
        };
    }
    if let Some(to) = filter.received_to {
        start = start.min(before_stamp(to, true)?);
    }
    let Some(start) = start else { return Ok((Vec::new(), None)) };
    let mut page = Page::new(limit);
    for row in db.history(group, start, false)? {
        let (index, row) = row?;
        if filter.received_from.is_some_and(|from| row.received_at < from) {
            return Ok((page.items, None));
        }
        for rec in row.records.into_iter().rev() {
            let at = HistoryPos { received_at: row.received_at, shard, index, pos: rec.pos };
            if before.is_some_and(|c| at >= c) {
                continue;
            }
            let wanted = filter.matches(&rec.tx, &rec.outcome).then_some((at, rec.tx, rec.outcome));
            if page.offer(wanted) {
                return Ok((page.items, Some(at)));
            }
        }
    }
    Ok((page.items, None))
}

/// A shard's part of a page: it stops at `limit` matches, or after examining
/// [`SHARD_SCAN_BUDGET`] items.
struct Page<T> {
    items: Vec<T>,
    limit: usize,
    examined: usize,
}

impl<T> Page<T> {
    fn new(limit: usize) -> Page<T> {
        Page { items: Vec::new(), limit, examined: 0 }
    }

    /// Counts one examined item (kept when wanted); true when the page must end with it.
    fn offer(&mut self, wanted: Option<T>) -> bool {
        self.examined += 1;
        if let Some(item) = wanted {
            self.items.push(item);
        }
        self.items.len() >= self.limit || self.examined >= SHARD_SCAN_BUDGET
    }
}

/// The leader's side of an exception page: numbers `from..end` of its queue.
#[allow(clippy::too_many_arguments)]
fn scan_exceptions(
    db: &RaftDb,
    group: GroupId,
    shard: u32,
    partner: Option<&str>,
    reason: Option<ExceptionReason>,
    from: u64,
    end: u64,
    limit: usize,
) -> Result<(Vec<ShardException>, Option<ExceptionPos>), StorageError> {
    let mut page = Page::new(limit);
    for e in db.exceptions(group, from)? {
        let e = e?;
        if e.number >= end {
            break;
        }
        let at = ExceptionPos { received_at: e.tx.received_at, shard, number: e.number };
        let wanted = reason.is_none_or(|r| r == e.reason)
            && partner.is_none_or(|p| e.tx.partner.as_deref() == Some(p));
        if page.offer(wanted.then_some(e)) {
            return Ok((page.items, Some(at)));
        }
    }
    Ok((page.items, None))
}

/// The leader's side of a listing: the partner's transactions with `from <= occurred_at < to`
/// after listing position `after`, in log order.
#[allow(clippy::too_many_arguments)]
fn scan_list(
    db: &RaftDb,
    group: GroupId,
    partner: &str,
    from: Instant,
    to: Instant,
    after: u64,
    limit: usize,
    max_scan: usize,
) -> Result<ListScan, StorageError> {
    let mut items = Vec::new();
    let mut last = after;
    let mut examined = 0usize;
    for row in db.history(group, after >> LIST_POS_BITS, true)? {
        let (index, row) = row?;
        for rec in row.records {
            let place = (index << LIST_POS_BITS) | u64::from(rec.pos);
            if place <= after {
                continue;
            }
            last = place;
            examined += 1;
            let ours = rec.tx.partner.as_deref() == Some(partner);
            if ours && rec.tx.occurred_at >= from && rec.tx.occurred_at < to {
                items.push((place, tx_record(&rec.tx, &rec.outcome)));
            }
            if items.len() >= limit || examined >= max_scan {
                return Ok((items, last, false));
            }
        }
    }
    Ok((items, last, true))
}

/// Runs `f` on the database on a blocking thread (RocksDB reads block).
async fn on_db<T: Send + 'static>(
    db: Arc<RaftDb>,
    f: impl FnOnce(&RaftDb) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, ForwardError> {
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| ForwardError::Failed(format!("read task: {e}")))?
        .map_err(storage)
}

impl ClusterHandle {
    /// Serves `read` on this node's replica of `group`, which must lead it.
    pub(crate) async fn local_read(&self, g: &Group, read: ShardRead) -> Result<ShardAnswer, ForwardError> {
        let read_id = match g.raft.ensure_linearizable().await {
            Ok(id) => id,
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                return Err(ForwardError::NotLeader(f.leader_id))
            }
            Err(e) => return Err(ForwardError::Failed(e.to_string())),
        };
        let group = g.sm.group();
        let shard = group.saturating_sub(1);
        let db = Arc::clone(self.db());
        // What memory answers (or needs for the disk part), read under the lock.
        let applied = {
            let sm = g.sm.lock();
            let applied = sm.applied.map(|l| l.index);
            let shard_state = match &sm.kind {
                SmKind::Shard(s) => Some(s),
                SmKind::Meta(_) => None,
            };
            match (&read, shard_state) {
                (ShardRead::ReadIndex, _) => return Ok(ShardAnswer::ReadIndex(read_id.map(|l| l.index))),
                (_, None) => return Err(ForwardError::Failed(format!("group {group} is not a shard"))),
                (ShardRead::Partners, Some(s)) => {
                    let partners = s
                        .partner_list()
                        .iter()
                        .map(|p| {
                            let mut out = Vec::new();
                            codec::encode_partner(&mut out, p);
                            out
                        })
                        .collect();
                    return Ok(ShardAnswer::Partners(partners));
                }
                (ShardRead::Lookup { id }, Some(s)) => {
                    let found = s.lookup(id).map_err(ForwardError::Failed)?;
                    let items = found
                        .iter()
                        .map(|(tx, outcome)| WireTx {
                            at: HistoryPos { received_at: tx.received_at, shard, index: 0, pos: 0 },
                            record: tx_record(tx, outcome),
                            currency: tx.partner.as_deref().and_then(|p| s.currency_of(p)),
                        })
                        .collect();
                    return Ok(ShardAnswer::Lookup(items));
                }
                (ShardRead::Balance { partner }, Some(s)) => {
                    return Ok(ShardAnswer::Balance(s.balance(partner).map(Box::new)))
                }
                (ShardRead::NewestRates, Some(s)) => return Ok(ShardAnswer::Rates(s.newest_rates())),
                (ShardRead::Exception { number }, Some(s)) if *number >= s.exceptions().len() as u64 => {
                    return Ok(ShardAnswer::Exception(None))
                }
                (ShardRead::List { partner, .. }, Some(s)) if s.currency_of(partner).is_none() => {
                    return Ok(ShardAnswer::Refused(format!("unknown partner {partner:?}")))
                }
                _ => applied,
            }
        };
        if !g.sm.written().wait(applied, WRITTEN_WAIT).await {
            return Err(ForwardError::Failed(format!("group {group}: applied records not written in time")));
        }
        let currency = |partner: Option<&str>| -> Option<Currency> {
            let sm = g.sm.lock();
            match (&sm.kind, partner) {
                (SmKind::Shard(s), Some(p)) => s.currency_of(p),
                _ => None,
            }
        };
        match read {
            ShardRead::ReadIndex
            | ShardRead::Partners
            | ShardRead::Lookup { .. }
            | ShardRead::Balance { .. }
            | ShardRead::NewestRates => Err(ForwardError::Failed("answered above".into())),
            ShardRead::Statements { partner } => {
                let list = on_db(db, move |db| db.shard_statements(group, &partner)).await?;
                Ok(ShardAnswer::Statements(list))
            }
            ShardRead::PruneCheck { periods, cutoff } => {
                let checked =
                    on_db(db, move |db| crate::prune::check_periods(db, group, &periods, cutoff)).await?;
                Ok(checked.map_or_else(ShardAnswer::Refused, |()| ShardAnswer::PruneChecked))
            }
            ShardRead::PruneScan { periods, cutoff, from } => {
                let slice =
                    on_db(db, move |db| crate::prune::scan_prunable(db, group, &periods, cutoff, from))
                        .await?;
                Ok(ShardAnswer::PruneSlice(slice))
            }
            ShardRead::History { filter, before, limit } => {
                let limit = (limit as usize).clamp(1, MAX_READ_PAGE);
                let (found, bound) =
                    on_db(db, move |db| scan_history(db, group, shard, &filter, before, limit)).await?;
                let items = found
                    .into_iter()
                    .map(|(at, tx, outcome)| WireTx {
                        at,
                        record: tx_record(&tx, &outcome),
                        currency: currency(tx.partner.as_deref()),
                    })
                    .collect();
                Ok(ShardAnswer::History { items, bound })
            }
            ShardRead::Exceptions { partner, reason, after, limit } => {
                let limit = (limit as usize).clamp(1, MAX_READ_PAGE);
                let (from, end) = {
                    let sm = g.sm.lock();
                    let SmKind::Shard(s) = &sm.kind else {
                        return Err(ForwardError::Failed("not a shard".into()));
                    };
                    let slots = s.exceptions();
                    let from = match after {
                        None => 0,
                        Some(c) if c.shard == shard => c.number.saturating_add(1),
                        // Exceptions stamped like the cursor come after it only on higher shards.
                        Some(c) if shard < c.shard => {
                            slots.partition_point(|x| x.received_at <= c.received_at) as u64
                        }
                        Some(c) => slots.partition_point(|x| x.received_at < c.received_at) as u64,
                    };
                    (from, slots.len() as u64)
                };
                let (found, bound) = on_db(db, move |db| {
                    scan_exceptions(db, group, shard, partner.as_deref(), reason, from, end, limit)
                })
                .await?;
                let items = found
                    .iter()
                    .map(|e| wire_exception(e, shard, currency(e.tx.partner.as_deref())))
                    .collect();
                Ok(ShardAnswer::Exceptions { items, bound })
            }
            ShardRead::Exception { number } => {
                let found = on_db(db, move |db| db.exception(group, number)).await?;
                Ok(ShardAnswer::Exception(
                    found.map(|e| wire_exception(&e, shard, currency(e.tx.partner.as_deref()))),
                ))
            }
            ShardRead::List { partner, from, to, after, limit, max_scan } => {
                let (period, currency) = {
                    let sm = g.sm.lock();
                    let SmKind::Shard(s) = &sm.kind else {
                        return Err(ForwardError::Failed("not a shard".into()));
                    };
                    (s.period_of(&partner, from), s.currency_of(&partner))
                };
                let (Some(period), Some(currency)) = (period, currency) else {
                    return Ok(ShardAnswer::Refused("no period of the partner contains `from`".into()));
                };
                let to = to.unwrap_or(period.end);
                let (limit, max_scan) = ((limit as usize).max(1), (max_scan as usize).max(1));
                let (items, next_after, done) =
                    on_db(db, move |db| scan_list(db, group, &partner, from, to, after, limit, max_scan))
                        .await?;
                Ok(ShardAnswer::List { items, currency, period, next_after, done })
            }
        }
    }

    /// Serves `read` on `group`'s leader, wherever it is (waiting for one if there is none).
    pub(crate) async fn read_on_leader(
        &self,
        group: GroupId,
        read: ShardRead,
    ) -> Result<ShardAnswer, ClusterError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let local = self.group(group);
        let mut hint: Option<u64> = None;
        let mut n = 0usize;
        loop {
            let leader = match hint.take() {
                Some(h) => Some(h),
                None => self.leader_to_ask(local.as_deref(), n),
            };
            n += 1;
            let attempt = match (leader, &local) {
                (Some(l), Some(g)) if l == self.node_id() => self.local_read(g, read.clone()).await,
                (Some(l), _) => {
                    let req = PeerReq::Read { group, read: read.clone() };
                    match self.peers().call(l, &req, READ_TIMEOUT).await {
                        Ok(PeerResp::Read(r)) => r,
                        Ok(_) => Err(ForwardError::Failed("unexpected answer".into())),
                        Err(e) => Err(ForwardError::Failed(e.to_string())),
                    }
                }
                (None, _) => Err(ForwardError::NotLeader(None)),
            };
            match attempt {
                Ok(answer) => return Ok(answer),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(ClusterError::Unavailable(format!("group {group}: {e}")))
                }
                Err(ForwardError::NotLeader(h)) if h.is_some() && h != leader => hint = h,
                Err(_) => self.wait_for_leader_change(group, leader).await,
            }
        }
    }

    /// `read` on every listed shard's leader at once, answers by shard.
    async fn on_shards(
        &self,
        shards: Vec<u32>,
        read: impl Fn(u32) -> ShardRead,
    ) -> Result<Vec<(u32, ShardAnswer)>, ClusterError> {
        let mut tasks = tokio::task::JoinSet::new();
        for shard in shards {
            let me = self.clone();
            let r = read(shard);
            tasks.spawn(async move { (shard, me.read_on_leader(shard_group(shard), r).await) });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (shard, answer) = joined.map_err(|e| ClusterError::Storage(format!("read task: {e}")))?;
            out.push((shard, answer?));
        }
        out.sort_by_key(|(s, _)| *s);
        Ok(out)
    }

    fn all_shards(&self) -> Vec<u32> {
        (0..self.shards()).collect()
    }

    fn partner_shard(&self, partner: &str) -> u32 {
        shard_of(partner, self.shards())
    }

    /// Every registered partner with every contract version, by id.
    pub async fn partners(&self) -> Result<Vec<Partner>, ClusterError> {
        let mut out = Vec::new();
        for (_, answer) in self.on_shards(self.all_shards(), |_| ShardRead::Partners).await? {
            let ShardAnswer::Partners(list) = answer else { return Err(unexpected()) };
            for bytes in list {
                out.push(codec::decode_partner(&bytes).map_err(|e| ClusterError::Storage(e.to_string()))?);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// A consistent point-in-time copy of this member's database in `dir` (which must not
    /// exist): every group's log, vote and state records, and the node's cluster configuration.
    pub async fn checkpoint(&self, dir: std::path::PathBuf) -> Result<(), ClusterError> {
        let db = Arc::clone(self.db());
        tokio::task::spawn_blocking(move || db.checkpoint(&dir))
            .await
            .map_err(|e| ClusterError::Storage(format!("checkpoint task: {e}")))?
            .map_err(|e| ClusterError::Storage(e.to_string()))
    }

    /// A partner's balance, read linearizably on its shard's leader.
    pub async fn balance(&self, partner: &str) -> Result<Option<Balance>, ClusterError> {
        let group = shard_group(self.partner_shard(partner));
        match self.read_on_leader(group, ShardRead::Balance { partner: partner.to_string() }).await? {
            ShardAnswer::Balance(b) => Ok(b.map(|b| *b)),
            _ => Err(unexpected()),
        }
    }

    /// The newest FX rate of each pair. Rates are published to every shard, so shard 0's table
    /// stands for all of them.
    pub async fn newest_rates(&self) -> Result<Vec<FxRate>, ClusterError> {
        match self.read_on_leader(shard_group(0), ShardRead::NewestRates).await? {
            ShardAnswer::Rates(rates) => Ok(rates),
            _ => Err(unexpected()),
        }
    }

    /// Every statement issued to the partner, by period.
    pub async fn statements(&self, partner: &str) -> Result<Vec<Statement>, ClusterError> {
        let group = shard_group(self.partner_shard(partner));
        match self.read_on_leader(group, ShardRead::Statements { partner: partner.to_string() }).await? {
            ShardAnswer::Statements(list) => Ok(list),
            _ => Err(unexpected()),
        }
    }

    /// The first occurrence of an id (ids are per partner in the cluster: the earliest of the
    /// partners' occurrences, then by shard).
    pub async fn lookup(&self, id: &str) -> Result<Option<TxEntry>, ClusterError> {
        let id = id.to_string();
        let mut best: Option<TxEntry> = None;
        for (_, answer) in self.on_shards(self.all_shards(), |_| ShardRead::Lookup { id: id.clone() }).await?
        {
            let ShardAnswer::Lookup(items) = answer else { return Err(unexpected()) };
            for w in items {
                let (tx, outcome) = decode_tx(&w.record)?;
                let entry = TxEntry { at: w.at, tx, outcome, currency: w.currency };
                if best.as_ref().is_none_or(|b| entry.at < b.at) {
                    best = Some(entry);
                }
            }
        }
        Ok(best)
    }

    /// A page of the history, newest first, strictly before `before`; and the cursor of the
    /// next page when there may be more.
    pub async fn transactions(
        &self,
        filter: TxFilter,
        before: Option<HistoryPos>,
        limit: usize,
    ) -> Result<(Vec<TxEntry>, Option<HistoryPos>), ClusterError> {
        let limit = limit.clamp(1, MAX_READ_PAGE);
        let shards = match &filter.partner {
            Some(p) => vec![self.partner_shard(p)],
            None => self.all_shards(),
        };
        let read = |_| ShardRead::History { filter: filter.clone(), before, limit: limit as u32 };
        let mut bound: Option<HistoryPos> = None;
        let mut items = Vec::new();
        for (_, answer) in self.on_shards(shards, read).await? {
            let ShardAnswer::History { items: found, bound: b } = answer else { return Err(unexpected()) };
            bound = bound.max(b);
            items.extend(found);
        }
        // Every shard examined everything at or above the highest place where one stopped.
        items.retain(|w| bound.is_none_or(|b| w.at >= b));
        items.sort_by_key(|w| std::cmp::Reverse(w.at));
        let next = if items.len() >= limit {
            items.truncate(limit);
            items.last().map(|w| w.at)
        } else {
            bound
        };
        let entries = items
            .into_iter()
            .map(|w| {
                decode_tx(&w.record).map(|(tx, outcome)| TxEntry {
                    at: w.at,
                    tx,
                    outcome,
                    currency: w.currency,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((entries, next))
    }

    /// A page of the exception queue, oldest first, strictly after `after`.
    pub async fn exceptions(
        &self,
        partner: Option<String>,
        reason: Option<ExceptionReason>,
        after: Option<ExceptionPos>,
        limit: usize,
    ) -> Result<(Vec<ExceptionEntry>, Option<ExceptionPos>), ClusterError> {
        let limit = limit.clamp(1, MAX_READ_PAGE);
        let shards = match &partner {
            Some(p) => vec![self.partner_shard(p)],
            None => self.all_shards(),
        };
        let read = |_| ShardRead::Exceptions { partner: partner.clone(), reason, after, limit: limit as u32 };
        let mut bound: Option<ExceptionPos> = None;
        let mut items = Vec::new();
        for (_, answer) in self.on_shards(shards, read).await? {
            let ShardAnswer::Exceptions { items: found, bound: b } = answer else { return Err(unexpected()) };
            if let Some(b) = b {
                bound = Some(bound.map_or(b, |x| x.min(b)));
            }
            items.extend(found);
        }
        items.retain(|w| bound.is_none_or(|b| w.at <= b));
        items.sort_by_key(|w| w.at);
        let next = if items.len() >= limit {
            items.truncate(limit);
            items.last().map(|w| w.at)
        } else {
            bound
        };
        let entries = items.into_iter().map(decode_exception).collect::<Result<Vec<_>, _>>()?;
        Ok((entries, next))
    }

    /// One exception by its sequence.
    pub async fn exception(&self, seq: u64) -> Result<Option<ExceptionEntry>, ClusterError> {
        let (shard, number) = split_exception_seq(seq);
        if shard >= self.shards() {
            return Ok(None);
        }
        match self.read_on_leader(shard_group(shard), ShardRead::Exception { number }).await? {
            ShardAnswer::Exception(found) => found.map(decode_exception).transpose(),
            _ => Err(unexpected()),
        }
    }

    /// A page of one partner's transactions in log order (`settle reconcile`): those with
    /// `from <= occurred_at < to` (`to` None: the end of the partner's period containing
    /// `from`) after listing position `after`. `Rejected` for an unknown partner.
    pub async fn list_transactions(
        &self,
        partner: &str,
        from: Instant,
        to: Option<Instant>,
        after: u64,
        limit: usize,
        max_scan: usize,
    ) -> Result<ListAnswer, ClusterError> {
        let group = shard_group(self.partner_shard(partner));
        let read = ShardRead::List {
            partner: partner.to_string(),
            from,
            to,
            after,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            max_scan: u32::try_from(max_scan).unwrap_or(u32::MAX),
        };
        match self.read_on_leader(group, read).await? {
            ShardAnswer::List { items, currency, period, next_after, done } => {
                let items = items
                    .into_iter()
                    .map(|(place, record)| decode_tx(&record).map(|(tx, outcome)| (place, tx, outcome)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ListAnswer { items, currency, period, next_after, done })
            }
            ShardAnswer::Refused(why) => Err(ClusterError::Rejected(why)),
            _ => Err(unexpected()),
        }
    }
}

pub(crate) fn unexpected() -> ClusterError {
    ClusterError::Storage("a shard answered another kind of read".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let h = HistoryPos { received_at: Instant(-5), shard: 63, index: 1 << 40, pos: 8191 };
        assert_eq!(HistoryPos::parse(&h.to_cursor()), Some(h));
        let e = ExceptionPos { received_at: Instant(1_772_445_600_000_000_000), shard: 7, number: 12 };
        assert_eq!(ExceptionPos::parse(&e.to_cursor()), Some(e));
        for bad in ["", "1_2_3", "1_2_3_4_5", "a_b_c_d", "1_-2_3_4", "1__3_4"] {
            assert_eq!(HistoryPos::parse(bad), None, "{bad}");
        }
        assert_eq!(ExceptionPos::parse("1_2"), None);
        assert_eq!(split_exception_seq(e.seq()), (7, 12));
    }

    #[test]
    fn the_global_order_is_stamp_then_shard_then_log_place() {
        let at = |t: i128, shard: u32, index: u64, pos: u32| HistoryPos {
            received_at: Instant(t),
            shard,
            index,
            pos,
        };
        let mut places =
            vec![at(2, 0, 1, 0), at(1, 5, 9, 3), at(1, 5, 9, 1), at(1, 2, 100, 0), at(2, 0, 0, 7)];
        places.sort();
        assert_eq!(
            places,
            vec![at(1, 2, 100, 0), at(1, 5, 9, 1), at(1, 5, 9, 3), at(2, 0, 0, 7), at(2, 0, 1, 0)]
        );
    }

    fn tx(id: &str, partner: &str, at: i128) -> TxInput {
        let value = serde_json::json!({"id": id, "partner": partner, "kind": "sale", "amount": "1.50",
            "currency": "EUR", "occurred_at": "2026-01-02T10:00:00Z"});
        settle_core::scenario::parse_transaction(&value, "tx", Some(Instant(at))).unwrap()
    }

    /// A database with shard 1's history (group 2): entries at indexes 10.. with stamps
    /// rising every two entries, three transactions each (partners a, b, a).
    fn history_db() -> (tempfile::TempDir, RaftDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(dir.path()).unwrap();
        let bad = Outcome::Exception(ExceptionReason::UnknownCurrency);
        for i in 0..20u64 {
            let stamp = 100 + (i / 2) as i128;
            let mut log = settle_storage::TxLog::new();
            for (pos, p) in ["a", "b", "a"].iter().enumerate() {
                log.push(pos as u64, &tx(&format!("t{i}-{pos}"), p, stamp), &bad);
            }
            let op = settle_storage::RaftOp::PutHistory {
                group: 2,
                index: 10 + i,
                received_at: Instant(stamp),
                txs: log,
            };
            db.write(&[op], false).unwrap();
        }
        (dir, db)
    }

    #[test]
    fn history_pages_never_overlap_or_skip_whatever_the_limit() {
        let (_dir, db) = history_db();
        for limit in [1, 4, 7, 60, 100] {
            let mut seen = Vec::new();
            let mut before = None;
            loop {
                let (items, bound) = scan_history(&db, 2, 1, &TxFilter::default(), before, limit).unwrap();
                assert!(items.windows(2).all(|w| w[0].0 > w[1].0), "newest first");
                seen.extend(items.iter().map(|(at, tx, _)| (*at, tx.id.as_str().to_string())));
                match bound {
                    Some(b) => before = Some(b),
                    None => break,
                }
            }
            assert_eq!(seen.len(), 60, "limit {limit}");
            let mut ids: Vec<&String> = seen.iter().map(|(_, id)| id).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 60);
        }
        // A cursor of another shard with the same stamp: lower shards include it, higher do not.
        let c = HistoryPos { received_at: Instant(105), shard: 3, index: 0, pos: 0 };
        let (items, _) = scan_history(&db, 2, 1, &TxFilter::default(), Some(c), 100).unwrap();
        assert_eq!(items.first().unwrap().0.received_at, Instant(105));
        let c = HistoryPos { received_at: Instant(105), shard: 0, index: 0, pos: 0 };
        let (items, _) = scan_history(&db, 2, 1, &TxFilter::default(), Some(c), 100).unwrap();
        assert_eq!(items.first().unwrap().0.received_at, Instant(104));
        // Filters: partner and received range.
        let f = TxFilter {
            partner: Some("b".into()),
            received_from: Some(Instant(103)),
            received_to: Some(Instant(106)),
            ..TxFilter::default()
        };
        let (items, bound) = scan_history(&db, 2, 1, &f, None, 100).unwrap();
        assert_eq!(bound, None);
        assert_eq!(items.len(), 6);
        assert!(items
            .iter()
            .all(|(at, tx, _)| tx.partner.as_deref() == Some("b") && (103..106).contains(&at.received_at.0)));
    }

    #[test]
    fn listings_continue_after_their_position_in_log_order() {
        let (_dir, db) = history_db();
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let (items, next, done) =
                scan_list(&db, 2, "a", Instant(i128::MIN), Instant(i128::MAX), after, 3, 5).unwrap();
            seen.extend(items.iter().map(|(p, _)| *p));
            after = next;
            if done {
                break;
            }
        }
        assert_eq!(seen.len(), 40);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(seen[0], 10 << LIST_POS_BITS);
    }
}
