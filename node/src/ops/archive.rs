//! `settle archive`: closed periods older than an age, exported from a store opened read-only (a
//! backup made by `settle backup`, or a stopped node's data) to zstd-compressed JSON lines with a
//! checksum manifest; `verify` checks an archive; `restore` brings it back for an audit, as plain
//! JSON lines or a listing of its periods.
//!
//! A cluster member's backup exports the same way (every shard it holds); `prune` then removes
//! the archived periods' transactions from the running cluster's history (through the API, each
//! shard's log). A standalone node's store is never pruned: the engine rebuilds its state by
//! replaying its whole log (see `docs/import-and-reconcile.md`, "Data lifecycle").

use super::backup::{ensure_empty_or_missing, sha256_file};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use settle_core::{Instant, Outcome, Span};
use settle_storage::{LogEntry, Store};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const ARCHIVE_FORMAT: &str = "settle-archive/1";
pub const MANIFEST: &str = "manifest.json";
pub const STATEMENTS_FILE: &str = "statements.jsonl.zst";
pub const TRANSACTIONS_FILE: &str = "transactions.jsonl.zst";
/// zstd level: a good ratio for JSON at a modest CPU cost.
const ZSTD_LEVEL: i32 = 9;

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    pub action: ArchiveAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum ArchiveAction {
    /// Export the closed periods that ended before a cut-off, with their statements and the
    /// transactions assigned to them. The store is opened read-only and nothing is removed.
    Export {
        /// A backup directory (settle backup), a stopped node's data directory, or a store.
        #[arg(long)]
        data: PathBuf,
        /// The archive directory to create (must not exist, or be empty).
        #[arg(long)]
        out: PathBuf,
        /// Periods that ended at least this long ago (e.g. 90d, 2160h).
        #[arg(long, value_parser = super::reconcile::parse_span, conflicts_with = "before")]
        older_than: Option<chrono::Duration>,
        /// Periods that ended at or before this instant (RFC 3339).
        #[arg(long)]
        before: Option<String>,
    },
    /// Check an archive: checksums, line counts, and each period's transactions against its
    /// statement's transaction_count.
    Verify {
        #[arg(long)]
        from: PathBuf,
    },
    /// Remove the archive's periods from a running cluster's hot history (after verifying the
    /// archive): balances, ids, statements and exceptions stay. Admin API key; audited.
    Prune {
        #[arg(long)]
        from: PathBuf,
        /// The node's HTTP API, e.g. http://127.0.0.1:8080 (settle dev prints it).
        #[arg(long)]
        api: String,
        /// A file holding an admin API key.
        #[arg(long)]
        api_key_file: PathBuf,
    },
    /// Bring an archive back for an audit: verified, then decompressed into --out as plain JSON
    /// lines; without --out, a listing of its periods on standard output.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only this partner's periods and transactions.
        #[arg(long)]
        partner: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeriodEntry {
    pub partner: String,
    pub period_start: String,
    pub period_end: String,
    pub transactions: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveFile {
    pub path: String,
    pub bytes: u64,
    pub lines: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub created_at: String,
    /// Periods that ended at or before this instant are in the archive.
    pub cutoff: String,
    pub periods: Vec<PeriodEntry>,
    pub files: Vec<ArchiveFile>,
}

pub fn run(args: ArchiveArgs) -> ExitCode {
    let result = match args.action {
        ArchiveAction::Export { data, out, older_than, before } => export(&data, &out, older_than, before),
        ArchiveAction::Verify { from } => verify(&from).map(|m| {
            eprintln!("settle archive: {} periods, {} files verified", m.periods.len(), m.files.len());
        }),
        ArchiveAction::Restore { from, out, partner } => restore(&from, out.as_deref(), partner.as_deref()),
        ArchiveAction::Prune { from, api, api_key_file } => prune(&from, &api, &api_key_file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("settle archive: {e:#}");
            ExitCode::from(super::import::EXIT_BAD_INPUT)
        }
    }
}

fn store_dir(data: &Path) -> PathBuf {
    let engine = data.join(super::backup::ENGINE_DIR);
    if engine.is_dir() {
        engine
    } else {
        data.to_path_buf()
    }
}

/// A zstd JSON-lines writer that counts lines.
struct LinesOut {
    encoder: zstd::stream::write::Encoder<'static, std::io::BufWriter<std::fs::File>>,
    lines: u64,
    path: PathBuf,
}

impl LinesOut {
    fn create(path: PathBuf) -> anyhow::Result<LinesOut> {
        let file =
            std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let encoder = zstd::stream::write::Encoder::new(std::io::BufWriter::new(file), ZSTD_LEVEL)
            .context("cannot start compression")?;
        Ok(LinesOut { encoder, lines: 0, path })
    }

    fn line(&mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.encoder, value).context("cannot encode a line")?;
        self.encoder.write_all(b"\n").with_context(|| format!("cannot write {}", self.path.display()))?;
        self.lines += 1;
        Ok(())
    }

    fn finish(self, root: &Path) -> anyhow::Result<ArchiveFile> {
        let writer =
            self.encoder.finish().with_context(|| format!("cannot finish {}", self.path.display()))?;
        let file =
            writer.into_inner().map_err(|e| anyhow::anyhow!("cannot flush {}: {e}", self.path.display()))?;
        file.sync_all().with_context(|| format!("cannot sync {}", self.path.display()))?;
        let (bytes, sha256) = sha256_file(&self.path)?;
        let name = self.path.strip_prefix(root).unwrap_or(&self.path).display().to_string();
        Ok(ArchiveFile { path: name, bytes, lines: self.lines, sha256 })
    }
}

fn tx_line(seq: u64, tx: &settle_core::TxInput, outcome: &Outcome) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::json!({
        "seq": seq,
        "partner": tx.partner,
        "tx": serde_json::to_value(tx).context("cannot encode a transaction")?,
        "outcome": serde_json::to_value(outcome).context("cannot encode an outcome")?,
    }))
}

