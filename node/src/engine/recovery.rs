//! Recovery: rebuilds every account, the FX table and the idempotency indexes by replaying the
//! durable log through the same code the live engine runs, in log order. Every replayed outcome
//! must equal the one logged (and acknowledged); any difference refuses the start.

use super::account::AccountCell;
use super::router::{Routed, Router};
use super::sequencer::check_partner;
use super::EngineError;
use settle_core::{FxTable, Instant, Span};
use settle_storage::{LogEntry, Store};

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

/// Replays the log; also returns the last logged `fx_max_age`. Before any is logged (never
/// the case for a log this build wrote) `default_fx_max_age` applies.
fn recover(
    store: &Store,
    default_fx_max_age: Span,
    hash_seed: u64,
) -> Result<(Recovered, Option<Span>), EngineError> {
    let mut logged_fx_max_age = None;
    let mut router = Router::new(hash_seed);
    let mut cells: Vec<AccountCell> = Vec::new();
    let mut fx = FxTable::new();
    let mut next_seq = 0;
    let mut last_stamp = Instant::MIN;
    // Statements were stored with the entries that produced them; replay only re-derives state.
    let mut scratch = Vec::new();
    for item in store.log_from(0)? {
        let (seq, entry) = item?;
        let fail = |what: String| EngineError::Recovery(format!("log entry {seq}: {what}"));
        next_seq = seq + 1;
        match entry {
            LogEntry::Partner(partner) => {
                check_partner(&router, &partner).map_err(fail)?;
                let cell = AccountCell::open(partner, cells.len(), hash_seed).map_err(fail)?;
                router.add_partner(cell.account.id());
                cells.push(cell);
            }
            LogEntry::ContractVersion { partner, version } => {
                let cell = router
                    .partner_index(&partner)
                    .and_then(|i| cells.get_mut(i as usize))
                    .ok_or_else(|| fail(format!("contract version for unknown partner {partner:?}")))?;
                cell.account.add_contract_version(version).map_err(|e| fail(e.to_string()))?;
            }
            LogEntry::Rates(rates) => {
                for rate in rates {
                    fx.insert(rate);
                }
            }
            LogEntry::FxMaxAge(span) => logged_fx_max_age = Some(span),
            LogEntry::Tick(at) => {
                last_stamp = last_stamp.max(at);
                for cell in &mut cells {
                    cell.account.close_due(at, &mut scratch);
                }
                scratch.clear();
            }
            LogEntry::Tx { tx, outcome } => {
                last_stamp = last_stamp.max(tx.received_at);
                let result = match router.route(tx, &mut |_, _, _| {}) {
                    Routed::Account(account, tx) => {
                        let cell = cells
                            .get_mut(account as usize)
                            .ok_or_else(|| fail("routed to a missing account".into()))?;
                        cell.apply(
                            seq,
                            tx,
                            &fx,
                            logged_fx_max_age.unwrap_or(default_fx_max_age),
                            None,
                            &mut scratch,
                        )
                    }
                    Routed::Answered(result) => result,
                };
                scratch.clear();
                if result.duplicate || result.outcome != outcome {
                    return Err(fail(format!(
                        "replay gives {:?}{}, the log says {outcome:?}",
                        result.outcome,
                        if result.duplicate { " (as a repeat)" } else { "" }
                    )));
                }
            }
        }
    }
    Ok((Recovered { router, cells, fx, next_seq, last_stamp }, logged_fx_max_age))
}
