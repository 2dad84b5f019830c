//! What each fuzz target does with its bytes: decode them as a stranger's message, record,
//! file or certificate, then run the checks a vault or client runs on what decodes. A target
//! passes if it returns (an error is a pass); a panic, hang or abort is a finding.
//!
//! The libFuzzer harness in `fuzz/harness` (nightly, `cargo fuzz`) calls these; the corpus
//! it grew and every crash it found are kept in `fuzz/corpus/<target>` and
//! `fuzz/artifacts/<target>`, and `tests/replay.rs` runs them all through the same functions
//! on the stable toolchain, so the test command covers them without a fuzzer.
#![deny(missing_docs)]

use kura_client::root::{DirEntry, RootRecord};
use kura_client::tree::TreePlan;
use kura_client::{Account, UserKey};
use kura_node::ledger::{BindingCache, Certificate, Entry, SignedTransfer};
use kura_node::wire::{self, Request, Response};
use kura_node::{stored, Record};

/// A target: its name (its corpus folder) and what it does with one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("wire_request", wire_request),
    ("wire_response", wire_response),
    ("stored_record", stored_record),
    ("root_record", root_record),
    ("tree_manifest", tree_manifest),
    ("letter", letter),
    ("certificate", certificate),
];

/// The checks a vault runs on a record it is handed.
fn check_record(record: &Record) {
    let _ = record.validate();
    let _ = record.validate_for(&record.key());
    if let Record::Transfer(entry) = record {
        check_entry(entry);
    }
}

fn check_entry(entry: &Entry) {
    let _ = entry.check_shape();
    let _ = entry.certificate.prepare(&mut BindingCache::default());
}

/// A request frame's body as a vault decodes it, and the checks of what it carries.
pub fn wire_request(data: &[u8]) {
    if let Ok(request) = wire::decode::<Request>(data) {
        match &request {
            Request::PutRecord(record) => check_record(record),
            Request::Sign(signed) => {
                let _ = signed.verify();
            }
            _ => {}
        }
        // What decodes encodes again, to the same message.
        if let Ok(bytes) = wire::encode(&request) {
            assert_eq!(wire::decode::<Request>(&bytes).ok().as_ref(), Some(&request), "a request does not survive a round trip");
        }
    }
}

/// A response frame's body as a client decodes it, and the checks of what it carries.
pub fn wire_response(data: &[u8]) {
    if let Ok(response) = wire::decode::<Response>(data) {
        match &response {
            Response::Record(Some(record)) => check_record(record),
            Response::Entries { entries, .. } => entries.iter().for_each(check_entry),
            Response::Quote(quote) => {
                let _ = quote.verify(0);
            }
            _ => {}
        }
    }
}

/// A record file as a vault reads it back from disk; a kept promise or pending payment.
pub fn stored_record(data: &[u8]) {
    if let Ok(record) = stored::decode(data) {
        check_record(&record);
    }
    if let Ok(signed) = stored::decode_transfer(data) {
        let _ = signed.verify();
    }
}

/// A root record as `kura get` opens it: sealed to a user's key, or public.
pub fn root_record(data: &[u8]) {
    let key = UserKey::from_bytes(ROOT_KEY);
    let _ = RootRecord::open_layered(data, &key);
}

/// A folder manifest as `kura get` checks it before writing anything.
pub fn tree_manifest(data: &[u8]) {
    if let Ok((entries, _)) = postcard::take_from_bytes::<Vec<DirEntry>>(data) {
        let _ = TreePlan::check(entries);
    }
}

/// The recovery phrase of the account letters are fuzzed to (all-zero entropy), so that a
/// letter sealed to it in the corpus opens and the fuzzer explores past the seal.
pub const RECIPIENT_PHRASE: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
    abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art";

/// The key root records are fuzzed under.
pub const ROOT_KEY: [u8; 32] = [7; 32];

/// A sealed letter as its recipient opens it.
pub fn letter(data: &[u8]) {
    thread_local! {
        static RECIPIENT: Option<Account> = Account::from_phrase(RECIPIENT_PHRASE).ok();
    }
    RECIPIENT.with(|r| {
        if let Some(r) = r {
            let _ = kura_client::messages::open(r, data);
        }
    });
}

/// A certificate or a signed transfer as a vault or client checks it.
pub fn certificate(data: &[u8]) {
    if let Ok(cert) = postcard::from_bytes::<Certificate>(data) {
        let _ = cert.verify(&mut BindingCache::default());
    }
    if let Ok(signed) = postcard::from_bytes::<SignedTransfer>(data) {
        let _ = signed.verify();
        let _ = signed.prepare();
    }
}
