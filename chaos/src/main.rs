//! settle-chaos: starts a real Settle cluster (or a standalone node) as separate `settle node`
//! processes, drives the load tester's realistic traffic at it through `settle-client`, injects
//! faults on a seeded schedule (SIGKILL and restart, SIGSTOP/SIGCONT, network partitions, node
//! add and remove, rolling restart), heals, requires progress, and checks that every acked
//! transaction is there exactly once, that replicas agree, and that balances equal a replay of the
//! acked history through settle-core.
//!
//! It uses the client, the core and the load tester's library only, never the node's internals;
//! it drives nodes through the command line and interfaces of `docs/cluster-interface.md`.

mod check;
mod cluster;
mod load;
mod nemesis;
mod net;
mod run;
mod schedule;

use clap::Parser;
use settle_loadtest::parse_duration;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser, Clone)]
#[command(name = "settle-chaos", version, about = "Settle's fault-injection and invariant-checking harness")]
pub struct Args {
    /// Nodes to start: 1 is a standalone node (no Raft; cluster faults are skipped), 3 or more a
    /// cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Traffic time, e.g. 180s, 10m. Faults start after a warm-up and stop at 80% of it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of the fault schedule and of the traffic: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fault kinds to inject (comma separated; default: all that the topology allows).
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<schedule::Kind>,
    /// The `settle` binary (default: next to this executable, or $SETTLE_BIN).
    #[arg(long)]
    pub settle: Option<PathBuf>,
    /// Partners to register and send traffic for.
    #[arg(long, default_value_t = 200)]
    pub partners: usize,
    /// Transactions per batch.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Closed-loop workers (batches in flight).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Partners written to every 50 ms to measure unavailability.
    #[arg(long, default_value_t = 16)]
    pub probes: usize,
    /// After the heal, every probe partner must accept a write within this time.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub liveness_timeout: Duration,
    /// Count it as a violation when some probe partner accepted no write for longer than this
    /// (milliseconds; the cluster's target after a leader is killed is 2000).
    #[arg(long)]
    pub max_unavailability_ms: Option<u64>,
    /// Run the nodes on 127.0.0.x even as root (partitions are then skipped).
    #[arg(long)]
    pub no_netns: bool,
    /// Keep the working directory (data dirs, node logs) also when the run passed.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Self-test of the checker: break the system on purpose and expect a failing verdict.
    #[arg(long, hide = true)]
    pub inject_bug: Option<InjectBug>,
}

/// Deliberate bugs for testing that the harness notices them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InjectBug {
    /// A killed node restarts with an empty data directory: acknowledged transactions are lost.
    LoseData,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("settle-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run::main(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("settle-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
