//! One chaos run: start the nodes, set up partners and rates, drive load while the nemesis
//! injects the scheduled faults, heal, require progress, reconcile, check, report.

#![allow(clippy::float_arithmetic)] // rates and seconds of the report only

use crate::check::{self, Evidence};
use crate::cluster::{NodeProc, Nodes, Role, Shared, Status, STOP_TIMEOUT};
use crate::load::{self, Endpoint, Load};
use crate::nemesis::Nemesis;
use crate::net::{self, Network};
use crate::schedule::{self, Kind, Topology};
use crate::Args;
use anyhow::{anyhow, bail, Context};
use settle_client::{Client, ClientConfig, RetryPolicy};
use settle_loadtest::traffic;
use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// Time the cluster has, after its nodes are ready, until every shard has a leader.
const FORMATION_TIMEOUT: Duration = Duration::from_secs(90);
/// Time the replicas have, after the heal, to reach the same applied index.
const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(90);
/// Time batches with an unknown outcome have, after the heal, to be answered.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time the repeat of every acked transaction and the balance reads may take in all: this much,
/// plus a second per VERIFY_TXS_PER_SECOND acked transactions.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);
const VERIFY_TXS_PER_SECOND: u64 = 1_000;
/// Attempts of one setup or verification request (about 90 s in all), so that a request the
/// cluster never answers fails with its last error well within the verification's time limit.
const PLAIN_ATTEMPTS: u32 = 8;
/// Time one setup or verification request may take before it is retried.
const PLAIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between two status reads that must agree before replicas count as converged.
const CONVERGENCE_POLL: Duration = Duration::from_secs(1);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(250);

