//! End-to-end encrypted messages through the vaults, delivered to recipients who are offline.
//!
//! A [`Letter`] is signed by its sender's Ed25519 key (the signature covers both accounts, so a
//! recipient cannot pass it on as if it had been sent to someone else), padded to a power of
//! two between 512 B and 64 KiB, and sealed to the recipient's X25519 key with a
//! libsodium-compatible sealed box (`crypto_box`: an ephemeral X25519 key, XSalsa20-Poly1305).
//! Vaults store the sealed bytes in the recipient's inbox with a proof of work
//! ([`kura_node::message`]); they never see who sent it.
//!
//! The recipient's [`Mailbox`] lists the inbox from every vault of its close group, opens and
//! checks each message, keeps it in the Kura home (fsynced) and only then deletes it from the
//! vaults, sends a delivery receipt to the sender's inbox, and remembers every message it
//! handled until it expires: each message is shown once, however often the inbox is read.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use kura_node::message::{unix_now, Difficulty, InboxOp, InboxRequest, Message, DEFAULT_TTL_SECS, LIST_PAGE, MAX_DELETE, MAX_INBOX};
use kura_node::wire::{Request, Response};
use kura_node::{Address, Record};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::account::{Account, AccountId};
use crate::client::Client;
use crate::error::ClientError;

/// Largest padded letter: 64 KiB.
pub const MAX_PADDED: usize = 64 << 10;
/// Smallest padded letter.
const MIN_PADDED: usize = 512;
/// Prefix of the bytes a sender signs.
const LETTER_PREFIX: &[u8; 16] = b"kura-letter-v1\0\0";
/// The file holding the mailbox's state, inside the Kura home.
pub const MAIL_FILE: &str = "mail.json";
/// The file holding the contacts, inside the Kura home.
pub const CONTACTS_FILE: &str = "contacts.json";

/// What a letter says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A text, with files attached.
    Text {
        /// The text.
        text: String,
        /// Files stored in the network that come with it.
        attachments: Vec<Attachment>,
    },
    /// The sender received these messages (by id).
    Receipt {
        /// The messages' ids.
        ids: Vec<[u8; 32]>,
    },
}

/// A file stored in the network, sealed under a key of its own that only the letter carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its address.
    pub address: Address,
    /// The key that opens it.
    pub key: [u8; 32],
}

impl Attachment {
    /// How to name it on the command line: `ADDRESS:KEY`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.address, hex::encode(self.key))
    }

    /// Parses an [`Attachment::reference`] into address and key.
    pub fn parse_reference(s: &str) -> Result<(Address, [u8; 32]), ClientError> {
        let bad = || ClientError::Message(format!("not an attachment reference (ADDRESS:KEY): {s:?}"));
        let (address, key) = s.split_once(':').ok_or_else(bad)?;
        let address: Address = address.parse().map_err(|_| bad())?;
        let key: [u8; 32] = hex::decode(key).ok().and_then(|k| k.try_into().ok()).ok_or_else(bad)?;
        Ok((address, key))
    }
}

/// A message as its sender wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letter {
    /// The sender.
    pub from: AccountId,
    /// The recipient.
    pub to: AccountId,
    /// The sender's count of letters to this recipient: their order.
    pub seq: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub sent_ms: u64,
    /// What it says.
    pub body: Body,
}

#[derive(Serialize, Deserialize)]
struct Signed {
    #[serde(with = "serde_bytes")]
    letter: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: [u8; 64],
}

/// Signs `letter` as `sender`, pads it and seals it to its recipient.
pub fn seal(sender: &Account, letter: &Letter) -> Result<Vec<u8>, ClientError> {
    if letter.from != sender.id() {
        return Err(ClientError::Message("a letter must be sealed by its sender".into()));
    }
    seal_signed_with(&sender.signing_key(), letter)
}

