//! settle-core: Settle's settlement semantics (`shared/spec/settlement.md`, version 1) as a pure,
//! deterministic state machine.
//!
//! It owns money and currencies, contracts and fee schedules, the FX table, settlement cycles and
//! periods, partner accounts with their sub-ledgers, statements, and the scenario format of
//! `settle replay`. Every other crate (the live engine, the cluster, the API) calls into it, so that
//! every path gives the same numbers.
//!
//! It must not touch I/O, async runtimes, clocks or randomness: instants, hash seeds and ids are
//! inputs. Iteration order that can reach an output comes from ordered collections only.

#![cfg_attr(test, allow(clippy::type_complexity))]

pub mod account;
pub mod contract;
pub mod currency;
pub mod cycle;
pub mod decimal;
pub mod fx;
pub mod ledger;
pub mod replay;
pub mod scenario;
pub mod split;
pub mod statement;
pub mod time;
pub mod tx;

pub use account::{AccountImage, PartnerAccount};
pub use contract::{Contract, ContractVersion, PeriodFee, SaleFee, Share};
pub use currency::Currency;
pub use cycle::{Cycle, CycleKind, Period};
pub use decimal::{Dec, Minor};
pub use fx::{FxRate, FxTable, RateUsed};
pub use ledger::{IdCheck, IdIndex, Ledger, Partner};
pub use statement::Statement;
pub use time::{Instant, Span};
pub use tx::{AmountField, ExceptionReason, Outcome, TxId, TxInput, TxKind};

/// The version of the settlement semantics this crate implements.
pub const SEMANTICS_VERSION: u32 = 1;
