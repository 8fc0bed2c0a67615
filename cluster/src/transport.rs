//! Node-to-node traffic over QUIC: Raft RPCs (append, vote, snapshot) of every group, requests
//! forwarded to a shard's leader, and status queries. Each node keeps one connection per peer;
//! every RPC is one bidirectional stream on it, so the appends of the 65 groups to one peer
//! travel together in the same packets without head-of-line blocking.
//!
//! Peers authenticate each other with mutual TLS: both sides present the cluster certificate and
//! accept only a peer that presents that same certificate (pinned; names are not checked, so
//! nodes need no per-node certificates).

use crate::types::{Cmd, GroupId, NodeId, Resp, TypeConfig};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// ALPN of the peer protocol (never accepted on the client port, and the reverse).
pub const PEER_ALPN: &[u8] = b"settle-peer/1";
/// Largest peer message accepted.
pub const MAX_PEER_MESSAGE_BYTES: usize = 256 << 20;
/// Time to establish a connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long resolving a peer's DNS name may take before the call counts as unreachable.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest `HOST:PORT` accepted as a peer address (a DNS name is at most 253 bytes).
pub const MAX_PEER_ADDR_BYTES: usize = 261;

/// The address others use to reach a socket bound at `bound`: `HOST:PORT` with the advertised
/// host (`--advertise`, e.g. a pod's stable DNS name) when given, else the bound address itself.
pub fn advertised_addr(host: Option<&str>, bound: SocketAddr) -> String {
    match host {
        Some(h) if h.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{h}]:{}", bound.port()),
        Some(h) => format!("{h}:{}", bound.port()),
        None => bound.to_string(),
    }
}

/// Checks that `addr` is a peer address: `IP:PORT`, `[IPv6]:PORT` or `DNS-NAME:PORT`. Names are
/// kept as given and resolved at each connection.
pub fn check_peer_addr(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    if addr.len() > MAX_PEER_ADDR_BYTES {
        return Err(format!("{addr:?}: longer than {MAX_PEER_ADDR_BYTES} bytes"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?}: expected HOST:PORT"));
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{addr:?}: the port must be 1 to 65535"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err(format!("{addr:?}: {host:?} is neither an IP address nor a DNS name"));
    }
    Ok(())
}
/// A peer connection silent this long is closed (keep-alives every quarter of it keep live ones
/// open), so a killed peer's connection is dropped and a restarted peer reconnected quickly.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Concurrent RPC streams one peer may open.
pub const MAX_PEER_STREAMS: u32 = 4096;

/// Why a forwarded request was not done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    #[error("this node does not lead the group (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    #[error("{0}")]
    Failed(String),
}

/// What one group looks like from one replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group: GroupId,
    pub leader: Option<NodeId>,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The settled state's hash (shards only).
    pub state_hash: Option<String>,
    /// The last log index of the group's current snapshot (built here or installed).
    pub snapshot_index: Option<u64>,
    /// The last log index purged from the group's log here (entries up to it are gone).
    pub purged_index: Option<u64>,
    /// Snapshots this replica installed since its process started.
    pub snapshots_installed: u64,
}

/// A node's answer to a status query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub info: crate::meta::NodeInfo,
    pub groups: Vec<GroupStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReq {
    Append {
        group: GroupId,
        req: AppendEntriesRequest<TypeConfig>,
    },
    Vote {
        group: GroupId,
        req: VoteRequest<NodeId>,
    },
    Snapshot {
        group: GroupId,
        req: InstallSnapshotRequest<TypeConfig>,
    },
    /// Propose on this node, which should lead the group.
    Forward {
        group: GroupId,
        cmd: Cmd,
    },
    Status,
    /// A read on the group's leader (linearizable).
    Read {
        group: GroupId,
        read: crate::reads::ShardRead,
    },
    /// The cluster's configuration (for a node joining with `--join`).
    Config,
    /// On the group's leader: add `add` as learners (waiting until they caught up), then make
    /// `voters` the group's voters.
    Reconfigure {
        group: GroupId,
        add: Vec<(NodeId, String)>,
        voters: std::collections::BTreeSet<NodeId>,
    },
    /// To a follower of a group that `from` leads and is leaving (shutting down): campaign now,
    /// so that leadership moves without waiting for an election timeout. New variants go last:
    /// the variant's position is its tag on the wire, and older nodes refuse tags they do not know.
    Campaign {
        group: GroupId,
        from: NodeId,
    },
    /// The group's membership as this node's replica sees it (a replica that lost track of its
    /// group asks whether it was removed).
    Membership {
        group: GroupId,
    },
}

/// One replica's view of its group's membership, for [`PeerReq::Membership`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    pub leader: Option<NodeId>,
    /// The log index of the membership configuration in effect.
    pub config_index: Option<u64>,
    /// Whether that configuration is applied here (so committed).
    pub committed: bool,
    /// Voters and learners of that configuration.
    pub members: Vec<NodeId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResp {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Forward(Result<Resp, ForwardError>),
    Status(Box<NodeStatus>),
    Read(Result<crate::reads::ShardAnswer, ForwardError>),
    Config(crate::meta::ClusterConfig),
    /// The request could not be served at all (e.g. a group this node does not hold).
    Refused(String),
    /// Whether the campaign asked for ended with a leader other than the leaving one.
    Campaign(bool),
    /// `None`: this node holds no replica of the group.
    Membership(Option<MembershipView>),
}

