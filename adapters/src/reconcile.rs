//! Reconciliation of a partner's own report against Settle's records of that partner for one
//! period. Pure: both sides are given as lists; the node and the files are the caller's.
//!
//! Passes, each on what the earlier ones left:
//! 1. by id (the report mapped with the same mapping as the feed carries the same ids):
//!    `matched`, `amount_mismatch` or `currency_mismatch`;
//! 2. by value: same currency, signed amount within `amount_tolerance`, time within
//!    `time_tolerance`, the closest in time first: `matched`;
//! 3. one-to-many: a line of theirs equal (within `amount_tolerance`) to the sum of a run of our
//!    consecutive items of its currency and sign inside `[t - aggregate_window, t + time_tolerance]`:
//!    `one_to_many`;
//! 4. what is left: `missing_ours` (their lines) and `missing_theirs` (our items inside the period).
//!
//! Amounts are signed by direction so that kinds compare: sales and positive adjustments count
//! up, refunds, chargebacks, payouts and negative adjustments down.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::str::FromStr;

/// Most of our items one aggregated line may stand for (bounds the run search).
pub const MAX_GROUP_ITEMS: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Matched,
    OneToMany,
    AmountMismatch,
    CurrencyMismatch,
    MissingOurs,
    MissingTheirs,
    /// A line of their report that the mapping could not read.
    Unreadable,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Matched => "matched",
            Category::OneToMany => "one_to_many",
            Category::AmountMismatch => "amount_mismatch",
            Category::CurrencyMismatch => "currency_mismatch",
            Category::MissingOurs => "missing_ours",
            Category::MissingTheirs => "missing_theirs",
            Category::Unreadable => "unreadable",
        }
    }

    /// Whether the line is a discrepancy (an open dispute until someone resolves it).
    pub fn is_discrepancy(self) -> bool {
        !matches!(self, Category::Matched | Category::OneToMany)
    }
}

/// One transaction of either side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    pub id: String,
    pub kind: String,
    /// As written (canonical decimal text).
    pub amount: String,
    pub currency: String,
    pub occurred_at: String,
    /// Their report's line number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// Ours: the engine's exception reason, when it is one (then it is no record of ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// Their line's mapping error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    signed: Option<Decimal>,
    #[serde(skip)]
    at: Option<DateTime<Utc>>,
}

impl Item {
    pub fn new(id: &str, kind: &str, amount: &str, currency: &str, occurred_at: &str) -> Item {
        let value = Decimal::from_str(amount).ok();
        let signed = value.map(|v| match kind {
            "refund" | "chargeback" | "payout" => -v.abs(),
            "sale" => v.abs(),
            _ => v,
        });
        Item {
            id: id.to_string(),
            kind: kind.to_string(),
            amount: amount.to_string(),
            currency: currency.to_string(),
            occurred_at: occurred_at.to_string(),
            row: None,
            exception: None,
            error: None,
            signed,
            at: DateTime::parse_from_rfc3339(occurred_at).ok().map(|t| t.with_timezone(&Utc)),
        }
    }

    /// A transaction in its wire form (theirs after the mapping, or ours from the node).
    pub fn from_wire(tx: &settle_wire::Transaction) -> Item {
        let kind = crate::rows::kind_name(tx.tx_kind());
        Item::new(
            &tx.id,
            kind,
            tx.amount.as_deref().unwrap_or(""),
            tx.currency.as_deref().unwrap_or(""),
            &tx.occurred_at,
        )
    }

    pub fn signed_amount(&self) -> Option<Decimal> {
        self.signed
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tolerances {
    /// Largest absolute difference of amounts still a match.
    #[serde(serialize_with = "decimal_text")]
    pub amount: Decimal,
    /// Largest difference of times still a match.
    #[serde(serialize_with = "seconds")]
    pub time: Duration,
    /// How far before an aggregated line its items may lie.
    #[serde(serialize_with = "seconds")]
    pub aggregate_window: Duration,
}

fn decimal_text<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.normalize().to_string())
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(d.num_seconds())
}

/// One line of the result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Line {
    /// Stable for the same partner, period, category and items: the dispute item's id.
    pub key: String,
    pub category: Category,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub theirs: Option<Item>,
    pub ours: Vec<Item>,
    /// Their signed amount minus ours, when both have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Total {
    pub count: u64,
    /// Signed sums by currency.
    pub theirs: BTreeMap<String, String>,
    pub ours: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub partner: String,
    pub period_start: String,
    pub period_end: String,
    pub tolerances: Tolerances,
    pub totals: BTreeMap<Category, Total>,
    pub lines: Vec<Line>,
}

