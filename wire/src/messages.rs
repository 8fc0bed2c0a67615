//! The messages of `proto/settle.proto`, written by hand with the same field numbers and types.
//! Keep the two in step: `tests/schema.rs` checks every tag against the .proto text.

/// One request, sent as one frame on its own bidirectional QUIC stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(oneof = "request::Body", tags = "2, 3, 4, 5, 6, 7, 8, 9, 20, 21")]
    pub body: Option<request::Body>,
}

pub mod request {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "2")]
        Authenticate(super::Authenticate),
        #[prost(message, tag = "3")]
        SubmitBatch(super::SubmitBatch),
        #[prost(message, tag = "4")]
        PublishRates(super::PublishRates),
        #[prost(message, tag = "5")]
        GetBalance(super::GetBalance),
        #[prost(message, tag = "6")]
        RegisterPartner(super::RegisterPartner),
        #[prost(message, tag = "7")]
        AddContractVersion(super::AddContractVersion),
        #[prost(message, tag = "8")]
        GetClusterStatus(super::GetClusterStatus),
        #[prost(message, tag = "9")]
        ClusterCommand(super::ClusterCommand),
        #[prost(message, tag = "20")]
        ListTransactions(super::ListTransactions),
        #[prost(message, tag = "21")]
        CreateCheckpoint(super::CreateCheckpoint),
    }
}

/// A membership command for a cluster member (additive in protocol version 1): JSON
/// `{"add_node":{"id":N,"peer":"HOST:PORT"}}` or `{"remove_node":{"id":N}}`. Answered with the
/// cluster's status once done.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterCommand {
    #[prost(string, tag = "1")]
    pub command_json: String,
}

/// Asks a cluster member for the cluster's status (additive in protocol version 1; a
/// standalone node answers REJECTED).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetClusterStatus {}

