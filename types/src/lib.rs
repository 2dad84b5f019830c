//! Kura's shared storage types, free of any async runtime or transport, so that vaults,
//! clients and tools agree on them without pulling in the network stack.
//!
//! - [`Address`]: the 256-bit XOR space.
//! - [`kind`]: what a record kind declares (key, checks, supersession, strategy, migration).
//! - [`record`]: record kinds, keys and replication strategies; chunk shards whose storage
//!   address commits to their coding, owner-signed mutable pointers, and inbox messages.
//! - [`erasure`]: Reed-Solomon coding of chunks, decoded only with the coding an address
//!   commits to.
//! - [`message`]: inbox messages (sealed, with proof of work) and the owner's signed requests.
//! - [`ledger`]: the reward ledger's accounts, owner-signed transfers and the quorum
//!   certificates that replicas sign, and what a replica may sign.
//! - [`age`]: node age, elders and the quorums they certify with.
//! - [`audit`]: random-slice Bao proofs of storage.
//! - [`durable`]: the one crash-safe way every Kura file is written.
//! - [`stored`]: the versioned disk format of a record, apart from the wire.
//! - [`wire`]: versioned, size-limited request/response messages that decode without panics.
//!
//! ```
//! use kura_types::{erasure::Coding, Record};
//! let shards = Coding::default().encode(b"a chunk of a file").unwrap();
//! let address = shards[0].header.address();
//! let record = Record::Shard(shards[3].clone());
//! record.validate_for(&kura_types::RecordKey::shard(address, 3)).unwrap();
//! assert_eq!(kura_types::erasure::decode(address, shards).unwrap(), b"a chunk of a file");
//! ```
#![deny(missing_docs)]

mod address;
pub mod age;
pub mod audit;
pub mod durable;
pub mod erasure;
pub mod kind;
pub mod ledger;
pub mod message;
pub mod record;
pub mod stored;
pub mod wire;

pub use address::{Address, AddressParseError, ADDRESS_LEN};
pub use kind::Kind;
pub use record::{Pointer, Record, RecordError, RecordKey, RecordKind, Shard, ShardHeader, Strategy};