/// Why a peer call failed; the request may or may not have been served.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0} is unreachable: {1}")]
    Unreachable(NodeId, String),
    #[error("peer {0}: {1}")]
    Io(NodeId, String),
    #[error("peer {0} timed out")]
    Timeout(NodeId),
    #[error("peer {0} refused: {1}")]
    Refused(NodeId, String),
}

/// The TLS material every member shares.
#[derive(Debug)]
pub struct PeerTls {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    fn check(&self, presented: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if presented.as_ref() == self.cert.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::General("the peer did not present the cluster certificate".into()))
        }
    }
}

/// Signature checks shared by both verifier roles (the peer's key is checked the same way
/// whichever side it is on).
impl Pinned {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_configs(tls: &PeerTls) -> Result<(quinn::ServerConfig, quinn::ClientConfig), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = tls.chain.first().ok_or("the cluster certificate chain is empty")?.clone();
    let pinned = Arc::new(Pinned { cert, provider: Arc::clone(&provider) });
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(pinned.clone())
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| e.to_string())?;
    server.alpn_protocols = vec![PEER_ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(pinned)
        .with_client_auth_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| e.to_string())?;
    client.alpn_protocols = vec![PEER_ALPN.to_vec()];
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_PEER_STREAMS));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    transport.max_idle_timeout(PEER_IDLE_TIMEOUT.try_into().ok());
    transport.keep_alive_interval(Some(PEER_IDLE_TIMEOUT / 4));
    // Raft traffic is bursts of large appends: generous windows keep a follower from stalling.
    transport.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    transport.receive_window(quinn::VarInt::from_u32(64 << 20));
    transport.send_window(64 << 20);
    let transport = Arc::new(transport);
    let server_quic = quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(|e| e.to_string())?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_quic));
    server.transport_config(Arc::clone(&transport));
    let client_quic = quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| e.to_string())?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_quic));
    client.transport_config(transport);
    Ok((server, client))
}

/// Serves peer requests.
pub trait PeerService: Send + Sync + 'static {
    fn handle(&self, req: PeerReq) -> impl Future<Output = PeerResp> + Send;
}

/// The node's peer endpoint: accepts peers' calls and makes calls to peers.
#[derive(Debug)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    /// Per peer, `HOST:PORT` as configured: an IP address or a DNS name, resolved at every new
    /// connection (a pod keeps its name across restarts, not its IP).
    addrs: std::sync::Mutex<HashMap<NodeId, String>>,
    /// Per peer, its connection; each slot has its own lock, so connecting to a dead peer never
    /// delays calls to the others.
    conns: std::sync::Mutex<HashMap<NodeId, Slot>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

