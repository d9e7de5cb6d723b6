//! Field validation shared by every entry point, so that a bad field gets the same message
//! wherever it arrives.

use std::fmt;

/// A request field that fails validation: which field, and what the caller should fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// The field's name as in the protobuf (for example `transaction.amount`).
    pub field: &'static str,
    /// What is wrong and what is expected.
    pub reason: String,
}

impl InvalidField {
    /// A new validation failure.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidField {}

/// Longest identifier (user id, request id, device id) accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Checks an identifier: 1..=128 bytes of `[A-Za-z0-9._@-]`.
pub fn identifier(field: &'static str, value: &str) -> Result<(), InvalidField> {
    if value.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidField::new(
            field,
            format!("is {} bytes; at most {MAX_ID_LEN} allowed", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')))
    {
        return Err(InvalidField::new(
            field,
            format!("contains {c:?}; only letters, digits and . _ @ - are allowed"),
        ));
    }
    Ok(())
}

/// Checks free text: 1..=`max` bytes (or 0 when `optional`), no control characters.
pub fn text(
    field: &'static str,
    value: &str,
    max: usize,
    optional: bool,
) -> Result<(), InvalidField> {
    if value.is_empty() && !optional {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(InvalidField::new(
            field,
            format!("is {} bytes; at most {max} allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(identifier("user_id", "alice@bank.example").is_ok());
        assert!(identifier("user_id", "").is_err());
        assert!(identifier("user_id", "a b").is_err());
        assert!(identifier("user_id", &"x".repeat(129)).is_err());
        assert_eq!(
            identifier("user_id", "a/b").unwrap_err().to_string(),
            "user_id: contains '/'; only letters, digits and . _ @ - are allowed"
        );
    }

    #[test]
    fn texts() {
        assert!(text("payee", "Shop № 5", 128, false).is_ok());
        assert!(text("payee", "a\nb", 128, false).is_err());
        assert!(text("name", "", 64, true).is_ok());
        assert!(text("payee", "", 64, false).is_err());
    }
}
