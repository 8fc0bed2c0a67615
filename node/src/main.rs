//! The `settle` binary: the command-line edge of Settle. It parses arguments, reads files and
//! prints results; settlement logic lives in `settle-core`, the engine and the QUIC ingress in
//! the `settle_node` library.

/// The engine allocates and frees many small records per transaction on several threads; glibc's
/// allocator spent about a quarter of the node's time under load (perf), mimalloc far less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use settle_node::api::Metered;
use settle_node::ingress::{ApiKeys, Ingress, IngressConfig, TlsSource, MAX_IN_FLIGHT_REQUESTS};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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
        #[command(flatten)]
        cluster: Box<ClusterArgs>,
    },
    /// Operate a cluster through any member's client address (docs/cluster-interface.md).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
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
        /// One standalone node (the engine without Raft) instead of a local 3-node cluster.
        #[arg(long)]
        single: bool,
        /// HTTP API, dashboard and portal address; the cluster's nodes serve it on this port and
        /// the next two.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
    },
    /// The audit trail of the control plane.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
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

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Checks the audit hash chain of a data directory (of a stopped node; for a running node
    /// use GET /v1/audit/verify). Exit code 0 when intact, 1 when broken.
    Verify {
        #[arg(long)]
        data: PathBuf,
    },
}

/// How `settle cluster` reaches a member.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    /// Any member's client (`--listen`) address: IP:PORT or DNS-NAME:PORT.
    #[arg(long, value_parser = resolve_target)]
    target: SocketAddr,
    /// The certificate (PEM) to trust.
    #[arg(long)]
    cert: PathBuf,
    /// A file holding the API key.
    #[arg(long)]
    api_key_file: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Nodes, shards, leaders, replication lag, per-replica applied index and state hash.
    Status {
        #[command(flatten)]
        target: TargetArgs,
        /// Print the JSON object instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Add a node started with `settle node --id N --join HOST:PORT`; moves replicas to it.
    AddNode {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        id: u64,
        /// The new node's peer address (its `--peer-listen` port): IP:PORT or DNS-NAME:PORT.
        #[arg(long, value_parser = peer_address)]
        peer: String,
    },
    /// Drain a node (its replicas move to the others) and remove it; returns when it holds none.
    RemoveNode {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        id: u64,
    },
}

/// Cluster mode of `settle node` (docs/cluster-interface.md); without `--id` the node is standalone.
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// This node's id in the cluster (enables cluster mode).
    #[arg(long, requires = "peer_listen")]
    id: Option<u64>,
    /// Node-to-node (Raft) QUIC address.
    #[arg(long, requires = "id")]
    peer_listen: Option<SocketAddr>,
    /// HTTP address (served by the HTTP API when present; reported in the ready line).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// The host name or IP address other nodes and operators reach this node at (e.g. a pod's
    /// stable DNS name behind a headless Service); announced with the peer, client and HTTP
    /// ports. Default: the addresses as bound (useless when listening on 0.0.0.0).
    #[arg(long, requires = "id")]
    advertise: Option<String>,
    /// First start of an initial member: every initial member's peer address, as 1=HOST:PORT,...
    #[arg(long, requires = "id", conflicts_with = "join")]
    bootstrap: Option<String>,
    /// First start of a new node: the peer address of any member.
    #[arg(long, requires = "id")]
    join: Option<String>,
    /// Shard groups (read at bootstrap only).
    #[arg(long, default_value_t = settle_cluster::meta::DEFAULT_SHARDS)]
    shards: u32,
    /// Replicas per shard (read at bootstrap only).
    #[arg(long, default_value_t = settle_cluster::meta::DEFAULT_REPLICAS)]
    replicas: u32,
    /// Entries between a group's Raft snapshots (the log before a snapshot is then compacted,
    /// and a replica too far behind catches up by the snapshot).
    #[arg(long, default_value_t = settle_cluster::node::DEFAULT_SNAPSHOT_LOGS,
        value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_logs: u64,
    /// `settle dev` only: seed this many demo partners and rates once serving.
    #[arg(long, hide = true)]
    dev_seed: Option<usize>,
    /// `settle dev` only: send a trickle of demo traffic through this node's client port.
    #[arg(long, hide = true, requires = "dev_seed")]
    dev_traffic: bool,
}

