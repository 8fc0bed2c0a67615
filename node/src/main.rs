//! The `settle` binary: the command-line edge of Settle. It parses arguments, reads files and
//! prints results; settlement logic lives in `settle-core`, the engine and the QUIC ingress in
//! the `settle_node` library.

/// The engine allocates and frees many small records per transaction on several threads; glibc's
/// allocator spent about a quarter of the node's time under load (perf), mimalloc far less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use settle_node::ingress::{ApiKeys, Ingress, IngressConfig, TlsSource, MAX_IN_FLIGHT_REQUESTS};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod backend;
mod ops;

#[derive(Debug, Parser)]
#[command(name = "settle", version, about = "Settle: a real-time settlement engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file through the settlement engine offline and print statements,
    /// exceptions and balances as JSON (spec: "Replay output").
    Replay {
        /// The scenario JSON file ("-" for standard input).
        scenario: PathBuf,
    },
    /// Run a node: the engine on DIR and the QUIC ingress on ADDR. Prints one JSON line
    /// `{"event":"ready",...}` on standard output when it accepts connections.
    Node {
        /// Data directory (created if missing).
        #[arg(long)]
        data: PathBuf,
        /// QUIC listen address; port 0 picks a free port (see the ready line).
        #[arg(long, default_value = "127.0.0.1:4433")]
        listen: SocketAddr,
        /// TLS certificate chain (PEM). Without --cert/--key a self-signed dev certificate is
        /// generated once under DIR/tls.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// A file holding an API key to accept (its argon2 hash is stored under DIR/auth). Without
        /// it, and with no key stored yet, a key is generated and shown once in the ready line.
        #[arg(long)]
        api_key_file: Option<PathBuf>,
        /// CA certificate(s) (PEM) for mutual TLS: a client presenting a certificate issued by one
        /// of them is authenticated without an API key. Clients without a certificate still use
        /// API keys; a certificate from another issuer fails the handshake.
        #[arg(long)]
        client_ca: Option<PathBuf>,
        /// Requests processed at once before answering OVERLOADED.
        #[arg(long, default_value_t = MAX_IN_FLIGHT_REQUESTS)]
        max_in_flight: usize,
    },
    /// A ready-to-use local node: data under ./data, demo partners and FX rates, and a trickle of
    /// demo traffic through the real QUIC path. Stop it with Ctrl-C.
    Dev {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:4433")]
        listen: SocketAddr,
        /// Demo partners to seed.
        #[arg(long, default_value_t = 20)]
        partners: usize,
        /// Do not send demo traffic.
        #[arg(long)]
        quiet: bool,
    },
    /// Import a partner's file through a mapping (CSV, JSON lines, fixed-width) into a running
    /// node, in batches with ids derived from the rows (re-importing changes nothing). Prints a
    /// JSON summary. Exit codes: 0 all applied, 3 some rows are exceptions, 2 unusable mapping or
    /// header, 1 stopped part way (rerun).
    Import(ops::import::ImportArgs),
    /// Reconcile a partner's own report for a period against the node's records: matched,
    /// missing on either side, amount or currency mismatches, one-to-many; JSON or CSV. Exit
    /// codes: 0 all matched, 3 discrepancies, 2 unusable input, 1 failure. `resolve` closes a
    /// dispute item of the journal with a note.
    Reconcile(Box<ops::reconcile::ReconcileArgs>),
    /// Online, consistent backup of a running node: the node takes a RocksDB checkpoint into
    /// OUT/engine (OUT on the node's host) and a manifest of checksums is written beside it.
    Backup(ops::backup::BackupArgs),
    /// Restore a backup into an empty data directory (manifest and store format verified); then
    /// start `settle node --data DIR` on it.
    Restore(ops::backup::RestoreArgs),
    /// Closed periods older than an age to zstd JSON lines with a checksum manifest (`export`,
    /// from a backup, read-only; nothing is removed from the store), `verify`, and `restore` for
    /// an audit.
    Archive(ops::archive::ArchiveArgs),
}

