//! Reading a partner file record by record from any `Read`, without holding more than one record:
//! CSV (any delimiter and quote, quoted delimiters and line breaks), JSON lines and fixed-width
//! lines. A record that cannot be read as such (not UTF-8, not a JSON object, too long) is still
//! a record, carrying why, so that the row is never dropped.

use crate::mapping::{CsvOptions, FixedOptions, Format, Mapping};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;

/// Longest line of a JSON-lines or fixed-width file (longer lines are kept as error rows, and
/// the rest of the line is skipped without being held in memory).
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Deepest JSON nesting flattened into dotted keys.
const MAX_JSON_DEPTH: usize = 8;
/// Separates values in the content hashed for derived ids (cannot occur in CSV text fields
/// meant for people, and is escaped by JSON).
const UNIT_SEPARATOR: char = '\u{1f}';

/// The fields of one record.
#[derive(Clone, Debug)]
pub enum Values {
    /// CSV and fixed-width: values by position, names by the shared index.
    Columns { index: Arc<HashMap<String, usize>>, values: Vec<String> },
    /// JSON lines: scalars by dotted path (`payment.amount`); numbers as written.
    Map(BTreeMap<String, String>),
}

impl Values {
    pub fn get(&self, name: &str) -> Option<&str> {
        match self {
            Values::Columns { index, values } => {
                index.get(name).and_then(|&i| values.get(i)).map(String::as_str)
            }
            Values::Map(m) => m.get(name).map(String::as_str),
        }
    }

    /// The record's content in one canonical text (independent of quoting and JSON spacing or
    /// key order), hashed into derived ids.
    pub fn canonical_content(&self) -> String {
        let mut out = String::new();
        match self {
            Values::Columns { values, .. } => {
                for v in values {
                    out.push_str(v);
                    out.push(UNIT_SEPARATOR);
                }
            }
            Values::Map(m) => {
                for (k, v) in m {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(v);
                    out.push(UNIT_SEPARATOR);
                }
            }
        }
        out
    }
}

/// One record: its 1-based line number in the file, the byte offset after it, and its fields or
/// why they cannot be read (with the raw text for the derived id).
#[derive(Clone, Debug)]
pub struct Record {
    pub line: u64,
    pub bytes_after: u64,
    pub values: Result<Values, (String, String)>,
}

/// Why reading stopped: the file itself failed, or its header does not fit the mapping.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    #[error("csv: {0}")]
    Csv(String),
    #[error("header: {0}")]
    Header(String),
}

/// Lines of at most `MAX_LINE_BYTES`, counted, with the byte offset.
struct Lines<R> {
    inner: BufReader<R>,
    line: u64,
    bytes: u64,
    buf: Vec<u8>,
}

enum Line {
    Text(String),
    NotUtf8(String),
    TooLong,
}

impl<R: Read> Lines<R> {
    fn new(inner: R) -> Self {
        Lines { inner: BufReader::new(inner), line: 0, bytes: 0, buf: Vec::new() }
    }

    /// The next line without its line break, or None at the end.
    fn next_line(&mut self) -> io::Result<Option<Line>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if self.buf.len() + take <= MAX_LINE_BYTES + 2 {
                self.buf.extend_from_slice(&chunk[..take]);
            } else {
                too_long = true;
            }
            self.inner.consume(take);
            self.bytes += take as u64;
            if done {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line += 1;
        if too_long {
            return Ok(Some(Line::TooLong));
        }
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            self.buf.drain(..3);
        }
        Ok(Some(match String::from_utf8(std::mem::take(&mut self.buf)) {
            Ok(s) => Line::Text(s),
            Err(e) => Line::NotUtf8(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }))
    }
}

/// Records of one file, in order.
pub struct Records<R: Read> {
    kind: Kind<R>,
}

impl<R: Read> std::fmt::Debug for Records<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Records")
    }
}

enum Kind<R: Read> {
    Csv(CsvRecords<R>),
    Jsonl(Lines<R>),
    Fixed(Lines<R>, FixedOptions, Arc<HashMap<String, usize>>),
}

struct CsvRecords<R: Read> {
    reader: csv::Reader<BufReader<R>>,
    index: Arc<HashMap<String, usize>>,
    line_offset: u64,
    byte_offset: u64,
    skip_prefixes: Vec<String>,
    record: csv::ByteRecord,
}

fn index_of(names: &[String]) -> Arc<HashMap<String, usize>> {
    // The first of two equal names wins, as a person reading the header left to right expects.
    let mut index = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        index.entry(n.clone()).or_insert(i);
    }
    Arc::new(index)
}

impl<R: Read> Records<R> {
    /// Opens a file per the mapping; a CSV header is read and checked here.
    pub fn open(mapping: &Mapping, input: R) -> Result<Records<R>, ReadError> {
        let kind = match mapping.format {
            Format::Jsonl => Kind::Jsonl(Lines::new(input)),
            Format::Fixed => {
                let names: Vec<String> = mapping.fixed.columns.iter().map(|c| c.name.clone()).collect();
                Kind::Fixed(Lines::new(input), mapping.fixed.clone(), index_of(&names))
            }
            Format::Csv => Kind::Csv(open_csv(mapping, &mapping.csv, input)?),
        };
        Ok(Records { kind })
    }

