//! `settle backup` and `settle restore`: an online, consistent copy of a running node's store (a
//! RocksDB checkpoint taken by the node itself, through the admin request CreateCheckpoint), with
//! a manifest of checksums; and a restore into an empty data directory that verifies the manifest
//! and the store's format before a node is started on it (it then replays its log as usual).
//!
//! The checkpoint is written by the node into `OUT/engine` (a standalone node's store) or
//! `OUT/raft` (a cluster member's database: every group's log, vote and state, and the node's
//! cluster configuration), so OUT must be on the node's host (the same filesystem as its data for
//! hard links; otherwise RocksDB copies the files). TLS material and API key hashes are
//! configuration, not data: they are not in the backup.

use super::target::TargetArgs;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The manifest's format name; restore refuses any other.
pub const BACKUP_FORMAT: &str = "settle-backup/1";
/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The store's directory in a backup and in a node's data directory.
pub const ENGINE_DIR: &str = "engine";
/// A cluster member's database directory in a backup and in its data directory.
pub const RAFT_DIR: &str = "raft";

/// What a backup holds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// A standalone node's store (`engine`).
    #[default]
    Standalone,
    /// A cluster member's database (`raft`).
    ClusterMember,
}

impl BackupKind {
    fn dir(self) -> &'static str {
        match self {
            BackupKind::Standalone => ENGINE_DIR,
            BackupKind::ClusterMember => RAFT_DIR,
        }
    }

    fn store_format(self) -> u32 {
        match self {
            BackupKind::Standalone => settle_storage::FORMAT_VERSION,
            BackupKind::ClusterMember => settle_storage::RAFT_FORMAT_VERSION,
        }
    }

    /// Whether this build restores a store of format `found` (a member's older format is
    /// upgraded in place when the restored member starts).
    fn restores(self, found: u32) -> bool {
        match self {
            BackupKind::Standalone => found == settle_storage::FORMAT_VERSION,
            BackupKind::ClusterMember => (settle_storage::OLDEST_RAFT_FORMAT_VERSION
                ..=settle_storage::RAFT_FORMAT_VERSION)
                .contains(&found),
        }
    }
}
/// Read size for checksums and copies.
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The backup directory to create (must not exist, or be empty), on the node's host.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A backup directory made by `settle backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// The new node's data directory (must not exist, or be empty).
    #[arg(long)]
    pub data: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    /// What was backed up (absent in backups made before cluster members could be).
    #[serde(default)]
    pub kind: BackupKind,
    /// The store's format version (settle-storage FORMAT_VERSION, or RAFT_FORMAT_VERSION for a
    /// cluster member).
    pub store_format: u32,
    /// Every log entry up to this sequence is in the backup (0 for a cluster member, whose
    /// groups each have their own log).
    pub last_seq: u64,
    pub created_at: String,
    pub files: Vec<FileSum>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSum {
    /// Relative to the backup directory, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

pub fn ensure_empty_or_missing(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        anyhow::ensure!(entries.next().is_none(), "{} is not empty", dir.display());
    }
    Ok(())
}

