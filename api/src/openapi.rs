//! The OpenAPI 3.1 document of `/v1`, built with utoipa from one table of the routes (method,
//! path, summary, the roles allowed), so the document and the router are reviewed side by side.

use crate::rest::AppState;
use axum::Json;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, Required, ResponseBuilder,
};

/// (method, path, tag, summary, roles).
const ROUTES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "post",
        "/v1/auth/login",
        "auth",
        "Log in with username, password and TOTP; sets the session cookie, returns the CSRF token",
        "anyone",
    ),
    ("post", "/v1/auth/logout", "auth", "End the session", "any session"),
    ("get", "/v1/me", "auth", "The caller: subject, role, partner, CSRF token", "any"),
    ("get", "/v1/users", "users", "List users", "admin, operator, auditor"),
    ("post", "/v1/users", "users", "Create a user; the password and TOTP secret are shown once", "admin"),
    ("delete", "/v1/users/{name}", "users", "Disable a user", "admin"),
    ("get", "/v1/api-keys", "users", "List API keys (never the keys themselves)", "admin, operator, auditor"),
    ("post", "/v1/api-keys", "users", "Create an API key; the key is shown once", "admin"),
    ("delete", "/v1/api-keys/{id}", "users", "Revoke an API key", "admin"),
    (
        "get",
        "/v1/partners",
        "partners",
        "List partners (a partner sees only itself)",
        "admin, operator, auditor, partner",
    ),
    ("post", "/v1/partners", "partners", "Register a partner (spec partner JSON)", "admin, operator"),
    (
        "get",
        "/v1/partners/{id}",
        "partners",
        "One partner with its contract versions",
        "admin, operator, auditor, partner (own)",
    ),
    (
        "get",
        "/v1/partners/{id}/contracts",
        "partners",
        "Contract versions",
        "admin, operator, auditor, partner (own)",
    ),
    (
        "post",
        "/v1/partners/{id}/contracts",
        "partners",
        "Add a contract version (refused in a closed period)",
        "admin, operator",
    ),
    (
        "get",
        "/v1/partners/{id}/balance",
        "partners",
        "Balance and open-period preview",
        "admin, operator, auditor, partner (own)",
    ),
    (
        "get",
        "/v1/partners/{id}/statements",
        "statements",
        "Statement history (format=csv for CSV)",
        "admin, operator, auditor, partner (own)",
    ),
    (
        "get",
        "/v1/partners/{id}/statements/{start}",
        "statements",
        "One statement (format=json|csv|pdf)",
        "admin, operator, auditor, partner (own)",
    ),
    (
        "get",
        "/v1/partners/{id}/overview",
        "partners",
        "Drill-down: balance, recent transactions, statements, exceptions",
        "admin, operator, auditor, partner (own)",
    ),
    (
        "get",
        "/v1/transactions",
        "transactions",
        "Transactions newest first; filters partner, kind, status, reason, period, from, to; cursor, limit",
        "admin, operator, auditor, partner (own)",
    ),
    (
        "post",
        "/v1/transactions",
        "transactions",
        "Submit transactions (answered when durable)",
        "admin, operator, ingest",
    ),
    (
        "get",
        "/v1/transactions/{id}",
        "transactions",
        "One transaction by id with its outcome",
        "admin, operator, auditor, partner (own)",
    ),
    (
        "get",
        "/v1/exceptions",
        "exceptions",
        "Exception queue oldest first; filters partner, reason, status; cursor, limit",
        "admin, operator, auditor, partner (own)",
    ),
    ("get", "/v1/exceptions/{seq}", "exceptions", "One exception", "admin, operator, auditor, partner (own)"),
    (
        "post",
        "/v1/exceptions/{seq}/resolve",
        "exceptions",
        "Resolve: retry with corrections, or reject with a reason",
        "admin, operator",
    ),
    ("post", "/v1/fx/rates", "fx", "Publish FX rates (override)", "admin, operator"),
    ("get", "/v1/audit", "audit", "Audit events after a cursor", "admin, operator, auditor"),
    ("get", "/v1/audit/export", "audit", "The whole audit trail as NDJSON", "admin, operator, auditor"),
    ("get", "/v1/audit/verify", "audit", "Verify the audit hash chain", "admin, operator, auditor"),
    (
        "get",
        "/v1/overview",
        "dashboard",
        "Dashboard figures: counters, live samples, top partners, nodes, alerts",
        "admin, operator, auditor",
    ),
    (
        "get",
        "/v1/live",
        "dashboard",
        "Server-sent events: a sample a second (a partner gets its balance)",
        "any but ingest",
    ),
    ("get", "/v1/alerts", "alerts", "Alert states and recent notifications", "admin, operator, auditor"),
    ("get", "/v1/alerts/rules", "alerts", "Alert rules (webhook secrets hidden)", "admin, operator, auditor"),
    ("post", "/v1/alerts/rules", "alerts", "Create a threshold or anomaly rule", "admin, operator"),
    ("delete", "/v1/alerts/rules/{id}", "alerts", "Delete a rule", "admin, operator"),
    (
        "get",
        "/v1/statement-hooks",
        "statements",
        "Statement webhooks (secrets hidden)",
        "admin, operator, auditor",
    ),
    ("post", "/v1/statement-hooks", "statements", "Announce closed statements to a signed webhook", "admin"),
    ("delete", "/v1/statement-hooks/{id}", "statements", "Delete a statement webhook", "admin"),
    (
        "post",
        "/v1/archive/prune",
        "statements",
        "Remove archived periods' transactions from the hot history",
        "admin",
    ),
    ("get", "/v1/mappings", "imports", "Stored import mappings (TOML)", "admin, operator, auditor"),
    (
        "put",
        "/v1/mappings/{name}",
        "imports",
        "Store or replace an import mapping (TOML body)",
        "admin, operator",
    ),
    (
        "post",
        "/v1/imports",
        "imports",
        "Upload a partner file (?mapping=NAME&file=NAME), streamed and submitted in batches",
        "admin, operator, ingest",
    ),
    ("post", "/v1/alerts/{id}/ack", "alerts", "Acknowledge a firing alert", "admin, operator"),
    (
        "post",
        "/v1/alerts/{id}/silence",
        "alerts",
        "Silence notifications of a rule for some minutes",
        "admin, operator",
    ),
    (
        "get",
        "/v1/alerts/dead-letters",
        "alerts",
        "Notifications that could not be delivered",
        "admin, operator, auditor",
    ),
];

