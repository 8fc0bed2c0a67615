//! The mapping file: its TOML shape and the checks run when it is loaded, so that every problem
//! of the mapping itself is reported once, before the first row is read.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Longest mapping file accepted (mappings are hand-written and small).
pub const MAX_MAPPING_BYTES: usize = 1 << 20;
/// Longest id prefix: a prefixed id must still leave room within the spec's 64 bytes.
pub const MAX_ID_PREFIX_BYTES: usize = 24;

/// A mapping file that cannot be used; the message names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("mapping file is larger than {MAX_MAPPING_BYTES} bytes")]
    TooLarge,
    #[error("mapping file: {0}")]
    Toml(String),
    #[error("mapping: {0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Fixed,
}

/// Where a canonical field comes from: one source column, or several joined by one space
/// (e.g. a date column and a time column).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Source {
    One(String),
    Joined(Vec<String>),
}

impl Source {
    pub fn columns(&self) -> Vec<&str> {
        match self {
            Source::One(c) => vec![c.as_str()],
            Source::Joined(cs) => cs.iter().map(String::as_str).collect(),
        }
    }
}

/// Canonical field <- partner column (CSV header name, JSON key or dotted path, fixed-width
/// column name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    pub id: Option<Source>,
    pub partner: Option<Source>,
    pub kind: Option<Source>,
    pub amount: Option<Source>,
    /// A column holding debit amounts (made negative); used with `credit` instead of `amount`.
    pub debit: Option<Source>,
    /// A column holding credit amounts.
    pub credit: Option<Source>,
    /// A debit/credit indicator column; its values are listed in `[amount]`.
    pub sign: Option<Source>,
    pub currency: Option<Source>,
    pub occurred_at: Option<Source>,
    pub original: Option<Source>,
    pub reason: Option<Source>,
}

/// Constant values (always used) or defaults (used when the source is missing or blank).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Values {
    pub partner: Option<String>,
    pub kind: Option<String>,
    pub currency: Option<String>,
    pub reason: Option<String>,
}

/// Code tables: the partner's value -> ours, per field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Codes {
    #[serde(default)]
    pub kind: BTreeMap<String, String>,
    #[serde(default)]
    pub currency: BTreeMap<String, String>,
    #[serde(default)]
    pub partner: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountOptions {
    #[serde(default = "default_decimal_separator")]
    pub decimal_separator: char,
    pub thousands_separator: Option<char>,
    /// The amount is an integer count of minor units with this many decimals (cents: 2).
    pub minor_units: Option<u32>,
    /// What a negative amount of a kind other than `adjustment` becomes: `keep` (sent as is, so
    /// the engine files it as `invalid_amount`), `abs` (the partner signs by direction; the kind
    /// says what it is), or a kind name (e.g. `refund`: negative amounts are refunds of the
    /// absolute value).
    #[serde(default = "default_negative")]
    pub negative: String,
    /// Values of the `sign` column that mean debit (the amount is negated).
    #[serde(default)]
    pub debit_values: Vec<String>,
    /// Values of the `sign` column that mean credit.
    #[serde(default)]
    pub credit_values: Vec<String>,
}

impl Default for AmountOptions {
    fn default() -> Self {
        AmountOptions {
            decimal_separator: default_decimal_separator(),
            thousands_separator: None,
            minor_units: None,
            negative: default_negative(),
            debit_values: Vec::new(),
            credit_values: Vec::new(),
        }
    }
}

fn default_decimal_separator() -> char {
    '.'
}

