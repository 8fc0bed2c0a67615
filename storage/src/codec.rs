//! Value encodings. Transactions, which are most of the log, use a compact binary encoding
//! (varints, no field names); rare records (partners, rates, statements) use JSON of the core
//! types, which is easy to inspect and cheap enough at their rate. Every decoder validates what
//! it reads and returns [`CodecError`] for bytes it does not understand: it never panics.

use serde::{Deserialize, Serialize};
use settle_core::contract::Contract;
use settle_core::cycle::Period;
use settle_core::fx::RateUsed;
use settle_core::tx::{Applied, TxId};
use settle_core::{
    AmountField, ContractVersion, Currency, Dec, ExceptionReason, FxRate, Instant, Minor, Outcome, Partner,
    Span, Statement, TxInput, TxKind,
};

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {detail}")]
pub struct CodecError {
    pub what: &'static str,
    pub detail: String,
}

pub(crate) fn bad(what: &'static str, detail: impl Into<String>) -> CodecError {
    CodecError { what, detail: detail.into() }
}

/// First byte of every `log` value: what kind of entry it is.
pub const LOG_TX: u8 = 1;
pub const LOG_RATES: u8 = 2;
pub const LOG_PARTNER: u8 = 3;
pub const LOG_CONTRACT_VERSION: u8 = 4;
pub const LOG_TICK: u8 = 5;
pub const LOG_FX_MAX_AGE: u8 = 6;
/// A cluster log entry: many transactions with one stamped `received_at`.
pub const LOG_TX_BATCH: u8 = 7;

/// One entry of the command log, decoded.
// Transactions are nearly every entry: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum LogEntry {
    /// A transaction with its stamped `received_at` and the outcome the engine answered.
    Tx { tx: TxInput, outcome: Outcome },
    /// An FX publication (applied in list order).
    Rates(Vec<FxRate>),
    /// A partner registration.
    Partner(Partner),
    /// A contract version added to a registered partner.
    ContractVersion { partner: String, version: ContractVersion },
    /// A period-close tick: every account closes the periods due at this instant.
    Tick(Instant),
    /// The `fx_max_age` in force for every later transaction (logged at the first start and
    /// whenever the configuration changes it, so that replay judges staleness as the live
    /// engine did).
    FxMaxAge(Span),
}

// ---------------------------------------------------------------------------------------------
// Primitive writers and a bounds-checked reader.

fn put_uvarint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i128) {
    // Zigzag: small magnitudes of either sign take few bytes.
    put_uvarint(out, ((v << 1) ^ (v >> 127)) as u128);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u128);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_dec(out: &mut Vec<u8>, d: Dec) {
    put_ivarint(out, d.mantissa);
    put_uvarint(out, u128::from(d.scale));
}

