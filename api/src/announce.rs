//! Statement webhooks: subscriptions (`/v1/statement-hooks`) and the announcer that posts every
//! newly closed statement to each matching hook, signed like alert webhooks.
//!
//! The member that leads the shared control store runs the rounds. Before a delivery it claims the (hook, statement) pair in
//! the shared control store with a write that succeeds only if the claim is absent, so one
//! member delivers each pair even around a change of leader; a claim
//! that never settles (its member died) is taken over after `CLAIM_TIMEOUT_S`, so every pair is
//! delivered at least once, with a `delivery` id that is the same on a repeat. A delivery that
//! fails after its retries is recorded in the dead-letter list and its claim marked `failed`; it
//! is not tried again by itself.

use crate::alerts::{post_webhook, split_url, with_retries, Webhook};
use crate::audit::AuditEvent;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::model::{ControlOp, ControlStore, Space, StoreError};
use crate::rest::{actor, parse_body, AppState};
use crate::App;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use settle_core::Instant;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time between two announcer rounds.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);
/// Partners whose statements one round reads; the next round goes on with the next ones, so
/// with P partners a statement is announced within ceil(P / this) rounds of its close.
pub const MAX_PARTNERS_PER_ROUND: usize = 256;
/// Deliveries under way at once: a backfill of many statements waits its turn instead of opening
/// a connection per statement to the receiver.
pub const MAX_DELIVERIES_IN_FLIGHT: usize = 8;
/// Most statement hooks.
pub const MAX_HOOKS: usize = 50;
/// Seconds after which a claim that never settled is taken over by another member: well above
/// one delivery's retries (3 attempts of at most 5 s each, and their backoff).
pub const CLAIM_TIMEOUT_S: i64 = 60;
/// Longest hook secret accepted.
const MAX_SECRET_BYTES: usize = 256;

/// A subscription: every statement of `partner` (or of every partner) whose period ends at or
/// after `from` is posted to `url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementHook {
    pub id: String,
    pub url: String,
    pub secret: String,
    #[serde(default)]
    pub partner: Option<String>,
    /// RFC 3339; the hook's creation time unless given (earlier: a backfill).
    pub from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewHook {
    url: String,
    secret: String,
    #[serde(default)]
    partner: Option<String>,
    #[serde(default)]
    from: Option<String>,
}

/// A hook as shown and audited: the secret is never echoed.
fn hook_public(h: &StatementHook) -> Value {
    let mut v = json!(h);
    v["secret"] = Value::String("***".into());
    v
}

fn hooks(control: &dyn ControlStore) -> Result<Vec<StatementHook>, StoreError> {
    let mut out = Vec::new();
    for (key, value) in control.scan(Space::StatementHooks)? {
        match serde_json::from_slice::<StatementHook>(&value) {
            Ok(h) => out.push(h),
            Err(e) => tracing::error!("statement hook {key:?} cannot be read: {e}"),
        }
    }
    Ok(out)
}

/// The key of the claim on announcing `period_start`'s statement of `partner` to `hook`.
fn claim_key(hook: &str, partner: &str, period_start: Instant) -> String {
    format!("{hook}/{partner}/{}", period_start.to_rfc3339())
}

/// What this member already knows was claimed: per (hook, partner), the end of the newest
/// period claimed. Statements close in period order, so only newer ones need a look; the map is
/// only a shortcut (the claims in the control store decide).
#[derive(Debug)]
pub(crate) struct Announcer {
    claimed_until: Mutex<BTreeMap<(String, String), Instant>>,
    cursor: Mutex<usize>,
    deliveries: Arc<tokio::sync::Semaphore>,
}

impl Default for Announcer {
    fn default() -> Announcer {
        Announcer {
            claimed_until: Mutex::default(),
            cursor: Mutex::default(),
            deliveries: Arc::new(tokio::sync::Semaphore::new(MAX_DELIVERIES_IN_FLIGHT)),
        }
    }
}

impl Announcer {
    fn known(&self, hook: &str, partner: &str) -> Option<Instant> {
        let map = self.claimed_until.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(hook.to_string(), partner.to_string())).copied()
    }

    fn remember(&self, hook: &str, partner: &str, end: Instant) {
        let mut map = self.claimed_until.lock().unwrap_or_else(|e| e.into_inner());
        let slot = map.entry((hook.to_string(), partner.to_string())).or_insert(end);
        if *slot < end {
            *slot = end;
        }
    }

    /// The partners of this round: the next `MAX_PARTNERS_PER_ROUND` after the last round's.
    fn next_window(&self, total: usize) -> Vec<usize> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let n = total.min(MAX_PARTNERS_PER_ROUND);
        let start = *cursor % total.max(1);
        *cursor = (start + n) % total.max(1);
        (0..n).map(|k| (start + k) % total).collect()
    }
}

