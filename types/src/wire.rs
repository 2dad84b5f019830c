//! Kura's own request/response messages and their byte format.
//!
//! A frame on the wire is `u32 big-endian length ‖ body`, and a body is
//! `version byte ‖ postcard(message)`. The length is checked against [`MAX_FRAME_LEN`] before a
//! single body byte is read, so an oversized frame costs the reader nothing. Decoding is total:
//! any byte string yields either a message or a [`WireError`], never a panic (see the proptest
//! below and `fuzz/`).

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::audit::Challenge;
use crate::record::{Record, RecordKey, Shard};

/// The wire version this build speaks. Bump it when a message's encoding changes. (Version 2:
/// chunks stored at addresses that commit to their coding; records of many kinds.)
pub const WIRE_VERSION: u8 = 2;

/// The largest frame body accepted, in bytes (a shard of a 4 MiB chunk at k = 1 plus headroom).
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// The libp2p protocol name of Kura's request/response messages.
pub const REQUEST_PROTOCOL: &str = "/kura/req/1";

/// The libp2p protocol name of Kura's Kademlia (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: &str = "/kura/kad/1";

/// The largest close group a peer may ask for.
pub const MAX_GROUP_QUERY: u16 = 20;

/// A request one Kura node sends another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Liveness probe; answered with [`Response::Pong`].
    Ping,
    /// Ask a vault for its status (routing table, storage use).
    Status,
    /// Ask a vault to run an iterative lookup and report the `n` closest vaults to `target`,
    /// itself included.
    FindClosest {
        /// The address looked up.
        target: Address,
        /// How many vaults to return (at most [`MAX_GROUP_QUERY`]).
        n: u16,
    },
    /// Store a shard. The vault checks it against its hash and the address its header
    /// derives, and that it is among the vaults responsible for that address.
    PutShard(Shard),
    /// Store a whole record of a replicated kind (a pointer). The vault checks it against the
    /// key it derives, stores it unless it holds a record that supersedes it, and refuses a
    /// stale one with [`RemoteError::Stale`].
    PutRecord(Record),
    /// Ask for the record stored under a key (of a replicated kind).
    GetRecord(RecordKey),
    /// Ask for every shard of `chunk` the vault holds.
    GetShards {
        /// The chunk.
        chunk: Address,
    },
    /// Ask which shard indices of `chunk` the vault holds (cheap: no shard bytes move).
    ShardIndices {
        /// The chunk.
        chunk: Address,
    },
    /// A storage audit: prove that shard `index` of `chunk` is held by answering `challenge`
    /// (see [`crate::audit`]).
    Audit {
        /// The chunk.
        chunk: Address,
        /// The shard index the vault said it holds.
        index: u8,
        /// The chunks of the shard asked for.
        challenge: Challenge,
    },
    /// An inbox owner's signed request: list or delete messages (see [`crate::message`]).
    Inbox(crate::message::InboxRequest),
    /// Ask a replica of the paying account to sign a transfer (see [`crate::ledger`]);
    /// answered with [`Response::Signed`] or a refusal naming the rule broken.
    Sign(crate::ledger::SignedTransfer),
    /// Ask a replica what it holds of an account.
    Account(Address),
    /// Ask a replica for the ids of the transfers it holds at an account, in order, after
    /// `after` (a page of at most [`PAGE`]).
    EntryIds {
        /// The account.
        account: Address,
        /// The last id of the previous page.
        after: Option<[u8; 32]>,
    },
    /// Ask a vault for its storage price ([`Response::Quote`]).
    Quote,
    /// Store a shard that will be paid for at `quote` (the vault's own). Answered
    /// [`Response::Owed`] with what it costs, or [`Response::Stored`] when the shard was held
    /// and paid for already.
    StoreShard {
        /// The shard.
        shard: Shard,
        /// The vault's quote.
        quote: crate::ledger::Quote,
    },
    /// Pay for shards stored with [`Request::StoreShard`]: `certificate` has an output to the
    /// vault's account whose memo is [`crate::ledger::shards_memo`] of `shards`.
    Paid {
        /// The certified transfer.
        certificate: crate::ledger::Certificate,
        /// The shards it pays this vault for.
        shards: Vec<RecordKey>,
    },
    /// Ask a replica for the transfers it holds at an account, in id order, after `after` (a
    /// page of at most [`HISTORY_PAGE`]).
    History {
        /// The account.
        account: Address,
        /// The last id of the previous page.
        after: Option<[u8; 32]>,
    },
    /// Ask a vault for the proof of its age ([`Response::Age`]).
    Age,
    /// Ask an elder of the sender's group to sign the sender's ticket for this epoch
    /// ([`crate::age::Ticket`]); answered with [`Response::Ticket`] or a refusal.
    Ticket(crate::age::Ticket),
    /// A frame that arrived but could not be decoded. Never sent: the codec produces it so the
    /// receiver can answer with a clear error instead of silently dropping the stream.
    #[serde(skip)]
    Undecodable(WireError),
}

