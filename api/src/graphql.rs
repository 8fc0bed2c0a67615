//! `/graphql`: the same read model as REST, with the same authorisation (a partner principal
//! sees only its own partner, whatever the query asks). Read-only: changes go through REST,
//! where each one is audited.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::model::{ExceptionQuery, MAX_PAGE};
use crate::rest::{parse_body, tx_query, AppState};
use crate::{views, App};
use async_graphql::{
    Context, EmptyMutation, EmptySubscription, ErrorExtensions, Json as GJson, Object, Schema, SimpleObject,
};
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Deepest query accepted, and most fields resolved in one query.
const MAX_DEPTH: usize = 8;
const MAX_COMPLEXITY: usize = 2_000;

type ApiSchema = Schema<Query, EmptyMutation, EmptySubscription>;

#[derive(SimpleObject)]
struct Partner {
    id: String,
    settlement_currency: String,
    since: String,
    /// The partner as the REST API renders it (cycle and contract versions).
    detail: GJson<Value>,
}

#[derive(SimpleObject)]
struct Balance {
    partner: String,
    currency: String,
    /// Decimal string.
    payable: String,
    open_period_start: String,
    open_period_end: String,
    preview: GJson<Value>,
}

#[derive(SimpleObject)]
struct StatementObj {
    partner: String,
    period_start: String,
    period_end: String,
    currency: String,
    closing: String,
    detail: GJson<Value>,
}

#[derive(SimpleObject)]
struct Transaction {
    seq: Option<String>,
    id: String,
    partner: Option<String>,
    kind: String,
    amount: Option<String>,
    currency: Option<String>,
    received_at: String,
    status: String,
    reason: Option<String>,
    detail: GJson<Value>,
}

#[derive(SimpleObject)]
struct TransactionPage {
    items: Vec<Transaction>,
    next_cursor: Option<String>,
}

#[derive(SimpleObject)]
struct ExceptionObj {
    seq: String,
    id: String,
    reason: String,
    partner: Option<String>,
}

#[derive(SimpleObject)]
struct AuditEventObj {
    seq: String,
    at: String,
    actor: String,
    action: String,
    target: String,
    before: GJson<Value>,
    after: GJson<Value>,
    hash: String,
}

fn gql(e: ApiError) -> async_graphql::Error {
    async_graphql::Error::new(e.to_string()).extend_with(|_, ext| ext.set("code", e.code()))
}

