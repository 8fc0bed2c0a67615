//! settle-node: the live engine behind the `settle` binary. Owns configuration, the partner
//! actors and the router, the commit path to storage, and the QUIC ingress. Settlement rules stay
//! in `settle-core`; bytes on disk stay in `settle-storage`; the wire schema stays in
//! `settle-wire`.

pub mod demo;
pub mod ingress;
