//! settle-adapters: partner feed adapters. A declarative TOML mapping turns a partner's own file
//! (CSV with any delimiter and decimal separator, JSON lines, fixed-width) into Settle's canonical
//! transactions (`settle_wire::Transaction`, decimal strings), streamed record by record from any
//! `Read`, with idempotency keys derived from each row.
//!
//! It owns the mapping file format (documented in `docs/import-and-reconcile.md`) and the rules
//! for rows that cannot be mapped: such a row is never dropped, it becomes a transaction built to
//! be filed by the engine as an exception, with `metadata.import = {row, file, error}`. It must
//! not do I/O beyond the reader it is given (no network, no async), nor settle anything: the
//! engine's validation is the only judge of a transaction.
//!
//! It also owns the reconciliation rules (`reconcile`): a partner's report against Settle's
//! records, both given as lists by the caller.

pub mod mapping;
pub mod number;
pub mod reconcile;
pub mod record;
pub mod rows;
pub mod summary;
pub mod time;

pub use mapping::{Mapping, MappingError};
pub use record::ReadError;
pub use rows::{canonical_json, Batches, MappedRow, Rows};
pub use summary::ImportCounts;
