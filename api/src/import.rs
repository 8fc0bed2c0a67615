//! Partner files over HTTP: stored mappings (`/v1/mappings/{name}`, TOML, audited) and uploads
//! (`POST /v1/imports?mapping=NAME&file=NAME`) that stream the request body through the mapping
//! (settle-adapters) and submit the rows in batches, as `settle import` does over QUIC. Ids come
//! from the rows, so an upload repeated (or the same file imported by the CLI) changes nothing;
//! a row that cannot be mapped is submitted so that it becomes an exception with its row number.
//!
//! The body is never held whole: chunks go through a bounded channel to a blocking thread that
//! maps rows and hands back batches of at most `IMPORT_BATCH` transactions.

use crate::audit::AuditEvent;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::model::{ControlOp, Space};
use crate::rest::{actor, AppState};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use settle_adapters::{canonical_json, ImportCounts, MappedRow, Mapping, Rows};
use settle_core::Instant;
use std::io::Read;

/// Transactions per submitted batch.
pub const IMPORT_BATCH: usize = 500;
/// Largest upload accepted; beyond it the import stops (rows before are submitted).
pub const MAX_IMPORT_BYTES: u64 = 4 << 30;
/// Body chunks buffered ahead of the mapping thread.
const CHUNKS_AHEAD: usize = 16;
/// Mapped batches buffered ahead of the submission.
const BATCHES_AHEAD: usize = 2;
/// Longest mapping file accepted.
const MAX_MAPPING_BYTES: usize = 256 * 1024;
/// Most stored mappings.
pub const MAX_MAPPINGS: usize = 200;

#[derive(Deserialize)]
pub(crate) struct ImportQuery {
    mapping: String,
    /// The file's name, recorded with rows that cannot be mapped; give the name `settle import`
    /// would see (the base name) so that both paths build identical transactions.
    #[serde(default)]
    file: Option<String>,
}

/// What an upload did: `settle import`'s counts, and whether it read the whole file.
#[derive(Debug, Serialize)]
struct ImportSummary {
    #[serde(flatten)]
    counts: ImportCounts,
    complete: bool,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn stored_mapping(app: &crate::App, name: &str) -> ApiResult<Mapping> {
    let text = app
        .control
        .get(Space::Mappings, name)?
        .ok_or_else(|| ApiError::NotFound(format!("no mapping {name:?}")))?;
    let text = String::from_utf8(text).map_err(|e| ApiError::Internal(e.to_string()))?;
    Mapping::from_toml(&text).map_err(|e| ApiError::Internal(format!("stored mapping: {e}")))
}

pub(crate) async fn put_mapping(
    axum::extract::State(app): AppState,
    p: Principal,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    p.require_operate()?;
    if !valid_name(&name) {
        return Err(ApiError::BadRequest("a mapping name is 1-64 of A-Z a-z 0-9 - _ .".into()));
    }
    if body.len() > MAX_MAPPING_BYTES {
        return Err(ApiError::BadRequest(format!("a mapping is at most {MAX_MAPPING_BYTES} bytes")));
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("a mapping is UTF-8 TOML".into()))?;
    let mapping = Mapping::from_toml(&text).map_err(|e| ApiError::BadRequest(format!("mapping: {e}")))?;
    let before = app.control.get(Space::Mappings, &name)?;
    if before.is_none() && app.control.scan(Space::Mappings)?.len() >= MAX_MAPPINGS {
        return Err(ApiError::Rejected(format!("at most {MAX_MAPPINGS} mappings")));
    }
    let op = ControlOp::Put { space: Space::Mappings, key: name.clone(), value: text.clone().into_bytes() };
    let event = AuditEvent {
        actor: actor(&p),
        action: "mapping.put".into(),
        target: format!("mapping:{name}"),
        before: before.map_or(Value::Null, |b| Value::String(String::from_utf8_lossy(&b).into_owned())),
        after: Value::String(text),
    };
    app.audit.commit(vec![op], event).await?;
    Ok(Json(json!({"name": name, "mapping": mapping.name})))
}

pub(crate) async fn list_mappings(
    axum::extract::State(app): AppState,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_read_all()?;
    let list: Vec<Value> = app
        .control
        .scan(Space::Mappings)?
        .into_iter()
        .map(|(name, text)| {
            let parsed = Mapping::from_toml(&String::from_utf8_lossy(&text)).ok();
            json!({"name": name, "mapping": parsed.map(|m| m.name), "toml": String::from_utf8_lossy(&text)})
        })
        .collect();
    Ok(Json(json!({"mappings": list})))
}

/// The request body as a blocking `Read`, fed by the handler through a bounded channel.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

type Batch = Result<Vec<MappedRow>, String>;

pub(crate) async fn upload(
    axum::extract::State(app): AppState,
    p: Principal,
    Query(query): Query<ImportQuery>,
    body: Body,
) -> ApiResult<Json<Value>> {
    p.require_submit()?;
    let mapping = stored_mapping(&app, &query.mapping)?;
    let file = query.file.unwrap_or_else(|| "upload".into());
    let mut summary = ImportSummary { counts: ImportCounts::new(&file, &mapping.name), complete: false };

    let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(CHUNKS_AHEAD);
    let feeder = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let item = match chunk {
                Ok(c) => {
                    total = total.saturating_add(c.len() as u64);
                    if total > MAX_IMPORT_BYTES {
                        Err(format!("the upload is larger than {MAX_IMPORT_BYTES} bytes"))
                    } else {
                        Ok(c)
                    }
                }
                Err(e) => Err(format!("the upload broke off: {e}")),
            };
            let stop = item.is_err();
            if chunk_tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });

    let (batch_tx, mut batch_rx) = tokio::sync::mpsc::channel::<Batch>(BATCHES_AHEAD);
    let (header_tx, header_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let mapper = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader { rx: chunk_rx, current: Bytes::new() };
        let rows = match Rows::new(mapping, reader, &file) {
            Ok(rows) => {
                let _ = header_tx.send(Ok(()));
                rows
            }
            Err(e) => {
                let _ = header_tx.send(Err(e.to_string()));
                return;
            }
        };
        // Rows are counted, not sized: there is no frame limit on this path.
        for batch in rows.batches(IMPORT_BATCH, usize::MAX) {
            let batch = batch.map_err(|e| e.to_string());
            let stop = batch.is_err();
            if batch_tx.blocking_send(batch).is_err() || stop {
                return;
            }
        }
    });

    // A mapping that does not fit the file's header sends nothing.
    match header_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ApiError::BadRequest(format!("{}: {e}", summary.counts.file))),
        Err(_) => return Err(ApiError::Internal("the import stopped before the header".into())),
    }
    let outcome = submit_batches(&app, &mut batch_rx, &mut summary.counts).await;
    drop(batch_rx);
    feeder.abort();
    let _ = mapper.await;
    match outcome {
        Ok(()) => {
            summary.complete = true;
            Ok(Json(json!(summary)))
        }
        Err(e) => Err(ApiError::Rejected(format!(
            "{e}; the import stopped after {} rows (upload again: rows already submitted come back as duplicates)",
            summary.counts.rows
        ))),
    }
}

