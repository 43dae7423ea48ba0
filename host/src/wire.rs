//! Wire shapes shared by the platform API and the pushes, so the two cannot drift apart.

use carbon_engine::bill::Bill;
use serde::Serialize;

/// One bill row on the wire: the seed's fields plus the split by class. The same shape in
/// `getPointsBillInfo` answers and in bill pushes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillRow {
    cid: String,
    equity_cid: String,
    transaction_id: String,
    parent_transaction_id: Option<String>,
    amount: String,
    transaction_time: i64,
    transaction_payment_time: i64,
    transaction_type: String,
    transaction_point_a: String,
    transaction_point_b: String,
    converted_reduction: String,
}

impl From<Bill> for BillRow {
    fn from(bill: Bill) -> Self {
        BillRow {
            amount: bill.amount().to_string(),
            cid: bill.cid.to_string(),
            equity_cid: bill.equity_cid.to_string(),
            transaction_id: bill.transaction_id,
            parent_transaction_id: bill.parent_transaction_id,
            transaction_time: bill.transaction_time_ms,
            transaction_payment_time: bill.settled_at_ms,
            transaction_type: bill.transaction_type,
            transaction_point_a: bill.point_a.to_string(),
            transaction_point_b: bill.point_b.to_string(),
            converted_reduction: bill.converted_reduction.to_string(),
        }
    }
}
