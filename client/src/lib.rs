//! settle-client: connects to a Settle node over QUIC, authenticates, submits batches and retries
//! with the same idempotency keys. Knows the wire schema (`settle-wire`), not the engine's
//! internals, and never touches settlement rules.
//!
//! Retries: a request that fails with a retryable error (OVERLOADED, INTERNAL) or with a lost
//! connection is sent again unchanged (same transaction ids) after an exponential backoff with a
//! cap and jitter, up to `RetryPolicy::max_attempts`. Because the node deduplicates by id, a
//! retried batch that had in fact been committed returns the first results, flagged `duplicate`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use settle_wire::{self as wire, request, response, ErrorCode, Request, Response, WireError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Default time one request may take, from opening its stream to reading the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time to establish a connection (handshake + authentication).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive interval, well under the node's idle timeout.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The node answered with an error.
    #[error("{code:?}: {message}")]
    Server { code: ErrorCode, message: String, retryable: bool },
    /// The node's answer could not be read.
    #[error("bad response: {0}")]
    Protocol(WireError),
    /// The connection or stream broke, or timed out; the outcome of the request is unknown.
    #[error("transport: {0}")]
    Transport(String),
    /// The node answered with a body this request does not expect.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: Box<ClientError> },
}

impl ClientError {
    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Server { retryable, .. } => *retryable,
            ClientError::Transport(_) | ClientError::Connect(_) => true,
            _ => false,
        }
    }

    /// The server's error code, if the node answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Exhausted { last, .. } => last.code(),
            _ => None,
        }
    }
}

/// How retries back off.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1): exponential, capped, with
    /// jitter in [half, full] so that many clients do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        let full = self.initial_backoff.saturating_mul(factor).min(self.max_backoff);
        let half = full / 2;
        let jitter_ms = u64::try_from((full - half).as_millis()).unwrap_or(0);
        half + Duration::from_millis(if jitter_ms == 0 { 0 } else { rand::random::<u64>() % (jitter_ms + 1) })
    }
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub addr: SocketAddr,
    /// The name the node's certificate is checked against (`localhost` for a dev node).
    pub server_name: String,
    /// PEM of the certificate(s) to trust: the dev node's self-signed certificate, or a CA.
    pub ca_pem: Vec<u8>,
    /// The API key; an empty key sends no Authenticate request (every request but Authenticate
    /// is then answered UNAUTHENTICATED, unless `client_cert` authenticates the connection).
    pub api_key: String,
    /// A client certificate chain and its private key (PEM) for mutual TLS, when the node trusts
    /// their issuer (`settle node --client-ca`).
    pub client_cert: Option<ClientCertificate>,
    pub retry: RetryPolicy,
    /// Time to establish a connection (handshake + authentication); then a retryable error.
    pub connect_timeout: Duration,
    /// Time one request may take; then a retryable error (the outcome is unknown: retry with the
    /// same ids).
    pub request_timeout: Duration,
}

impl ClientConfig {
    pub fn new(addr: SocketAddr, ca_pem: Vec<u8>, api_key: impl Into<String>) -> ClientConfig {
        ClientConfig {
            addr,
            server_name: "localhost".into(),
            ca_pem,
            api_key: api_key.into(),
            client_cert: None,
            retry: RetryPolicy::default(),
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// A client certificate for mutual TLS: PEM of the chain and of the private key.
#[derive(Clone)]
pub struct ClientCertificate {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ClientCertificate").field("chain_bytes", &self.chain_pem.len()).finish()
    }
}

/// A connection to one node, re-established (and re-authenticated) on demand.
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    config: ClientConfig,
    connection: tokio::sync::Mutex<Option<quinn::Connection>>,
}

fn transport(e: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(e.to_string())
}

fn client_crypto(
    ca_pem: &[u8],
    cert: Option<&ClientCertificate>,
) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| ClientError::Tls(e.to_string()))?;
        roots.add(cert).map_err(|e| ClientError::Tls(e.to_string()))?;
        any = true;
    }
    if !any {
        return Err(ClientError::Tls("no certificate in the given PEM".into()));
    }
    // The ring provider, chosen explicitly: never depend on a process-wide default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let chain = CertificateDer::pem_slice_iter(&cert.chain_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&cert.key_pem)
                .map_err(|e| ClientError::Tls(format!("client key: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| ClientError::Tls(e.to_string()))?
        }
    };
    config.alpn_protocols = vec![wire::ALPN.to_vec()];
    Ok(config)
}

