//! Which engine backs the ingress in this binary, kept in one place.

use settle_node::demo::DemoPartner;
use settle_node::engine::{Engine as LiveEngine, EngineConfig, EngineHandle};
use settle_node::ingress::Backend;
use std::path::Path;

pub type Engine = EngineHandle;

/// Opens (or recovers) the engine under `DATA/engine`.
pub async fn open(data: &Path) -> anyhow::Result<Engine> {
    let config = EngineConfig::new(data.join("engine"));
    Ok(LiveEngine::open(config).await?)
}

pub async fn shutdown(engine: Engine) -> anyhow::Result<()> {
    Ok(engine.shutdown().await?)
}

/// Registers the engine's demo partners (skipping those already there, so a restart keeps its
/// data) and publishes demo rates as of now.
pub async fn seed_demo<B: Backend>(engine: &B, n: usize) -> anyhow::Result<Vec<DemoPartner>> {
    let now = settle_node::demo::instant_now();
    let since = now.start_of_utc_day();
    let mut out = Vec::new();
    for partner in settle_node::engine::demo_partners_since(n, since) {
        let demo = DemoPartner { id: partner.id.clone(), currency: partner.currency };
        if Backend::balance(engine, &partner.id).await?.is_none() {
            Backend::register_partner(engine, partner).await?;
        }
        out.push(demo);
    }
    let rates_at = now.saturating_sub(settle_core::Span::from_minutes(1));
    Backend::publish_rates(engine, settle_node::engine::demo_rates(rates_at)).await?;
    Ok(out)
}
