//! settle-api: what people and services see of Settle over HTTP. Owns the REST API under `/v1`
//! (with its OpenAPI document), the GraphQL endpoint, authentication (API keys, users with
//! passwords and TOTP, sessions with CSRF protection, lockout), role-based authorisation, the
//! hash-chained audit trail of control-plane changes, Prometheus metrics, alert rules and their
//! delivery, and the operator dashboard and partner portal pages (embedded, no CDN).
//!
//! It must not touch the engine's internals or storage: everything it reads or changes goes
//! through the traits of [`model`] (`ReadModel`, `Mutations`, `ControlStore`), which the
//! standalone node implements over its engine and a cluster implements over its shards and its
//! metadata group. Settlement numbers come from `settle-core` types and are rendered as exact
//! decimal strings, never floats.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod alerts;
pub mod announce;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod error;
pub mod graphql;
pub mod import;
pub mod metrics;
pub mod model;
mod openapi;
pub mod pdf;
mod rest;
pub mod totp;
pub mod views;
mod web;

use crate::audit::{Audit, AuditEvent};
use crate::auth::{Auth, NewUser, Role};
use crate::metrics::Metrics;
use crate::model::{ControlStore, Mutations, ReadModel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often live samples are taken (and alert rules evaluated).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Name of the administrator `settle dev` and a first start create.
pub const BOOTSTRAP_ADMIN: &str = "admin";

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Argon2 memory cost for passwords and keys, KiB ([`auth::ARGON2_MEMORY_KIB`]).
    pub argon2_memory_kib: u32,
    /// Add `Secure` to cookies. Browsers accept secure cookies from `http://127.0.0.1` and
    /// `http://localhost`; elsewhere the API must be served over TLS (a proxy) for logins to work.
    pub secure_cookies: bool,
}

impl ApiConfig {
    pub fn new(listen: SocketAddr) -> ApiConfig {
        ApiConfig { listen, argon2_memory_kib: auth::ARGON2_MEMORY_KIB, secure_cookies: true }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Chain(#[from] audit::ChainError),
    #[error(transparent)]
    Api(#[from] error::ApiError),
}

/// Everything a request handler needs.
pub(crate) struct App {
    pub read: Arc<dyn ReadModel>,
    pub mutate: Arc<dyn Mutations>,
    pub control: Arc<dyn ControlStore>,
    pub auth: Auth,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    pub alerts: alerts::Alerts,
    pub announcer: announce::Announcer,
    pub config: ApiConfig,
    /// Serialises exception resolutions (one resolution per exception).
    pub resolving: tokio::sync::Mutex<()>,
    /// Becomes true on shutdown: ends the live streams, which would otherwise keep the
    /// graceful shutdown waiting for ever.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
    announcer: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address to open in a browser.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.sampler.abort();
        self.announcer.abort();
        let _ = self.task.await;
    }
}

/// Serves the API. `metrics` is shared with the ingress, which reports submissions into it.
pub async fn serve(
    config: ApiConfig,
    read: Arc<dyn ReadModel>,
    mutate: Arc<dyn Mutations>,
    control: Arc<dyn ControlStore>,
    metrics: Arc<Metrics>,
) -> Result<ApiServer, ServeError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: config.listen, source })?;
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        stopping: stop_rx.clone(),
        auth: Auth::new(Arc::clone(&control), config.argon2_memory_kib),
        audit: Audit::open(Arc::clone(&control))?,
        alerts: alerts::Alerts::load(Arc::clone(&control))?,
        announcer: announce::Announcer::default(),
        read,
        mutate,
        control,
        metrics,
        config,
        resolving: tokio::sync::Mutex::new(()),
    });
    let router = rest::router(Arc::clone(&app));
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
            tracing::error!("http server failed: {e}");
        }
    });
    let announcer = tokio::spawn(announce::announce_loop(Arc::clone(&app)));
    let sampler = tokio::spawn(sample_loop(app));
    Ok(ApiServer { addr, stop, task, sampler, announcer })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn sample_loop(app: Arc<App>) {
    let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let sample = app.metrics.sample(app.read.as_ref(), now_ms());
        app.alerts.evaluate(&app, &sample).await;
    }
}

/// The one-time credentials of the bootstrap administrator.
pub type BootstrapAdmin = NewUser;

/// Creates the administrator `admin` with a generated password and TOTP secret when no user
/// exists yet, and returns its credentials (to show once). `None` when users exist. Where
/// several members share the control store, each may call this at its first start: the store
/// is brought up to date first, and the creation is conditional on `admin` being absent, so
/// exactly one member creates it (and shows its credentials).
pub async fn bootstrap_admin(
    control: Arc<dyn ControlStore>,
    argon2_memory_kib: u32,
) -> Result<Option<BootstrapAdmin>, ServeError> {
    control.sync().await.map_err(error::ApiError::from)?;
    let auth = Auth::new(Arc::clone(&control), argon2_memory_kib);
    if !auth.users()?.is_empty() {
        return Ok(None);
    }
    let (record, secrets) =
        tokio::task::spawn_blocking(move || auth.new_user(BOOTSTRAP_ADMIN, Role::Admin, None, true))
            .await
            .map_err(|e| error::ApiError::Internal(format!("task failed: {e}")))??;
    let audit = Audit::open(control)?;
    let event = AuditEvent {
        actor: "system".into(),
        action: "user.create".into(),
        target: format!("user:{BOOTSTRAP_ADMIN}"),
        before: serde_json::Value::Null,
        after: record.public(),
    };
    let absent =
        model::ControlOp::Expect { space: model::Space::Users, key: BOOTSTRAP_ADMIN.into(), value: None };
    match audit.commit(vec![absent, Auth::put_user_op(&record)?], event).await {
        Ok(_) => Ok(Some(secrets)),
        // Another member created it first.
        Err(model::StoreError::Changed(_)) => Ok(None),
        Err(e) => Err(error::ApiError::from(e).into()),
    }
}

pub use audit::verify as verify_audit_chain;
