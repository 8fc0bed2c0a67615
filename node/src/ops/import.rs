//! `settle import --mapping M.toml FILE`: streams a partner file through a mapping
//! (settle-adapters) and submits the canonical transactions in batches through the client. Ids
//! come from the rows, so a retried batch or a second import of the same file changes nothing.
//!
//! Exit codes (also in `docs/import-and-reconcile.md`): 0 every row is on the node and none is an
//! exception; 3 every row is on the node but some are exceptions (this run's or an earlier
//! import's); 2 the mapping, the file's header or the arguments are unusable (nothing sent);
//! 1 the import stopped part way (I/O, node unreachable, refused batch): rerun it, rows already
//! sent come back as duplicates.

use super::target::TargetArgs;
use anyhow::Context;
use serde::Serialize;
use settle_adapters::{canonical_json, ImportCounts, MappedRow, Mapping, Rows};
use settle_wire::{tx_result, MAX_BATCH_TXS};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Transactions per batch unless `--batch` says otherwise.
pub const DEFAULT_BATCH: usize = 500;
/// Batches mapped ahead of the one in flight (bounds memory: at most this many + 1 batches).
const READ_AHEAD_BATCHES: usize = 2;
/// A batch is sent once its encoded transactions reach this size, whatever `--batch` says, so
/// that rows with large metadata never make a frame the node refuses as TOO_LARGE.
const MAX_BATCH_BYTES: usize = settle_wire::MAX_FRAME_BYTES / 2;
/// Least time between two progress redraws.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_EXCEPTIONS: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The mapping file (TOML; see docs/import-and-reconcile.md).
    #[arg(long)]
    pub mapping: PathBuf,
    /// The partner's file ("-" for standard input).
    pub file: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Transactions per batch (1..=8192); a batch is also cut at half the frame limit in bytes.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// Map only: print the canonical transactions as JSON lines on standard output and send
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar on standard error (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// What the import did, printed as JSON on standard output at the end.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub counts: ImportCounts,
    pub millis: u64,
}

impl Summary {
    fn record(&mut self, row: &MappedRow, result: &settle_wire::TxResult) {
        let reason = match &result.outcome {
            Some(tx_result::Outcome::Exception(e)) => Some(e.reason.as_str()),
            _ => None,
        };
        self.counts.record(row.error.is_some(), result.duplicate, reason);
    }

    fn exit_code(&self) -> u8 {
        if self.counts.clean() {
            EXIT_OK
        } else {
            EXIT_EXCEPTIONS
        }
    }
}

pub fn run(args: ImportArgs) -> ExitCode {
    if args.batch == 0 || args.batch > MAX_BATCH_TXS {
        eprintln!("settle import: --batch must be 1..={MAX_BATCH_TXS}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let opened = match open(&args.mapping, &args.file) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("settle import: {e:#}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if args.dry_run {
        return dry_run(opened, !args.no_progress);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("settle import: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let mut summary = Summary { counts: ImportCounts::new(&opened.name, &opened.mapping), millis: 0 };
    let result = runtime.block_on(submit(&args, opened, &mut summary));
    if let Err(e) = print_summary(&summary) {
        eprintln!("settle import: {e:#}");
    }
    match result {
        Ok(()) => ExitCode::from(summary.exit_code()),
        Err(e) => {
            eprintln!("settle import: {e:#}");
            eprintln!(
                "settle import: stopped after {} rows; rerun to finish (sent rows come back as duplicates)",
                summary.counts.rows
            );
            ExitCode::from(EXIT_FAILED)
        }
    }
}

struct Opened {
    rows: Rows<Box<dyn Read + Send>>,
    name: String,
    mapping: String,
    size: Option<u64>,
}

fn open(mapping_path: &Path, file: &Path) -> anyhow::Result<Opened> {
    let text = std::fs::read_to_string(mapping_path)
        .with_context(|| format!("cannot read {}", mapping_path.display()))?;
    let mapping = Mapping::from_toml(&text).with_context(|| mapping_path.display().to_string())?;
    let (input, name, size): (Box<dyn Read + Send>, String, Option<u64>) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), "-".into(), None)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let size = f.metadata().ok().map(|m| m.len());
        let name =
            file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
        (Box::new(f), name, size)
    };
    let mapping_name = mapping.name.clone();
    let rows = Rows::new(mapping, input, &name).with_context(|| file.display().to_string())?;
    Ok(Opened { rows, name, mapping: mapping_name, size })
}

fn dry_run(opened: Opened, progress: bool) -> ExitCode {
    let mut progress = Progress::new(opened.size, progress);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut rows = 0u64;
    let mut unmapped = 0u64;
    for row in opened.rows {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                progress.finish();
                eprintln!("settle import: {}: {e}", opened.name);
                return ExitCode::from(EXIT_FAILED);
            }
        };
        rows += 1;
        unmapped += u64::from(row.error.is_some());
        if let Err(e) = writeln!(out, "{}", canonical_json(&row.tx)) {
            eprintln!("settle import: cannot write output: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
        progress.update(rows, row.bytes_read);
    }
    progress.finish();
    if let Err(e) = out.flush() {
        eprintln!("settle import: cannot write output: {e}");
        return ExitCode::from(EXIT_FAILED);
    }
    eprintln!("settle import: {rows} rows mapped, {unmapped} could not be mapped (dry run: nothing sent)");
    ExitCode::from(if unmapped == 0 { EXIT_OK } else { EXIT_EXCEPTIONS })
}

type Batch = anyhow::Result<Vec<MappedRow>>;

async fn submit(args: &ImportArgs, opened: Opened, summary: &mut Summary) -> anyhow::Result<()> {
    let client = args.target.connect().await?;
    let started = Instant::now();
    let mut progress = Progress::new(opened.size, !args.no_progress);
    // Mapping runs on its own thread, a few batches ahead of the network; file order is kept
    // (a refund must follow its sale).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(READ_AHEAD_BATCHES);
    let batch_size = args.batch;
    let name = opened.name.clone();
    let reader = std::thread::spawn(move || {
        for batch in opened.rows.batches(batch_size, MAX_BATCH_BYTES) {
            let batch = batch.map_err(|e| anyhow::anyhow!("{name}: {e}"));
            let stop = batch.is_err();
            if tx.blocking_send(batch).is_err() || stop {
                return;
            }
        }
    });
    let outcome = async {
        while let Some(batch) = rx.recv().await {
            let batch = batch?;
            let first_row = batch.first().map_or(0, |r| r.row);
            let txs = batch.iter().map(|r| r.tx.clone()).collect();
            let results = client
                .submit(txs)
                .await
                .with_context(|| format!("batch starting at row {first_row} was not accepted"))?;
            for (row, result) in batch.iter().zip(&results) {
                summary.record(row, result);
            }
            if let Some(last) = batch.last() {
                summary.counts.bytes = last.bytes_read;
            }
            progress.update(summary.counts.rows, summary.counts.bytes);
        }
        anyhow::Ok(())
    }
    .await;
    drop(rx);
    progress.finish();
    summary.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    client.close().await;
    if reader.join().is_err() {
        anyhow::bail!("the file reader stopped unexpectedly");
    }
    outcome
}

fn print_summary(summary: &Summary) -> anyhow::Result<()> {
    let text = serde_json::to_string(summary).context("cannot encode the summary")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).context("cannot write to standard output")
}