pub(crate) async fn announce_loop(app: Arc<App>) {
    let mut interval = tokio::time::interval(ANNOUNCE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        if let Err(e) = round(&app).await {
            tracing::warn!("statement announcements: {e}");
        }
    }
}

async fn round(app: &Arc<App>) -> Result<(), String> {
    // One member does the reading (the claims still keep a leadership change from repeating).
    if !app.control.leads() {
        return Ok(());
    }
    let hooks = hooks(app.control.as_ref()).map_err(|e| e.to_string())?;
    if hooks.is_empty() {
        return Ok(());
    }
    let mut partners: Vec<String> =
        app.read.partners().await.map_err(|e| e.to_string())?.into_iter().map(|p| p.id).collect();
    partners.sort_unstable();
    for i in app.announcer.next_window(partners.len()) {
        let partner = &partners[i];
        let interested: Vec<&StatementHook> =
            hooks.iter().filter(|h| h.partner.as_ref().is_none_or(|p| p == partner)).collect();
        if interested.is_empty() {
            continue;
        }
        let statements = app.read.statements(partner).await.map_err(|e| e.to_string())?;
        for hook in interested {
            let Some(from) = Instant::parse_rfc3339(&hook.from) else { continue };
            let known = app.announcer.known(&hook.id, partner);
            // `known` moves past a statement only once its announcement is settled or ours, and
            // never past one another member is still announcing (it may die before posting).
            let mut blocked = false;
            for s in
                statements.iter().filter(|s| s.period.end >= from && known.is_none_or(|k| s.period.end > k))
            {
                let key = claim_key(&hook.id, partner, s.period.start);
                match claim(app.control.as_ref(), &key).await.map_err(|e| e.to_string())? {
                    Claim::Ours => {
                        // Claimed before the wait, so no other member takes it meanwhile.
                        let permit = Arc::clone(&app.announcer.deliveries)
                            .acquire_owned()
                            .await
                            .map_err(|e| e.to_string())?;
                        let payload = json!({
                            "event": "statement.closed",
                            "delivery": key,
                            "hook": hook.id,
                            "partner": partner,
                            "statement": crate::views::statement(s),
                        });
                        let control = Arc::clone(&app.control);
                        let hook = hook.clone();
                        tokio::spawn(async move {
                            deliver(control, hook, key, payload).await;
                            drop(permit);
                        });
                    }
                    Claim::Settled => {}
                    Claim::Pending => blocked = true,
                }
                if !blocked {
                    app.announcer.remember(&hook.id, partner, s.period.end);
                }
            }
        }
    }
    Ok(())
}

/// What a claim attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// This member claimed it: deliver now.
    Ours,
    /// Delivered, or failed into the dead-letter list.
    Settled,
    /// Another member claimed it a moment ago and is delivering.
    Pending,
}

/// Claims `key`, or takes over a claim older than [`CLAIM_TIMEOUT_S`] that never settled (its
/// member died between the claim and the delivery), so every statement is announced at least
/// once; a repeat after a takeover carries the same `delivery` id.
async fn claim(control: &dyn ControlStore, key: &str) -> Result<Claim, StoreError> {
    let now = crate::auth::now_unix();
    let current = control.get(Space::Announced, key)?;
    if let Some(bytes) = &current {
        let record: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        if record["status"] != "claimed" {
            return Ok(Claim::Settled);
        }
        let stale = record["at"].as_i64().is_some_and(|at| at.saturating_add(CLAIM_TIMEOUT_S) < now);
        if !stale {
            return Ok(Claim::Pending);
        }
    }
    let record = json!({"status": "claimed", "at": now}).to_string().into_bytes();
    let ops = vec![
        ControlOp::Expect { space: Space::Announced, key: key.to_string(), value: current },
        ControlOp::Put { space: Space::Announced, key: key.to_string(), value: record },
    ];
    match control.write(ops).await {
        Ok(()) => Ok(Claim::Ours),
        Err(StoreError::Changed(_)) => Ok(Claim::Pending),
        Err(e) => Err(e),
    }
}

