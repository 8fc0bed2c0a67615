//! settle-loadtest: pushes realistic traffic at a Settle node over the real QUIC protocol,
//! measures throughput and latency, and then verifies every acknowledged transaction: a repeat of
//! each acked id must return the first result (found exactly once), and every partner's payable on
//! the node must equal what `settle_core::Ledger` computes from the acked history.
//!
//! It uses the client and the core only, never the node's internals. Without `--target` it starts
//! a fresh `settle node` process on a temporary data dir and removes it afterwards.

mod node;
mod run;

use clap::Parser;
use settle_loadtest::parse_duration;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser, Clone)]
#[command(name = "settle-loadtest", version, about = "Settle's load generator and end-to-end verifier")]
pub struct Args {
    /// A running node (QUIC address). Without it a fresh node is started for the run.
    #[arg(long)]
    pub target: Option<SocketAddr>,
    /// Start a fresh local cluster of this many nodes (separate processes, temporary data dirs,
    /// removed afterwards) and spread the connections over its members.
    #[arg(long, conflicts_with = "target")]
    pub cluster: Option<usize>,
    /// The certificate (PEM) to trust for --target.
    #[arg(long, requires = "target")]
    pub cert: Option<PathBuf>,
    /// The API key for --target.
    #[arg(long)]
    pub api_key: Option<String>,
    /// A file holding the API key for --target.
    #[arg(long, conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// TLS server name of the target.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Partners to register and send traffic for.
    #[arg(long, default_value_t = 10_000)]
    pub partners: usize,
    /// Zipf exponent of the partner skew (0 = uniform).
    #[arg(long, default_value_t = 0.0)]
    pub zipf: f64,
    /// Transactions per batch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// QUIC connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Closed loop: batches in flight per connection.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Open loop at this many transactions per second (default: closed loop).
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long to send traffic, e.g. 30s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of the traffic generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of partner and transaction ids (default: derived from the seed and the clock, so
    /// that runs against one node do not collide).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Skip the verification phase.
    #[arg(long)]
    pub no_verify: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("settle-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::main(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("settle-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
