//! Exact decimal amounts: a transaction's canonical amount string and the limits in the rules
//! file, as whole units of 10^-8 (the finest fraction a canonical amount may have). Never a
//! float: `0.1 + 0.2` is exactly `0.3` here.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// Fraction digits one unit stands for.
pub const FRACTION_DIGITS: u32 = 8;
const SCALE: u128 = 100_000_000;
/// Most integer digits an amount may have (the canonical transaction's limit).
const MAX_INTEGER_DIGITS: usize = 18;

/// A non-negative decimal amount in units of 10^-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u128);

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount(0);

    /// The amount of `units` × 10^-8.
    pub fn from_units(units: u128) -> Self {
        Self(units)
    }

    /// A whole number of currency units.
    pub fn whole(n: u64) -> Self {
        Self(u128::from(n) * SCALE)
    }

    /// Its value in units of 10^-8.
    pub fn units(self) -> u128 {
        self.0
    }

    /// Parses a decimal: digits, then optionally `.` and 1 to 8 fraction digits (leading and
    /// trailing zeros are accepted here; the transaction's canonical form is checked by
    /// `yunkey_crypto::tx::validate` before this is called on it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not a decimal amount: digits, optionally '.' and 1 to 8 fraction \
                 digits, at most {MAX_INTEGER_DIGITS} integer digits (for example \"1000\" or \
                 \"12.5\")"
            )
        };
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        if int.is_empty()
            || int.len() > MAX_INTEGER_DIGITS
            || !int.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut units: u128 = int.parse::<u128>().map_err(|_| bad())? * SCALE;
        if let Some(frac) = frac {
            if frac.is_empty()
                || frac.len() > FRACTION_DIGITS as usize
                || !frac.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad());
            }
            let digits: u128 = frac.parse().map_err(|_| bad())?;
            units += digits * 10u128.pow(FRACTION_DIGITS - frac.len() as u32);
        }
        Ok(Self(units))
    }

    /// The sum, saturating (sums of at most a few thousand 18-digit amounts never come near).
    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }

    /// The difference, or zero.
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Amount {
    /// The canonical form: no leading zeros, no trailing fraction zeros.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int = self.0 / SCALE;
        let frac = self.0 % SCALE;
        if frac == 0 {
            return write!(f, "{int}");
        }
        let digits = format!("{frac:08}");
        write!(f, "{int}.{}", digits.trim_end_matches('0'))
    }
}

/// A limit in the rules file: an integer (`1000`) or a decimal string (`"1000.50"`). A TOML
/// float (`1000.5`) is refused: floats are inexact.
impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an amount: an integer such as 1000 or a decimal string such as \"12.5\"",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                let v =
                    u64::try_from(v).map_err(|_| E::custom(format!("amount {v} is negative")))?;
                self.visit_u64(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount::whole(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
                Err(E::custom(format!(
                    "amount {v} is a float; write decimals as strings (\"{v}\"): floats are inexact"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                Amount::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_and_prints_canonically() {
        assert_eq!(Amount::parse("1000").unwrap(), Amount::whole(1000));
        assert_eq!(Amount::parse("12.5").unwrap().units(), 1_250_000_000);
        assert_eq!(Amount::parse("0.00000001").unwrap().units(), 1);
        let sum = Amount::parse("0.1")
            .unwrap()
            .saturating_add(Amount::parse("0.2").unwrap());
        assert_eq!(sum, Amount::parse("0.3").unwrap());
        assert_eq!(Amount::parse("012.50").unwrap().to_string(), "12.5");
        assert_eq!(
            Amount::parse("999999999999999999.99999999")
                .unwrap()
                .to_string(),
            "999999999999999999.99999999"
        );
    }

    #[test]
    fn refuses_what_is_not_a_decimal() {
        for bad in [
            "",
            ".5",
            "1.",
            "1.123456789",
            "-1",
            "1e3",
            "1,5",
            " 1",
            "1234567890123456789",
        ] {
            assert!(Amount::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
