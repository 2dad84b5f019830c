//! Writes each target's seed inputs (valid messages, records, files and certificates, so the
//! fuzzer starts past the decoders' front doors) into `corpus/<target>/seed-*`. Run by
//! `scripts/fuzz.sh`; the seeds are committed with the rest of the corpus.

use std::path::Path;

use kura_client::messages::{seal, Body, Letter};
use kura_client::root::{ChunkRef, Content, DirEntry, EntryKind, RootRecord};
use kura_client::{Account, UserKey, Visibility};
use kura_node::erasure::Coding;
use kura_node::ledger::{Certificate, Entry, Output, Quote, WalletKey};
use kura_node::wire::{self, Request, Response};
use kura_node::{stored, Address, Keypair, Pointer, Record, RecordKey};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

#[test]
#[ignore = "writes the seed corpus: scripts/fuzz.sh runs it"]
fn write_seeds() {
    let shard = Coding::default().encode(b"a chunk of a file, coded into shards").unwrap().remove(3);
    let user = UserKey::from_bytes(kura_fuzz::ROOT_KEY);
    let pointer = Pointer::sign(&user.signing_key(), Pointer::name_hash("site"), 4, Address::of_content(b"t"));
    let owner = WalletKey::from_seed(&[3; 32]);
    let signed = owner.sign(1, vec![Output { to: Address([9; 32]), amount: 1_000, memo: [0; 32] }]);
    let signers: Vec<_> = (0..6u8)
        .map(|i| {
            let key = WalletKey::from_seed(&[i + 10; 32]);
            let binding = key.bind(&Keypair::generate_ed25519());
            let share = key.sign_replica(&signed);
            (binding, share)
        })
        .collect();
    let cert = Certificate::aggregate(signed.clone(), signers).unwrap();
    let entry = Entry { account: Address([9; 32]), certificate: cert.clone() };
    let quote = Quote::sign(&Keypair::generate_ed25519(), Address([1; 32]), 100, 1 << 40);

    let requests = [
        ("ping", Request::Ping),
        ("status", Request::Status),
        ("put-shard", Request::PutRecord(Record::Shard(shard.clone()))),
        ("put-pointer", Request::PutRecord(Record::Pointer(pointer.clone()))),
        ("put-transfer", Request::PutRecord(Record::Transfer(entry.clone()))),
        ("get", Request::GetRecord(RecordKey::shard(shard.header.address(), 3))),
        ("sign", Request::Sign(signed.clone())),
        ("history", Request::History { account: Address([9; 32]), after: None }),
    ];
    for (name, r) in requests {
        write("wire_request", name, &wire::encode(&r).unwrap());
    }
    let responses = [
        ("pong", Response::Pong),
        ("record", Response::Record(Some(Record::Shard(shard.clone())))),
        ("entries", Response::Entries { entries: vec![entry.clone()], more: false }),
        ("quote", Response::Quote(quote)),
    ];
    for (name, r) in responses {
        write("wire_response", name, &wire::encode(&r).unwrap());
    }
    write("stored_record", "shard", &stored::encode(&Record::Shard(shard.clone())));
    write("stored_record", "pointer", &stored::encode(&Record::Pointer(pointer)));
    write("stored_record", "transfer", &stored::encode(&Record::Transfer(entry)));
    write("stored_record", "promise", &stored::encode_transfer(&signed));
    write("certificate", "certificate", &postcard::to_stdvec(&cert).unwrap());
    write("certificate", "signed", &postcard::to_stdvec(&signed).unwrap());

    let chunk = ChunkRef { content: Address([4; 32]), address: Address([5; 32]) };
    let file = RootRecord::File { data_map: vec![1, 2, 3, 4], size: 5_000, chunks: vec![chunk] };
    write("root_record", "private", &file.seal(Visibility::Private, &user).unwrap());
    write("root_record", "public", &file.seal(Visibility::Public, &user).unwrap());
    write("root_record", "inline", &RootRecord::Inline(vec![1, 2]).seal(Visibility::Public, &user).unwrap());
    let tree = vec![
        DirEntry { path: "docs".into(), mode: 0o755, kind: EntryKind::Dir },
        DirEntry { path: "docs/a".into(), mode: 0o644, kind: EntryKind::File { size: 2, content: Content::Inline(vec![1, 2]) } },
        DirEntry { path: "docs/link".into(), mode: 0o777, kind: EntryKind::Symlink("a".into()) },
    ];
    write("tree_manifest", "tree", &postcard::to_stdvec(&tree).unwrap());

    let recipient = Account::from_phrase(kura_fuzz::RECIPIENT_PHRASE).unwrap();
    let sender = Account::from_phrase(&Account::generate().phrase()).unwrap();
    let letter = Letter {
        from: sender.id(),
        to: recipient.id(),
        seq: 1,
        sent_ms: 1_700_000_000_000,
        body: Body::Text { text: "hello".into(), attachments: Vec::new() },
    };
    let sealed = seal(&sender, &letter).unwrap();
    kura_client::messages::open(&recipient, &sealed).expect("the seed letter opens");
    write("letter", "text", &sealed);
}