async fn submit_batches(
    app: &crate::App,
    batches: &mut tokio::sync::mpsc::Receiver<Batch>,
    summary: &mut ImportCounts,
) -> Result<(), String> {
    while let Some(batch) = batches.recv().await {
        let batch = batch.map_err(|e| format!("{}: {e}", summary.file))?;
        let mut txs = Vec::with_capacity(batch.len());
        for r in &batch {
            // received_at is stamped by the engine; the placeholder is never used.
            let json = canonical_json(&r.tx);
            let tx =
                settle_core::scenario::parse_transaction(&json, &format!("row {}", r.row), Some(Instant(0)))
                    .map_err(|e| e.to_string())?;
            txs.push(tx);
        }
        let counts = crate::metrics::Metrics::partner_counts(&txs);
        let started = std::time::Instant::now();
        let first_row = batch.first().map_or(0, |r| r.row);
        let results = app
            .mutate
            .submit(txs)
            .await
            .map_err(|e| format!("the batch starting at row {first_row} was not accepted: {e}"))?;
        app.metrics.observe_submit(started.elapsed(), &counts, &results);
        for (row, result) in batch.iter().zip(&results) {
            let outcome = crate::views::outcome(&result.outcome, None);
            let reason = outcome["reason"].as_str().filter(|_| outcome["status"] == "exception");
            summary.record(row.error.is_some(), result.duplicate, reason);
        }
        if let Some(last) = batch.last() {
            summary.bytes = last.bytes_read;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_names_are_plain() {
        assert!(valid_name("shopflow-v2.toml"));
        for bad in ["", "a/b", "../x", "sp ace", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_chunk_reader_reads_every_byte_in_order() {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let reader = std::thread::spawn(move || {
            let mut r = ChunkReader { rx, current: Bytes::new() };
            let mut out = String::new();
            r.read_to_string(&mut out).map(|_| out)
        });
        for part in ["id;amount\n", "", "a1;1,00\n", "a2;2,00\n"] {
            tx.send(Ok(Bytes::from(part))).await.map_err(|_| "closed").unwrap_or(());
        }
        drop(tx);
        let text =
            reader.join().map_err(|_| "panicked").and_then(|r| r.map_err(|_| "io")).unwrap_or_default();
        assert_eq!(text, "id;amount\na1;1,00\na2;2,00\n");
    }
}
