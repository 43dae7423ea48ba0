//! Bills: one row per settled order or refund, as seen by the platform that settled it.

use crate::amount::{Grams, Points};
use crate::ids::{EquityCid, SubCid};
use crate::order::FieldError;

/// Largest page the bill query serves.
pub const MAX_PAGE_SIZE: u32 = 500;

/// How deep a bill query may page, and how far it counts: `page × pageSize` is at most this
/// many rows, and [`BillPage::total`] stops counting here ([`BillPage::total_capped`]).
///
/// An `OFFSET` costs as many index entries as it skips and a count as many as it counts, so
/// without a bound one query over a busy platform's year reads millions of rows. Older bills
/// stay reachable by narrowing `beginTime`/`endTime` (each window pages from its newest bill),
/// which is keyset paging on `transactionTime`.
pub const MAX_RESULT_WINDOW: u64 = 10_000;

/// A bill query of one platform (`getPointsBillInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillQuery {
    /// Only this person's bills, when given.
    pub cid: Option<SubCid>,
    /// Only this provider's bills, when given.
    pub equity_cid: Option<EquityCid>,
    /// Inclusive lower bound on `transactionTime`, ms.
    pub begin_ms: i64,
    /// Inclusive upper bound on `transactionTime`, ms.
    pub end_ms: i64,
    /// 1-based page number.
    pub page: u32,
    /// Rows per page, 1..=500.
    pub page_size: u32,
}

impl BillQuery {
    /// Checks the range and paging.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.end_ms < self.begin_ms {
            return Err(FieldError::new("endTime", "must not be before beginTime"));
        }
        if self.page == 0 {
            return Err(FieldError::new("page", "must be 1 or more"));
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return Err(FieldError::new("pageSize", format!("must be 1 to {MAX_PAGE_SIZE}")));
        }
        if u64::from(self.page) * u64::from(self.page_size) > MAX_RESULT_WINDOW {
            return Err(FieldError::new(
                "page",
                format!(
                    "page × pageSize must not exceed {MAX_RESULT_WINDOW}; narrow beginTime/endTime to reach older bills"
                ),
            ));
        }
        Ok(())
    }

    /// Rows to skip.
    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.page_size)
    }
}

/// One bill row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bill {
    /// The platform's own sub-scene cid of the person.
    pub cid: SubCid,
    /// The provider.
    pub equity_cid: EquityCid,
    /// The order id.
    pub transaction_id: String,
    /// The refunded purchase, or the informational parent of a purchase.
    pub parent_transaction_id: Option<String>,
    /// Class A points (negative for refunds).
    pub point_a: Points,
    /// Class B points (negative for refunds).
    pub point_b: Points,
    /// Reductions converted to pay this order.
    pub converted_reduction: Grams,
    /// When the order was placed, ms.
    pub transaction_time_ms: i64,
    /// When it was settled, ms (`transactionPaymentTime`).
    pub settled_at_ms: i64,
    /// Platform-defined type.
    pub transaction_type: String,
}

impl Bill {
    /// The bill's `amount`: points A + B.
    pub fn amount(&self) -> Points {
        Points(self.point_a.0 + self.point_b.0)
    }
}

/// One page of bills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillPage {
    /// Rows matching the query, over all pages, counted up to [`MAX_RESULT_WINDOW`].
    pub total: u64,
    /// More than `total` rows match: the count stopped at [`MAX_RESULT_WINDOW`].
    pub total_capped: bool,
    /// The rows of this page, newest `transactionTime` first.
    pub bills: Vec<Bill>,
}
