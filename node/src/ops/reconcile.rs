//! `settle reconcile`: a partner's own report for a period (read with a mapping, like an import)
//! against Settle's records of that partner, fetched from a running node page by page
//! (ListTransactions). Discrepancies are recorded as open dispute items in an append-only
//! journal file (`--disputes`) until `settle reconcile resolve` closes them with a note.
//!
//! Exit codes: 0 everything matched; 3 discrepancies found; 2 unusable arguments, mapping or
//! report; 1 the node could not be read or the output not written.

use super::target::TargetArgs;
use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use settle_adapters::reconcile::{self, Item, Report, Scope, Tolerances};
use settle_adapters::{Mapping, Rows};
use settle_wire::{tx_result, ListTransactions, MAX_LIST_ITEMS};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_DISCREPANCIES: u8 = 3;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    Json,
    Csv,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReconcileArgs {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// The partner's id in Settle.
    #[arg(long, required = true)]
    pub partner: Option<String>,
    /// The period's start (RFC 3339); the end is the partner's period end unless --to is given.
    #[arg(long, required = true)]
    pub period: Option<String>,
    /// The period's end (RFC 3339, exclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// The partner's report for the period.
    #[arg(long, required = true)]
    pub report: Option<PathBuf>,
    /// The mapping that reads the report (as for `settle import`).
    #[arg(long, required = true)]
    pub mapping: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "json")]
    pub format: OutputFormat,
    /// Write the result here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Largest amount difference still a match (a decimal, e.g. 0.01).
    #[arg(long, default_value = "0")]
    pub amount_tolerance: String,
    /// Largest time difference still a match (e.g. 90s, 5m, 2h).
    #[arg(long, default_value = "5m", value_parser = parse_span)]
    pub time_tolerance: Duration,
    /// How far before an aggregated line of theirs our items may lie (e.g. 24h).
    #[arg(long, default_value = "24h", value_parser = parse_span)]
    pub aggregate_window: Duration,
    /// Dispute journal (JSON lines, append-only): discrepancies not in it are opened there.
    #[arg(long)]
    pub disputes: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Close an open dispute item with a note (appended to the journal with who and when).
    Resolve {
        /// The item's key (`d-...`, from the reconcile output).
        item: String,
        #[arg(long)]
        note: String,
        #[arg(long)]
        disputes: PathBuf,
        /// Who resolves it (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// List the dispute items of a journal (open ones unless --all), as JSON lines.
    Disputes {
        #[arg(long)]
        disputes: PathBuf,
        #[arg(long)]
        all: bool,
    },
}

/// `90s`, `5m`, `2h`, `1d`, or plain seconds.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = digits.parse().map_err(|_| format!("{text:?}: a number with s, m, h or d"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    secs.and_then(Duration::try_seconds).ok_or_else(|| format!("{text:?}: a number with s, m, h or d"))
}

