//! Storage prices: a vault's signed quote, the memo that names the shards a payment covers,
//! and amounts as people write them.

use super::*;

/// The memo of a storage payment: a hash of the shard keys it pays one vault for, sorted.
pub fn shards_memo(keys: &[RecordKey]) -> [u8; 32] {
    let mut keys = keys.to_vec();
    keys.sort();
    let mut h = blake3::Hasher::new();
    h.update(b"kura-storage-payment-v1");
    h.update(&postcard::to_stdvec(&keys).unwrap_or_default());
    *h.finalize().as_bytes()
}

/// How long a vault's storage quote holds, in seconds.
pub const QUOTE_SECS: u64 = 600;

/// A vault's price per MiB stored, `base` when empty, rising with the square of how full it
/// is to ten times `base` when full.
pub fn price_per_mib(base: u64, used: u64, capacity: u64) -> u64 {
    let capacity = u128::from(capacity.max(1));
    let used = u128::from(used).min(capacity);
    let base = u128::from(base);
    (base + base * 9 * used * used / (capacity * capacity)).min(u128::from(u64::MAX)) as u64
}

/// A vault's signed price for storing shards, paid to its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The vault.
    pub vault: PeerId,
    /// Its libp2p public key (protobuf), whose hash is the peer id.
    #[serde(with = "serde_bytes")]
    pub peer_key: Vec<u8>,
    /// Its ledger account: where payment goes.
    pub account: Address,
    /// Units per MiB of shard stored.
    pub price_per_mib: u64,
    /// Unix time after which the quote no longer holds.
    pub expires: u64,
    /// The vault's signature of all of the above.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Quote {
    fn signed_bytes(vault: &PeerId, account: &Address, price_per_mib: u64, expires: u64) -> Vec<u8> {
        let mut b = b"kura-storage-quote-v1".to_vec();
        b.extend_from_slice(&vault.to_bytes());
        b.extend_from_slice(&account.0);
        b.extend_from_slice(&price_per_mib.to_be_bytes());
        b.extend_from_slice(&expires.to_be_bytes());
        b
    }

    /// A quote signed by the vault holding `keypair`.
    pub fn sign(keypair: &libp2p_identity::Keypair, account: Address, price_per_mib: u64, expires: u64) -> Quote {
        let vault = keypair.public().to_peer_id();
        let signature = keypair.sign(&Self::signed_bytes(&vault, &account, price_per_mib, expires)).unwrap_or_default();
        Quote { vault, peer_key: keypair.public().encode_protobuf(), account, price_per_mib, expires, signature }
    }

    /// Checks the vault's signature, and that the quote still holds at `now`.
    pub fn verify(&self, now: u64) -> Result<(), LedgerError> {
        let key = libp2p_identity::PublicKey::try_decode_protobuf(&self.peer_key)
            .map_err(|_| LedgerError::BadQuote("undecodable vault key".into()))?;
        if key.to_peer_id() != self.vault
            || !key.verify(&Self::signed_bytes(&self.vault, &self.account, self.price_per_mib, self.expires), &self.signature)
        {
            return Err(LedgerError::BadQuote("not signed by the vault it names".into()));
        }
        if now > self.expires {
            return Err(LedgerError::BadQuote(format!("expired {} s ago", now - self.expires)));
        }
        Ok(())
    }

    /// What storing `bytes` costs at this price: at least one unit, or nothing at a price of
    /// zero (a vault that stores for free).
    pub fn cost(&self, bytes: usize) -> u64 {
        if self.price_per_mib == 0 {
            return 0;
        }
        let c = (bytes as u128 * u128::from(self.price_per_mib)).div_ceil(1 << 20);
        c.clamp(1, u128::from(u64::MAX)) as u64
    }
}

/// Formats units as tokens (`1.5 KURA`).
pub fn format_amount(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let u = units.unsigned_abs();
    let whole = u / u128::from(UNITS_PER_TOKEN);
    let frac = u % u128::from(UNITS_PER_TOKEN);
    if frac == 0 {
        return format!("{sign}{whole} KURA");
    }
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{} KURA", frac.trim_end_matches('0'))
}

/// Parses a token amount (`1.5`, `0.000000001`, `2 KURA`) into units.
pub fn parse_amount(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("KURA").trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 9 || !(whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())) {
        return Err(format!("{text:?} is not an amount (say 1.5 for one and a half KURA)"));
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| format!("{text:?} is too large"))? };
    let frac: u64 = format!("{frac:0<9}").parse().map_err(|_| format!("{text:?} is not an amount"))?;
    whole.checked_mul(UNITS_PER_TOKEN).and_then(|w| w.checked_add(frac)).ok_or_else(|| format!("{text:?} is too large"))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_rise_with_fullness_and_quotes_are_the_vaults_own() {
        assert_eq!(price_per_mib(100, 0, 1000), 100);
        assert_eq!(price_per_mib(100, 500, 1000), 325);
        assert_eq!(price_per_mib(100, 1000, 1000), 1000);
        assert!(price_per_mib(100, 900, 1000) > price_per_mib(100, 800, 1000));
        let kp = libp2p_identity::Keypair::generate_ed25519();
        let q = Quote::sign(&kp, Address::random(), 1 << 20, 1000);
        q.verify(999).unwrap();
        assert!(matches!(q.verify(1001), Err(LedgerError::BadQuote(_))));
        assert_eq!(q.cost(1), 1);
        assert_eq!(q.cost(3), 3);
        let mut cheaper = q.clone();
        cheaper.price_per_mib = 1;
        assert!(matches!(cheaper.verify(999), Err(LedgerError::BadQuote(_))), "a client cannot lower the price");
        let mut other = Quote::sign(&libp2p_identity::Keypair::generate_ed25519(), q.account, 1, 1000);
        other.vault = q.vault;
        assert!(other.verify(999).is_err(), "nor sign a quote in a vault's name");
    }

    #[test]
    fn amounts_format_and_parse() {
        assert_eq!(parse_amount("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_amount("0.000000001 KURA"), Ok(1));
        assert_eq!(parse_amount("7"), Ok(7 * UNITS_PER_TOKEN));
        assert!(parse_amount("1.0000000001").is_err());
        assert!(parse_amount("-1").is_err());
        assert!(parse_amount("").is_err());
        assert!(parse_amount("99999999999999999999").is_err());
        assert_eq!(format_amount(1_500_000_000), "1.5 KURA");
        assert_eq!(format_amount(-3), "-0.000000003 KURA");
        assert_eq!(format_amount(2 * 1_000_000_000), "2 KURA");
    }
}
