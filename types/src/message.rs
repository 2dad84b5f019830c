//! Inbox messages: sealed envelopes that anyone may append to an inbox, and that only the
//! inbox's owner may list or delete.
//!
//! An inbox lives at `BLAKE3("kura-inbox" ‖ owner key)` and its close group keeps every
//! message whole (a replicated record kind). A vault sees only what [`Message`] carries: the
//! inbox, when it was sent and when it expires, a proof of work and the sealed bytes (padded to
//! a size bucket by the sender). Who sent it is inside the seal.
//!
//! Spam costs work, by Bitmessage's formula: the expected number of trials grows with the
//! message's length and its lifetime ([`Difficulty::trials`]). A trial hashes the nonce with
//! the message's id, which covers everything but the nonce, so the work cannot be moved to
//! another message.
//!
//! The owner lists and deletes with an [`InboxRequest`]: signed with the owner's Ed25519 key
//! over a fixed prefix, the operation and the time, and valid only within
//! [`REQUEST_WINDOW_SECS`] of the vault's clock.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::record::{RecordError, RecordKey, RecordKind};

/// Largest sealed payload a message may carry: 64 KiB of padded plaintext plus the seal.
pub const MAX_SEALED: usize = (64 << 10) + 64;
/// How long a message lives unless its sender says otherwise: 14 days.
pub const DEFAULT_TTL_SECS: u64 = 14 * 86_400;
/// The longest a message may live: 28 days.
pub const MAX_TTL_SECS: u64 = 28 * 86_400;
/// The shortest lifetime a message may have.
pub const MIN_TTL_SECS: u64 = 10;
/// How far ahead of a vault's clock a sender's clock may run.
pub const CLOCK_SKEW_SECS: u64 = 300;
/// How long an owner's signed request stays valid either side of its time.
pub const REQUEST_WINDOW_SECS: u64 = 120;
/// Most messages one inbox answer carries (the rest come with the cursor).
pub const LIST_PAGE: usize = 64;
/// Most ids one delete request names.
pub const MAX_DELETE: usize = 256;
/// Most messages a vault keeps for one inbox.
pub const MAX_INBOX: usize = 4096;

/// Domain of message ids.
const MESSAGE_ID_DOMAIN: &str = "kura 2026-11 inbox message id v1";
/// Prefix of the bytes an inbox owner signs: fixed, so the signature means nothing elsewhere.
const INBOX_SIGNING_PREFIX: &[u8; 16] = b"kura-inbox-op-v1";

/// The time since the Unix epoch by this machine's clock: what message times and inbox
/// request times are counted in.
pub fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// The address of the inbox owned by the Ed25519 key `owner`: `BLAKE3("kura-inbox" ‖ owner)`.
pub fn inbox_address(owner: &[u8; 32]) -> Address {
    let mut h = blake3::Hasher::new();
    h.update(b"kura-inbox");
    h.update(owner);
    Address(*h.finalize().as_bytes())
}

/// How much work a message must carry: Bitmessage's two parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difficulty {
    /// Trials per byte of message (Bitmessage's `nonceTrialsPerByte`).
    pub trials_per_byte: u64,
    /// Bytes added to every message's length, so small messages cost something too.
    pub extra_bytes: u64,
}

impl Difficulty {
    /// The network's default: about half a second of one core for a 1 KiB message that lives
    /// 14 days: 4.0 M trials, at 8.5 M trials/s on one core of the development machine
    /// (release build), 0.47 s.
    pub const DEFAULT: Difficulty = Difficulty { trials_per_byte: 100, extra_bytes: 1000 };

    /// The expected number of trials for a message of `len` sealed bytes living `ttl` seconds:
    /// `trials_per_byte × (L + E + ttl × (L + E) / 2^16)`, with `L = len + 8`.
    pub fn trials(&self, len: usize, ttl: u64) -> u128 {
        let l = len as u128 + 8 + u128::from(self.extra_bytes);
        u128::from(self.trials_per_byte.max(1)) * (l + u128::from(ttl) * l / 65_536)
    }

    /// The largest trial value that meets this difficulty: `2^64 / trials`.
    pub fn target(&self, len: usize, ttl: u64) -> u64 {
        u64::try_from((1u128 << 64) / self.trials(len, ttl).max(1)).unwrap_or(u64::MAX)
    }