/// Whether `settle node` takes the cluster flags of docs/cluster-interface.md.
fn has_cluster_mode(settle: &std::path::Path) -> anyhow::Result<bool> {
    let out = std::process::Command::new(settle)
        .args(["node", "--help"])
        .output()
        .with_context(|| format!("cannot run {}", settle.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("--peer-listen"))
}

fn say(args: &Args, text: &str) {
    if !args.json {
        eprintln!("settle-chaos: {text}");
    }
}

pub async fn main(args: Args) -> anyhow::Result<bool> {
    if args.nodes == 0 || args.nodes == 2 {
        bail!("--nodes must be 1 (standalone) or at least 3 (a cluster of 3 replicas per shard)");
    }
    if args.batch == 0 || args.batch > settle_wire::MAX_BATCH_TXS {
        bail!("--batch must be 1..={}", settle_wire::MAX_BATCH_TXS);
    }
    if args.partners == 0 {
        bail!("--partners must be at least 1");
    }
    let workdir = tempfile::Builder::new()
        .prefix(&format!("settle-chaos-{}-", args.seed))
        .tempdir()
        .context("cannot create a working directory")?;
    let outcome = tokio::select! {
        r = run(&args, workdir.path().to_path_buf()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        _ = terminate() => Err(anyhow!("terminated")),
    };
    // Everything the run started (processes, namespaces) is gone once `run` is dropped.
    // Kept for a failed or interrupted run once a node ran (its data and log explain the failure).
    let ran = workdir.path().join("node1").exists();
    let keep = args.keep || (ran && !matches!(outcome, Ok(true)));
    if keep {
        let path = workdir.keep();
        eprintln!("settle-chaos: node data and logs kept in {}", path.display());
    }
    outcome
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn run(args: &Args, workdir: PathBuf) -> anyhow::Result<bool> {
    let settle = match &args.settle {
        Some(path) => path.clone(),
        None => settle_loadtest::settle_binary()?,
    };
    if args.nodes > 1 && !has_cluster_mode(&settle)? {
        bail!(
            "{} has no cluster mode (no --peer-listen in `settle node --help`); use --nodes 1",
            settle.display()
        );
    }
    let use_netns = !args.no_netns && net::available();
    let topology = Topology {
        nodes: args.nodes,
        replicas: if args.nodes > 1 { crate::cluster::REPLICAS } else { 1 },
        network_control: use_netns && args.nodes > 1,
    };
    let wanted: BTreeSet<Kind> = if args.faults.is_empty() {
        Kind::ALL.into_iter().collect()
    } else {
        args.faults.iter().copied().collect()
    };
    let duration_ms = u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX);
    let plan = schedule::plan(args.seed, topology, duration_ms, &wanted);
    for (kind, why) in &plan.skipped {
        say(args, &format!("skipping {} faults: {why}", kind.name()));
    }
    say(args, &format!("{} faults scheduled (seed {})", plan.faults.len(), args.seed));

    // The nodes and their network.
    let mut network = if use_netns { Some(Network::create()?) } else { None };
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(net) = network.as_mut() {
        for id in 1..=args.nodes + schedule::MAX_EXTRA_NODES {
            ips.push(IpAddr::V4(net.node_ip(id)));
        }
        for id in 1..=args.nodes {
            net.add_node(id)?;
        }
    }
    let shared = Shared::create(settle, &workdir, args.seed, &ips)?;
    let mut procs = std::collections::BTreeMap::new();
    let mut peers = Vec::new();
    for id in 1..=args.nodes {
        let proc = NodeProc::new(id, Role::Standalone, &workdir, network.as_ref())?;
        peers.push(format!("{id}={}", proc.addrs.peer));
        procs.insert(id, proc);
    }
    if args.nodes > 1 {
        let list = peers.join(",");
        for p in procs.values_mut() {
            p.role = Role::Bootstrap(list.clone());
        }
    }
    let mut nodes = Nodes { shared: shared.clone(), procs, net: network };
    let started_nodes = std::time::Instant::now();
    start_all(&mut nodes).await?;
    if nodes.is_cluster() {
        wait_formed(&mut nodes).await?;
    }
    say(
        args,
        &format!(
            "{} node(s) serving after {:.1}s ({}), work dir {}",
            args.nodes,
            started_nodes.elapsed().as_secs_f64(),
            if use_netns { "network namespaces" } else { "loopback" },
            workdir.display()
        ),
    );

    // Partners and rates, through plain clients (no fault yet).
    let pem = std::fs::read(&shared.cert)?;
    let setup_clients: Vec<Arc<Client>> = nodes
        .quic_addrs()
        .into_iter()
        .map(|(_, addr)| plain_client(addr, &pem, &shared.api_key))
        .collect::<anyhow::Result<_>>()?;
    let now = load::instant_now();
    let run_id = format!("ch{}x{:x}", args.seed, now.unix_seconds());
    let partners = traffic::partners(&run_id, args.partners, now.start_of_utc_day());
    let rates = traffic::rates(now.saturating_sub(settle_core::Span::from_minutes(1)));
    settle_loadtest::register(&setup_clients, &partners).await?;
    setup_clients[0].publish_rates(rates.clone()).await.context("cannot publish rates")?;

    // Traffic and faults.
    let endpoints: Vec<Arc<Endpoint>> = nodes
        .quic_addrs()
        .into_iter()
        .map(|(id, addr)| load::endpoint(id, addr, &pem, &shared.api_key).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let load =
        Arc::new(Load::new(partners.clone(), args.seed, run_id.clone(), args.batch, args.probes, endpoints));
    let mut workers = JoinSet::new();
    for w in 0..args.workers.max(1) {
        workers.spawn(load.clone().worker(w));
    }
    let mut probes = JoinSet::new();
    for k in 0..args.probes.min(partners.len()) {
        probes.spawn(load.clone().probe(k));
    }
    let current = Arc::new(Mutex::new(String::new()));
    let progress = tokio::spawn(progress(args.json, load.clone(), current.clone(), args.duration));
    let mut nemesis = Nemesis {
        nodes,
        load: load.clone(),
        pem: pem.clone(),
        current,
        records: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
        lose_data: args.inject_bug == Some(crate::InjectBug::LoseData),
    };
    nemesis.run(&plan.faults, args.duration).await;
    tokio::time::sleep_until(tokio::time::Instant::from_std(load.started + args.duration)).await;
    load.stop_workers.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}
    let traffic_secs = load.started.elapsed().as_secs_f64();

    if !args.json && std::io::stderr().is_terminal() {
        eprintln!();
    }
    let mut phases = Phases::new(load.started);
    phases.done("traffic");

    // Heal, then require progress: every probe partner must accept a write.
    let mut problems = nemesis.nodes.heal().await;
    phases.done("heal");
    let healed = std::time::Instant::now();
    let liveness_deadline = healed + args.liveness_timeout;
    while !load.all_probes_since(healed) && std::time::Instant::now() < liveness_deadline {
        tokio::time::sleep(POLL).await;
    }
    let liveness_ms = if load.all_probes_since(healed) {
        Some(healed.elapsed().as_millis() as u64)
    } else {
        problems.push(format!(
            "liveness: some probe partner accepted no write within {:?} after the heal",
            args.liveness_timeout
        ));
        None
    };
    load.stop_probes.store(true, Ordering::Relaxed);
    while probes.join_next().await.is_some() {}
    progress.abort();
    phases.done("liveness");
    let unreconciled = load.reconcile(std::time::Instant::now() + RECONCILE_TIMEOUT).await;
    phases.done("reconcile");

    let history = std::mem::take(&mut *load.history.lock().unwrap_or_else(|e| e.into_inner()));
    let verify_limit = VERIFY_TIMEOUT + Duration::from_secs(history.len() as u64 / VERIFY_TXS_PER_SECOND);
    let verify_deadline = std::time::Instant::now() + verify_limit;
    let evidence = tokio::time::timeout(verify_limit, async {
        let repeats = load.repeat_all(&history, verify_deadline).await?;
        let balances = load.balances_all(verify_deadline).await?;
        anyhow::Ok((repeats, balances))
    })
    .await
    .unwrap_or_else(|_| Err(anyhow!("timed out after {verify_limit:?}")));
    phases.done("verify");
    // Replicas must converge (after the repeats, which may append to the logs too).
    let status =
        if nemesis.nodes.is_cluster() { Some(wait_converged(&mut nemesis.nodes).await) } else { None };
    let status = match status {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            problems.push(format!("cannot read the cluster status after the heal: {e:#}"));
            None
        }
        None => None,
    };
    phases.done("convergence");
    problems.append(&mut nemesis.problems);
    let unavailable = load.max_unavailability();
    if let (Some(limit), Some((gap, partner, from))) = (args.max_unavailability_ms, unavailable.as_ref()) {
        if gap.as_millis() > u128::from(limit) {
            problems.push(format!(
                "availability: {partner} accepted no write for {} ms from {} ms (limit {limit} ms)",
                gap.as_millis(),
                from.as_millis()
            ));
        }
    }
    let verdict = match &evidence {
        Ok((repeats, balances)) => check::judge(&Evidence {
            partners: &partners,
            rates: &rates,
            history: &history,
            repeats,
            balances,
            seed: args.seed,
            unreconciled,
            status: status.as_ref(),
            run_problems: &problems,
        })?,
        Err(e) => {
            problems.push(format!("verification could not complete after the heal: {e:#}"));
            check::Verdict::unverified(history.len() as u64, unreconciled, &problems)
        }
    };

    // Stop the nodes gracefully; the network goes when `nemesis` is dropped.
    let killed = nemesis.nodes.stop_all().await;
    if !killed.is_empty() {
        nemesis
            .notes
            .push(format!("nodes {killed:?} did not stop within {STOP_TIMEOUT:?} of SIGTERM at the end"));
    }

    let stats = load
        .stats
        .lock()
        .map(|s| (s.failed, s.failovers, s.last_error.clone(), s.failures_by_node.clone()))
        .unwrap_or_default();
    let injected = nemesis.records.iter().filter(|r| r.error.is_none()).count();
    // Each fault owns the probe gaps that began from just before it (the last acknowledgement
    // before a kill precedes it) until just before the next fault.
    let lead = crate::load::GAP_RECORD_MIN;
    let starts: Vec<Duration> = nemesis.records.iter().map(|r| Duration::from_millis(r.at_ms)).collect();
    for (i, record) in nemesis.records.iter_mut().enumerate() {
        let from = starts[i].saturating_sub(lead);
        let to = starts.get(i + 1).map_or(Duration::MAX, |next| next.saturating_sub(lead));
        record.max_unavailability_ms = Some(load.max_gap_between(from, to).as_millis() as u64);
    }
    let report = serde_json::json!({
        "seed": args.seed,
        "nodes": args.nodes,
        "mode": if args.nodes > 1 { "cluster" } else { "standalone" },
        "network": if use_netns { "namespaces" } else { "loopback" },
        "duration_s": (traffic_secs * 1000.0).round() / 1000.0,
        "partners": partners.len(),
        "run_id": run_id,
        "acked": verdict.acked,
        "accepted_tps": (verdict.acked as f64 / traffic_secs.max(1e-9)).round(),
        "verified": verdict.verified,
        "lost": verdict.lost,
        "duplicated": verdict.duplicated,
        "divergent_shards": verdict.divergent_shards,
        "unconverged_shards": verdict.unconverged_shards,
        "balances_checked": verdict.balances_checked,
        "balance_mismatches": verdict.balance_mismatches,
        "outcome_mismatches": verdict.outcome_mismatches,
        "statements_checked": verdict.statements_checked,
        "statement_mismatches": verdict.statement_mismatches,
        "exceptions": verdict.exceptions,
        "unreconciled": verdict.unreconciled,
        "violations": verdict.violations,
        "violation_details": verdict.details,
        "max_unavailability_ms": unavailable.as_ref().map_or(0, |(gap, _, _)| gap.as_millis() as u64),
        "max_unavailability_partner": unavailable.as_ref().map(|(_, p, _)| p.clone()),
        "max_unavailability_from_ms": unavailable.as_ref().map(|(_, _, from)| from.as_millis() as u64),
        "liveness_ms": liveness_ms,
        "failed_batches": stats.0,
        "failovers": stats.1,
        "failures_by_node": stats.3,
        "last_error": stats.2,
        "faults_injected": injected,
        "faults": nemesis.records,
        "skipped_faults": plan.skipped.iter().map(|(k, why)| serde_json::json!({"kind": k.name(), "reason": why})).collect::<Vec<_>>(),
        // Statements are compared with the replay on the replica that serves reads; across
        // replicas only through the state hash (no per-replica read in the interface yet).
        "statements_compared_across_replicas": false,
        "phases_s": phases.seconds,
        "notes": nemesis.notes,
        "workdir": workdir.display().to_string(),
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        summary(&mut out, &report, verdict.passed())?;
    }
    out.flush()?;
    Ok(verdict.passed())
}

/// Seconds spent in each phase after the traffic, announced on stderr as they end.
struct Phases {
    last: std::time::Instant,
    seconds: serde_json::Map<String, serde_json::Value>,
}

impl Phases {
    fn new(since: std::time::Instant) -> Phases {
        Phases { last: since, seconds: serde_json::Map::new() }
    }

    fn done(&mut self, name: &str) {
        let secs = (self.last.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        self.last = std::time::Instant::now();
        self.seconds.insert(name.to_string(), serde_json::json!(secs));
        // Also with --json (stdout keeps its one object): a long phase is visible as it ends.
        eprintln!("settle-chaos: {name} done ({secs:.1}s)");
    }
}

fn plain_client(addr: std::net::SocketAddr, pem: &[u8], key: &str) -> anyhow::Result<Arc<Client>> {
    let mut config = ClientConfig::new(addr, pem.to_vec(), key);
    config.request_timeout = PLAIN_REQUEST_TIMEOUT;
    config.retry = RetryPolicy {
        max_attempts: PLAIN_ATTEMPTS,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_secs(1),
    };
    Ok(Arc::new(Client::connect_lazy(config)?))
}

/// Spawns every node, then waits for all ready lines (bootstrap members may wait for each other).
async fn start_all(nodes: &mut Nodes) -> anyhow::Result<()> {
    let shared = nodes.shared.clone();
    let mut set = JoinSet::new();
    for (id, mut proc) in std::mem::take(&mut nodes.procs) {
        let shared = shared.clone();
        set.spawn(async move {
            let r = proc.start(&shared).await;
            (id, proc, r)
        });
    }
    let mut first_error = None;
    while let Some(done) = set.join_next().await {
        let (id, proc, r) = done?;
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
        nodes.procs.insert(id, proc);
    }
    first_error.map_or(Ok(()), Err)
}

async fn wait_formed(nodes: &mut Nodes) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + FORMATION_TIMEOUT;
    loop {
        let status = nodes.status().await;
        if let Ok(s) = &status {
            if !s.shards.is_empty() && s.shards.iter().all(|sh| sh.leader.is_some()) {
                return Ok(());
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(anyhow!(
                "the cluster did not elect a leader for every shard within {FORMATION_TIMEOUT:?}: {status:?}"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the status until every shard's member replicas agree and nothing moved since the
/// previous poll (so a momentary agreement in the middle of replication does not count), or until
/// the deadline; returns the last status.
async fn wait_converged(nodes: &mut Nodes) -> anyhow::Result<Status> {
    let deadline = std::time::Instant::now() + CONVERGENCE_TIMEOUT;
    let mut previous: Option<Vec<Option<u64>>> = None;
    loop {
        let status = nodes.status().await;
        let expired = std::time::Instant::now() >= deadline;
        match &status {
            Ok(s) => {
                let indexes: Vec<Option<u64>> =
                    s.shards.iter().flat_map(|sh| sh.replicas.iter().map(|r| r.applied_index)).collect();
                let settled = previous.as_ref() == Some(&indexes);
                if (settled && check::disagreements(s).is_empty()) || expired {
                    return status;
                }
                previous = Some(indexes);
            }
            Err(_) if expired => return status,
            Err(_) => {}
        }
        tokio::time::sleep(CONVERGENCE_POLL).await;
    }
}

async fn progress(json: bool, load: Arc<Load>, current: Arc<Mutex<String>>, total: Duration) {
    if json {
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let every = if tty { Duration::from_secs(1) } else { Duration::from_secs(5) };
    let mut last = 0u64;
    loop {
        tokio::time::sleep(every).await;
        let acked = load.acked.load(Ordering::Relaxed);
        let tps = (acked - last.min(acked)) as f64 / every.as_secs_f64();
        last = acked;
        let failed = load.stats.lock().map(|s| s.failed).unwrap_or(0);
        let fault = current.lock().map(|c| c.clone()).unwrap_or_default();
        let line = format!(
            "[{:>6.1}s/{:.0}s] acked {acked} ({tps:.0} tx/s) unanswered batches {failed}{}",
            load.started.elapsed().as_secs_f64(),
            total.as_secs_f64(),
            if fault.is_empty() { String::new() } else { format!(" | fault: {fault}") }
        );
        if tty {
            eprint!("\r{line:<120}");
        } else {
            eprintln!("{line}");
        }
    }
}

fn summary(out: &mut impl Write, report: &serde_json::Value, passed: bool) -> anyhow::Result<()> {
    const ORDER: [&str; 23] = [
        "mode",
        "nodes",
        "network",
        "seed",
        "duration_s",
        "acked",
        "accepted_tps",
        "verified",
        "lost",
        "duplicated",
        "divergent_shards",
        "unconverged_shards",
        "balance_mismatches",
        "outcome_mismatches",
        "statements_checked",
        "statement_mismatches",
        "unreconciled",
        "violations",
        "max_unavailability_ms",
        "max_unavailability_partner",
        "liveness_ms",
        "faults_injected",
        "failed_batches",
    ];
    for key in ORDER {
        writeln!(out, "{key:<28} {}", report[key])?;
    }
    if let Some(faults) = report["faults"].as_array() {
        writeln!(out, "faults:")?;
        for f in faults {
            writeln!(out, "  {f}")?;
        }
    }
    if let Some(skipped) = report["skipped_faults"].as_array() {
        for s in skipped {
            writeln!(out, "skipped {}: {}", s["kind"], s["reason"])?;
        }
    }
    writeln!(out, "{:<28} {}", "result", if passed { "PASS" } else { "FAIL" })?;
    if let Some(details) = report["violation_details"].as_array() {
        for d in details {
            writeln!(out, "  {d}")?;
        }
    }
    if !passed {
        writeln!(
            out,
            "reproduce: settle-chaos --seed {} --nodes {} (same options)",
            report["seed"], report["nodes"]
        )?;
    }
    Ok(())
}
