//! settle-node: the live engine behind the `settle` binary. Owns configuration, the partner
//! actors and the router, the commit path to storage, and the QUIC ingress. Settlement rules stay
//! in `settle-core`; bytes on disk stay in `settle-storage` (this crate never builds a key or
//! writes to RocksDB except through `settle_storage::Store::commit`); the wire schema stays in
//! `settle-wire`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod cluster;
pub mod cluster_api;
pub mod demo;
pub mod engine;
pub mod ingress;
