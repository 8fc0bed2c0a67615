//! The bytes of a group's Raft snapshot.
//!
//! A snapshot is the group's in-memory state as of a log id (its image) plus the group's query
//! records (every row of `keys::GROUP_STATE_CFS`). The node stores only the first part, under
//! `raft_state` tag 3 (`RaftStateKey::Snapshot`): the records are in the group's own families
//! already, so they are read from a RocksDB snapshot when the snapshot is sent, not copied at
//! every build.
//!
//! ```text
//! stored:  format u8 | head length u32 | head (bincode) | image length u64 | image (bincode)
//! sent:    stored | rows until the end: family u8 | key length u32 | key | value length u32 | value
//! ```
//!
//! The rows sent may include records of entries committed after the snapshot's log id (they
//! are read once everything up to it is written, and apply goes on meanwhile). That is safe:
//! every such entry is committed, so the replica that installs the snapshot applies it next,
//! and applying an entry writes exactly the records it wrote on the sender (apply is a function
//! of the entries), so those rows are rewritten with the same bytes; and until then a read on
//! that replica waits for its applied index anyway.

use crate::meta::MetaState;
use crate::shard::ShardImage;
use crate::types::{GroupId, LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use settle_storage::GroupRow;

/// The snapshot format; bump with any change to the layout above or to the images.
pub const SNAPSHOT_FORMAT: u8 = 1;

/// What the snapshot is of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHead {
    pub group: GroupId,
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
}

/// A group's in-memory state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Image {
    Meta(MetaState),
    Shard(Box<ShardImage>),
}

/// A snapshot read back: its head, its image, and the rows after it (when it was sent).
#[derive(Debug)]
pub struct Parsed {
    pub head: SnapshotHead,
    pub image: Image,
    /// Length of the stored part (what a replica keeps after installing it).
    pub stored_len: usize,
    pub rows: Vec<GroupRow>,
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize, what: &str) -> Result<&'a [u8], String> {
    let end = at
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| format!("snapshot: {what} cut short"))?;
    let out = &bytes[*at..end];
    *at = end;
    Ok(out)
}

fn take_u32(bytes: &[u8], at: &mut usize, what: &str) -> Result<usize, String> {
    let raw: [u8; 4] = take(bytes, at, 4, what)?.try_into().map_err(|_| format!("snapshot: {what}"))?;
    usize::try_from(u32::from_be_bytes(raw)).map_err(|_| format!("snapshot: {what} too long"))
}

fn take_u64(bytes: &[u8], at: &mut usize, what: &str) -> Result<usize, String> {
    let raw: [u8; 8] = take(bytes, at, 8, what)?.try_into().map_err(|_| format!("snapshot: {what}"))?;
    usize::try_from(u64::from_be_bytes(raw)).map_err(|_| format!("snapshot: {what} too long"))
}

/// The stored part of a snapshot.
pub fn encode_stored(head: &SnapshotHead, image: &Image) -> Result<Vec<u8>, String> {
    let head = bincode::serialize(head).map_err(|e| format!("snapshot head: {e}"))?;
    let image = bincode::serialize(image).map_err(|e| format!("snapshot image: {e}"))?;
    let head_len = u32::try_from(head.len()).map_err(|_| "snapshot head too long".to_string())?;
    let mut out = Vec::with_capacity(1 + 4 + head.len() + 8 + image.len());
    out.push(SNAPSHOT_FORMAT);
    out.extend_from_slice(&head_len.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&(image.len() as u64).to_be_bytes());
    out.extend_from_slice(&image);
    Ok(out)
}

/// Appends one row to a snapshot being sent.
pub fn append_row(out: &mut Vec<u8>, family: u8, key: &[u8], value: &[u8]) -> Result<(), String> {
    let key_len = u32::try_from(key.len()).map_err(|_| "snapshot row key too long".to_string())?;
    let value_len = u32::try_from(value.len()).map_err(|_| "snapshot row value too long".to_string())?;
    out.push(family);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&value_len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

fn parse_head(bytes: &[u8], at: &mut usize) -> Result<SnapshotHead, String> {
    match take(bytes, at, 1, "format")? {
        [SNAPSHOT_FORMAT] => {}
        other => return Err(format!("snapshot format {other:?}, this build reads {SNAPSHOT_FORMAT}")),
    }
    let n = take_u32(bytes, at, "head length")?;
    bincode::deserialize(take(bytes, at, n, "head")?).map_err(|e| format!("snapshot head: {e}"))
}

/// The head alone (what openraft needs at start, without decoding the image).
pub fn head(bytes: &[u8]) -> Result<SnapshotHead, String> {
    parse_head(bytes, &mut 0)
}

/// A stored or sent snapshot.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut at = 0;
    let head = parse_head(bytes, &mut at)?;
    let n = take_u64(bytes, &mut at, "image length")?;
    let image = bincode::deserialize(take(bytes, &mut at, n, "image")?)
        .map_err(|e| format!("snapshot image: {e}"))?;
    let stored_len = at;
    let mut rows = Vec::new();
    while at < bytes.len() {
        let family = take(bytes, &mut at, 1, "row family")?[0];
        let n = take_u32(bytes, &mut at, "row key length")?;
        let key = take(bytes, &mut at, n, "row key")?.to_vec();
        let n = take_u32(bytes, &mut at, "row value length")?;
        let value = take(bytes, &mut at, n, "row value")?.to_vec();
        rows.push(GroupRow { family, key, value });
    }
    Ok(Parsed { head, image, stored_len, rows })
}

/// openraft's id of a snapshot (unique per group and log id: equal ids mean equal snapshots).
pub fn snapshot_id(head: &SnapshotHead) -> String {
    match head.last_log_id {
        Some(l) => format!("{}-{l}", head.group),
        None => format!("{}-none", head.group),
    }
}