/// Exit code for input that is not well formed (spec: a malformed scenario exits with 2).
const EXIT_MALFORMED: u8 = 2;
/// File under a dev data dir holding the dev API key in clear (dev mode only: it is meant to be
/// shown and reused; production keys exist only as hashes).
const DEV_API_KEY_FILE: &str = "dev-api-key";

/// Log filter when `RUST_LOG` is not set: Settle's warnings and errors; nothing of openraft, which
/// reports every timed-out RPC to a peer that is starting or down as an error (set
/// `RUST_LOG=warn,openraft=warn` to see them when diagnosing a cluster).
const DEFAULT_LOG_FILTER: &str = "warn,openraft=off";

/// Diagnostics go to standard error (standard output carries the ready line and JSON results);
/// `RUST_LOG` sets the filter (e.g. `RUST_LOG=settle_cluster=debug,openraft=info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Replay { scenario } => replay(&scenario),
        Command::Node { data, listen, cert, key, api_key_file, client_ca, max_in_flight, cluster } => {
            let tls = match (cert, key) {
                (Some(cert), Some(key)) => TlsSource::Files { cert, key },
                _ => TlsSource::Dev { dir: data.join("tls") },
            };
            let http = cluster.http;
            let opts =
                NodeOptions { data, listen, tls, client_ca, api_key_file, max_in_flight, http, dev: None };
            match cluster.id {
                Some(_) => run_async(run_cluster_node(opts, *cluster)),
                None => run_async(run_node(opts)),
            }
        }
        Command::Import(args) => ops::import::run(args),
        Command::Reconcile(args) => ops::reconcile::run(*args),
        Command::Backup(args) => ops::backup::backup(args),
        Command::Restore(args) => ops::backup::restore(args),
        Command::Archive(args) => ops::archive::run(args),
        Command::Cluster { action } => run_async(cluster_command(action)),
        Command::Audit { command: AuditCommand::Verify { data } } => audit_verify(&data),
        Command::Dev { data, listen, partners, quiet, single, http } if !single => {
            run_async(run_dev_cluster(data, listen, http, partners, quiet))
        }
        Command::Dev { data, listen, partners, quiet, http, .. } => {
            let tls = TlsSource::Dev { dir: data.join("tls") };
            let key_file = data.join(DEV_API_KEY_FILE);
            let opts = NodeOptions {
                data,
                listen,
                tls,
                client_ca: None,
                api_key_file: Some(key_file),
                max_in_flight: MAX_IN_FLIGHT_REQUESTS,
                http: Some(http),
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
    /// Serve the HTTP API, dashboard and portal here (standalone mode).
    http: Option<SocketAddr>,
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
    let metrics = Arc::new(settle_api::metrics::Metrics::new()?);
    let ingress = Ingress::start(config, Metered::new(engine.clone(), Arc::clone(&metrics))).await?;
    let (http, admin) = match opts.http {
        Some(addr) => {
            let (server, admin) = start_api(addr, &engine, metrics).await?;
            (Some(server), admin)
        }
        None => (None, None),
    };
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
        "http": http.as_ref().map(|h| h.local_addr().to_string()),
        "bootstrap_admin": admin.as_ref().map(admin_json),
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
        if let Some(h) = &http {
            eprintln!("  dashboard: {} (partner portal: {}/portal)", h.url(), h.url());
        }
        print_first_login(admin.as_ref());
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
        if let Some(h) = http {
            h.shutdown().await;
        }
        ingress.shutdown().await;
        anyhow::bail!("the engine stopped: {reason}");
    }
    eprintln!("settle: shutting down");
    let _ = stop_tx.send(true);
    if let Some(t) = trickle {
        let _ = t.await;
    }
    if let Some(h) = http {
        h.shutdown().await;
    }
    ingress.shutdown().await;
    backend::shutdown(engine).await?;
    print_line(&serde_json::json!({"event": "stopped"}).to_string())?;
    Ok(())
}

/// The first administrator's one-time credentials as the ready line carries them.
fn admin_json(a: &settle_api::BootstrapAdmin) -> serde_json::Value {
    serde_json::json!({
        "username": a.username, "password": a.password, "totp_secret": a.totp_secret,
        "otpauth_uri": a.otpauth_uri,
    })
}

