//! An in-memory backend over one `settle_core::Ledger`: the same settlement rules as the engine,
//! without storage. It is NOT durable (an ack does not survive a restart), so it serves only
//! protocol tests of the ingress that do not need durability; nodes run the engine.

use super::backend::{Backend, BackendError, BalanceView};
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, FxRate, Instant, Ledger, Partner, Span, TxInput};
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Clone, Debug)]
pub struct MemoryBackend {
    ledger: Arc<Mutex<Ledger>>,
}

impl MemoryBackend {
    pub fn new(fx_max_age: Span, hash_seed: u64) -> MemoryBackend {
        MemoryBackend { ledger: Arc::new(Mutex::new(Ledger::new(fx_max_age, hash_seed))) }
    }
}

fn now() -> Instant {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    Instant::from_unix_nanos(i128::try_from(nanos).unwrap_or(0))
}

impl Backend for MemoryBackend {
    async fn submit(&self, txs: Vec<TxInput>) -> Result<Vec<TxResult>, BackendError> {
        let mut ledger = self.ledger.lock().await;
        let mut statements = Vec::new();
        let at = now();
        Ok(txs
            .into_iter()
            .map(|mut tx| {
                tx.received_at = at;
                ledger.apply(tx, at, &mut statements)
            })
            .collect())
    }

    async fn publish_rates(&self, rates: Vec<FxRate>) -> Result<(), BackendError> {
        let mut ledger = self.ledger.lock().await;
        for rate in rates {
            ledger.add_rate(rate);
        }
        Ok(())
    }

    async fn balance(&self, partner: &str) -> Result<Option<BalanceView>, BackendError> {
        let ledger = self.ledger.lock().await;
        Ok(ledger.account(partner).map(|a| BalanceView {
            partner: a.id().to_string(),
            currency: a.currency(),
            payable: a.payable(),
            open_period: a.next_to_close(),
            preview: a.preview(),
        }))
    }

    async fn register_partner(&self, partner: Partner) -> Result<(), BackendError> {
        let mut ledger = self.ledger.lock().await;
        ledger.add_partner(partner).map_err(|e| BackendError::Rejected(e.to_string()))
    }

    async fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> Result<(), BackendError> {
        let mut ledger = self.ledger.lock().await;
        match ledger.account_mut(partner) {
            None => Err(BackendError::Rejected(format!("unknown partner {partner:?}"))),
            Some(a) => a.add_contract_version(version).map_err(|e| BackendError::Rejected(e.to_string())),
        }
    }
}
