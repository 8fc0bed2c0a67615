//! Framing: every message travels as a 4-byte big-endian length prefix followed by that many bytes
//! of protobuf. One request frame and one response frame per bidirectional QUIC stream.

use crate::messages::{request, ErrorCode, Request, Response};
use prost::Message;
use thiserror::Error;

/// The protocol version this build speaks (field 1 of every Request and Response).
pub const PROTOCOL_VERSION: u32 = 1;

/// The TLS ALPN protocol id of version 1 of the protocol.
pub const ALPN: &[u8] = b"settle/1";

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Largest frame body, in bytes. A full batch of `MAX_BATCH_TXS` transactions with typical ids
/// and metadata takes well under this; anything larger is refused before it is read.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Most transactions in one SubmitBatch.
pub const MAX_BATCH_TXS: usize = 8192;

/// Most rates in one PublishRates.
pub const MAX_RATES_PER_REQUEST: usize = 8192;

/// Most items in one TransactionPage (ListTransactions.limit).
pub const MAX_LIST_ITEMS: usize = 2000;

/// Most log entries one ListTransactions reads before answering (bounds the work per request).
pub const MAX_LIST_SCAN: usize = 100_000;

/// Encoded size a TransactionPage stops growing at, well inside MAX_FRAME_BYTES.
pub const MAX_LIST_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// Why bytes could not be turned into a message (or a message into a frame).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("frame truncated: {needed} bytes needed, {have} present")]
    Truncated { needed: usize, have: usize },
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("{extra} bytes follow the frame")]
    TrailingBytes { extra: usize },
    #[error("not a valid protobuf message: {0}")]
    Decode(String),
    #[error("protocol version {got} is not supported (this node speaks {supported})")]
    UnsupportedVersion { got: u32, supported: u32 },
    #[error("the message has no body")]
    MissingBody,
    #[error("batch of {count} transactions exceeds the limit of {max}")]
    TooManyItems { count: usize, max: usize },
    #[error("a batch needs at least one transaction")]
    EmptyBatch,
}

impl WireError {
    /// The error code a node answers with for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::TooLarge { .. } | WireError::TooManyItems { .. } => ErrorCode::TooLarge,
            WireError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            WireError::Truncated { .. }
            | WireError::TrailingBytes { .. }
            | WireError::Decode(_)
            | WireError::MissingBody
            | WireError::EmptyBatch => ErrorCode::Malformed,
        }
    }
}

/// Encodes `message` as one frame (length prefix + body).
pub fn encode_frame(message: &impl Message) -> Result<Vec<u8>, WireError> {
    let len = message.encoded_len();
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge { len, max: MAX_FRAME_BYTES });
    }
    let prefix = u32::try_from(len).map_err(|_| WireError::TooLarge { len, max: MAX_FRAME_BYTES })?;
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + len);
    out.extend_from_slice(&prefix.to_be_bytes());
    message.encode(&mut out).map_err(|e| WireError::Decode(e.to_string()))?;
    Ok(out)
}

/// The body length announced by a frame header, refused when above `MAX_FRAME_BYTES` so that a
/// reader never allocates for an oversized frame.
pub fn frame_body_len(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, WireError> {
    let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge { len, max: MAX_FRAME_BYTES });
    }
    Ok(len)
}

/// Splits one frame off the front of `buf`: `Ok(Some((body, consumed)))` when a whole frame is
/// present, `Ok(None)` when more bytes are needed, an error when the header announces an
/// oversized frame.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h.copy_from_slice(header);
    let len = frame_body_len(h)?;
    let end = FRAME_HEADER_BYTES + len;
    Ok(buf.get(FRAME_HEADER_BYTES..end).map(|body| (body, end)))
}

/// The body of exactly one whole frame (header + body, nothing after it).
pub fn whole_frame_body(frame: &[u8]) -> Result<&[u8], WireError> {
    match split_frame(frame)? {
        None => {
            let needed = match frame.get(..FRAME_HEADER_BYTES) {
                Some(h) => {
                    let mut b = [0u8; FRAME_HEADER_BYTES];
                    b.copy_from_slice(h);
                    FRAME_HEADER_BYTES + frame_body_len(b)?
                }
                None => FRAME_HEADER_BYTES,
            };
            Err(WireError::Truncated { needed, have: frame.len() })
        }
        Some((body, consumed)) if consumed == frame.len() => Ok(body),
        Some((_, consumed)) => Err(WireError::TrailingBytes { extra: frame.len() - consumed }),
    }
}

/// Decodes a request body (without its length prefix) and checks what every node checks before
/// looking at the content: the version, that there is a body, and the batch limits.
pub fn decode_request(body: &[u8]) -> Result<Request, WireError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge { len: body.len(), max: MAX_FRAME_BYTES });
    }
    let request = Request::decode(body).map_err(|e| WireError::Decode(e.to_string()))?;
    if request.version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion { got: request.version, supported: PROTOCOL_VERSION });
    }
    match &request.body {
        None => return Err(WireError::MissingBody),
        Some(request::Body::SubmitBatch(batch)) => {
            if batch.transactions.is_empty() {
                return Err(WireError::EmptyBatch);
            }
            if batch.transactions.len() > MAX_BATCH_TXS {
                return Err(WireError::TooManyItems { count: batch.transactions.len(), max: MAX_BATCH_TXS });
            }
        }
        Some(request::Body::PublishRates(rates)) if rates.rates.len() > MAX_RATES_PER_REQUEST => {
            return Err(WireError::TooManyItems { count: rates.rates.len(), max: MAX_RATES_PER_REQUEST });
        }
        Some(_) => {}
    }
    Ok(request)
}

/// Decodes a response body (without its length prefix), checking the version and the body.
pub fn decode_response(body: &[u8]) -> Result<Response, WireError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge { len: body.len(), max: MAX_FRAME_BYTES });
    }
    let response = Response::decode(body).map_err(|e| WireError::Decode(e.to_string()))?;
    if response.version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion { got: response.version, supported: PROTOCOL_VERSION });
    }
    if response.body.is_none() {
        return Err(WireError::MissingBody);
    }
    Ok(response)
}

/// Decodes one whole request frame (prefix included).
pub fn decode_request_frame(frame: &[u8]) -> Result<Request, WireError> {
    decode_request(whole_frame_body(frame)?)
}

/// Decodes one whole response frame (prefix included).
pub fn decode_response_frame(frame: &[u8]) -> Result<Response, WireError> {
    decode_response(whole_frame_body(frame)?)
}