/// [`seal`] with any signing key, whoever `letter.from` names. [`open`] accepts only a
/// signature by `letter.from`'s key, so a letter sealed with another key is refused; this is
/// how tests and tools make the forgeries a recipient must refuse.
pub fn seal_signed_with(key: &ed25519_dalek::SigningKey, letter: &Letter) -> Result<Vec<u8>, ClientError> {
    use ed25519_dalek::Signer;
    let bytes = postcard::to_stdvec(letter).map_err(|e| ClientError::Message(e.to_string()))?;
    let signature = key.sign(&[LETTER_PREFIX.as_slice(), &bytes].concat()).to_bytes();
    let signed = postcard::to_stdvec(&Signed { letter: bytes, signature }).map_err(|e| ClientError::Message(e.to_string()))?;
    let padded_len = (signed.len() + 4).max(MIN_PADDED).next_power_of_two();
    if padded_len > MAX_PADDED {
        return Err(ClientError::Message(format!(
            "letter of {} bytes is too long (at most {} after signing; send a long text as an attachment)",
            signed.len(),
            MAX_PADDED - 4
        )));
    }
    let mut padded = Vec::with_capacity(padded_len);
    padded.extend_from_slice(&(signed.len() as u32).to_be_bytes());
    padded.extend_from_slice(&signed);
    padded.resize(padded_len, 0);
    crypto_box::PublicKey::from(letter.to.seal)
        .seal(&mut rand::rngs::OsRng, &padded)
        .map_err(|e| ClientError::Message(format!("sealing: {e}")))
}