    /// The next record, or None at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        match &mut self.kind {
            Kind::Csv(c) => c.next_record(),
            Kind::Jsonl(lines) => loop {
                let Some(line) = lines.next_line()? else { return Ok(None) };
                let values = match line {
                    Line::Text(t) if t.trim().is_empty() => continue,
                    Line::Text(t) => parse_json_line(&t),
                    Line::NotUtf8(t) => Err(("line is not valid UTF-8".into(), t)),
                    Line::TooLong => {
                        Err((format!("line is longer than {MAX_LINE_BYTES} bytes"), String::new()))
                    }
                };
                return Ok(Some(Record { line: lines.line, bytes_after: lines.bytes, values }));
            },
            Kind::Fixed(lines, opts, index) => loop {
                let Some(line) = lines.next_line()? else { return Ok(None) };
                let values = match line {
                    Line::Text(t) if t.trim().is_empty() => continue,
                    Line::Text(t) if opts.skip_prefixes.iter().any(|p| t.starts_with(p.as_str())) => continue,
                    Line::Text(t) => Ok(cut_fixed(&t, opts, index)),
                    Line::NotUtf8(t) => Err(("line is not valid UTF-8".into(), t)),
                    Line::TooLong => {
                        Err((format!("line is longer than {MAX_LINE_BYTES} bytes"), String::new()))
                    }
                };
                return Ok(Some(Record { line: lines.line, bytes_after: lines.bytes, values }));
            },
        }
    }
}

fn open_csv<R: Read>(mapping: &Mapping, opts: &CsvOptions, input: R) -> Result<CsvRecords<R>, ReadError> {
    let mut lines = Lines::new(input);
    for _ in 0..opts.skip_lines {
        if lines.next_line()?.is_none() {
            break;
        }
    }
    let (line_offset, byte_offset) = (lines.line, lines.bytes);
    // Both are checked ASCII by the mapping.
    let delimiter = u8::try_from(opts.delimiter).unwrap_or(b',');
    let quote = u8::try_from(opts.quote).unwrap_or(b'"');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quote(quote)
        .has_headers(opts.header)
        .flexible(true)
        .from_reader(lines.inner);
    let names: Vec<String> = if opts.header {
        let header = reader.byte_headers().map_err(|e| ReadError::Csv(e.to_string()))?;
        let mut names: Vec<String> =
            header.iter().map(|h| String::from_utf8_lossy(h).trim().to_string()).collect();
        if line_offset == 0 {
            if let Some(first) = names.first_mut() {
                if let Some(rest) = first.strip_prefix('\u{feff}') {
                    *first = rest.to_string();
                }
            }
        }
        for col in mapping.referenced_columns() {
            if !names.iter().any(|n| n == col) {
                return Err(ReadError::Header(format!("no column {col:?} in the header {names:?}")));
            }
        }
        names
    } else {
        opts.columns.clone()
    };
    Ok(CsvRecords {
        reader,
        index: index_of(&names),
        line_offset,
        byte_offset,
        skip_prefixes: opts.skip_prefixes.clone(),
        record: csv::ByteRecord::new(),
    })
}

impl<R: Read> CsvRecords<R> {
    fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            let more = self.reader.read_byte_record(&mut self.record).map_err(|e| match e.into_kind() {
                csv::ErrorKind::Io(io) => ReadError::Io(io),
                other => ReadError::Csv(format!("{other:?}")),
            })?;
            if !more {
                return Ok(None);
            }
            let line = self.record.position().map_or(0, |p| p.line()) + self.line_offset;
            let bytes_after = self.reader.position().byte() + self.byte_offset;
            if self.record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                continue;
            }
            let first = self.record.get(0).unwrap_or_default();
            if self.skip_prefixes.iter().any(|p| first.starts_with(p.as_bytes())) {
                continue;
            }
            let mut values = Vec::with_capacity(self.record.len());
            let mut not_utf8 = false;
            for f in self.record.iter() {
                match std::str::from_utf8(f) {
                    Ok(s) => values.push(s.trim().to_string()),
                    Err(_) => {
                        not_utf8 = true;
                        values.push(String::from_utf8_lossy(f).trim().to_string());
                    }
                }
            }
            let values = if not_utf8 {
                let raw = values.join(&UNIT_SEPARATOR.to_string());
                Err(("row is not valid UTF-8".to_string(), raw))
            } else {
                Ok(Values::Columns { index: self.index.clone(), values })
            };
            return Ok(Some(Record { line, bytes_after, values }));
        }
    }
}

fn cut_fixed(line: &str, opts: &FixedOptions, index: &Arc<HashMap<String, usize>>) -> Values {
    let chars: Vec<char> = line.chars().collect();
    let values = opts
        .columns
        .iter()
        .map(|c| {
            let start = (c.start - 1).min(chars.len());
            let end = start.saturating_add(c.len).min(chars.len());
            chars[start..end].iter().collect::<String>().trim().to_string()
        })
        .collect();
    Values::Columns { index: index.clone(), values }
}

fn parse_json_line(line: &str) -> Result<Values, (String, String)> {
    let top: BTreeMap<String, &serde_json::value::RawValue> = serde_json::from_str(line)
        .map_err(|e| (format!("line is not a JSON object: {e}"), line.trim().to_string()))?;
    let mut out = BTreeMap::new();
    flatten("", &top, 0, &mut out);
    Ok(Values::Map(out))
}

/// Scalars under dotted paths; numbers keep their written digits (never through a float).
fn flatten(
    prefix: &str,
    object: &BTreeMap<String, &serde_json::value::RawValue>,
    depth: usize,
    out: &mut BTreeMap<String, String>,
) {
    for (key, raw) in object {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        let text = raw.get().trim();
        if text.starts_with('{') && depth < MAX_JSON_DEPTH {
            if let Ok(inner) = serde_json::from_str::<BTreeMap<String, &serde_json::value::RawValue>>(text) {
                flatten(&path, &inner, depth + 1, out);
                continue;
            }
        }
        if text == "null" {
            continue;
        }
        let value = if text.starts_with('"') {
            serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_string())
        } else {
            text.to_string()
        };
        out.insert(path, value);
    }
}
