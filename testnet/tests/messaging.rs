//! Messaging on real vault processes (10-vault testnets): a recipient with no process running
//! gets 20 messages in order, once each, and the sender sees receipts; no vault's files hold
//! the text or the sender's keys or ID; forged, lazy, malformed, expired and blocked messages
//! and unsigned inbox requests are refused, and so are messages with less work than their
//! recipient published; the inbox survives the loss of half its vaults and
//! a 10 MiB attachment arrives byte-identical.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kura_client::messages::{open, seal, seal_signed_with, Attachment, Body, Letter, Mailbox, DEFAULT_TTL};
use kura_client::{Account, ClientError, UserKey, Visibility};
use kura_node::message::{Difficulty, InboxOp, InboxRequest, Message, MAX_SEALED};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{close_group, NodeError, Record, RecordError, RecordKey};

mod common;
use common::{rt, running_ids, Net};

fn unix_now() -> u64 {
    kura_node::message::unix_now().as_secs()
}

fn account_in(dir: &Path) -> Account {
    let a = Account::generate();
    a.install(dir).unwrap();
    a
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn an_offline_recipient_gets_every_message_once_in_order_and_vaults_learn_nothing() {
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let homes = tempfile::tempdir().unwrap();
    let (alice_home, bob_home) = (homes.path().join("alice"), homes.path().join("bob"));
    let (alice, bob) = (account_in(&alice_home), account_in(&bob_home));
    let texts: Vec<String> = (0..20).map(|i| format!("plaintext-marker {i:02}: meet at the old mill")).collect();

    // Bob has no process running while Alice writes.
    rt.block_on(async {
        let client = net.connect().await;
        let mut mailbox = Mailbox::open(&alice_home).unwrap();
        for text in &texts {
            mailbox.send(&client, bob.id(), text.clone(), vec![], DEFAULT_TTL).await.unwrap();
        }
        client.close().await;
    });

    // What the vaults hold: neither the text nor who sent it.
    let id_text = alice.id().to_string();
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("the text", b"plaintext-marker".to_vec()),
        ("the sender's signing key", alice.id().sign.to_vec()),
        ("the sender's sealing key", alice.id().seal.to_vec()),
        ("the sender's account ID", id_text.as_bytes().to_vec()),
    ];
    let mut files = Vec::new();
    for i in 0..net.net.state().unwrap().vaults.len() {
        files_under(&net.net.layout().vault_root(i), &mut files);
    }
    let mut scanned = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        scanned += bytes.len();
        for (what, needle) in &needles {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_slice()), "{} holds {what}", f.display());
        }
    }
    eprintln!("scanned {} files, {scanned} bytes of vault data", files.len());

    rt.block_on(async {
        // Bob comes back.
        let client = net.connect().await;
        let mut mailbox = Mailbox::open(&bob_home).unwrap();
        let got = mailbox.sync(&client).await.unwrap();
        let got_texts: Vec<&str> = got.new.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(got_texts, texts.iter().map(String::as_str).collect::<Vec<_>>(), "all 20, in order, once each");
        assert!(got.new.iter().all(|r| r.from == alice.id() && r.request), "from Alice, a stranger to Bob");
        assert_eq!(got.new.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=20).collect::<Vec<u64>>());
        for _ in 0..3 {
            assert!(mailbox.sync(&client).await.unwrap().new.is_empty(), "nothing twice, however often Bob looks");
        }
        assert!(client.list_inbox(&bob).await.unwrap().is_empty(), "read messages are deleted from the vaults");
        drop(mailbox);

        // Alice reads her inbox: Bob's receipts.
        let mut mailbox = Mailbox::open(&alice_home).unwrap();
        let back = mailbox.sync(&client).await.unwrap();
        assert_eq!(back.delivered.len(), 20, "a receipt for every message");
        assert!(mailbox.sent().iter().all(|s| s.delivered));
        assert!(back.new.is_empty(), "receipts are not shown as messages");
        client.close().await;
    });
}

