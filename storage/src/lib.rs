//! settle-storage: RocksDB for Settle. Owns column families, key encoding, and the one place where
//! writes that lead to an acknowledgement are made durable. Knows bytes and types, not business
//! rules; must not call into the engine or the network.