fn method(m: &str) -> HttpMethod {
    match m {
        "post" => HttpMethod::Post,
        "delete" => HttpMethod::Delete,
        "put" => HttpMethod::Put,
        _ => HttpMethod::Get,
    }
}

/// The document as JSON text.
pub fn document_json() -> serde_json::Value {
    let mut paths = PathsBuilder::new();
    for (m, path, tag, summary, roles) in ROUTES {
        let mut op = OperationBuilder::new()
            .tag(*tag)
            .summary(Some(*summary))
            .description(Some(format!("Roles: {roles}.")))
            .response("200", ResponseBuilder::new().description("Success (JSON unless a download)"))
            .response("4XX", ResponseBuilder::new().description("Error: {\"error\":{\"code\",\"message\"}}"));
        for seg in path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
            op = op.parameter(
                ParameterBuilder::new().name(seg).parameter_in(ParameterIn::Path).required(Required::True),
            );
        }
        paths = paths.path(*path, PathItem::new(method(m), op.build()));
    }
    let components = ComponentsBuilder::new()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::auth::SESSION_COOKIE))),
        )
        .build();
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Settle API")
                .version("1")
                .description(Some("Money is a decimal string with the currency's exact decimals. See docs/api.md for versioning rules."))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build();
    serde_json::to_value(&doc).unwrap_or(serde_json::Value::Null)
}

pub(crate) async fn document(_: AppState) -> Json<serde_json::Value> {
    Json(document_json())
}