/// The cluster part of an export: a member's database (a `settle backup` of a member, or a
/// stopped member's data dir), every shard group it holds. A member of a cluster of more than
/// `replicas` nodes does not hold every shard; the export then refuses, naming how many it
/// lacks (export a backup of a member per missing shard set, or of a 3-node cluster's member).
fn export_cluster_member(
    dir: &Path,
    cutoff: Instant,
    statements: &mut LinesOut,
    transactions: &mut LinesOut,
    expected: &mut BTreeMap<(String, Instant), (Instant, u64)>,
    counted: &mut BTreeMap<(String, Instant), u64>,
) -> anyhow::Result<()> {
    let db = settle_storage::RaftDb::open_read_only(dir)
        .with_context(|| format!("cannot open the member database in {}", dir.display()))?;
    let config = db.cluster_config()?.context("the member database has no cluster configuration")?;
    let config: settle_cluster::meta::ClusterConfig =
        serde_json::from_slice(&config).context("cannot read the cluster configuration")?;
    let groups: Vec<u32> =
        db.groups()?.into_iter().filter(|g| *g != settle_cluster::types::META_GROUP).collect();
    let missing =
        (0..config.shards).filter(|s| !groups.contains(&settle_cluster::types::shard_group(*s))).count();
    anyhow::ensure!(
        missing == 0,
        "this member holds {} of the cluster's {} shards ({missing} missing): export from a member \
         of a cluster where every member holds every shard, or from a backup of each member",
        groups.len(),
        config.shards
    );
    for group in groups {
        // A partner lives in one shard, so `expected` holds this group's periods as its own.
        let mut any_closed = false;
        for s in db.group_statements(group)? {
            if s.period.end <= cutoff {
                statements.line(&settle_core::replay::statement_json(&s))?;
                expected.insert((s.partner.clone(), s.period.start), (s.period.end, s.transaction_count));
                any_closed = true;
            }
        }
        if !any_closed {
            continue;
        }
        for row in db.history(group, 0, true)? {
            let (index, row) = row?;
            for rec in row.records {
                let (Some(partner), Outcome::Applied(applied)) = (&rec.tx.partner, &rec.outcome) else {
                    continue;
                };
                let key = (partner.clone(), applied.period.start);
                if expected.contains_key(&key) {
                    // The listing position of `settle reconcile` (entry index, then place in it).
                    let seq = index << settle_cluster::reads::LIST_POS_BITS | u64::from(rec.pos);
                    let mut line = tx_line(seq, &rec.tx, &rec.outcome)?;
                    line["shard"] = serde_json::json!(group.saturating_sub(1));
                    transactions.line(&line)?;
                    *counted.entry(key).or_default() += 1;
                }
            }
        }
    }
    Ok(())
}

