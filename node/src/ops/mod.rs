//! Operator subcommands of the `settle` binary that talk to a running node as a client:
//! `settle import` (partner files through a mapping) and `settle reconcile` (a partner's report
//! against the node's records, with a dispute journal), `settle backup` / `settle restore`,
//! `settle archive` (closed periods to compressed files, read-only from a backup). Each owns its argument parsing, output and
//! exit codes; none touches the engine's internals.

pub mod archive;
pub mod backup;
pub mod import;
pub mod reconcile;
pub mod target;
