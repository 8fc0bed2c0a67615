//! One partner's settlement account: every sub-ledger of the partner (its payable, the fees it
//! pays, the platform's revenue from it, third parties' shares from it, and clearing) in one
//! double-entry ledger, with its open periods and the sales that refunds may reverse.
//!
//! A transaction touches exactly one account, which is what lets the engine shard by partner.

use crate::contract::{Contract, ContractError, ContractVersion, PARTNER_PARTY, PLATFORM_PARTY};
use crate::currency::Currency;
use crate::cycle::{Cycle, Period};
use crate::decimal::{mul_div_half_even, Minor, MAX_FIGURE};
use crate::fx::{FxError, FxTable};
use crate::split::{largest_remainder, Parts, MAX_PARTIES};
use crate::statement::{FeeBreakdown, Statement};
use crate::time::{Instant, Span};
use crate::tx::{text_field, AmountField, Applied, ExceptionReason, Outcome, TxInput, TxKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How far `occurred_at` may lie after `received_at` before it is `future_timestamp`.
pub const FUTURE_TOLERANCE_SECONDS: i64 = 5 * 60;

/// Most distinct parties one account may know over all its contract versions.
pub const MAX_ACCOUNT_PARTIES: usize = 256;

/// Sub-ledger indexes. Balances are debit-positive; every posting adds its amount to the debit
/// side and subtracts it from the credit side, so the sum over all sub-ledgers is always zero.
const CLEARING: usize = 0;
const FEES: usize = 1;
const PARTY_BASE: usize = 2;
/// Party 0 is always the partner (its sub-ledger is the partner's payable), party 1 the platform
/// (its sub-ledger is platform revenue from this partner); then third parties.
const PARTNER: usize = 0;
const PLATFORM: usize = 1;

/// Postings one transaction may make: one per party of a split, plus fee postings.
const MAX_POSTINGS: usize = MAX_PARTIES + 2;

const FEE_PERCENT: usize = 0;
const FEE_FIXED: usize = 1;
const FEE_CHARGEBACK: usize = 2;
const FEE_TIERED: usize = 3;
const FEE_MINIMUM: usize = 4;

/// A partner as registered: identity, currency, cycle and contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partner {
    pub id: String,
    pub currency: Currency,
    pub since: Instant,
    pub cycle: Cycle,
    pub contract: Contract,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SaleRecord {
    /// In the sale's own currency.
    amount: Minor,
    currency: Currency,
    amount_s: Minor,
    /// Registration index of the contract version the sale was priced with.
    version: usize,
    percent_fee: Minor,
    /// Cumulative amount reversed by refunds and chargebacks, in the sale's currency.
    reversed: Minor,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PeriodStats {
    gross_sales: i128,
    refunds: i128,
    chargebacks: i128,
    /// Net shares by party index.
    shares: Vec<i128>,
    /// Parties in the order of their first nonzero share posting in the period.
    touched: Vec<usize>,
    fees: [i128; 5],
    adjustments: i128,
    payouts: i128,
    transaction_count: u64,
    late_count: u64,
}

/// How to split an amount over one contract version: the party number and the share mantissa
/// of each share, side by side in the account. Reading them through the contract would touch the
/// version, its mantissas and a separate list of party numbers: three cache misses on every sale
/// and reversal once accounts outnumber the cache.
///
/// `repr(C)` keeps the small header next to the first mantissas, so that a split of a few parties
/// reads one or two adjacent cache lines.
#[derive(Clone, Debug)]
#[repr(C)]
struct SplitPlan {
    len: usize,
    scale: u32,
    slots: [u8; MAX_PARTIES],
    mantissas: [i128; MAX_PARTIES],
}

impl SplitPlan {
    /// Party numbers in contract order.
    fn parties(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots[..self.len].iter().map(|&slot| usize::from(slot))
    }

    /// The same largest-remainder split as [`ContractVersion::split`].
    fn split(&self, amount: Minor) -> Option<Parts> {
        largest_remainder(amount.0, &self.mantissas[..self.len], self.scale)
    }
}

/// Figures of the periods that have transactions and are not closed yet, ordered by start. An
/// account rarely has more than two (the current one and one in its grace time), so a sorted
/// vector is both smaller and faster than a tree, whose nodes are sized for many entries.
#[derive(Clone, Debug, Default)]
struct OpenPeriods(Vec<(Instant, PeriodStats)>);

impl OpenPeriods {
    fn position(&self, start: Instant) -> Result<usize, usize> {
        self.0.binary_search_by(|(s, _)| s.cmp(&start))
    }

    fn get(&self, start: Instant) -> Option<&PeriodStats> {
        self.position(start).ok().map(|i| &self.0[i].1)
    }

    fn get_or_insert(&mut self, start: Instant) -> &mut PeriodStats {
        let i = match self.position(start) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (start, PeriodStats::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    fn remove(&mut self, start: Instant) -> Option<PeriodStats> {
        self.position(start).ok().map(|i| self.0.remove(i).1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Posting {
    debit: usize,
    credit: usize,
    amount: i128,
}

/// Everything one transaction changes, computed before anything is changed.
#[derive(Clone, Copy, Debug)]
struct Effect {
    postings: [Posting; MAX_POSTINGS],
    posting_count: usize,
    /// (party index, delta) of net shares.
    shares: [(usize, i128); MAX_PARTIES],
    share_count: usize,
    gross_sales: i128,
    refunds: i128,
    chargebacks: i128,
    fees: [i128; 5],
    adjustments: i128,
    payouts: i128,
    amount_s: i128,
}

impl Effect {
    fn new() -> Effect {
        Effect {
            postings: [Posting::default(); MAX_POSTINGS],
            posting_count: 0,
            shares: [(0, 0); MAX_PARTIES],
            share_count: 0,
            gross_sales: 0,
            refunds: 0,
            chargebacks: 0,
            fees: [0; 5],
            adjustments: 0,
            payouts: 0,
            amount_s: 0,
        }
    }

    fn post(&mut self, debit: usize, credit: usize, amount: i128) {
        if amount == 0 {
            return;
        }
        assert!(self.posting_count < MAX_POSTINGS);
        self.postings[self.posting_count] = Posting { debit, credit, amount };
        self.posting_count += 1;
    }

    fn share(&mut self, party: usize, delta: i128) {
        assert!(self.share_count < MAX_PARTIES);
        self.shares[self.share_count] = (party, delta);
        self.share_count += 1;
    }
}

fn sales_hasher(hash_seed: u64) -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        hash_seed,
        hash_seed.rotate_left(17),
        hash_seed.rotate_left(31),
        hash_seed.rotate_left(47),
    )
}

/// A partner's account. Build with [`PartnerAccount::open`].
#[derive(Clone, Debug)]
pub struct PartnerAccount {
    id: String,
    currency: Currency,
    since: Instant,
    cycle: Cycle,
    contract: Contract,
    /// Party names; the index is the party's number.
    parties: Vec<String>,
    /// For each contract version (registration index): how to split an amount over its parties.
    split_plans: Vec<SplitPlan>,
    /// Sub-ledger balances, debit-positive: clearing, fees, then one per party.
    ledgers: Vec<i128>,
    sales: HashMap<String, SaleRecord, ahash::RandomState>,
    first_period: Period,
    /// The oldest period not yet closed.
    next_to_close: Period,
    last_closing: Minor,
    open: OpenPeriods,
    /// The period most recently assigned on time: most transactions fall into it.
    recent: Period,
    statements_issued: u64,
}

/// Everything of a [`PartnerAccount`] that its future depends on, in a serialisable form (a Raft
/// snapshot of a shard carries one per account). What the account derives from its contract
/// (party numbers, split plans) is rebuilt on restore rather than stored, and the sales map is a
/// list sorted by id, so that equal accounts give equal images whatever their hash seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountImage {
    id: String,
    currency: Currency,
    since: Instant,
    cycle: Cycle,
    contract: Contract,
    ledgers: Vec<i128>,
    sales: Vec<(String, SaleRecord)>,
    first_period: Period,
    next_to_close: Period,
    last_closing: Minor,
    open: Vec<(Instant, PeriodStats)>,
    recent: Period,
    statements_issued: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error("since: no settlement period contains {0}")]
    NoPeriod(Instant),
    #[error("contracts: more than {MAX_ACCOUNT_PARTIES} distinct parties")]
    TooManyParties,
    #[error("account image of {0:?}: its sub-ledgers do not match its contract's parties")]
    Image(String),
}

impl PartnerAccount {
    pub fn open(partner: Partner, hash_seed: u64) -> Result<PartnerAccount, AccountError> {
        let first_period =
            partner.cycle.period_containing(partner.since).ok_or(AccountError::NoPeriod(partner.since))?;
        let mut account = PartnerAccount {
            id: partner.id,
            currency: partner.currency,
            since: partner.since,
            cycle: partner.cycle,
            contract: partner.contract,
            parties: vec![PARTNER_PARTY.to_string(), PLATFORM_PARTY.to_string()],
            split_plans: Vec::new(),
            ledgers: vec![0; PARTY_BASE + 2],
            sales: HashMap::with_hasher(sales_hasher(hash_seed)),
            first_period,
            next_to_close: first_period,
            last_closing: Minor::ZERO,
            open: OpenPeriods::default(),
            recent: first_period,
            statements_issued: 0,
        };
        for index in 0..account.contract.versions().len() {
            account.intern_version(index)?;
        }
        Ok(account)
    }

    fn intern_version(&mut self, index: usize) -> Result<(), AccountError> {
        let Some(version) = self.contract.version(index) else {
            return Ok(());
        };
        let (mantissas, scale) = version.share_mantissas();
        let mut plan = SplitPlan {
            len: version.shares.len(),
            scale,
            slots: [0; MAX_PARTIES],
            mantissas: [0; MAX_PARTIES],
        };
        for (i, share) in version.shares.iter().enumerate() {
            let slot = match self.parties.iter().position(|p| *p == share.party) {
                Some(slot) => slot,
                None => {
                    if self.parties.len() >= MAX_ACCOUNT_PARTIES {
                        return Err(AccountError::TooManyParties);
                    }
                    self.parties.push(share.party.clone());
                    self.ledgers.push(0);
                    self.parties.len() - 1
                }
            };
            // MAX_ACCOUNT_PARTIES keeps every party number within a byte.
            plan.slots[i] = u8::try_from(slot).map_err(|_| AccountError::TooManyParties)?;
            plan.mantissas[i] = mantissas.get(i).copied().unwrap_or(0);
        }
        assert_eq!(self.split_plans.len(), index);
        self.split_plans.push(plan);
        Ok(())
    }

    /// Adds a contract version. Refused if it would take effect in a period already closed.
    pub fn add_contract_version(&mut self, version: ContractVersion) -> Result<(), AccountError> {
        if version.effective_from < self.next_to_close.start {
            return Err(AccountError::Contract(ContractError {
                field: "effective_from".into(),
                message: "falls in a period that is already closed".into(),
            }));
        }
        let index = self.contract.push(version);
        self.intern_version(index)
    }

    /// The account's image (see [`AccountImage`]).
    pub fn image(&self) -> AccountImage {
        let mut sales: Vec<(String, SaleRecord)> = self.sales.iter().map(|(k, v)| (k.clone(), *v)).collect();
        sales.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        AccountImage {
            id: self.id.clone(),
            currency: self.currency,
            since: self.since,
            cycle: self.cycle.clone(),
            contract: self.contract.clone(),
            ledgers: self.ledgers.clone(),
            sales,
            first_period: self.first_period,
            next_to_close: self.next_to_close,
            last_closing: self.last_closing,
            open: self.open.0.clone(),
            recent: self.recent,
            statements_issued: self.statements_issued,
        }
    }

    /// The account an image was taken of, its hash map keyed by `hash_seed`. Party numbers and
    /// split plans are derived from the contract in registration order, as `open` and
    /// `add_contract_version` derived them, so they come out the same.
    pub fn from_image(image: AccountImage, hash_seed: u64) -> Result<PartnerAccount, AccountError> {
        let mut sales = HashMap::with_capacity_and_hasher(image.sales.len(), sales_hasher(hash_seed));
        sales.extend(image.sales);
        let mut account = PartnerAccount {
            id: image.id,
            currency: image.currency,
            since: image.since,
            cycle: image.cycle,
            contract: image.contract,
            parties: vec![PARTNER_PARTY.to_string(), PLATFORM_PARTY.to_string()],
            split_plans: Vec::new(),
            ledgers: vec![0; PARTY_BASE + 2],
            sales,
            first_period: image.first_period,
            next_to_close: image.next_to_close,
            last_closing: image.last_closing,
            open: OpenPeriods(image.open),
            recent: image.recent,
            statements_issued: image.statements_issued,
        };
        for index in 0..account.contract.versions().len() {
            account.intern_version(index)?;
        }
        if account.ledgers.len() != image.ledgers.len() {
            return Err(AccountError::Image(account.id));
        }
        account.ledgers = image.ledgers;
        Ok(account)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn cycle(&self) -> &Cycle {
        &self.cycle
    }

    pub fn contract(&self) -> &Contract {
        &self.contract
    }

    pub fn since(&self) -> Instant {
        self.since
    }

    /// What the platform owes the partner now, over all periods (negative: the partner owes).
    pub fn payable(&self) -> Minor {
        Minor(-self.ledgers[PARTY_BASE + PARTNER])
    }

    /// Sub-ledger balances by name (debit-positive), for audits and invariant checks.
    pub fn sub_ledgers(&self) -> Vec<(String, Minor)> {
        let mut out = vec![
            ("clearing".to_string(), Minor(self.ledgers[CLEARING])),
            ("fees".to_string(), Minor(self.ledgers[FEES])),
        ];
        for (i, party) in self.parties.iter().enumerate() {
            out.push((format!("party:{party}"), Minor(self.ledgers[PARTY_BASE + i])));
        }
        out
    }

    /// The sum over all sub-ledgers, which double entry keeps at zero.
    pub fn ledger_sum(&self) -> i128 {
        self.ledgers.iter().sum()
    }

    /// The oldest period not yet closed.
    pub fn next_to_close(&self) -> Period {
        self.next_to_close
    }

    pub fn first_period(&self) -> Period {
        self.first_period
    }

    pub fn statements_issued(&self) -> u64 {
        self.statements_issued
    }

    pub fn last_closing(&self) -> Minor {
        self.last_closing
    }

    /// When the next close is due (end of the oldest open period plus grace).
    pub fn next_close_due(&self) -> Instant {
        self.cycle.closes_at(self.next_to_close)
    }

    /// Closes, in order, every period with `end + grace <= now`, appending their statements.
    pub fn close_due(&mut self, now: Instant, out: &mut Vec<Statement>) {
        while self.cycle.closes_at(self.next_to_close) <= now {
            let Some(next) = self.cycle.next_period(self.next_to_close) else {
                return; // the end of representable time: nothing after it can close
            };
            let statement = self.close_one();
            out.push(statement);
            self.next_to_close = next;
        }
    }

    fn close_one(&mut self) -> Statement {
        let period = self.next_to_close;
        let stats = self.open.remove(period.start).unwrap_or_default();
        let (statement, period_fees) = self.statement_for(period, &stats);
        let payable = PARTY_BASE + PARTNER;
        self.ledgers[payable] = self.ledgers[payable].saturating_add(period_fees);
        self.ledgers[FEES] = self.ledgers[FEES].saturating_sub(period_fees);
        assert!(statement.identities_hold(), "statement identities broken for {}", self.id);
        assert_eq!(self.ledger_sum(), 0);
        self.last_closing = statement.closing;
        self.statements_issued += 1;
        if self.open.is_empty() {
            // Nothing is pending in later periods, so the payable is exactly the last closing.
            assert_eq!(self.payable(), self.last_closing);
        }
        statement
    }

    /// The statement of `period` from its figures, with the period fees it would post at close;
    /// also returns those period fees (tiered plus minimum).
    fn statement_for(&self, period: Period, stats: &PeriodStats) -> (Statement, i128) {
        let version_index = self.contract.index_in_force(period.start);
        let version = &self.contract.versions()[version_index];
        // Every figure is within MAX_FIGURE (`commit` refuses what would leave it), and the
        // contract's tiered fee at that volume within MAX_PERIOD_FEE (checked at registration),
        // so these few sums cannot overflow; saturating arithmetic only keeps that a promise
        // that cannot panic.
        let net_volume =
            stats.gross_sales.saturating_sub(stats.refunds).saturating_sub(stats.chargebacks).max(0);
        let tiered = version.tiered_fee(Minor(net_volume.min(MAX_FIGURE)), self.currency).map_or(0, |m| m.0);
        let so_far = stats.fees[FEE_PERCENT]
            .saturating_add(stats.fees[FEE_FIXED])
            .saturating_add(stats.fees[FEE_CHARGEBACK])
            .saturating_add(tiered);
        let minimum = version.minimum_fee().map_or(0, |m| m.0.saturating_sub(so_far.max(0)).max(0));
        let mut fee_figures = stats.fees;
        fee_figures[FEE_TIERED] = fee_figures[FEE_TIERED].saturating_add(tiered);
        fee_figures[FEE_MINIMUM] = fee_figures[FEE_MINIMUM].saturating_add(minimum);

        let share_of = |party: usize| Minor(stats.shares.get(party).copied().unwrap_or(0));
        let plan = &self.split_plans[version_index];
        let mut shares: Vec<(String, Minor)> =
            plan.parties().map(|p| (self.parties[p].clone(), share_of(p))).collect();
        for &party in &stats.touched {
            if !plan.parties().any(|p| p == party) {
                shares.push((self.parties[party].clone(), share_of(party)));
            }
        }
        let fees = FeeBreakdown {
            percent: Minor(fee_figures[FEE_PERCENT]),
            fixed: Minor(fee_figures[FEE_FIXED]),
            chargeback: Minor(fee_figures[FEE_CHARGEBACK]),
            tiered: Minor(fee_figures[FEE_TIERED]),
            minimum: Minor(fee_figures[FEE_MINIMUM]),
        };
        let fee_total = fee_figures.iter().fold(0i128, |a, &f| a.saturating_add(f));
        let closing = self
            .last_closing
            .0
            .saturating_add(share_of(PARTNER).0)
            .saturating_sub(fee_total)
            .saturating_add(stats.adjustments)
            .saturating_sub(stats.payouts);
        let statement = Statement {
            partner: self.id.clone(),
            period,
            currency: self.currency,
            opening: self.last_closing,
            gross_sales: Minor(stats.gross_sales),
            refunds: Minor(stats.refunds),
            chargebacks: Minor(stats.chargebacks),
            shares,
            fees,
            adjustments: Minor(stats.adjustments),
            payouts: Minor(stats.payouts),
            closing: Minor(closing),
            transaction_count: stats.transaction_count,
            late_count: stats.late_count,
        };
        (statement, tiered.saturating_add(minimum))
    }

    /// Makes room for `additional` more sales without growing the sale table.
    pub(crate) fn reserve_sales(&mut self, additional: usize) {
        self.sales.reserve(additional);
    }

    /// Reads, and changes nothing, the memory that applying `tx` to this account reads first: the
    /// account's own fields, the heap blocks behind them (balances, split plan, contract version
    /// and its fees, the open period's figures) and the sale table slot the transaction will look
    /// up or fill. [`crate::Ledger::apply_batch`] calls it for a group of transactions before
    /// applying them, so that their cache misses overlap instead of coming one after another.
    pub(crate) fn warm(&self, tx: &TxInput) {
        use std::hint::black_box;
        black_box((self.recent.start, self.next_to_close.start, self.first_period.start, self.cycle.grace));
        black_box((self.ledgers.first().copied(), self.ledgers.get(PARTY_BASE + PARTNER).copied()));
        black_box(self.split_plans.first().map(|plan| (plan.len, plan.mantissas[0])));
        let version = self.contract.in_force(tx.occurred_at);
        black_box(version.fees.first().map(|fee| matches!(fee, crate::contract::SaleFee::Fixed { .. })));
        if let Some((start, stats)) = self.open.0.last() {
            black_box((
                *start,
                stats.gross_sales,
                stats.shares.first().copied(),
                stats.touched.first().copied(),
            ));
        }
        let key = match tx.kind {
            TxKind::Refund | TxKind::Chargeback => tx.original.as_deref(),
            TxKind::Sale => Some(tx.id.as_str()),
            TxKind::Payout | TxKind::Adjustment => None,
        };
        if let Some(key) = key {
            black_box(self.sales.get(key).map(|sale| sale.reversed));
        }
    }

    /// The period a transaction goes to, and whether it is late.
    fn assign(&mut self, occurred_at: Instant, received_at: Instant) -> Option<(Period, bool)> {
        let own = if self.recent.contains(occurred_at) {
            self.recent
        } else {
            self.cycle.period_containing(occurred_at)?
        };
        let late = occurred_at < self.first_period.start
            || self.cycle.closes_at(own) <= received_at
            || own.start < self.next_to_close.start;
        if !late {
            self.recent = own;
            return Some((own, false));
        }
        // The oldest period still open at `received_at`. With a grace so long that
        // `received_at - grace` lies before any representable period, nothing has closed by
        // time, and the oldest period not yet closed (at least the first) is the answer.
        let by_time = self.cycle.period_containing(received_at.saturating_sub(self.cycle.grace));
        let target = [by_time, Some(self.next_to_close), Some(self.first_period)]
            .into_iter()
            .flatten()
            .max_by_key(|p| p.start)?;
        Some((target, true))
    }

    /// Applies a transaction whose id has passed the idempotency check and whose partner is this
    /// account. Runs the checks from `unknown_currency` on, in the spec's order. An exception
    /// changes nothing.
    pub fn apply(&mut self, tx: &TxInput, fx: &FxTable, fx_max_age: Span) -> Outcome {
        match self.try_apply(tx, fx, fx_max_age) {
            Ok(applied) => Outcome::Applied(applied),
            Err(reason) => Outcome::Exception(reason),
        }
    }

    fn try_apply(
        &mut self,
        tx: &TxInput,
        fx: &FxTable,
        fx_max_age: Span,
    ) -> Result<Applied, ExceptionReason> {
        use ExceptionReason as E;
        let currency =
            text_field(tx.currency.as_deref()).and_then(Currency::from_code).ok_or(E::UnknownCurrency)?;
        let dec = match tx.amount {
            AmountField::Decimal(d) => d,
            AmountField::Missing | AmountField::Malformed(_) => return Err(E::InvalidAmount),
        };
        let amount = dec.to_minor(currency.exponent()).ok_or(E::InvalidAmount)?;
        let signed_ok = tx.kind == TxKind::Adjustment;
        if amount.0 == 0 || (amount.0 < 0 && !signed_ok) {
            return Err(E::InvalidAmount);
        }
        let horizon = tx
            .received_at
            .checked_add(Span::from_seconds(FUTURE_TOLERANCE_SECONDS))
            .ok_or(E::FutureTimestamp)?;
        if tx.occurred_at > horizon {
            return Err(E::FutureTimestamp);
        }
        if tx.kind == TxKind::Adjustment
            && text_field(tx.reason.as_deref()).is_none_or(|r| r.trim().is_empty())
        {
            return Err(E::InvalidAdjustment);
        }
        let mut effect = Effect::new();
        let mut rate = None;
        let mut sale_to_record = None;
        let mut reversal = None;
        match tx.kind {
            TxKind::Sale => {
                let (amount_s, used) = fx
                    .convert(amount, currency, self.currency, tx.occurred_at, fx_max_age)
                    .map_err(|e| match e {
                        FxError::Unavailable => E::FxUnavailable,
                        FxError::Stale => E::FxStale,
                        FxError::Overflow => E::InvalidAmount,
                    })?;
                rate = used.map(Box::new);
                let version_index = self.contract.index_in_force(tx.occurred_at);
                let percent_fee = self.sale_effect(&mut effect, version_index, amount_s)?;
                sale_to_record = Some(SaleRecord {
                    amount,
                    currency,
                    amount_s,
                    version: version_index,
                    percent_fee,
                    reversed: Minor::ZERO,
                });
            }
            TxKind::Refund | TxKind::Chargeback => {
                let original = text_field(tx.original.as_deref()).ok_or(E::UnknownOriginal)?;
                let sale = *self.sales.get(original).ok_or(E::UnknownOriginal)?;
                if currency != sale.currency {
                    return Err(E::InvalidCurrency);
                }
                let reversed = sale.reversed.checked_add(amount).ok_or(E::InvalidAmount)?;
                if reversed > sale.amount {
                    return Err(E::RefundExceedsOriginal);
                }
                let chargeback_fee = if tx.kind == TxKind::Chargeback {
                    self.contract.in_force(tx.occurred_at).chargeback_fee.unwrap_or(Minor::ZERO)
                } else {
                    Minor::ZERO
                };
                self.reversal_effect(&mut effect, &sale, reversed, tx.kind, chargeback_fee)?;
                reversal = Some((original, reversed));
            }
            TxKind::Payout => {
                if currency != self.currency {
                    return Err(E::InvalidCurrency);
                }
                if amount > self.payable() {
                    return Err(E::InsufficientBalance);
                }
                effect.post(PARTY_BASE + PARTNER, CLEARING, amount.0);
                effect.payouts = amount.0;
                effect.amount_s = amount.0;
            }
            TxKind::Adjustment => {
                if currency != self.currency {
                    return Err(E::InvalidCurrency);
                }
                // Raises the partner's payable and lowers platform revenue (or the reverse).
                effect.post(PARTY_BASE + PLATFORM, PARTY_BASE + PARTNER, amount.0);
                effect.adjustments = amount.0;
                effect.amount_s = amount.0;
            }
        }
        let (period, late) = self.assign(tx.occurred_at, tx.received_at).ok_or(E::InvalidAmount)?;
        self.commit(&effect, period, late)?;
        if let Some(record) = sale_to_record {
            self.sales.insert(tx.id.as_str().to_string(), record);
        }
        if let Some((original, reversed)) = reversal {
            if let Some(sale) = self.sales.get_mut(original) {
                sale.reversed = reversed;
            }
        }
        Ok(Applied { period, late, amount_s: Minor(effect.amount_s), payable_after: self.payable(), rate })
    }

    /// Split and fees of a sale; returns the sale's total percent fee.
    fn sale_effect(
        &self,
        effect: &mut Effect,
        version_index: usize,
        amount_s: Minor,
    ) -> Result<Minor, ExceptionReason> {
        use ExceptionReason as E;
        let version = &self.contract.versions()[version_index];
        let plan = &self.split_plans[version_index];
        let parts = plan.split(amount_s).ok_or(E::InvalidAmount)?;
        for (i, party) in plan.parties().enumerate() {
            let part = parts.get(i);
            effect.post(CLEARING, PARTY_BASE + party, part);
            effect.share(party, part);
        }
        let (percent, fixed) = version.sale_fees(amount_s).ok_or(E::InvalidAmount)?;
        let fee_total = percent.0.checked_add(fixed.0).ok_or(E::InvalidAmount)?;
        effect.post(PARTY_BASE + PARTNER, FEES, fee_total);
        effect.gross_sales = amount_s.0;
        effect.fees[FEE_PERCENT] = percent.0;
        effect.fees[FEE_FIXED] = fixed.0;
        effect.amount_s = amount_s.0;
        Ok(percent)
    }

    /// A refund or chargeback taking the sale's cumulative reversal to `reversed`.
    fn reversal_effect(
        &self,
        effect: &mut Effect,
        sale: &SaleRecord,
        reversed: Minor,
        kind: TxKind,
        chargeback_fee: Minor,
    ) -> Result<(), ExceptionReason> {
        use ExceptionReason as E;
        let a = sale.amount.0;
        let before = mul_div_half_even(sale.amount_s.0, sale.reversed.0, a).ok_or(E::InvalidAmount)?;
        let after = mul_div_half_even(sale.amount_s.0, reversed.0, a).ok_or(E::InvalidAmount)?;
        let plan = self.split_plans.get(sale.version).ok_or(E::UnknownOriginal)?;
        let parts_before = plan.split(Minor(before)).ok_or(E::InvalidAmount)?;
        let parts_after = plan.split(Minor(after)).ok_or(E::InvalidAmount)?;
        for (i, party) in plan.parties().enumerate() {
            let back = parts_after.get(i) - parts_before.get(i);
            effect.post(PARTY_BASE + party, CLEARING, back);
            effect.share(party, -back);
        }
        let fee_before = mul_div_half_even(sale.percent_fee.0, sale.reversed.0, a).ok_or(E::InvalidAmount)?;
        let fee_after = mul_div_half_even(sale.percent_fee.0, reversed.0, a).ok_or(E::InvalidAmount)?;
        let fee_back = fee_after - fee_before;
        effect.post(FEES, PARTY_BASE + PARTNER, fee_back);
        effect.fees[FEE_PERCENT] = -fee_back;
        let amount_s = after - before;
        if kind == TxKind::Chargeback {
            effect.chargebacks = amount_s;
            effect.post(PARTY_BASE + PARTNER, FEES, chargeback_fee.0);
            effect.fees[FEE_CHARGEBACK] = chargeback_fee.0;
        } else {
            effect.refunds = amount_s;
        }
        effect.amount_s = amount_s;
        Ok(())
    }

    /// Writes an effect: first every new value is computed with checked arithmetic, then all are
    /// stored, so that an overflow is an exception that changed nothing.
    fn commit(&mut self, effect: &Effect, period: Period, late: bool) -> Result<(), ExceptionReason> {
        use ExceptionReason as E;
        // New ledger balances.
        let mut touched: [(usize, i128); 2 * MAX_POSTINGS] = [(usize::MAX, 0); 2 * MAX_POSTINGS];
        let mut touched_count = 0;
        let mut bump = |ledger: usize, delta: i128, ledgers: &[i128]| -> Option<()> {
            let slot = touched[..touched_count].iter().position(|(l, _)| *l == ledger);
            let i = match slot {
                Some(i) => i,
                None => {
                    touched[touched_count] = (ledger, *ledgers.get(ledger)?);
                    touched_count += 1;
                    touched_count - 1
                }
            };
            touched[i].1 = touched[i].1.checked_add(delta)?;
            Some(())
        };
        let within = |value: i128| (-MAX_FIGURE..=MAX_FIGURE).contains(&value);
        for p in &effect.postings[..effect.posting_count] {
            bump(p.debit, p.amount, &self.ledgers).ok_or(E::InvalidAmount)?;
            bump(p.credit, p.amount.checked_neg().ok_or(E::InvalidAmount)?, &self.ledgers)
                .ok_or(E::InvalidAmount)?;
        }
        if !touched[..touched_count].iter().all(|&(_, value)| within(value)) {
            return Err(E::InvalidAmount);
        }
        // New period figures.
        let current = self.open.get(period.start);
        let base = |f: fn(&PeriodStats) -> i128| current.map_or(0, f);
        let add = |a: i128, b: i128| a.checked_add(b).filter(|&v| within(v)).ok_or(E::InvalidAmount);
        let gross_sales = add(base(|s| s.gross_sales), effect.gross_sales)?;
        let refunds = add(base(|s| s.refunds), effect.refunds)?;
        let chargebacks = add(base(|s| s.chargebacks), effect.chargebacks)?;
        let adjustments = add(base(|s| s.adjustments), effect.adjustments)?;
        let payouts = add(base(|s| s.payouts), effect.payouts)?;
        let mut fees = current.map_or([0; 5], |s| s.fees);
        for (f, d) in fees.iter_mut().zip(effect.fees) {
            *f = add(*f, d)?;
        }
        let mut shares = [0i128; MAX_PARTIES];
        for (i, &(party, delta)) in effect.shares[..effect.share_count].iter().enumerate() {
            let now = current.and_then(|s| s.shares.get(party).copied()).unwrap_or(0);
            shares[i] = add(now, delta)?;
        }

        // Nothing can fail from here on.
        for &(ledger, value) in &touched[..touched_count] {
            self.ledgers[ledger] = value;
        }
        let parties = self.parties.len();
        let stats = self.open.get_or_insert(period.start);
        stats.gross_sales = gross_sales;
        stats.refunds = refunds;
        stats.chargebacks = chargebacks;
        stats.adjustments = adjustments;
        stats.payouts = payouts;
        stats.fees = fees;
        if stats.shares.len() < parties {
            stats.shares.resize(parties, 0);
        }
        for (i, &(party, delta)) in effect.shares[..effect.share_count].iter().enumerate() {
            stats.shares[party] = shares[i];
            if delta != 0 && !stats.touched.contains(&party) {
                stats.touched.push(party);
            }
        }
        stats.transaction_count += 1;
        stats.late_count += u64::from(late);
        debug_assert_eq!(self.ledger_sum(), 0);
        Ok(())
    }

    /// The statement the oldest open period would get if it closed now (period fees included),
    /// without changing anything: the partner's live preview.
    pub fn preview(&self) -> Statement {
        let empty = PeriodStats::default();
        let stats = self.open.get(self.next_to_close.start).unwrap_or(&empty);
        self.statement_for(self.next_to_close, stats).0
    }
}
