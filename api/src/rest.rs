//! The HTTP routes: REST under `/v1`, `/graphql`, `/metrics`, the pages, and the middleware that
//! authenticates every request and checks CSRF tokens on cookie-authenticated changes.

use crate::audit::{self, AuditEvent};
use crate::auth::{Auth, Principal, Role, Via, CSRF_HEADER, SESSION_COOKIE};
use crate::error::{ApiError, ApiResult};
use crate::model::{
    ControlOp, ExceptionItem, ExceptionQuery, ResolveAction, ResolveResult, Space, StoreError, TxQuery,
    TxStatus, MAX_PAGE,
};
use crate::{views, App};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use settle_core::{ExceptionReason, Instant, TxKind};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) type AppState = State<Arc<App>>;
type Params = Query<HashMap<String, String>>;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Most transactions one `POST /v1/transactions` may carry.
pub const MAX_SUBMIT: usize = 10_000;
/// Default page size.
pub const DEFAULT_PAGE: usize = 50;
/// Most audit records one export returns.
pub const MAX_AUDIT_EXPORT: usize = 100_000;
/// Attempts at a login while other requests change the same account (its record is written
/// only if it did not change since it was read).
pub const MAX_LOGIN_ATTEMPTS: usize = 4;
/// Longest cursor accepted.
const MAX_CURSOR_BYTES: usize = 128;

pub(crate) fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{name}", axum::routing::delete(disable_user))
        .route("/api-keys", get(list_keys).post(create_key))
        .route("/api-keys/{id}", axum::routing::delete(revoke_key))
        .route("/partners", get(list_partners).post(create_partner))
        .route("/partners/{id}", get(get_partner))
        .route("/partners/{id}/contracts", get(list_contracts).post(add_contract))
        .route("/partners/{id}/balance", get(get_balance))
        .route("/partners/{id}/statements", get(list_statements))
        .route("/partners/{id}/statements/{start}", get(get_statement))
        .route("/partners/{id}/overview", get(partner_overview))
        .route("/transactions", get(list_transactions).post(submit_transactions))
        .route("/transactions/{id}", get(get_transaction))
        .route("/exceptions", get(list_exceptions))
        .route("/exceptions/{seq}", get(get_exception))
        .route("/exceptions/{seq}/resolve", post(resolve_exception))
        .route("/fx/rates", post(publish_rates))
        .route("/audit", get(list_audit))
        .route("/audit/export", get(export_audit))
        .route("/audit/verify", get(verify_audit))
        .route("/overview", get(overview))
        .route("/live", get(crate::web::live))
        .route("/alerts", get(crate::alerts::list_alerts))
        .route("/alerts/rules", get(crate::alerts::list_rules).post(crate::alerts::create_rule))
        .route("/alerts/rules/{id}", axum::routing::delete(crate::alerts::delete_rule))
        .route("/alerts/{id}/ack", post(crate::alerts::ack))
        .route("/alerts/{id}/silence", post(crate::alerts::silence))
        .route("/alerts/dead-letters", get(crate::alerts::dead_letters))
        .route("/statement-hooks", get(crate::announce::list_hooks).post(crate::announce::create_hook))
        .route("/statement-hooks/{id}", axum::routing::delete(crate::announce::delete_hook))
        .route("/mappings", get(crate::import::list_mappings))
        .route("/mappings/{name}", axum::routing::put(crate::import::put_mapping))
        .route("/imports", post(crate::import::upload))
        .route("/archive/prune", post(crate::archive::prune))
        .route("/openapi.json", get(crate::openapi::document))
        .fallback(not_found);
    Router::new()
        .nest("/v1", v1)
        .route("/graphql", post(crate::graphql::execute).get(crate::graphql::playground_refused))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route("/readyz", get(readyz))
        .merge(crate::web::pages())
        .layer(middleware::from_fn_with_state(Arc::clone(&app), authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

/// Resolves the caller (bearer key or session cookie) into the request's extensions, refuses
/// cookie-authenticated changes without the session's CSRF token, and counts responses.
async fn authenticate(State(app): AppState, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let session = cookie(headers, SESSION_COOKIE);
    if bearer.is_some() || session.is_some() {
        // A replica cut off from its leader may not have seen a revocation yet.
        if let Err(e) = app.control.current() {
            return finish(&app, ApiError::Unavailable(e.to_string()).into_response());
        }
    }
    let principal = match (bearer, session) {
        (Some(key), _) => {
            let key = key.trim().to_string();
            // A key created on another member a moment ago may not have reached this one.
            if !app.auth.key_record_exists(&key).unwrap_or(true) {
                if let Err(e) = app.control.sync().await {
                    return finish(&app, ApiError::from(e).into_response());
                }
            }
            match app.auth.authenticate_key(&key) {
                Ok(p) => Some(p),
                Err(e) => return finish(&app, e.into_response()),
            }
        }
        (None, Some(token)) => {
            if !app.auth.session_record_exists(&token).unwrap_or(true) {
                if let Err(e) = app.control.sync().await {
                    return finish(&app, ApiError::from(e).into_response());
                }
            }
            match app.auth.authenticate_session(&token) {
                Ok(p) => p,
                Err(e) => return finish(&app, e.into_response()),
            }
        }
        (None, None) => None,
    };
    if let Some(Principal { via: Via::Session { csrf, .. }, .. }) = &principal {
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        let matches = crate::auth::ct_eq(given.as_bytes(), csrf.as_bytes());
        if !safe && !matches {
            return finish(&app, ApiError::Csrf("missing or wrong CSRF token".into()).into_response());
        }
    }
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    let response = next.run(req).await;
    finish(&app, response)
}

fn finish(app: &App, mut response: Response) -> Response {
    app.metrics.count_http(response.status().as_u16());
    let h = response.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("authentication required (API key or session)".into()))
    }
}

