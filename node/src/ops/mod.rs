//! Operator subcommands of the `settle` binary that talk to a running node as a client:
//! `settle import` (partner files through a mapping). Each owns its argument parsing, output and
//! exit codes; none touches the engine's internals.

pub mod import;
pub mod target;