fn put_currency(out: &mut Vec<u8>, c: Currency) {
    out.extend_from_slice(c.code().as_bytes());
}

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    pub(crate) what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, at: 0, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| bad(self.what, format!("truncated at byte {}", self.at)))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn uvarint(&mut self) -> Result<u128, CodecError> {
        let mut value: u128 = 0;
        for shift in (0..128).step_by(7) {
            let byte = self.u8()?;
            value |= u128::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad(self.what, "varint too long"))
    }

    pub(crate) fn ivarint(&mut self) -> Result<i128, CodecError> {
        let z = self.uvarint()?;
        Ok(((z >> 1) as i128) ^ -((z & 1) as i128))
    }

    pub(crate) fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.uvarint()?;
        usize::try_from(n).map_err(|_| bad(self.what, "length out of range"))
    }

    /// A count of items that follow, refused above `max` (so a corrupt count cannot make the
    /// decoder reserve memory without bound).
    fn count(&mut self, max: usize) -> Result<usize, CodecError> {
        let n = self.len()?;
        if n > max {
            return Err(bad(self.what, format!("count {n} above {max}")));
        }
        Ok(n)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, CodecError> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|_| bad(self.what, "string is not UTF-8"))
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?.to_string())),
            t => Err(bad(self.what, format!("bad option tag {t}"))),
        }
    }

    fn dec(&mut self) -> Result<Dec, CodecError> {
        let mantissa = self.ivarint()?;
        let scale = u32::try_from(self.uvarint()?).map_err(|_| bad(self.what, "decimal scale"))?;
        Ok(Dec { mantissa, scale })
    }

    fn currency(&mut self) -> Result<Currency, CodecError> {
        let code = self.take(3)?;
        std::str::from_utf8(code)
            .ok()
            .and_then(Currency::from_code)
            .ok_or_else(|| bad(self.what, "unknown currency code"))
    }

    pub(crate) fn instant(&mut self) -> Result<Instant, CodecError> {
        Ok(Instant(self.ivarint()?))
    }

    fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(bad(self.what, format!("bad bool {t}"))),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn finish(&self) -> Result<(), CodecError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(bad(self.what, format!("{} trailing bytes", self.bytes.len() - self.at)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions.

fn kind_code(kind: TxKind) -> u8 {
    match kind {
        TxKind::Sale => 0,
        TxKind::Refund => 1,
        TxKind::Chargeback => 2,
        TxKind::Payout => 3,
        TxKind::Adjustment => 4,
    }
}

fn kind_from(code: u8) -> Option<TxKind> {
    Some(match code {
        0 => TxKind::Sale,
        1 => TxKind::Refund,
        2 => TxKind::Chargeback,
        3 => TxKind::Payout,
        4 => TxKind::Adjustment,
        _ => return None,
    })
}

/// The stable one-byte code of an exception reason (its position in the spec's check order).
pub fn reason_code(reason: ExceptionReason) -> u8 {
    ExceptionReason::ALL.iter().position(|r| *r == reason).map_or(u8::MAX, |i| i as u8)
}

pub fn reason_from(code: u8) -> Option<ExceptionReason> {
    ExceptionReason::ALL.get(usize::from(code)).copied()
}

/// Appends the `log` value of a transaction. Layout: tag, id length (one byte), id, then the
/// other fields; the id comes first so that [`tx_record_id`] can find it without decoding.
pub fn encode_tx(out: &mut Vec<u8>, tx: &TxInput, outcome: &Outcome) {
    out.push(LOG_TX);
    encode_tx_input(out, tx);
    encode_outcome(out, outcome);
}

/// A transaction's fields without tag or outcome: id length (one byte), id, then the rest.
pub(crate) fn encode_tx_input(out: &mut Vec<u8>, tx: &TxInput) {
    let id = tx.id.as_str();
    // TxId guarantees 1..=64 bytes.
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    put_opt_str(out, tx.partner.as_deref());
    out.push(kind_code(tx.kind));
    match &tx.amount {
        AmountField::Missing => out.push(0),
        AmountField::Decimal(d) => {
            out.push(1);
            put_dec(out, *d);
        }
        AmountField::Malformed(text) => {
            out.push(2);
            put_str(out, text);
        }
    }
    put_opt_str(out, tx.currency.as_deref());
    put_ivarint(out, tx.occurred_at.0);
    put_ivarint(out, tx.received_at.0);
    put_opt_str(out, tx.original.as_deref());
    put_opt_str(out, tx.reason.as_deref());
    put_opt_str(out, tx.metadata.as_deref());
}

pub(crate) fn encode_outcome(out: &mut Vec<u8>, outcome: &Outcome) {
    match outcome {
        Outcome::Exception(reason) => {
            out.push(0);
            out.push(reason_code(*reason));
        }
        Outcome::Applied(a) => {
            out.push(1);
            put_ivarint(out, a.period.start.0);
            put_ivarint(out, a.period.end.0);
            out.push(u8::from(a.late));
            put_ivarint(out, a.amount_s.0);
            put_ivarint(out, a.payable_after.0);
            match &a.rate {
                None => out.push(0),
                Some(r) => {
                    out.push(1);
                    put_currency(out, r.base);
                    put_currency(out, r.quote);
                    put_dec(out, r.rate);
                    put_ivarint(out, r.at.0);
                    out.push(u8::from(r.inverse));
                    put_opt_str(out, r.source.as_deref());
                }
            }
        }
    }
}

/// The id of an encoded transaction record: bytes `2..2 + len`.
pub fn tx_record_id(record: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*record.get(1)?);
    record.get(2..2 + len)
}

fn decode_tx(r: &mut Reader<'_>) -> Result<(TxInput, Outcome), CodecError> {
    let tx = decode_tx_input(r)?;
    let outcome = decode_outcome(r)?;
    Ok((tx, outcome))
}

pub(crate) fn decode_tx_input(r: &mut Reader<'_>) -> Result<TxInput, CodecError> {
    let id_len = usize::from(r.u8()?);
    let id_text = std::str::from_utf8(r.take(id_len)?).map_err(|_| bad(r.what, "id is not UTF-8"))?;
    let id = TxId::new(id_text).ok_or_else(|| bad(r.what, "id length"))?;
    let partner = r.opt_str()?;
    let kind = kind_from(r.u8()?).ok_or_else(|| bad(r.what, "kind"))?;
    let amount = match r.u8()? {
        0 => AmountField::Missing,
        1 => AmountField::Decimal(r.dec()?),
        2 => AmountField::Malformed(r.str()?.to_string()),
        t => return Err(bad(r.what, format!("amount tag {t}"))),
    };
    let currency = r.opt_str()?;
    let occurred_at = r.instant()?;
    let received_at = r.instant()?;
    let original = r.opt_str()?;
    let reason = r.opt_str()?;
    let metadata = r.opt_str()?;
    Ok(TxInput { id, partner, kind, amount, currency, occurred_at, received_at, original, reason, metadata })
}

pub(crate) fn decode_outcome(r: &mut Reader<'_>) -> Result<Outcome, CodecError> {
    let outcome = match r.u8()? {
        0 => Outcome::Exception(reason_from(r.u8()?).ok_or_else(|| bad(r.what, "exception reason"))?),
        1 => {
            let start = r.instant()?;
            let end = r.instant()?;
            let late = r.bool()?;
            let amount_s = Minor(r.ivarint()?);
            let payable_after = Minor(r.ivarint()?);
            let rate = match r.u8()? {
                0 => None,
                1 => Some(Box::new(RateUsed {
                    base: r.currency()?,
                    quote: r.currency()?,
                    rate: r.dec()?,
                    at: r.instant()?,
                    inverse: r.bool()?,
                    source: r.opt_str()?,
                })),
                t => return Err(bad(r.what, format!("rate tag {t}"))),
            };
            Outcome::Applied(Applied { period: Period { start, end }, late, amount_s, payable_after, rate })
        }
        t => return Err(bad(r.what, format!("outcome tag {t}"))),
    };
    Ok(outcome)
}

/// Most transactions one encoded batch may claim to hold (a bound on what a decoder reserves).
pub const MAX_BATCH_TXS: usize = 1 << 20;

/// A batch of transactions stamped with one `received_at` (a cluster log entry): the head (tag,
/// instant), then the list (count, each transaction's fields; their own `received_at` is
/// ignored). The two parts are separate so that a list encoded once can be stamped again.
pub fn encode_tx_batch(out: &mut Vec<u8>, received_at: Instant, txs: &[TxInput]) {
    encode_tx_batch_head(out, received_at);
    encode_tx_list(out, txs);
}

/// The head of [`encode_tx_batch`].
pub fn encode_tx_batch_head(out: &mut Vec<u8>, received_at: Instant) {
    out.push(LOG_TX_BATCH);
    put_ivarint(out, received_at.0);
}

/// The list part of [`encode_tx_batch`].
pub fn encode_tx_list(out: &mut Vec<u8>, txs: &[TxInput]) {
    put_uvarint(out, txs.len() as u128);
    for tx in txs {
        encode_tx_input(out, tx);
    }
}

/// Inverse of [`encode_tx_batch`]; every transaction gets the batch's `received_at`. Also
/// returns where the list part starts in `bytes`.
pub fn decode_tx_batch(bytes: &[u8]) -> Result<(Instant, Vec<TxInput>, usize), CodecError> {
    const WHAT: &str = "transaction batch";
    let (&tag, body) = bytes.split_first().ok_or_else(|| bad(WHAT, "empty"))?;
    if tag != LOG_TX_BATCH {
        return Err(bad(WHAT, format!("tag {tag}")));
    }
    let mut r = Reader::new(body, WHAT);
    let at = r.instant()?;
    let list_start = bytes.len() - r.remaining();
    let n = r.count(MAX_BATCH_TXS)?;
    let mut txs = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tx = decode_tx_input(&mut r)?;
        tx.received_at = at;
        txs.push(tx);
    }
    r.finish()?;
    Ok((at, txs, list_start))
}

