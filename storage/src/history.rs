//! Encodings of a cluster shard's read-model records: the transaction history (one row per
//! applied log entry: every transaction of the entry that was logged, with its outcome) and the
//! resolution of an exception. The exception itself is stored as a transaction record
//! ([`codec::encode_tx`] with its exception outcome). Keys are in [`crate::keys`].
//!
//! One row per entry, not per transaction: an entry carries up to thousands of transactions,
//! and one RocksDB key per transaction made memtable inserts the largest cost of the node before
//! (docs/engine-and-storage.md, "Why one record per commit").

use crate::codec::{self, bad, CodecError, LogEntry, Reader};
use crate::store::TxLog;
use settle_core::{Instant, Outcome, TxInput};

/// One logged transaction of a history row.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRecord {
    /// The transaction's position in its log entry (positions of plain repeats, which are not
    /// logged, are skipped).
    pub pos: u32,
    /// As applied: `received_at` is the entry's stamp.
    pub tx: TxInput,
    pub outcome: Outcome,
}

/// The transactions one applied log entry logged, in position order.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRow {
    /// The entry's stamp (every record's `received_at`).
    pub received_at: Instant,
    pub records: Vec<HistoryRecord>,
}

/// The value of a history row: the stamp, then the records framed as in a log record (position,
/// length, the transaction record).
pub fn encode_history_row(out: &mut Vec<u8>, received_at: Instant, txs: &TxLog) {
    codec::put_ivarint(out, received_at.0);
    for (pos, bytes) in txs.records() {
        codec::push_record_entry(out, pos, bytes);
    }
}

/// The stamp of an encoded history row, without decoding its records.
pub fn history_row_stamp(bytes: &[u8]) -> Result<Instant, CodecError> {
    Reader::new(bytes, "history row").instant()
}

pub fn decode_history_row(bytes: &[u8]) -> Result<HistoryRow, CodecError> {
    const WHAT: &str = "history row";
    let mut r = Reader::new(bytes, WHAT);
    let received_at = r.instant()?;
    let body = r.take(r.remaining())?;
    let mut records = Vec::new();
    for (pos, entry) in codec::split_record(body)? {
        let pos = u32::try_from(pos).map_err(|_| bad(WHAT, "position out of range"))?;
        match codec::decode_log_entry(entry)? {
            LogEntry::Tx { tx, outcome } => records.push(HistoryRecord { pos, tx, outcome }),
            _ => return Err(bad(WHAT, "a record is not a transaction")),
        }
    }
    Ok(HistoryRow { received_at, records })
}

/// How an exception was (or is being) resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolutionAction {
    /// Given up, with the reason.
    Reject { reason: String },
    /// Submitted again, corrected, under `tx.id`. `outcome` is `None` while the retry is claimed
    /// and not yet answered (it is then completed with the same transaction).
    Retry { tx: Box<TxInput>, outcome: Option<Outcome> },
}

/// An exception's resolution: what, by whom (`user:NAME`, `key:ID`), when.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    pub action: ResolutionAction,
    pub by: String,
    pub at: Instant,
}

const RESOLUTION_REJECT: u8 = 0;
const RESOLUTION_RETRY: u8 = 1;

pub fn encode_resolution(out: &mut Vec<u8>, r: &Resolution) {
    match &r.action {
        ResolutionAction::Reject { reason } => {
            out.push(RESOLUTION_REJECT);
            codec::put_str(out, reason);
        }
        ResolutionAction::Retry { tx, outcome } => {
            out.push(RESOLUTION_RETRY);
            codec::encode_tx_input(out, tx);
            match outcome {
                None => out.push(0),
                Some(o) => {
                    out.push(1);
                    codec::encode_outcome(out, o);
                }
            }
        }
    }
    codec::put_str(out, &r.by);
    codec::put_ivarint(out, r.at.0);
}

