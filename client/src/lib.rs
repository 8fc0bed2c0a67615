//! settle-client: connects to a Settle node over QUIC, authenticates, submits batches and retries
//! with the same idempotency keys. Knows the wire schema, not the engine's internals.
