//! Orders of `orderSettel` (SPEC §5): validation of the wire body into a typed [`Order`], and the
//! canonical request hash that makes settlement idempotent.

use sha2::{Digest, Sha256};

use crate::amount::{AmountError, Points};
use crate::ids::{EquityCid, IdError, OrderId, SubCid};

/// Most items (`data`) an order may carry.
pub const MAX_ITEMS: usize = 100;
/// Most characters (not bytes) of one item description.
pub const MAX_ITEM_CHARS: usize = 20;
/// Most characters of a `transactionType` the engine will store; rules may allow fewer.
pub const MAX_TRANSACTION_TYPE_CHARS: usize = 64;

/// The body of `orderSettel` after JSON decoding, before validation. Field names follow the wire.
#[derive(Clone, Debug, Default)]
pub struct OrderInput {
    /// `cid`: the person's sub-scene cid under the calling platform.
    pub cid: String,
    /// `equityCid`: the provider's account.
    pub equity_cid: String,
    /// `transactionId`: the platform's order id.
    pub transaction_id: String,
    /// `parentTransactionId`: the purchase a refund refers to.
    pub parent_transaction_id: Option<String>,
    /// `transactionPointA` as sent (decimal string).
    pub transaction_point_a: Option<String>,
    /// `transactionPointB` as sent (decimal string).
    pub transaction_point_b: Option<String>,
    /// `transactionTime`, already converted to ms since the epoch by the caller.
    pub transaction_time_ms: i64,
    /// `transactionType`, platform-defined.
    pub transaction_type: String,
    /// `type`: 0 (default) or 1 (convert reductions when points are short).
    pub convert_type: Option<i64>,
    /// `data`: item descriptions.
    pub data: Vec<String>,
}

/// Whether an order takes points or gives them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderKind {
    /// Positive amounts: the person pays the provider.
    Purchase,
    /// Negative amounts: the provider returns points of an earlier purchase.
    Refund,
}

/// A validated order. Amounts are signed hundredths: positive for a purchase, negative for a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// The person's sub-scene cid under the calling platform.
    pub cid: SubCid,
    /// The provider's account.
    pub equity_cid: EquityCid,
    /// The platform's order id.
    pub transaction_id: OrderId,
    /// The purchase a refund refers to (optional and informational on purchases).
    pub parent_transaction_id: Option<OrderId>,
    /// Class A points of the order (absent on the wire = 0).
    pub point_a: Points,
    /// Class B points of the order (absent on the wire = 0).
    pub point_b: Points,
    /// When the order was placed, ms since the epoch.
    pub transaction_time_ms: i64,
    /// Platform-defined type, checked by the platform's rules.
    pub transaction_type: String,
    /// `type = 1`: reductions may be converted when points are short.
    pub auto_convert: bool,
    /// Item descriptions.
    pub items: Vec<String>,
}

/// A field of the body that is missing or malformed. The host answers it with 40001.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The wire field name.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// A field error from a name and a reason.
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        FieldError { field: field.to_owned(), reason: reason.into() }
    }
}

impl From<AmountError> for FieldError {
    fn from(err: AmountError) -> Self {
        FieldError { field: err.field, reason: err.reason }
    }
}

fn id<T>(field: &str, value: String, make: fn(String) -> Result<T, IdError>) -> Result<T, FieldError> {
    make(value).map_err(|err| FieldError::new(field, err.to_string()))
}

impl OrderInput {
    /// The wire body that validates to `order` (amounts in canonical form).
    pub fn from_order(order: &Order) -> Self {
        OrderInput {
            cid: order.cid.to_string(),
            equity_cid: order.equity_cid.to_string(),
            transaction_id: order.transaction_id.to_string(),
            parent_transaction_id: order.parent_transaction_id.as_ref().map(OrderId::to_string),
            transaction_point_a: Some(order.point_a.to_string()),
            transaction_point_b: Some(order.point_b.to_string()),
            transaction_time_ms: order.transaction_time_ms,
            transaction_type: order.transaction_type.clone(),
            convert_type: Some(i64::from(order.auto_convert)),
            data: order.items.clone(),
        }
    }

    /// Validates the body into an [`Order`] (SPEC §5 step 1).
    pub fn validate(self) -> Result<Order, FieldError> {
        let cid = id("cid", self.cid, SubCid::new)?;
        let equity_cid = id("equityCid", self.equity_cid, EquityCid::new)?;
        let transaction_id = id("transactionId", self.transaction_id, OrderId::new)?;
        let parent_transaction_id = self
            .parent_transaction_id
            .filter(|parent| !parent.is_empty())
            .map(|parent| id("parentTransactionId", parent, OrderId::new))
            .transpose()?;
        let point_a = parse_optional("transactionPointA", self.transaction_point_a.as_deref())?;
        let point_b = parse_optional("transactionPointB", self.transaction_point_b.as_deref())?;
        let (point_a, point_b) = match (point_a, point_b) {
            (None, None) => {
                return Err(FieldError::new(
                    "transactionPointA",
                    "transactionPointA and transactionPointB must not both be absent",
                ));
            }
            (a, b) => (a.unwrap_or(Points::ZERO), b.unwrap_or(Points::ZERO)),
        };
        if point_a.0 * point_b.0 < 0 {
            return Err(FieldError::new(
                "transactionPointB",
                "transactionPointA and transactionPointB must share a sign (positive = purchase, negative = refund)",
            ));
        }
        if point_a.0 == 0 && point_b.0 == 0 {
            return Err(FieldError::new("transactionPointA", "the order's total must not be zero"));
        }
        let is_refund = point_a.0 < 0 || point_b.0 < 0;
        match &parent_transaction_id {
            None if is_refund => {
                return Err(FieldError::new(
                    "parentTransactionId",
                    "a refund (negative amounts) must name the purchase it refunds",
                ));
            }
            Some(parent) if *parent == transaction_id => {
                return Err(FieldError::new("parentTransactionId", "must differ from transactionId"));
            }
            _ => {}
        }
        if self.transaction_type.is_empty() {
            return Err(FieldError::new("transactionType", "must not be empty"));
        }
        if self.transaction_type.chars().count() > MAX_TRANSACTION_TYPE_CHARS {
            return Err(FieldError::new(
                "transactionType",
                format!("longer than {MAX_TRANSACTION_TYPE_CHARS} characters"),
            ));
        }
        let auto_convert = match self.convert_type.unwrap_or(0) {
            0 => false,
            1 => true,
            other => return Err(FieldError::new("type", format!("must be 0 or 1, not {other}"))),
        };
        if self.data.is_empty() || self.data.len() > MAX_ITEMS {
            return Err(FieldError::new(
                "data",
                format!("must hold 1 to {MAX_ITEMS} item descriptions, not {}", self.data.len()),
            ));
        }
        if let Some(index) = self.data.iter().position(|item| item.chars().count() > MAX_ITEM_CHARS) {
            return Err(FieldError::new(&format!("data[{index}]"), format!("longer than {MAX_ITEM_CHARS} characters")));
        }
        Ok(Order {
            cid,
            equity_cid,
            transaction_id,
            parent_transaction_id,
            point_a,
            point_b,
            transaction_time_ms: self.transaction_time_ms,
            transaction_type: self.transaction_type,
            auto_convert,
            items: self.data,
        })
    }
}

