//! The disk format of a stored record, kept apart from the wire format.
//!
//! Format 2 (this build): `"KREC"` ‖ format version (1 byte) ‖ kind tag (1 byte) ‖ postcard of
//! the kind's record. Format 1 (vaults before records of many kinds) wrote a shard exactly as
//! its wire message: wire version byte `1` ‖ postcard of the shard, with the shard header laid
//! out as [`ShardHeader`](crate::ShardHeader) still is; it is read, never written. Bumping the
//! wire version changes nothing here, and a record of a newer format is reported as such, so a
//! vault never mistakes it for garbage.
//!
//! A signed transfer kept on disk (a replica's promise, a wallet's pending payment) has a
//! format of its own: `"KSTX"` ‖ format version (1 byte) ‖ postcard of the
//! [`SignedTransfer`]. Format 0, from builds before it had one, is the bare postcard; it is
//! read, never written.

use crate::ledger::SignedTransfer;
use crate::record::{Record, Shard};

/// First bytes of every record written in format 2 or later.
pub const MAGIC: &[u8; 4] = b"KREC";
/// The record format this build writes.
pub const FORMAT: u8 = 2;
/// The first format's leading byte (its wire version).
const FORMAT_1_LEAD: u8 = 1;

/// Why stored bytes could not be read as a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Written by a newer build.
    #[error("record format {0} is newer than this build reads ({FORMAT})")]
    Newer(u8),
    /// The kind tag names no kind this build knows.
    #[error("unknown record kind tag {0}")]
    UnknownKind(u8),
    /// The bytes are not a record of any known format.
    #[error("unreadable record: {0}")]
    Unreadable(String),
}

/// Encodes a record for disk.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.size() + 16);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(record.kind().tag());
    let body = crate::each_kind!(record, r => postcard::to_extend(r, out));
    // Serializing these plain structs into a Vec cannot fail.
    body.unwrap_or_default()
}

/// Decodes a record written by [`encode`] or by the first format. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Record, FormatError> {
    if let Some(rest) = bytes.strip_prefix(MAGIC) {
        let (&format, rest) = rest.split_first().ok_or_else(|| FormatError::Unreadable("no format byte".into()))?;
        if format > FORMAT {
            return Err(FormatError::Newer(format));
        }
        let (&tag, body) = rest.split_first().ok_or_else(|| FormatError::Unreadable("no kind tag".into()))?;
        return crate::kind::read_stored(tag, body, format);
    }
    match bytes.split_first() {
        Some((&FORMAT_1_LEAD, body)) => whole::<Shard>(body).map(Record::Shard),
        _ => Err(FormatError::Unreadable("no record magic".into())),
    }
}

/// First bytes of every signed transfer written in format 1 or later.
pub const TRANSFER_MAGIC: &[u8; 4] = b"KSTX";
/// The signed-transfer format this build writes.
pub const TRANSFER_FORMAT: u8 = 1;

/// Encodes a signed transfer for disk.
pub fn encode_transfer(signed: &SignedTransfer) -> Vec<u8> {
    let mut out = TRANSFER_MAGIC.to_vec();
    out.push(TRANSFER_FORMAT);
    // Serializing a plain struct into a Vec cannot fail.
    postcard::to_extend(signed, out).unwrap_or_default()
}

/// Decodes a signed transfer written by [`encode_transfer`], or by a build before it (format
/// 0: the bare postcard, whose first byte, a key's length, is never `K`). Never panics.
pub fn decode_transfer(bytes: &[u8]) -> Result<SignedTransfer, FormatError> {
    match bytes.strip_prefix(TRANSFER_MAGIC) {
        Some(rest) => match rest.split_first() {
            Some((&TRANSFER_FORMAT, body)) => whole(body),
            Some((&format, _)) if format > TRANSFER_FORMAT => Err(FormatError::Newer(format)),
            _ => Err(FormatError::Unreadable("no signed-transfer format".into())),
        },
        None => whole(bytes),
    }
}

pub(crate) fn whole<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, FormatError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| FormatError::Unreadable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FormatError::Unreadable(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erasure::Coding;
    use crate::record::Pointer;
    use crate::Address;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip() {
        let shard = Record::Shard(Coding::default().encode(b"chunk bytes").unwrap().remove(5));
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let pointer = Record::Pointer(Pointer::sign(&key, Pointer::name_hash("n"), 9, Address::random()));
        for r in [shard, pointer] {
            let bytes = encode(&r);
            assert_eq!(&bytes[..4], MAGIC);
            assert_eq!(bytes[5], r.kind().tag());
            assert_eq!(decode(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn the_first_format_reads_as_a_shard() {
        // Format 1 was the wire encoding of the shard at wire version 1.
        let shard = Coding::default().encode(b"old chunk").unwrap().remove(2);
        let mut old = vec![1u8];
        old.extend(postcard::to_stdvec(&shard).unwrap());
        assert_eq!(decode(&old).unwrap(), Record::Shard(shard));
    }

    #[test]
    fn newer_unknown_and_garbage_are_told_apart() {
        let mut newer = encode(&Record::Shard(Coding::default().encode(b"x y z").unwrap().remove(0)));
        newer[4] = FORMAT + 1;
        assert_eq!(decode(&newer), Err(FormatError::Newer(FORMAT + 1)));
        let mut unknown = newer.clone();
        unknown[4] = FORMAT;
        unknown[5] = 200;
        assert_eq!(decode(&unknown), Err(FormatError::UnknownKind(200)));
        for bad in [&b""[..], b"KREC", b"KREC\x02", b"\x07abc", b"\x01\xff\xff"] {
            assert!(matches!(decode(bad), Err(FormatError::Unreadable(_))), "{bad:?}");
        }
    }

    /// A promise or pending payment saved by builds before the format (bare postcard, kept in
    /// `tests/fixtures`), and one saved now, read back as the same transfer.
    #[test]
    fn signed_transfers_of_every_format_read_back() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let key = crate::ledger::WalletKey::from_seed(&[7; 32]);
        let signed = key.sign(3, vec![crate::ledger::Output { to: Address([9; 32]), amount: 1_000, memo: [5; 32] }]);
        let old = std::fs::read(fixtures.join("transfer-format0.bin")).unwrap();
        assert_eq!(decode_transfer(&old).unwrap(), signed, "format 0 (bare postcard) migrates");
        let now = std::fs::read(fixtures.join("transfer-format1.bin")).unwrap();
        assert_eq!(now, encode_transfer(&signed), "format 1 is what this build writes");
        assert_eq!(decode_transfer(&now).unwrap(), signed);
        let mut newer = now.clone();
        newer[4] = TRANSFER_FORMAT + 1;
        assert_eq!(decode_transfer(&newer), Err(FormatError::Newer(TRANSFER_FORMAT + 1)));
        for bad in [&b""[..], b"KSTX", b"KSTX\x00", &now[..now.len() - 1]] {
            assert!(decode_transfer(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let _ = decode_transfer(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend(&bytes);
            let _ = decode(&framed);
        }
    }
}