/// The results of a batch, in order: a duplicate flag and the outcome each.
pub fn encode_tx_results(out: &mut Vec<u8>, results: &[settle_core::tx::TxResult]) {
    put_uvarint(out, results.len() as u128);
    for result in results {
        out.push(u8::from(result.duplicate));
        encode_outcome(out, &result.outcome);
    }
}

pub fn decode_tx_results(bytes: &[u8]) -> Result<Vec<settle_core::tx::TxResult>, CodecError> {
    let mut r = Reader::new(bytes, "transaction results");
    let n = r.count(MAX_BATCH_TXS)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let duplicate = r.bool()?;
        let outcome = decode_outcome(&mut r)?;
        out.push(settle_core::tx::TxResult { outcome, duplicate });
    }
    r.finish()?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Rare records, as JSON.

/// A partner as stored: its registration with every contract version given at registration.
#[derive(Serialize, Deserialize)]
struct PartnerRecord {
    id: String,
    currency: Currency,
    since: Instant,
    cycle: settle_core::Cycle,
    versions: Vec<ContractVersion>,
}

#[derive(Serialize, Deserialize)]
struct ContractVersionRecord {
    partner: String,
    version: ContractVersion,
}

fn check_currency(c: Currency, what: &'static str) -> Result<Currency, CodecError> {
    Currency::from_code(c.code()).filter(|k| *k == c).ok_or_else(|| bad(what, "unknown currency"))
}

