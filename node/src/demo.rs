//! A trickle of demo traffic for `settle dev` (the demo partners and rates are the engine's,
//! `engine::demo_partners_since` and `engine::demo_rates`): a generator that sends sales, refunds and payouts through the
//! real QUIC path (a `settle-client` connected to the node itself), so a fresh dev node shows
//! moving balances.

use rand::{Rng, SeedableRng};
use settle_client::Client;
use settle_core::{Currency, Instant};
use settle_wire as wire;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::watch;

/// Interval between two demo batches.
pub const TRICKLE_INTERVAL: Duration = Duration::from_millis(500);
/// Most transactions in one demo batch.
pub const TRICKLE_MAX_BATCH: usize = 5;
/// Acked sales remembered as candidates for refunds.
const REFUNDABLE_WINDOW: usize = 256;
/// How often `settle dev` reports what the demo traffic did.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// What the demo traffic has done so far, for the status line.
#[derive(Debug, Default)]
struct Tally {
    applied: u64,
    exceptions: std::collections::BTreeMap<String, u64>,
    /// The last acknowledged balance seen, per partner.
    balances: std::collections::BTreeMap<String, (String, String)>,
}

impl Tally {
    fn line(&self) -> String {
        let exceptions: u64 = self.exceptions.values().sum();
        let reasons: Vec<String> = self.exceptions.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let mut line = format!("settle dev: {} applied, {exceptions} exceptions", self.applied);
        if !reasons.is_empty() {
            line.push_str(&format!(" ({})", reasons.join(", ")));
        }
        let shown: Vec<String> = self
            .balances
            .iter()
            .take(3)
            .map(|(p, (amount, currency))| format!("{p} {amount} {currency}"))
            .collect();
        if !shown.is_empty() {
            line.push_str(&format!("; payable: {}", shown.join(", ")));
        }
        line
    }
}

/// A partner the generator sends traffic for.
#[derive(Clone, Debug)]
pub struct DemoPartner {
    pub id: String,
    pub currency: Currency,
}

/// The current instant from the system clock.
pub fn instant_now() -> Instant {
    Instant::from_system_time(std::time::SystemTime::now())
}

/// Sends demo traffic until `stop` turns true. Errors are reported on stderr and the trickle goes
/// on: it is a demo, not a correctness tool (that is settle-loadtest).
pub async fn trickle(client: Client, partners: Vec<DemoPartner>, seed: u64, mut stop: watch::Receiver<bool>) {
    if partners.is_empty() {
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let run = format!("{:x}", instant_now().unix_seconds());
    let mut refundable: VecDeque<(String, String, String, String)> = VecDeque::new();
    let mut counter: u64 = 0;
    let mut tally = Tally::default();
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    status.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRICKLE_INTERVAL) => {}
            _ = status.tick() => {
                eprintln!("{}", tally.line());
                continue;
            }
            _ = stop.changed() => return,
        }
        let n = rng.gen_range(1..=TRICKLE_MAX_BATCH);
        let occurred_at = instant_now().to_rfc3339();
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            counter += 1;
            let id = format!("dev-{run}-{counter}");
            let roll: u32 = rng.gen_range(0..100);
            let tx = if roll < 10 && !refundable.is_empty() {
                let i = rng.gen_range(0..refundable.len());
                let Some((sale, partner, amount, currency)) = refundable.remove(i) else { continue };
                wire::Transaction {
                    id,
                    partner: Some(partner),
                    kind: wire::TxKind::Refund as i32,
                    amount: Some(amount),
                    currency: Some(currency),
                    occurred_at: occurred_at.clone(),
                    original: Some(sale),
                    ..Default::default()
                }
            } else if roll < 15 {
                let p = &partners[rng.gen_range(0..partners.len())];
                wire::Transaction {
                    id,
                    partner: Some(p.id.clone()),
                    kind: wire::TxKind::Payout as i32,
                    amount: Some(minor_amount(rng.gen_range(100..1_000), p.currency.exponent())),
                    currency: Some(p.currency.code().to_string()),
                    occurred_at: occurred_at.clone(),
                    ..Default::default()
                }
            } else {
                let p = &partners[rng.gen_range(0..partners.len())];
                let foreign = rng.gen_bool(0.2);
                let currency = if foreign && p.currency.code() != "USD" { "USD" } else { p.currency.code() };
                let exp = Currency::from_code(currency).map_or(2, |c| c.exponent());
                wire::Transaction {
                    id,
                    partner: Some(p.id.clone()),
                    kind: wire::TxKind::Sale as i32,
                    amount: Some(minor_amount(rng.gen_range(500..50_000), exp)),
                    currency: Some(currency.to_string()),
                    occurred_at: occurred_at.clone(),
                    metadata_json: Some(format!(r#"{{"source":"settle dev","n":{counter}}}"#)),
                    ..Default::default()
                }
            };
            batch.push(tx);
        }
        let sent = batch.clone();
        match client.submit(batch).await {
            Ok(results) => {
                for (tx, result) in sent.into_iter().zip(results) {
                    match &result.outcome {
                        Some(wire::tx_result::Outcome::Applied(a)) => {
                            tally.applied += 1;
                            if let Some(p) = &tx.partner {
                                tally
                                    .balances
                                    .insert(p.clone(), (a.payable_after.clone(), a.currency.clone()));
                            }
                        }
                        Some(wire::tx_result::Outcome::Exception(e)) => {
                            *tally.exceptions.entry(e.reason.clone()).or_default() += 1;
                        }
                        None => {}
                    }
                    let applied = matches!(result.outcome, Some(wire::tx_result::Outcome::Applied(_)));
                    if applied && tx.tx_kind() == wire::TxKind::Sale && !result.duplicate {
                        if let (Some(p), Some(a), Some(c)) = (tx.partner, tx.amount, tx.currency) {
                            refundable.push_back((tx.id, p, a, c));
                            if refundable.len() > REFUNDABLE_WINDOW {
                                refundable.pop_front();
                            }
                        }
                    }
                }
            }
            Err(e) => eprintln!("settle dev: demo traffic: {e}"),
        }
    }
}

/// `units` minor units of a currency with `exponent` decimals, as a decimal string.
fn minor_amount(units: u64, exponent: u8) -> String {
    settle_core::Minor(i128::from(units)).format(exponent)
}
