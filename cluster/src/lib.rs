//! settle-cluster: Settle as a cluster. Owns the multi-Raft layer (openraft): the metadata group
//! (node registry, placement) and the shard groups that replicate partner accounts, their log
//! and state machine on the node's RocksDB (through `settle-storage`, which builds every key),
//! the QUIC transport between nodes, and routing by partner to a shard's leader. Also owns the
//! account cell (`account`, `ids`) that the standalone engine and every shard replica apply
//! transactions through. Settlement rules stay in `settle-core`; must not depend on the node
//! binary, its ingress or the wire schema.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
// openraft's storage traits fix `StorageError` (224 bytes) as the error type; the helpers that
// build it return it as the traits do.
#![allow(clippy::result_large_err)]

pub mod account;
pub mod control;
pub mod ids;
pub mod log_store;
pub mod meta;
pub mod node;
pub mod observe;
pub mod prune;
pub mod raft_net;
pub mod reads;
pub mod removal;
pub mod resolve;
pub mod shard;
pub mod snapshot;
pub mod state_machine;
pub mod transport;
pub mod types;
pub mod watermark;
pub mod writer;

pub use node::{ClusterError, ClusterHandle, ClusterOptions};
pub use transport::PeerTls;