/// Rebuilds a contract version through its validating constructor: stored bytes get no more
/// trust than input.
fn revalidate(v: ContractVersion, what: &'static str) -> Result<ContractVersion, CodecError> {
    ContractVersion::new(v.effective_from, v.shares, v.fees, v.chargeback_fee, v.period_fees)
        .map_err(|e| bad(what, e.to_string()))
}

fn json<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // Serialising these plain data types into a Vec cannot fail (no maps with non-string keys).
    let _ = serde_json::to_writer(out, value);
}

fn from_json<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &'static str) -> Result<T, CodecError> {
    serde_json::from_slice(bytes).map_err(|e| bad(what, e.to_string()))
}

pub fn encode_partner(out: &mut Vec<u8>, partner: &Partner) {
    let record = PartnerRecord {
        id: partner.id.clone(),
        currency: partner.currency,
        since: partner.since,
        cycle: partner.cycle.clone(),
        versions: partner.contract.versions().to_vec(),
    };
    json(out, &record);
}

pub fn decode_partner(bytes: &[u8]) -> Result<Partner, CodecError> {
    const WHAT: &str = "partner record";
    let record: PartnerRecord = from_json(bytes, WHAT)?;
    let versions = record.versions.into_iter().map(|v| revalidate(v, WHAT)).collect::<Result<Vec<_>, _>>()?;
    let contract = Contract::new(versions).map_err(|e| bad(WHAT, e.to_string()))?;
    Ok(Partner {
        id: record.id,
        currency: check_currency(record.currency, WHAT)?,
        since: record.since,
        cycle: record.cycle,
        contract,
    })
}

pub fn encode_contract_version(out: &mut Vec<u8>, partner: &str, version: &ContractVersion) {
    json(out, &ContractVersionRecord { partner: partner.to_string(), version: version.clone() });
}

