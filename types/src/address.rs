//! 256-bit addresses in Kura's XOR space.
//!
//! Content addresses are BLAKE3 hashes; other addresses are BLAKE3 of domain-separated
//! preimages (a chunk's coding, a pointer's owner and name). Distances are taken in
//! `kura-node`, which maps addresses into Kademlia's key space.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of an address in bytes.
pub const ADDRESS_LEN: usize = 32;

/// A 256-bit address in Kura's XOR space (a BLAKE3 hash of content, or of a name).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address(pub [u8; ADDRESS_LEN]);

/// Why an address string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressParseError {
    /// The string is not hexadecimal.
    #[error("address is not hexadecimal: {0}")]
    NotHex(String),
    /// The string decodes to the wrong number of bytes.
    #[error("address must be {expected} bytes ({} hex characters), got {got} bytes", expected * 2)]
    WrongLength {
        /// Bytes an address has.
        expected: usize,
        /// Bytes the string held.
        got: usize,
    },
}

impl Address {
    /// The address of `content`: its BLAKE3 hash.
    pub fn of_content(content: &[u8]) -> Self {
        Address(*blake3::hash(content).as_bytes())
    }

    /// BLAKE3 of `parts` under the domain `context` (a fixed string per use), so that an
    /// address of one kind can never be made to equal an address of another.
    pub fn derive(context: &str, parts: &[&[u8]]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(context);
        for p in parts {
            h.update(p);
        }
        Address(*h.finalize().as_bytes())
    }

    /// An address drawn uniformly at random (for tests, audits and health probes).
    pub fn random() -> Self {
        Address(rand::random())
    }

}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", &hex::encode(&self.0[..6]))
    }
}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s.trim()).map_err(|e| AddressParseError::NotHex(e.to_string()))?;
        let arr: [u8; ADDRESS_LEN] = bytes.as_slice().try_into().map_err(|_| {
            AddressParseError::WrongLength {
                expected: ADDRESS_LEN,
                got: bytes.len(),
            }
        })?;
        Ok(Address(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips_through_hex() {
        let a = Address::random();
        assert_eq!(a.to_string().parse::<Address>(), Ok(a));
    }

    #[test]
    fn bad_address_strings_are_errors() {
        assert!(matches!("zz".parse::<Address>(), Err(AddressParseError::NotHex(_))));
        assert_eq!(
            "abcd".parse::<Address>(),
            Err(AddressParseError::WrongLength { expected: 32, got: 2 })
        );
    }

    #[test]
    fn derived_addresses_are_domain_separated() {
        assert_ne!(Address::derive("kura a", &[b"x"]), Address::derive("kura b", &[b"x"]));
        assert_eq!(Address::derive("kura a", &[b"x", b"y"]), Address::derive("kura a", &[b"xy"]));
    }
}