impl Client {
    /// Connects and authenticates (with retries on connection failures).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let client = Client::connect_lazy(config)?;
        client.with_retry(|| async { client.connection().await.map(|_| ()) }).await?;
        Ok(client)
    }

    /// Prepares a client without connecting; the first request connects.
    pub fn connect_lazy(config: ClientConfig) -> Result<Client, ClientError> {
        let crypto = client_crypto(&config.ca_pem, config.client_cert.as_ref())?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport_config = quinn::TransportConfig::default();
        transport_config.keep_alive_interval(Some(KEEP_ALIVE));
        client_config.transport_config(Arc::new(transport_config));
        let bind: SocketAddr = if config.addr.is_ipv6() {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| ClientError::Connect(e.to_string()))?;
        endpoint.set_default_client_config(client_config);
        Ok(Client { endpoint, config, connection: tokio::sync::Mutex::new(None) })
    }

    /// The live connection, opening and authenticating a new one when there is none.
    async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        let mut guard = self.connection.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        *guard = None;
        let conn = tokio::time::timeout(self.config.connect_timeout, self.open_authenticated())
            .await
            .map_err(|_| ClientError::Connect("timed out".into()))??;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn open_authenticated(&self) -> Result<quinn::Connection, ClientError> {
        let connecting = self
            .endpoint
            .connect(self.config.addr, &self.config.server_name)
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let conn = connecting.await.map_err(|e| ClientError::Connect(e.to_string()))?;
        if self.config.api_key.is_empty() {
            // Authenticated by a client certificate, or a probe that does not authenticate.
            return Ok(conn);
        }
        let auth = Request::new(request::Body::Authenticate(wire::Authenticate {
            api_key: self.config.api_key.clone(),
        }));
        let answer = exchange(
            &conn,
            &wire::encode_frame(&auth).map_err(ClientError::Protocol)?,
            self.config.request_timeout,
        )
        .await?;
        expect_ok(answer)?;
        Ok(conn)
    }

    /// Forgets the connection (closing it), so the next request opens a new one.
    async fn drop_connection(&self) {
        let mut guard = self.connection.lock().await;
        if let Some(conn) = guard.take() {
            conn.close(quinn::VarInt::from_u32(0), b"reconnecting");
        }
    }

    /// Forgets `failed` after a transport error on it, unless another request already replaced
    /// it. Many requests share one connection: when it breaks they all fail, and each closing
    /// whatever connection is current would also kill the requests in flight on its successor,
    /// whose failures close the next one, and so on (a reconnect storm that outlives the fault).
    async fn forget(&self, failed: &quinn::Connection) {
        let mut guard = self.connection.lock().await;
        if guard.as_ref().is_some_and(|c| c.stable_id() == failed.stable_id()) {
            *guard = None;
        }
        drop(guard);
        failed.close(quinn::VarInt::from_u32(0), b"reconnecting");
    }

    /// One exchange on the live connection; a transport failure forgets that connection.
    async fn exchange_on_connection(&self, frame: &[u8]) -> Result<Response, ClientError> {
        let conn = self.connection().await?;
        let answer = exchange(&conn, frame, self.config.request_timeout).await;
        if matches!(answer, Err(ClientError::Transport(_))) {
            self.forget(&conn).await;
        }
        answer
    }

    async fn with_retry<T, F, Fut>(&self, mut attempt_fn: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let max = self.config.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let err = match attempt_fn().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            if attempt >= max {
                return Err(ClientError::Exhausted { attempts: attempt, last: Box::new(err) });
            }
            tokio::time::sleep(self.config.retry.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Sends one request once (no retry) and returns the node's answer, errors included.
    pub async fn request_once(&self, request: &Request) -> Result<Response, ClientError> {
        let frame = wire::encode_frame(request).map_err(ClientError::Protocol)?;
        self.exchange_on_connection(&frame).await
    }

    /// Sends raw bytes as a request on a fresh stream (tests and protocol probes) and reads the
    /// answer frame, if any.
    pub async fn exchange_raw(&self, bytes: &[u8]) -> Result<Response, ClientError> {
        self.exchange_on_connection(bytes).await
    }

    /// Sends a request, retrying retryable failures unchanged, and turns error answers into
    /// `ClientError::Server`.
    pub async fn call(&self, request: &Request) -> Result<response::Body, ClientError> {
        self.with_retry(|| async {
            let answer = self.request_once(request).await?;
            match answer.body {
                Some(response::Body::Error(e)) => Err(server_error(e)),
                Some(body) => Ok(body),
                None => Err(ClientError::Protocol(WireError::MissingBody)),
            }
        })
        .await
    }

    /// Submits a batch (1..=MAX_BATCH_TXS transactions); one result per transaction, in order.
    /// Retries keep the same ids, so a batch is applied at most once.
    pub async fn submit(
        &self,
        transactions: Vec<wire::Transaction>,
    ) -> Result<Vec<wire::TxResult>, ClientError> {
        let expected = transactions.len();
        let req = Request::new(request::Body::SubmitBatch(wire::SubmitBatch { transactions }));
        match self.call(&req).await? {
            response::Body::SubmitResult(r) if r.results.len() == expected => Ok(r.results),
            response::Body::SubmitResult(r) => Err(ClientError::Unexpected(format!(
                "{} results for {expected} transactions",
                r.results.len()
            ))),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn publish_rates(&self, rates: Vec<wire::FxRate>) -> Result<(), ClientError> {
        let req = Request::new(request::Body::PublishRates(wire::PublishRates { rates }));
        ok_body(self.call(&req).await?)
    }

    pub async fn balance(&self, partner: &str) -> Result<wire::Balance, ClientError> {
        let req = Request::new(request::Body::GetBalance(wire::GetBalance { partner: partner.to_string() }));
        match self.call(&req).await? {
            response::Body::Balance(b) => Ok(b),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The cluster's status as JSON (`settle cluster status --json`); REJECTED from a
    /// standalone node.
    pub async fn cluster_status(&self) -> Result<String, ClientError> {
        let req = Request::new(request::Body::GetClusterStatus(wire::GetClusterStatus {}));
        match self.call(&req).await? {
            response::Body::ClusterStatus(s) => Ok(s.json),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Runs a membership command (`{"add_node":{"id":N,"peer":"HOST:PORT"}}` or
    /// `{"remove_node":{"id":N}}`) and returns the cluster's status afterwards. Not retried by
    /// `call`'s policy beyond what is safe: the commands converge to the same placement.
    pub async fn cluster_command(&self, command_json: impl Into<String>) -> Result<String, ClientError> {
        let req = Request::new(request::Body::ClusterCommand(wire::ClusterCommand {
            command_json: command_json.into(),
        }));
        match self.call(&req).await? {
            response::Body::ClusterStatus(s) => Ok(s.json),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Registers a partner given as the spec's scenario partner object (JSON text).
    pub async fn register_partner(&self, partner_json: impl Into<String>) -> Result<(), ClientError> {
        let req = Request::new(request::Body::RegisterPartner(wire::RegisterPartner {
            partner_json: partner_json.into(),
        }));
        ok_body(self.call(&req).await?)
    }

    pub async fn add_contract_version(
        &self,
        partner: &str,
        version_json: impl Into<String>,
    ) -> Result<(), ClientError> {
        let req = Request::new(request::Body::AddContractVersion(wire::AddContractVersion {
            partner: partner.to_string(),
            version_json: version_json.into(),
        }));
        ok_body(self.call(&req).await?)
    }

    /// One page of a partner's transactions with `from <= occurred_at < to` (`to` empty: the end
    /// of the partner's period containing `from`), after log sequence `after_seq`. Read on with
    /// `next_after_seq` until `done`.
    pub async fn list_transactions(
        &self,
        query: wire::ListTransactions,
    ) -> Result<wire::TransactionPage, ClientError> {
        let req = Request::new(request::Body::ListTransactions(query));
        match self.call(&req).await? {
            response::Body::TransactionPage(p) => Ok(p),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Admin: asks the node for a consistent checkpoint of its store in `dir` (an absolute path
    /// on the node's host that does not exist yet).
    pub async fn create_checkpoint(
        &self,
        dir: impl Into<String>,
    ) -> Result<wire::CheckpointCreated, ClientError> {
        let req = Request::new(request::Body::CreateCheckpoint(wire::CreateCheckpoint { dir: dir.into() }));
        match self.call(&req).await? {
            response::Body::CheckpointCreated(c) => Ok(c),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Closes the connection and waits (briefly) for the close to reach the node.
    pub async fn close(&self) {
        self.drop_connection().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

fn server_error(e: wire::ErrorReply) -> ClientError {
    let code = e.error_code();
    ClientError::Server { code, message: e.message, retryable: e.retryable || code.is_retryable() }
}

fn expect_ok(answer: Response) -> Result<(), ClientError> {
    match answer.body {
        Some(response::Body::Ok(_)) => Ok(()),
        Some(response::Body::Error(e)) => Err(server_error(e)),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

fn ok_body(body: response::Body) -> Result<(), ClientError> {
    match body {
        response::Body::Ok(_) => Ok(()),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// One request/response on a new bidirectional stream.
async fn exchange(
    conn: &quinn::Connection,
    frame: &[u8],
    timeout: Duration,
) -> Result<Response, ClientError> {
    let work = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(transport)?;
        // A write error usually means the node stopped the stream (e.g. an oversized frame); the
        // answer explaining why may still be readable, so keep going to the read.
        let wrote = send.write_all(frame).await;
        let _ = send.finish();
        let mut header = [0u8; wire::FRAME_HEADER_BYTES];
        if let Err(e) = recv.read_exact(&mut header).await {
            return Err(match wrote {
                Err(w) => transport(w),
                Ok(()) => transport(e),
            });
        }
        let len = wire::frame_body_len(header).map_err(ClientError::Protocol)?;
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.map_err(transport)?;
        wire::decode_response(&body).map_err(ClientError::Protocol)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| transport("request timed out"))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(300),
        };
        for (attempt, full_ms) in [(1, 20), (2, 40), (3, 80), (4, 160), (5, 300), (9, 300), (40, 300)] {
            for _ in 0..50 {
                let wait = policy.backoff(attempt);
                let full = Duration::from_millis(full_ms);
                assert!(wait >= full / 2 && wait <= full, "attempt {attempt}: {wait:?}");
            }
        }
    }

    #[test]
    fn which_errors_are_retried() {
        let server = |code: ErrorCode| ClientError::Server {
            code,
            message: String::new(),
            retryable: code.is_retryable(),
        };
        assert!(server(ErrorCode::Overloaded).is_retryable());
        assert!(server(ErrorCode::Internal).is_retryable());
        assert!(!server(ErrorCode::Malformed).is_retryable());
        assert!(!server(ErrorCode::Unauthenticated).is_retryable());
        assert!(ClientError::Transport("reset".into()).is_retryable());
        assert!(ClientError::Connect("refused".into()).is_retryable());
        assert!(!ClientError::Tls("bad pem".into()).is_retryable());
    }

    #[test]
    fn a_pem_without_certificates_is_refused() {
        assert!(matches!(client_crypto(b"not a pem", None), Err(ClientError::Tls(_))));
    }
    /// A QUIC server on loopback that accepts connections and keeps them open, answering nothing.
    async fn silent_server() -> (SocketAddr, Vec<u8>, tokio::task::JoinHandle<()>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let pem = cert.cert.pem().into_bytes();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        crypto.alpn_protocols = vec![wire::ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Some(incoming) = endpoint.accept().await {
                if let Ok(conn) = incoming.await {
                    open.push(conn);
                }
            }
        });
        (addr, pem, task)
    }

    #[tokio::test]
    async fn a_late_failure_on_a_replaced_connection_leaves_its_successor_alone() {
        let (addr, pem, server) = silent_server().await;
        let client = Client::connect_lazy(ClientConfig::new(addr, pem, "")).unwrap();
        let first = client.connection().await.unwrap();
        // Two requests were in flight on `first` when it broke: the first failure replaces it...
        client.forget(&first).await;
        let second = client.connection().await.unwrap();
        assert_ne!(first.stable_id(), second.stable_id());
        // ...and the second failure, on the same broken connection, must not close its successor
        // (which would break the requests in flight on it, and so on).
        client.forget(&first).await;
        assert!(second.close_reason().is_none());
        assert_eq!(client.connection().await.unwrap().stable_id(), second.stable_id());
        assert!(first.close_reason().is_some());
        server.abort();
    }
}
