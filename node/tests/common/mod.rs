//! Helpers shared by the node's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use settle_core::Instant;
use std::path::Path;

/// The backend the tests run the ingress on: the live engine on a directory of the test.
pub type TestBackend = settle_node::engine::EngineHandle;

pub async fn backend(dir: &Path) -> TestBackend {
    let config = settle_node::engine::EngineConfig::new(dir.join("engine"));
    settle_node::engine::Engine::open(config).await.unwrap()
}

pub fn now() -> Instant {
    settle_node::demo::instant_now()
}

pub fn now_rfc3339() -> String {
    now().to_rfc3339()
}

pub fn minutes_ago_rfc3339(m: i64) -> String {
    now().saturating_sub(settle_core::Span::from_minutes(m)).to_rfc3339()
}

/// A partner with no period fees: shares 80/20, 1.5% + 0.10 fees, daily UTC cycle from today.
pub fn partner_json(id: &str, currency: &str) -> String {
    let since = now().start_of_utc_day().to_rfc3339();
    format!(
        r#"{{"id":"{id}","settlement_currency":"{currency}","since":"{since}",
        "cycle":{{"every":"daily","cutoff":"00:00","tz":"UTC","grace":"PT1H"}},
        "contracts":[{{"effective_from":"{since}",
          "shares":[{{"party":"partner","percent":"80"}},{{"party":"platform","percent":"20"}}],
          "fees":[{{"kind":"percent","bps":"150"}},{{"kind":"fixed","amount":"0.10"}}],
          "chargeback_fee":"15.00"}}]}}"#
    )
}