/// A reply to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Reply to [`Request::Ping`].
    Pong,
    /// Reply to [`Request::Status`].
    Status(VaultStatus),
    /// Reply to [`Request::FindClosest`]: closest first.
    Closest(Vec<PeerId>),
    /// The request was refused or failed.
    Error(RemoteError),
    /// The record is stored (durably, on disk for a disk-backed vault).
    Stored,
    /// Reply to [`Request::GetShards`]: the verified shards held (may be empty).
    Shards(Vec<Shard>),
    /// Reply to [`Request::ShardIndices`].
    Indices(Vec<u8>),
    /// Reply to [`Request::Audit`]: the Bao proof.
    Proof(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Reply to [`Request::GetRecord`]: the record held under the key, if any.
    Record(Option<Record>),
    /// Reply to an inbox list: a page of messages in id order, and whether more follow.
    Messages {
        /// The page.
        messages: Vec<crate::message::Message>,
        /// Whether a later page holds more.
        more: bool,
    },
    /// Reply to an inbox delete: how many of the named messages were held and are gone.
    Deleted(u32),
    /// Reply to [`Request::Sign`]: the replica's signature.
    Signed(crate::ledger::ReplicaSignature),
    /// Reply to [`Request::Account`].
    Account(crate::ledger::AccountView),
    /// Reply to [`Request::EntryIds`].
    Ids {
        /// The page.
        ids: Vec<[u8; 32]>,
        /// Whether a later page holds more.
        more: bool,
    },
    /// Reply to [`Request::Quote`].
    Quote(crate::ledger::Quote),
    /// Reply to [`Request::StoreShard`]: stored, and this many units are owed for it.
    Owed(u64),
    /// Reply to [`Request::Paid`]: the units accepted.
    PaidFor(u64),
    /// Reply to [`Request::History`].
    Entries {
        /// The page.
        entries: Vec<crate::ledger::Entry>,
        /// Whether a later page holds more.
        more: bool,
    },
    /// Reply to [`Request::Ticket`]: the elder's signature of the ticket.
    Ticket(crate::ledger::ReplicaSignature),
    /// Reply to [`Request::Age`].
    Age {
        /// The vault's age proof, none while it is a newcomer.
        proof: Option<crate::age::AgeProof>,
        /// The genesis key the vault checks ages against (none: ages do not count on its
        /// network). A client takes it from its bootstrap vaults when not given one.
        #[serde(with = "serde_bytes")]
        genesis: Option<Vec<u8>>,
    },
}

/// Most ids in one [`Response::Ids`] page.
pub const PAGE: usize = 4096;

/// Most transfers in one [`Response::Entries`] page.
pub const HISTORY_PAGE: usize = 256;

/// What one of a vault's background workers is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker's name (`repair`, `audit`, …).
    pub name: String,
    /// Its state: `busy`, `idle`, `throttled` or `stopped`.
    pub state: String,
    /// Named counters (work done, failures, items pending).
    pub counters: Vec<(String, u64)>,
}