pub(crate) fn parse_body<T: for<'de> serde::Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn instant_param(params: &HashMap<String, String>, name: &str) -> ApiResult<Option<Instant>> {
    params
        .get(name)
        .map(|v| {
            Instant::parse_rfc3339(v)
                .ok_or_else(|| ApiError::BadRequest(format!("{name}: {v:?} is not an RFC 3339 instant")))
        })
        .transpose()
}

fn reason_param(params: &HashMap<String, String>) -> ApiResult<Option<ExceptionReason>> {
    params
        .get("reason")
        .map(|r| {
            ExceptionReason::parse(r)
                .ok_or_else(|| ApiError::BadRequest(format!("reason {r:?} is not an exception reason")))
        })
        .transpose()
}

/// An opaque cursor as the backend issued it (checked by the backend).
fn cursor_param(params: &HashMap<String, String>) -> ApiResult<Option<String>> {
    match params.get("cursor") {
        Some(c) if c.is_empty() || c.len() > MAX_CURSOR_BYTES => {
            Err(ApiError::BadRequest(format!("cursor: {c:?} is not a cursor")))
        }
        other => Ok(other.cloned()),
    }
}

fn u64_param(params: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    params
        .get(name)
        .map(|v| v.parse::<u64>().map_err(|_| ApiError::BadRequest(format!("{name}: {v:?} is not a cursor"))))
        .transpose()
}

fn limit_param(params: &HashMap<String, String>) -> ApiResult<usize> {
    match params.get("limit") {
        None => Ok(DEFAULT_PAGE),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!("limit must be 1..={MAX_PAGE}"))),
        },
    }
}

pub(crate) fn actor(p: &Principal) -> String {
    p.subject.clone()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("task failed: {e}")))?
}

// ------------------------------------------------------------------------------------------
// Sessions

#[derive(serde::Deserialize)]
struct LoginBody {
    username: String,
    password: String,
    totp: Option<String>,
}

