//! Records to canonical transactions. A row that cannot be mapped still becomes a transaction,
//! built so that the engine's own validation is sure to file it as an exception (see
//! `docs/import-and-reconcile.md`, "Rows that cannot be mapped"), with
//! `metadata.import = {row, file, error}`.

use crate::mapping::{Mapping, Source};
use crate::number::{parse_amount, NumberStyle};
use crate::record::{ReadError, Record, Records, Values};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use settle_wire::{Transaction, TxKind};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;

/// The spec's longest id.
pub const MAX_ID_BYTES: usize = 64;
/// Hex digits of the content hash in a derived id (128 bits).
const DERIVED_ID_HEX: usize = 32;
/// The instant given to a row whose time cannot be read: far in the future, so the engine files
/// it as `future_timestamp` (or an earlier check's exception) and it can never be applied.
pub const UNREADABLE_TIME: &str = "9999-12-31T23:59:59Z";

/// One mapped row.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedRow {
    /// 1-based line number where the row starts in the file.
    pub row: u64,
    /// Bytes of the file read up to the end of this row (for progress).
    pub bytes_read: u64,
    pub tx: Transaction,
    /// Why the row could not be mapped; such a row is built to become an exception.
    pub error: Option<String>,
}

/// The rows of one file, streamed: at most one record is held at a time (plus 16 bytes per
/// distinct row without an id, to number identical rows apart).
pub struct Rows<R: Read> {
    mapping: Mapping,
    tz: Tz,
    style: NumberStyle,
    file: String,
    records: Records<R>,
    /// Occurrences of each derived-id content so far: the n-th identical row gets `-n`.
    seen: HashMap<[u8; 16], u32>,
}

impl<R: Read> std::fmt::Debug for Rows<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows").field("mapping", &self.mapping.name).field("file", &self.file).finish()
    }
}

impl<R: Read> Rows<R> {
    /// `file` is the name recorded in error metadata (give the base name, so that the same file
    /// imported from another directory maps identically).
    pub fn new(mapping: Mapping, input: R, file: &str) -> Result<Rows<R>, ReadError> {
        let tz = mapping.time.timezone.parse::<Tz>().unwrap_or(Tz::UTC);
        let style = NumberStyle {
            decimal_separator: mapping.amount.decimal_separator,
            thousands_separator: mapping.amount.thousands_separator,
            minor_units: mapping.amount.minor_units,
        };
        let records = Records::open(&mapping, input)?;
        Ok(Rows { mapping, tz, style, file: file.to_string(), records, seen: HashMap::new() })
    }

    fn map(&mut self, record: Record) -> MappedRow {
        let row = record.line;
        let (tx, error) = match record.values {
            Ok(values) => self.map_values(&values, row),
            Err((reason, raw)) => {
                let id = self.derived_id(&raw);
                (self.unreadable(id), Some(reason))
            }
        };
        let mut tx = tx;
        if let Some(reason) = &error {
            let mut meta = tx
                .metadata_json
                .as_deref()
                .and_then(|m| serde_json::from_str::<Map<String, Value>>(m).ok())
                .unwrap_or_default();
            meta.insert("import".into(), json!({"row": row, "file": self.file, "error": reason}));
            tx.metadata_json = Some(Value::Object(meta).to_string());
        }
        MappedRow { row, bytes_read: record.bytes_after, tx, error }
    }

    /// A record with no readable fields: constants only, no amount (so `invalid_amount` or an
    /// earlier check), and the unreadable-time instant.
    fn unreadable(&self, id: String) -> Transaction {
        let c = &self.mapping.constants;
        Transaction {
            id,
            partner: c.partner.clone(),
            kind: kind_of(c.kind.as_deref().unwrap_or("adjustment")) as i32,
            amount: None,
            currency: c.currency.clone(),
            occurred_at: UNREADABLE_TIME.into(),
            original: None,
            reason: None,
            metadata_json: None,
        }
    }