/// Opens sealed bytes sent to `recipient`: unseals, checks the sender's signature and that the
/// letter was written to this recipient.
pub fn open(recipient: &Account, sealed: &[u8]) -> Result<Letter, ClientError> {
    let bad = |why: &str| ClientError::Message(format!("rejected a message: {why}"));
    let padded = recipient.sealing_key().unseal(sealed).map_err(|_| bad("it is not sealed to this account"))?;
    let len = padded.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or_else(|| bad("too short"))?;
    let signed = padded.get(4..4 + len).ok_or_else(|| bad("its length is wrong"))?;
    let signed: Signed = postcard::from_bytes(signed).map_err(|_| bad("malformed"))?;
    let letter: Letter = postcard::from_bytes(&signed.letter).map_err(|_| bad("malformed letter"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&letter.from.sign).map_err(|_| bad("bad sender key"))?;
    key.verify_strict(&[LETTER_PREFIX.as_slice(), &signed.letter].concat(), &ed25519_dalek::Signature::from_bytes(&signed.signature))
        .map_err(|_| bad("the sender's signature does not verify"))?;
    if letter.to != recipient.id() {
        return Err(bad("it was written to another account"));
    }
    Ok(letter)
}


/// The name of the pointer under which an account publishes the work it asks of messages.
const DIFFICULTY_POINTER: &str = "kura-inbox-difficulty";

/// A difficulty as a pointer target: both parameters big-endian, then zeros.
fn difficulty_target(d: Difficulty) -> Address {
    let mut a = [0u8; 32];
    a[..8].copy_from_slice(&d.trials_per_byte.to_be_bytes());
    a[8..16].copy_from_slice(&d.extra_bytes.to_be_bytes());
    Address(a)
}

/// The difficulty a pointer target names, never below the network's default.
fn difficulty_of_target(a: &Address) -> Difficulty {
    let word = |i: usize| u64::from_be_bytes(a.0[i..i + 8].try_into().unwrap_or([0; 8]));
    Difficulty {
        trials_per_byte: word(0).max(Difficulty::DEFAULT.trials_per_byte),
        extra_bytes: word(8).max(Difficulty::DEFAULT.extra_bytes),
    }
}

impl Client {
    /// Publishes the work `account` asks of messages sent to it (a pointer it signs, so
    /// nobody else can lower it). Senders do at least this much; the account's [`Mailbox`]
    /// refuses messages with less. The network's default is the floor.
    pub async fn publish_difficulty(&self, account: &Account, asked: Difficulty) -> Result<(), ClientError> {
        let signer = account.signing_key();
        let name = kura_node::Pointer::name_hash(DIFFICULTY_POINTER);
        let address = kura_node::Pointer::address_of(&signer.verifying_key().to_bytes(), &name);
        let version = self.get_pointer(address).await?.map_or(1, |p| p.version + 1);
        self.put_pointer(kura_node::Pointer::sign(&signer, name, version, difficulty_target(asked))).await
    }

    /// The work `to` asks of messages: what it published, or the network's default.
    pub async fn difficulty_of(&self, to: &AccountId) -> Result<Difficulty, ClientError> {
        let address = kura_node::Pointer::address_of(&to.sign, &kura_node::Pointer::name_hash(DIFFICULTY_POINTER));
        // get_pointer checks the owner's signature: only `to` can have published it.
        Ok(self.get_pointer(address).await?.map_or(Difficulty::DEFAULT, |p| difficulty_of_target(&p.target)))
    }

    /// Seals `letter` as `sender`, does the work its recipient asks, and stores it in the
    /// recipient's inbox on a majority of its close group. Returns the message's id.
    pub async fn send_letter(&self, sender: &Account, letter: &Letter, ttl: Duration) -> Result<[u8; 32], ClientError> {
        let sealed = seal(sender, letter)?;
        let difficulty = self.difficulty_of(&letter.to).await?;
        let now = unix_now().as_secs();
        let inbox = letter.to.inbox();
        let expires = now + ttl.as_secs();
        let message = tokio::task::spawn_blocking(move || Message::new(inbox, now, expires, sealed, difficulty))
            .await
            .map_err(|e| ClientError::Message(e.to_string()))?;
        let id = message.id();
        self.replicate(Record::Message(message), &format!("message to {}", letter.to)).await?;
        Ok(id)
    }

    /// Every message in `owner`'s inbox: every page from every vault of its close group, each
    /// checked against the inbox (a vault cannot put a message in another's inbox), once each.
    pub async fn list_inbox(&self, owner: &Account) -> Result<Vec<Message>, ClientError> {
        let inbox = owner.id().inbox();
        let (group, _) = self.replica_set(inbox).await?;
        let key = owner.signing_key();
        let mut lists: FuturesUnordered<_> = group
            .iter()
            .map(|&vault| {
                let (node, key) = (self.node().clone(), key.clone());
                async move {
                    let mut got = Vec::new();
                    let mut after = None;
                    // Bounded: a vault answering "more" forever gets a few pages only.
                    for _ in 0..max_pages() {
                        let req = InboxRequest::sign(&key, InboxOp::List { after }, unix_now().as_secs());
                        match node.request(vault, Request::Inbox(req)).await {
                            Ok(Response::Messages { messages, more }) => {
                                after = messages.last().map(|m| m.id());
                                let n = messages.len();
                                got.extend(messages);
                                if !more || n == 0 {
                                    break;
                                }
                            }
                            other => {
                                debug!(%vault, answer = ?other, "inbox list failed");
                                break;
                            }
                        }
                    }
                    got
                }
            })
            .collect();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let now = unix_now().as_secs();
        while let Some(got) = lists.next().await {
            for m in got {
                // Checked as a vault checks it (work at the network's floor, not expired): a
                // vault cannot make up messages for free and fill the mailbox's memory of
                // handled ids with them.
                if m.inbox == inbox && m.admit(now, &Difficulty::DEFAULT).is_ok() && seen.insert(m.id()) {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// Deletes messages from `owner`'s inbox on every vault of its close group.
    pub async fn delete_from_inbox(&self, owner: &Account, ids: &[[u8; 32]]) -> Result<(), ClientError> {
        if ids.is_empty() {
            return Ok(());
        }
        let inbox = owner.id().inbox();
        let (group, _) = self.replica_set(inbox).await?;
        let key = owner.signing_key();
        let mut sends = FuturesUnordered::new();
        for batch in ids.chunks(MAX_DELETE) {
            for &vault in &group {
                let req = InboxRequest::sign(&key, InboxOp::Delete { ids: batch.to_vec() }, unix_now().as_secs());
                let node = self.node().clone();
                sends.push(async move { (vault, node.request(vault, Request::Inbox(req)).await) });
            }
        }
        while let Some((vault, answer)) = sends.next().await {
            if !matches!(answer, Ok(Response::Deleted(_))) {
                debug!(%vault, ?answer, "inbox delete failed");
            }
        }
        Ok(())
    }
}

/// Pages of an inbox read from one vault at most: as many as hold the most messages a vault
/// keeps for one inbox.
fn max_pages() -> usize {
    MAX_INBOX / LIST_PAGE + 1
}

/// A message received and kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// The message's id (hex).
    pub id: String,
    /// The sender.
    pub from: AccountId,
    /// The sender's sequence number.
    pub seq: u64,
    /// When it was sent, in milliseconds since the Unix epoch (by the sender's clock).
    pub sent_ms: u64,
    /// When it was received, in milliseconds since the Unix epoch.
    pub received_ms: u64,
    /// The text.
    pub text: String,
    /// Its attachments.
    pub attachments: Vec<Attachment>,
    /// Whether the sender was not a contact when it arrived (a message request).
    pub request: bool,
}

/// A message sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The message's id (hex).
    pub id: String,
    /// The recipient.
    pub to: AccountId,
    /// The sequence number.
    pub seq: u64,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub sent_ms: u64,
    /// The text.
    pub text: String,
    /// Whether the recipient's receipt came back.
    pub delivered: bool,
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Their account.
    pub id: AccountId,
    /// The name given them.
    pub name: Option<String>,
    /// Whether their messages are dropped unseen.
    pub blocked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MailState {
    /// The next sequence number for each recipient.
    next_seq: BTreeMap<String, u64>,
    /// The last `sent_ms` used: strictly increasing, so per-sender order survives clock steps.
    last_sent_ms: u64,
    /// Messages received, in the order they arrived.
    received: Vec<Received>,
    /// Ids of messages handled (kept, refused or receipts), with their expiry: never handled
    /// twice.
    handled: BTreeMap<String, u64>,
    /// Messages sent.
    sent: Vec<Sent>,
    /// Receipts not sent yet: sender → message ids.
    receipts_owed: BTreeMap<String, Vec<String>>,
    /// Messages refused (forged, malformed, not for this account, too little work).
    rejected: u64,
    /// The work this account asks of messages, when it published more than the default.
    #[serde(default)]
    asked: Option<Difficulty>,
}

/// What one read of the inbox brought.
#[derive(Debug, Default)]
pub struct Delivery {
    /// New messages, in send order per sender.
    pub new: Vec<Received>,
    /// Sent messages whose receipt came back.
    pub delivered: Vec<Sent>,
    /// Messages refused this time.
    pub rejected: usize,
    /// Messages from blocked senders dropped unseen.
    pub blocked: usize,
}

/// A user's messages and contacts, kept in the Kura home.
pub struct Mailbox {
    account: Account,
    home: PathBuf,
    state: MailState,
    contacts: Vec<Contact>,
    _lock: std::fs::File,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mailbox({})", self.account.id())
    }
}

/// The format of the mailbox's files (mail and contacts) this build writes: `{"format": 1,
/// "data": ...}`. Format 0, the bare value earlier builds wrote, is read as well.
const MAIL_FORMAT: u64 = 1;

/// Reads a mailbox file of any format this build knows (a missing file is the default).
fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, ClientError> {
    let bad = |e: String| ClientError::Message(format!("{}: {e}", path.display()));
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) => return Err(bad(e.to_string())),
    };
    decode_json(&bytes).map_err(bad)
}

/// A mailbox file's value, from its bytes of format 1 or 0.
fn decode_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let format = match value.get("format") {
        Some(f) => f.as_u64().ok_or("a format that is not a number")?,
        None => 0,
    };
    let value = match format {
        0 => value,
        MAIL_FORMAT => value.get_mut("data").map(serde_json::Value::take).ok_or("format 1 with no data")?,
        newer => return Err(format!("format {newer}, newer than this build reads ({MAIL_FORMAT})")),
    };
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// A mailbox file's bytes for `value`, in the current format.
fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec_pretty(&serde_json::json!({ "format": MAIL_FORMAT, "data": value }))
        .map_err(|e| ClientError::Message(e.to_string()))
}

