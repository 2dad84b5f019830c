//! Accounts: one recovery phrase derives every key a user has, and a printable account ID
//! tells others where to send.
//!
//! The seed is 256 bits, shown as a 24-word BIP-39 phrase. From it, by BLAKE3 key derivation
//! under fixed contexts: the Ed25519 key that signs letters and inbox requests, the X25519
//! key letters are sealed to, and the user key that seals private files and owns pointers
//! (see [`crate::UserKey`]; a Kura home that had a user key before its account keeps that
//! one, so nothing stored earlier is lost).
//!
//! An account ID is `kura` followed by base58 of `version ‖ Ed25519 key ‖ X25519 key ‖
//! checksum`, where the checksum is the first 4 bytes of a BLAKE3 hash of the rest: a typo is
//! caught, not sent to a stranger.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use kura_node::message::inbox_address;
use kura_node::Address;
use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::keys::{UserKey, KEY_FILE};

/// The file holding the account's seed, inside the Kura home.
pub const SEED_FILE: &str = "account.seed";

/// Prefix of every account ID.
pub const ID_PREFIX: &str = "kura";
/// The version byte of account IDs this build writes.
const ID_VERSION: u8 = 1;
/// Domain of the account ID checksum.
const ID_CHECKSUM_DOMAIN: &str = "kura 2026-11 account id checksum v1";

/// An account: the seed every key derives from.
#[derive(Clone)]
pub struct Account {
    seed: [u8; 32],
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Account({})", self.id())
    }
}

impl Account {
    /// A new account from fresh randomness (not stored).
    pub fn generate() -> Self {
        Account { seed: rand::random() }
    }

    /// The account whose recovery phrase is `phrase` (24 English BIP-39 words).
    pub fn from_phrase(phrase: &str) -> Result<Self, ClientError> {
        let m = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, phrase.trim())
            .map_err(|e| ClientError::Account(format!("not a recovery phrase: {e}")))?;
        let seed: [u8; 32] = m
            .to_entropy()
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Account(format!("a recovery phrase has 24 words, this one {}", m.word_count())))?;
        Ok(Account { seed })
    }

    /// The 24-word recovery phrase.
    pub fn phrase(&self) -> String {
        // 32 bytes of entropy always make a valid 24-word mnemonic.
        bip39::Mnemonic::from_entropy(&self.seed).map(|m| m.to_string()).unwrap_or_default()
    }

    fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.seed)
    }

    /// The Ed25519 key that signs this account's letters and inbox requests.
    pub fn signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.derive("kura 2026-11 account signing key v1"))
    }

    /// The X25519 key letters to this account are sealed to.
    pub fn sealing_key(&self) -> crypto_box::SecretKey {
        crypto_box::SecretKey::from(self.derive("kura 2026-11 account sealing key v1"))
    }

    /// The user key this account gives a new Kura home.
    pub fn user_key(&self) -> UserKey {
        UserKey(self.derive("kura 2026-11 account user key v1"))
    }

    /// The ledger key: the wallet's account is this key's.
    pub fn wallet_key(&self) -> kura_node::ledger::WalletKey {
        kura_node::ledger::WalletKey::from_seed(&self.derive("kura 2026-11 account wallet key v1"))
    }

    /// Its public ID.
    pub fn id(&self) -> AccountId {
        AccountId { sign: self.signing_key().verifying_key().to_bytes(), seal: *self.sealing_key().public_key().as_bytes() }
    }

    /// The account kept in `home`, if it has one.
    pub fn load(home: &Path) -> Result<Option<Self>, ClientError> {
        let path = home.join(SEED_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = kura_node::durable::decode_key(&bytes).map_err(|reason| ClientError::Key { path: path.clone(), reason })?;
                let seed = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| ClientError::Key { path, reason: format!("{} bytes, expected 32", bytes.len()) })?;
                Ok(Some(Account { seed }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClientError::Key { path, reason: e.to_string() }),
        }
    }

    /// The account kept in `home`, or a clear error saying how to make one.
    pub fn require(home: &Path) -> Result<Self, ClientError> {
        Self::load(home)?.ok_or_else(|| {
            ClientError::Account(format!("no account in {}: run `kura account create` or `kura account recover`", home.display()))
        })
    }

    /// Stores `self` as the account of `home` (exclusive create, fsynced), and gives the home
    /// this account's user key unless it already has one. Returns whether the home kept a user
    /// key of its own. Refuses a home that holds another account.
    pub fn install(&self, home: &Path) -> Result<bool, ClientError> {
        let stored = kura_node::identity::read_or_create_once(home, SEED_FILE, || self.seed.to_vec())
            .map_err(|e| ClientError::Key { path: home.join(SEED_FILE), reason: e.to_string() })?;
        if stored != self.seed {
            return Err(ClientError::Account(format!(
                "{} already holds another account ({}); use another KURA_HOME",
                home.display(),
                Account { seed: stored.as_slice().try_into().unwrap_or([0; 32]) }.id()
            )));
        }
        let had_key = home.join(KEY_FILE).exists();
        let key = self.user_key();
        kura_node::identity::read_or_create_once(home, KEY_FILE, || key.0.to_vec())
            .map_err(|e| ClientError::Key { path: home.join(KEY_FILE), reason: e.to_string() })?;
        Ok(had_key)
    }
}

