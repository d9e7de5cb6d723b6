//! The canonical transaction encoding: the exact bytes that a user approves and a chip signs.
//!
//! ```text
//! yunkey-tx/1\n
//! payer:<payer>\n
//! payee:<payee>\n
//! amount:<amount>\n
//! currency:<currency>\n
//! transaction_id:<transaction_id>\n
//! nonce:<nonce as lower-case hex>\n
//! expires_at:<unix seconds, decimal>\n
//! ```
//!
//! Fields are UTF-8 without control characters, so a line break can only end a field, and
//! every field has exactly one accepted spelling (see [`validate`]); one transaction
//! therefore has exactly one encoding. `tx_hash` is SHA-256 of these bytes.

use crate::validate::{self, InvalidField};
use crate::Digest;
use yunkey_proto::v1::Transaction;

/// First line of the encoding; changes if the format ever does.
pub const HEADER: &str = "yunkey-tx/1";
/// Shortest accepted nonce, in bytes.
pub const MIN_NONCE: usize = 16;
/// Longest accepted nonce, in bytes.
pub const MAX_NONCE: usize = 64;
/// Longest payer, payee or transaction id, in bytes.
pub const MAX_FIELD: usize = 128;
/// How far ahead of the checking clock an authorization may expire, in seconds. Coordinator
/// and chip both enforce it.
pub const MAX_AUTHORIZATION_LIFETIME_SECS: i64 = 600;

/// Checks every field of a transaction (not its expiry against a clock: see [`check_expiry`]).
pub fn validate(tx: &Transaction) -> Result<(), InvalidField> {
    validate::text("transaction.payer", &tx.payer, MAX_FIELD, false)?;
    validate::text("transaction.payee", &tx.payee, MAX_FIELD, false)?;
    check_amount(&tx.amount)?;
    if !(tx.currency.len() == 3 && tx.currency.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(InvalidField::new(
            "transaction.currency",
            format!(
                "{:?} is not 3 upper-case letters (for example \"EUR\")",
                tx.currency
            ),
        ));
    }
    validate::text(
        "transaction.transaction_id",
        &tx.transaction_id,
        MAX_FIELD,
        false,
    )?;
    if !(MIN_NONCE..=MAX_NONCE).contains(&tx.nonce.len()) {
        return Err(InvalidField::new(
            "transaction.nonce",
            format!(
                "is {} bytes; {MIN_NONCE} to {MAX_NONCE} random bytes are required",
                tx.nonce.len()
            ),
        ));
    }
    if tx.expires_at <= 0 {
        return Err(InvalidField::new(
            "transaction.expires_at",
            "must be a Unix time in seconds",
        ));
    }
    Ok(())
}

/// Validates a transaction and returns its canonical bytes.
pub fn encode(tx: &Transaction) -> Result<Vec<u8>, InvalidField> {
    validate(tx)?;
    let text = format!(
        "{HEADER}\npayer:{}\npayee:{}\namount:{}\ncurrency:{}\ntransaction_id:{}\nnonce:{}\nexpires_at:{}\n",
        tx.payer,
        tx.payee,
        tx.amount,
        tx.currency,
        tx.transaction_id,
        hex::encode(&tx.nonce),
        tx.expires_at
    );
    Ok(text.into_bytes())
}

/// Validates a transaction and returns its canonical bytes and their SHA-256 (`tx_hash`).
pub fn encode_and_hash(tx: &Transaction) -> Result<(Vec<u8>, Digest), InvalidField> {
    let bytes = encode(tx)?;
    let hash = crate::sha256(&bytes);
    Ok((bytes, hash))
}

/// Parses canonical bytes back into a transaction; refuses anything that is not exactly the
/// canonical encoding of what it parses to.
pub fn decode(bytes: &[u8]) -> Result<Transaction, InvalidField> {
    const FIELD: &str = "canonical_transaction";
    let text = std::str::from_utf8(bytes).map_err(|_| InvalidField::new(FIELD, "is not UTF-8"))?;
    let mut lines = text.strip_suffix('\n').unwrap_or(text).split('\n');
    if lines.next() != Some(HEADER) {
        return Err(InvalidField::new(
            FIELD,
            format!("does not start with {HEADER:?}"),
        ));
    }
    let mut next = |name: &'static str| -> Result<&str, InvalidField> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| InvalidField::new(FIELD, format!("missing line {name:?}")))
    };
    let tx = Transaction {
        payer: next("payer")?.to_owned(),
        payee: next("payee")?.to_owned(),
        amount: next("amount")?.to_owned(),
        currency: next("currency")?.to_owned(),
        transaction_id: next("transaction_id")?.to_owned(),
        nonce: hex::decode(next("nonce")?)
            .map_err(|_| InvalidField::new(FIELD, "nonce is not hex"))?,
        expires_at: next("expires_at")?
            .parse()
            .map_err(|_| InvalidField::new(FIELD, "expires_at is not an integer"))?,
    };
    if encode(&tx)? != bytes {
        return Err(InvalidField::new(FIELD, "is not in canonical form"));
    }
    Ok(tx)
}