/// Writes `value` to `path` whole or not at all: a temporary file, fsynced, renamed over it,
/// and the folder fsynced.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ClientError> {
    let bytes = encode_json(value)?;
    write_synced(path, &bytes).map_err(|e| ClientError::Message(format!("{}: {e}", path.display())))
}

/// Writes `bytes` to `path` whole or not at all, owner-only (see [`write_json`]).
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    kura_node::durable::replace(path, bytes, kura_node::durable::Access::Private)
}

impl Mailbox {
    /// Opens the mailbox of `home`'s account, holding its lock (one process at a time reads
    /// and writes it; another waits).
    pub fn open(home: &Path) -> Result<Mailbox, ClientError> {
        let account = Account::require(home)?;
        let lock_path = home.join("mail.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ClientError::Message(format!("{}: {e}", lock_path.display())))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| ClientError::Message(format!("locking {}: {e}", lock_path.display())))?;
        let state = read_json(&home.join(MAIL_FILE))?;
        let contacts = read_json(&home.join(CONTACTS_FILE))?;
        Ok(Mailbox { account, home: home.to_path_buf(), state, contacts, _lock: lock })
    }

    /// The account.
    pub fn account(&self) -> &Account {
        &self.account
    }

    fn save(&self) -> Result<(), ClientError> {
        write_json(&self.home.join(MAIL_FILE), &self.state)
    }

    fn save_contacts(&self) -> Result<(), ClientError> {
        write_json(&self.home.join(CONTACTS_FILE), &self.contacts)
    }

    /// The contacts.
    pub fn contacts(&self) -> &[Contact] {
        &self.contacts
    }

    /// Adds (or renames) a contact; an added contact is unblocked.
    pub fn add_contact(&mut self, id: AccountId, name: Option<String>) -> Result<(), ClientError> {
        match self.contacts.iter_mut().find(|c| c.id == id) {
            Some(c) => {
                c.blocked = false;
                if name.is_some() {
                    c.name = name;
                }
            }
            None => self.contacts.push(Contact { id, name, blocked: false }),
        }
        self.save_contacts()
    }

    /// Blocks an account: its messages are deleted unseen and get no receipt.
    pub fn block(&mut self, id: AccountId) -> Result<(), ClientError> {
        match self.contacts.iter_mut().find(|c| c.id == id) {
            Some(c) => c.blocked = true,
            None => self.contacts.push(Contact { id, name: None, blocked: true }),
        }
        self.save_contacts()
    }

    /// A contact's name, or the start of their ID.
    pub fn name_of(&self, id: &AccountId) -> String {
        match self.contacts.iter().find(|c| c.id == *id).and_then(|c| c.name.clone()) {
            Some(name) => name,
            None => {
                let s = id.to_string();
                format!("{}…", &s[..s.len().min(16)])
            }
        }
    }

    /// Messages received so far, oldest first.
    pub fn received(&self) -> &[Received] {
        &self.state.received
    }

    /// Messages sent so far, oldest first.
    pub fn sent(&self) -> &[Sent] {
        &self.state.sent
    }

    /// Messages refused so far.
    pub fn rejected(&self) -> u64 {
        self.state.rejected
    }

    /// Publishes the work this account asks of messages, and from now on refuses messages
    /// that carry less.
    pub async fn ask_difficulty(&mut self, client: &Client, asked: Difficulty) -> Result<(), ClientError> {
        client.publish_difficulty(&self.account, asked).await?;
        self.state.asked = Some(asked);
        self.save()
    }

    /// Sends `text` (with `attachments`, already stored) to `to`, living `ttl`.
    pub async fn send(
        &mut self,
        client: &Client,
        to: AccountId,
        text: String,
        attachments: Vec<Attachment>,
        ttl: Duration,
    ) -> Result<Sent, ClientError> {
        let letter = self.letter(to, Body::Text { text: text.clone(), attachments });
        let id = client.send_letter(&self.account, &letter, ttl).await?;
        self.sent_letter(&letter);
        let (seq, sent_ms) = (letter.seq, letter.sent_ms);
        let sent = Sent { id: hex::encode(id), to, seq, sent_ms, text, delivered: false };
        self.state.sent.push(sent.clone());
        self.save()?;
        Ok(sent)
    }

    /// The next letter to `to`: its sequence number and a send time later than any before,
    /// so the recipient's order survives clock steps.
    fn letter(&self, to: AccountId, body: Body) -> Letter {
        let seq = self.state.next_seq.get(&to.to_string()).copied().unwrap_or(1);
        let sent_ms = (unix_now().as_millis() as u64).max(self.state.last_sent_ms + 1);
        Letter { from: self.account.id(), to, seq, sent_ms, body }
    }

    /// Notes that `letter` was sent: its number and time are used up.
    fn sent_letter(&mut self, letter: &Letter) {
        self.state.next_seq.insert(letter.to.to_string(), letter.seq + 1);
        self.state.last_sent_ms = letter.sent_ms;
    }

    /// Reads the inbox once: keeps what is new, records receipts, answers with receipts, and
    /// deletes what it handled from the vaults.
    pub async fn sync(&mut self, client: &Client) -> Result<Delivery, ClientError> {
        let now = unix_now();
        let messages = client.list_inbox(&self.account).await?;
        let mut delivery = Delivery::default();
        let mut handled_now = Vec::new();
        for m in messages {
            let id = hex::encode(m.id());
            if self.state.handled.contains_key(&id) {
                // Handled before; its delete did not reach every vault.
                handled_now.push(m.id());
                continue;
            }
            self.state.handled.insert(id.clone(), m.expires);
            handled_now.push(m.id());
            let letter = match open(&self.account, &m.sealed) {
                Ok(letter) => letter,
                Err(e) => {
                    warn!(message = %id, error = %e, "message refused");
                    self.state.rejected += 1;
                    delivery.rejected += 1;
                    continue;
                }
            };
            let contact = self.contacts.iter().find(|c| c.id == letter.from);
            if contact.is_some_and(|c| c.blocked) {
                delivery.blocked += 1;
                continue;
            }
            if self.state.asked.as_ref().is_some_and(|asked| !m.meets(asked)) {
                warn!(message = %id, "message refused: less work than this account asks");
                self.state.rejected += 1;
                delivery.rejected += 1;
                continue;
            }
            match letter.body {
                Body::Receipt { ids } => {
                    let ids: HashSet<String> = ids.iter().map(hex::encode).collect();
                    for s in self.state.sent.iter_mut().filter(|s| s.to == letter.from && ids.contains(&s.id) && !s.delivered) {
                        s.delivered = true;
                        delivery.delivered.push(s.clone());
                    }
                }
                Body::Text { text, attachments } => {
                    self.state.receipts_owed.entry(letter.from.to_string()).or_default().push(id.clone());
                    delivery.new.push(Received {
                        id,
                        from: letter.from,
                        seq: letter.seq,
                        sent_ms: letter.sent_ms,
                        received_ms: now.as_millis() as u64,
                        text,
                        attachments,
                        request: contact.is_none(),
                    });
                }
            }
        }
        delivery.new.sort_by_key(|r| (r.sent_ms, r.seq));
        self.state.received.extend(delivery.new.iter().cloned());
        self.state.handled.retain(|_, expires| *expires > now.as_secs());
        // Kept on disk before anything is deleted from the vaults: a crash here loses nothing.
        self.save()?;
        self.send_receipts(client).await;
        client.delete_from_inbox(&self.account, &handled_now).await?;
        Ok(delivery)
    }

    /// Sends the receipts owed, one letter per sender; those that fail stay owed.
    async fn send_receipts(&mut self, client: &Client) {
        let owed = std::mem::take(&mut self.state.receipts_owed);
        for (to, ids) in owed {
            let Ok(to_id) = to.parse::<AccountId>() else { continue };
            let body = Body::Receipt { ids: ids.iter().filter_map(|i| hex::decode(i).ok()?.try_into().ok()).collect() };
            let letter = self.letter(to_id, body);
            // Receipts live a day: enough for a sender who reads their inbox daily.
            match client.send_letter(&self.account, &letter, Duration::from_secs(86_400)).await {
                Ok(_) => self.sent_letter(&letter),
                Err(e) => {
                    debug!(%to, error = %e, "receipt not sent; kept for the next read");
                    self.state.receipts_owed.insert(to, ids);
                }
            }
        }
        if let Err(e) = self.save() {
            warn!(error = %e, "saving the mailbox");
        }
    }
}

/// The default lifetime of a message.
pub const DEFAULT_TTL: Duration = Duration::from_secs(DEFAULT_TTL_SECS);

#[cfg(test)]
mod tests {
    use super::*;