fn default_negative() -> String {
    "keep".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeOptions {
    /// Formats tried in order: `rfc3339`, `unix` (seconds), `unix_ms`, or a chrono strftime
    /// pattern (with `%z`/`%:z` the text carries its offset; without, it is local time in
    /// `timezone`; a date-only pattern means local midnight).
    #[serde(default = "default_formats")]
    pub formats: Vec<String>,
    /// IANA time zone of local times.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

impl Default for TimeOptions {
    fn default() -> Self {
        TimeOptions { formats: default_formats(), timezone: default_timezone() }
    }
}

fn default_formats() -> Vec<String> {
    vec!["rfc3339".into()]
}

fn default_timezone() -> String {
    "UTC".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdOptions {
    /// Put before the partner's id (and before `original`, which names an id of the same feed).
    #[serde(default)]
    pub prefix: String,
    /// Put before ids derived from the row's content.
    #[serde(default = "default_hash_prefix")]
    pub hash_prefix: String,
}

impl Default for IdOptions {
    fn default() -> Self {
        IdOptions { prefix: String::new(), hash_prefix: default_hash_prefix() }
    }
}

fn default_hash_prefix() -> String {
    "h-".into()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataOptions {
    /// Partner columns copied as strings into the transaction's metadata under `source`.
    #[serde(default)]
    pub columns: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    #[serde(default = "default_quote")]
    pub quote: char,
    /// Whether the first record (after `skip_lines`) names the columns.
    #[serde(default = "default_true")]
    pub header: bool,
    /// Column names when there is no header row.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Lines before the header (a preamble) to skip.
    #[serde(default)]
    pub skip_lines: usize,
    /// Records whose first field starts with one of these are skipped (trailers, totals).
    #[serde(default)]
    pub skip_prefixes: Vec<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: default_delimiter(),
            quote: default_quote(),
            header: true,
            columns: Vec::new(),
            skip_lines: 0,
            skip_prefixes: Vec::new(),
        }
    }
}

fn default_delimiter() -> char {
    ','
}

fn default_quote() -> char {
    '"'
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedColumn {
    pub name: String,
    /// 1-based position of the first character.
    pub start: usize,
    /// Width in characters.
    pub len: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedOptions {
    pub columns: Vec<FixedColumn>,
    /// Lines starting with one of these are skipped (header and trailer records).
    #[serde(default)]
    pub skip_prefixes: Vec<String>,
}

/// A mapping file, as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Names the mapping; part of every derived id, so changing it changes derived ids.
    pub name: String,
    pub format: Format,
    #[serde(default)]
    pub csv: CsvOptions,
    #[serde(default)]
    pub fixed: FixedOptions,
    #[serde(default)]
    pub fields: Fields,
    #[serde(default)]
    pub constants: Values,
    #[serde(default)]
    pub defaults: Values,
    #[serde(default)]
    pub codes: Codes,
    #[serde(default)]
    pub amount: AmountOptions,
    #[serde(default)]
    pub time: TimeOptions,
    #[serde(default)]
    pub id: IdOptions,
    #[serde(default)]
    pub metadata: MetadataOptions,
}

/// The canonical kind names.
pub const KINDS: [&str; 5] = ["sale", "refund", "chargeback", "payout", "adjustment"];

fn invalid(msg: impl Into<String>) -> MappingError {
    MappingError::Invalid(msg.into())
}

impl Mapping {
    /// Parses and checks a mapping file.
    pub fn from_toml(text: &str) -> Result<Mapping, MappingError> {
        if text.len() > MAX_MAPPING_BYTES {
            return Err(MappingError::TooLarge);
        }
        let mapping: Mapping = toml::from_str(text).map_err(|e| MappingError::Toml(e.to_string()))?;
        mapping.check()?;
        Ok(mapping)
    }

    fn check(&self) -> Result<(), MappingError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name: must not be blank"));
        }
        let f = &self.fields;
        if f.occurred_at.is_none() {
            return Err(invalid("fields.occurred_at: required"));
        }
        match (&f.amount, &f.debit, &f.credit) {
            (Some(_), None, None) => {}
            (None, Some(_), Some(_)) => {}
            (None, None, None) => {
                return Err(invalid("fields.amount (or fields.debit and fields.credit): required"))
            }
            _ => return Err(invalid("fields: give either amount, or both debit and credit")),
        }
        if f.sign.is_some() && self.amount.debit_values.is_empty() {
            return Err(invalid("amount.debit_values: required with fields.sign"));
        }
        if f.kind.is_none() && self.constants.kind.is_none() && self.defaults.kind.is_none() {
            return Err(invalid("fields.kind, constants.kind or defaults.kind: required"));
        }
        let a = &self.amount;
        if a.decimal_separator.is_ascii_digit() || a.decimal_separator == '-' || a.decimal_separator == '+' {
            return Err(invalid("amount.decimal_separator: must not be a digit or a sign"));
        }
        if let Some(t) = a.thousands_separator {
            if t == a.decimal_separator || t.is_ascii_digit() || t == '-' || t == '+' {
                return Err(invalid(
                    "amount.thousands_separator: must differ from the decimal separator, digits and signs",
                ));
            }
        }
        if a.minor_units.is_some_and(|m| m > crate::number::MAX_MINOR_UNITS) {
            return Err(invalid(format!("amount.minor_units: at most {}", crate::number::MAX_MINOR_UNITS)));
        }
        if !(a.negative == "keep" || a.negative == "abs" || KINDS.contains(&a.negative.as_str())) {
            return Err(invalid(
                "amount.negative: keep, abs or a kind (sale, refund, chargeback, payout, adjustment)",
            ));
        }
        for (what, v) in [("constants.kind", &self.constants.kind), ("defaults.kind", &self.defaults.kind)] {
            if let Some(k) = v {
                if !KINDS.contains(&k.as_str()) {
                    return Err(invalid(format!("{what}: {k:?} is not a kind")));
                }
            }
        }
        for (code, kind) in &self.codes.kind {
            if !KINDS.contains(&kind.as_str()) {
                return Err(invalid(format!("codes.kind.{code}: {kind:?} is not a kind")));
            }
        }
        if self.time.formats.is_empty() {
            return Err(invalid("time.formats: at least one"));
        }
        crate::time::check_formats(&self.time.formats).map_err(|e| invalid(format!("time.formats: {e}")))?;
        if self.time.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(invalid(format!("time.timezone: {:?} is not an IANA time zone", self.time.timezone)));
        }
        if self.id.prefix.len() > MAX_ID_PREFIX_BYTES || self.id.hash_prefix.len() > MAX_ID_PREFIX_BYTES {
            return Err(invalid(format!("id.prefix, id.hash_prefix: at most {MAX_ID_PREFIX_BYTES} bytes")));
        }
        match self.format {
            Format::Csv => self.check_csv()?,
            Format::Fixed => self.check_fixed()?,
            Format::Jsonl => {}
        }
        Ok(())
    }

    fn check_csv(&self) -> Result<(), MappingError> {
        let c = &self.csv;
        if !c.delimiter.is_ascii() || c.delimiter == '\n' || c.delimiter == '\r' {
            return Err(invalid("csv.delimiter: one ASCII character other than a line break"));
        }
        if !c.quote.is_ascii() || c.quote == c.delimiter {
            return Err(invalid("csv.quote: one ASCII character other than the delimiter"));
        }
        if !c.header && c.columns.is_empty() {
            return Err(invalid("csv.columns: required when csv.header is false"));
        }
        if c.header && !c.columns.is_empty() {
            return Err(invalid("csv.columns: only when csv.header is false (the header names the columns)"));
        }
        if !c.header {
            self.check_columns_known(&c.columns, "csv.columns")?;
        }
        Ok(())
    }

    fn check_fixed(&self) -> Result<(), MappingError> {
        let cols = &self.fixed.columns;
        if cols.is_empty() {
            return Err(invalid("fixed.columns: required for format \"fixed\""));
        }
        for c in cols {
            if c.start == 0 || c.len == 0 {
                return Err(invalid(format!(
                    "fixed.columns.{}: start is 1-based and len is at least 1",
                    c.name
                )));
            }
        }
        let names: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
        self.check_columns_known(&names, "fixed.columns")
    }

    /// With declared columns, every referenced column must be one of them (a typo would otherwise
    /// turn every row into an exception).
    fn check_columns_known(&self, declared: &[String], what: &str) -> Result<(), MappingError> {
        for col in self.referenced_columns() {
            if !declared.iter().any(|d| d == col) {
                return Err(invalid(format!("column {col:?} is used but not declared in {what}")));
            }
        }
        Ok(())
    }

    /// Every partner column the mapping reads.
    pub fn referenced_columns(&self) -> Vec<&str> {
        let f = &self.fields;
        let mut out: Vec<&str> = [
            &f.id,
            &f.partner,
            &f.kind,
            &f.amount,
            &f.debit,
            &f.credit,
            &f.sign,
            &f.currency,
            &f.occurred_at,
            &f.original,
            &f.reason,
        ]
        .into_iter()
        .flatten()
        .flat_map(Source::columns)
        .collect();
        out.extend(self.metadata.columns.iter().map(String::as_str));
        out
    }
}
