//! The QUIC ingress end to end: a real node on 127.0.0.1:0 with a temporary data dir, and the
//! real client over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use settle_client::{Client, ClientConfig, ClientError, RetryPolicy};
use settle_core::tx::TxResult;
use settle_core::{ContractVersion, FxRate, Partner, TxInput};
use settle_node::ingress::{
    ApiKeys, Backend, BackendError, BalanceView, Ingress, IngressConfig, TlsSource, MAX_IN_FLIGHT_REQUESTS,
};
use settle_wire::{self as wire, request, response, tx_result, ErrorCode, Request};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

const KEY: &str = "test-key-0123456789";

mod common;

struct Node {
    ingress: Ingress,
    pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

async fn start<B: Backend>(backend: B, max_in_flight: usize, dir: tempfile::TempDir) -> Node {
    start_with_client_ca(backend, max_in_flight, dir, None).await
}

async fn start_with_client_ca<B: Backend>(
    backend: B,
    max_in_flight: usize,
    dir: tempfile::TempDir,
    client_ca: Option<std::path::PathBuf>,
) -> Node {
    let (keys, generated) = ApiKeys::load_or_init(dir.path(), Some(KEY)).unwrap();
    assert!(generated.is_none());
    let config = IngressConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: dir.path().to_path_buf(),
        tls: TlsSource::Dev { dir: dir.path().join("tls") },
        client_ca,
        keys,
        max_in_flight,
    };
    let ingress = Ingress::start(config, backend).await.unwrap();
    let pem = std::fs::read(ingress.cert_path()).unwrap();
    Node { ingress, pem, _dir: dir }
}

async fn client(node: &Node, key: &str) -> Result<Client, ClientError> {
    let mut config = ClientConfig::new(node.ingress.local_addr(), node.pem.clone(), key);
    config.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
    };
    Client::connect(config).await
}

fn sale(id: &str, amount: &str, currency: &str) -> wire::Transaction {
    wire::Transaction {
        id: id.into(),
        partner: Some("acme".into()),
        kind: wire::TxKind::Sale as i32,
        amount: Some(amount.into()),
        currency: Some(currency.into()),
        occurred_at: common::now_rfc3339(),
        ..Default::default()
    }
}

async fn setup(c: &Client) {
    c.register_partner(common::partner_json("acme", "EUR")).await.unwrap();
    c.publish_rates(vec![wire::FxRate {
        base: "USD".into(),
        quote: "EUR".into(),
        rate: "0.92".into(),
        at: common::minutes_ago_rfc3339(1),
        source: Some("test".into()),
    }])
    .await
    .unwrap();
}

fn applied(r: &wire::TxResult) -> &wire::Applied {
    match &r.outcome {
        Some(tx_result::Outcome::Applied(a)) => a,
        other => panic!("expected applied, got {other:?}"),
    }
}

fn exception(r: &wire::TxResult) -> &str {
    match &r.outcome {
        Some(tx_result::Outcome::Exception(e)) => &e.reason,
        other => panic!("expected an exception, got {other:?}"),
    }
}

