//! The QUIC ingress: accepts connections from platforms (TLS 1.3, ALPN `settle/1`), authenticates
//! them by API key, reads one framed request per bidirectional stream, admits it against a bound on
//! in-flight requests, hands it to the engine and writes one framed response on the same stream.
//! `docs/protocol.md` is the contract this module implements.
//!
//! Nothing read from the network can panic this module: every bad frame becomes a typed error
//! response (or a closed stream when not even an error can be sent back).

pub mod auth;
pub mod backend;
pub mod convert;
mod ops;
mod private_file;
pub mod tls;

pub use auth::ApiKeys;
pub use backend::{Backend, BackendError, BalanceView};
pub use tls::TlsSource;

use settle_core::{Currency, Instant};
use settle_wire::{self as wire, request, response, ErrorCode, Response, WireError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Requests being processed at once, across all connections. Beyond it a request is answered
/// OVERLOADED at once (nothing done), so that queues never grow without bound.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 1024;
/// Concurrent connections; more are refused at the QUIC handshake.
pub const MAX_CONNECTIONS: usize = 1024;
/// Concurrent bidirectional streams a client may open on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Time a client has to send a whole request frame once it opened the stream.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the response has to be acknowledged by the client before the stream is abandoned.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame read from a connection that has not authenticated yet (an Authenticate request
/// is a few dozen bytes): unauthenticated peers cannot make the node buffer big frames.
pub const MAX_UNAUTHENTICATED_FRAME_BYTES: usize = 4 * 1024;
/// Failed Authenticate requests after which the connection is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;
/// A connection idle for this long is closed (clients send keep-alives more often).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a graceful shutdown waits for in-flight requests to be answered.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// QUIC application error codes used when closing a stream or a connection.
pub mod close_code {
    /// Normal shutdown of the node.
    pub const SHUTDOWN: u32 = 0;
    /// Too many failed authentications.
    pub const AUTH_FAILED: u32 = 1;
    /// The peer sent a frame larger than `MAX_FRAME_BYTES` (STOP_SENDING on the stream).
    pub const TOO_LARGE: u32 = 2;
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("API keys: {0}")]
    Auth(String),
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
}

#[derive(Debug)]
pub struct IngressConfig {
    pub listen: SocketAddr,
    /// Where the ingress keeps its own state (the QUIC stateless-reset key), usually the data dir.
    pub state_dir: PathBuf,
    pub tls: TlsSource,
    /// CA certificates (PEM) whose client certificates authenticate a connection without an API
    /// key (mutual TLS). `None`: API keys only.
    pub client_ca: Option<PathBuf>,
    pub keys: ApiKeys,
    pub max_in_flight: usize,
}

/// A running ingress.
#[derive(Debug)]
pub struct Ingress {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    cert_path: PathBuf,
    stop: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    accept_task: tokio::task::JoinHandle<()>,
}

struct Shared<B> {
    backend: B,
    keys: ApiKeys,
    permits: Arc<Semaphore>,
    /// Settlement currency by partner (it never changes once registered), to format amounts.
    currencies: Mutex<HashMap<String, Currency>>,
}

