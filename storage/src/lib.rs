//! settle-storage: RocksDB for Settle. Owns column families, key encoding (all of it in
//! [`keys`]), value encodings ([`codec`]), and the one place where writes that lead to an
//! acknowledgement are made durable ([`Store::commit`]). Knows bytes and types, not business
//! rules; must not call into the engine or the network, and never decides an outcome.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod codec;
mod control;
pub mod history;
pub mod keys;
mod raft_db;
mod raft_reads;
mod store;

pub use codec::{AccountSummary, CodecError, ExceptionRecord, LogEntry};
pub use control::{ControlRecord, ControlWrite, ReverseLogIter};
pub use history::{HistoryRecord, HistoryRow, Resolution, ResolutionAction};
pub use keys::RaftStateKey;
pub use raft_db::{GroupRow, RaftDb, RaftOp, OLDEST_RAFT_FORMAT_VERSION, RAFT_FORMAT_VERSION};
pub use raft_reads::{ControlRow, ExceptionIter, HistoryIter, ShardException};
pub use store::{Batch, LogIter, Store, TxLog, FORMAT_VERSION};

/// Why a storage operation failed. A failed commit means nothing of its batch may be
/// acknowledged; the caller must stop rather than retry and acknowledge.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("storage format version {found} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedFormat { found: u32 },
    #[error("the database holds data but no format version; refusing to guess")]
    MissingFormatVersion,
    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),
    #[error("corrupt {cf} record at key {key}: {source}")]
    Corrupt {
        cf: &'static str,
        key: String,
        #[source]
        source: CodecError,
    },
    #[error("cannot create the data directory {0}")]
    Io(String),
    #[error("commit refused: {0}")]
    CommitRefused(String),
}
