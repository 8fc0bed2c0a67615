//! `POST /v1/archive/prune`: removes the transactions of archived periods from the hot history
//! (admin only, audited before anything is removed). The body is the `manifest.json` of an
//! archive made by `settle archive export` (its `cutoff` and `periods`; other fields are
//! ignored), or a slice of its periods, as `settle archive prune` sends it.

use crate::audit::AuditEvent;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::model::ArchivedPeriod;
use crate::rest::{actor, parse_body, AppState};
use axum::body::Bytes;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use settle_core::Instant;
use sha2::Digest;

/// The archive format the body must name (the manifest's `format`).
pub const ARCHIVE_FORMAT: &str = "settle-archive/1";
/// Most periods one request names (a manifest's periods are sent in slices of this size).
pub const MAX_PRUNE_PERIODS: usize = 20_000;

#[derive(Deserialize)]
struct PeriodBody {
    partner: String,
    period_start: String,
    transactions: u64,
}

#[derive(Deserialize)]
struct PruneBody {
    format: String,
    cutoff: String,
    periods: Vec<PeriodBody>,
}

pub(crate) async fn prune(
    axum::extract::State(app): AppState,
    p: Principal,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    p.require_admin()?;
    let body: PruneBody = parse_body(&body)?;
    if body.format != ARCHIVE_FORMAT {
        return Err(ApiError::BadRequest(format!("format: {:?}, expected {ARCHIVE_FORMAT:?}", body.format)));
    }
    let cutoff = Instant::parse_rfc3339(&body.cutoff).ok_or_else(|| {
        ApiError::BadRequest(format!("cutoff: {:?} is not an RFC 3339 instant", body.cutoff))
    })?;
    if body.periods.len() > MAX_PRUNE_PERIODS {
        return Err(ApiError::BadRequest(format!(
            "periods: {} in one request, at most {MAX_PRUNE_PERIODS} (send the manifest in slices)",
            body.periods.len()
        )));
    }
    let mut periods = Vec::with_capacity(body.periods.len());
    for (i, period) in body.periods.into_iter().enumerate() {
        let start = Instant::parse_rfc3339(&period.period_start).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "periods[{i}].period_start: {:?} is not RFC 3339",
                period.period_start
            ))
        })?;
        periods.push(ArchivedPeriod {
            partner: period.partner,
            period_start: start,
            transactions: period.transactions,
        });
    }
    // The audit record names the periods by count and digest (a slice holds thousands).
    let mut digest = sha2::Sha256::new();
    for p in &periods {
        digest.update(format!("{}\t{}\t{}\n", p.partner, p.period_start.to_rfc3339(), p.transactions));
    }
    let partners: std::collections::BTreeSet<&str> = periods.iter().map(|p| p.partner.as_str()).collect();
    // Recorded before anything is removed: no removal goes unaudited, even one cut short.
    let event = AuditEvent {
        actor: actor(&p),
        action: "archive.prune".into(),
        target: format!("archive:{}", cutoff.to_rfc3339()),
        before: Value::Null,
        after: json!({"cutoff": cutoff.to_rfc3339(), "periods": periods.len(), "partners": partners.len(),
            "periods_sha256": hex::encode(digest.finalize())}),
    };
    app.audit.commit(Vec::new(), event).await?;
    let summary = app.mutate.prune_archived(periods, cutoff).await?;
    Ok(Json(serde_json::to_value(&summary).map_err(|e| ApiError::Internal(e.to_string()))?))
}
