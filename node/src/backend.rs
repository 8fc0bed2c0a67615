//! Which engine backs the ingress in this binary, kept in one place so that swapping it is a
//! one-file change.

use settle_node::demo::DemoPartner;
use settle_node::ingress::memory::MemoryBackend;
use settle_node::ingress::Backend;
use std::path::Path;

pub type Engine = MemoryBackend;

pub async fn open(_data: &Path) -> anyhow::Result<Engine> {
    Ok(MemoryBackend::new(settle_core::Span::from_hours(24), 0))
}

pub async fn shutdown(_engine: Engine) -> anyhow::Result<()> {
    Ok(())
}

/// Registers the demo partners (skipping those already there) and publishes demo rates.
pub async fn seed_demo(engine: &Engine, n: usize) -> anyhow::Result<Vec<DemoPartner>> {
    let mut out = Vec::new();
    for partner in settle_node::demo::fallback_partners(n)? {
        let demo = DemoPartner { id: partner.id.clone(), currency: partner.currency };
        if engine.balance(&partner.id).await?.is_none() {
            engine.register_partner(partner).await?;
        }
        out.push(demo);
    }
    engine.publish_rates(settle_node::demo::fallback_rates(settle_node::demo::instant_now())?).await?;
    Ok(out)
}