    /// Whether this difficulty asks at least as much as `other` for every message.
    pub fn at_least(&self, other: &Difficulty) -> bool {
        self.trials_per_byte >= other.trials_per_byte && self.extra_bytes >= other.extra_bytes
    }
}

impl Default for Difficulty {
    fn default() -> Self {
        Difficulty::DEFAULT
    }
}

/// A message as vaults store it: sealed to the inbox's owner, with its proof of work.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The inbox it was sent to.
    pub inbox: Address,
    /// When it was sent, in seconds since the Unix epoch (by the sender's clock).
    pub sent: u64,
    /// When vaults may forget it, in seconds since the Unix epoch.
    pub expires: u64,
    /// The payload, sealed to the owner and padded; opaque to vaults.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
    /// The proof-of-work nonce.
    pub nonce: u64,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({} in {:?}, {} B, expires {})", hex::encode(&self.id()[..8]), self.inbox, self.sealed.len(), self.expires)
    }
}

impl Message {
    /// Makes a message, doing the work `difficulty` asks for its size and lifetime (on every
    /// core; see [`mine`]).
    pub fn new(inbox: Address, sent: u64, expires: u64, sealed: Vec<u8>, difficulty: Difficulty) -> Message {
        let mut m = Message { inbox, sent, expires, sealed, nonce: 0 };
        m.nonce = mine(&m.id(), difficulty.target(m.sealed.len(), m.ttl()));
        m
    }

    /// The message's id: a hash of everything but the nonce (the same message with other work
    /// is the same record).
    pub fn id(&self) -> [u8; 32] {
        Address::derive(
            MESSAGE_ID_DOMAIN,
            &[&self.inbox.0, &self.sent.to_be_bytes(), &self.expires.to_be_bytes(), &self.sealed],
        )
        .0
    }

    /// The key it is stored under: its inbox and its id.
    pub fn key(&self) -> RecordKey {
        RecordKey { kind: RecordKind::Message, address: self.inbox, id: self.id() }
    }

    /// Its lifetime in seconds, as its sender declared it.
    pub fn ttl(&self) -> u64 {
        self.expires.saturating_sub(self.sent)
    }

    /// The value its nonce reaches (lower is more work).
    pub fn trial(&self) -> u64 {
        trial(self.nonce, &self.id())
    }

    /// Whether its work meets `difficulty`.
    pub fn meets(&self, difficulty: &Difficulty) -> bool {
        self.trial() <= difficulty.target(self.sealed.len(), self.ttl())
    }

    /// Checks what can be checked without a clock: size and lifetime. (Work depends on the
    /// difficulty a vault asks, and expiry on its clock: see [`Message::admit`].)
    pub fn verify(&self) -> Result<(), RecordError> {
        if self.sealed.is_empty() || self.sealed.len() > MAX_SEALED {
            return Err(RecordError::BadMessage(format!("{} sealed bytes (1 to {MAX_SEALED} allowed)", self.sealed.len())));
        }
        let ttl = self.ttl();
        if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&ttl) {
            return Err(RecordError::BadMessage(format!("lifetime of {ttl} s ({MIN_TTL_SECS} to {MAX_TTL_SECS} allowed)")));
        }
        Ok(())
    }

    /// Whether a vault whose clock reads `now` (seconds since the Unix epoch) and which asks
    /// `difficulty` takes this message.
    pub fn admit(&self, now: u64, difficulty: &Difficulty) -> Result<(), RecordError> {
        self.verify()?;
        if self.expires <= now {
            return Err(RecordError::BadMessage(format!("expired {} s ago", now - self.expires)));
        }
        if self.sent > now + CLOCK_SKEW_SECS {
            return Err(RecordError::BadMessage(format!("sent {} s in the future", self.sent - now)));
        }
        if !self.meets(difficulty) {
            return Err(RecordError::TooLittleWork { asked: *difficulty });
        }
        Ok(())
    }

    /// Whether it has expired by `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.expires <= now
    }
}

/// The trial value of `nonce` for the message with id `id`: the first 8 bytes of
/// `BLAKE3(nonce ‖ id)`, big-endian.
pub fn trial(nonce: u64, id: &[u8; 32]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&nonce.to_be_bytes());
    h.update(id);
    let out = h.finalize();
    u64::from_be_bytes(out.as_bytes()[..8].try_into().unwrap_or([0xff; 8]))
}