/// What others need to write to an account: its signing and sealing public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountId {
    /// The Ed25519 key its letters are signed with (and its inbox is named by).
    pub sign: [u8; 32],
    /// The X25519 key letters to it are sealed to.
    pub seal: [u8; 32],
}

impl AccountId {
    /// The address of its inbox.
    pub fn inbox(&self) -> Address {
        inbox_address(&self.sign)
    }

    fn checksum(body: &[u8]) -> [u8; 4] {
        let h = blake3::derive_key(ID_CHECKSUM_DOMAIN, body);
        [h[0], h[1], h[2], h[3]]
    }

    /// The ID as a QR code drawn with Unicode half blocks, for a terminal.
    pub fn qr(&self) -> Result<String, ClientError> {
        let code = qrcode::QrCode::new(self.to_string().as_bytes()).map_err(|e| ClientError::Account(e.to_string()))?;
        Ok(code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build())
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut body = Vec::with_capacity(69);
        body.push(ID_VERSION);
        body.extend_from_slice(&self.sign);
        body.extend_from_slice(&self.seal);
        let sum = Self::checksum(&body);
        body.extend_from_slice(&sum);
        write!(f, "{ID_PREFIX}{}", bs58::encode(body).into_string())
    }
}

impl FromStr for AccountId {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ClientError::Account(format!("not an account ID ({why}): {s:?}"));
        let rest = s.trim().strip_prefix(ID_PREFIX).ok_or_else(|| bad("it must start with \"kura\""))?;
        let bytes = bs58::decode(rest).into_vec().map_err(|_| bad("not base58 after the prefix"))?;
        if bytes.len() != 69 {
            return Err(bad("wrong length"));
        }
        if bytes[0] != ID_VERSION {
            return Err(bad(&format!("unknown version {}", bytes[0])));
        }
        if Self::checksum(&bytes[..65]) != bytes[65..] {
            return Err(bad("checksum mismatch: a character is wrong"));
        }
        let mut id = AccountId { sign: [0; 32], seal: [0; 32] };
        id.sign.copy_from_slice(&bytes[1..33]);
        id.seal.copy_from_slice(&bytes[33..65]);
        ed25519_dalek::VerifyingKey::from_bytes(&id.sign).map_err(|_| bad("its signing key is not a valid Ed25519 key"))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phrase_restores_every_key() {
        let a = Account::generate();
        let phrase = a.phrase();
        assert_eq!(phrase.split_whitespace().count(), 24);
        let b = Account::from_phrase(&phrase).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.user_key().0, b.user_key().0);
        assert_ne!(a.signing_key().to_bytes(), a.user_key().signing_key().to_bytes(), "keys are separate");
        let mut words: Vec<&str> = phrase.split_whitespace().collect();
        words.swap(0, 1);
        if words[0] != words[1] {
            assert!(Account::from_phrase(&words.join(" ")).is_err(), "the phrase's checksum catches a swap");
        }
        assert!(Account::from_phrase("abandon abandon").is_err());
    }

    #[test]
    fn ids_round_trip_and_typos_are_caught() {
        let id = Account::generate().id();
        let s = id.to_string();
        assert!(s.starts_with("kura"));
        assert_eq!(s.parse::<AccountId>().unwrap(), id);
        // Change one character of the base58 part.
        let mut chars: Vec<char> = s.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == '2' { '3' } else { '2' };
        let typo: String = chars.into_iter().collect();
        assert!(typo.parse::<AccountId>().is_err());
        assert!("kuraXYZ".parse::<AccountId>().is_err());
        assert!(s[4..].parse::<AccountId>().is_err(), "the prefix is required");
        assert!(id.qr().unwrap().lines().count() > 10);
    }

    #[test]
    fn a_home_gets_one_account_and_keeps_its_user_key() {
        let home = tempfile::tempdir().unwrap();
        let old = UserKey::load_or_create(home.path()).unwrap();
        let a = Account::generate();
        assert!(a.install(home.path()).unwrap(), "the home had a key");
        assert_eq!(UserKey::load_or_create(home.path()).unwrap().0, old.0, "files stored before still open");
        assert!(a.install(home.path()).is_ok(), "installing again is harmless");
        assert!(Account::generate().install(home.path()).is_err(), "another account is refused");
        assert_eq!(Account::load(home.path()).unwrap().unwrap().id(), a.id());

        let fresh = tempfile::tempdir().unwrap();
        assert!(!a.install(fresh.path()).unwrap());
        assert_eq!(UserKey::load_or_create(fresh.path()).unwrap().0, a.user_key().0, "a new home takes the account's key");
    }
}
