//! The library half of settle-loadtest: the traffic model (`traffic`) and the end-to-end
//! verification (`verify`), shared by the load tester and the chaos harness (`settle-chaos`) so
//! that both send the same realistic transactions and judge them by the same rules.
//!
//! It talks to nodes only through `settle-client` and recomputes expected balances with
//! `settle-core`; it must never depend on the node's internals.

pub mod traffic;
pub mod verify;

use anyhow::Context;
use settle_client::Client;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Requests in flight while registering partners or verifying.
pub const SETUP_CONCURRENCY: usize = 64;

/// `settle` from `$SETTLE_BIN`, or next to this executable.
pub fn settle_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("SETTLE_BIN") {
        return Ok(std::path::PathBuf::from(path));
    }
    let me = std::env::current_exe().context("cannot locate this executable")?;
    let candidate = me.with_file_name("settle");
    if candidate.exists() {
        return Ok(candidate);
    }
    anyhow::bail!("no `settle` binary next to {} (set SETTLE_BIN)", me.display())
}

/// A duration on the command line: `500ms`, `30s` (or `30`), `2m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let (number, unit) =
        text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |i| (&text[..i], &text[i..]));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("{text:?}: unit must be ms, s or m")),
    }
}

/// Whether registration was refused because the partner exists (registered by an earlier attempt
/// of the same request, or by an earlier run against the same `--target`).
fn is_already_registered(e: &settle_client::ClientError) -> bool {
    match e {
        settle_client::ClientError::Server { code: settle_wire::ErrorCode::Rejected, message, .. } => {
            message.contains("already registered")
        }
        settle_client::ClientError::Exhausted { last, .. } => is_already_registered(last),
        _ => false,
    }
}

/// Registers every partner, spreading the requests over `clients`.
pub async fn register(clients: &[Arc<Client>], partners: &[traffic::PartnerDef]) -> anyhow::Result<()> {
    anyhow::ensure!(!clients.is_empty(), "no client to register partners with");
    let sem = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, p) in partners.iter().enumerate() {
        let client = clients[i % clients.len()].clone();
        let json = p.json.clone();
        let id = p.id.clone();
        let permit = sem.clone().acquire_owned().await?;
        set.spawn(async move {
            let r = match client.register_partner(json).await {
                // The client retries a request whose answer was lost (a timeout while a leader
                // changes); the retry then finds the partner that the first attempt registered.
                Err(e) if is_already_registered(&e) => Ok(()),
                other => other.with_context(|| format!("cannot register {id}")),
            };
            drop(permit);
            r
        });
        while let Some(done) = set.try_join_next() {
            done??;
        }
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}