impl Report {
    pub fn discrepancies(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|l| l.category.is_discrepancy())
    }
}

/// The period and the partner reconciled.
#[derive(Clone, Debug)]
pub struct Scope {
    pub partner: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

fn within(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>, tol: Duration) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= tol,
        _ => false,
    }
}

fn close(a: Option<Decimal>, b: Option<Decimal>, tol: Decimal) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.checked_sub(b).is_some_and(|d| d.abs() <= tol),
        _ => false,
    }
}

/// Compares their report with our records. `ours` may extend beyond the period by the
/// tolerances; unmatched items of ours outside the period are not reported.
pub fn reconcile(scope: &Scope, tol: &Tolerances, theirs: Vec<Item>, ours: Vec<Item>) -> Report {
    let mut lines: Vec<Line> = Vec::new();
    let mut our_open: Vec<Option<Item>> = ours.into_iter().map(Some).collect();
    let mut their_open: Vec<Item> = Vec::new();

    // Pass 1: ids.
    let by_id: BTreeMap<String, usize> =
        our_open.iter().enumerate().filter_map(|(i, o)| o.as_ref().map(|o| (o.id.clone(), i))).collect();
    for t in theirs {
        if t.error.is_some() {
            lines.push(line(scope, Category::Unreadable, Some(t), vec![]));
            continue;
        }
        let Some(&i) = by_id.get(&t.id) else {
            their_open.push(t);
            continue;
        };
        let Some(o) = our_open[i].take() else {
            their_open.push(t);
            continue;
        };
        let category = if o.exception.is_some() {
            Category::MissingOurs
        } else if o.currency != t.currency {
            Category::CurrencyMismatch
        } else if close(t.signed, o.signed, tol.amount) {
            Category::Matched
        } else {
            Category::AmountMismatch
        };
        lines.push(line(scope, category, Some(t), vec![o]));
    }
    // Our exceptions are no records of ours: they take no part in value matching.
    for slot in our_open.iter_mut() {
        if slot.as_ref().is_some_and(|o| o.exception.is_some()) {
            *slot = None;
        }
    }

    // Pass 2: by value, closest in time.
    their_open.sort_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
    let mut still_open = Vec::new();
    for t in their_open {
        let best = our_open
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|o| (i, o)))
            .filter(|(_, o)| {
                o.currency == t.currency
                    && close(t.signed, o.signed, tol.amount)
                    && within(t.at, o.at, tol.time)
            })
            .min_by_key(|(_, o)| match (t.at, o.at) {
                (Some(a), Some(b)) => (a - b).abs(),
                _ => Duration::MAX,
            })
            .map(|(i, _)| i);
        match best.and_then(|i| our_open[i].take()) {
            Some(o) => lines.push(line(scope, Category::Matched, Some(t), vec![o])),
            None => still_open.push(t),
        }
    }

    // Pass 3: one line of theirs for a run of ours.
    for t in still_open {
        match find_run(&t, &our_open, tol) {
            Some(run) => {
                let items = run.into_iter().filter_map(|i| our_open[i].take()).collect();
                lines.push(line(scope, Category::OneToMany, Some(t), items));
            }
            None => lines.push(line(scope, Category::MissingOurs, Some(t), vec![])),
        }
    }

    // Pass 4: ours left inside the period.
    for o in our_open.into_iter().flatten() {
        if o.at.is_some_and(|at| at >= scope.start && at < scope.end) {
            lines.push(line(scope, Category::MissingTheirs, None, vec![o]));
        }
    }

    let totals = totals(&lines);
    Report {
        partner: scope.partner.clone(),
        period_start: scope.start.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        period_end: scope.end.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        tolerances: tol.clone(),
        totals,
        lines,
    }
}

/// Our open items that a line of theirs may aggregate, in time order; the first contiguous run
/// (at least two items) whose sum is within tolerance.
fn find_run(t: &Item, ours: &[Option<Item>], tol: &Tolerances) -> Option<Vec<usize>> {
    let (at, want) = (t.at?, t.signed?);
    let positive = want.is_sign_positive();
    let mut candidates: Vec<(DateTime<Utc>, usize, Decimal)> = ours
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            let o = o.as_ref()?;
            let (oat, amount) = (o.at?, o.signed?);
            let in_window = oat >= at - tol.aggregate_window && oat <= at + tol.time;
            (o.currency == t.currency && amount.is_sign_positive() == positive && in_window)
                .then_some((oat, i, amount))
        })
        .take(MAX_GROUP_ITEMS)
        .collect();
    candidates.sort();
    // All candidates share the sign of `want`: on absolute values a run's sum only grows with its
    // end and shrinks with its start, so one sliding window finds the first run in linear time.
    let target = want.abs();
    let lo = target.checked_sub(tol.amount)?;
    let hi = target.checked_add(tol.amount)?;
    let (mut start, mut sum) = (0usize, Decimal::ZERO);
    for end in 0..candidates.len() {
        sum = sum.checked_add(candidates[end].2.abs())?;
        while sum > hi && start < end {
            sum = sum.checked_sub(candidates[start].2.abs())?;
            start += 1;
        }
        if end > start && sum >= lo && sum <= hi {
            return Some(candidates[start..=end].iter().map(|(_, i, _)| *i).collect());
        }
    }
    None
}