async fn login(State(app): AppState, body: Bytes) -> ApiResult<Response> {
    let body: Arc<LoginBody> = Arc::new(parse_body(&body)?);
    for _ in 0..MAX_LOGIN_ATTEMPTS {
        let (app2, b) = (Arc::clone(&app), Arc::clone(&body));
        let checked =
            blocking(move || app2.auth.check_login(&b.username, &b.password, b.totp.as_deref())).await?;
        // Every write of the account is conditional on the record read: two logins at once on
        // two members (the same TOTP code, failures counted) cannot both win.
        let written = match checked {
            Err((None, error)) => return Err(error),
            Err((Some((before, user)), error)) => {
                let ops = vec![Auth::expect_user_op(&user.username, before), Auth::put_user_op(&user)?];
                let written = if user.locked_until > 0 {
                    let event = AuditEvent {
                        actor: "system".into(),
                        action: "user.lockout".into(),
                        target: format!("user:{}", user.username),
                        before: Value::Null,
                        after: json!({"locked_until": user.locked_until}),
                    };
                    app.audit.commit(ops, event).await.map(|_| ())
                } else {
                    app.control.write(ops).await
                };
                match written {
                    Ok(()) => return Err(error),
                    Err(e) => Err(e),
                }
            }
            Ok((before, user)) => {
                let (token, session, op) = app.auth.new_session(&user)?;
                let event = AuditEvent {
                    actor: format!("user:{}", user.username),
                    action: "session.create".into(),
                    target: format!("user:{}", user.username),
                    before: Value::Null,
                    after: json!({"expires_at": session.expires_at}),
                };
                let ops = vec![Auth::expect_user_op(&user.username, before), Auth::put_user_op(&user)?, op];
                match app.audit.commit(ops, event).await {
                    Ok(_) => return Ok(session_response(&app, &token, &session.csrf, &user)),
                    Err(e) => Err(e),
                }
            }
        };
        match written {
            // The account changed since it was read: check again against what it is now.
            Err(StoreError::Changed(_)) => continue,
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
    }
    Err(ApiError::Unavailable("the account kept changing during the login; try again".into()))
}

fn session_response(app: &App, token: &str, csrf: &str, user: &crate::auth::UserRecord) -> Response {
    let secure = if app.config.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        crate::auth::SESSION_SECONDS
    );
    let body = json!({"csrf": csrf, "user": user.public()});
    let mut response = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn logout(State(app): AppState, p: Principal) -> ApiResult<Response> {
    if let Via::Session { token_hash, .. } = &p.via {
        let event = AuditEvent {
            actor: actor(&p),
            action: "session.delete".into(),
            target: p.subject.clone(),
            before: Value::Null,
            after: Value::Null,
        };
        app.audit.commit(vec![Auth::delete_session_op(token_hash)], event).await?;
    }
    let mut response = Json(json!({"ok": true})).into_response();
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

async fn me(p: Principal) -> Json<Value> {
    let csrf = match &p.via {
        Via::Session { csrf, .. } => Some(csrf.clone()),
        Via::Key => None,
    };
    Json(json!({"subject": p.subject, "role": p.role.as_str(), "partner": p.partner, "csrf": csrf}))
}

// ------------------------------------------------------------------------------------------
// Users and keys (admin)

async fn list_users(State(app): AppState, p: Principal) -> ApiResult<Json<Value>> {
    p.require_read_all()?;
    let users: Vec<Value> = app.auth.users()?.iter().map(|u| u.public()).collect();
    Ok(Json(json!({"users": users})))
}

#[derive(serde::Deserialize)]
struct NewUserBody {
    username: String,
    role: String,
    partner: Option<String>,
    #[serde(default)]
    totp: bool,
}

fn parse_role(s: &str) -> ApiResult<Role> {
    Role::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!("role {s:?} is not admin, operator, auditor, partner or ingest"))
    })
}

async fn create_user(
    State(app): AppState,
    p: Principal,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_admin()?;
    let body: NewUserBody = parse_body(&body)?;
    let role = parse_role(&body.role)?;
    if app.auth.user(&body.username)?.is_some() {
        return Err(ApiError::Conflict(format!("user {:?} exists", body.username)));
    }
    let app2 = Arc::clone(&app);
    let (record, secrets) =
        blocking(move || app2.auth.new_user(&body.username, role, body.partner, body.totp)).await?;
    let event = AuditEvent {
        actor: actor(&p),
        action: "user.create".into(),
        target: format!("user:{}", record.username),
        before: Value::Null,
        after: record.public(),
    };
    let ops = vec![
        ControlOp::Expect { space: Space::Users, key: record.username.clone(), value: None },
        Auth::put_user_op(&record)?,
    ];
    match app.audit.commit(ops, event).await {
        Err(StoreError::Changed(_)) => {
            return Err(ApiError::Conflict(format!("user {:?} exists", record.username)))
        }
        other => other?,
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": record.public(), "credentials": secrets, "shown_once": true})),
    ))
}

async fn disable_user(
    State(app): AppState,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    p.require_admin()?;
    let mut user = app.auth.user(&name)?.ok_or_else(|| ApiError::NotFound(format!("no user {name:?}")))?;
    let before = user.public();
    user.disabled = true;
    let event = AuditEvent {
        actor: actor(&p),
        action: "user.disable".into(),
        target: format!("user:{name}"),
        before,
        after: user.public(),
    };
    app.audit.commit(vec![Auth::put_user_op(&user)?], event).await?;
    Ok(Json(json!({"user": user.public()})))
}

async fn list_keys(State(app): AppState, p: Principal) -> ApiResult<Json<Value>> {
    p.require_read_all()?;
    let keys: Vec<Value> = app.auth.keys()?.iter().map(|k| k.public()).collect();
    Ok(Json(json!({"api_keys": keys})))
}