    fn derived_id(&mut self, content: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.mapping.name.as_bytes());
        hasher.update([0u8]);
        hasher.update(content.as_bytes());
        let digest = hasher.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let n = self.seen.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let hex = hex::encode(key);
        let base = format!("{}{}", self.mapping.id.hash_prefix, &hex[..DERIVED_ID_HEX]);
        if *n == 1 {
            base
        } else {
            format!("{base}-{n}")
        }
    }

    fn field(&self, values: &Values, source: &Option<Source>) -> Option<String> {
        let source = source.as_ref()?;
        let parts: Vec<&str> = source.columns().into_iter().filter_map(|c| values.get(c)).collect();
        let joined = parts.join(" ");
        let trimmed = joined.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_string())
    }

    /// Constant, else the mapped column, else the default.
    fn value(
        &self,
        values: &Values,
        source: &Option<Source>,
        constant: &Option<String>,
        default: &Option<String>,
    ) -> Option<String> {
        constant.clone().or_else(|| self.field(values, source)).or_else(|| default.clone())
    }

    fn map_values(&mut self, values: &Values, _row: u64) -> (Transaction, Option<String>) {
        let prefix = &self.mapping.id.prefix;
        let id = match self.field(values, &self.mapping.fields.id) {
            Some(raw) if prefix.len() + raw.len() <= MAX_ID_BYTES => format!("{prefix}{raw}"),
            _ => self.derived_id(&values.canonical_content()),
        };
        let m = &self.mapping;
        let f = &m.fields;
        let mut errors: Vec<String> = Vec::new();
        // Errors the engine cannot see by itself (code tables, the sign column).
        let mut hidden = false;

        let partner = self.value(values, &f.partner, &m.constants.partner, &m.defaults.partner);
        let partner =
            partner.map(|p| through_codes(p, &m.codes.partner, "partner", &mut errors, &mut hidden));
        let currency = self.value(values, &f.currency, &m.constants.currency, &m.defaults.currency);
        let currency =
            currency.map(|c| through_codes(c, &m.codes.currency, "currency", &mut errors, &mut hidden));

        let (kind, kind_failed) = self.kind(values, &mut errors);
        let (amount, amount_failed) = self.amount(values, &kind, &mut errors, &mut hidden);
        let (kind, amount) = match amount {
            Ok((kind, amount)) => (kind, Some(amount)),
            Err(raw) => (kind, raw),
        };
        let kind = if kind_failed { "adjustment".to_string() } else { kind };
        if partner.is_none() {
            errors.push("partner is missing".into());
        }
        if currency.is_none() {
            errors.push("currency is missing".into());
        }

        let occurred_at = match self.field(values, &f.occurred_at) {
            None => {
                errors.push("time is missing".into());
                UNREADABLE_TIME.to_string()
            }
            Some(raw) => match crate::time::parse_instant(&raw, &m.time.formats, self.tz) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(e);
                    UNREADABLE_TIME.to_string()
                }
            },
        };

        let original = self.field(values, &f.original).map(|o| format!("{}{o}", m.id.prefix));
        // An unknown kind travels as an adjustment without a reason: sure to be
        // `invalid_adjustment` (or an earlier check), never applied.
        let reason = if kind_failed {
            None
        } else {
            self.value(values, &f.reason, &m.constants.reason, &m.defaults.reason)
        };

        let mut meta = Map::new();
        if !m.metadata.columns.is_empty() {
            let mut source = Map::new();
            for c in &m.metadata.columns {
                if let Some(v) = values.get(c) {
                    source.insert(c.clone(), Value::String(v.to_string()));
                }
            }
            meta.insert("source".into(), Value::Object(source));
        }

        let error = (!errors.is_empty()).then(|| errors.join("; "));
        // Errors the engine would not see by itself must still keep the row from being
        // applied: its amount is sent unusable.
        let amount = if hidden && !amount_failed && !kind_failed {
            Some(amount.filter(|a| !is_spec_amount(a)).unwrap_or_default())
        } else {
            amount
        };
        let tx = Transaction {
            id,
            partner,
            kind: kind_of(&kind) as i32,
            amount,
            currency,
            occurred_at,
            original,
            reason,
            metadata_json: (!meta.is_empty()).then(|| Value::Object(meta).to_string()),
        };
        (tx, error)
    }

    /// The constant kind, else the column's through the code table (or a kind name when there
    /// is no table), else the default. An unknown kind is sent as an adjustment (see map_values).
    fn kind(&self, values: &Values, errors: &mut Vec<String>) -> (String, bool) {
        let m = &self.mapping;
        if let Some(k) = &m.constants.kind {
            return (k.clone(), false);
        }
        let mapped = match self.field(values, &m.fields.kind) {
            Some(raw) => {
                let ours = if m.codes.kind.is_empty() {
                    let lower = raw.to_ascii_lowercase();
                    crate::mapping::KINDS.contains(&lower.as_str()).then_some(lower)
                } else {
                    m.codes.kind.get(&raw).cloned()
                };
                ours.ok_or_else(|| format!("kind {raw:?} is not in codes.kind"))
            }
            None => m.defaults.kind.clone().ok_or_else(|| "kind is missing".to_string()),
        };
        match mapped {
            Ok(k) => (k, false),
            Err(e) => {
                errors.push(e);
                ("adjustment".to_string(), true)
            }
        }
    }

    /// The kind (possibly changed by the negative rule) and the canonical amount; or, when the
    /// amount cannot be read, the raw text to send as is (never a valid amount).
    #[allow(clippy::type_complexity)]
    fn amount(
        &self,
        values: &Values,
        kind: &str,
        errors: &mut Vec<String>,
        hidden: &mut bool,
    ) -> (Result<(String, String), Option<String>>, bool) {
        let m = &self.mapping;
        let f = &m.fields;
        let parsed = if f.amount.is_some() {
            match self.field(values, &f.amount) {
                None => Err(("amount is missing".to_string(), None)),
                Some(raw) => parse_amount(&raw, self.style).map_err(|e| (e, Some(raw))),
            }
        } else {
            match (self.field(values, &f.debit), self.field(values, &f.credit)) {
                (Some(d), None) => {
                    parse_amount(&d, self.style).map(|a| a.negated()).map_err(|e| (e, Some(d)))
                }
                (None, Some(c)) => parse_amount(&c, self.style).map_err(|e| (e, Some(c))),
                (None, None) => Err(("both debit and credit are blank".to_string(), None)),
                (Some(d), Some(c)) => {
                    Err((format!("both debit {d:?} and credit {c:?} are given"), Some(format!("{d}/{c}"))))
                }
            }
        };
        let mut amount = match parsed {
            Ok(a) => a,
            Err((e, raw)) => {
                errors.push(e);
                return (Err(raw.map(|r| unusable(&r))), true);
            }
        };
        if f.sign.is_some() {
            match self.field(values, &f.sign) {
                Some(s) if m.amount.debit_values.contains(&s) => amount = amount.negated(),
                Some(s) if m.amount.credit_values.contains(&s) => {}
                other => {
                    errors.push(format!(
                        "sign {:?} is neither a debit nor a credit value",
                        other.unwrap_or_default()
                    ));
                    *hidden = true;
                }
            }
        }
        let mut kind = kind.to_string();
        if amount.negative && !amount.is_zero() && kind != "adjustment" {
            match m.amount.negative.as_str() {
                "keep" => {}
                "abs" => amount = amount.negated(),
                to => {
                    kind = to.to_string();
                    amount = amount.negated();
                }
            }
        }
        (Ok((kind, amount.to_canonical())), false)
    }
}