fn line(scope: &Scope, category: Category, theirs: Option<Item>, ours: Vec<Item>) -> Line {
    let their_amount = theirs.as_ref().and_then(|t| t.signed);
    let our_sum = ours.iter().try_fold(Decimal::ZERO, |acc, o| acc.checked_add(o.signed?));
    let difference = match (their_amount, our_sum) {
        (Some(a), Some(b)) if !ours.is_empty() => a.checked_sub(b).map(|d| d.normalize().to_string()),
        _ => None,
    };
    let mut hasher = Sha256::new();
    for part in [scope.partner.as_str(), &scope.start.to_rfc3339(), category.as_str()] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    if let Some(t) = &theirs {
        hasher.update(format!("t:{}:{}", t.id, t.row.unwrap_or(0)).as_bytes());
    }
    for o in &ours {
        hasher.update(format!("o:{}", o.id).as_bytes());
        hasher.update([0u8]);
    }
    let key = format!("d-{}", &hex::encode(hasher.finalize())[..16]);
    Line { key, category, theirs, ours, difference }
}

fn add(map: &mut BTreeMap<String, Decimal>, currency: &str, amount: Option<Decimal>) {
    if let Some(a) = amount {
        let entry = map.entry(currency.to_string()).or_insert(Decimal::ZERO);
        *entry = entry.checked_add(a).unwrap_or(*entry);
    }
}

fn totals(lines: &[Line]) -> BTreeMap<Category, Total> {
    type BySide = (u64, BTreeMap<String, Decimal>, BTreeMap<String, Decimal>);
    let mut sums: BTreeMap<Category, BySide> = BTreeMap::new();
    for l in lines {
        let entry = sums.entry(l.category).or_default();
        entry.0 += 1;
        if let Some(t) = &l.theirs {
            add(&mut entry.1, &t.currency, t.signed);
        }
        for o in &l.ours {
            add(&mut entry.2, &o.currency, o.signed);
        }
    }
    let text =
        |m: BTreeMap<String, Decimal>| m.into_iter().map(|(k, v)| (k, v.normalize().to_string())).collect();
    sums.into_iter().map(|(c, (count, t, o))| (c, Total { count, theirs: text(t), ours: text(o) })).collect()
}

/// The report as CSV: one line per result line (our ids joined by `;`).
pub fn to_csv(report: &Report) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "key",
        "category",
        "their_row",
        "their_id",
        "their_kind",
        "their_amount",
        "their_currency",
        "their_time",
        "our_ids",
        "our_amount",
        "our_currency",
        "difference",
        "note",
    ])?;
    for l in &report.lines {
        let t = l.theirs.as_ref();
        let our_sum = l.ours.iter().try_fold(Decimal::ZERO, |acc, o| acc.checked_add(o.signed?));
        let note = t
            .and_then(|t| t.error.clone())
            .or_else(|| {
                l.ours.iter().find_map(|o| o.exception.clone().map(|r| format!("ours is an exception: {r}")))
            })
            .unwrap_or_default();
        w.write_record([
            l.key.as_str(),
            l.category.as_str(),
            &t.and_then(|t| t.row).map(|r| r.to_string()).unwrap_or_default(),
            t.map_or("", |t| t.id.as_str()),
            t.map_or("", |t| t.kind.as_str()),
            t.map_or("", |t| t.amount.as_str()),
            t.map_or("", |t| t.currency.as_str()),
            t.map_or("", |t| t.occurred_at.as_str()),
            &l.ours.iter().map(|o| o.id.as_str()).collect::<Vec<_>>().join(";"),
            &if l.ours.is_empty() {
                String::new()
            } else {
                our_sum.map(|s| s.normalize().to_string()).unwrap_or_default()
            },
            l.ours.first().map_or("", |o| o.currency.as_str()),
            l.difference.as_deref().unwrap_or(""),
            &note,
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