#[derive(serde::Deserialize)]
struct NewKeyBody {
    name: String,
    role: String,
    partner: Option<String>,
    /// Unix seconds.
    expires_at: Option<i64>,
}

async fn create_key(State(app): AppState, p: Principal, body: Bytes) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_admin()?;
    let body: NewKeyBody = parse_body(&body)?;
    let role = parse_role(&body.role)?;
    let app2 = Arc::clone(&app);
    let by = actor(&p);
    let (record, key) =
        blocking(move || app2.auth.new_key(&body.name, role, body.partner, body.expires_at, &by)).await?;
    let event = AuditEvent {
        actor: actor(&p),
        action: "api_key.create".into(),
        target: format!("key:{}", record.id),
        before: Value::Null,
        after: record.public(),
    };
    app.audit.commit(vec![Auth::put_key_op(&record)?], event).await?;
    Ok((StatusCode::CREATED, Json(json!({"api_key": record.public(), "key": key, "shown_once": true}))))
}

async fn revoke_key(State(app): AppState, p: Principal, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    p.require_admin()?;
    let mut key = app.auth.key(&id)?.ok_or_else(|| ApiError::NotFound(format!("no API key {id:?}")))?;
    let before = key.public();
    if key.revoked_at.is_none() {
        key.revoked_at = Some(crate::auth::now_unix());
        let event = AuditEvent {
            actor: actor(&p),
            action: "api_key.revoke".into(),
            target: format!("key:{id}"),
            before,
            after: key.public(),
        };
        app.audit.commit(vec![Auth::put_key_op(&key)?], event).await?;
        app.auth.forget_key(&id);
    }
    Ok(Json(json!({"api_key": key.public()})))
}

// ------------------------------------------------------------------------------------------
// Partners and contracts

async fn list_partners(State(app): AppState, p: Principal) -> ApiResult<Json<Value>> {
    let scope = p.scope()?;
    let partners: Vec<Value> = app
        .read
        .partners()
        .await?
        .iter()
        .filter(|x| scope.as_deref().is_none_or(|s| s == x.id))
        .map(views::partner)
        .collect();
    Ok(Json(json!({"partners": partners})))
}

