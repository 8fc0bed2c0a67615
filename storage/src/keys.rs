//! Every RocksDB key Settle writes is built here, and nowhere else.
//!
//! Keys are big-endian so that RocksDB's byte order is the numeric order: the log iterates in
//! sequence order, statements in period order. Signed numbers (instants) have their sign bit
//! flipped so that negative values sort before positive ones. Variable-length parts (partner ids)
//! carry a length prefix, so that one partner's keys are never a prefix of another's.

use settle_core::{Currency, Instant};

/// Column families, by name. The names are part of the storage format.
pub const CF_META: &str = "meta";
pub const CF_PARTNERS: &str = "partners";
pub const CF_FX: &str = "fx";
pub const CF_LOG: &str = "log";
pub const CF_EXCEPTIONS: &str = "exceptions";
pub const CF_STATEMENTS: &str = "statements";
/// Control-plane records written by people and services outside the transaction stream (users,
/// API keys, sessions, alert rules, exception resolutions), never by the engine's commit path.
pub const CF_CONTROL: &str = "control";
/// The hash-chained audit trail of the control plane, by sequence.
pub const CF_AUDIT: &str = "audit";

pub const ALL_CFS: [&str; 8] =
    [CF_META, CF_PARTNERS, CF_FX, CF_LOG, CF_EXCEPTIONS, CF_STATEMENTS, CF_CONTROL, CF_AUDIT];

/// `meta` key of the storage format version.
pub const META_FORMAT_VERSION: &[u8] = b"format_version";

/// Longest partner id a key can hold (the length prefix is a `u16`).
pub const MAX_PARTNER_ID_BYTES: usize = u16::MAX as usize;

/// Tag inside the `partners` family: the registration record of a partner.
const PARTNER_TAG_REGISTRATION: u8 = 0;
/// Tag inside the `partners` family: one contract version added after registration.
const PARTNER_TAG_VERSION: u8 = 1;

/// `log` key (a record's lowest sequence) and `exceptions` key: the sequence number.
pub fn seq(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Inverse of [`seq`]; `None` for a key of another length.
pub fn parse_seq(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// An instant as 16 bytes that sort like the instant.
pub fn instant(t: Instant) -> [u8; 16] {
    ((t.0 as u128) ^ (1u128 << 127)).to_be_bytes()
}

pub fn parse_instant(bytes: &[u8]) -> Option<Instant> {
    let raw: [u8; 16] = bytes.try_into().ok()?;
    Some(Instant((u128::from_be_bytes(raw) ^ (1u128 << 127)) as i128))
}

/// The length-prefixed partner id that starts every per-partner key.
pub fn partner_prefix(partner: &str) -> Vec<u8> {
    let bytes = partner.as_bytes();
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + bytes.len() + 21);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&bytes[..usize::from(len)]);
    key
}

/// `partners` key of a partner's registration record.
pub fn partner(partner: &str) -> Vec<u8> {
    let mut key = partner_prefix(partner);
    key.push(PARTNER_TAG_REGISTRATION);
    key
}