/// A value through its code table (none: as is). A value missing from the table is kept raw and
/// marked as an error the engine cannot see.
fn through_codes(
    value: String,
    table: &std::collections::BTreeMap<String, String>,
    what: &str,
    errors: &mut Vec<String>,
    hidden: &mut bool,
) -> String {
    if table.is_empty() {
        return value;
    }
    match table.get(&value) {
        Some(ours) => ours.clone(),
        None => {
            errors.push(format!("{what} {value:?} is not in codes.{what}"));
            *hidden = true;
            value
        }
    }
}

/// The spec's amount syntax: `[-]digits[.digits]`.
pub fn is_spec_amount(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (i, f) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    !i.is_empty()
        && i.bytes().all(|b| b.is_ascii_digit())
        && f.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// A raw amount that failed our reading is sent as is, unless it happens to be valid in the
/// spec's syntax with another meaning (e.g. `12.345` under `,` decimals): then it is sent with
/// a marker, so the engine cannot read it as a different number.
fn unusable(raw: &str) -> String {
    if is_spec_amount(raw) {
        format!("{raw}?")
    } else {
        raw.to_string()
    }
}

pub fn kind_of(kind: &str) -> TxKind {
    match kind {
        "sale" => TxKind::Sale,
        "refund" => TxKind::Refund,
        "chargeback" => TxKind::Chargeback,
        "payout" => TxKind::Payout,
        _ => TxKind::Adjustment,
    }
}

impl<R: Read> Iterator for Rows<R> {
    type Item = Result<MappedRow, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.records.next_record() {
            Ok(Some(record)) => Some(Ok(self.map(record))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl<R: Read> Rows<R> {
    /// The rows in file order, in batches of at most `max_rows` rows, a batch also being cut
    /// once its transactions' encoded size reaches `max_bytes`. A read error ends the batches
    /// (the rows batched before it are not handed out: the import stops at the last whole batch).
    pub fn batches(self, max_rows: usize, max_bytes: usize) -> Batches<R> {
        Batches { rows: self, max_rows: max_rows.max(1), max_bytes, done: false }
    }
}

/// See [`Rows::batches`].
pub struct Batches<R: Read> {
    rows: Rows<R>,
    max_rows: usize,
    max_bytes: usize,
    done: bool,
}

impl<R: Read> std::fmt::Debug for Batches<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("max_rows", &self.max_rows)
            .field("max_bytes", &self.max_bytes)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Iterator for Batches<R> {
    type Item = Result<Vec<MappedRow>, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut batch = Vec::with_capacity(self.max_rows);
        let mut bytes = 0usize;
        loop {
            match self.rows.next() {
                None => {
                    self.done = true;
                    return (!batch.is_empty()).then_some(Ok(batch));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(row)) => {
                    bytes = bytes.saturating_add(prost::Message::encoded_len(&row.tx));
                    batch.push(row);
                    if batch.len() == self.max_rows || bytes >= self.max_bytes {
                        return Some(Ok(batch));
                    }
                }
            }
        }
    }
}

/// The spec's name of a kind.
pub fn kind_name(kind: TxKind) -> &'static str {
    match kind {
        TxKind::Sale => "sale",
        TxKind::Refund => "refund",
        TxKind::Chargeback => "chargeback",
        TxKind::Payout => "payout",
        TxKind::Adjustment => "adjustment",
        TxKind::Unspecified => "unspecified",
    }
}

/// The canonical JSON of a transaction (the spec's field names; metadata as an object), as
/// `settle import --dry-run` prints it.
pub fn canonical_json(tx: &Transaction) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), Value::String(tx.id.clone()));
    obj.insert("kind".into(), Value::String(kind_name(tx.tx_kind()).into()));
    for (key, v) in [
        ("partner", &tx.partner),
        ("amount", &tx.amount),
        ("currency", &tx.currency),
        ("original", &tx.original),
        ("reason", &tx.reason),
    ] {
        if let Some(v) = v {
            obj.insert(key.into(), Value::String(v.clone()));
        }
    }
    obj.insert("occurred_at".into(), Value::String(tx.occurred_at.clone()));
    if let Some(m) = &tx.metadata_json {
        if let Ok(v) = serde_json::from_str::<Value>(m) {
            obj.insert("metadata".into(), v);
        }
    }
    Value::Object(obj)
}