/// What a vault reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultStatus {
    /// The vault's peer id.
    pub peer_id: PeerId,
    /// Addresses the vault listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers in its Kademlia routing table.
    pub routing_table_size: u32,
    /// Records it stores (every kind).
    pub records_stored: u64,
    /// Records it stores, by kind name.
    pub records_by_kind: Vec<(String, u64)>,
    /// Bytes charged against its quota (each record its length, but at least 4 KiB).
    pub bytes_used: u64,
    /// Its capacity quota in bytes.
    pub capacity: u64,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// Requests it refused because they could not be decoded.
    pub malformed_requests: u64,
    /// Requests it refused because their peer had spent its budget.
    pub rate_limited: u64,
    /// Records it refused because it was full.
    pub refused_full: u64,
    /// Stored records found unreadable or corrupt, moved aside (never deleted).
    pub corrupt_records: u64,
    /// Chunks waiting for the repair worker.
    pub pending_repairs: u64,
    /// Shards this vault rebuilt and placed on other vaults.
    pub shards_repaired: u64,
    /// Shards this vault handed to closer vaults (and then deleted).
    pub shards_handed_over: u64,
    /// Shard bytes this vault fetched or sent for repair and handover.
    pub repair_bytes: u64,
    /// Audits of other vaults that this vault ran and saw pass.
    pub audits_passed: u64,
    /// Audits of other vaults that this vault ran and saw fail (wrong proof, shard gone, no
    /// answer).
    pub audit_failures: u64,
    /// Shards other vaults served this vault's repair that did not match their chunk's
    /// address (each such vault was skipped and reported).
    pub bad_shards_served: u64,
    /// Its ledger account, where its earnings are paid.
    pub account: Address,
    /// Units it was paid for storing shards since it started.
    pub earned: u64,
    /// Its account's balance, as its replicas agree on it (`None` if they could not be asked).
    pub balance: Option<i128>,
    /// Transfers it signed as a replica of their paying account.
    pub transfers_signed: u64,
    /// Ledger evidence it found since it started: two certified transfers at one nonce, or a
    /// committee's certificate of a transfer its owner never signed (see `evidence/` in its
    /// root).
    pub ledger_evidence: u64,
    /// Its background workers.
    pub workers: Vec<WorkerStatus>,
    /// The settings it runs with, as `(name, value)`: the effective values after preset,
    /// configuration file and flags (payment grace, handover probation, age epoch, ...).
    pub settings: Vec<(String, String)>,
    /// The software version it runs.
    pub version: String,
}

/// Why a remote node refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The request could not be decoded.
    #[error("malformed request: {0}")]
    Malformed(WireError),
    /// The request was well formed but not acceptable.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The node is overloaded; try again later.
    #[error("node busy")]
    Busy,
    /// The node failed to serve the request.
    #[error("internal error: {0}")]
    Internal(String),
    /// The vault's capacity quota would be exceeded.
    #[error("vault full: {used} of {capacity} bytes used, {wanted} more refused")]
    Full {
        /// Bytes stored.
        used: u64,
        /// The quota.
        capacity: u64,
        /// Bytes the refused record needed.
        wanted: u64,
    },
    /// The vault is not among the vaults responsible for the address.
    #[error("not responsible for {0}")]
    NotResponsible(Address),
    /// The vault does not hold the shard asked for.
    #[error("shard {index} of chunk {chunk} not held")]
    NotHeld {
        /// The chunk.
        chunk: Address,
        /// The shard index.
        index: u8,
    },
    /// The vault holds a newer version of the record than the one sent: a stale or replayed
    /// update, refused.
    #[error("{key}: a newer version (version {held}) is stored; update refused")]
    Stale {
        /// The record's key.
        key: RecordKey,
        /// The version held.
        held: u64,
    },
    /// The vault held the shard but handed it on lately, being no longer responsible for it:
    /// its claim is withdrawn, nothing was lost.
    #[error("shard {index} of chunk {chunk} handed on: no longer held here")]
    Released {
        /// The chunk.
        chunk: Address,
        /// The shard index.
        index: u8,
    },
    /// The peer has spent its request budget at this node; ask again after the wait given.
    #[error("rate limited: try again in {retry_after_ms} ms")]
    RateLimited {
        /// How long until a request from this peer would be admitted.
        retry_after_ms: u32,
    },
    /// The record was refused: it does not check out (a forgery, a message with too little
    /// work or expired, an inbox request not signed by its owner).
    #[error("refused: {0}")]
    Refused(crate::record::RecordError),
    /// The inbox holds as many messages as a vault keeps for one inbox.
    #[error("inbox {inbox} is full ({held} messages)")]
    InboxFull {
        /// The inbox.
        inbox: Address,
        /// Messages held.
        held: u32,
    },
}

impl RemoteError {
    /// Whether the refusal is about load, not about the request: the same request may succeed
    /// later, and says nothing against the node.
    pub fn is_load(&self) -> bool {
        matches!(self, RemoteError::Busy | RemoteError::RateLimited { .. })
    }
}