fn error_of(r: wire::Response) -> wire::ErrorReply {
    match r.body {
        Some(response::Body::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn authentication_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::backend(dir.path()).await, MAX_IN_FLIGHT_REQUESTS, dir).await;
    let err = client(&node, "wrong-key").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
    assert!(!err.is_retryable());

    // Connected but not authenticated: every request but Authenticate is refused.
    let probe = client(&node, "").await.unwrap();
    let req = Request::new(request::Body::GetBalance(wire::GetBalance { partner: "acme".into() }));
    let e = error_of(probe.request_once(&req).await.unwrap());
    assert_eq!(e.error_code(), ErrorCode::Unauthenticated);
    assert!(!e.retryable);
    // Authenticating on the same connection unlocks it.
    let auth = Request::new(request::Body::Authenticate(wire::Authenticate { api_key: KEY.into() }));
    assert!(matches!(probe.request_once(&auth).await.unwrap().body, Some(response::Body::Ok(_))));
    let e = error_of(probe.request_once(&req).await.unwrap());
    assert_eq!(e.error_code(), ErrorCode::Rejected, "{}", e.message); // unknown partner, but authenticated

    // A large frame before authentication is refused without being read.
    let fresh = client(&node, "").await.unwrap();
    let big: Vec<_> = (0..200).map(|i| sale(&format!("u{i}"), "1.00", "EUR")).collect();
    let req = Request::new(request::Body::SubmitBatch(wire::SubmitBatch { transactions: big }));
    let e = error_of(fresh.request_once(&req).await.unwrap());
    assert_eq!(e.error_code(), ErrorCode::Unauthenticated);

    assert!(client(&node, KEY).await.is_ok());
    node.ingress.shutdown().await;
}

#[tokio::test]
async fn contract_versions_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::backend(dir.path()).await, MAX_IN_FLIGHT_REQUESTS, dir).await;
    let c = client(&node, KEY).await.unwrap();
    setup(&c).await;
    let from = settle_node::demo::instant_now().saturating_add(settle_core::Span::from_hours(1)).to_rfc3339();
    let version = format!(
        r#"{{"effective_from":"{from}","shares":[{{"party":"partner","percent":"90"}},{{"party":"platform","percent":"10"}}]}}"#
    );
    c.add_contract_version("acme", version.clone()).await.unwrap();
    let err = c.add_contract_version("nobody", version).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Rejected));
    let bad = r#"{"effective_from":"soon","shares":[]}"#;
    let err = c.add_contract_version("acme", bad).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Malformed));
    assert!(err.to_string().contains("version.effective_from"), "{err}");
    let err = c.register_partner("{not json").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Malformed));
    node.ingress.shutdown().await;
}

#[tokio::test]
async fn submit_ack_and_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::backend(dir.path()).await, MAX_IN_FLIGHT_REQUESTS, dir).await;
    let c = client(&node, KEY).await.unwrap();
    setup(&c).await;

    let batch = vec![sale("s1", "100.00", "EUR"), sale("s2", "100.00", "USD"), sale("s3", "1.005", "EUR")];
    let first = c.submit(batch.clone()).await.unwrap();
    assert_eq!(first.len(), 3);
    let a1 = applied(&first[0]);
    assert_eq!((a1.amount_s.as_str(), a1.currency.as_str()), ("100.00", "EUR"));
    // 80% of 100.00, minus 1.50% and 0.10 fixed.
    assert_eq!(a1.payable_after, "78.40");
    assert_eq!(applied(&first[1]).amount_s, "92.00");
    assert_eq!(exception(&first[2]), "invalid_amount");
    assert!(first.iter().all(|r| !r.duplicate));

    // The same batch again: the first results, flagged as repeats, nothing changed.
    let again = c.submit(batch).await.unwrap();
    for (a, b) in first.iter().zip(&again) {
        assert!(b.duplicate);
        assert_eq!(a.outcome, b.outcome);
    }
    let balance = c.balance("acme").await.unwrap();
    assert_eq!(balance.payable, applied(&first[1]).payable_after);
    // Same id, other content: duplicate_conflict, and the first content keeps the id.
    let conflict = c.submit(vec![sale("s1", "5.00", "EUR")]).await.unwrap();
    assert_eq!(exception(&conflict[0]), "duplicate_conflict");
    assert_eq!(c.balance("acme").await.unwrap().payable, balance.payable);
    // Registering twice is refused, not retried.
    let err = c.register_partner(common::partner_json("acme", "EUR")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Rejected));
    node.ingress.shutdown().await;
}

