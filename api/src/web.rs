//! The operator dashboard and the partner portal: static pages embedded in the binary (no CDN,
//! a strict content security policy) that read the same `/v1` API with the session cookie, and
//! the server-sent event stream that keeps them live.

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::rest::AppState;
use crate::{views, App};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::Stream;
use std::convert::Infallible;
use std::sync::Arc;

const LOGIN_HTML: &str = include_str!("../assets/login.html");
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const PORTAL_HTML: &str = include_str!("../assets/portal.html");
const APP_CSS: &str = include_str!("../assets/app.css");
const COMMON_JS: &str = include_str!("../assets/common.js");
const LOGIN_JS: &str = include_str!("../assets/login.js");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const PORTAL_JS: &str = include_str!("../assets/portal.js");
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn pages() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/login") }))
        .route("/login", get(|| async { asset(LOGIN_HTML, "text/html; charset=utf-8") }))
        .route("/dashboard", get(|| async { asset(DASHBOARD_HTML, "text/html; charset=utf-8") }))
        .route("/portal", get(|| async { asset(PORTAL_HTML, "text/html; charset=utf-8") }))
        .route("/assets/app.css", get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }))
        .route("/assets/common.js", get(|| async { asset(COMMON_JS, "text/javascript; charset=utf-8") }))
        .route("/assets/login.js", get(|| async { asset(LOGIN_JS, "text/javascript; charset=utf-8") }))
        .route(
            "/assets/dashboard.js",
            get(|| async { asset(DASHBOARD_JS, "text/javascript; charset=utf-8") }),
        )
        .route("/assets/portal.js", get(|| async { asset(PORTAL_JS, "text/javascript; charset=utf-8") }))
}

/// One event a second: the latest sample (and active alerts) for operators, the own balance
/// for a partner.
pub(crate) async fn live(
    axum::extract::State(app): AppState,
    p: Principal,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    if p.role == Role::Ingest {
        return Err(ApiError::Forbidden("role ingest can only submit transactions".into()));
    }
    let scope = p.scope()?;
    let mut interval = tokio::time::interval(crate::SAMPLE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stream =
        futures_util::stream::unfold((app, scope, interval), |(app, scope, mut interval)| async move {
            let mut stopping = app.stopping.clone();
            tokio::select! {
                _ = interval.tick() => {}
                _ = stopping.wait_for(|s| *s) => return None,
            }
            let event = match &scope {
                None => {
                    let sample = app.metrics.recent_samples().pop().unwrap_or_default();
                    let body = serde_json::json!({"sample": sample, "alerts": app.alerts.active_json()});
                    Event::default().event("sample").data(body.to_string())
                }
                Some(partner) => match app.read.balance(partner).await {
                    Ok(Some(b)) => Event::default().event("balance").data(views::balance(&b).to_string()),
                    Ok(None) => Event::default().event("balance").data("null"),
                    Err(e) => Event::default().event("error").data(e.to_string()),
                },
            };
            Some((Ok(event), (app, scope, interval)))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