    /// Mailbox files of every format, kept in `tests/fixtures` (format 0: the bare JSON of
    /// builds before formats; format 1: in its envelope), read back as the same value.
    /// `KURA_WRITE_FIXTURES=1` writes them again.
    #[test]
    fn mailbox_files_of_every_format_read_back() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut state = MailState { last_sent_ms: 17, rejected: 2, ..Default::default() };
        state.next_seq.insert("someone".into(), 3);
        state.handled.insert("an-id".into(), 99);
        state.receipts_owed.insert("someone".into(), vec!["an-id".into()]);
        let friend = Account::from_phrase(&bip39::Mnemonic::from_entropy(&[4u8; 32]).unwrap().to_string()).unwrap().id();
        let contacts = vec![Contact { id: friend, name: Some("ann".into()), blocked: false }];
        if std::env::var_os("KURA_WRITE_FIXTURES").is_some() {
            std::fs::write(fixtures.join("mail-format0.json"), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
            std::fs::write(fixtures.join("mail-format1.json"), encode_json(&state).unwrap()).unwrap();
            std::fs::write(fixtures.join("contacts-format0.json"), serde_json::to_vec_pretty(&contacts).unwrap()).unwrap();
            std::fs::write(fixtures.join("contacts-format1.json"), encode_json(&contacts).unwrap()).unwrap();
        }
        let json = |v: &MailState| serde_json::to_value(v).unwrap();
        for name in ["mail-format0.json", "mail-format1.json"] {
            let read: MailState = read_json(&fixtures.join(name)).unwrap();
            assert_eq!(json(&read), json(&state), "{name}");
        }
        for name in ["contacts-format0.json", "contacts-format1.json"] {
            let read: Vec<Contact> = read_json(&fixtures.join(name)).unwrap();
            assert_eq!(read, contacts, "{name}");
        }
        assert_eq!(std::fs::read(fixtures.join("mail-format1.json")).unwrap(), encode_json(&state).unwrap(), "format 1 is what this build writes");
        let newer = br#"{"format": 2, "data": []}"#;
        assert!(decode_json::<Vec<Contact>>(newer).unwrap_err().contains("format 2"));
        assert!(decode_json::<Vec<Contact>>(br#"{"format": 1}"#).is_err());
    }

    fn letter(from: &Account, to: &Account, text: &str) -> Letter {
        Letter { from: from.id(), to: to.id(), seq: 1, sent_ms: 1, body: Body::Text { text: text.into(), attachments: vec![] } }
    }

    #[test]
    fn only_the_recipient_opens_and_forgeries_are_rejected() {
        let (alice, bob, eve) = (Account::generate(), Account::generate(), Account::generate());
        let sealed = seal(&alice, &letter(&alice, &bob, "hi bob")).unwrap();
        assert_eq!(sealed.len(), MIN_PADDED + 48, "padded to the smallest bucket");
        let got = open(&bob, &sealed).unwrap();
        assert_eq!(got.body, Body::Text { text: "hi bob".into(), attachments: vec![] });
        assert!(open(&eve, &sealed).is_err(), "sealed to bob only");
        assert!(!sealed.windows(6).any(|w| w == b"hi bob"));
        // Eve writes as Alice: she cannot sign as her.
        let forged = letter(&alice, &bob, "send money");
        assert!(seal(&eve, &forged).is_err());
        // So she signs a letter naming Alice as its sender with her own key.
        let sealed = seal_signed_with(&eve.signing_key(), &forged).unwrap();
        assert!(matches!(open(&bob, &sealed), Err(ClientError::Message(m)) if m.contains("signature")));
        // Bob passes Alice's letter on to Carol: it names Bob, so Carol refuses it.
        let carol = Account::generate();
        let to_bob = seal(&alice, &letter(&alice, &bob, "for bob")).unwrap();
        let padded = bob.sealing_key().unseal(&to_bob).unwrap();
        let forwarded = crypto_box::PublicKey::from(carol.id().seal).seal(&mut rand::rngs::OsRng, &padded).unwrap();
        assert!(matches!(open(&carol, &forwarded), Err(ClientError::Message(m)) if m.contains("another account")));
        // Malformed bytes.
        assert!(open(&bob, b"garbage").is_err());
        assert!(open(&bob, &[0u8; 600]).is_err());
    }

    #[test]
    fn sizes_are_bucketed_and_bounded() {
        let (a, b) = (Account::generate(), Account::generate());
        let sizes: Vec<usize> = [10, 600, 3000, 40_000]
            .iter()
            .map(|&n| seal(&a, &letter(&a, &b, &"x".repeat(n))).unwrap().len() - 48)
            .collect();
        assert_eq!(sizes, vec![512, 1024, 4096, 65536]);
        assert!(seal(&a, &letter(&a, &b, &"x".repeat(70_000))).is_err());
    }

    #[test]
    fn published_difficulties_never_go_below_the_default() {
        let d = Difficulty { trials_per_byte: 12_345, extra_bytes: 2000 };
        assert_eq!(difficulty_of_target(&difficulty_target(d)), d);
        assert_eq!(difficulty_of_target(&Address([0; 32])), Difficulty::DEFAULT);
    }

    #[test]
    fn attachment_references_round_trip() {
        let a = Attachment { name: "f".into(), size: 1, address: Address::random(), key: rand::random() };
        assert_eq!(Attachment::parse_reference(&a.reference()).unwrap(), (a.address, a.key));
        assert!(Attachment::parse_reference("nope").is_err());
    }
}
