//! The `settle` binary: the command-line edge of Settle. It parses arguments, reads files and
//! prints results; all settlement logic lives in `settle-core`.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

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
}

/// Exit code for input that is not well formed (spec: a malformed scenario exits with 2).
const EXIT_MALFORMED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay { scenario } => replay(&scenario),
    }
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