/// Exit code for input that is not well formed (spec: a malformed scenario exits with 2).
const EXIT_MALFORMED: u8 = 2;
/// File under a dev data dir holding the dev API key in clear (dev mode only: it is meant to be
/// shown and reused; production keys exist only as hashes).
const DEV_API_KEY_FILE: &str = "dev-api-key";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay { scenario } => replay(&scenario),
        Command::Node { data, listen, cert, key, api_key_file, client_ca, max_in_flight } => {
            let tls = match (cert, key) {
                (Some(cert), Some(key)) => TlsSource::Files { cert, key },
                _ => TlsSource::Dev { dir: data.join("tls") },
            };
            let opts = NodeOptions { data, listen, tls, client_ca, api_key_file, max_in_flight, dev: None };
            run_async(run_node(opts))
        }
        Command::Import(args) => ops::import::run(args),
        Command::Reconcile(args) => ops::reconcile::run(*args),
        Command::Backup(args) => ops::backup::backup(args),
        Command::Restore(args) => ops::backup::restore(args),
        Command::Archive(args) => ops::archive::run(args),
        Command::Dev { data, listen, partners, quiet } => {
            let tls = TlsSource::Dev { dir: data.join("tls") };
            let key_file = data.join(DEV_API_KEY_FILE);
            let opts = NodeOptions {
                data,
                listen,
                tls,
                client_ca: None,
                api_key_file: Some(key_file),
                max_in_flight: MAX_IN_FLIGHT_REQUESTS,
                dev: Some(DevOptions { partners, traffic: !quiet }),
            };
            run_async(run_node(opts))
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("settle: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("settle: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct DevOptions {
    partners: usize,
    traffic: bool,
}

#[derive(Debug)]
struct NodeOptions {
    data: PathBuf,
    listen: SocketAddr,
    tls: TlsSource,
    client_ca: Option<PathBuf>,
    api_key_file: Option<PathBuf>,
    max_in_flight: usize,
    dev: Option<DevOptions>,
}

fn read_key(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// The dev key: read from DATA/dev-api-key, or generated and written there on first start.
fn dev_key(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        return read_key(path);
    }
    let key = settle_node::ingress::auth::generate_key();
    std::fs::write(path, format!("{key}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).context("cannot write to standard output")
}

async fn run_node(opts: NodeOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.data).with_context(|| format!("cannot create {}", opts.data.display()))?;
    let plain_key = match (&opts.dev, &opts.api_key_file) {
        (Some(_), Some(path)) => Some(dev_key(path)?),
        (None, Some(path)) => Some(read_key(path)?),
        (_, None) => None,
    };
    let (keys, generated) = ApiKeys::load_or_init(&opts.data, plain_key.as_deref())?;
    let engine = backend::open(&opts.data).await?;
    let config = IngressConfig {
        listen: opts.listen,
        state_dir: opts.data.clone(),
        tls: opts.tls.clone(),
        client_ca: opts.client_ca.clone(),
        keys,
        max_in_flight: opts.max_in_flight,
    };
    let ingress = Ingress::start(config, engine.clone()).await?;
    let addr = ingress.local_addr();
    let cert = ingress.cert_path().to_path_buf();
    let shown_key = if opts.dev.is_some() { plain_key.clone() } else { generated.clone() };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut trickle = None;
    if let Some(dev) = &opts.dev {
        let partners = backend::seed_demo(&engine, dev.partners).await?;
        if dev.traffic {
            let pem = std::fs::read(&cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let key = plain_key.clone().unwrap_or_default();
            let client =
                settle_client::Client::connect_lazy(settle_client::ClientConfig::new(addr, pem, key))?;
            trickle = Some(tokio::spawn(settle_node::demo::trickle(client, partners, 0x5e77_1e00, stop_rx)));
        }
    }

    let ready = serde_json::json!({
        "event": "ready",
        "quic": addr.to_string(),
        "cert": cert.display().to_string(),
        "api_key": shown_key,
        "data": opts.data.display().to_string(),
    });
    print_line(&ready.to_string())?;
    if opts.dev.is_some() {
        eprintln!("Settle dev node is running.");
        eprintln!("  connect:  QUIC {addr} (ALPN settle/1, server name localhost)");
        eprintln!("  trust:    {}", cert.display());
        eprintln!(
            "  api key:  {} (dev only; also in {})",
            shown_key.unwrap_or_default(),
            opts.data.join(DEV_API_KEY_FILE).display()
        );
        eprintln!(
            "  try:      settle-loadtest --target {addr} --cert {} --api-key-file {} --duration 10s",
            cert.display(),
            opts.data.join(DEV_API_KEY_FILE).display()
        );
        eprintln!("  stop:     Ctrl-C");
    }

    // A stopped engine (a failed durable write) must end the process, so that a supervisor
    // restarts it and recovery runs, instead of a node that answers every request with an error.
    let engine_stopped = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            None
        }
        reason = engine.stopped() => Some(reason),
    };
    if let Some(reason) = engine_stopped {
        eprintln!("settle: the engine stopped: {reason}");
        let _ = stop_tx.send(true);
        ingress.shutdown().await;
        anyhow::bail!("the engine stopped: {reason}");
    }
    eprintln!("settle: shutting down");
    let _ = stop_tx.send(true);
    if let Some(t) = trickle {
        let _ = t.await;
    }
    ingress.shutdown().await;
    backend::shutdown(engine).await?;
    print_line(&serde_json::json!({"event": "stopped"}).to_string())?;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn replay(path: &PathBuf) -> ExitCode {
    let text = if path.as_os_str() == "-" {
        let mut buf = String::new();
        match std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf) {
            Ok(_) => buf,
            Err(e) => return fail(&format!("cannot read standard input: {e}")),
        }
    } else {
        match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => return fail(&format!("cannot read {}: {e}", path.display())),
        }
    };
    let scenario = match settle_core::scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => return fail(&format!("{}: {e}", path.display())),
    };
    let outcome = match settle_core::replay::run(&scenario) {
        Ok(o) => o,
        Err(e) => return fail(&format!("{}: {e}", path.display())),
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(outcome.to_json().as_bytes()).and_then(|()| stdout.flush()) {
        eprintln!("settle replay: cannot write output: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    eprintln!("settle replay: {message}");
    ExitCode::from(EXIT_MALFORMED)
}