/// Finds a nonce whose trial for `id` is at most `target`, on every core (each thread tries
/// its own stride of nonces from a random start).
pub fn mine(id: &[u8; 32], target: u64) -> u64 {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let start: u64 = rand::random();
    let found = AtomicBool::new(false);
    let nonce = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (found, nonce) = (&found, &nonce);
            s.spawn(move || {
                let mut n = start.wrapping_add(t);
                while !found.load(Ordering::Relaxed) {
                    // Check the flag only every so often: it is shared between cores.
                    for _ in 0..256 {
                        if trial(n, id) <= target {
                            if !found.swap(true, Ordering::AcqRel) {
                                nonce.store(n, Ordering::Release);
                            }
                            return;
                        }
                        n = n.wrapping_add(threads);
                    }
                }
            });
        }
    });
    nonce.load(Ordering::Acquire)
}

/// What an inbox owner asks of the inbox's vaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxOp {
    /// The messages held, in id order, after `after` (from the start when `None`), at most
    /// [`LIST_PAGE`] per answer.
    List {
        /// The last id of the previous page.
        after: Option<[u8; 32]>,
    },
    /// Forget these messages (read, or unwanted).
    Delete {
        /// Their ids (at most [`MAX_DELETE`]).
        ids: Vec<[u8; 32]>,
    },
}

/// An inbox operation signed by the inbox's owner.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRequest {
    /// What is asked.
    pub op: InboxOp,
    /// The owner's Ed25519 public key (the inbox is [`inbox_address`] of it).
    pub owner: [u8; 32],
    /// When it was signed, in seconds since the Unix epoch.
    pub time: u64,
    /// The owner's signature over [`InboxRequest::signed_bytes`].
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

impl fmt::Debug for InboxRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InboxRequest({:?} on {:?} at {})", self.op, self.inbox(), self.time)
    }
}

impl InboxRequest {
    /// The bytes signed: a fixed prefix, the inbox (which binds the owner), the time and the
    /// operation.
    pub fn signed_bytes(owner: &[u8; 32], time: u64, op: &InboxOp) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(INBOX_SIGNING_PREFIX);
        out.extend_from_slice(&inbox_address(owner).0);
        out.extend_from_slice(&time.to_be_bytes());
        match op {
            InboxOp::List { after } => {
                out.push(1);
                out.extend_from_slice(after.as_ref().unwrap_or(&[0; 32]));
                out.push(u8::from(after.is_some()));
            }
            InboxOp::Delete { ids } => {
                out.push(2);
                out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
                for id in ids {
                    out.extend_from_slice(id);
                }
            }
        }
        out
    }

    /// `op`, signed by `key` at `time`.
    pub fn sign(key: &ed25519_dalek::SigningKey, op: InboxOp, time: u64) -> InboxRequest {
        use ed25519_dalek::Signer;
        let owner = key.verifying_key().to_bytes();
        let signature = key.sign(&Self::signed_bytes(&owner, time, &op)).to_bytes();
        InboxRequest { op, owner, time, signature }
    }

    /// The inbox it is about.
    pub fn inbox(&self) -> Address {
        inbox_address(&self.owner)
    }

    /// Checks the owner's signature and that it was signed within [`REQUEST_WINDOW_SECS`] of
    /// `now`; returns the inbox.
    pub fn verify(&self, now: u64) -> Result<Address, RecordError> {
        if self.time.abs_diff(now) > REQUEST_WINDOW_SECS {
            return Err(RecordError::Unauthorized(format!(
                "request signed at {}, {} s from this vault's clock (±{REQUEST_WINDOW_SECS} s allowed)",
                self.time,
                self.time.abs_diff(now)
            )));
        }
        if let InboxOp::Delete { ids } = &self.op {
            if ids.len() > MAX_DELETE {
                return Err(RecordError::BadMessage(format!("{} ids to delete (at most {MAX_DELETE})", ids.len())));
            }
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.owner).map_err(|_| RecordError::BadOwner)?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&Self::signed_bytes(&self.owner, self.time, &self.op), &signature)
            .map_err(|_| RecordError::Unauthorized("signature does not verify under the inbox owner's key".into()))?;
        Ok(self.inbox())
    }
}

impl crate::kind::Kind for Message {
    const KIND: RecordKind = RecordKind::Message;

    fn key(&self) -> RecordKey {
        Message::key(self)
    }

    fn strategy(&self) -> crate::record::Strategy {
        crate::record::Strategy::Replicated { n: crate::record::REPLICAS }
    }

    fn check(&self) -> Result<(), RecordError> {
        self.verify()
    }