pub fn decode_contract_version(bytes: &[u8]) -> Result<(String, ContractVersion), CodecError> {
    const WHAT: &str = "contract version record";
    let record: ContractVersionRecord = from_json(bytes, WHAT)?;
    Ok((record.partner, revalidate(record.version, WHAT)?))
}

pub fn encode_rate(out: &mut Vec<u8>, rate: &FxRate) {
    json(out, rate);
}

fn validate_rate(rate: FxRate, what: &'static str) -> Result<FxRate, CodecError> {
    check_currency(rate.base, what)?;
    check_currency(rate.quote, what)?;
    if rate.rate.mantissa <= 0 {
        return Err(bad(what, "rate must be positive"));
    }
    Ok(rate)
}

pub fn decode_rate(bytes: &[u8]) -> Result<FxRate, CodecError> {
    validate_rate(from_json(bytes, "fx rate")?, "fx rate")
}

pub fn encode_statement(out: &mut Vec<u8>, statement: &Statement) {
    json(out, statement);
}

pub fn decode_statement(bytes: &[u8]) -> Result<Statement, CodecError> {
    from_json(bytes, "statement")
}

// ---------------------------------------------------------------------------------------------
// Log entries.

pub fn encode_rates_entry(out: &mut Vec<u8>, rates: &[FxRate]) {
    out.push(LOG_RATES);
    json(out, &rates);
}

pub fn encode_partner_entry(out: &mut Vec<u8>, partner: &Partner) {
    out.push(LOG_PARTNER);
    encode_partner(out, partner);
}

pub fn encode_contract_version_entry(out: &mut Vec<u8>, partner: &str, version: &ContractVersion) {
    out.push(LOG_CONTRACT_VERSION);
    encode_contract_version(out, partner, version);
}

pub fn encode_tick_entry(out: &mut Vec<u8>, at: Instant) {
    out.push(LOG_TICK);
    put_ivarint(out, at.0);
}

pub fn encode_fx_max_age_entry(out: &mut Vec<u8>, span: Span) {
    out.push(LOG_FX_MAX_AGE);
    put_ivarint(out, span.0);
}

