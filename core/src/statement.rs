//! Statements: what a partner is told about one closed period.

use crate::currency::Currency;
use crate::cycle::Period;
use crate::decimal::Minor;
use serde::{Deserialize, Serialize};

/// Fees of a period, net, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeBreakdown {
    pub percent: Minor,
    pub fixed: Minor,
    pub chargeback: Minor,
    pub tiered: Minor,
    pub minimum: Minor,
}

impl FeeBreakdown {
    pub fn total(&self) -> Option<Minor> {
        self.percent
            .checked_add(self.fixed)?
            .checked_add(self.chargeback)?
            .checked_add(self.tiered)?
            .checked_add(self.minimum)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub partner: String,
    pub period: Period,
    pub currency: Currency,
    pub opening: Minor,
    pub gross_sales: Minor,
    pub refunds: Minor,
    pub chargebacks: Minor,
    /// Net per party: the parties of the version in force at the period's start, then any other
    /// party that received a nonzero posting in the period, in the order of its first posting.
    pub shares: Vec<(String, Minor)>,
    pub fees: FeeBreakdown,
    pub adjustments: Minor,
    pub payouts: Minor,
    pub closing: Minor,
    pub transaction_count: u64,
    pub late_count: u64,
}

impl Statement {
    pub fn share_of(&self, party: &str) -> Minor {
        self.shares.iter().find(|(p, _)| p == party).map(|(_, m)| *m).unwrap_or(Minor::ZERO)
    }

    /// The two identities of the spec; `true` when both hold.
    pub fn identities_hold(&self) -> bool {
        let volume = self.gross_sales.checked_sub(self.refunds).and_then(|v| v.checked_sub(self.chargebacks));
        let shares = self.shares.iter().try_fold(Minor::ZERO, |a, (_, m)| a.checked_add(*m));
        let closing = self
            .opening
            .checked_add(self.share_of(crate::contract::PARTNER_PARTY))
            .and_then(|v| v.checked_sub(self.fees.total()?))
            .and_then(|v| v.checked_add(self.adjustments))
            .and_then(|v| v.checked_sub(self.payouts));
        volume.is_some() && volume == shares && closing == Some(self.closing)
    }
}