/// How to log in the first time (`settle dev`), shown once.
fn print_first_login(admin: Option<&settle_api::BootstrapAdmin>) {
    match admin {
        Some(a) => {
            eprintln!("  first login (shown once; store it now):");
            eprintln!("    username: {}", a.username);
            eprintln!("    password: {}", a.password);
            eprintln!("    TOTP secret: {}", a.totp_secret.as_deref().unwrap_or(""));
            eprintln!("    TOTP URI:    {}", a.otpauth_uri.as_deref().unwrap_or(""));
        }
        None => {
            eprintln!(
                "  log in with the users created earlier (the first admin was shown at the first start)"
            )
        }
    }
}

async fn cluster_command(action: ClusterAction) -> anyhow::Result<()> {
    let (target, json, command) = match action {
        ClusterAction::Status { target, json } => (target, json, None),
        ClusterAction::AddNode { target, id, peer } => {
            (target, false, Some(serde_json::json!({"add_node": {"id": id, "peer": peer}})))
        }
        ClusterAction::RemoveNode { target, id } => {
            (target, false, Some(serde_json::json!({"remove_node": {"id": id}})))
        }
    };
    let pem =
        std::fs::read(&target.cert).with_context(|| format!("cannot read {}", target.cert.display()))?;
    let key = read_key(&target.api_key_file)?;
    let mut config = settle_client::ClientConfig::new(target.target, pem, key);
    if command.is_some() {
        // Moving replicas waits for learners to catch up.
        config.request_timeout = CLUSTER_COMMAND_TIMEOUT;
    }
    let client = settle_client::Client::connect(config).await?;
    let text = match command {
        Some(c) => client.cluster_command(c.to_string()).await?,
        None => client.cluster_status().await?,
    };
    if json {
        return print_line(&text);
    }
    let status: serde_json::Value = serde_json::from_str(&text).context("bad status JSON")?;
    let mut out = String::new();
    for node in status["nodes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "node {} peer {} quic {} {}\n",
            node["id"],
            node["peer"].as_str().unwrap_or("?"),
            node["quic"].as_str().unwrap_or("?"),
            if node["up"].as_bool() == Some(true) { "up" } else { "DOWN" }
        ));
    }
    for shard in status["shards"].as_array().into_iter().flatten() {
        let replicas: Vec<String> = shard["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("{}@{}(lag {})", r["node"], r["applied_index"], r["lag"]))
            .collect();
        out.push_str(&format!(
            "shard {} leader {} {}\n",
            shard["shard"],
            shard["leader"],
            replicas.join(" ")
        ));
    }
    print_line(out.trim_end())
}