/// `partners` key of a contract version added later (`index` counts from the registration's
/// versions on), so that the partner's versions iterate in registration order.
pub fn contract_version(partner: &str, index: u32) -> Vec<u8> {
    let mut key = partner_prefix(partner);
    key.push(PARTNER_TAG_VERSION);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Whether a `partners` key is a registration record (else a later contract version).
pub fn is_partner_registration(key: &[u8]) -> bool {
    let Some(len) = key.get(..2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
        return false;
    };
    key.len() == 2 + len + 1 && key.get(2 + len) == Some(&PARTNER_TAG_REGISTRATION)
}

/// `statements` key: partner, then period start.
pub fn statement(partner: &str, period_start: Instant) -> Vec<u8> {
    let mut key = partner_prefix(partner);
    key.extend_from_slice(&instant(period_start));
    key
}

/// `fx` key: pair, instant, then the log sequence of the publication (keeps publication order
/// for equal instants).
pub fn fx_rate(base: Currency, quote: Currency, at: Instant, seq: u64, index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(6 + 16 + 8 + 4);
    key.extend_from_slice(base.code().as_bytes());
    key.extend_from_slice(quote.code().as_bytes());
    key.extend_from_slice(&instant(at));
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

// ---------------------------------------------------------------------------------------------
// The clustered node's database (`RaftDb`): one RocksDB shared by every Raft group of the node.
// Every key starts with the group id (`u32` BE), so that one group's keys are contiguous and a
// group can be dropped or replaced (snapshot install) with one range delete.

pub const CF_RAFT_META: &str = "raft_meta";
pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_STATE: &str = "raft_state";
pub const CF_SHARD_ACCOUNTS: &str = "shard_accounts";
pub const CF_SHARD_STATEMENTS: &str = "shard_statements";
/// A shard's transaction history: one row per applied log entry (all its logged transactions
/// with their outcomes), so the read model survives log compaction.
pub const CF_SHARD_HISTORY: &str = "shard_history";
/// A shard's exception queue: each exception's transaction and reason, and its resolution.
pub const CF_SHARD_EXCEPTIONS: &str = "shard_exceptions";
/// The metadata group's control-plane records (users, keys, sessions, alert rules, ...).
pub const CF_META_CONTROL: &str = "meta_control";
/// The metadata group's hash-chained audit trail, by sequence.
pub const CF_META_AUDIT: &str = "meta_audit";

pub const RAFT_CFS: [&str; 9] = [
    CF_RAFT_META,
    CF_RAFT_LOG,
    CF_RAFT_STATE,
    CF_SHARD_ACCOUNTS,
    CF_SHARD_STATEMENTS,
    CF_SHARD_HISTORY,
    CF_SHARD_EXCEPTIONS,
    CF_META_CONTROL,
    CF_META_AUDIT,
];

/// The families holding a group's state-machine records (everything but its log and Raft
/// state): what a snapshot of the group carries and what installing one replaces.
pub const GROUP_STATE_CFS: [&str; 6] = [
    CF_SHARD_ACCOUNTS,
    CF_SHARD_STATEMENTS,
    CF_SHARD_HISTORY,
    CF_SHARD_EXCEPTIONS,
    CF_META_CONTROL,
    CF_META_AUDIT,
];

/// `raft_meta` key of the node's cluster configuration (written once at bootstrap or join).
pub const RAFT_META_CLUSTER: &[u8] = b"cluster";

/// What a `raft_state` record of a group is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RaftStateKey {
    /// The vote (term, node, committed flag).
    Vote = 0,
    /// The last log id purged from the log.
    Purged = 1,
    /// The state machine's last applied log id and membership (written with the state).
    Applied = 2,
    /// The snapshot the group last built or installed.
    Snapshot = 3,
}

/// `raft_log` key: group, then log index.
pub fn raft_log(group: u32, index: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&group.to_be_bytes());
    key[4..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Inverse of [`raft_log`].
pub fn parse_raft_log(key: &[u8]) -> Option<(u32, u64)> {
    let group: [u8; 4] = key.get(..4)?.try_into().ok()?;
    let index: [u8; 8] = key.get(4..)?.try_into().ok()?;
    Some((u32::from_be_bytes(group), u64::from_be_bytes(index)))
}

/// `raft_state` key: group, then what.
pub fn raft_state(group: u32, what: RaftStateKey) -> [u8; 5] {
    let mut key = [0u8; 5];
    key[..4].copy_from_slice(&group.to_be_bytes());
    key[4] = what as u8;
    key
}

/// The first key of a group in any of the group-keyed families, and the first key after it
/// (the next group's prefix; group ids stay far below `u32::MAX`).
pub fn group_range(group: u32) -> ([u8; 4], [u8; 4]) {
    (group.to_be_bytes(), group.saturating_add(1).to_be_bytes())
}

/// `shard_accounts` key: group, then the partner id (length-prefixed).
pub fn shard_account(group: u32, partner: &str) -> Vec<u8> {
    let mut key = group.to_be_bytes().to_vec();
    key.extend_from_slice(&partner_prefix(partner));
    key
}

/// `shard_statements` key: group, partner, period start.
pub fn shard_statement(group: u32, partner: &str, period_start: Instant) -> Vec<u8> {
    let mut key = group.to_be_bytes().to_vec();
    key.extend_from_slice(&statement(partner, period_start));
    key
}

/// `shard_history` key: group, then the log index of the entry whose transactions the row holds.
pub fn shard_history(group: u32, index: u64) -> [u8; 12] {
    raft_log(group, index)
}

/// Inverse of [`shard_history`].
pub fn parse_shard_history(key: &[u8]) -> Option<(u32, u64)> {
    parse_raft_log(key)
}

/// Part of an exception in `shard_exceptions`: the transaction and reason (written when it
/// arises).
pub const EXCEPTION_PART_ENTRY: u8 = 0;
/// Part of an exception in `shard_exceptions`: its resolution (written when it is resolved, so
/// the first part is never rewritten).
pub const EXCEPTION_PART_RESOLUTION: u8 = 1;

/// `shard_exceptions` key: group, the shard's exception number, then the part.
pub fn shard_exception(group: u32, number: u64, part: u8) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..12].copy_from_slice(&raft_log(group, number));
    key[12] = part;
    key
}

/// Inverse of [`shard_exception`].
pub fn parse_shard_exception(key: &[u8]) -> Option<(u32, u64, u8)> {
    let (&part, head) = key.split_last()?;
    let (group, number) = parse_raft_log(head)?;
    Some((group, number, part))
}

/// `meta_control` key: group, the record space, then the record's key in that space.
pub fn meta_control(group: u32, space: u8, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + key.len());
    out.extend_from_slice(&group.to_be_bytes());
    out.push(space);
    out.extend_from_slice(key);
    out
}