impl Ingress {
    /// Binds the endpoint and starts accepting connections.
    pub async fn start<B: Backend>(config: IngressConfig, backend: B) -> Result<Ingress, IngressError> {
        let material = tls::load(&config.tls)?;
        let cert_path = material.cert_path.clone();
        let client_roots = config.client_ca.as_deref().map(tls::load_client_roots).transpose()?;
        let crypto = tls::server_crypto(material, client_roots)?;
        let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
            .map_err(|e| IngressError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS_PER_CONNECTION));
        transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
        transport.max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
        server.transport_config(Arc::new(transport));
        // A stateless-reset key that survives restarts: after a crash, the restarted node answers
        // packets of connections it no longer knows with a reset the client can verify, so
        // clients notice at once instead of waiting for their idle timeout.
        let reset_key = tls::load_or_create_secret(&config.state_dir.join("quic").join("reset-key"))?;
        let mut endpoint_config =
            quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_key)));
        // Connection ids are validated with a keyed hash; the key must survive restarts too, or
        // the restarted node drops the old connections' packets as invalid instead of resetting.
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(reset_key.get(..8).unwrap_or(&[0u8; 8]));
        let cid_key = u64::from_le_bytes(cid_key);
        endpoint_config
            .cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
        let listen_err =
            |e: std::io::Error| IngressError::Listen { addr: config.listen, message: e.to_string() };
        let socket = std::net::UdpSocket::bind(config.listen).map_err(listen_err)?;
        let runtime = quinn::default_runtime().ok_or_else(|| IngressError::Listen {
            addr: config.listen,
            message: "no async runtime".into(),
        })?;
        let endpoint =
            quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime).map_err(listen_err)?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|e| IngressError::Listen { addr: config.listen, message: e.to_string() })?;
        let max_in_flight = config.max_in_flight.max(1);
        let permits = Arc::new(Semaphore::new(max_in_flight));
        let shared = Arc::new(Shared {
            backend,
            keys: config.keys,
            permits: permits.clone(),
            currencies: Mutex::new(HashMap::new()),
        });
        let (stop, stopped) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), shared, stopped));
        Ok(Ingress { endpoint, local_addr, cert_path, stop, permits, max_in_flight, accept_task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The certificate clients should trust (the dev certificate, or the one given).
    pub fn cert_path(&self) -> &std::path::Path {
        &self.cert_path
    }

    /// Stops accepting connections and streams, waits (bounded) for in-flight requests to be
    /// answered, then closes every connection.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let n = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, self.permits.acquire_many(n)).await;
        self.endpoint.close(quinn::VarInt::from_u32(close_code::SHUTDOWN), b"shutdown");
        self.accept_task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

async fn accept_loop<B: Backend>(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared<B>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = stop.changed() => return,
        };
        let Some(incoming) = incoming else { return };
        if endpoint.open_connections() >= MAX_CONNECTIONS {
            incoming.refuse();
            continue;
        }
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(connecting) = incoming.accept() else { return };
            let Ok(connection) = connecting.await else { return };
            connection_loop(connection, shared, stop).await;
        });
    }
}

/// Per-connection state: authentication happens once, then every stream may submit.
struct ConnState {
    authenticated: AtomicBool,
    auth_failures: AtomicU32,
}

async fn connection_loop<B: Backend>(
    connection: quinn::Connection,
    shared: Arc<Shared<B>>,
    mut stop: watch::Receiver<bool>,
) {
    // A client certificate is only ever present once the handshake verified it against the
    // configured client CA, so its presence alone authenticates the connection.
    let by_certificate = connection.peer_identity().is_some();
    let state = Arc::new(ConnState {
        authenticated: AtomicBool::new(by_certificate),
        auth_failures: AtomicU32::new(0),
    });
    loop {
        let stream = tokio::select! {
            s = connection.accept_bi() => s,
            _ = stop.changed() => return,
        };
        let Ok((send, recv)) = stream else { return };
        let shared = shared.clone();
        let state = state.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            handle_stream(send, recv, &connection, &shared, &state).await;
        });
    }
}

/// Why a request frame could not be read.
enum ReadFailure {
    /// The stream broke, timed out or ended early: nobody to answer.
    Gone,
    /// A large frame on a connection that has not authenticated.
    Unauthenticated,
    /// The frame is wrong: answer with this error.
    Wire(WireError),
}

async fn read_request(
    recv: &mut quinn::RecvStream,
    authenticated: bool,
) -> Result<wire::Request, ReadFailure> {
    let mut header = [0u8; wire::FRAME_HEADER_BYTES];
    recv.read_exact(&mut header).await.map_err(|_| ReadFailure::Gone)?;
    let len = match wire::frame_body_len(header) {
        Ok(len) => len,
        Err(e) => {
            // Tell the peer to stop sending the oversized body; the answer still goes back.
            let _ = recv.stop(quinn::VarInt::from_u32(close_code::TOO_LARGE));
            return Err(ReadFailure::Wire(e));
        }
    };
    if !authenticated && len > MAX_UNAUTHENTICATED_FRAME_BYTES {
        let _ = recv.stop(quinn::VarInt::from_u32(close_code::TOO_LARGE));
        return Err(ReadFailure::Unauthenticated);
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|_| ReadFailure::Gone)?;
    wire::decode_request(&body).map_err(ReadFailure::Wire)
}

