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
    /// Whether the write must be fsync'd before `done` (log appends, votes); state-machine
    /// records need not be (the log they derive from is, and they are rebuilt from it).
    sync: bool,
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    jobs: mpsc::UnboundedSender<Msg>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

enum Msg {
    Job(Job),
    /// Finish what is queued before, then end the thread (it drops its database handle).
    Stop,
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
        let thread = std::thread::Builder::new().name("settle-raft-log".into()).spawn(move || run(db, rx))?;
        Ok(LogWriter { jobs, thread: Arc::new(std::sync::Mutex::new(Some(thread))) })
    }

    /// Stops the thread after what was queued before and waits for it (at shutdown, so that
    /// the database is closed before the process exits).
    pub async fn stop(&self) {
        let _ = self.jobs.send(Msg::Stop);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Queues `ops`; `done` runs once they are durable.
    pub fn submit(&self, ops: Vec<RaftOp>, done: Completion) {
        self.send(Job { ops, done, sync: true });
    }

    /// Queues `ops` to be written with the next batch, without waiting and without asking for
    /// a sync of their own (state-machine records: the next synced batch carries them).
    pub fn submit_unsynced(&self, ops: Vec<RaftOp>) {
        self.submit_unsynced_then(ops, Box::new(|_| {}));
    }

    /// As [`LogWriter::submit_unsynced`]; `done` runs once the batch carrying `ops` is written.
    pub fn submit_unsynced_then(&self, ops: Vec<RaftOp>, done: Completion) {
        self.send(Job { ops, done, sync: false });
    }

    fn send(&self, job: Job) {
        if let Err(mpsc::error::SendError(Msg::Job(job))) = self.jobs.send(Msg::Job(job)) {
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

fn run(db: Arc<RaftDb>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut ops = Vec::new();
    let mut dones = Vec::new();
    let mut failed: Option<String> = None;
    let mut stopping = false;
    while !stopping {
        let Some(first) = rx.blocking_recv() else { break };
        let Msg::Job(first) = first else { break };
        let mut sync = first.sync;
        ops.extend(first.ops);
        dones.push(first.done);
        while dones.len() < MAX_WRITES_PER_SYNC {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => {
                    sync |= job.sync;
                    ops.extend(job.ops);
                    dones.push(job.done);
                }
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        // After one failed write nothing later is acknowledged: the node must restart and
        // recover from what is on disk.
        let result = match &failed {
            Some(reason) => Err(reason.clone()),
            None => db.write(&ops, sync).map_err(|e| format!("a durable Raft write failed: {e}")),
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
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Job(job) = msg {
            (job.done)(Err("the log writer stopped".into()));
        }
    }
    if failed.is_none() {
        if let Err(e) = db.flush() {
            tracing::warn!("flushing the cluster database at shutdown failed (the WAL has everything): {e}");
        }
    }
}