/// Inverse of [`meta_control`]: group, space and the key within it.
pub fn parse_meta_control(key: &[u8]) -> Option<(u32, u8, &[u8])> {
    let group: [u8; 4] = key.get(..4)?.try_into().ok()?;
    let (&space, rest) = key.get(4..)?.split_first()?;
    Some((u32::from_be_bytes(group), space, rest))
}

/// `meta_audit` key: group, then the audit record's sequence.
pub fn meta_audit(group: u32, seq: u64) -> [u8; 12] {
    raft_log(group, seq)
}

/// Inverse of [`meta_audit`].
pub fn parse_meta_audit(key: &[u8]) -> Option<(u32, u64)> {
    parse_raft_log(key)
}

/// `control` key: a one-byte record space, then the record's key in that space. Keys of one
/// space are contiguous, so a space is scanned by its prefix.
pub fn control(space: u8, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(space);
    out.extend_from_slice(key);
    out
}

/// Inverse of [`control`]: the space and the key within it.
pub fn parse_control(key: &[u8]) -> Option<(u8, &[u8])> {
    key.split_first().map(|(space, rest)| (*space, rest))
}

/// `audit` key: the audit record's sequence.
pub fn audit(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_keys_sort_numerically() {
        let values = [0u64, 1, 255, 256, 65_535, 1 << 40, u64::MAX];
        for pair in values.windows(2) {
            assert!(seq(pair[0]) < seq(pair[1]));
            assert_eq!(parse_seq(&seq(pair[0])), Some(pair[0]));
        }
        assert_eq!(parse_seq(b"short"), None);
    }

    #[test]
    fn instant_keys_sort_like_instants() {
        let values = [i128::MIN, -1_000_000_000, -1, 0, 1, 1_767_225_600_000_000_000, i128::MAX];
        for pair in values.windows(2) {
            assert!(instant(Instant(pair[0])) < instant(Instant(pair[1])), "{pair:?}");
        }
        for v in values {
            assert_eq!(parse_instant(&instant(Instant(v))), Some(Instant(v)));
        }
    }

    #[test]
    fn raft_keys_sort_by_group_then_index() {
        assert!(raft_log(1, u64::MAX) < raft_log(2, 0));
        assert!(raft_log(7, 255) < raft_log(7, 256));
        assert_eq!(parse_raft_log(&raft_log(9, 12345)), Some((9, 12345)));
        let (start, end) = group_range(7);
        assert!(start.as_slice() <= raft_log(7, 0).as_slice());
        assert!(raft_log(7, u64::MAX).as_slice() < end.as_slice());
        assert!(end.as_slice() <= raft_log(8, 0).as_slice());
        assert!(shard_account(3, "zz") < shard_account(4, "a"));
    }

    #[test]
    fn one_partner_keys_never_prefix_another() {
        // Without the length prefix "ab" + start would collide with "abc"'s range.
        let a = statement("ab", Instant(0));
        let prefix_abc = partner_prefix("abc");
        assert!(!a.starts_with(&prefix_abc));
        assert!(!prefix_abc.starts_with(&partner_prefix("ab")));
        assert!(statement("ab", Instant(-5)) < statement("ab", Instant(5)));
        assert!(partner("p") < contract_version("p", 0));
        assert!(contract_version("p", 1) < contract_version("p", 256));
    }

    #[test]
    fn cluster_read_model_keys_sort_by_group_first() {
        assert!(shard_history(1, u64::MAX) < shard_history(2, 0));
        assert_eq!(parse_shard_history(&shard_history(3, 77)), Some((3, 77)));
        let e = shard_exception(5, 9, EXCEPTION_PART_RESOLUTION);
        assert_eq!(parse_shard_exception(&e), Some((5, 9, EXCEPTION_PART_RESOLUTION)));
        // An exception's parts are adjacent and before the next exception's.
        assert!(shard_exception(5, 9, EXCEPTION_PART_ENTRY) < e);
        assert!(e < shard_exception(5, 10, EXCEPTION_PART_ENTRY));
        assert!(shard_exception(5, u64::MAX, 1).as_slice() < group_range(5).1.as_slice());
        let c = meta_control(0, 3, b"abc");
        assert_eq!(parse_meta_control(&c), Some((0, 3, &b"abc"[..])));
        assert!(meta_control(0, 3, b"zzz") < meta_control(0, 4, b""));
        assert!(meta_control(0, 255, b"zzz").as_slice() < group_range(0).1.as_slice());
        assert!(meta_audit(0, 255) < meta_audit(0, 256));
        assert_eq!(parse_meta_audit(&meta_audit(0, 12)), Some((0, 12)));
    }

    #[test]
    fn control_spaces_are_contiguous() {
        assert!(control(1, b"zzz") < control(2, b""));
        assert_eq!(parse_control(&control(7, b"k")), Some((7, &b"k"[..])));
        assert!(audit(9) < audit(10));
    }
}
