//! The operations requests (tags 20+ of the schema): listing a partner's transactions for
//! `settle reconcile` and taking a checkpoint for `settle backup`. Both only read the store.

use super::backend::Backend;
use super::{backend_error, convert};
use crate::engine::ListQuery;
use settle_core::{AmountField, Instant, TxInput};
use settle_wire::{self as wire, response, ErrorCode, Response};

pub async fn list_transactions<B: Backend>(q: wire::ListTransactions, backend: &B) -> Response {
    let Some(from) = Instant::parse_rfc3339(&q.from) else {
        return Response::error(ErrorCode::Malformed, "from: not an RFC 3339 instant");
    };
    let to = if q.to.is_empty() {
        None
    } else {
        match Instant::parse_rfc3339(&q.to) {
            Some(t) => Some(t),
            None => return Response::error(ErrorCode::Malformed, "to: not an RFC 3339 instant"),
        }
    };
    let limit = q.limit as usize;
    if limit == 0 || limit > wire::MAX_LIST_ITEMS {
        return Response::error(ErrorCode::Malformed, format!("limit: 1..={}", wire::MAX_LIST_ITEMS));
    }
    let query = ListQuery {
        partner: q.partner,
        from,
        to,
        after_seq: q.after_seq,
        limit,
        max_scan: wire::MAX_LIST_SCAN,
    };
    let page = match backend.list_transactions(query).await {
        Ok(p) => p,
        Err(e) => return backend_error(e),
    };
    let mut out = wire::TransactionPage {
        items: Vec::with_capacity(page.items.len()),
        next_after_seq: page.next_after_seq,
        done: page.done,
        period_start: page.period.start.to_rfc3339(),
        period_end: page.period.end.to_rfc3339(),
    };
    let mut bytes = 0usize;
    for (seq, tx, outcome) in &page.items {
        let result = settle_core::tx::TxResult { outcome: outcome.clone(), duplicate: false };
        let item = wire::ListedTransaction {
            seq: *seq,
            tx: Some(transaction(tx)),
            received_at: tx.received_at.to_rfc3339(),
            result: Some(convert::tx_result(&result, Some(page.currency))),
        };
        bytes += prost::Message::encoded_len(&item);
        // At least one item per page (one transaction fits a frame: it arrived in one), so a
        // reader always moves on.
        if bytes > wire::MAX_LIST_PAGE_BYTES && !out.items.is_empty() {
            // Resume at this item next time.
            out.next_after_seq = seq.saturating_sub(1);
            out.done = false;
            break;
        }
        out.items.push(item);
    }
    Response::new(response::Body::TransactionPage(out))
}

pub async fn checkpoint<B: Backend>(c: wire::CreateCheckpoint, backend: &B) -> Response {
    let dir = std::path::PathBuf::from(&c.dir);
    if !dir.is_absolute() {
        return Response::error(ErrorCode::Malformed, "dir: an absolute path on the node's host");
    }
    if dir.exists() {
        return Response::error(ErrorCode::Rejected, format!("{} exists already", dir.display()));
    }
    match backend.checkpoint(dir).await {
        Ok(last) => Response::new(response::Body::CheckpointCreated(wire::CheckpointCreated {
            dir: c.dir,
            last_seq: last.unwrap_or(0),
        })),
        Err(e) => backend_error(e),
    }
}

/// A stored transaction back in its wire form (amounts as given, instants normalised).
fn transaction(tx: &TxInput) -> wire::Transaction {
    let kind = match tx.kind {
        settle_core::TxKind::Sale => wire::TxKind::Sale,
        settle_core::TxKind::Refund => wire::TxKind::Refund,
        settle_core::TxKind::Chargeback => wire::TxKind::Chargeback,
        settle_core::TxKind::Payout => wire::TxKind::Payout,
        settle_core::TxKind::Adjustment => wire::TxKind::Adjustment,
    };
    let amount = match &tx.amount {
        AmountField::Missing => None,
        AmountField::Decimal(d) => Some(d.to_string()),
        AmountField::Malformed(raw) => Some(raw.clone()),
    };
    wire::Transaction {
        id: tx.id.as_str().to_string(),
        partner: tx.partner.clone(),
        kind: kind as i32,
        amount,
        currency: tx.currency.clone(),
        occurred_at: tx.occurred_at.to_rfc3339(),
        original: tx.original.clone(),
        reason: tx.reason.clone(),
        metadata_json: tx.metadata.clone(),
    }
}