/// Why bytes could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame body was empty.
    #[error("empty frame")]
    Empty,
    /// The frame names a wire version this build does not speak.
    #[error("unsupported wire version {got} (this node speaks {supported})")]
    UnsupportedVersion {
        /// Version in the frame.
        got: u8,
        /// Version this node speaks.
        supported: u8,
    },
    /// The frame announced more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The body is not a valid message.
    #[error("undecodable message body: {0}")]
    Body(String),
    /// The body decoded but bytes were left over.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
}

/// Encodes a message body: version byte then postcard, in one exactly-sized allocation (shard
/// messages are ~1 MiB; growing a buffer for them would copy them several times).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let size = postcard::experimental::serialized_size(msg).map_err(|e| WireError::Body(e.to_string()))? + 1;
    if size > MAX_FRAME_LEN {
        return Err(WireError::Oversized { len: size as u64, max: MAX_FRAME_LEN as u64 });
    }
    let mut out = Vec::with_capacity(size);
    out.push(WIRE_VERSION);
    postcard::to_extend(msg, out).map_err(|e| WireError::Body(e.to_string()))
}

/// Decodes a message body written by [`encode`]; never panics on any input.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion {
            got: version,
            supported: WIRE_VERSION,
        });
    }
    let (msg, rest) = postcard::take_from_bytes(body).map_err(|e| WireError::Body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip() {
        for req in [
            Request::Ping,
            Request::Status,
            Request::FindClosest {
                target: Address::random(),
                n: 8,
            },
            Request::Audit { chunk: Address::random(), index: 3, challenge: Challenge { chunks: vec![0, 9, 200] } },
        ] {
            let bytes = encode(&req).unwrap();
            assert_eq!(bytes[0], WIRE_VERSION);
            assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        }
    }

    #[test]
    fn responses_round_trip() {
        let status = VaultStatus {
            peer_id: PeerId::random(),
            listen_addrs: vec!["/ip4/127.0.0.1/udp/4000/quic-v1".parse().unwrap()],
            routing_table_size: 19,
            records_stored: 3,
            records_by_kind: vec![("shard".into(), 3)],
            bytes_used: 1000,
            capacity: 1 << 30,
            uptime_secs: 5,
            malformed_requests: 0,
            rate_limited: 0,
            refused_full: 0,
            corrupt_records: 0,
            pending_repairs: 0,
            shards_repaired: 0,
            shards_handed_over: 0,
            repair_bytes: 0,
            audits_passed: 4,
            audit_failures: 1,
            bad_shards_served: 0,
            account: Address::random(),
            earned: 0,
            ledger_evidence: 0,
            balance: Some(-3),
            transfers_signed: 0,
            workers: vec![WorkerStatus { name: "repair".into(), state: "idle".into(), counters: vec![("rebuilt".into(), 2)] }],
            settings: vec![("payment_grace_secs".into(), "60".into())],
            version: "0.1.0".into(),
        };
        for resp in [
            Response::Pong,
            Response::Status(status),
            Response::Closest(vec![PeerId::random(), PeerId::random()]),
            Response::Error(RemoteError::Malformed(WireError::Empty)),
            Response::Error(RemoteError::NotHeld { chunk: Address::random(), index: 2 }),
            Response::Error(RemoteError::Released { chunk: Address::random(), index: 5 }),
            Response::Proof(vec![1, 2, 3]),
        ] {
            assert_eq!(decode::<Response>(&encode(&resp).unwrap()).unwrap(), resp);
        }
    }

    #[test]
    fn undecodable_request_cannot_be_sent() {
        assert!(encode(&Request::Undecodable(WireError::Empty)).is_err());
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert_eq!(decode::<Request>(&[]), Err(WireError::Empty));
        assert_eq!(
            decode::<Request>(&[9, 0]),
            Err(WireError::UnsupportedVersion { got: 9, supported: WIRE_VERSION })
        );
        assert!(matches!(decode::<Request>(&[WIRE_VERSION, 200]), Err(WireError::Body(_))));
        assert_eq!(decode::<Request>(&[WIRE_VERSION, 0, 0]), Err(WireError::Trailing(1)));
        // A truncated FindClosest.
        let mut bytes = encode(&Request::FindClosest { target: Address::random(), n: 3 }).unwrap();
        bytes.truncate(10);
        assert!(matches!(decode::<Request>(&bytes), Err(WireError::Body(_))));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
            let mut versioned = bytes.clone();
            versioned.insert(0, WIRE_VERSION);
            let _ = decode::<Request>(&versioned);
            let _ = decode::<Response>(&versioned);
        }
    }
}
