//! The Raft type configuration shared by every group, and the commands and responses carried in
//! the log. Commands serialize to the storage codec's compact encodings (a whole client batch of
//! transactions is one entry); in memory they stay decoded behind an `Arc`, so the leader never
//! decodes what it proposed and cloning an entry is cheap.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, FxRate, Instant, Partner, TxInput};
use settle_storage::{codec, history, LogEntry, Resolution};
use std::io::Cursor;
use std::sync::Arc;

/// A node of the cluster (`--id`).
pub type NodeId = u64;
/// A Raft group: [`META_GROUP`] or a shard's group (`shard + 1`).
pub type GroupId = u32;
/// The metadata group (node registry, placement); every initial member votes in it.
pub const META_GROUP: GroupId = 0;

/// The group of a 0-based shard.
pub fn shard_group(shard: u32) -> GroupId {
    shard.saturating_add(1)
}

/// The shard of a partner: FNV-1a of its id, modulo the shard count. A stable function of the
/// id (never of the process or the build), so every node routes a partner alike.
pub fn shard_of(partner: &str, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in partner.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}

openraft::declare_raft_types!(
    /// The type configuration of every Settle Raft group.
    pub TypeConfig:
        D = Cmd,
        R = Resp,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;

/// Transactions for one shard, with their encoding made once: an entry is encoded for the
/// leader's log and for every follower's append, and a follower keeps the bytes it decoded.
#[derive(Debug, PartialEq)]
pub struct TxList {
    pub txs: Vec<TxInput>,
    encoded: std::sync::OnceLock<Vec<u8>>,
}

impl TxList {
    pub fn new(txs: Vec<TxInput>) -> TxList {
        TxList { txs, encoded: std::sync::OnceLock::new() }
    }

    fn encoded(&self) -> &[u8] {
        self.encoded.get_or_init(|| {
            let mut out = Vec::new();
            codec::encode_tx_list(&mut out, &self.txs);
            out
        })
    }
}

/// Transactions stamped by the shard leader with one `received_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct TxBatch {
    pub received_at: Instant,
    pub txs: Arc<TxList>,
}

/// What the metadata group records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCmd {
    /// A node's addresses (every node registers itself when it starts serving).
    RegisterNode(crate::meta::NodeInfo),
    /// The node left the cluster.
    RemoveNode(NodeId),
    /// The replicas a shard should have (the first one is the preferred leader).
    Place { shard: u32, nodes: Vec<NodeId> },
    /// An atomic batch of control-plane writes (users, keys, sessions, ..., audit records),
    /// applied only if every precondition in it holds (see [`crate::meta::ControlOp`]).
    Control(Vec<crate::meta::ControlOp>),
}

/// A command of a Raft log entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Cmd {
    /// A client batch for one shard (the leader's stamp is inside).
    Txs(TxBatch),
    /// An FX publication; proposed to every shard, so each shard orders it against its
    /// transactions in its own log.
    Rates(Arc<Vec<FxRate>>),
    Register(Arc<Partner>),
    AddVersion(Arc<(String, ContractVersion)>),
    /// Closes every period of the shard due at this instant (proposed by the shard leader).
    Tick(Instant),
    /// Resolves (or completes the claimed retry of) the shard's exception with this number.
    Resolve(Arc<(u64, Resolution)>),
    /// Removes the shard's history rows at these log indexes (at most [`MAX_PRUNE_ROWS`]):
    /// rows chosen by a leader because every transaction in them is in an archived period (or
    /// is an exception, which the queue keeps). A row never changes once written, so the
    /// choice holds on every replica; the indexes are in the entry, so every replica removes
    /// the same rows whatever its writer had flushed when the entry applied.
    Prune(Arc<Vec<u64>>),
    Meta(MetaCmd),
}

/// Most history rows one `Cmd::Prune` removes (a few dozen KiB of entry, one write batch).
pub const MAX_PRUNE_ROWS: usize = 4096;

/// First byte of an encoded metadata command (the other tags are the storage codec's).
const TAG_META: u8 = 0x80;
/// First byte of an encoded resolution command.
const TAG_RESOLVE: u8 = 0x81;
/// First byte of an encoded prune command (storage format 4 on: older nodes do not know it).
const TAG_PRUNE: u8 = 0x82;

fn encode_prune(out: &mut Vec<u8>, indices: &[u64]) {
    out.push(TAG_PRUNE);
    out.extend_from_slice(&(indices.len() as u32).to_be_bytes());
    for index in indices {
        out.extend_from_slice(&index.to_be_bytes());
    }
}

