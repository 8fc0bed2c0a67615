//! Transactions as they arrive, their outcomes, and the exception reasons of the spec.

use crate::cycle::Period;
use crate::decimal::{Dec, Minor};
use crate::fx::RateUsed;
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest idempotency key, in bytes.
pub const MAX_TX_ID_BYTES: usize = 64;

/// Starts the kept text of a text field (`partner`, `currency`, `original`, `reason`) that was
/// given as another JSON type (`"partner": 5`). The field is kept, as `NON_STRING_MARK` and the
/// value's JSON text, so that a repeat still compares by content, while [`text_field`] makes sure
/// it never names anything: `"partner": 5` is not the partner `"5"`, and a number is no reason.
/// A JSON string that itself starts with the mark is kept with one more mark in front, so every
/// string, however odd, still names what it names.
pub const NON_STRING_MARK: char = '\u{0}';

/// The kept form of a text field given as the JSON string `text` (see [`NON_STRING_MARK`]).
pub fn keep_string(text: &str) -> String {
    if text.starts_with(NON_STRING_MARK) {
        format!("{NON_STRING_MARK}{text}")
    } else {
        text.to_string()
    }
}

/// The field as text, if it was given as a JSON string (see [`NON_STRING_MARK`]).
pub fn text_field(field: Option<&str>) -> Option<&str> {
    let text = field?;
    match text.strip_prefix(NON_STRING_MARK) {
        None => Some(text),
        // The JSON text of a non-string never starts with the mark; an escaped string does.
        Some(rest) => rest.starts_with(NON_STRING_MARK).then_some(rest),
    }
}

/// A client's idempotency key: 1..=64 bytes of UTF-8.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxId(String);

impl TxId {
    pub fn new(id: impl Into<String>) -> Option<TxId> {
        let id = id.into();
        (1..=MAX_TX_ID_BYTES).contains(&id.len()).then_some(TxId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for TxId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    Sale,
    Refund,
    Chargeback,
    Payout,
    Adjustment,
}

impl TxKind {
    pub fn parse(text: &str) -> Option<TxKind> {
        Some(match text {
            "sale" => TxKind::Sale,
            "refund" => TxKind::Refund,
            "chargeback" => TxKind::Chargeback,
            "payout" => TxKind::Payout,
            "adjustment" => TxKind::Adjustment,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Sale => "sale",
            TxKind::Refund => "refund",
            TxKind::Chargeback => "chargeback",
            TxKind::Payout => "payout",
            TxKind::Adjustment => "adjustment",
        }
    }
}

/// The `amount` field as received: absent, a well-formed decimal string, or anything else (kept as
/// its JSON text so that duplicates can still be compared).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AmountField {
    Missing,
    Decimal(Dec),
    Malformed(String),
}

/// A transaction as submitted (or read from a scenario), before any business check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxInput {
    pub id: TxId,
    pub partner: Option<String>,
    pub kind: TxKind,
    pub amount: AmountField,
    /// The currency code as given; `None` when absent or not a string.
    pub currency: Option<String>,
    pub occurred_at: Instant,
    pub received_at: Instant,
    pub original: Option<String>,
    pub reason: Option<String>,
    /// Any JSON object, kept as canonical JSON text (keys sorted) so it compares by value.
    pub metadata: Option<String>,
}

impl TxInput {
    /// Whether `other` has the same content as `self`, for idempotency: every field but
    /// `received_at`, amounts as numbers and instants as instants (both are normalised on input).
    pub fn same_content(&self, other: &TxInput) -> bool {
        self.id == other.id
            && self.partner == other.partner
            && self.kind == other.kind
            && self.amount == other.amount
            && self.currency == other.currency
            && self.occurred_at == other.occurred_at
            && self.original == other.original
            && self.reason == other.reason
            && self.metadata == other.metadata
    }
}

/// Why a transaction could not be settled automatically. The order of the variants is the order
/// in which the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionReason {
    DuplicateConflict,
    UnknownPartner,
    UnknownCurrency,
    InvalidAmount,
    FutureTimestamp,
    InvalidAdjustment,
    UnknownOriginal,
    InvalidCurrency,
    RefundExceedsOriginal,
    FxUnavailable,
    FxStale,
    InsufficientBalance,
}

impl ExceptionReason {
    pub const ALL: [ExceptionReason; 12] = [
        ExceptionReason::DuplicateConflict,
        ExceptionReason::UnknownPartner,
        ExceptionReason::UnknownCurrency,
        ExceptionReason::InvalidAmount,
        ExceptionReason::FutureTimestamp,
        ExceptionReason::InvalidAdjustment,
        ExceptionReason::UnknownOriginal,
        ExceptionReason::InvalidCurrency,
        ExceptionReason::RefundExceedsOriginal,
        ExceptionReason::FxUnavailable,
        ExceptionReason::FxStale,
        ExceptionReason::InsufficientBalance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionReason::DuplicateConflict => "duplicate_conflict",
            ExceptionReason::UnknownPartner => "unknown_partner",
            ExceptionReason::UnknownCurrency => "unknown_currency",
            ExceptionReason::InvalidAmount => "invalid_amount",
            ExceptionReason::FutureTimestamp => "future_timestamp",
            ExceptionReason::InvalidAdjustment => "invalid_adjustment",
            ExceptionReason::UnknownOriginal => "unknown_original",
            ExceptionReason::InvalidCurrency => "invalid_currency",
            ExceptionReason::RefundExceedsOriginal => "refund_exceeds_original",
            ExceptionReason::FxUnavailable => "fx_unavailable",
            ExceptionReason::FxStale => "fx_stale",
            ExceptionReason::InsufficientBalance => "insufficient_balance",
        }
    }

    pub fn parse(text: &str) -> Option<ExceptionReason> {
        ExceptionReason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for ExceptionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What applying a transaction did. Business rejections are values, never errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied(Applied),
    Exception(ExceptionReason),
}

impl Outcome {
    pub fn is_applied(&self) -> bool {
        matches!(self, Outcome::Applied(_))
    }

    pub fn exception(&self) -> Option<ExceptionReason> {
        match self {
            Outcome::Exception(r) => Some(*r),
            Outcome::Applied(_) => None,
        }
    }
}

/// The effect of an applied transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The period the transaction was assigned to.
    pub period: Period,
    pub late: bool,
    /// The amount in the settlement currency that moved (A_S for a sale, the reversal for a
    /// refund or chargeback, the amount for a payout or adjustment).
    pub amount_s: Minor,
    /// The partner's payable right after this transaction.
    pub payable_after: Minor,
    /// Boxed: most transactions have none, and the outcome is kept for every id.
    pub rate: Option<Box<RateUsed>>,
}

/// The result of submitting a transaction: its outcome, and whether it was a repeat of an id
/// already seen (then the outcome is the first one, and nothing changed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxResult {
    pub outcome: Outcome,
    pub duplicate: bool,
}
