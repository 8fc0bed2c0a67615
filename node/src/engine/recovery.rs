//! Recovery: rebuilds every account, the FX table and the idempotency indexes by replaying the
//! durable log through the same code the live engine runs, in log order. Every replayed outcome
//! must equal the one logged (and acknowledged); any difference refuses the start.

use super::account::AccountCell;
use super::router::{Routed, Router};
use super::sequencer::check_partner;
use super::EngineError;
use settle_core::{FxTable, Instant, Span};
use settle_storage::{LogEntry, StorageError, Store};

#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) router: Router,
    pub(crate) cells: Vec<AccountCell>,
    pub(crate) fx: FxTable,
    pub(crate) next_seq: u64,
    pub(crate) last_stamp: Instant,
}

/// Replays the log, then makes sure the log states `fx_max_age` (the configured one) before
/// anything new is sequenced.
pub(crate) fn recover_and_pin(
    store: &Store,
    fx_max_age: Span,
    hash_seed: u64,
) -> Result<Recovered, EngineError> {
    let (mut recovered, logged) = recover(store, fx_max_age, hash_seed)?;
    if logged != Some(fx_max_age) {
        let mut batch = store.batch()?;
        batch.append_fx_max_age(recovered.next_seq, fx_max_age);
        store.commit(batch)?;
        recovered.next_seq += 1;
    }
    Ok(recovered)
}

/// Log entries decoded per message from the reader thread to the replaying one.
const RECOVERY_CHUNK: usize = 4096;
/// Chunks the reader may run ahead.
const RECOVERY_READ_AHEAD: usize = 4;

/// The state being rebuilt.
struct Replay {
    hash_seed: u64,
    default_fx_max_age: Span,
    logged_fx_max_age: Option<Span>,
    router: Router,
    cells: Vec<AccountCell>,
    fx: FxTable,
    next_seq: u64,
    last_stamp: Instant,
    /// Statements were stored with the entries that produced them; replay only re-derives state.
    scratch: Vec<settle_core::Statement>,
}

impl Replay {
    fn entry(&mut self, seq: u64, entry: LogEntry) -> Result<(), EngineError> {
        let fail = |what: String| EngineError::Recovery(format!("log entry {seq}: {what}"));
        self.next_seq = seq + 1;
        match entry {
            LogEntry::Partner(partner) => {
                check_partner(&self.router, &partner).map_err(fail)?;
                let cell = AccountCell::open(partner, self.cells.len(), self.hash_seed).map_err(fail)?;
                self.router.add_partner(cell.account.id());
                self.cells.push(cell);
            }
            LogEntry::ContractVersion { partner, version } => {
                let cell =
                    self.router
                        .partner_index(&partner)
                        .and_then(|i| self.cells.get_mut(i as usize))
                        .ok_or_else(|| fail(format!("contract version for unknown partner {partner:?}")))?;
                cell.account.add_contract_version(version).map_err(|e| fail(e.to_string()))?;
            }
            LogEntry::Rates(rates) => {
                for rate in rates {
                    self.fx.insert(rate);
                }
            }
            LogEntry::FxMaxAge(span) => self.logged_fx_max_age = Some(span),
            LogEntry::Tick(at) => {
                self.last_stamp = self.last_stamp.max(at);
                for cell in &mut self.cells {
                    cell.account.close_due(at, &mut self.scratch);
                }
                self.scratch.clear();
            }
            LogEntry::Tx { tx, outcome } => {
                self.last_stamp = self.last_stamp.max(tx.received_at);
                let fx_max_age = self.logged_fx_max_age.unwrap_or(self.default_fx_max_age);
                let result = match self.router.route(tx, &mut |_, _| {}) {
                    Routed::Account(account, tx) => {
                        let cell = self
                            .cells
                            .get_mut(account as usize)
                            .ok_or_else(|| fail("routed to a missing account".into()))?;
                        cell.apply(seq, &tx, &self.fx, fx_max_age, None, &mut self.scratch)
                    }
                    Routed::Answered(result) => result,
                };
                self.scratch.clear();
                if result.duplicate || result.outcome != outcome {
                    return Err(fail(format!(
                        "replay gives {:?}{}, the log says {outcome:?}",
                        result.outcome,
                        if result.duplicate { " (as a repeat)" } else { "" }
                    )));
                }
            }
        }
        Ok(())
    }
}

type Chunk = Result<Vec<(u64, LogEntry)>, StorageError>;

/// Reads and decodes the log on its own thread, in chunks, while the caller replays.
fn read_log(store: &Store, chunks: std::sync::mpsc::SyncSender<Chunk>) {
    let entries = match store.log_from(0) {
        Ok(entries) => entries,
        Err(e) => {
            let _ = chunks.send(Err(e));
            return;
        }
    };
    let mut chunk = Vec::with_capacity(RECOVERY_CHUNK);
    for item in entries {
        match item {
            Ok(entry) => {
                chunk.push(entry);
                if chunk.len() == RECOVERY_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(RECOVERY_CHUNK));
                    if chunks.send(Ok(full)).is_err() {
                        return; // the replay stopped
                    }
                }
            }
            Err(e) => {
                let _ = chunks.send(Err(e));
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.send(Ok(chunk));
    }
}

/// Replays the log; also returns the last logged `fx_max_age`. Before any is logged (never
/// the case for a log this build wrote) `default_fx_max_age` applies. Reading and decoding run
/// on a second thread, ahead of the replay.
fn recover(
    store: &Store,
    default_fx_max_age: Span,
    hash_seed: u64,
) -> Result<(Recovered, Option<Span>), EngineError> {
    let mut replay = Replay {
        hash_seed,
        default_fx_max_age,
        logged_fx_max_age: None,
        router: Router::new(hash_seed),
        cells: Vec::new(),
        fx: FxTable::new(),
        next_seq: 0,
        last_stamp: Instant::MIN,
        scratch: Vec::new(),
    };
    std::thread::scope(|scope| {
        let (sender, chunks) = std::sync::mpsc::sync_channel(RECOVERY_READ_AHEAD);
        scope.spawn(move || read_log(store, sender));
        for chunk in chunks {
            for (seq, entry) in chunk? {
                replay.entry(seq, entry)?;
            }
        }
        Ok::<(), EngineError>(())
    })?;
    let Replay { router, cells, fx, next_seq, last_stamp, logged_fx_max_age, .. } = replay;
    Ok((Recovered { router, cells, fx, next_seq, last_stamp }, logged_fx_max_age))
}