pub fn run(args: ReconcileArgs) -> ExitCode {
    match args.action {
        Some(Action::Resolve { item, note, disputes, by }) => return resolve(&disputes, &item, &note, by),
        Some(Action::Disputes { disputes, all }) => return list_disputes(&disputes, all),
        None => {}
    }
    let input = match Inputs::read(&args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("settle reconcile: {e:#}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("settle reconcile: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let report = match runtime.block_on(compare(&args, input)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("settle reconcile: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if let Err(e) = write_report(&args, &report) {
        eprintln!("settle reconcile: {e:#}");
        return ExitCode::from(EXIT_FAILED);
    }
    let open = report.discrepancies().count();
    if let Some(journal) = &args.disputes {
        match open_disputes(journal, &report) {
            Ok(new) => eprintln!(
                "settle reconcile: {open} discrepancies, {new} new dispute items in {}",
                journal.display()
            ),
            Err(e) => {
                eprintln!("settle reconcile: {e:#}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    ExitCode::from(if open == 0 { EXIT_OK } else { EXIT_DISCREPANCIES })
}

struct Inputs {
    partner: String,
    start: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
    theirs: Vec<Item>,
    tolerances: Tolerances,
}

fn instant(text: &str, what: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{what}: {text:?} is not an RFC 3339 instant"))
}

impl Inputs {
    fn read(args: &ReconcileArgs) -> anyhow::Result<Inputs> {
        let missing = |what: &str| anyhow::anyhow!("{what} is required");
        let partner = args.partner.clone().ok_or_else(|| missing("--partner"))?;
        let start = instant(args.period.as_deref().ok_or_else(|| missing("--period"))?, "--period")?;
        let to = args.to.as_deref().map(|t| instant(t, "--to")).transpose()?;
        let amount =
            Decimal::from_str(&args.amount_tolerance).ok().filter(|d| !d.is_sign_negative()).with_context(
                || format!("--amount-tolerance: {:?} is not a non-negative decimal", args.amount_tolerance),
            )?;
        let mapping_path = args.mapping.as_ref().ok_or_else(|| missing("--mapping"))?;
        let report_path = args.report.as_ref().ok_or_else(|| missing("--report"))?;
        let text = std::fs::read_to_string(mapping_path)
            .with_context(|| format!("cannot read {}", mapping_path.display()))?;
        let mapping = Mapping::from_toml(&text).with_context(|| mapping_path.display().to_string())?;
        let file = std::fs::File::open(report_path)
            .with_context(|| format!("cannot open {}", report_path.display()))?;
        let name = report_path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut theirs = Vec::new();
        for row in Rows::new(mapping, file, &name).with_context(|| report_path.display().to_string())? {
            let row = row.with_context(|| report_path.display().to_string())?;
            if row.tx.partner.as_deref().is_some_and(|p| p != partner) && row.error.is_none() {
                continue;
            }
            let mut item = Item::from_wire(&row.tx);
            item.row = Some(row.row);
            item.error = row.error;
            theirs.push(item);
        }
        let tolerances =
            Tolerances { amount, time: args.time_tolerance, aggregate_window: args.aggregate_window };
        Ok(Inputs { partner, start, to, theirs, tolerances })
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

async fn compare(args: &ReconcileArgs, input: Inputs) -> anyhow::Result<Report> {
    let client = args.target.connect().await?;
    let end = match input.to {
        Some(to) => to,
        None => {
            // A probe past the end of the log: no scan, just the partner's period.
            let probe = client
                .list_transactions(ListTransactions {
                    partner: input.partner.clone(),
                    from: rfc3339(input.start),
                    to: String::new(),
                    after_seq: u64::MAX,
                    limit: 1,
                })
                .await
                .context("cannot read the partner's period")?;
            instant(&probe.period_end, "the node's period end")?
        }
    };
    // Ours are read with the time tolerance around the period, so edge items can still match.
    let tol = input.tolerances.time;
    let (from, to) = (input.start - tol, end + tol);
    let mut ours = Vec::new();
    let mut after_seq = 0;
    loop {
        let page = client
            .list_transactions(ListTransactions {
                partner: input.partner.clone(),
                from: rfc3339(from),
                to: rfc3339(to),
                after_seq,
                limit: u32::try_from(MAX_LIST_ITEMS).unwrap_or(u32::MAX),
            })
            .await
            .context("cannot list the partner's transactions")?;
        for listed in page.items {
            let Some(tx) = listed.tx else { continue };
            let mut item = Item::from_wire(&tx);
            if let Some(tx_result::Outcome::Exception(e)) = listed.result.and_then(|r| r.outcome) {
                item.exception = Some(e.reason);
            }
            ours.push(item);
        }
        if page.done {
            break;
        }
        anyhow::ensure!(
            page.next_after_seq > after_seq || after_seq == 0,
            "the node's listing does not advance"
        );
        after_seq = page.next_after_seq;
    }
    client.close().await;
    let scope = Scope { partner: input.partner, start: input.start, end };
    Ok(reconcile::reconcile(&scope, &input.tolerances, input.theirs, ours))
}

fn write_report(args: &ReconcileArgs, report: &Report) -> anyhow::Result<()> {
    let bytes = match args.format {
        OutputFormat::Json => {
            let mut b = serde_json::to_vec_pretty(report).context("cannot encode the report")?;
            b.push(b'\n');
            b
        }
        OutputFormat::Csv => reconcile::to_csv(report).context("cannot encode the report")?,
    };
    match &args.out {
        Some(path) => std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).and_then(|()| out.flush()).context("cannot write to standard output")
        }
    }
}

// ---- The dispute journal ----------------------------------------------------------------------

fn now() -> String {
    rfc3339(DateTime::<Utc>::from(std::time::SystemTime::now()))
}

fn read_journal(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn append(path: &Path, events: &[serde_json::Value]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = String::new();
    for e in events {
        text.push_str(&e.to_string());
        text.push('\n');
    }
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Each item's state: the opening event and, once resolved, the resolution.
fn states(events: &[serde_json::Value]) -> BTreeMap<String, (serde_json::Value, Option<serde_json::Value>)> {
    let mut out: BTreeMap<String, (serde_json::Value, Option<serde_json::Value>)> = BTreeMap::new();
    for e in events {
        let Some(key) = e["key"].as_str() else { continue };
        match e["event"].as_str() {
            Some("opened") => {
                out.entry(key.to_string()).or_insert_with(|| (e.clone(), None));
            }
            Some("resolved") => {
                if let Some(state) = out.get_mut(key) {
                    state.1 = Some(e.clone());
                }
            }
            _ => {}
        }
    }
    out
}

/// Opens every discrepancy not yet in the journal; returns how many were new.
fn open_disputes(path: &Path, report: &Report) -> anyhow::Result<usize> {
    let known = states(&read_journal(path)?);
    let at = now();
    let new: Vec<serde_json::Value> = report
        .discrepancies()
        .filter(|l| !known.contains_key(&l.key))
        .map(|l| {
            serde_json::json!({
                "event": "opened", "key": l.key, "at": at, "partner": report.partner,
                "period_start": report.period_start, "period_end": report.period_end,
                "category": l.category, "line": l,
            })
        })
        .collect();
    if !new.is_empty() {
        append(path, &new)?;
    }
    Ok(new.len())
}

fn resolve(path: &Path, item: &str, note: &str, by: Option<String>) -> ExitCode {
    let result = (|| -> anyhow::Result<()> {
        anyhow::ensure!(!note.trim().is_empty(), "--note must not be blank");
        let known = states(&read_journal(path)?);
        match known.get(item) {
            None => anyhow::bail!("no dispute item {item:?} in {}", path.display()),
            Some((_, Some(_))) => anyhow::bail!("dispute item {item:?} is resolved already"),
            Some((_, None)) => {}
        }
        let by = by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
        append(
            path,
            &[serde_json::json!({"event": "resolved", "key": item, "at": now(), "by": by, "note": note})],
        )
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("settle reconcile resolve: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn list_disputes(path: &Path, all: bool) -> ExitCode {
    let events = match read_journal(path) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("settle reconcile disputes: {e:#}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let mut out = std::io::stdout().lock();
    for (key, (opened, resolved)) in states(&events) {
        if resolved.is_some() && !all {
            continue;
        }
        let line = serde_json::json!({
            "key": key, "status": if resolved.is_some() { "resolved" } else { "open" },
            "opened": opened, "resolved": resolved,
        });
        if writeln!(out, "{line}").is_err() {
            return ExitCode::from(EXIT_FAILED);
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(parse_span("90s"), Ok(Duration::seconds(90)));
        assert_eq!(parse_span("5m"), Ok(Duration::minutes(5)));
        assert_eq!(parse_span("2h"), Ok(Duration::hours(2)));
        assert_eq!(parse_span("1d"), Ok(Duration::days(1)));
        assert_eq!(parse_span("30"), Ok(Duration::seconds(30)));
        assert!(parse_span("5 weeks").is_err());
        assert!(parse_span("").is_err());
    }
}