fn export(
    data: &Path,
    out: &Path,
    older_than: Option<chrono::Duration>,
    before: Option<String>,
) -> anyhow::Result<()> {
    let now = settle_node::demo::instant_now();
    let cutoff = match (older_than, before) {
        (Some(age), None) => now.saturating_sub(Span::from_seconds(age.num_seconds())),
        (None, Some(b)) => {
            Instant::parse_rfc3339(&b).with_context(|| format!("--before: {b:?} is not RFC 3339"))?
        }
        _ => anyhow::bail!("give --older-than or --before"),
    };
    ensure_empty_or_missing(out)?;
    let member = data.join(super::backup::RAFT_DIR);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut statements = LinesOut::create(out.join(STATEMENTS_FILE))?;
    let mut transactions = LinesOut::create(out.join(TRANSACTIONS_FILE))?;
    // Closed periods (they have a statement) that ended by the cut-off, and the applied
    // transactions assigned to them, counted.
    let mut expected: BTreeMap<(String, Instant), (Instant, u64)> = BTreeMap::new();
    let mut counted: BTreeMap<(String, Instant), u64> = BTreeMap::new();
    if member.is_dir() {
        export_cluster_member(
            &member,
            cutoff,
            &mut statements,
            &mut transactions,
            &mut expected,
            &mut counted,
        )?;
    } else {
        let dir = store_dir(data);
        let store = Store::open_read_only(&dir)
            .with_context(|| format!("cannot open the store in {}", dir.display()))?;
        for partner in store.partners()? {
            for s in store.statements(&partner.id)? {
                if s.period.end <= cutoff {
                    statements.line(&settle_core::replay::statement_json(&s))?;
                    expected
                        .insert((partner.id.clone(), s.period.start), (s.period.end, s.transaction_count));
                }
            }
        }
        // One pass over the log, in order.
        for entry in store.log_from(0)? {
            let (seq, entry) = entry?;
            let LogEntry::Tx { tx, outcome } = entry else { continue };
            let (Some(partner), Outcome::Applied(applied)) = (&tx.partner, &outcome) else { continue };
            let key = (partner.clone(), applied.period.start);
            if expected.contains_key(&key) {
                transactions.line(&tx_line(seq, &tx, &outcome)?)?;
                *counted.entry(key).or_default() += 1;
            }
        }
    }
    let mut periods = Vec::with_capacity(expected.len());
    for ((partner, start), (end, count)) in &expected {
        let got = counted.get(&(partner.clone(), *start)).copied().unwrap_or(0);
        anyhow::ensure!(
            got == *count,
            "{partner} {}: the statement counts {count} transactions, the log holds {got}",
            start.to_rfc3339()
        );
        periods.push(PeriodEntry {
            partner: partner.clone(),
            period_start: start.to_rfc3339(),
            period_end: end.to_rfc3339(),
            transactions: got,
        });
    }
    let files = vec![statements.finish(out)?, transactions.finish(out)?];
    let manifest = Manifest {
        format: ARCHIVE_FORMAT.into(),
        created_at: now.to_rfc3339(),
        cutoff: cutoff.to_rfc3339(),
        periods,
        files,
    };
    let text = serde_json::to_string_pretty(&manifest).context("cannot encode the manifest")?;
    let path = out.join(MANIFEST);
    let mut f = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "settle archive: {} periods ({} transactions) up to {} in {}; nothing was removed (settle archive prune does)",
        manifest.periods.len(),
        manifest.files[1].lines,
        manifest.cutoff,
        out.display()
    );
    Ok(())
}

fn read_manifest(from: &Path) -> anyhow::Result<Manifest> {
    let path = from.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    anyhow::ensure!(
        manifest.format == ARCHIVE_FORMAT,
        "{}: format {:?}, expected {ARCHIVE_FORMAT:?}",
        path.display(),
        manifest.format
    );
    Ok(manifest)
}

/// Calls `each` with every line of an archive file.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(serde_json::Value) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let decoder =
        zstd::stream::read::Decoder::new(file).with_context(|| format!("{} is not zstd", path.display()))?;
    let mut lines = 0u64;
    for line in BufReader::new(decoder).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let value =
            serde_json::from_str(&line).with_context(|| format!("{} line {}", path.display(), lines + 1))?;
        each(value)?;
        lines += 1;
    }
    Ok(lines)
}

fn verify(from: &Path) -> anyhow::Result<Manifest> {
    let manifest = read_manifest(from)?;
    for f in &manifest.files {
        anyhow::ensure!(
            f.path == STATEMENTS_FILE || f.path == TRANSACTIONS_FILE,
            "unexpected file {:?}",
            f.path
        );
        let (bytes, sha256) = sha256_file(&from.join(&f.path))?;
        anyhow::ensure!(bytes == f.bytes && sha256 == f.sha256, "{} does not match its checksum", f.path);
    }
    let mut counted: BTreeMap<(String, String), u64> = BTreeMap::new();
    let tx_lines = for_each_line(&from.join(TRANSACTIONS_FILE), |v| {
        let partner = v["partner"].as_str().unwrap_or_default().to_string();
        let start = v["outcome"]["Applied"]["period"]["start"].clone();
        let start = Instant::deserialize(start).map(|i| i.to_rfc3339()).unwrap_or_default();
        *counted.entry((partner, start)).or_default() += 1;
        Ok(())
    })?;
    let statement_lines = for_each_line(&from.join(STATEMENTS_FILE), |_| Ok(()))?;
    let want_lines: BTreeMap<&str, u64> = manifest.files.iter().map(|f| (f.path.as_str(), f.lines)).collect();
    anyhow::ensure!(
        want_lines.get(TRANSACTIONS_FILE) == Some(&tx_lines),
        "transaction count differs from the manifest"
    );
    anyhow::ensure!(
        want_lines.get(STATEMENTS_FILE) == Some(&statement_lines),
        "statement count differs from the manifest"
    );
    for p in &manifest.periods {
        let got = counted.get(&(p.partner.clone(), p.period_start.clone())).copied().unwrap_or(0);
        anyhow::ensure!(
            got == p.transactions,
            "{} {}: {got} transactions, the manifest says {}",
            p.partner,
            p.period_start,
            p.transactions
        );
    }
    Ok(manifest)
}