/// A one-line progress bar on standard error: rows, rows/s, bytes and ETA from the file size.
struct Progress {
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
    total_bytes: Option<u64>,
    drawn: bool,
}

/// Width of the bar in characters.
const BAR_WIDTH: u64 = 24;

impl Progress {
    fn new(total_bytes: Option<u64>, wanted: bool) -> Progress {
        Progress {
            enabled: wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
            total_bytes,
            drawn: false,
        }
    }

    fn update(&mut self, rows: u64, bytes: u64) {
        if !self.enabled || self.last_draw.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.last_draw = Some(Instant::now());
        eprint!("\r{}", progress_line(rows, bytes, self.total_bytes, self.started.elapsed()));
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
        }
    }
}

/// The progress text; integer arithmetic only.
pub fn progress_line(rows: u64, bytes: u64, total: Option<u64>, elapsed: Duration) -> String {
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1);
    let rate = rows.saturating_mul(1000) / ms;
    let mut line = String::new();
    if let Some(total) = total.filter(|&t| t > 0) {
        let done = bytes.min(total);
        let filled = done.saturating_mul(BAR_WIDTH) / total;
        let percent = done.saturating_mul(100) / total;
        let eta_secs = (total - done).saturating_mul(ms).checked_div(done).unwrap_or(0) / 1000;
        line.push_str(&format!(
            "[{}{}] {percent:>3}% ",
            "#".repeat(filled as usize),
            "-".repeat((BAR_WIDTH - filled) as usize)
        ));
        line.push_str(&format!(
            "{rows} rows  {rate} rows/s  {}/{}  ETA {}:{:02}",
            human_bytes(done),
            human_bytes(total),
            eta_secs / 60,
            eta_secs % 60
        ));
    } else {
        line.push_str(&format!("{rows} rows  {rate} rows/s  {}", human_bytes(bytes)));
    }
    line
}

fn human_bytes(b: u64) -> String {
    const MB: u64 = 1 << 20;
    const KB: u64 = 1 << 10;
    if b >= MB {
        format!("{}.{} MB", b / MB, (b % MB) * 10 / MB)
    } else {
        format!("{}.{} KB", b / KB, (b % KB) * 10 / KB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_has_rate_bytes_and_eta() {
        let line = progress_line(5000, 1 << 20, Some(4 << 20), Duration::from_secs(2));
        assert!(line.contains(" 25% "), "{line}");
        assert!(line.contains("2500 rows/s"), "{line}");
        assert!(line.contains("1.0 MB/4.0 MB"), "{line}");
        assert!(line.contains("ETA 0:06"), "{line}");
        let unknown = progress_line(10, 2048, None, Duration::from_millis(0));
        assert!(unknown.contains("2.0 KB"), "{unknown}");
    }
}