pub fn decode_log_entry(bytes: &[u8]) -> Result<LogEntry, CodecError> {
    const WHAT: &str = "log entry";
    let (&tag, body) = bytes.split_first().ok_or_else(|| bad(WHAT, "empty"))?;
    match tag {
        LOG_TX => {
            let mut r = Reader::new(body, "transaction log entry");
            let (tx, outcome) = decode_tx(&mut r)?;
            r.finish()?;
            Ok(LogEntry::Tx { tx, outcome })
        }
        LOG_RATES => {
            let rates: Vec<FxRate> = from_json(body, "rates log entry")?;
            let rates =
                rates.into_iter().map(|r| validate_rate(r, "rates log entry")).collect::<Result<_, _>>()?;
            Ok(LogEntry::Rates(rates))
        }
        LOG_PARTNER => Ok(LogEntry::Partner(decode_partner(body)?)),
        LOG_CONTRACT_VERSION => {
            let (partner, version) = decode_contract_version(body)?;
            Ok(LogEntry::ContractVersion { partner, version })
        }
        LOG_TICK => {
            let mut r = Reader::new(body, "tick log entry");
            let at = r.instant()?;
            r.finish()?;
            Ok(LogEntry::Tick(at))
        }
        LOG_FX_MAX_AGE => {
            let mut r = Reader::new(body, "fx_max_age log entry");
            let span = r.ivarint()?;
            r.finish()?;
            if span < 0 {
                return Err(bad("fx_max_age log entry", "negative"));
            }
            Ok(LogEntry::FxMaxAge(Span(span)))
        }
        t => Err(bad(WHAT, format!("unknown tag {t}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Log records: the entries of one commit under one key.

/// Bytes of an entry's frame header in a log record: its sequence (`u64` BE) and its length
/// (`u32` BE).
const RECORD_FRAME_BYTES: usize = 12;

/// Appends one entry (already encoded) to a log record.
pub fn push_record_entry(out: &mut Vec<u8>, seq: u64, entry: &[u8]) {
    out.extend_from_slice(&seq.to_be_bytes());
    // Entries are bounded far below 4 GiB (batch and rate limits); the check is in `split_record`.
    out.extend_from_slice(&u32::try_from(entry.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(entry);
}

/// The entries of a log record in sequence order, each once: `(seq, entry bytes)`.
pub fn split_record(bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, CodecError> {
    const WHAT: &str = "log record";
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (head, body) =
            rest.split_at_checked(RECORD_FRAME_BYTES).ok_or_else(|| bad(WHAT, "truncated frame"))?;
        let (seq, len) = head.split_at(8);
        let seq = u64::from_be_bytes(seq.try_into().map_err(|_| bad(WHAT, "seq"))?);
        let len = u32::from_be_bytes(len.try_into().map_err(|_| bad(WHAT, "length"))?) as usize;
        let (entry, tail) = body.split_at_checked(len).ok_or_else(|| bad(WHAT, "truncated entry"))?;
        out.push((seq, entry));
        rest = tail;
    }
    // Appended in commit order, which interleaves partners; replay wants sequence order.
    out.sort_unstable_by_key(|(seq, _)| *seq);
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(bad(WHAT, "a sequence number appears twice"));
    }
    Ok(out)
}

/// A partner account's summary, kept by cluster replicas beside their state (the standalone
/// engine derives everything from its log and keeps none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSummary {
    pub currency: Currency,
    pub payable: Minor,
    /// The oldest period not yet closed.
    pub open_period: Period,
    pub statements_issued: u64,
}

pub fn encode_account(out: &mut Vec<u8>, a: &AccountSummary) {
    put_currency(out, a.currency);
    put_ivarint(out, a.payable.0);
    put_ivarint(out, a.open_period.start.0);
    put_ivarint(out, a.open_period.end.0);
    put_uvarint(out, u128::from(a.statements_issued));
}

pub fn decode_account(bytes: &[u8]) -> Result<AccountSummary, CodecError> {
    let mut r = Reader::new(bytes, "account summary");
    let currency = r.currency()?;
    let payable = Minor(r.ivarint()?);
    let start = r.instant()?;
    let end = r.instant()?;
    let statements_issued = u64::try_from(r.uvarint()?).map_err(|_| bad(r.what, "statement count"))?;
    r.finish()?;
    Ok(AccountSummary { currency, payable, open_period: Period { start, end }, statements_issued })
}

/// An entry of the exception queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExceptionRecord {
    /// The log sequence of the transaction (the full transaction is there).
    pub seq: u64,
    pub id: String,
    pub reason: ExceptionReason,
}

pub fn encode_exception(out: &mut Vec<u8>, reason: ExceptionReason, id: &[u8]) {
    out.push(reason_code(reason));
    out.extend_from_slice(id);
}

pub fn decode_exception(seq: u64, bytes: &[u8]) -> Result<ExceptionRecord, CodecError> {
    const WHAT: &str = "exception record";
    let (&code, id) = bytes.split_first().ok_or_else(|| bad(WHAT, "empty"))?;
    let reason = reason_from(code).ok_or_else(|| bad(WHAT, "reason"))?;
    let id = std::str::from_utf8(id).map_err(|_| bad(WHAT, "id is not UTF-8"))?.to_string();
    Ok(ExceptionRecord { seq, id, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Instant {
        Instant::parse_rfc3339(s).unwrap()
    }

    fn sample_tx() -> TxInput {
        TxInput {
            id: TxId::new("tx-1").unwrap(),
            partner: Some("acme".into()),
            kind: TxKind::Sale,
            amount: AmountField::Decimal(Dec::parse("100.50", false).unwrap()),
            currency: Some("USD".into()),
            occurred_at: t("2026-01-02T10:00:00Z"),
            received_at: t("2026-01-02T10:00:01.5Z"),
            original: None,
            reason: Some("ünïcode".into()),
            metadata: Some(r#"{"a":1}"#.into()),
        }
    }

    #[test]
    fn tx_round_trips_with_every_outcome_shape() {
        let usd = Currency::from_code("USD").unwrap();
        let eur = Currency::from_code("EUR").unwrap();
        let outcomes = [
            Outcome::Exception(ExceptionReason::InsufficientBalance),
            Outcome::Exception(ExceptionReason::DuplicateConflict),
            Outcome::Applied(Applied {
                period: Period { start: t("2026-01-01T00:00:00Z"), end: t("2026-01-02T00:00:00Z") },
                late: true,
                amount_s: Minor(-9_200),
                payable_after: Minor(i128::MIN + 1),
                rate: Some(Box::new(RateUsed {
                    base: usd,
                    quote: eur,
                    rate: Dec::parse("0.92", false).unwrap(),
                    at: Instant(i128::MIN),
                    inverse: true,
                    source: Some("ecb".into()),
                })),
            }),
        ];
        let mut malformed = sample_tx();
        malformed.amount = AmountField::Malformed("1e3".into());
        malformed.partner = None;
        malformed.metadata = None;
        let mut missing = sample_tx();
        missing.amount = AmountField::Missing;
        missing.kind = TxKind::Adjustment;
        for tx in [sample_tx(), malformed, missing] {
            for outcome in &outcomes {
                let mut buf = Vec::new();
                encode_tx(&mut buf, &tx, outcome);
                assert_eq!(tx_record_id(&buf), Some(tx.id.as_str().as_bytes()));
                let decoded = decode_log_entry(&buf).unwrap();
                assert_eq!(decoded, LogEntry::Tx { tx: tx.clone(), outcome: outcome.clone() });
            }
        }
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode_tx(&mut buf, &sample_tx(), &Outcome::Exception(ExceptionReason::FxStale));
        for cut in 0..buf.len() {
            assert!(decode_log_entry(&buf[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
        let mut extra = buf.clone();
        extra.push(0);
        assert!(decode_log_entry(&extra).is_err());
        for i in 0..buf.len() {
            let mut flipped = buf.clone();
            flipped[i] ^= 0xff;
            let _ = decode_log_entry(&flipped); // must not panic
        }
        assert!(decode_log_entry(&[99]).is_err());
    }

    #[test]
    fn varints_round_trip_extremes() {
        for v in [0i128, 1, -1, 63, -64, 64, i128::MAX, i128::MIN, 1_767_225_600_000_000_000] {
            let mut buf = Vec::new();
            put_ivarint(&mut buf, v);
            let mut r = Reader::new(&buf, "test");
            assert_eq!(r.ivarint().unwrap(), v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn tick_round_trips() {
        let mut buf = Vec::new();
        encode_tick_entry(&mut buf, t("2026-03-29T01:00:00Z"));
        assert_eq!(decode_log_entry(&buf).unwrap(), LogEntry::Tick(t("2026-03-29T01:00:00Z")));
        let mut buf = Vec::new();
        encode_fx_max_age_entry(&mut buf, Span::from_hours(24));
        assert_eq!(decode_log_entry(&buf).unwrap(), LogEntry::FxMaxAge(Span::from_hours(24)));
        for reason in ExceptionReason::ALL {
            assert_eq!(reason_from(reason_code(reason)), Some(reason));
        }
    }

    #[test]
    fn log_records_split_in_sequence_order_and_refuse_damage() {
        let mut record = Vec::new();
        push_record_entry(&mut record, 9, b"nine");
        push_record_entry(&mut record, 3, b"");
        push_record_entry(&mut record, 5, b"five");
        let entries = split_record(&record).unwrap();
        assert_eq!(entries, vec![(3, &b""[..]), (5, &b"five"[..]), (9, &b"nine"[..])]);
        for cut in 1..record.len() {
            if cut != 16 && cut != 28 {
                assert!(split_record(&record[..cut]).is_err(), "a record cut at {cut} split");
            }
        }
        let mut twice = record.clone();
        push_record_entry(&mut twice, 5, b"again");
        assert!(split_record(&twice).is_err());
        assert_eq!(split_record(&[]).unwrap(), vec![]);
    }
}
