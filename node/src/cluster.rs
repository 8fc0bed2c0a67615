//! The clustered node behind the ingress: `settle_cluster::ClusterHandle` implements the
//! ingress's `Backend`, so the QUIC client protocol is the same in both modes.

use crate::ingress::{Backend, BackendError, BalanceView};
use settle_cluster::{ClusterError, ClusterHandle};
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, FxRate, Partner, TxInput};

impl From<ClusterError> for BackendError {
    fn from(e: ClusterError) -> BackendError {
        match e {
            // The outcome is unknown: the client retries (with the same ids) here or elsewhere.
            ClusterError::Unavailable(m) => BackendError::Stopped(m),
            ClusterError::Rejected(m) => BackendError::Rejected(m),
            other @ (ClusterError::Storage(_) | ClusterError::Startup(_)) => {
                BackendError::Internal(other.to_string())
            }
        }
    }
}

impl Backend for ClusterHandle {
    async fn submit(&self, txs: Vec<TxInput>) -> Result<Vec<TxResult>, BackendError> {
        Ok(ClusterHandle::submit(self, txs).await?)
    }

    async fn publish_rates(&self, rates: Vec<FxRate>) -> Result<(), BackendError> {
        if let Some(bad) = rates.iter().find(|r| r.rate.mantissa <= 0) {
            return Err(BackendError::Rejected(format!(
                "rate {}->{} must be positive",
                bad.base.code(),
                bad.quote.code()
            )));
        }
        if rates.len() > crate::engine::MAX_RATES_PER_PUBLICATION {
            return Err(BackendError::Rejected(format!(
                "at most {} rates at once",
                crate::engine::MAX_RATES_PER_PUBLICATION
            )));
        }
        if rates.is_empty() {
            return Ok(());
        }
        Ok(ClusterHandle::publish_rates(self, rates).await?)
    }

    async fn balance(&self, partner: &str) -> Result<Option<BalanceView>, BackendError> {
        let balance = ClusterHandle::balance(self, partner).await?;
        Ok(balance.map(|b| BalanceView {
            partner: b.partner,
            currency: b.currency,
            payable: b.payable,
            open_period: b.open_period,
            preview: b.preview,
        }))
    }

    async fn register_partner(&self, partner: Partner) -> Result<(), BackendError> {
        Ok(ClusterHandle::register_partner(self, partner).await?)
    }

    async fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> Result<(), BackendError> {
        Ok(ClusterHandle::add_contract_version(self, partner, version).await?)
    }

    async fn list_transactions(
        &self,
        query: crate::engine::ListQuery,
    ) -> Result<crate::engine::ListPage, BackendError> {
        let page = ClusterHandle::list_transactions(
            self,
            &query.partner,
            query.from,
            query.to,
            query.after_seq,
            query.limit,
            query.max_scan,
        )
        .await?;
        Ok(crate::engine::ListPage {
            items: page.items,
            currency: page.currency,
            next_after_seq: page.next_after,
            done: page.done,
            period: page.period,
        })
    }

    /// A member's checkpoint holds its whole raft database; it names no single log sequence.
    async fn checkpoint(&self, dir: std::path::PathBuf) -> Result<Option<u64>, BackendError> {
        ClusterHandle::checkpoint(self, dir).await?;
        Ok(None)
    }

    async fn cluster_status(&self) -> Result<Option<String>, BackendError> {
        Ok(Some(ClusterHandle::cluster_status(self).await.to_string()))
    }

    async fn cluster_command(&self, command_json: &str) -> Result<Option<String>, BackendError> {
        let command: serde_json::Value = serde_json::from_str(command_json)
            .map_err(|e| BackendError::Rejected(format!("cluster command: {e}")))?;
        let id = |v: &serde_json::Value| {
            v["id"]
                .as_u64()
                .ok_or_else(|| BackendError::Rejected("cluster command: \"id\" must be a number".into()))
        };
        if let Some(add) = command.get("add_node") {
            let peer = add["peer"]
                .as_str()
                .ok_or_else(|| BackendError::Rejected("add_node: \"peer\" must be HOST:PORT".into()))?;
            ClusterHandle::add_node(self, id(add)?, peer.to_string()).await?;
        } else if let Some(remove) = command.get("remove_node") {
            ClusterHandle::remove_node(self, id(remove)?).await?;
        } else {
            return Err(BackendError::Rejected("cluster command: expected add_node or remove_node".into()));
        }
        Ok(Some(ClusterHandle::cluster_status(self).await.to_string()))
    }
}
