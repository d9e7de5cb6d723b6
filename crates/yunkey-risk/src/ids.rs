//! Decision ids: a prefix and 128 bits from the operating system's CSPRNG, in hex
//! (`risk-<32 hex>`, `auth-<32 hex>`).

/// Prefix of AssessRisk decision ids.
pub const RISK_PREFIX: &str = "risk";
/// Prefix of AuthenticateUser result ids.
pub const AUTH_PREFIX: &str = "auth";

/// A new id `<prefix>-<32 hex>`.
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        hex::encode(yunkey_crypto::random_bytes::<16>())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_form_and_differ() {
        let a = new_id(RISK_PREFIX);
        let b = new_id(RISK_PREFIX);
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 32);
        assert!(a.starts_with("risk-"));
        assert!(a[5..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