pub fn backup(args: BackupArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("settle backup: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(take_backup(&args)) {
        Ok(manifest) => {
            eprintln!(
                "settle backup: {} files, log up to sequence {} at least, in {}",
                manifest.files.len(),
                manifest.last_seq,
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("settle backup: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn take_backup(args: &BackupArgs) -> anyhow::Result<Manifest> {
    ensure_empty_or_missing(&args.out)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let out =
        std::fs::canonicalize(&args.out).with_context(|| format!("cannot resolve {}", args.out.display()))?;
    let client = args.target.connect().await?;
    // Only a cluster member answers a status request.
    let kind = match client.cluster_status().await {
        Ok(_) => BackupKind::ClusterMember,
        Err(_) => BackupKind::Standalone,
    };
    let store = out.join(kind.dir());
    let created = client
        .create_checkpoint(store.display().to_string())
        .await
        .context("the node could not take a checkpoint")?;
    client.close().await;
    let mut files = Vec::new();
    sum_dir(&out, &store, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        format: BACKUP_FORMAT.into(),
        kind,
        store_format: kind.store_format(),
        last_seq: created.last_seq,
        created_at: settle_node::demo::instant_now().to_rfc3339(),
        files,
    };
    let text = serde_json::to_string_pretty(&manifest).context("cannot encode the manifest")?;
    write_synced(&out.join(MANIFEST), text.as_bytes())?;
    Ok(manifest)
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

pub fn sha256_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

fn relative(root: &Path, path: &Path) -> anyhow::Result<String> {
    let rel = path
        .strip_prefix(root)
        .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
    let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    Ok(parts.join("/"))
}

fn sum_dir(root: &Path, dir: &Path, out: &mut Vec<FileSum>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot read {}", dir.display()))?.path();
        if path.is_dir() {
            sum_dir(root, &path, out)?;
        } else {
            let (bytes, sha256) = sha256_file(&path)?;
            out.push(FileSum { path: relative(root, &path)?, bytes, sha256 });
        }
    }
    Ok(())
}

pub fn restore(args: RestoreArgs) -> ExitCode {
    match do_restore(&args) {
        Ok(m) if m.kind == BackupKind::ClusterMember => {
            eprintln!(
                "settle restore: {} files verified; start the member with `settle node --id N --data {} --peer-listen ...` \
                 (no --bootstrap: its configuration is restored). Restore every member of the cluster from backups \
                 taken together; to replace one lost member while the others run, start a fresh node with --join and \
                 `settle cluster add-node` instead (a member restored behind the others would forget votes and \
                 entries it had acknowledged).",
                m.files.len(),
                args.data.display()
            );
            ExitCode::SUCCESS
        }
        Ok(m) => {
            eprintln!(
                "settle restore: {} files verified; start the node with `settle node --data {}` (it replays its log)",
                m.files.len(),
                args.data.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("settle restore: {e:#}");
            ExitCode::from(super::import::EXIT_BAD_INPUT)
        }
    }
}

/// Reads and checks a backup directory's manifest against its files.
pub fn verify(from: &Path) -> anyhow::Result<Manifest> {
    let path = from.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    anyhow::ensure!(
        manifest.format == BACKUP_FORMAT,
        "{}: format {:?}, expected {BACKUP_FORMAT:?}",
        path.display(),
        manifest.format
    );
    anyhow::ensure!(
        manifest.kind.restores(manifest.store_format),
        "the backup's store format {} is not this build's {}",
        manifest.store_format,
        manifest.kind.store_format()
    );
    let mut present = Vec::new();
    sum_dir(from, &from.join(manifest.kind.dir()), &mut present)?;
    present.sort_by(|a, b| a.path.cmp(&b.path));
    for want in &manifest.files {
        anyhow::ensure!(
            !want.path.split('/').any(|p| p == ".." || p.is_empty()),
            "manifest path {:?} is not plain",
            want.path
        );
        let have = present
            .iter()
            .find(|f| f.path == want.path)
            .with_context(|| format!("{} is missing", want.path))?;
        anyhow::ensure!(have == want, "{} does not match its checksum", want.path);
    }
    anyhow::ensure!(
        present.len() == manifest.files.len(),
        "the backup holds files the manifest does not list"
    );
    Ok(manifest)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let path = entry.with_context(|| format!("cannot read {}", from.display()))?.path();
        let Some(name) = path.file_name() else { continue };
        let dest = to.join(name);
        if path.is_dir() {
            copy_tree(&path, &dest)?;
        } else {
            std::fs::copy(&path, &dest).with_context(|| format!("cannot copy {}", path.display()))?;
            std::fs::File::open(&dest)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", dest.display()))?;
        }
    }
    Ok(())
}

fn do_restore(args: &RestoreArgs) -> anyhow::Result<Manifest> {
    ensure_empty_or_missing(&args.data)?;
    let manifest = verify(&args.from)?;
    if manifest.kind == BackupKind::ClusterMember {
        copy_tree(&args.from.join(RAFT_DIR), &args.data.join(RAFT_DIR))?;
        // The database opens (format checked) and knows its cluster.
        let db = settle_storage::RaftDb::open(&args.data.join(RAFT_DIR))
            .context("the restored cluster database does not open")?;
        anyhow::ensure!(
            db.cluster_config().context("cannot read the restored cluster configuration")?.is_some(),
            "the restored database holds no cluster configuration"
        );
        return Ok(manifest);
    }
    copy_tree(&args.from.join(ENGINE_DIR), &args.data.join(ENGINE_DIR))?;
    // The store opens (format checked) and holds the log the manifest promises.
    let store = settle_storage::Store::open(&args.data.join(ENGINE_DIR))
        .context("the restored store does not open")?;
    let last = store.last_seq().context("cannot read the restored log")?.unwrap_or(0);
    anyhow::ensure!(
        last >= manifest.last_seq,
        "the restored log ends at {last}, before {}",
        manifest.last_seq
    );
    Ok(manifest)
}