    fn size(&self) -> usize {
        self.sealed.len() + 96
    }

    fn into_record(self) -> crate::record::Record {
        crate::record::Record::Message(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&rand::random())
    }

    const EASY: Difficulty = Difficulty { trials_per_byte: 1, extra_bytes: 0 };

    #[test]
    fn work_grows_with_size_and_lifetime_and_is_checked() {
        let d = Difficulty::DEFAULT;
        assert!(d.trials(2048, 86_400) > d.trials(1024, 86_400));
        assert!(d.trials(1024, 28 * 86_400) > d.trials(1024, 86_400));
        assert!(d.target(1024, 86_400) < EASY.target(1024, 86_400));
        let inbox = inbox_address(&[7; 32]);
        let m = Message::new(inbox, 1000, 1000 + 3600, vec![1; 1000], EASY);
        assert!(m.meets(&EASY));
        m.admit(1000, &EASY).unwrap();
        // The work belongs to this message: another body with the same nonce fails (almost
        // surely, at a difficulty where a random nonce passes one time in 2^20).
        let hard = Difficulty { trials_per_byte: 1 << 20, extra_bytes: 0 };
        let m = Message::new(inbox, 1000, 1000 + 60, vec![2; 100], Difficulty { trials_per_byte: 1 << 12, extra_bytes: 0 });
        let mut moved = m.clone();
        moved.sealed[0] ^= 1;
        assert!(!moved.meets(&Difficulty { trials_per_byte: 1 << 12, extra_bytes: 0 }) || !moved.meets(&hard));
        assert_eq!(m.id(), Message { nonce: m.nonce ^ 1, ..m.clone() }.id(), "the nonce is not part of the id");
    }

    #[test]
    fn vaults_refuse_oversized_expired_future_and_lazy_messages() {
        let inbox = inbox_address(&[1; 32]);
        let now = 1_000_000;
        let ok = Message::new(inbox, now, now + DEFAULT_TTL_SECS, vec![0; 512], EASY);
        ok.admit(now, &EASY).unwrap();
        assert!(matches!(ok.admit(now + DEFAULT_TTL_SECS, &EASY), Err(RecordError::BadMessage(_))), "expired");
        let future = Message::new(inbox, now + CLOCK_SKEW_SECS + 10, now + 9999, vec![0; 10], EASY);
        assert!(future.admit(now, &EASY).is_err());
        let long = Message { expires: now + MAX_TTL_SECS + 1, ..ok.clone() };
        assert!(long.verify().is_err());
        let big = Message { sealed: vec![0; MAX_SEALED + 1], ..ok.clone() };
        assert!(big.verify().is_err());
        let empty = Message { sealed: vec![], ..ok.clone() };
        assert!(empty.verify().is_err());
        // Asking far more work than was done.
        let demanding = Difficulty { trials_per_byte: 1 << 40, extra_bytes: 1000 };
        assert_eq!(ok.admit(now, &demanding), Err(RecordError::TooLittleWork { asked: demanding }));
    }

    #[test]
    fn only_the_owner_lists_or_deletes_and_only_for_a_while() {
        let owner = signer();
        let now = 5_000_000;
        let req = InboxRequest::sign(&owner, InboxOp::List { after: None }, now);
        assert_eq!(req.verify(now + 10), Ok(inbox_address(&owner.verifying_key().to_bytes())));
        assert!(matches!(req.verify(now + REQUEST_WINDOW_SECS + 1), Err(RecordError::Unauthorized(_))), "stale");
        // A stranger's signature over the owner's key.
        let mut forged = InboxRequest::sign(&signer(), InboxOp::Delete { ids: vec![[1; 32]] }, now);
        forged.owner = req.owner;
        assert!(matches!(forged.verify(now), Err(RecordError::Unauthorized(_))));
        // The owner's signature moved onto another operation.
        let mut moved = InboxRequest::sign(&owner, InboxOp::Delete { ids: vec![[1; 32]] }, now);
        moved.op = InboxOp::Delete { ids: vec![[2; 32]] };
        assert!(moved.verify(now).is_err());
        let mut moved = req.clone();
        moved.op = InboxOp::List { after: Some([0; 32]) };
        assert!(moved.verify(now).is_err(), "a cursor of zeros is not the same as none");
        let too_many = InboxRequest::sign(&owner, InboxOp::Delete { ids: vec![[0; 32]; MAX_DELETE + 1] }, now);
        assert!(too_many.verify(now).is_err());
    }
}