#[tokio::test]
async fn malformed_oversized_and_unknown_version_frames() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(common::backend(dir.path()).await, MAX_IN_FLIGHT_REQUESTS, dir).await;
    let c = client(&node, KEY).await.unwrap();
    setup(&c).await;

    // Garbage body behind a valid header.
    let mut frame = 5u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(error_of(c.exchange_raw(&frame).await.unwrap()).error_code(), ErrorCode::Malformed);

    // A header announcing more than MAX_FRAME_BYTES: refused from the header alone.
    let len = u32::try_from(wire::MAX_FRAME_BYTES + 1).unwrap();
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0u8; 1024]);
    let e = error_of(c.exchange_raw(&frame).await.unwrap());
    assert_eq!(e.error_code(), ErrorCode::TooLarge);
    assert!(!e.retryable);

    // Too many transactions in one batch.
    let many: Vec<_> = (0..=wire::MAX_BATCH_TXS).map(|i| sale(&format!("m{i}"), "1.00", "EUR")).collect();
    let req = Request::new(request::Body::SubmitBatch(wire::SubmitBatch { transactions: many }));
    assert_eq!(error_of(c.request_once(&req).await.unwrap()).error_code(), ErrorCode::TooLarge);

    // An unknown protocol version.
    let mut req = Request::new(request::Body::GetBalance(wire::GetBalance { partner: "acme".into() }));
    req.version = 2;
    let e = error_of(c.request_once(&req).await.unwrap());
    assert_eq!(e.error_code(), ErrorCode::UnsupportedVersion);

    // A malformed instant refuses the whole batch, naming the index and the field.
    let mut bad = sale("b2", "1.00", "EUR");
    bad.occurred_at = "yesterday".into();
    let req = Request::new(request::Body::SubmitBatch(wire::SubmitBatch {
        transactions: vec![sale("b1", "1.00", "EUR"), bad],
    }));
    let e = error_of(c.request_once(&req).await.unwrap());
    assert_eq!(e.error_code(), ErrorCode::Malformed);
    assert!(e.message.contains("transactions[1].occurred_at"), "{}", e.message);
    // ... and nothing of it was applied.
    let r = c.submit(vec![sale("b1", "1.00", "EUR")]).await.unwrap();
    assert!(!r[0].duplicate);

    // Unknown kind, overlong id, metadata that is not an object.
    let mut k = sale("k1", "1.00", "EUR");
    k.kind = 42;
    let mut id = sale(&"x".repeat(65), "1.00", "EUR");
    id.partner = None;
    let mut m = sale("m1", "1.00", "EUR");
    m.metadata_json = Some("[1,2]".into());
    for (tx, field) in [(k, "kind"), (id, "id"), (m, "metadata_json")] {
        let req = Request::new(request::Body::SubmitBatch(wire::SubmitBatch { transactions: vec![tx] }));
        let e = error_of(c.request_once(&req).await.unwrap());
        assert_eq!(e.error_code(), ErrorCode::Malformed);
        assert!(e.message.contains(&format!("transactions[0].{field}")), "{}", e.message);
    }
    // The connection is still healthy after all that.
    assert_eq!(c.balance("acme").await.unwrap().currency, "EUR");
    node.ingress.shutdown().await;
}

/// Wraps the real backend and holds `submit` until released, to fill the admission bound
/// deterministically.
#[derive(Clone)]
struct Gated<B> {
    inner: B,
    entered: mpsc::UnboundedSender<()>,
    gate: Arc<Mutex<()>>,
}

impl<B: Backend> Backend for Gated<B> {
    async fn submit(&self, txs: Vec<TxInput>) -> Result<Vec<TxResult>, BackendError> {
        let _ = self.entered.send(());
        let _held = self.gate.lock().await;
        self.inner.submit(txs).await
    }
    async fn publish_rates(&self, rates: Vec<FxRate>) -> Result<(), BackendError> {
        self.inner.publish_rates(rates).await
    }
    async fn balance(&self, partner: &str) -> Result<Option<BalanceView>, BackendError> {
        self.inner.balance(partner).await
    }
    async fn register_partner(&self, partner: Partner) -> Result<(), BackendError> {
        self.inner.register_partner(partner).await
    }
    async fn add_contract_version(
        &self,
        partner: &str,
        version: ContractVersion,
    ) -> Result<(), BackendError> {
        self.inner.add_contract_version(partner, version).await
    }
}