async fn handle_stream<B: Backend>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    connection: &quinn::Connection,
    shared: &Shared<B>,
    state: &ConnState,
) {
    let authenticated = state.authenticated.load(Ordering::Acquire);
    let response =
        match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_request(&mut recv, authenticated)).await {
            Err(_) | Ok(Err(ReadFailure::Gone)) => return,
            Ok(Err(ReadFailure::Unauthenticated)) => {
                Response::error(ErrorCode::Unauthenticated, "authenticate first (Authenticate request)")
            }
            Ok(Err(ReadFailure::Wire(e))) => Response::error(e.code(), e.to_string()),
            Ok(Ok(request)) => match shared.permits.clone().try_acquire_owned() {
                Err(_) => Response::error(ErrorCode::Overloaded, "too many requests in flight; retry later"),
                Ok(permit) => {
                    let response = dispatch(request, connection, shared, state).await;
                    // Hold the permit until the answer is written, so a graceful shutdown that drains
                    // the permits also waits for the answers to be on the wire.
                    write_response(&mut send, &response).await;
                    drop(permit);
                    return;
                }
            },
        };
    write_response(&mut send, &response).await;
}

async fn write_response(send: &mut quinn::SendStream, response: &Response) {
    let frame = match wire::encode_frame(response) {
        Ok(frame) => frame,
        // Only a result set larger than MAX_FRAME_BYTES could fail here; say so instead.
        Err(e) => match wire::encode_frame(&Response::error(ErrorCode::Internal, e.to_string())) {
            Ok(frame) => frame,
            Err(_) => return,
        },
    };
    let write = async {
        send.write_all(&frame).await.ok()?;
        send.finish().ok()?;
        // Wait until the peer has the whole answer (or stopped the stream).
        let _ = send.stopped().await;
        Some(())
    };
    let _ = tokio::time::timeout(RESPONSE_WRITE_TIMEOUT, write).await;
}

fn now() -> Instant {
    Instant::from_system_time(std::time::SystemTime::now())
}

fn backend_error(e: BackendError) -> Response {
    match e {
        BackendError::Overloaded => {
            Response::error(ErrorCode::Overloaded, "the engine is at capacity; retry later")
        }
        BackendError::Rejected(m) => Response::error(ErrorCode::Rejected, m),
        BackendError::Stopped(m) => Response::error(ErrorCode::Internal, format!("engine stopped: {m}")),
        BackendError::Internal(m) => Response::error(ErrorCode::Internal, m),
    }
}

async fn dispatch<B: Backend>(
    request: wire::Request,
    connection: &quinn::Connection,
    shared: &Shared<B>,
    state: &ConnState,
) -> Response {
    let Some(body) = request.body else {
        return Response::error(ErrorCode::Malformed, "the request has no body");
    };
    if let request::Body::Authenticate(auth) = body {
        return authenticate(auth.api_key, connection, shared, state).await;
    }
    if !state.authenticated.load(Ordering::Acquire) {
        return Response::error(ErrorCode::Unauthenticated, "authenticate first (Authenticate request)");
    }
    match body {
        request::Body::Authenticate(_) => Response::ok(),
        request::Body::ListTransactions(q) => ops::list_transactions(q, &shared.backend).await,
        request::Body::CreateCheckpoint(c) => ops::checkpoint(c, &shared.backend).await,
        request::Body::SubmitBatch(batch) => submit(batch, shared).await,
        request::Body::PublishRates(r) => match convert::rates(&r.rates) {
            Err(e) => Response::error(ErrorCode::Malformed, e.0),
            Ok(rates) => match shared.backend.publish_rates(rates).await {
                Ok(()) => Response::ok(),
                Err(e) => backend_error(e),
            },
        },
        request::Body::GetBalance(g) => match shared.backend.balance(&g.partner).await {
            Ok(Some(view)) => Response::new(response::Body::Balance(convert::balance(&view))),
            Ok(None) => Response::error(ErrorCode::Rejected, format!("unknown partner {:?}", g.partner)),
            Err(e) => backend_error(e),
        },
        request::Body::RegisterPartner(r) => match convert::partner(&r.partner_json) {
            Err(e) => Response::error(ErrorCode::Malformed, e.0),
            Ok(partner) => {
                let (id, currency) = (partner.id.clone(), partner.currency);
                match shared.backend.register_partner(partner).await {
                    Ok(()) => {
                        remember_currency(shared, &id, currency);
                        Response::ok()
                    }
                    Err(e) => backend_error(e),
                }
            }
        },
        request::Body::AddContractVersion(a) => {
            let currency = match partner_currency(shared, &a.partner).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return Response::error(ErrorCode::Rejected, format!("unknown partner {:?}", a.partner))
                }
                Err(e) => return backend_error(e),
            };
            match convert::contract_version(&a.version_json, currency) {
                Err(e) => Response::error(ErrorCode::Malformed, e.0),
                Ok(version) => match shared.backend.add_contract_version(&a.partner, version).await {
                    Ok(()) => Response::ok(),
                    Err(e) => backend_error(e),
                },
            }
        }
        request::Body::ClusterCommand(c) => match shared.backend.cluster_command(&c.command_json).await {
            Ok(Some(json)) => Response::new(response::Body::ClusterStatus(wire::ClusterStatus { json })),
            Ok(None) => Response::error(ErrorCode::Rejected, "this node is not a cluster member"),
            Err(e) => backend_error(e),
        },
        request::Body::GetClusterStatus(_) => match shared.backend.cluster_status().await {
            Ok(Some(json)) => Response::new(response::Body::ClusterStatus(wire::ClusterStatus { json })),
            Ok(None) => Response::error(ErrorCode::Rejected, "this node is not a cluster member"),
            Err(e) => backend_error(e),
        },
    }
}

