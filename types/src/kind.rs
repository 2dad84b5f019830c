//! What a record kind declares, as Garage's `TableSchema` does for a table: its tag, how its
//! key derives from its content or owner, how it is checked against that key, what supersedes
//! what, how it is replicated, and how a body stored by an older format is read.
//!
//! [`Record`] is the sum of the kinds, and every method of it dispatches here; a new kind is a
//! module implementing [`Kind`], a variant of [`RecordKind`] and of [`Record`], and a line in
//! [`each_kind`](crate::each_kind). Vaults add what they do with a kind (admission, what is
//! noted once stored, repair) in a module of their own.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::record::{Record, RecordError, RecordKey, RecordKind, Strategy};
use crate::stored::FormatError;

/// The rules of one record kind.
pub trait Kind: Sized + Serialize + DeserializeOwned {
    /// Its kind: the stable tag and name it is stored and shown under.
    const KIND: RecordKind;

    /// The key it is stored under, derived from the record itself.
    fn key(&self) -> RecordKey;

    /// How it is replicated.
    fn strategy(&self) -> Strategy;

    /// Checks the record on its own (hashes, signatures, shape) and that vaults accept it;
    /// [`Record::validate_for`] adds that it belongs under its key.
    fn check(&self) -> Result<(), RecordError>;

    /// Whether it may replace `held`, stored under the same key: never, unless the kind is
    /// mutable and this is a newer version its owner signed.
    fn supersedes(&self, _held: &Self) -> bool {
        false
    }

    /// Bytes charged against a vault's quota for it.
    fn size(&self) -> usize;

    /// Reads the record from a body stored in record format `format` (the formats
    /// [`crate::stored`] knows; the body is the kind's postcard in each so far). A kind whose
    /// layout changes reads its older bodies here.
    fn read_stored(body: &[u8], _format: u8) -> Result<Self, FormatError> {
        crate::stored::whole(body)
    }

    /// The record as a [`Record`].
    fn into_record(self) -> Record;
}

/// Runs `$body` with `$r` bound to the record of whichever kind `$record` holds.
#[macro_export]
macro_rules! each_kind {
    ($record:expr, $r:ident => $body:expr) => {
        match $record {
            $crate::Record::Shard($r) => $body,
            $crate::Record::Pointer($r) => $body,
            $crate::Record::Message($r) => $body,
            $crate::Record::Transfer($r) => $body,
        }
    };
}

/// Reads the record of kind `tag` from a body of record format `format`.
pub(crate) fn read_stored(tag: u8, body: &[u8], format: u8) -> Result<Record, FormatError> {
    fn read<K: Kind>(body: &[u8], format: u8) -> Result<Record, FormatError> {
        K::read_stored(body, format).map(K::into_record)
    }
    match RecordKind::from_tag(tag) {
        Some(RecordKind::Shard) => read::<crate::record::Shard>(body, format),
        Some(RecordKind::Pointer) => read::<crate::record::Pointer>(body, format),
        Some(RecordKind::Message) => read::<crate::message::Message>(body, format),
        Some(RecordKind::Transfer) => read::<crate::ledger::Entry>(body, format),
        None => Err(FormatError::UnknownKind(tag)),
    }
}