/// Time `settle cluster add-node`/`remove-node` waits for the replicas to move.
const CLUSTER_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Members of the `settle dev` cluster.
const DEV_NODES: u16 = 3;
/// Peer ports of the dev cluster are the client ports plus this.
const DEV_PEER_PORT_OFFSET: u16 = 1000;
/// Time a dev member has to print its ready line.
const DEV_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// `settle dev`: three `settle node --id N` processes under DATA/node-N (client ports LISTEN,
/// LISTEN+1, LISTEN+2; peer ports 1000 above), sharing DATA's dev certificate and API key; node
/// 1 seeds demo partners and rates and sends demo traffic. Ctrl-C stops all three.
async fn run_dev_cluster(
    data: PathBuf,
    listen: SocketAddr,
    http: SocketAddr,
    partners: usize,
    quiet: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let key_file = data.join(DEV_API_KEY_FILE);
    let key = dev_key(&key_file)?;
    let tls = settle_node::ingress::tls::load(&TlsSource::Dev { dir: data.join("tls") })?;
    let key_pem = data.join("tls").join("key.pem");
    let exe = std::env::current_exe().context("cannot locate the settle binary")?;
    let client_addr = |i: u16| SocketAddr::new(listen.ip(), listen.port().saturating_add(i));
    let peer_addr =
        |i: u16| SocketAddr::new(listen.ip(), listen.port().saturating_add(DEV_PEER_PORT_OFFSET + i));
    let http_addr = |i: u16| SocketAddr::new(http.ip(), http.port().saturating_add(i));
    let bootstrap: Vec<String> = (0..DEV_NODES).map(|i| format!("{}={}", i + 1, peer_addr(i))).collect();
    let mut children = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<String>();
    for i in 0..DEV_NODES {
        let mut command = std::process::Command::new(&exe);
        command
            .args(["node", "--id", &(i + 1).to_string(), "--data"])
            .arg(data.join(format!("node-{}", i + 1)))
            .args(["--listen", &client_addr(i).to_string(), "--peer-listen", &peer_addr(i).to_string()])
            .args(["--bootstrap", &bootstrap.join(","), "--http", &http_addr(i).to_string(), "--cert"])
            .arg(&tls.cert_path)
            .arg("--key")
            .arg(&key_pem)
            .arg("--api-key-file")
            .arg(&key_file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        if i == 0 {
            command.args(["--dev-seed", &partners.to_string()]);
            if !quiet {
                command.arg("--dev-traffic");
            }
        }
        let mut child = command.spawn().with_context(|| format!("cannot start {}", exe.display()))?;
        let stdout = child.stdout.take().context("no stdout of a dev node")?;
        let ready_tx = ready_tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("\"ready\"") {
                    let _ = ready_tx.send(line);
                }
            }
        });
        children.push(child);
    }
    let mut nodes = Vec::new();
    for _ in 0..DEV_NODES {
        let Ok(line) = ready_rx.recv_timeout(DEV_READY_TIMEOUT) else {
            for child in &mut children {
                let _ = child.kill();
            }
            anyhow::bail!("a dev node did not become ready within {DEV_READY_TIMEOUT:?}");
        };
        nodes.push(serde_json::from_str::<serde_json::Value>(&line).context("bad ready line")?);
    }
    nodes.sort_by_key(|n| n["node_id"].as_u64());
    let quic: Vec<String> = nodes.iter().filter_map(|n| n["quic"].as_str().map(str::to_string)).collect();
    let first = quic.first().cloned().unwrap_or_default();
    let dashboard = nodes.iter().find_map(|n| n["http"].as_str().map(|h| format!("http://{h}")));
    let ready = serde_json::json!({
        "event": "ready",
        "quic": first,
        "nodes": nodes,
        "cert": tls.cert_path.display().to_string(),
        "api_key": key,
        "data": data.display().to_string(),
        "dashboard": dashboard,
        "bootstrap_admin": nodes.iter().map(|n| &n["bootstrap_admin"]).find(|a| !a.is_null()),
    });
    print_line(&ready.to_string())?;
    let cert = tls.cert_path.display();
    let keys = key_file.display();
    eprintln!("Settle dev cluster is running: {DEV_NODES} nodes, data under {}/node-N.", data.display());
    eprintln!("  connect:  QUIC {} (any node; ALPN settle/1, server name localhost)", quic.join(", "));
    eprintln!("  trust:    {cert}");
    eprintln!("  api key:  {key} (dev only; also in {keys})");
    // Every node serves the HTTP API, dashboard and portal over the same replicated state.
    let urls: Vec<String> =
        nodes.iter().filter_map(|n| n["http"].as_str().map(|h| format!("http://{h}"))).collect();
    if let Some(first_url) = urls.first() {
        eprintln!("  dashboard: {first_url} (partner portal: {first_url}/portal)");
        eprintln!("  http:     every node serves both: {}", urls.join(", "));
    }
    // Exactly one member created the first administrator (the one whose write committed first).
    let admin = nodes.iter().find_map(|n| {
        let a = &n["bootstrap_admin"];
        Some(settle_api::BootstrapAdmin {
            username: a["username"].as_str()?.to_string(),
            password: a["password"].as_str()?.to_string(),
            totp_secret: a["totp_secret"].as_str().map(str::to_string),
            otpauth_uri: a["otpauth_uri"].as_str().map(str::to_string),
        })
    });
    print_first_login(admin.as_ref());
    eprintln!("  status:   settle cluster status --target {first} --cert {cert} --api-key-file {keys}");
    eprintln!(
        "  try:      settle-loadtest --target {first} --cert {cert} --api-key-file {keys} --duration 10s"
    );
    eprintln!("  stop:     Ctrl-C (stops all three nodes)");
    wait_for_signal().await?;
    eprintln!("settle: stopping the dev cluster");
    for child in &children {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    }
    for mut child in children {
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
    print_line(&serde_json::json!({"event": "stopped"}).to_string())?;
    Ok(())
}

/// `--target`: an IP address, or a DNS name resolved once here (the command is short-lived).
fn resolve_target(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    settle_cluster::transport::check_peer_addr(text)?;
    let mut found = text.to_socket_addrs().map_err(|e| format!("cannot resolve {text}: {e}"))?;
    found.next().ok_or_else(|| format!("{text} resolves to no address"))
}