/// Checks that an authorization expiring at `expires_at` is still valid at `now` and does not
/// reach further ahead than `max_ahead_secs`.
pub fn check_expiry(expires_at: i64, now: i64, max_ahead_secs: i64) -> Result<(), ExpiryError> {
    if expires_at <= now {
        return Err(ExpiryError::Expired { expires_at, now });
    }
    if expires_at - now > max_ahead_secs {
        return Err(ExpiryError::TooFar {
            expires_at,
            now,
            max_ahead_secs,
        });
    }
    Ok(())
}

/// Why an expiry time is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// The authorization has expired.
    #[error("authorization expired at {expires_at} (server time {now}); authorize again")]
    Expired {
        /// When it expired.
        expires_at: i64,
        /// The checking clock.
        now: i64,
    },
    /// The expiry is further ahead than allowed.
    #[error("expires_at {expires_at} is more than {max_ahead_secs} s after server time {now}")]
    TooFar {
        /// The requested expiry.
        expires_at: i64,
        /// The checking clock.
        now: i64,
        /// The allowed window.
        max_ahead_secs: i64,
    },
}

fn check_amount(amount: &str) -> Result<(), InvalidField> {
    if canonical_amount(amount).as_deref() == Ok(amount) {
        Ok(())
    } else {
        Err(InvalidField::new(
            "transaction.amount",
            format!(
                "{amount:?} is not a canonical decimal: digits, optional '.' and 1-8 fraction \
                 digits, no leading zeros, no trailing fraction zeros (for example \"12.5\")"
            ),
        ))
    }
}

/// Turns a human-typed amount such as `"012.50"` into canonical form (`"12.5"`).
pub fn canonical_amount(input: &str) -> Result<String, InvalidField> {
    let bad = || {
        InvalidField::new(
            "transaction.amount",
            format!(
                "{input:?} is not a positive decimal with at most 18 integer and 8 fraction digits"
            ),
        )
    };
    let (int, frac) = input.split_once('.').unwrap_or((input, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (input.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if int.len() > 18 || frac.len() > 8 {
        return Err(bad());
    }
    let int = if int.is_empty() { "0" } else { int };
    if int == "0" && frac.is_empty() {
        return Err(InvalidField::new(
            "transaction.amount",
            "must be greater than zero",
        ));
    }
    Ok(if frac.is_empty() {
        int.to_owned()
    } else {
        format!("{int}.{frac}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transaction {
        Transaction {
            payer: "alice".into(),
            payee: "Coffee Shop".into(),
            amount: "12.5".into(),
            currency: "EUR".into(),
            transaction_id: "tx-1".into(),
            nonce: vec![7u8; 16],
            expires_at: 1_800_000_000,
        }
    }

    #[test]
    fn encoding_is_stable() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "yunkey-tx/1\npayer:alice\npayee:Coffee Shop\namount:12.5\ncurrency:EUR\n\
             transaction_id:tx-1\nnonce:07070707070707070707070707070707\nexpires_at:1800000000\n"
        );
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = encode_and_hash(&sample()).unwrap().1;
        let mut changed = sample();
        changed.amount = "12.51".into();
        assert_ne!(encode_and_hash(&changed).unwrap().1, base);
        let mut changed = sample();
        changed.nonce[0] = 8;
        assert_ne!(encode_and_hash(&changed).unwrap().1, base);
    }

    #[test]
    fn amounts() {
        assert_eq!(canonical_amount("012.50").unwrap(), "12.5");
        assert_eq!(canonical_amount("0.01").unwrap(), "0.01");
        assert_eq!(canonical_amount("100").unwrap(), "100");
        for bad in [
            "",
            "-1",
            "1.",
            ".5",
            "1e3",
            "0",
            "0.000",
            "1.123456789",
            "1,5",
        ] {
            assert!(canonical_amount(bad).is_err(), "{bad}");
        }
        let mut tx = sample();
        tx.amount = "12.50".into();
        assert_eq!(validate(&tx).unwrap_err().field, "transaction.amount");
    }

    #[test]
    fn bad_fields() {
        let mut tx = sample();
        tx.currency = "eur".into();
        assert_eq!(validate(&tx).unwrap_err().field, "transaction.currency");
        let mut tx = sample();
        tx.nonce = vec![1; 4];
        assert_eq!(validate(&tx).unwrap_err().field, "transaction.nonce");
        let mut tx = sample();
        tx.payee = "a\nexpires_at:9".into();
        assert_eq!(validate(&tx).unwrap_err().field, "transaction.payee");
    }

    #[test]
    fn decode_refuses_non_canonical() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.extend_from_slice(b"extra:1\n");
        assert!(decode(&bytes).is_err());
        let text = String::from_utf8(encode(&sample()).unwrap()).unwrap();
        assert!(decode(text.replace("nonce:07", "nonce:0A").as_bytes()).is_err());
    }

    #[test]
    fn expiry() {
        assert!(check_expiry(110, 100, 600).is_ok());
        assert!(matches!(
            check_expiry(100, 100, 600),
            Err(ExpiryError::Expired { .. })
        ));
        assert!(matches!(
            check_expiry(1000, 100, 600),
            Err(ExpiryError::TooFar { .. })
        ));
    }
}
