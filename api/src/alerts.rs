//! Alert rules (threshold and anomaly), their evaluation on every live sample, and delivery of
//! firing and resolved notifications by signed webhook and by email. A rule fires once per
//! crossing and resolves once; acknowledgement and silencing are recorded in the audit trail.
//! Deliveries that fail after their retries land in a persisted dead-letter list.

use crate::audit::AuditEvent;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Sample;
use crate::model::{ControlOp, ControlStore, Space};
use crate::rest::{actor, parse_body, AppState};
use crate::App;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Delivery attempts per notification before it goes to the dead-letter list.
pub const DELIVERY_ATTEMPTS: u32 = 3;
/// First retry delay; doubles each retry.
pub const RETRY_BASE: Duration = Duration::from_millis(200);
/// Timeout of one delivery attempt.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Samples of history kept for windows and baselines.
const HISTORY: usize = crate::metrics::SAMPLES_KEPT;
/// Most rules.
pub const MAX_RULES: usize = 200;
/// Notifications kept in the recent list.
const RECENT: usize = 100;
/// Header carrying the webhook signature: `sha256=HEX(HMAC-SHA256(secret, body))`.
pub const SIGNATURE_HEADER: &str = "x-settle-signature";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `http://host:port/path`.
    pub url: String,
    pub secret: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// `host:port` of an SMTP relay (no authentication, as a local relay).
    pub smtp: String,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Condition {
    /// `value COMPARATOR threshold`, value averaged over `window_s` seconds.
    Threshold { comparator: String, threshold: i64, window_s: u64 },
    /// The value is more than `factor` times (or less than 1/`factor` of) its own trailing
    /// mean over `baseline_s` seconds, ignoring baselines under `min_baseline`.
    Anomaly { factor: i64, baseline_s: u64, min_baseline: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub name: String,
    /// A live figure (`ingest_per_s`, `applied_per_s`, `ack_p50_us`, `ack_p99_us`, `in_flight`,
    /// `exceptions_per_s`, `exceptions_per_s:REASON`, `duplicates_per_s`), a partner figure
    /// (`partner_payable:P` in minor units, `partner_tx_per_s:P`, `partner_amount_per_s:P` gross
    /// sales in minor units per second) or an FX figure (`fx_age_s:BASE/QUOTE`, seconds since the
    /// newest rate of the pair; `fx_age_s`, the oldest of those).
    pub metric: String,
    pub condition: Condition,
    /// Seconds the condition must hold before the alert fires.
    #[serde(default)]
    pub for_s: u64,
    pub severity: String,
    pub webhook: Option<Webhook>,
    pub email: Option<Email>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AlertState {
    pub rule: String,
    pub name: String,
    pub severity: String,
    pub firing: bool,
    pub value: i128,
    /// Unix ms the condition began holding (pending or firing).
    pub since_ms: Option<u64>,
    pub acked_by: Option<String>,
    pub silenced_until_ms: u64,
    pub fired_count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    rules: BTreeMap<String, Rule>,
    states: BTreeMap<String, AlertState>,
    history: VecDeque<Sample>,
    /// Series of the figures read for rules (partner and FX figures), by metric name, one value
    /// per sample, as long as `history`.
    derived: BTreeMap<String, VecDeque<i128>>,
    /// The last reading of each watched partner, from which its rates are derived.
    partner_last: BTreeMap<String, PartnerReading>,
    recent: VecDeque<Value>,
}

/// A partner's balance and open-period figures, as read for one sample.
#[derive(Clone, Copy, Debug)]
struct PartnerFigures {
    payable: i128,
    period_start: settle_core::Instant,
    transactions: u64,
    gross_sales: i128,
}

#[derive(Clone, Copy, Debug)]
struct PartnerReading {
    at_ms: u64,
    figures: PartnerFigures,
}

/// Prefixes of the metrics that name a partner (`PREFIX` + partner id).
const PARTNER_METRICS: [&str; 3] = ["partner_payable:", "partner_tx_per_s:", "partner_amount_per_s:"];
const FX_AGE: &str = "fx_age_s";

/// `fx_age_s` or `fx_age_s:PAIR`.
fn is_fx_age(metric: &str) -> bool {
    metric == FX_AGE || metric.starts_with("fx_age_s:")
}

fn watched_partner(metric: &str) -> Option<&str> {
    PARTNER_METRICS.iter().find_map(|prefix| metric.strip_prefix(prefix)).filter(|p| !p.is_empty())
}

/// Seconds since the newest rate of `pair` (`BASE/QUOTE`), or since the oldest of the newest
/// rates when `pair` is `None`.
fn fx_age_s(rates: &[settle_core::FxRate], pair: Option<&str>, now_ms: u64) -> Option<i128> {
    let now_s = i128::from(now_ms / 1000);
    rates
        .iter()
        .filter(|r| pair.is_none_or(|p| p == format!("{}/{}", r.base.code(), r.quote.code())))
        .map(|r| now_s.saturating_sub(r.at.unix_seconds()).max(0))
        .max()
}

pub struct Alerts {
    control: Arc<dyn ControlStore>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").finish_non_exhaustive()
    }
}

fn metric_value(metric: &str, s: &Sample) -> Option<i128> {
    let v = match metric {
        "ingest_per_s" => s.ingest_per_s,
        "applied_per_s" => s.applied_per_s,
        "ack_p50_us" => s.ack_p50_us,
        "ack_p99_us" => s.ack_p99_us,
        "in_flight" => s.in_flight,
        "exceptions_per_s" => s.exceptions.values().sum(),
        "duplicates_per_s" => s.duplicates_per_s,
        other => match other.strip_prefix("exceptions_per_s:") {
            Some(reason) => s.exceptions.get(reason).copied().unwrap_or(0),
            None => return None,
        },
    };
    Some(i128::from(v))
}

fn valid_metric(m: &str) -> bool {
    matches!(
        m,
        "ingest_per_s"
            | "applied_per_s"
            | "ack_p50_us"
            | "ack_p99_us"
            | "in_flight"
            | "exceptions_per_s"
            | "duplicates_per_s"
            | FX_AGE
    ) || m.strip_prefix("exceptions_per_s:").is_some_and(|r| settle_core::ExceptionReason::parse(r).is_some())
        || watched_partner(m).is_some()
        || m.strip_prefix("fx_age_s:").is_some_and(valid_pair)
}

fn valid_pair(pair: &str) -> bool {
    pair.split_once('/').is_some_and(|(base, quote)| {
        settle_core::Currency::from_code(base).is_some() && settle_core::Currency::from_code(quote).is_some()
    })
}

fn compare(value: i128, comparator: &str, threshold: i128) -> bool {
    match comparator {
        ">" => value > threshold,
        ">=" => value >= threshold,
        "<" => value < threshold,
        "<=" => value <= threshold,
        _ => false,
    }
}

fn mean(values: &[i128]) -> i128 {
    let n = i128::try_from(values.len()).unwrap_or(i128::MAX).max(1);
    values.iter().fold(0i128, |a, v| a.saturating_add(*v)) / n
}

impl Alerts {
    pub fn load(control: Arc<dyn ControlStore>) -> Result<Alerts, crate::audit::ChainError> {
        let mut inner = Inner::default();
        for (_, bytes) in control.scan(Space::AlertRules)? {
            if let Ok(rule) = serde_json::from_slice::<Rule>(&bytes) {
                inner.rules.insert(rule.id.clone(), rule);
            }
        }
        Ok(Alerts { control, inner: Mutex::new(inner) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn active_json(&self) -> Value {
        let inner = self.lock();
        Value::Array(inner.states.values().filter(|s| s.firing).map(|s| json!(s)).collect())
    }

    /// Takes the rules from the control store (where several members share it, a rule made
    /// on one is evaluated on all within a second); states of removed rules are dropped.
    fn sync_rules(&self) {
        let stored = match self.control.scan(Space::AlertRules) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("cannot read the alert rules: {e}");
                return;
            }
        };
        let rules: BTreeMap<String, Rule> = stored
            .iter()
            .filter_map(|(_, bytes)| serde_json::from_slice::<Rule>(bytes).ok())
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut inner = self.lock();
        inner.states.retain(|id, _| rules.contains_key(id));
        inner.rules = rules;
    }

    /// Evaluates every rule on a new sample; sends notifications for crossings.
    pub(crate) async fn evaluate(&self, app: &App, sample: &Sample) {
        self.sync_rules();
        let rules: Vec<Rule> = {
            let mut inner = self.lock();
            if inner.history.len() == HISTORY {
                inner.history.pop_front();
            }
            inner.history.push_back(sample.clone());
            inner.rules.values().cloned().collect()
        };
        let derived = derived_figures(app, &rules, sample.at_ms).await;
        let mut notify = Vec::new();
        let firing_count;
        {
            let mut inner = self.lock();
            inner.record_derived(derived, sample.at_ms);
            for rule in &rules {
                let series: Vec<i128> = match inner.derived.get(&rule.metric) {
                    Some(values) => values.iter().copied().collect(),
                    None => inner.history.iter().filter_map(|s| metric_value(&rule.metric, s)).collect(),
                };
                let Some(&current) = series.last() else { continue };
                let holds = match &rule.condition {
                    Condition::Threshold { comparator, threshold, window_s } => {
                        let w = usize::try_from(*window_s).unwrap_or(1).clamp(1, series.len());
                        compare(mean(&series[series.len() - w..]), comparator, i128::from(*threshold))
                    }
                    Condition::Anomaly { factor, baseline_s, min_baseline } => {
                        let n = usize::try_from(*baseline_s).unwrap_or(60).clamp(1, HISTORY);
                        let past = &series[..series.len() - 1];
                        if past.len() < n.min(10) {
                            false
                        } else {
                            let base = mean(&past[past.len().saturating_sub(n)..]);
                            let factor = i128::from(*factor);
                            base >= i128::from(*min_baseline)
                                && (current > base.saturating_mul(factor)
                                    || current.saturating_mul(factor) < base)
                        }
                    }
                };
                let state = inner.states.entry(rule.id.clone()).or_insert_with(|| AlertState {
                    rule: rule.id.clone(),
                    name: rule.name.clone(),
                    severity: rule.severity.clone(),
                    ..AlertState::default()
                });
                state.value = current;
                let now = sample.at_ms;
                if holds {
                    let since = *state.since_ms.get_or_insert(now);
                    let held_ms = now.saturating_sub(since);
                    if !state.firing && held_ms >= rule.for_s.saturating_mul(1000) {
                        state.firing = true;
                        state.acked_by = None;
                        state.fired_count = state.fired_count.saturating_add(1);
                        if state.silenced_until_ms <= now {
                            notify.push((rule.clone(), "firing", current));
                        }
                    }
                } else {
                    state.since_ms = None;
                    if state.firing {
                        state.firing = false;
                        if state.silenced_until_ms <= now {
                            notify.push((rule.clone(), "resolved", current));
                        }
                    }
                }
            }
            firing_count = inner.states.values().filter(|s| s.firing).count();
            for (rule, status, value) in &notify {
                if inner.recent.len() == RECENT {
                    inner.recent.pop_front();
                }
                inner.recent.push_back(json!({"rule": rule.id, "name": rule.name, "status": status, "value": value.to_string(), "at_ms": sample.at_ms}));
            }
        }
        app.metrics.set_alerts_firing(firing_count);
        for (rule, status, value) in notify {
            let payload = json!({
                "rule": rule.id, "name": rule.name, "severity": rule.severity, "metric": rule.metric,
                "status": status, "value": value.to_string(), "at_ms": sample.at_ms,
            });
            let control = Arc::clone(&self.control);
            tokio::spawn(deliver(control, rule, payload));
        }
    }
}

/// What the rules need beyond the live sample, read outside the lock: each watched partner's
/// balance and open period, and the FX table's newest rates. A failed read leaves a gap.
struct DerivedFigures {
    /// Every metric name of the rules that is not a live figure.
    metrics: BTreeSet<String>,
    partners: BTreeMap<String, PartnerFigures>,
    fx_ages: BTreeMap<String, i128>,
}

async fn derived_figures(app: &App, rules: &[Rule], now_ms: u64) -> DerivedFigures {
    let metrics: BTreeSet<String> = rules
        .iter()
        .map(|r| r.metric.clone())
        .filter(|m| watched_partner(m).is_some() || is_fx_age(m))
        .collect();
    let mut partners = BTreeMap::new();
    for p in metrics.iter().filter_map(|m| watched_partner(m)) {
        if partners.contains_key(p) {
            continue;
        }
        if let Ok(Some(b)) = app.read.balance(p).await {
            let reading = PartnerFigures {
                payable: b.payable.0,
                period_start: b.open_period.start,
                transactions: b.preview.transaction_count,
                gross_sales: b.preview.gross_sales.0,
            };
            partners.insert(p.to_string(), reading);
        }
    }
    let mut fx_ages = BTreeMap::new();
    if metrics.iter().any(|m| is_fx_age(m)) {
        if let Ok(rates) = app.read.newest_rates().await {
            for m in metrics.iter().filter(|m| is_fx_age(m)) {
                if let Some(age) = fx_age_s(&rates, m.strip_prefix("fx_age_s:"), now_ms) {
                    fx_ages.insert(m.clone(), age);
                }
            }
        }
    }
    DerivedFigures { metrics, partners, fx_ages }
}

impl Inner {
    /// Appends this sample's partner and FX figures to their series; rates come from the
    /// difference to the partner's previous reading (a new period counts from zero).
    fn record_derived(&mut self, figures: DerivedFigures, now_ms: u64) {
        let DerivedFigures { metrics, partners, fx_ages } = figures;
        self.derived.retain(|m, _| metrics.contains(m));
        let mut values: BTreeMap<String, i128> = fx_ages;
        for (p, now) in &partners {
            values.insert(format!("partner_payable:{p}"), now.payable);
            let reading = PartnerReading { at_ms: now_ms, figures: *now };
            if let Some(before) = self.partner_last.insert(p.clone(), reading) {
                let (tx, gross) = if before.figures.period_start == now.period_start {
                    (
                        now.transactions.saturating_sub(before.figures.transactions),
                        now.gross_sales.saturating_sub(before.figures.gross_sales).max(0),
                    )
                } else {
                    (now.transactions, now.gross_sales.max(0))
                };
                let elapsed_ms = i128::from(now_ms.saturating_sub(before.at_ms).max(1));
                // Rounded to the nearest, as the live rates are.
                let per_s = |v: i128| v.saturating_mul(1000).saturating_add(elapsed_ms / 2) / elapsed_ms;
                values.insert(format!("partner_tx_per_s:{p}"), per_s(i128::from(tx)));
                values.insert(format!("partner_amount_per_s:{p}"), per_s(gross));
            }
        }
        self.partner_last.retain(|p, _| metrics.iter().any(|m| watched_partner(m) == Some(p.as_str())));
        for m in metrics {
            let Some(v) = values.get(&m) else { continue };
            let series = self.derived.entry(m).or_default();
            if series.len() == HISTORY {
                series.pop_front();
            }
            series.push_back(*v);
        }
    }
}

/// Delivers one notification to every channel of its rule, with retries; failures go to the
/// dead-letter list.
async fn deliver(control: Arc<dyn ControlStore>, rule: Rule, payload: Value) {
    let body = payload.to_string();
    if let Some(hook) = &rule.webhook {
        let result = with_retries(|| post_webhook(hook, &body)).await;
        if let Err(e) = result {
            dead_letter(&control, &rule, "webhook", &hook.url, &payload, &e).await;
        }
    }
    if let Some(mail) = &rule.email {
        let subject = format!("[settle] {} {}", payload["status"].as_str().unwrap_or(""), rule.name);
        let result = with_retries(|| send_email(mail, &subject, &body)).await;
        if let Err(e) = result {
            dead_letter(&control, &rule, "email", &mail.smtp, &payload, &e).await;
        }
    }
}

pub(crate) async fn with_retries<F, Fut>(mut attempt: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut delay = RETRY_BASE;
    let mut last = String::new();
    for n in 0..DELIVERY_ATTEMPTS {
        match tokio::time::timeout(DELIVERY_TIMEOUT, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
        if n + 1 < DELIVERY_ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }
    Err(format!("{DELIVERY_ATTEMPTS} attempts failed; last: {last}"))
}

async fn dead_letter(
    control: &Arc<dyn ControlStore>,
    rule: &Rule,
    channel: &str,
    target: &str,
    payload: &Value,
    error: &str,
) {
    let at = crate::auth::now_unix();
    let key = format!("{at:020}-{}", crate::auth::random_hex(4));
    let record = json!({"rule": rule.id, "channel": channel, "target": target, "payload": payload, "error": error, "at": at});
    let op = ControlOp::Put { space: Space::DeadLetters, key, value: record.to_string().into_bytes() };
    if let Err(e) = control.write(vec![op]).await {
        tracing::error!("cannot record a dead letter: {e}");
    }
}

/// The signature of a webhook body.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

pub(crate) fn split_url(url: &str) -> Result<(String, String), String> {
    let rest =
        url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// webhooks are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_string(), path.to_string()))
}

pub(crate) async fn post_webhook(hook: &Webhook, body: &str) -> Result<(), String> {
    let (host, path) = split_url(&hook.url)?;
    let mut stream = tokio::net::TcpStream::connect(&host).await.map_err(|e| format!("{host}: {e}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{SIGNATURE_HEADER}: {}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        sign(&hook.secret, body.as_bytes())
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.map_err(|e| e.to_string())?;
    let status = std::str::from_utf8(&head[9..12]).unwrap_or("000");
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("webhook answered {status}"))
    }
}

async fn send_email(mail: &Email, subject: &str, body: &str) -> Result<(), String> {
    let stream =
        tokio::net::TcpStream::connect(&mail.smtp).await.map_err(|e| format!("{}: {e}", mail.smtp))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    async fn expect(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
        code: &str,
    ) -> Result<(), String> {
        loop {
            let line = lines.next_line().await.map_err(|e| e.to_string())?.ok_or("SMTP connection closed")?;
            if !line.starts_with(code) {
                return Err(format!("SMTP: expected {code}, got {line:?}"));
            }
            // A dash after the code means more lines of the same reply follow.
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }
    expect(&mut lines, "220").await?;
    async fn send(w: &mut tokio::net::tcp::OwnedWriteHalf, cmd: String) -> Result<(), String> {
        w.write_all(cmd.as_bytes()).await.map_err(|e| e.to_string())
    }
    send(&mut write, "EHLO settle\r\n".into()).await?;
    expect(&mut lines, "250").await?;
    send(&mut write, format!("MAIL FROM:<{}>\r\n", mail.from)).await?;
    expect(&mut lines, "250").await?;
    for to in &mail.to {
        send(&mut write, format!("RCPT TO:<{to}>\r\n")).await?;
        expect(&mut lines, "250").await?;
    }
    send(&mut write, "DATA\r\n".into()).await?;
    expect(&mut lines, "354").await?;
    // Dot-stuffing: a line starting with "." gets another one.
    let text: String = body
        .lines()
        .map(|l| if l.starts_with('.') { format!(".{l}\r\n") } else { format!("{l}\r\n") })
        .collect();
    send(
        &mut write,
        format!(
            "From: {}\r\nTo: {}\r\nSubject: {subject}\r\nContent-Type: application/json\r\n\r\n{text}.\r\n",
            mail.from,
            mail.to.join(", ")
        ),
    )
    .await?;
    expect(&mut lines, "250").await?;
    send(&mut write, "QUIT\r\n".into()).await?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Handlers

pub(crate) async fn list_alerts(axum::extract::State(app): AppState, p: Principal) -> ApiResult<Json<Value>> {
    p.require_read_all()?;
    let inner = app.alerts.lock();
    Ok(Json(json!({
        "alerts": inner.states.values().collect::<Vec<_>>(),
        "recent": inner.recent.iter().rev().collect::<Vec<_>>(),
    })))
}

pub(crate) async fn list_rules(axum::extract::State(app): AppState, p: Principal) -> ApiResult<Json<Value>> {
    p.require_read_all()?;
    let inner = app.alerts.lock();
    let rules: Vec<Value> = inner.rules.values().map(rule_public).collect();
    Ok(Json(json!({"rules": rules})))
}

/// A rule as shown and audited: webhook secrets are never echoed.
fn rule_public(r: &Rule) -> Value {
    let mut v = json!(r);
    if let Some(h) = v.get_mut("webhook").and_then(Value::as_object_mut) {
        h.insert("secret".into(), Value::String("***".into()));
    }
    v
}

pub(crate) async fn create_rule(
    axum::extract::State(app): AppState,
    p: Principal,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require_operate()?;
    let mut value: Value = parse_body(&body)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("id".into(), Value::String(crate::auth::random_hex(6)));
    }
    let rule: Rule =
        serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("invalid rule: {e}")))?;
    if !valid_metric(&rule.metric) {
        return Err(ApiError::BadRequest(format!("metric {:?} is not known", rule.metric)));
    }
    if let Condition::Threshold { comparator, .. } = &rule.condition {
        if !matches!(comparator.as_str(), ">" | ">=" | "<" | "<=") {
            return Err(ApiError::BadRequest("comparator must be >, >=, < or <=".into()));
        }
    }
    if let Condition::Anomaly { factor, .. } = &rule.condition {
        if *factor < 2 {
            return Err(ApiError::BadRequest("factor must be at least 2".into()));
        }
    }
    if !matches!(rule.severity.as_str(), "info" | "warning" | "critical") {
        return Err(ApiError::BadRequest("severity must be info, warning or critical".into()));
    }
    if let Some(h) = &rule.webhook {
        split_url(&h.url).map_err(ApiError::BadRequest)?;
    }
    if app.alerts.lock().rules.len() >= MAX_RULES {
        return Err(ApiError::Rejected(format!("at most {MAX_RULES} rules")));
    }
    let op = ControlOp::Put {
        space: Space::AlertRules,
        key: rule.id.clone(),
        value: serde_json::to_vec(&rule).map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    let event = AuditEvent {
        actor: actor(&p),
        action: "alert_rule.create".into(),
        target: format!("alert_rule:{}", rule.id),
        before: Value::Null,
        after: rule_public(&rule),
    };
    app.audit.commit(vec![op], event).await?;
    let shown = rule_public(&rule);
    app.alerts.lock().rules.insert(rule.id.clone(), rule);
    Ok((StatusCode::CREATED, Json(shown)))
}

pub(crate) async fn delete_rule(
    axum::extract::State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.require_operate()?;
    let rule = app
        .alerts
        .lock()
        .rules
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no rule {id:?}")))?;
    let op = ControlOp::Delete { space: Space::AlertRules, key: id.clone() };
    let event = AuditEvent {
        actor: actor(&p),
        action: "alert_rule.delete".into(),
        target: format!("alert_rule:{id}"),
        before: rule_public(&rule),
        after: Value::Null,
    };
    app.audit.commit(vec![op], event).await?;
    let mut inner = app.alerts.lock();
    inner.rules.remove(&id);
    inner.states.remove(&id);
    Ok(Json(json!({"deleted": id})))
}

pub(crate) async fn ack(
    axum::extract::State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.require_operate()?;
    let before = app
        .alerts
        .lock()
        .states
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no alert {id:?}")))?;
    let event = AuditEvent {
        actor: actor(&p),
        action: "alert.ack".into(),
        target: format!("alert_rule:{id}"),
        before: json!(before),
        after: json!({"acked_by": actor(&p)}),
    };
    app.audit.commit(Vec::new(), event).await?;
    let mut inner = app.alerts.lock();
    let state = inner.states.get_mut(&id).ok_or_else(|| ApiError::NotFound(format!("no alert {id:?}")))?;
    state.acked_by = Some(actor(&p));
    Ok(Json(json!(state)))
}

#[derive(Deserialize)]
struct SilenceBody {
    minutes: u64,
}

pub(crate) async fn silence(
    axum::extract::State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    p.require_operate()?;
    let body: SilenceBody = parse_body(&body)?;
    if body.minutes > 7 * 24 * 60 {
        return Err(ApiError::BadRequest("silence for at most a week".into()));
    }
    let until = crate::now_ms().saturating_add(body.minutes.saturating_mul(60_000));
    if !app.alerts.lock().rules.contains_key(&id) {
        return Err(ApiError::NotFound(format!("no rule {id:?}")));
    }
    let event = AuditEvent {
        actor: actor(&p),
        action: "alert.silence".into(),
        target: format!("alert_rule:{id}"),
        before: Value::Null,
        after: json!({"silenced_until_ms": until}),
    };
    app.audit.commit(Vec::new(), event).await?;
    let mut inner = app.alerts.lock();
    let rule = inner.rules.get(&id).cloned();
    let state = inner.states.entry(id.clone()).or_insert_with(|| AlertState {
        rule: id.clone(),
        name: rule.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
        severity: rule.as_ref().map(|r| r.severity.clone()).unwrap_or_default(),
        ..AlertState::default()
    });
    state.silenced_until_ms = until;
    Ok(Json(json!(state)))
}

pub(crate) async fn dead_letters(
    axum::extract::State(app): AppState,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require_read_all()?;
    let letters: Vec<Value> = app
        .control
        .scan(Space::DeadLetters)?
        .iter()
        .rev()
        .take(500)
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect();
    Ok(Json(json!({"dead_letters": letters})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use settle_core::{Currency, Dec, FxRate, Instant};

    fn figures(period_day: i64, transactions: u64, gross_sales: i128) -> PartnerFigures {
        PartnerFigures {
            payable: gross_sales,
            period_start: Instant::from_unix_seconds(period_day * 86_400),
            transactions,
            gross_sales,
        }
    }

    fn record(inner: &mut Inner, metrics: &[&str], p1: PartnerFigures, at_ms: u64) {
        let figures = DerivedFigures {
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
            partners: [("p1".to_string(), p1)].into_iter().collect(),
            fx_ages: BTreeMap::new(),
        };
        inner.record_derived(figures, at_ms);
    }

    fn series(inner: &Inner, metric: &str) -> Vec<i128> {
        inner.derived.get(metric).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    #[test]
    fn partner_rates_are_differences_per_second_and_restart_with_a_new_period() {
        let mut inner = Inner::default();
        let m = ["partner_tx_per_s:p1", "partner_amount_per_s:p1", "partner_payable:p1"];
        record(&mut inner, &m, figures(1, 10, 5_000), 1_000);
        assert_eq!(series(&inner, m[0]), Vec::<i128>::new(), "a rate needs two readings");
        assert_eq!(series(&inner, m[2]), vec![5_000]);
        record(&mut inner, &m, figures(1, 30, 9_000), 3_000);
        assert_eq!((series(&inner, m[0]), series(&inner, m[1])), (vec![10], vec![2_000]));
        // The next period counts from zero: its figures are all new.
        record(&mut inner, &m, figures(2, 4, 800), 4_000);
        assert_eq!((series(&inner, m[0]), series(&inner, m[1])), (vec![10, 4], vec![2_000, 800]));
        // A rule removed: its series and readings go.
        record(&mut inner, &["ingest_per_s"], figures(2, 4, 800), 5_000);
        assert!(inner.derived.is_empty() && inner.partner_last.is_empty());
    }

    #[test]
    fn fx_age_is_per_pair_or_the_oldest_newest_rate() {
        let rate = |base: &str, quote: &str, at: i64| FxRate {
            base: Currency::from_code(base).unwrap(),
            quote: Currency::from_code(quote).unwrap(),
            rate: Dec::parse("1.1", false).unwrap(),
            at: Instant::from_unix_seconds(at),
            source: None,
        };
        let rates = [rate("USD", "EUR", 1_000), rate("GBP", "EUR", 1_900)];
        assert_eq!(fx_age_s(&rates, Some("USD/EUR"), 2_000_000), Some(1_000));
        assert_eq!(fx_age_s(&rates, Some("GBP/EUR"), 2_000_000), Some(100));
        assert_eq!(fx_age_s(&rates, None, 2_000_000), Some(1_000));
        assert_eq!(fx_age_s(&rates, Some("JPY/EUR"), 2_000_000), None);
        assert_eq!(fx_age_s(&rates, Some("USD/EUR"), 0), Some(0), "a rate from the future is fresh");
    }

    #[test]
    fn metric_names() {
        for ok in [
            "duplicates_per_s",
            "fx_age_s",
            "fx_age_s:USD/EUR",
            "partner_tx_per_s:p1",
            "partner_amount_per_s:p",
        ] {
            assert!(valid_metric(ok), "{ok}");
        }
        for bad in ["fx_age_s:USD", "fx_age_s:USD/XX", "partner_tx_per_s:", "partner_volume:p1", "duplicates"]
        {
            assert!(!valid_metric(bad), "{bad}");
        }
    }
}
