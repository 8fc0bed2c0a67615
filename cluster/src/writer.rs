//! The node's log writer: one OS thread that makes the log appends, votes and truncations of
//! every Raft group on the node durable. It takes everything queued, writes it as one
//! `WriteBatch` with one fsync, and only then runs the completions (openraft's `LogFlushed`
//! callbacks among them). 65 groups appending at once cost one sync, not 65.

use settle_storage::{RaftDb, RaftOp};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Most requests merged into one write.
pub const MAX_WRITES_PER_SYNC: usize = 4096;

/// What to run once a write is durable (or failed).
pub type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Job {
    ops: Vec<RaftOp>,
    done: Completion,
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogWriter")
    }
}

impl LogWriter {
    /// Starts the writer thread on `db`.
    pub fn start(db: Arc<RaftDb>) -> std::io::Result<LogWriter> {
        let (jobs, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new().name("settle-raft-log".into()).spawn(move || run(db, rx))?;
        Ok(LogWriter { jobs })
    }

    /// Queues `ops`; `done` runs once they are durable.
    pub fn submit(&self, ops: Vec<RaftOp>, done: Completion) {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job { ops, done }) {
            (job.done)(Err("the log writer stopped".into()));
        }
    }

    /// Queues `ops` and waits until they are durable.
    pub async fn write(&self, ops: Vec<RaftOp>) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            ops,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.await.map_err(|_| "the log writer stopped".to_string())?
    }
}

fn run(db: Arc<RaftDb>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut ops = Vec::new();
    let mut dones = Vec::new();
    let mut failed: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        ops.extend(first.ops);
        dones.push(first.done);
        while dones.len() < MAX_WRITES_PER_SYNC {
            match rx.try_recv() {
                Ok(job) => {
                    ops.extend(job.ops);
                    dones.push(job.done);
                }
                Err(_) => break,
            }
        }
        // After one failed write nothing later is acknowledged: the node must restart and
        // recover from what is on disk.
        let result = match &failed {
            Some(reason) => Err(reason.clone()),
            None => db.write(&ops, true).map_err(|e| format!("a durable Raft write failed: {e}")),
        };
        if let Err(reason) = &result {
            if failed.is_none() {
                tracing::error!("{reason}");
                failed = Some(reason.clone());
            }
        }
        ops.clear();
        for done in dones.drain(..) {
            done(result.clone());
        }
    }
}