#[tokio::test]
async fn overloaded_is_retryable_and_retries_keep_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (entered, mut entered_rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Mutex::new(()));
    let backend = Gated { inner: common::backend(dir.path()).await, entered, gate: gate.clone() };
    let node = start(backend, 1, dir).await;
    let c = Arc::new(client(&node, KEY).await.unwrap());
    setup(&c).await;

    let held = gate.lock().await;
    let c2 = c.clone();
    let first = tokio::spawn(async move { c2.submit(vec![sale("o1", "10.00", "EUR")]).await });
    entered_rx.recv().await.unwrap(); // the only permit is now taken by o1
    let req = Request::new(request::Body::SubmitBatch(wire::SubmitBatch {
        transactions: vec![sale("o2", "10.00", "EUR")],
    }));
    let e = error_of(c.request_once(&req).await.unwrap());
    assert_eq!(e.error_code(), ErrorCode::Overloaded);
    assert!(e.retryable);
    drop(held);
    assert!(!first.await.unwrap().unwrap()[0].duplicate);
    // o2 was not applied when refused: submitting it now applies it for the first time.
    let r = c.submit(vec![sale("o2", "10.00", "EUR")]).await.unwrap();
    assert!(!r[0].duplicate);
    applied(&r[0]);
    node.ingress.shutdown().await;
}

#[tokio::test]
async fn engine_errors_map_to_wire_codes() {
    // The mapping the protocol documents: OVERLOADED retryable, INTERNAL retryable, REJECTED not.
    for (code, retryable) in [
        (ErrorCode::Overloaded, true),
        (ErrorCode::Internal, true),
        (ErrorCode::Rejected, false),
        (ErrorCode::Malformed, false),
        (ErrorCode::TooLarge, false),
        (ErrorCode::Unauthenticated, false),
        (ErrorCode::UnsupportedVersion, false),
    ] {
        assert_eq!(code.is_retryable(), retryable, "{code:?}");
    }
}

/// A CA and a client certificate it issued (PEM chain, PEM key).
struct Issued {
    ca_pem: String,
    chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

fn issue_client_certificate(name: &str) -> Issued {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Issued { ca_pem: ca.pem(), chain_pem: cert.pem().into_bytes(), key_pem: key.serialize_pem().into_bytes() }
}

async fn client_with_certificate(node: &Node, key: &str, cert: &Issued) -> Result<Client, ClientError> {
    let mut config = ClientConfig::new(node.ingress.local_addr(), node.pem.clone(), key);
    config.client_cert = Some(settle_client::ClientCertificate {
        chain_pem: cert.chain_pem.clone(),
        key_pem: cert.key_pem.clone(),
    });
    config.retry = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
    Client::connect(config).await
}

#[tokio::test]
async fn mutual_tls_authenticates_without_an_api_key_and_refuses_other_issuers() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = issue_client_certificate("platform-a");
    let rogue = issue_client_certificate("platform-a");
    let ca_path = dir.path().join("client-ca.pem");
    std::fs::write(&ca_path, &trusted.ca_pem).unwrap();
    let node =
        start_with_client_ca(common::backend(dir.path()).await, MAX_IN_FLIGHT_REQUESTS, dir, Some(ca_path))
            .await;

    // A certificate from the trusted CA: every request works with no API key at all.
    let by_cert = client_with_certificate(&node, "", &trusted).await.unwrap();
    setup(&by_cert).await;
    let results = by_cert.submit(vec![sale("m1", "10.00", "EUR")]).await.unwrap();
    applied(&results[0]);

    // A certificate from another issuer fails the handshake, API key or not.
    assert!(matches!(
        client_with_certificate(&node, KEY, &rogue).await.unwrap_err(),
        ClientError::Connect(_) | ClientError::Exhausted { .. }
    ));

    // No certificate: API keys still work, and without one nothing but Authenticate is served.
    let by_key = client(&node, KEY).await.unwrap();
    assert_eq!(by_key.balance("acme").await.unwrap().partner, "acme");
    let probe = client(&node, "").await.unwrap();
    let req = Request::new(request::Body::GetBalance(wire::GetBalance { partner: "acme".into() }));
    assert_eq!(error_of(probe.request_once(&req).await.unwrap()).code, ErrorCode::Unauthenticated as i32);
}