fn parse_optional(field: &str, text: Option<&str>) -> Result<Option<Points>, FieldError> {
    text.map(|text| Points::parse(field, text)).transpose().map_err(FieldError::from)
}

impl Order {
    /// Purchase or refund, from the sign of the amounts.
    pub fn kind(&self) -> OrderKind {
        if self.point_a.0 < 0 || self.point_b.0 < 0 { OrderKind::Refund } else { OrderKind::Purchase }
    }

    /// Points A + B of the order (the bill's `amount`).
    pub fn total(&self) -> Points {
        Points(self.point_a.0 + self.point_b.0)
    }

    /// The sha256 (hex) of the canonical form of the order.
    ///
    /// Two bodies that mean the same order (`"12.50"` vs `"12.5"`, an absent amount vs `"0"`)
    /// hash alike; any difference in meaning changes the hash. Idempotency compares these.
    pub fn canonical_hash(&self) -> String {
        let canonical = serde_json::json!([
            self.cid.as_str(),
            self.equity_cid.as_str(),
            self.transaction_id.as_str(),
            self.parent_transaction_id.as_ref().map(OrderId::as_str),
            self.point_a.0,
            self.point_b.0,
            self.transaction_time_ms,
            self.transaction_type,
            self.auto_convert,
            self.items,
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> OrderInput {
        OrderInput {
            cid: "c1".into(),
            equity_cid: "e1".into(),
            transaction_id: "t1".into(),
            transaction_point_a: Some("10".into()),
            transaction_time_ms: 1_700_000_000_000,
            transaction_type: "0".into(),
            data: vec!["话费充值卡".into()],
            ..OrderInput::default()
        }
    }

    fn field_of(input: OrderInput) -> String {
        input.validate().unwrap_err().field
    }

    #[test]
    fn valid_purchase() {
        let order = input().validate().unwrap();
        assert_eq!(order.kind(), OrderKind::Purchase);
        assert_eq!(order.total(), Points::whole(10));
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(OrderInput { cid: String::new(), ..input() }), "cid");
        assert_eq!(field_of(OrderInput { transaction_point_a: None, ..input() }), "transactionPointA");
        assert_eq!(field_of(OrderInput { transaction_point_b: Some("-1".into()), ..input() }), "transactionPointB");
        assert_eq!(field_of(OrderInput { transaction_point_a: Some("0".into()), ..input() }), "transactionPointA");
        assert_eq!(field_of(OrderInput { transaction_point_a: Some("1.001".into()), ..input() }), "transactionPointA");
        assert_eq!(field_of(OrderInput { transaction_point_a: Some("-1".into()), ..input() }), "parentTransactionId");
        assert_eq!(field_of(OrderInput { convert_type: Some(2), ..input() }), "type");
        assert_eq!(field_of(OrderInput { data: vec![], ..input() }), "data");
        assert_eq!(field_of(OrderInput { data: vec!["x".into(); 101], ..input() }), "data");
        assert_eq!(field_of(OrderInput { data: vec!["ok".into(), "长".repeat(21)], ..input() }), "data[1]");
        // 20 characters of 3 bytes each are fine: the limit counts characters.
        assert!(OrderInput { data: vec!["长".repeat(20)], ..input() }.validate().is_ok());
    }

    #[test]
    fn from_order_round_trips() {
        let order = input().validate().unwrap();
        assert_eq!(OrderInput::from_order(&order).validate().unwrap(), order);
    }

    #[test]
    fn canonical_hash_ignores_spelling_not_meaning() {
        let a = input().validate().unwrap();
        let b =
            OrderInput { transaction_point_a: Some("10.00".into()), transaction_point_b: Some("0".into()), ..input() }
                .validate()
                .unwrap();
        assert_eq!(a.canonical_hash(), b.canonical_hash());
        let c = OrderInput { transaction_point_a: Some("10.01".into()), ..input() }.validate().unwrap();
        assert_ne!(a.canonical_hash(), c.canonical_hash());
        let d = OrderInput { data: vec!["充电宝".into()], ..input() }.validate().unwrap();
        assert_ne!(a.canonical_hash(), d.canonical_hash());
    }
}