/// Decodes a resolution at the reader's position (it may be followed by other fields).
pub(crate) fn read_resolution(r: &mut Reader<'_>) -> Result<Resolution, CodecError> {
    let action = match r.u8()? {
        RESOLUTION_REJECT => ResolutionAction::Reject { reason: r.str()?.to_string() },
        RESOLUTION_RETRY => {
            let tx = Box::new(codec::decode_tx_input(r)?);
            let outcome = match r.u8()? {
                0 => None,
                1 => Some(codec::decode_outcome(r)?),
                t => return Err(bad(r.what, format!("outcome option tag {t}"))),
            };
            ResolutionAction::Retry { tx, outcome }
        }
        t => return Err(bad(r.what, format!("resolution tag {t}"))),
    };
    let by = r.str()?.to_string();
    let at = r.instant()?;
    Ok(Resolution { action, by, at })
}

pub fn decode_resolution(bytes: &[u8]) -> Result<Resolution, CodecError> {
    let mut r = Reader::new(bytes, "resolution");
    let resolution = read_resolution(&mut r)?;
    r.finish()?;
    Ok(resolution)
}

/// A resolution command of a shard's log: the exception's number in the shard, then the
/// resolution.
pub fn encode_resolve_command(out: &mut Vec<u8>, number: u64, r: &Resolution) {
    codec::put_ivarint(out, i128::from(number));
    encode_resolution(out, r);
}

pub fn decode_resolve_command(bytes: &[u8]) -> Result<(u64, Resolution), CodecError> {
    const WHAT: &str = "resolve command";
    let mut r = Reader::new(bytes, WHAT);
    let number = u64::try_from(r.ivarint()?).map_err(|_| bad(WHAT, "exception number"))?;
    let resolution = read_resolution(&mut r)?;
    r.finish()?;
    Ok((number, resolution))
}

#[cfg(test)]
mod tests {
    use super::*;
    use settle_core::ExceptionReason;

    fn tx(id: &str) -> TxInput {
        let value = serde_json::json!({"id": id, "partner": "p", "kind": "sale", "amount": "1.50",
            "currency": "EUR", "occurred_at": "2026-01-02T10:00:00Z"});
        settle_core::scenario::parse_transaction(&value, "tx", Some(Instant(7))).unwrap()
    }

    #[test]
    fn history_rows_round_trip_in_position_order() {
        let mut log = TxLog::new();
        let bad = Outcome::Exception(ExceptionReason::UnknownCurrency);
        log.push(4, &tx("b"), &bad);
        log.push(0, &tx("a"), &bad);
        let mut out = Vec::new();
        encode_history_row(&mut out, Instant(7), &log);
        assert_eq!(history_row_stamp(&out).unwrap(), Instant(7));
        let row = decode_history_row(&out).unwrap();
        assert_eq!(row.received_at, Instant(7));
        let ids: Vec<(u32, &str)> = row.records.iter().map(|r| (r.pos, r.tx.id.as_str())).collect();
        assert_eq!(ids, vec![(0, "a"), (4, "b")]);
        assert!(decode_history_row(&out[..out.len() - 1]).is_err());
        assert!(decode_history_row(&[]).is_err());
    }

    #[test]
    fn resolutions_and_commands_round_trip() {
        for action in [
            ResolutionAction::Reject { reason: "test data".into() },
            ResolutionAction::Retry { tx: Box::new(tx("a~1")), outcome: None },
            ResolutionAction::Retry {
                tx: Box::new(tx("a~2")),
                outcome: Some(Outcome::Exception(ExceptionReason::FxStale)),
            },
        ] {
            let r = Resolution { action, by: "user:admin".into(), at: Instant(-3) };
            let mut out = Vec::new();
            encode_resolution(&mut out, &r);
            assert_eq!(decode_resolution(&out).unwrap(), r);
            let mut cmd = Vec::new();
            encode_resolve_command(&mut cmd, 42, &r);
            assert_eq!(decode_resolve_command(&cmd).unwrap(), (42, r));
            assert!(decode_resolve_command(&cmd[..cmd.len() - 1]).is_err());
        }
    }
}