/// The cluster's status as JSON, in the shape of `settle cluster status --json`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterStatus {
    #[prost(string, tag = "1")]
    pub json: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Authenticate {
    #[prost(string, tag = "1")]
    pub api_key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TxKind {
    Unspecified = 0,
    Sale = 1,
    Refund = 2,
    Chargeback = 3,
    Payout = 4,
    Adjustment = 5,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Transaction {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, optional, tag = "2")]
    pub partner: Option<String>,
    #[prost(enumeration = "TxKind", tag = "3")]
    pub kind: i32,
    #[prost(string, optional, tag = "4")]
    pub amount: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub currency: Option<String>,
    #[prost(string, tag = "6")]
    pub occurred_at: String,
    #[prost(string, optional, tag = "7")]
    pub original: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub reason: Option<String>,
    #[prost(string, optional, tag = "9")]
    pub metadata_json: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SubmitBatch {
    #[prost(message, repeated, tag = "1")]
    pub transactions: Vec<Transaction>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FxRate {
    #[prost(string, tag = "1")]
    pub base: String,
    #[prost(string, tag = "2")]
    pub quote: String,
    #[prost(string, tag = "3")]
    pub rate: String,
    #[prost(string, tag = "4")]
    pub at: String,
    #[prost(string, optional, tag = "5")]
    pub source: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishRates {
    #[prost(message, repeated, tag = "1")]
    pub rates: Vec<FxRate>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetBalance {
    #[prost(string, tag = "1")]
    pub partner: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterPartner {
    #[prost(string, tag = "1")]
    pub partner_json: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddContractVersion {
    #[prost(string, tag = "1")]
    pub partner: String,
    #[prost(string, tag = "2")]
    pub version_json: String,
}

/// Operations: a partner's transactions with `occurred_at` in [from, to), by a bounded scan of
/// the node's log after `after_seq` (see `docs/protocol.md`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListTransactions {
    #[prost(string, tag = "1")]
    pub partner: String,
    #[prost(string, tag = "2")]
    pub from: String,
    #[prost(string, tag = "3")]
    pub to: String,
    #[prost(uint64, tag = "4")]
    pub after_seq: u64,
    #[prost(uint32, tag = "5")]
    pub limit: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListedTransaction {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(message, optional, tag = "2")]
    pub tx: Option<Transaction>,
    #[prost(string, tag = "3")]
    pub received_at: String,
    #[prost(message, optional, tag = "4")]
    pub result: Option<TxResult>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TransactionPage {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<ListedTransaction>,
    #[prost(uint64, tag = "2")]
    pub next_after_seq: u64,
    #[prost(bool, tag = "3")]
    pub done: bool,
    #[prost(string, tag = "4")]
    pub period_start: String,
    #[prost(string, tag = "5")]
    pub period_end: String,
}

/// Admin: a consistent RocksDB checkpoint of the node's store into `dir` (a path on the node's
/// host that must not exist yet).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateCheckpoint {
    #[prost(string, tag = "1")]
    pub dir: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointCreated {
    #[prost(string, tag = "1")]
    pub dir: String,
    #[prost(uint64, tag = "2")]
    pub last_seq: u64,
}

/// The answer to one request, as one frame on the same stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(oneof = "response::Body", tags = "2, 3, 4, 5, 6, 20, 21")]
    pub body: Option<response::Body>,
}

pub mod response {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "2")]
        SubmitResult(super::SubmitResult),
        #[prost(message, tag = "3")]
        Balance(super::Balance),
        #[prost(message, tag = "4")]
        Ok(super::OkReply),
        #[prost(message, tag = "5")]
        Error(super::ErrorReply),
        #[prost(message, tag = "6")]
        ClusterStatus(super::ClusterStatus),
        #[prost(message, tag = "20")]
        TransactionPage(super::TransactionPage),
        #[prost(message, tag = "21")]
        CheckpointCreated(super::CheckpointCreated),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SubmitResult {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<TxResult>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxResult {
    #[prost(oneof = "tx_result::Outcome", tags = "1, 2")]
    pub outcome: Option<tx_result::Outcome>,
    #[prost(bool, tag = "3")]
    pub duplicate: bool,
}

pub mod tx_result {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Outcome {
        #[prost(message, tag = "1")]
        Applied(super::Applied),
        #[prost(message, tag = "2")]
        Exception(super::Exception),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Applied {
    #[prost(string, tag = "1")]
    pub payable_after: String,
    #[prost(string, tag = "2")]
    pub amount_s: String,
    #[prost(string, tag = "3")]
    pub period_start: String,
    #[prost(string, tag = "4")]
    pub period_end: String,
    #[prost(bool, tag = "5")]
    pub late: bool,
    #[prost(string, tag = "6")]
    pub currency: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Exception {
    #[prost(string, tag = "1")]
    pub reason: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Balance {
    #[prost(string, tag = "1")]
    pub partner: String,
    #[prost(string, tag = "2")]
    pub currency: String,
    #[prost(string, tag = "3")]
    pub payable: String,
    #[prost(string, tag = "4")]
    pub open_period_start: String,
    #[prost(string, tag = "5")]
    pub open_period_end: String,
    #[prost(string, tag = "6")]
    pub preview_json: String,
}

/// The schema's `Ok` message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OkReply {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    Unspecified = 0,
    Malformed = 1,
    UnsupportedVersion = 2,
    TooLarge = 3,
    Unauthenticated = 4,
    Overloaded = 5,
    Rejected = 6,
    Internal = 7,
}

impl ErrorCode {
    /// Whether a client should retry the same request (with the same ids) after a backoff.
    /// OVERLOADED: nothing was done. INTERNAL: the outcome is unknown, and idempotency makes a
    /// retry safe.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Overloaded | ErrorCode::Internal)
    }

    /// The schema's name of the code, e.g. `OVERLOADED`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unspecified => "UNSPECIFIED",
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::Rejected => "REJECTED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// The schema's `Error` message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorReply {
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(bool, tag = "3")]
    pub retryable: bool,
}

impl ErrorReply {
    /// The code, with values this build does not know read as `Unspecified`.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::try_from(self.code).unwrap_or(ErrorCode::Unspecified)
    }
}

impl Request {
    /// A request of the current protocol version.
    pub fn new(body: request::Body) -> Request {
        Request { version: crate::PROTOCOL_VERSION, body: Some(body) }
    }
}

impl Response {
    /// A response of the current protocol version.
    pub fn new(body: response::Body) -> Response {
        Response { version: crate::PROTOCOL_VERSION, body: Some(body) }
    }

    pub fn ok() -> Response {
        Response::new(response::Body::Ok(OkReply {}))
    }

    /// An error response; `retryable` follows the code.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::new(response::Body::Error(ErrorReply {
            code: code as i32,
            message: message.into(),
            retryable: code.is_retryable(),
        }))
    }
}

impl Transaction {
    pub fn tx_kind(&self) -> TxKind {
        TxKind::try_from(self.kind).unwrap_or(TxKind::Unspecified)
    }
}