fn parts<'a>(ctx: &Context<'a>) -> async_graphql::Result<(&'a Arc<App>, &'a Principal)> {
    Ok((ctx.data::<Arc<App>>()?, ctx.data::<Principal>()?))
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn transaction(r: &crate::model::TxRecord) -> Transaction {
    let v = views::tx_record(r);
    Transaction {
        seq: r.seq.map(|s| s.to_string()),
        id: r.tx.id.as_str().to_string(),
        partner: r.tx.partner.clone(),
        kind: r.tx.kind.as_str().to_string(),
        amount: str_field(&v, "amount"),
        currency: r.tx.currency.clone(),
        received_at: r.tx.received_at.to_rfc3339(),
        status: if r.outcome.is_applied() { "applied".into() } else { "exception".into() },
        reason: r.outcome.exception().map(|e| e.as_str().to_string()),
        detail: GJson(v),
    }
}

struct Query;

#[Object]
impl Query {
    /// The caller's role and partner.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<GJson<Value>> {
        let (_, p) = parts(ctx)?;
        Ok(GJson(serde_json::json!({"subject": p.subject, "role": p.role.as_str(), "partner": p.partner})))
    }

    async fn partners(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Partner>> {
        let (app, p) = parts(ctx)?;
        let scope = p.scope().map_err(gql)?;
        let all = app.read.partners().await.map_err(|e| gql(e.into()))?;
        Ok(all
            .iter()
            .filter(|x| scope.as_deref().is_none_or(|s| s == x.id))
            .map(|x| Partner {
                id: x.id.clone(),
                settlement_currency: x.currency.code().to_string(),
                since: x.since.to_rfc3339(),
                detail: GJson(views::partner(x)),
            })
            .collect())
    }

    async fn balance(&self, ctx: &Context<'_>, partner: String) -> async_graphql::Result<Option<Balance>> {
        let (app, p) = parts(ctx)?;
        p.require_partner(&partner).map_err(gql)?;
        let b = app.read.balance(&partner).await.map_err(|e| gql(e.into()))?;
        Ok(b.map(|b| Balance {
            partner: b.partner.clone(),
            currency: b.currency.code().to_string(),
            payable: views::money(b.payable, b.currency),
            open_period_start: b.open_period.start.to_rfc3339(),
            open_period_end: b.open_period.end.to_rfc3339(),
            preview: GJson(views::statement(&b.preview)),
        }))
    }

    async fn statements(
        &self,
        ctx: &Context<'_>,
        partner: String,
    ) -> async_graphql::Result<Vec<StatementObj>> {
        let (app, p) = parts(ctx)?;
        p.require_partner(&partner).map_err(gql)?;
        let list = app.read.statements(&partner).await.map_err(|e| gql(e.into()))?;
        Ok(list
            .iter()
            .map(|s| StatementObj {
                partner: s.partner.clone(),
                period_start: s.period.start.to_rfc3339(),
                period_end: s.period.end.to_rfc3339(),
                currency: s.currency.code().to_string(),
                closing: views::money(s.closing, s.currency),
                detail: GJson(views::statement(s)),
            })
            .collect())
    }

    /// Newest first. Filters as in REST (`partner`, `kind`, `status`, `reason`, `period`,
    /// `from`, `to`); `cursor` continues a page.
    #[allow(clippy::too_many_arguments)]
    async fn transactions(
        &self,
        ctx: &Context<'_>,
        partner: Option<String>,
        kind: Option<String>,
        status: Option<String>,
        reason: Option<String>,
        period: Option<String>,
        cursor: Option<String>,
        limit: Option<i32>,
    ) -> async_graphql::Result<TransactionPage> {
        let (app, p) = parts(ctx)?;
        let mut q = HashMap::new();
        for (k, v) in [
            ("partner", partner),
            ("kind", kind),
            ("status", status),
            ("reason", reason),
            ("period", period),
            ("cursor", cursor),
        ] {
            if let Some(v) = v {
                q.insert(k.to_string(), v);
            }
        }
        let limit = usize::try_from(limit.unwrap_or(50)).unwrap_or(50).clamp(1, MAX_PAGE);
        q.insert("limit".into(), limit.to_string());
        let query = tx_query(p, &q).map_err(gql)?;
        let page = app.read.transactions(query).await.map_err(|e| gql(e.into()))?;
        Ok(TransactionPage { items: page.items.iter().map(transaction).collect(), next_cursor: page.next })
    }

    async fn transaction(&self, ctx: &Context<'_>, id: String) -> async_graphql::Result<Option<Transaction>> {
        let (app, p) = parts(ctx)?;
        let scope = p.scope().map_err(gql)?;
        let record = app.read.transaction(&id).await.map_err(|e| gql(e.into()))?;
        Ok(record
            .filter(|r| scope.as_deref().is_none_or(|s| r.tx.partner.as_deref() == Some(s)))
            .as_ref()
            .map(transaction))
    }

    async fn exceptions(
        &self,
        ctx: &Context<'_>,
        partner: Option<String>,
        cursor: Option<String>,
        limit: Option<i32>,
    ) -> async_graphql::Result<Vec<ExceptionObj>> {
        let (app, p) = parts(ctx)?;
        let partner = p.partner_filter(partner.as_deref()).map_err(gql)?;
        let limit = usize::try_from(limit.unwrap_or(50)).unwrap_or(50).clamp(1, MAX_PAGE);
        let page = app
            .read
            .exceptions(ExceptionQuery { partner, reason: None, after: cursor, limit })
            .await
            .map_err(|e| gql(e.into()))?;
        Ok(page
            .items
            .iter()
            .map(|e| ExceptionObj {
                seq: e.seq.to_string(),
                id: e.id.clone(),
                reason: e.reason.as_str().to_string(),
                partner: e.tx.as_ref().and_then(|t| t.partner.clone()),
            })
            .collect())
    }

    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        cursor: Option<String>,
        limit: Option<i32>,
    ) -> async_graphql::Result<Vec<AuditEventObj>> {
        let (app, p) = parts(ctx)?;
        p.require_audit_read().map_err(gql)?;
        let after = cursor
            .map(|c| c.parse::<u64>())
            .transpose()
            .map_err(|_| gql(ApiError::BadRequest("cursor".into())))?;
        let limit = usize::try_from(limit.unwrap_or(50)).unwrap_or(50).clamp(1, MAX_PAGE);
        let records = crate::audit::read(app.control.as_ref(), after, limit)
            .map_err(|e| gql(ApiError::Internal(e.to_string())))?;
        Ok(records
            .into_iter()
            .map(|r| AuditEventObj {
                seq: r.seq.to_string(),
                at: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                before: GJson(r.before),
                after: GJson(r.after),
                hash: r.hash,
            })
            .collect())
    }
}

fn schema() -> &'static ApiSchema {
    static SCHEMA: std::sync::OnceLock<ApiSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::build(Query, EmptyMutation, EmptySubscription)
            .limit_depth(MAX_DEPTH)
            .limit_complexity(MAX_COMPLEXITY)
            .finish()
    })
}

pub(crate) async fn execute(
    axum::extract::State(app): AppState,
    p: Principal,
    body: Bytes,
) -> ApiResult<Response> {
    if p.role == crate::auth::Role::Ingest {
        return Err(ApiError::Forbidden("role ingest can only submit transactions".into()));
    }
    let request: async_graphql::Request = parse_body(&body)?;
    let response = schema().execute(request.data(Arc::clone(&app)).data(p)).await;
    Ok(Json(serde_json::to_value(&response).unwrap_or(Value::Null)).into_response())
}

pub(crate) async fn playground_refused() -> ApiError {
    ApiError::BadRequest("POST a GraphQL request as JSON: {\"query\": \"...\"}".into())
}

/// The schema in SDL, for docs and clients.
pub fn sdl() -> String {
    schema().sdl()
}