/// `--peer`: kept as given (a name is resolved by every node at each connection).
fn peer_address(text: &str) -> Result<String, String> {
    settle_cluster::transport::check_peer_addr(text)?;
    Ok(text.to_string())
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
fn parse_members(text: &str) -> anyhow::Result<std::collections::BTreeMap<u64, String>> {
    let mut out = std::collections::BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').with_context(|| format!("{part:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().with_context(|| format!("{part:?}: bad node id"))?;
        let addr = addr.trim();
        settle_cluster::transport::check_peer_addr(addr).map_err(|e| anyhow::anyhow!("{part:?}: {e}"))?;
        if out.insert(id, addr.to_string()).is_some() {
            anyhow::bail!("node {id} is listed twice");
        }
    }
    Ok(out)
}

async fn run_cluster_node(opts: NodeOptions, cluster: ClusterArgs) -> anyhow::Result<()> {
    let (Some(id), Some(peer_listen)) = (cluster.id, cluster.peer_listen) else {
        anyhow::bail!("cluster mode needs --id and --peer-listen");
    };
    std::fs::create_dir_all(&opts.data).with_context(|| format!("cannot create {}", opts.data.display()))?;
    let plain_key = match &opts.api_key_file {
        Some(path) => Some(read_key(path)?),
        None => None,
    };
    let (keys, generated) = ApiKeys::load_or_init(&opts.data, plain_key.as_deref())?;
    let material = settle_node::ingress::tls::load(&opts.tls)?;
    let bootstrap = cluster.bootstrap.as_deref().map(parse_members).transpose()?;
    let handle = settle_cluster::ClusterHandle::start(settle_cluster::ClusterOptions {
        id,
        data_dir: opts.data.clone(),
        peer_listen,
        advertise: cluster.advertise.clone(),
        bootstrap,
        join: cluster.join.clone(),
        shards: cluster.shards,
        replicas: cluster.replicas,
        fx_max_age: settle_core::Span::from_hours(settle_core::ledger::DEFAULT_FX_MAX_AGE_HOURS),
        hash_seed: 0,
        tls: settle_cluster::PeerTls { chain: material.chain, key: material.key },
        snapshot_logs: cluster.snapshot_logs,
    })
    .await?;
    let config = IngressConfig {
        listen: opts.listen,
        state_dir: opts.data.clone(),
        tls: opts.tls.clone(),
        client_ca: opts.client_ca.clone(),
        keys,
        max_in_flight: opts.max_in_flight,
    };
    let metrics = Arc::new(settle_api::metrics::Metrics::new()?);
    let ingress = Ingress::start(config, Metered::new(handle.clone(), Arc::clone(&metrics))).await?;
    let addr = ingress.local_addr();
    let cert = ingress.cert_path().to_path_buf();
    let (api, admin) = match cluster.http {
        Some(listen) => {
            // A joining node never creates the first administrator (the initial members do,
            // once for the cluster), and it cannot wait for one: it reads the registry only
            // once `add-node` made it a learner, which needs it ready first.
            let create_admin = cluster.join.is_none();
            let (server, admin) = start_cluster_api(listen, &handle, metrics, create_admin).await?;
            (Some(server), admin)
        }
        None => (None, None),
    };
    let advertise = cluster.advertise.as_deref();
    let http = api.as_ref().map(|a| settle_cluster::transport::advertised_addr(advertise, a.local_addr()));
    handle.announce(settle_cluster::transport::advertised_addr(advertise, addr), http.clone());
    let ready = serde_json::json!({
        "event": "ready",
        "node_id": id,
        "quic": addr.to_string(),
        "peer": handle.peer_addr(),
        "http": http,
        "cert": cert.display().to_string(),
        "api_key": generated,
        "data": opts.data.display().to_string(),
        "bootstrap_admin": admin.as_ref().map(admin_json),
    });
    print_line(&ready.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut trickle = None;
    if let Some(n) = cluster.dev_seed {
        let partners = backend::seed_demo(&handle, n).await?;
        if cluster.dev_traffic {
            let pem = std::fs::read(&cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let key = plain_key.clone().unwrap_or_default();
            let client =
                settle_client::Client::connect_lazy(settle_client::ClientConfig::new(addr, pem, key))?;
            trickle = Some(tokio::spawn(settle_node::demo::trickle(client, partners, 0x5e77_1e00, stop_rx)));
        }
    }
    wait_for_signal().await?;
    eprintln!("settle: shutting down");
    let _ = stop_tx.send(true);
    if let Some(t) = trickle {
        let _ = t.await;
    }
    if let Some(a) = api {
        a.shutdown().await;
    }
    ingress.shutdown().await;
    // The requests this node's clients had in flight are answered; now move its leaderships,
    // so the shards it led take writes again within a round trip instead of an election timeout.
    let started = std::time::Instant::now();
    let (led, moved) = handle.hand_over_leaderships().await;
    eprintln!("settle: handed over {moved} of {led} leaderships in {} ms", started.elapsed().as_millis());
    handle.shutdown().await;
    print_line(&serde_json::json!({"event": "stopped"}).to_string())?;
    Ok(())
}

/// How long a cluster member keeps trying to create (or find) the first administrator at start
/// (the metadata group needs a leader first).
const BOOTSTRAP_ADMIN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves the HTTP API on `addr` over a cluster member; the member that creates the first
/// administrator (once for the cluster; only initial members try, `create_admin`) gets its
/// credentials, to show once.
async fn start_cluster_api(
    addr: SocketAddr,
    handle: &settle_cluster::ClusterHandle,
    metrics: Arc<settle_api::metrics::Metrics>,
    create_admin: bool,
) -> anyhow::Result<(settle_api::ApiServer, Option<settle_api::BootstrapAdmin>)> {
    let control: Arc<dyn settle_api::model::ControlStore> =
        Arc::new(settle_node::cluster_api::ClusterControl(handle.clone()));
    let config = settle_api::ApiConfig::new(addr);
    let deadline = tokio::time::Instant::now() + BOOTSTRAP_ADMIN_WAIT;
    let admin = loop {
        if !create_admin {
            break None;
        }
        match settle_api::bootstrap_admin(Arc::clone(&control), config.argon2_memory_kib).await {
            Ok(admin) => break admin,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("first administrator: {e}; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::error!(
                    "cannot create the first administrator (is a majority of the cluster up?): {e}"
                );
                break None;
            }
        }
    };
    let api = Arc::new(settle_node::cluster_api::ClusterApi::new(handle.clone()));
    let server = settle_api::serve(config, api.clone(), api, control, metrics).await?;
    Ok((server, admin))
}

/// Serves the HTTP API on `addr` over the engine; creates the first administrator on the first
/// start (its credentials are returned to be shown once).
async fn start_api(
    addr: SocketAddr,
    engine: &backend::Engine,
    metrics: Arc<settle_api::metrics::Metrics>,
) -> anyhow::Result<(settle_api::ApiServer, Option<settle_api::BootstrapAdmin>)> {
    let api = settle_node::api::EngineApi::new(engine.clone())?;
    let control: Arc<dyn settle_api::model::ControlStore> = Arc::new(api.control());
    let config = settle_api::ApiConfig::new(addr);
    let memory = config.argon2_memory_kib;
    let admin = settle_api::bootstrap_admin(Arc::clone(&control), memory).await?;
    let shared = Arc::new(api);
    let server = settle_api::serve(config, shared.clone(), shared, control, metrics).await?;
    Ok((server, admin))
}

fn audit_verify(data: &Path) -> ExitCode {
    let cannot = |e: &dyn std::fmt::Display| {
        eprintln!(
            "settle audit verify: cannot open {}: {e} (is the node running? use GET /v1/audit/verify)",
            data.display()
        );
        ExitCode::FAILURE
    };
    // A cluster member's chain is the metadata group's, in its raft database.
    let raft = data.join("raft");
    let control: Box<dyn settle_api::model::ControlStore> = if raft.exists() {
        match settle_storage::RaftDb::open_read_only(&raft) {
            Ok(db) => Box::new(settle_node::cluster_api::MemberAuditFile(Arc::new(db))),
            Err(e) => return cannot(&e),
        }
    } else {
        match settle_storage::Store::open(&data.join("engine")) {
            Ok(s) => Box::new(settle_node::api::StoreControl(Arc::new(s))),
            Err(e) => return cannot(&e),
        }
    };
    match settle_api::verify_audit_chain(control.as_ref()) {
        Ok(v) => {
            let line = serde_json::json!({"ok": true, "records": v.records, "head": v.head});
            match print_line(&line.to_string()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            let _ = print_line(&serde_json::json!({"ok": false, "error": e.to_string()}).to_string());
            ExitCode::FAILURE
        }
    }
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