fn decode_prune(bytes: &[u8]) -> Result<Vec<u64>, String> {
    let (count, rest) = bytes.split_first_chunk::<4>().ok_or("prune command: truncated count")?;
    let count = u32::from_be_bytes(*count) as usize;
    if count > MAX_PRUNE_ROWS {
        return Err(format!("prune command: {count} rows, at most {MAX_PRUNE_ROWS}"));
    }
    if rest.len() != count.saturating_mul(8) {
        return Err("prune command: length does not match its count".into());
    }
    Ok(rest.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default())).collect())
}

impl Cmd {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Cmd::Txs(batch) => {
                codec::encode_tx_batch_head(out, batch.received_at);
                out.extend_from_slice(batch.txs.encoded());
            }
            Cmd::Rates(rates) => codec::encode_rates_entry(out, rates),
            Cmd::Register(partner) => codec::encode_partner_entry(out, partner),
            Cmd::AddVersion(v) => codec::encode_contract_version_entry(out, &v.0, &v.1),
            Cmd::Tick(at) => codec::encode_tick_entry(out, *at),
            Cmd::Resolve(r) => {
                out.push(TAG_RESOLVE);
                history::encode_resolve_command(out, r.0, &r.1);
            }
            Cmd::Prune(indices) => encode_prune(out, indices),
            Cmd::Meta(meta) => {
                out.push(TAG_META);
                // Plain data with string keys: serialising into a Vec cannot fail.
                let _ = serde_json::to_writer(out, meta);
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Cmd, String> {
        match bytes.first() {
            Some(&codec::LOG_TX_BATCH) => {
                let (received_at, txs, list) = codec::decode_tx_batch(bytes).map_err(|e| e.to_string())?;
                let encoded = std::sync::OnceLock::from(bytes.get(list..).unwrap_or_default().to_vec());
                Ok(Cmd::Txs(TxBatch { received_at, txs: Arc::new(TxList { txs, encoded }) }))
            }
            Some(&TAG_META) => serde_json::from_slice(&bytes[1..]).map(Cmd::Meta).map_err(|e| e.to_string()),
            Some(&TAG_RESOLVE) => history::decode_resolve_command(&bytes[1..])
                .map(|r| Cmd::Resolve(Arc::new(r)))
                .map_err(|e| e.to_string()),
            Some(&TAG_PRUNE) => decode_prune(&bytes[1..]).map(|i| Cmd::Prune(Arc::new(i))),
            _ => match codec::decode_log_entry(bytes).map_err(|e| e.to_string())? {
                LogEntry::Rates(rates) => Ok(Cmd::Rates(Arc::new(rates))),
                LogEntry::Partner(partner) => Ok(Cmd::Register(Arc::new(partner))),
                LogEntry::ContractVersion { partner, version } => {
                    Ok(Cmd::AddVersion(Arc::new((partner, version))))
                }
                LogEntry::Tick(at) => Ok(Cmd::Tick(at)),
                LogEntry::Tx { .. } | LogEntry::FxMaxAge(_) => {
                    Err("a standalone log record is not a cluster command".into())
                }
            },
        }
    }
}

impl Serialize for Cmd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::new();
        self.encode(&mut out);
        s.serialize_bytes(&out)
    }
}

impl<'de> Deserialize<'de> for Cmd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cmd, D::Error> {
        let bytes: serde_bytes_buf::Buf = serde::de::Deserialize::deserialize(d)?;
        let bytes = bytes.0;
        Cmd::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

/// What applying an entry answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    /// One result per transaction of a `Cmd::Txs`, in order.
    Txs(Vec<TxResult>),
    /// Control commands (and blank/membership entries): done, or refused with a reason.
    Done(Result<(), String>),
}

impl Serialize for Resp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::new();
        match self {
            Resp::Txs(results) => {
                out.push(0);
                codec::encode_tx_results(&mut out, results);
            }
            Resp::Done(result) => {
                out.push(1);
                let _ = serde_json::to_writer(&mut out, result);
            }
        }
        s.serialize_bytes(&out)
    }
}

impl<'de> Deserialize<'de> for Resp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Resp, D::Error> {
        let bytes = serde_bytes_buf::Buf::deserialize(d)?.0;
        match bytes.split_first() {
            Some((0, rest)) => {
                codec::decode_tx_results(rest).map(Resp::Txs).map_err(serde::de::Error::custom)
            }
            Some((1, rest)) => serde_json::from_slice(rest).map(Resp::Done).map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom("unknown response tag")),
        }
    }
}