async fn authenticate<B: Backend>(
    key: String,
    connection: &quinn::Connection,
    shared: &Shared<B>,
    state: &ConnState,
) -> Response {
    if state.authenticated.load(Ordering::Acquire) {
        return Response::ok();
    }
    let keys = shared.keys.clone();
    let ok = tokio::task::spawn_blocking(move || keys.verify(&key)).await.unwrap_or(false);
    if ok {
        state.authenticated.store(true, Ordering::Release);
        return Response::ok();
    }
    let failures = state.auth_failures.fetch_add(1, Ordering::AcqRel) + 1;
    if failures >= MAX_AUTH_FAILURES {
        connection
            .close(quinn::VarInt::from_u32(close_code::AUTH_FAILED), b"too many failed authentications");
    }
    Response::error(ErrorCode::Unauthenticated, "unknown API key")
}

fn remember_currency<B>(shared: &Shared<B>, partner: &str, currency: Currency) {
    if let Ok(mut map) = shared.currencies.lock() {
        map.insert(partner.to_string(), currency);
    }
}

async fn partner_currency<B: Backend>(
    shared: &Shared<B>,
    partner: &str,
) -> Result<Option<Currency>, BackendError> {
    if let Some(c) = shared.currencies.lock().ok().and_then(|m| m.get(partner).copied()) {
        return Ok(Some(c));
    }
    let view = shared.backend.balance(partner).await?;
    if let Some(v) = &view {
        remember_currency(shared, partner, v.currency);
    }
    Ok(view.map(|v| v.currency))
}

async fn submit<B: Backend>(batch: wire::SubmitBatch, shared: &Shared<B>) -> Response {
    let txs = match convert::transactions(&batch.transactions, now()) {
        Ok(txs) => txs,
        Err(e) => return Response::error(ErrorCode::Malformed, e.0),
    };
    let partners: Vec<Option<String>> = txs.iter().map(|t| t.partner.clone()).collect();
    let results = match shared.backend.submit(txs).await {
        Ok(results) => results,
        Err(e) => return backend_error(e),
    };
    if results.len() != partners.len() {
        return Response::error(ErrorCode::Internal, "the engine answered a different number of results");
    }
    // Settlement currencies (to format amounts) under one lock for the whole batch; a partner
    // not seen before is asked of the engine once.
    let mut currencies: Vec<Option<Currency>> = vec![None; results.len()];
    if let Ok(known) = shared.currencies.lock() {
        for ((slot, result), partner) in currencies.iter_mut().zip(&results).zip(&partners) {
            if let (settle_core::Outcome::Applied(_), Some(p)) = (&result.outcome, partner) {
                *slot = known.get(p.as_str()).copied();
            }
        }
    }
    let mut out = Vec::with_capacity(results.len());
    for ((result, partner), known) in results.iter().zip(partners).zip(currencies) {
        let currency = match (&result.outcome, partner, known) {
            (_, _, Some(c)) => Some(c),
            (settle_core::Outcome::Applied(_), Some(p), None) => match partner_currency(shared, &p).await {
                Ok(c) => c,
                Err(e) => return backend_error(e),
            },
            _ => None,
        };
        out.push(convert::tx_result(result, currency));
    }
    Response::new(response::Body::SubmitResult(wire::SubmitResult { results: out }))
}
