//! Identifier newtypes, so a sub-scene cid can never be passed where a master cid belongs.

use std::fmt;

/// The longest identifier the engine stores (characters).
pub const MAX_ID_CHARS: usize = 128;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Wraps an identifier, refusing empty, overlong or control-character values.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_id(&value)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A person's identity on the master platform, issued by the CA.
    MasterCid
);
string_id!(
    /// A person's identity under one equity platform (the `cid` of the wire).
    SubCid
);
string_id!(
    /// An equity provider's carbon account (`equityCid`).
    EquityCid
);
string_id!(
    /// An equity platform's application id, handed over offline.
    AppId
);
string_id!(
    /// An order id chosen by the platform (`transactionId` of `orderSettel`).
    OrderId
);

/// The engine's own numeric key of a platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlatformId(pub i64);

/// Why an identifier was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier was empty.
    #[error("must not be empty")]
    Empty,
    /// The identifier was longer than [`MAX_ID_CHARS`].
    #[error("longer than {MAX_ID_CHARS} characters")]
    TooLong,
    /// The identifier contained a control character or surrounding whitespace.
    #[error("contains control characters or leading/trailing whitespace")]
    BadCharacters,
}

fn check_id(value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(IdError::TooLong);
    }
    if value.chars().any(char::is_control) || value.trim() != value {
        return Err(IdError::BadCharacters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_ids() {
        assert_eq!(SubCid::new(""), Err(IdError::Empty));
        assert_eq!(SubCid::new(" a"), Err(IdError::BadCharacters));
        assert_eq!(SubCid::new("a\nb"), Err(IdError::BadCharacters));
        assert_eq!(SubCid::new("x".repeat(129)), Err(IdError::TooLong));
        assert_eq!(SubCid::new("碳".repeat(128)).unwrap().as_str().chars().count(), 128);
    }
}