/// Reads a byte string as one bulk copy (a plain `Vec<u8>` would be read byte by byte).
mod serde_bytes_buf {
    pub struct Buf(pub Vec<u8>);

    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Buf;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Buf, E> {
            Ok(Buf(v.to_vec()))
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Buf, E> {
            Ok(Buf(v))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Buf, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(Buf(out))
        }
    }

    impl<'de> serde::Deserialize<'de> for Buf {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Buf, D::Error> {
            d.deserialize_byte_buf(Visitor)
        }
    }
}

/// Snapshot bytes as openraft streams them.
pub type SnapshotData = Cursor<Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(id: &str, amount: &str) -> TxInput {
        let value = serde_json::json!({"id": id, "partner": "p", "kind": "sale", "amount": amount,
            "currency": "EUR", "occurred_at": "2026-01-02T10:00:00Z", "metadata": {"k": [1, 2]}});
        settle_core::scenario::parse_transaction(&value, "tx", Some(Instant(5))).unwrap()
    }

    #[test]
    fn commands_and_responses_round_trip_through_bincode() {
        let txs = vec![tx("a", "10.00"), tx("b", "0.01")];
        let cmd = Cmd::Txs(TxBatch { received_at: Instant(1_700_000_000), txs: Arc::new(TxList::new(txs)) });
        let bytes = bincode::serialize(&cmd).unwrap();
        let back: Cmd = bincode::deserialize(&bytes).unwrap();
        let Cmd::Txs(batch) = &back else { panic!("{back:?}") };
        assert_eq!(batch.received_at, Instant(1_700_000_000));
        assert_eq!(batch.txs.txs.len(), 2);
        // Every transaction carries the batch's stamp, whatever it had before.
        assert!(batch.txs.txs.iter().all(|t| t.received_at == Instant(1_700_000_000)));
        // Encoding the decoded command again gives the same bytes (the kept encoding).
        assert_eq!(bincode::serialize(&back).unwrap(), bytes);
        let meta = Cmd::Meta(MetaCmd::RemoveNode(4));
        assert_eq!(bincode::deserialize::<Cmd>(&bincode::serialize(&meta).unwrap()).unwrap(), meta);
        let control = Cmd::Meta(MetaCmd::Control(vec![
            crate::meta::ControlOp::Expect { space: 1, key: "admin".into(), value: None },
            crate::meta::ControlOp::Put { space: 1, key: "admin".into(), value: vec![0, 255] },
        ]));
        assert_eq!(bincode::deserialize::<Cmd>(&bincode::serialize(&control).unwrap()).unwrap(), control);
        let resolution = Resolution {
            action: settle_storage::ResolutionAction::Reject { reason: "no".into() },
            by: "user:a".into(),
            at: Instant(3),
        };
        let resolve = Cmd::Resolve(Arc::new((7, resolution)));
        assert_eq!(bincode::deserialize::<Cmd>(&bincode::serialize(&resolve).unwrap()).unwrap(), resolve);
        for indices in [vec![], vec![0, 7, u64::MAX]] {
            let prune = Cmd::Prune(Arc::new(indices));
            assert_eq!(bincode::deserialize::<Cmd>(&bincode::serialize(&prune).unwrap()).unwrap(), prune);
        }
        let mut prune = Vec::new();
        encode_prune(&mut prune, &[1, 2]);
        assert!(Cmd::decode(&prune[..prune.len() - 1]).is_err(), "a short prune command");
        prune[1..5].copy_from_slice(&(MAX_PRUNE_ROWS as u32 + 1).to_be_bytes());
        assert!(Cmd::decode(&prune).is_err(), "a count over the limit");
        for resp in [Resp::Done(Ok(())), Resp::Done(Err("no".into()))] {
            assert_eq!(bincode::deserialize::<Resp>(&bincode::serialize(&resp).unwrap()).unwrap(), resp);
        }
        assert!(Cmd::decode(&[]).is_err());
        assert!(Cmd::decode(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn shard_of_is_stable_and_in_range() {
        // Pinned values: changing the function would move every partner to another shard.
        assert_eq!(shard_of("", 64), (0xcbf2_9ce4_8422_2325u64 % 64) as u32);
        for shards in [1, 3, 64] {
            for p in ["a", "partner-1", "ü"] {
                assert!(shard_of(p, shards) < shards);
                assert_eq!(shard_of(p, shards), shard_of(p, shards));
            }
        }
        assert_eq!(shard_of("x", 0), 0);
    }
}
