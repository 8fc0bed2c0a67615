//! What an import did, counted the same way wherever the file came in (`settle import` over
//! QUIC, an HTTP upload): rows, how each was settled, and how far into the file it got.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    pub file: String,
    pub mapping: String,
    pub rows: u64,
    /// Rows that could not be mapped (sent so that they become exceptions).
    pub unmapped: u64,
    /// Applied by this import.
    pub applied: u64,
    /// Exceptions filed by this import, by reason.
    pub exceptions: BTreeMap<String, u64>,
    /// Rows already on the node (an earlier import or a retry).
    pub duplicates: u64,
    /// Of the duplicates, those whose first result was an exception, by reason.
    pub duplicate_exceptions: BTreeMap<String, u64>,
    /// Bytes of the file read up to the last row counted.
    pub bytes: u64,
}

impl ImportCounts {
    pub fn new(file: &str, mapping: &str) -> ImportCounts {
        ImportCounts { file: file.to_string(), mapping: mapping.to_string(), ..ImportCounts::default() }
    }

    /// Counts one submitted row: whether it was a repeat, and the exception reason if its
    /// (first) result was an exception.
    pub fn record(&mut self, unmapped: bool, duplicate: bool, exception: Option<&str>) {
        match (duplicate, exception) {
            (false, None) => self.applied += 1,
            (false, Some(r)) => *self.exceptions.entry(r.to_string()).or_default() += 1,
            (true, None) => self.duplicates += 1,
            (true, Some(r)) => {
                self.duplicates += 1;
                *self.duplicate_exceptions.entry(r.to_string()).or_default() += 1;
            }
        }
        self.unmapped += u64::from(unmapped);
        self.rows += 1;
    }

    /// Every row applied cleanly (none unmapped, none an exception now or before).
    pub fn clean(&self) -> bool {
        self.exceptions.is_empty() && self.duplicate_exceptions.is_empty() && self.unmapped == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_counted_by_how_they_were_settled() {
        let mut c = ImportCounts::new("f.csv", "m");
        assert!(c.clean());
        c.record(false, false, None);
        c.record(true, false, Some("invalid_amount"));
        c.record(false, true, None);
        c.record(true, true, Some("invalid_amount"));
        assert_eq!((c.rows, c.applied, c.duplicates, c.unmapped), (4, 1, 2, 2));
        assert_eq!(c.exceptions.get("invalid_amount"), Some(&1));
        assert_eq!(c.duplicate_exceptions.get("invalid_amount"), Some(&1));
        assert!(!c.clean());
    }
}