#[test]
fn forged_lazy_malformed_expired_and_blocked_messages_and_unsigned_requests_are_refused() {
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let homes = tempfile::tempdir().unwrap();
    let (alice_home, bob_home, eve_home) = (homes.path().join("a"), homes.path().join("b"), homes.path().join("e"));
    let (alice, bob, eve) = (account_in(&alice_home), account_in(&bob_home), account_in(&eve_home));
    rt.block_on(async {
        let client = net.connect().await;
        let inbox = bob.id().inbox();
        let group = close_group(&inbox, running_ids(&net), 8);
        let now = unix_now();

        // Eve writes as Alice: a letter naming Alice, signed with Eve's key, sealed to Bob.
        let forged = Letter {
            from: alice.id(),
            to: bob.id(),
            seq: 1,
            sent_ms: now * 1000,
            body: Body::Text { text: "from alice, honest".into(), attachments: vec![] },
        };
        assert!(seal(&eve, &forged).is_err(), "the library will not sign as another");
        let sealed = seal_signed_with(&eve.signing_key(), &forged).unwrap();
        assert!(open(&bob, &sealed).is_err());
        let m = Message::new(inbox, now, now + 3600, sealed, Difficulty::DEFAULT);
        client.replicate(Record::Message(m), "forgery").await.unwrap();
        // Bytes that are not a sealed letter at all, with honest work.
        let junk = Message::new(inbox, now, now + 3600, vec![0x5a; 1000], Difficulty::DEFAULT);
        client.replicate(Record::Message(junk), "junk").await.unwrap();

        // Too little work: every vault refuses it.
        // Work is found by chance: a message mined at the low difficulty sometimes meets the
        // default too, so one that does not is drawn.
        let lazy = (0u8..=255)
            .map(|b| Message::new(inbox, now, now + 3600, vec![b; 1000], Difficulty { trials_per_byte: 1, extra_bytes: 0 }))
            .find(|m| !m.meets(&Difficulty::DEFAULT))
            .expect("a message with too little work");
        match client.replicate(Record::Message(lazy.clone()), "lazy").await {
            Err(ClientError::Refused(why)) => assert!(why.contains("too little work"), "{why}"),
            other => panic!("a message without its work was stored: {other:?}"),
        }
        for &vault in &group {
            let answer = client.node().request(vault, Request::PutRecord(Record::Message(lazy.clone()))).await;
            assert!(
                matches!(answer, Err(NodeError::Remote { error: RemoteError::Refused(RecordError::TooLittleWork { .. }), .. })),
                "{vault}: {answer:?}"
            );
        }
        // Oversized, expired, and from too far in the future.
        let big = Message { sealed: vec![0; MAX_SEALED + 1], ..Message::new(inbox, now, now + 60, vec![0; 10], Difficulty::DEFAULT) };
        let expired = Message::new(inbox, now - 7200, now - 3600, vec![2; 100], Difficulty::DEFAULT);
        let future = Message::new(inbox, now + 7200, now + 9000, vec![3; 100], Difficulty::DEFAULT);
        for bad in [big, expired, future] {
            let answer = client.node().request(group[0], Request::PutRecord(Record::Message(bad))).await;
            assert!(matches!(answer, Err(NodeError::Remote { .. })), "{answer:?}");
        }

        // Listing or deleting Bob's inbox without Bob's key.
        let mut as_bob = InboxRequest::sign(&eve.signing_key(), InboxOp::List { after: None }, now);
        as_bob.owner = bob.id().sign;
        let stale = InboxRequest::sign(&bob.signing_key(), InboxOp::List { after: None }, now - 3600);
        let mut delete = InboxRequest::sign(&eve.signing_key(), InboxOp::Delete { ids: vec![[0; 32]] }, now);
        delete.owner = bob.id().sign;
        for request in [as_bob, stale, delete] {
            for &vault in &group {
                let answer = client.node().request(vault, Request::Inbox(request.clone())).await;
                assert!(
                    matches!(answer, Err(NodeError::Remote { error: RemoteError::Refused(RecordError::Unauthorized(_)), .. })),
                    "{vault} answered {answer:?}"
                );
            }
        }
        assert_eq!(client.list_inbox(&bob).await.unwrap().len(), 2, "the forgery and the junk are still there");

        // Eve is blocked; she writes anyway, under her own name.
        let mut mailbox = Mailbox::open(&bob_home).unwrap();
        mailbox.block(eve.id()).unwrap();
        let mut eves = Mailbox::open(&eve_home).unwrap();
        eves.send(&client, bob.id(), "let me in".into(), vec![], DEFAULT_TTL).await.unwrap();
        // Bob asks three times the default work; a sender who does only the default is
        // stored by vaults (the network's floor) but refused by Bob.
        let asked = Difficulty { trials_per_byte: 3 * Difficulty::DEFAULT.trials_per_byte, ..Difficulty::DEFAULT };
        mailbox.ask_difficulty(&client, asked).await.unwrap();
        assert_eq!(client.difficulty_of(&bob.id()).await.unwrap(), asked, "published for senders to find");
        let cheap = Letter { seq: 7, body: Body::Text { text: "default work only".into(), attachments: vec![] }, ..forged.clone() };
        let sealed = seal(&alice, &cheap).unwrap();
        // A nonce found for the default target meets three times that work one time in three:
        // mined again until it does not, so the message carries the default's work only.
        let cheap = std::iter::repeat_with(|| Message::new(inbox, now, now + 3600, sealed.clone(), Difficulty::DEFAULT))
            .find(|m| !m.meets(&asked))
            .unwrap();
        client.replicate(Record::Message(cheap), "cheap").await.unwrap();
        // A message that expires before Bob looks: kept until then, purged after.
        let mut alices = Mailbox::open(&alice_home).unwrap();
        let fleeting = alices.send(&client, bob.id(), "gone soon".into(), vec![], Duration::from_secs(10)).await.unwrap();
        let fleeting_key = RecordKey { kind: kura_node::RecordKind::Message, address: inbox, id: hex_id(&fleeting.id) };
        let held = |client: &kura_client::Client| {
            let group = group.clone();
            let client = client.clone();
            async move {
                let mut n = 0;
                for vault in group {
                    if let Ok(Response::Record(Some(_))) = client.node().request(vault, Request::GetRecord(fleeting_key)).await {
                        n += 1;
                    }
                }
                n
            }
        };
        assert!(held(&client).await >= 5, "stored on most of the group");
        alices.send(&client, bob.id(), "still here".into(), vec![], DEFAULT_TTL).await.unwrap();
        let start = Instant::now();
        while held(&client).await > 0 {
            assert!(start.elapsed() < Duration::from_secs(60), "the expired message was not purged");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!("expired message purged from every vault {:.1} s after it was sent", start.elapsed().as_secs_f64());

        let got = mailbox.sync(&client).await.unwrap();
        let texts: Vec<&str> = got.new.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, vec!["still here"], "only the honest, live message is shown");
        assert_eq!(got.rejected, 3, "the forgery, the junk and the cheap message are refused");
        assert_eq!(got.blocked, 1, "Eve's message is dropped unseen");
        drop(mailbox);
        // Eve gets no receipt; Alice does.
        assert!(eves.sync(&client).await.unwrap().delivered.is_empty());
        assert_eq!(alices.sync(&client).await.unwrap().delivered.len(), 1);
        client.close().await;
    });
}