fn restore(from: &Path, out: Option<&Path>, partner: Option<&str>) -> anyhow::Result<()> {
    let manifest = verify(from)?;
    let wanted = |p: Option<&str>| partner.is_none() || p == partner;
    let Some(out) = out else {
        let mut stdout = std::io::stdout().lock();
        for p in manifest.periods.iter().filter(|p| wanted(Some(&p.partner))) {
            let line = serde_json::to_string(p).context("cannot encode a period")?;
            writeln!(stdout, "{line}").context("cannot write to standard output")?;
        }
        return Ok(());
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (file, partner_of) in [
        (
            STATEMENTS_FILE,
            (|v: &serde_json::Value| v["partner"].as_str().map(str::to_string))
                as fn(&serde_json::Value) -> Option<String>,
        ),
        (TRANSACTIONS_FILE, |v: &serde_json::Value| v["partner"].as_str().map(str::to_string)),
    ] {
        let plain = out.join(file.trim_end_matches(".zst"));
        anyhow::ensure!(!plain.exists(), "{} exists already", plain.display());
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&plain).with_context(|| format!("cannot create {}", plain.display()))?,
        );
        for_each_line(&from.join(file), |v| {
            if wanted(partner_of(&v).as_deref()) {
                writeln!(w, "{v}").with_context(|| format!("cannot write {}", plain.display()))?;
            }
            Ok(())
        })?;
        w.flush().with_context(|| format!("cannot write {}", plain.display()))?;
    }
    eprintln!(
        "settle archive: restored into {} (read-only copies for audit; the node is not changed)",
        out.display()
    );
    Ok(())
}

/// Most periods sent in one prune request (the API's `MAX_PRUNE_PERIODS`).
const PRUNE_SLICE: usize = settle_api::archive::MAX_PRUNE_PERIODS;

fn prune(from: &Path, api: &str, key_file: &Path) -> anyhow::Result<()> {
    let manifest = verify(from)?;
    let key = std::fs::read_to_string(key_file)
        .with_context(|| format!("cannot read {}", key_file.display()))?
        .trim()
        .to_string();
    let host = api
        .strip_prefix("http://")
        .context("--api: an http:// address of a node's API (e.g. http://127.0.0.1:8080)")?
        .trim_end_matches('/')
        .to_string();
    let mut total = BTreeMap::<String, u64>::new();
    for slice in manifest.periods.chunks(PRUNE_SLICE) {
        let body =
            serde_json::json!({"format": manifest.format, "cutoff": manifest.cutoff, "periods": slice});
        let (status, answer) = post_json(&host, &key, "/v1/archive/prune", &body.to_string())?;
        anyhow::ensure!(status == 200, "the node answered {status}: {answer}");
        for (name, value) in answer.as_object().into_iter().flatten() {
            *total.entry(name.clone()).or_default() += value.as_u64().unwrap_or(0);
        }
    }
    let g = |k: &str| total.get(k).copied().unwrap_or(0);
    eprintln!(
        "settle archive: {} periods pruned: {} history rows removed ({} transactions, {} exception \
         records, which stay in the exception queue); {} rows kept for periods not archived yet",
        manifest.periods.len(),
        g("rows_removed"),
        g("transactions_removed"),
        g("exception_records_removed"),
        g("rows_kept")
    );
    Ok(())
}

/// One HTTP/1.1 POST of a JSON body, answered status and JSON body.
fn post_json(host: &str, key: &str, path: &str, body: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(host).with_context(|| format!("cannot connect to {host}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).with_context(|| format!("cannot send to {host}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).with_context(|| format!("cannot read the answer of {host}"))?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("the answer has no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head:?}"))?;
    let mut content = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        content = dechunk(&content).context("a malformed chunked answer")?;
    }
    let value = serde_json::from_slice(&content)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&content).to_string()));
    Ok((status, value))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let pos = body.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&body[..pos]).ok()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(pos + 2..pos + 2 + size)?);
        body = body.get(pos + 2 + size + 2..)?;
    }
}