pub(crate) async fn find_partner(app: &App, id: &str) -> ApiResult<settle_core::Partner> {
    app.read
        .partners()
        .await?
        .into_iter()
        .find(|x| x.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no partner {id:?}")))
}

async fn get_partner(State(app): AppState, p: Principal, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    p.require_partner(&id)?;
    Ok(Json(views::partner(&find_partner(&app, &id).await?)))
}

async fn create_partner(
    State(app): AppState,
    p: Principal,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_operate()?;
    let value: Value = parse_body(&body)?;
    let partner = settle_core::scenario::parse_partner(&value, "partner")
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if partner.id.len() > 128 {
        return Err(ApiError::BadRequest("partner.id: at most 128 bytes".into()));
    }
    let after = views::partner(&partner);
    let id = partner.id.clone();
    app.mutate.register_partner(partner).await?;
    let event = AuditEvent {
        actor: actor(&p),
        action: "partner.create".into(),
        target: format!("partner:{id}"),
        before: Value::Null,
        after: after.clone(),
    };
    app.audit.commit(Vec::new(), event).await?;
    Ok((StatusCode::CREATED, Json(after)))
}

async fn list_contracts(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.require_partner(&id)?;
    let partner = find_partner(&app, &id).await?;
    let versions: Vec<Value> =
        partner.contract.versions().iter().map(|v| views::contract_version(v, partner.currency)).collect();
    Ok(Json(json!({"partner": id, "versions": versions})))
}

async fn add_contract(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_operate()?;
    let partner = find_partner(&app, &id).await?;
    let value: Value = parse_body(&body)?;
    let version = settle_core::scenario::parse_contract_version(&value, "contract", partner.currency)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let after = views::contract_version(&version, partner.currency);
    let before = views::partner(&partner);
    app.mutate.add_contract_version(&id, version).await?;
    let event = AuditEvent {
        actor: actor(&p),
        action: "contract_version.create".into(),
        target: format!("partner:{id}"),
        before,
        after: after.clone(),
    };
    app.audit.commit(Vec::new(), event).await?;
    Ok((StatusCode::CREATED, Json(after)))
}

async fn get_balance(State(app): AppState, p: Principal, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    p.require_partner(&id)?;
    let b = app.read.balance(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no partner {id:?}")))?;
    Ok(Json(views::balance(&b)))
}

async fn list_statements(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    p.require_partner(&id)?;
    find_partner(&app, &id).await?;
    let statements = app.read.statements(&id).await?;
    if q.get("format").map(String::as_str) == Some("csv") {
        return Ok(download(
            crate::pdf::statements_csv(&statements).into_bytes(),
            "text/csv; charset=utf-8",
            &format!("{id}-statements.csv"),
        ));
    }
    let list: Vec<Value> = statements.iter().rev().map(views::statement).collect();
    Ok(Json(json!({"partner": id, "statements": list})).into_response())
}

fn download(bytes: Vec<u8>, content_type: &'static str, filename: &str) -> Response {
    let safe: String =
        filename.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    let mut response = (StatusCode::OK, Body::from(bytes)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

async fn get_statement(
    State(app): AppState,
    p: Principal,
    Path((id, start)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult<Response> {
    p.require_partner(&id)?;
    let at = Instant::parse_rfc3339(&start)
        .ok_or_else(|| ApiError::BadRequest(format!("{start:?} is not an RFC 3339 period start")))?;
    let statement =
        app.read.statements(&id).await?.into_iter().find(|s| s.period.start == at).ok_or_else(|| {
            ApiError::NotFound(format!("no statement of {id:?} for the period starting {start}"))
        })?;
    let name = format!("{id}-{}", statement.period.start.to_rfc3339().replace(':', ""));
    match q.get("format").map(String::as_str) {
        None | Some("json") => Ok(Json(views::statement(&statement)).into_response()),
        Some("csv") => Ok(download(
            crate::pdf::statements_csv(std::slice::from_ref(&statement)).into_bytes(),
            "text/csv; charset=utf-8",
            &format!("{name}.csv"),
        )),
        Some("pdf") => {
            Ok(download(crate::pdf::statement_pdf(&statement), "application/pdf", &format!("{name}.pdf")))
        }
        Some(other) => Err(ApiError::BadRequest(format!("format {other:?} is not json, csv or pdf"))),
    }
}

async fn partner_overview(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.require_partner(&id)?;
    let partner = find_partner(&app, &id).await?;
    let balance = app.read.balance(&id).await?;
    let recent =
        app.read.transactions(TxQuery { partner: Some(id.clone()), limit: 20, ..TxQuery::default() }).await?;
    let statements = app.read.statements(&id).await?;
    let open_exceptions = app
        .read
        .exceptions(ExceptionQuery { partner: Some(id.clone()), limit: 20, ..ExceptionQuery::default() })
        .await?;
    Ok(Json(json!({
        "partner": views::partner(&partner),
        "balance": balance.as_ref().map(views::balance),
        "recent_transactions": recent.items.iter().map(views::tx_record).collect::<Vec<_>>(),
        "statements": statements.iter().rev().take(12).map(views::statement).collect::<Vec<_>>(),
        "exceptions": open_exceptions.items.iter().map(|e| views::exception(e, None)).collect::<Vec<_>>(),
    })))
}

// ------------------------------------------------------------------------------------------
// Transactions

pub(crate) fn tx_query(p: &Principal, q: &HashMap<String, String>) -> ApiResult<TxQuery> {
    let partner = p.partner_filter(q.get("partner").map(String::as_str))?;
    let kind = q
        .get("kind")
        .map(|k| {
            TxKind::parse(k).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "kind {k:?} is not sale, refund, chargeback, payout or adjustment"
                ))
            })
        })
        .transpose()?;
    let status = match q.get("status").map(String::as_str) {
        None => None,
        Some("applied") => Some(TxStatus::Applied),
        Some("exception") => Some(TxStatus::Exception),
        Some(other) => {
            return Err(ApiError::BadRequest(format!("status {other:?} is not applied or exception")))
        }
    };
    let reason = reason_param(q)?;
    Ok(TxQuery {
        partner,
        kind,
        status,
        reason,
        period_start: instant_param(q, "period")?,
        received_from: instant_param(q, "from")?,
        received_to: instant_param(q, "to")?,
        before: cursor_param(q)?,
        limit: limit_param(q)?,
    })
}

async fn list_transactions(State(app): AppState, p: Principal, Query(q): Params) -> ApiResult<Json<Value>> {
    let query = tx_query(&p, &q)?;
    let page = app.read.transactions(query).await?;
    Ok(Json(json!({
        "transactions": page.items.iter().map(views::tx_record).collect::<Vec<_>>(),
        "next_cursor": page.next,
    })))
}

async fn get_transaction(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let scope = p.scope()?;
    let record = app
        .read
        .transaction(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no transaction {id:?}")))?;
    if let Some(own) = scope {
        if record.tx.partner.as_deref() != Some(own.as_str()) {
            return Err(ApiError::NotFound(format!("no transaction {id:?}")));
        }
    }
    Ok(Json(views::tx_record(&record)))
}

#[derive(serde::Deserialize)]
struct SubmitBody {
    transactions: Vec<Value>,
}

async fn submit_transactions(State(app): AppState, p: Principal, body: Bytes) -> ApiResult<Json<Value>> {
    p.require_submit()?;
    let body: SubmitBody = parse_body(&body)?;
    if body.transactions.is_empty() || body.transactions.len() > MAX_SUBMIT {
        return Err(ApiError::BadRequest(format!("transactions: 1..={MAX_SUBMIT} per request")));
    }
    let mut txs = Vec::with_capacity(body.transactions.len());
    for (i, v) in body.transactions.iter().enumerate() {
        // received_at is stamped by the engine; the placeholder is never used.
        let tx = settle_core::scenario::parse_transaction(v, &format!("transactions[{i}]"), Some(Instant(0)))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        txs.push(tx);
    }
    let ids: Vec<String> = txs.iter().map(|t| t.id.as_str().to_string()).collect();
    let counts = crate::metrics::Metrics::partner_counts(&txs);
    let started = std::time::Instant::now();
    let results = app.mutate.submit(txs).await?;
    app.metrics.observe_submit(started.elapsed(), &counts, &results);
    let out: Vec<Value> = ids
        .iter()
        .zip(results.iter())
        .map(|(id, r)| {
            let mut v = json!({"id": id, "duplicate": r.duplicate});
            if let Value::Object(m) = &mut v {
                if let Value::Object(o) = views::outcome(&r.outcome, None) {
                    m.extend(
                        o.into_iter()
                            .filter(|(k, _)| k == "status" || k == "reason" || k == "period" || k == "late"),
                    );
                }
            }
            v
        })
        .collect();
    Ok(Json(json!({"results": out})))
}

// ------------------------------------------------------------------------------------------
// Exceptions

fn resolution_key(seq: u64) -> String {
    format!("{seq:020}")
}

/// An exception's resolution: the backend's, or the one the API keeps in the control store.
pub(crate) fn resolution(app: &App, e: &ExceptionItem) -> ApiResult<Option<Value>> {
    if let Some(r) = &e.resolution {
        return Ok(Some(views::resolution(r)));
    }
    if app.mutate.resolves_exceptions() {
        return Ok(None);
    }
    app.control
        .get(Space::Resolutions, &resolution_key(e.seq))?
        .map(|b| serde_json::from_slice(&b).map_err(|e| ApiError::Internal(e.to_string())))
        .transpose()
}

fn check_exception_scope(p: &Principal, e: &ExceptionItem) -> ApiResult<()> {
    if let Some(own) = p.scope()? {
        let theirs = e.tx.as_ref().and_then(|t| t.partner.as_deref());
        if theirs != Some(own.as_str()) {
            return Err(ApiError::NotFound(format!("no exception {}", e.seq)));
        }
    }
    Ok(())
}

async fn list_exceptions(State(app): AppState, p: Principal, Query(q): Params) -> ApiResult<Json<Value>> {
    let partner = p.partner_filter(q.get("partner").map(String::as_str))?;
    let reason = reason_param(&q)?;
    let want = q.get("status").cloned();
    if let Some(s) = &want {
        if s != "open" && s != "resolved" {
            return Err(ApiError::BadRequest(format!("status {s:?} is not open or resolved")));
        }
    }
    let page = app
        .read
        .exceptions(ExceptionQuery { partner, reason, after: cursor_param(&q)?, limit: limit_param(&q)? })
        .await?;
    let mut items = Vec::new();
    for e in &page.items {
        let r = resolution(&app, e)?;
        let status = if r.is_some() { "resolved" } else { "open" };
        if want.as_deref().is_none_or(|w| w == status) {
            items.push(views::exception(e, r.as_ref()));
        }
    }
    Ok(Json(json!({"exceptions": items, "next_cursor": page.next})))
}

fn parse_seq(seq: &str) -> ApiResult<u64> {
    seq.parse().map_err(|_| ApiError::BadRequest(format!("{seq:?} is not an exception sequence")))
}

async fn get_exception(
    State(app): AppState,
    p: Principal,
    Path(seq): Path<String>,
) -> ApiResult<Json<Value>> {
    p.scope()?;
    let seq = parse_seq(&seq)?;
    let e =
        app.read.exception(seq).await?.ok_or_else(|| ApiError::NotFound(format!("no exception {seq}")))?;
    check_exception_scope(&p, &e)?;
    Ok(Json(views::exception(&e, resolution(&app, &e)?.as_ref())))
}

#[derive(serde::Deserialize)]
struct ResolveBody {
    action: String,
    /// reject: why.
    reason: Option<String>,
    /// retry: fields to correct (any transaction field but `id`).
    #[serde(default)]
    corrections: serde_json::Map<String, Value>,
    /// retry: the id of the corrected transaction (default `ORIGINAL~SEQ`).
    id: Option<String>,
}

async fn resolve_exception(
    State(app): AppState,
    p: Principal,
    Path(seq): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    p.require_operate()?;
    let seq = parse_seq(&seq)?;
    let body: ResolveBody = parse_body(&body)?;
    let _one_at_a_time = app.resolving.lock().await;
    let e =
        app.read.exception(seq).await?.ok_or_else(|| ApiError::NotFound(format!("no exception {seq}")))?;
    if resolution(&app, &e)?.is_some() {
        return Err(ApiError::Conflict(format!("exception {seq} is already resolved")));
    }
    let before = views::exception(&e, None);
    let now = settle_core::Instant::from_system_time(std::time::SystemTime::now());
    let action = match body.action.as_str() {
        "reject" => {
            let reason = body
                .reason
                .filter(|r| !r.trim().is_empty())
                .ok_or_else(|| ApiError::BadRequest("reject needs a reason".into()))?;
            ResolveAction::Reject { reason }
        }
        "retry" => {
            let original = e
                .tx
                .as_ref()
                .ok_or_else(|| ApiError::Rejected("the exception's transaction is not in the log".into()))?;
            let mut fields = match views::tx_input(original) {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            fields.remove("received_at");
            for (k, v) in body.corrections {
                if k == "id" || k == "received_at" {
                    return Err(ApiError::BadRequest(format!("corrections.{k} cannot be changed")));
                }
                fields.insert(k, v);
            }
            fields.retain(|_, v| !v.is_null());
            let new_id = body.id.unwrap_or_else(|| format!("{}~{seq}", e.id));
            fields.insert("id".into(), Value::String(new_id));
            let tx = settle_core::scenario::parse_transaction(
                &Value::Object(fields),
                "corrected",
                Some(Instant(0)),
            )
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            ResolveAction::Retry { tx: Box::new(tx) }
        }
        other => return Err(ApiError::BadRequest(format!("action {other:?} is not retry or reject"))),
    };
    // (the exception as it now is, its resolution, what to write with the audit record)
    let (resolved, record, ops) = if app.mutate.resolves_exceptions() {
        // The backend resolves it in the exception's own log (every replica agrees); it is
        // audited here once it is.
        match app.mutate.resolve_exception(seq, action, actor(&p), now).await? {
            ResolveResult::Resolved(item) => {
                let record = resolution(&app, &item)?.unwrap_or(Value::Null);
                (*item, record, Vec::new())
            }
            ResolveResult::AlreadyResolved(_) => {
                return Err(ApiError::Conflict(format!("exception {seq} is already resolved")))
            }
            ResolveResult::NotFound => return Err(ApiError::NotFound(format!("no exception {seq}"))),
        }
    } else {
        let at = now.to_rfc3339();
        let record = match action {
            ResolveAction::Reject { reason } => {
                json!({"action": "reject", "reason": reason, "by": actor(&p), "at": at})
            }
            ResolveAction::Retry { tx } => {
                let new_id = tx.id.as_str().to_string();
                let results = app.mutate.submit(vec![*tx]).await?;
                let outcome =
                    results.first().map(|r| views::outcome(&r.outcome, None)).unwrap_or(Value::Null);
                json!({"action": "retry", "retry_id": new_id, "outcome": outcome, "by": actor(&p), "at": at})
            }
        };
        let op = ControlOp::Put {
            space: Space::Resolutions,
            key: resolution_key(seq),
            value: serde_json::to_vec(&record).map_err(|e| ApiError::Internal(e.to_string()))?,
        };
        (e, record, vec![op])
    };
    let event = AuditEvent {
        actor: actor(&p),
        action: "exception.resolve".into(),
        target: format!("exception:{seq}"),
        before,
        after: record.clone(),
    };
    app.audit.commit(ops, event).await?;
    Ok(Json(views::exception(&resolved, Some(&record))))
}

// ------------------------------------------------------------------------------------------
// FX overrides

#[derive(serde::Deserialize)]
struct RatesBody {
    rates: Vec<Value>,
}

async fn publish_rates(State(app): AppState, p: Principal, body: Bytes) -> ApiResult<Json<Value>> {
    p.require_operate()?;
    let body: RatesBody = parse_body(&body)?;
    let mut rates = Vec::new();
    for (i, v) in body.rates.iter().enumerate() {
        rates.push(
            settle_core::scenario::parse_rate(v, &format!("rates[{i}]"))
                .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        );
    }
    let after = Value::Array(body.rates.clone());
    app.mutate.publish_rates(rates).await?;
    let event = AuditEvent {
        actor: actor(&p),
        action: "fx.publish".into(),
        target: "fx".into(),
        before: Value::Null,
        after,
    };
    app.audit.commit(Vec::new(), event).await?;
    Ok(Json(json!({"published": body.rates.len()})))
}

// ------------------------------------------------------------------------------------------
// Audit trail

async fn list_audit(State(app): AppState, p: Principal, Query(q): Params) -> ApiResult<Json<Value>> {
    p.require_audit_read()?;
    let after = u64_param(&q, "cursor")?;
    let limit = limit_param(&q)?;
    let control = Arc::clone(&app.control);
    let records = blocking(move || {
        audit::read(control.as_ref(), after, limit).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    let next = (records.len() == limit).then(|| records.last().map(|r| r.seq.to_string())).flatten();
    Ok(Json(json!({"events": records, "next_cursor": next})))
}

async fn export_audit(State(app): AppState, p: Principal) -> ApiResult<Response> {
    p.require_audit_read()?;
    let control = Arc::clone(&app.control);
    let text = blocking(move || {
        let mut out = String::new();
        let mut after = None;
        let mut n = 0usize;
        loop {
            let page = audit::read(control.as_ref(), after, audit::MAX_AUDIT_PAGE)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            for r in &page {
                out.push_str(&serde_json::to_string(r).map_err(|e| ApiError::Internal(e.to_string()))?);
                out.push('\n');
                n += 1;
            }
            if n >= MAX_AUDIT_EXPORT {
                break;
            }
        }
        Ok(out)
    })
    .await?;
    Ok(download(text.into_bytes(), "application/x-ndjson", "settle-audit.ndjson"))
}

async fn verify_audit(State(app): AppState, p: Principal) -> ApiResult<Json<Value>> {
    p.require_audit_read()?;
    let control = Arc::clone(&app.control);
    let result = blocking(move || Ok(audit::verify(control.as_ref()))).await?;
    Ok(Json(match result {
        Ok(v) => json!({"ok": true, "records": v.records, "head": v.head}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }))
}

// ------------------------------------------------------------------------------------------
// Dashboard figures and metrics

async fn overview(State(app): AppState, p: Principal) -> ApiResult<Json<Value>> {
    p.require_read_all()?;
    let c = app.read.counters();
    let nodes: Vec<Value> = app
        .read
        .nodes()
        .iter()
        .map(|n| json!({"id": n.id, "role": n.role, "up": n.up, "detail": n.detail}))
        .collect();
    let partners = app.read.partners().await?.len();
    let cluster = app.read.cluster().await?;
    let nodes = match &cluster {
        Some(view) => view
            .nodes
            .iter()
            .map(|n| json!({"id": n.id, "role": n.role, "up": n.up, "detail": n.detail}))
            .collect(),
        None => nodes,
    };
    Ok(Json(json!({
        "counters": {"commits": c.commits, "transactions": c.transactions, "in_flight": c.in_flight},
        "partners": partners,
        "cluster": cluster.as_ref().map(views::cluster),
        "samples": app.metrics.recent_samples(),
        "top_partners": app.metrics.top_partners(crate::metrics::TOP_PARTNERS)
            .into_iter().map(|(p, n)| json!({"partner": p, "transactions": n})).collect::<Vec<_>>(),
        "nodes": nodes,
        "alerts": app.alerts.active_json(),
    })))
}

/// Readiness for orchestrators (anonymous, like `/healthz`): 200 when this node is caught up and
/// serving, 503 with the reasons otherwise.
async fn readyz(State(app): AppState) -> Response {
    match app.read.readiness() {
        Ok(()) => Json(json!({"ready": true})).into_response(),
        Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reasons": reasons})))
            .into_response(),
    }
}

async fn metrics(State(app): AppState, p: Principal) -> ApiResult<Response> {
    p.require_read_all()?;
    let text = app.metrics.render(app.read.as_ref());
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    Ok(response)
}