#[test]
fn the_inbox_survives_half_its_vaults_and_a_10_mib_attachment_arrives_whole() {
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let homes = tempfile::tempdir().unwrap();
    let (alice_home, bob_home) = (homes.path().join("a"), homes.path().join("b"));
    let (_alice, bob) = (account_in(&alice_home), account_in(&bob_home));
    let content: Vec<u8> = (0..10 << 20).map(|_| rand::random::<u8>()).collect();
    let file = homes.path().join("holiday.bin");
    std::fs::write(&file, &content).unwrap();
    rt.block_on(async {
        let client = net.connect().await;
        let key = UserKey::generate();
        let address = client.put_path(&file, Visibility::Private, &key, &ProgressBar::hidden()).await.unwrap();
        let attachment = Attachment { name: "holiday.bin".into(), size: content.len() as u64, address, key: key.to_bytes() };
        let mut mailbox = Mailbox::open(&alice_home).unwrap();
        for text in ["one", "two", "the photos"] {
            let attachments = if text == "the photos" { vec![attachment.clone()] } else { vec![] };
            mailbox.send(&client, bob.id(), text.into(), attachments, DEFAULT_TTL).await.unwrap();
        }
        client.close().await;
    });

    // Four of the inbox's eight vaults vanish, data and all.
    let state = net.net.state().unwrap();
    let group = close_group(&bob.id().inbox(), running_ids(&net), 8);
    let victims: Vec<usize> = (0..state.vaults.len())
        .filter(|&i| group[..4].iter().any(|p| p.to_string() == state.vaults[i].peer_id))
        .collect();
    assert_eq!(victims.len(), 4);
    net.net.kill(&victims, true).unwrap();
    for &i in &victims {
        std::fs::remove_dir_all(net.net.layout().vault_root(i)).unwrap();
    }

    rt.block_on(async {
        let client = net.connect().await;
        // The group changed: its new members receive the messages from the survivors, as
        // shards are rebuilt (six vaults are left, so each of them belongs to the group).
        let start = Instant::now();
        loop {
            let mut counts = Vec::new();
            for vault in running_ids(&net) {
                let list = InboxRequest::sign(&bob.signing_key(), InboxOp::List { after: None }, unix_now());
                counts.push(match client.node().request(vault, Request::Inbox(list)).await {
                    Ok(Response::Messages { messages, .. }) => messages.len(),
                    _ => 0,
                });
            }
            if counts.iter().all(|&n| n == 3) {
                eprintln!("every remaining vault holds the inbox {:.1} s after the loss", start.elapsed().as_secs_f64());
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(90), "inbox not re-replicated: {counts:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut mailbox = Mailbox::open(&bob_home).unwrap();
        let got = mailbox.sync(&client).await.unwrap();
        let texts: Vec<&str> = got.new.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, vec!["one", "two", "the photos"]);
        let attachment = &got.new[2].attachments[0];
        let out = homes.path().join("received.bin");
        client
            .get_path(attachment.address, &out, &UserKey::from_bytes(attachment.key), &ProgressBar::hidden())
            .await
            .unwrap();
        assert!(std::fs::read(&out).unwrap() == content, "the attachment arrives byte-identical");
        client.close().await;
    });
}

fn hex_id(id: &str) -> [u8; 32] {
    hex::decode(id).unwrap().try_into().unwrap()
}