impl Peers {
    /// Binds `listen`.
    pub fn bind(listen: SocketAddr, tls: &PeerTls) -> Result<Arc<Peers>, String> {
        let (server, client) = tls_configs(tls)?;
        // A stateless-reset key (and connection-id key) that survives restarts and is the same
        // on every member: a restarted peer answers packets of the connections its previous
        // process had with a reset the sender can verify, so the sender reconnects at once
        // instead of sending into a dead connection until its idle timeout. Derived from the
        // cluster's private key, which only members hold.
        let mut seed = Sha256::new();
        seed.update(b"settle-peer-stateless-reset/1");
        seed.update(tls.key.secret_der());
        let secret = seed.finalize();
        let mut endpoint_config =
            quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret)));
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&secret[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        endpoint_config
            .cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
        let listen_err = |e: std::io::Error| format!("cannot listen on {listen}: {e}");
        let socket = std::net::UdpSocket::bind(listen).map_err(listen_err)?;
        let runtime = quinn::default_runtime().ok_or_else(|| "no async runtime".to_string())?;
        let mut endpoint =
            quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime).map_err(listen_err)?;
        endpoint.set_default_client_config(client);
        Ok(Arc::new(Peers {
            endpoint,
            addrs: std::sync::Mutex::new(HashMap::new()),
            conns: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    pub fn local_addr(&self) -> Result<SocketAddr, String> {
        self.endpoint.local_addr().map_err(|e| e.to_string())
    }

    /// Records (or changes) where a peer listens (`HOST:PORT`, see [`check_peer_addr`]).
    pub fn set_addr(&self, node: NodeId, addr: impl Into<String>) {
        self.addrs.lock().unwrap_or_else(|e| e.into_inner()).insert(node, addr.into());
    }

    fn addr(&self, node: NodeId) -> Option<String> {
        self.addrs.lock().unwrap_or_else(|e| e.into_inner()).get(&node).cloned()
    }

    /// The socket address to dial for `addr`: itself when it is an IP address, else the first
    /// address its name resolves to in the endpoint's family.
    async fn resolve(&self, node: NodeId, addr: &str) -> Result<SocketAddr, PeerError> {
        if let Ok(ip) = addr.parse::<SocketAddr>() {
            return Ok(ip);
        }
        let want_v6 = self.endpoint.local_addr().is_ok_and(|a| a.is_ipv6());
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(addr))
            .await
            .map_err(|_| PeerError::Unreachable(node, format!("resolving {addr} timed out")))?
            .map_err(|e| PeerError::Unreachable(node, format!("cannot resolve {addr}: {e}")))?;
        let mut first = None;
        for a in found {
            if a.is_ipv6() == want_v6 {
                return Ok(a);
            }
            first.get_or_insert(a);
        }
        // A dual-stack endpoint bound to `[::]` also reaches IPv4 peers.
        first.filter(|_| want_v6).ok_or_else(|| {
            PeerError::Unreachable(node, format!("{addr} resolves to no address this endpoint can reach"))
        })
    }

    /// Accepts peers until the endpoint closes; every stream is one request served by `service`.
    pub fn serve<S: PeerService>(self: &Arc<Self>, service: Arc<S>) -> tokio::task::JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let service = Arc::clone(&service);
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let service = Arc::clone(&service);
                        tokio::spawn(async move {
                            let Ok(bytes) = recv.read_to_end(MAX_PEER_MESSAGE_BYTES).await else { return };
                            let resp = match bincode::deserialize::<PeerReq>(&bytes) {
                                Ok(req) => service.handle(req).await,
                                Err(e) => PeerResp::Refused(format!("undecodable request: {e}")),
                            };
                            let Ok(out) = bincode::serialize(&resp) else { return };
                            if send.write_all(&out).await.is_ok() {
                                let _ = send.finish();
                                let _ = send.stopped().await;
                            }
                        });
                    }
                });
            }
        })
    }

    fn slot(&self, node: NodeId) -> Slot {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(conns.entry(node).or_default())
    }

    async fn connection(&self, node: NodeId) -> Result<quinn::Connection, PeerError> {
        let mut conn = self.slot(node).lock_owned().await;
        if let Some(c) = conn.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        *conn = None;
        let name = self.addr(node).ok_or_else(|| PeerError::Unreachable(node, "address unknown".into()))?;
        let addr = self.resolve(node, &name).await?;
        let connecting = self
            .endpoint
            .connect(addr, "localhost")
            .map_err(|e| PeerError::Unreachable(node, e.to_string()))?;
        // The handshake runs on its own task, holding the slot: openraft gives an append the
        // heartbeat interval (200 ms) and drops it after, and a handshake with a peer that just
        // restarted (busy opening its groups) takes longer. Cancelled with each call, it would
        // never complete and no append would reach that peer; detached, it completes once and
        // every later call uses the connection.
        let handshake = tokio::spawn(async move {
            let c = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| PeerError::Unreachable(node, "connect timed out".into()))?
                .map_err(|e| PeerError::Unreachable(node, e.to_string()))?;
            *conn = Some(c.clone());
            Ok(c)
        });
        handshake.await.map_err(|e| PeerError::Unreachable(node, e.to_string()))?
    }

    /// Forgets `conn` if it is still the cached connection to `node` (after a failed call: a
    /// peer that was killed and restarted must get a fresh connection at once).
    async fn forget(&self, node: NodeId, conn: &quinn::Connection) {
        let slot = self.slot(node);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| c.stable_id() == conn.stable_id()) {
            conn.close(quinn::VarInt::from_u32(1), b"failed call");
            *cached = None;
        }
    }

    /// One request to `node`, answered within `timeout`.
    pub async fn call(&self, node: NodeId, req: &PeerReq, timeout: Duration) -> Result<PeerResp, PeerError> {
        let bytes = bincode::serialize(req).map_err(|e| PeerError::Io(node, e.to_string()))?;
        let conn = self.connection(node).await?;
        let exchange = async {
            let (mut send, mut recv) =
                conn.open_bi().await.map_err(|e| PeerError::Io(node, e.to_string()))?;
            send.write_all(&bytes).await.map_err(|e| PeerError::Io(node, e.to_string()))?;
            send.finish().map_err(|e| PeerError::Io(node, e.to_string()))?;
            let answer = recv
                .read_to_end(MAX_PEER_MESSAGE_BYTES)
                .await
                .map_err(|e| PeerError::Io(node, e.to_string()))?;
            bincode::deserialize::<PeerResp>(&answer).map_err(|e| PeerError::Io(node, e.to_string()))
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(PeerResp::Refused(why))) => Err(PeerError::Refused(node, why)),
            Ok(result) => result,
            Err(_) => Err(PeerError::Timeout(node)),
        };
        // A timeout says nothing about the connection (the peer may just be slow); a dead peer's
        // connection ends at the idle timeout.
        if matches!(result, Err(PeerError::Io(..))) {
            self.forget(node, &conn).await;
        }
        result
    }

    /// Closes the endpoint (peers see the connection close at once).
    pub fn close(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
    }
}