async fn deliver(control: Arc<dyn ControlStore>, hook: StatementHook, key: String, payload: Value) {
    let body = payload.to_string();
    let webhook = Webhook { url: hook.url.clone(), secret: hook.secret.clone() };
    let result = with_retries(|| post_webhook(&webhook, &body)).await;
    let at = crate::auth::now_unix();
    let mut ops = Vec::new();
    let status = match &result {
        Ok(()) => json!({"status": "delivered", "at": at}),
        Err(e) => {
            let letter = json!({"hook": hook.id, "channel": "statement-webhook", "target": hook.url,
                "payload": payload, "error": e, "at": at});
            ops.push(ControlOp::Put {
                space: Space::DeadLetters,
                key: format!("{at:020}-{}", crate::auth::random_hex(4)),
                value: letter.to_string().into_bytes(),
            });
            json!({"status": "failed", "at": at, "error": e})
        }
    };
    ops.push(ControlOp::Put { space: Space::Announced, key, value: status.to_string().into_bytes() });
    if let Err(e) = control.write(ops).await {
        tracing::error!("cannot record a statement delivery: {e}");
    }
}

pub(crate) async fn list_hooks(axum::extract::State(app): AppState, p: Principal) -> ApiResult<Json<Value>> {
    p.require_read_all()?;
    let list: Vec<Value> = hooks(app.control.as_ref())?.iter().map(hook_public).collect();
    Ok(Json(json!({"hooks": list})))
}

pub(crate) async fn create_hook(
    axum::extract::State(app): AppState,
    p: Principal,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_admin()?;
    let new: NewHook = parse_body(&body)?;
    split_url(&new.url).map_err(ApiError::BadRequest)?;
    if new.secret.is_empty() || new.secret.len() > MAX_SECRET_BYTES {
        return Err(ApiError::BadRequest(format!("secret must be 1 to {MAX_SECRET_BYTES} bytes")));
    }
    if let Some(partner) = &new.partner {
        let known = app.read.partners().await?.iter().any(|x| &x.id == partner);
        if !known {
            return Err(ApiError::NotFound(format!("no partner {partner:?}")));
        }
    }
    let from = match &new.from {
        Some(text) => Instant::parse_rfc3339(text)
            .ok_or_else(|| ApiError::BadRequest(format!("from: {text:?} is not an RFC 3339 time")))?,
        None => Instant::from_unix_seconds(crate::auth::now_unix()),
    };
    if hooks(app.control.as_ref())?.len() >= MAX_HOOKS {
        return Err(ApiError::Rejected(format!("at most {MAX_HOOKS} statement hooks")));
    }
    let hook = StatementHook {
        id: crate::auth::random_hex(6),
        url: new.url,
        secret: new.secret,
        partner: new.partner,
        from: from.to_rfc3339(),
    };
    let op = ControlOp::Put {
        space: Space::StatementHooks,
        key: hook.id.clone(),
        value: serde_json::to_vec(&hook).map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    let event = AuditEvent {
        actor: actor(&p),
        action: "statement_hook.create".into(),
        target: format!("statement_hook:{}", hook.id),
        before: Value::Null,
        after: hook_public(&hook),
    };
    app.audit.commit(vec![op], event).await?;
    Ok((StatusCode::CREATED, Json(hook_public(&hook))))
}

pub(crate) async fn delete_hook(
    axum::extract::State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.require_admin()?;
    let hook = hooks(app.control.as_ref())?
        .into_iter()
        .find(|h| h.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no statement hook {id:?}")))?;
    let op = ControlOp::Delete { space: Space::StatementHooks, key: id.clone() };
    let event = AuditEvent {
        actor: actor(&p),
        action: "statement_hook.delete".into(),
        target: format!("statement_hook:{id}"),
        before: hook_public(&hook),
        after: Value::Null,
    };
    app.audit.commit(vec![op], event).await?;
    Ok(Json(json!({"deleted": id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_walks_every_partner_in_turn() {
        let a = Announcer::default();
        let total = MAX_PARTNERS_PER_ROUND + 10;
        let first = a.next_window(total);
        assert_eq!(first.len(), MAX_PARTNERS_PER_ROUND);
        let second = a.next_window(total);
        assert_eq!(second[..10], (MAX_PARTNERS_PER_ROUND..total).collect::<Vec<_>>()[..]);
        assert_eq!(second[10], 0, "wraps around");
        // Fewer partners than a window: all of them, each once.
        let small = Announcer::default();
        assert_eq!(small.next_window(3), vec![0, 1, 2]);
        assert_eq!(small.next_window(3), vec![0, 1, 2]);
        assert!(a.next_window(0).is_empty());
    }

    #[test]
    fn what_was_claimed_only_moves_forward() {
        let a = Announcer::default();
        let t = |s| Instant::from_unix_seconds(s);
        a.remember("h", "p", t(200));
        a.remember("h", "p", t(100));
        assert_eq!(a.known("h", "p"), Some(t(200)));
        assert_eq!(a.known("h", "q"), None);
    }
}
