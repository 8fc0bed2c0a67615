//! settle-wire: the wire schema between platforms and Settle nodes (protobuf messages, framed,
//! versioned). Pure encoding and decoding; no I/O and no settlement rules.
//!
//! It owns `proto/settle.proto` (THE documented schema, see `docs/protocol.md`), the hand-written
//! prost structs that match it tag for tag (so that no `protoc` is needed at build time), the frame
//! codec (4-byte big-endian length prefix + message) and the protocol's named limits. It must not
//! touch sockets, the engine, or `settle-core`: turning wire messages into transactions is the
//! node's job, and the client only moves these messages.
//!
//! Rust names differ from the schema's in two places only, to avoid shadowing the prelude: the
//! schema's `Ok` message is [`OkReply`] and its `Error` message is [`ErrorReply`].
//!
//! Decoding never panics: every malformed, truncated, oversized or unknown-version input is a
//! [`WireError`].

mod frame;
mod messages;

pub use frame::{
    decode_request, decode_request_frame, decode_response, decode_response_frame, encode_frame,
    frame_body_len, split_frame, whole_frame_body, WireError, ALPN, FRAME_HEADER_BYTES, MAX_BATCH_TXS,
    MAX_FRAME_BYTES, MAX_LIST_ITEMS, MAX_LIST_PAGE_BYTES, MAX_LIST_SCAN, MAX_RATES_PER_REQUEST,
    PROTOCOL_VERSION,
};
pub use messages::*;

/// The schema's text, for tools that want to print or ship it.
pub const PROTO_SCHEMA: &str = include_str!("../proto/settle.proto");
