//! Records of many kinds on real vault processes: mutable pointers (set, read back from every
//! holder, forged, replayed and stale updates refused, racing writers converging, surviving half
//! their holders), forged shards that cannot touch a stored file, and a vault SIGKILLed while
//! holding pointers and shards that restarts with all of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kura_client::{Client, ClientError, UserKey, Visibility};
use kura_node::erasure::Coding;
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, NodeError, PeerId, Pointer, Record, RecordKey};

mod common;
use common::{rt, Net};

/// The version of the pointer at `address` each of `vaults` holds (`None`: none or no answer).
async fn versions(client: &Client, address: Address, vaults: &[PeerId]) -> Vec<Option<Pointer>> {
    let mut out = Vec::new();
    for &v in vaults {
        let answer = client.node().request(v, Request::GetRecord(RecordKey::pointer(address))).await;
        out.push(match answer {
            Ok(Response::Record(Some(Record::Pointer(p)))) if p.verify().is_ok() && p.address() == address => Some(p),
            _ => None,
        });
    }
    out
}

/// Waits (up to `limit`) until every vault of the pointer's current close group holds `want`.
async fn wait_group_holds(client: &Client, address: Address, want: &Pointer, limit: Duration, what: &str) {
    let start = Instant::now();
    loop {
        let group = client.closest_vaults(address, 8).await.unwrap();
        let held = versions(client, address, &group).await;
        if group.len() == 8 && held.iter().all(|h| h.as_ref() == Some(want)) {
            eprintln!("{what}: whole group at version {} after {:.1} s", want.version, start.elapsed().as_secs_f64());
            return;
        }
        let seen: Vec<Option<u64>> = held.iter().map(|h| h.as_ref().map(|p| p.version)).collect();
        assert!(start.elapsed() < limit, "{what}: group holds versions {seen:?}, want {}", want.version);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[test]
fn pointers_update_converge_refuse_forgeries_and_survive_half_their_holders() {
    let net = Net::up(16, 1 << 30);
    let rt = rt();
    rt.block_on(async {
        let client = net.connect().await;
        let owner = UserKey::generate();
        let first = Address::random();
        let created = client.create_pointer(&owner, "site", Some(first)).await.unwrap();
        let address = created.address();
        assert_eq!(created.version, 1);
        let again = client.create_pointer(&owner, "site", None).await.unwrap_err();
        assert!(matches!(again, ClientError::PointerExists { version: 1, .. }), "{again}");

        // Set 20 times: every member of the group reads back the last version.
        let mut last = created.clone();
        let mut history = vec![created];
        for _ in 0..20 {
            last = client.set_pointer(&owner, address, Address::random()).await.unwrap();
            history.push(last.clone());
        }
        assert_eq!(last.version, 21);
        assert_eq!(client.get_pointer(address).await.unwrap().as_ref(), Some(&last));
        wait_group_holds(&client, address, &last, Duration::from_secs(30), "20 sets").await;

        // Only the owner can set it.
        let stranger = UserKey::generate();
        let err = client.set_pointer(&stranger, address, Address::random()).await.unwrap_err();
        assert!(matches!(err, ClientError::NotYourPointer(_)), "{err}");
        let group = client.closest_vaults(address, 8).await.unwrap();
        // A forged update (a stranger's signature under the owner's key) is refused by vaults.
        let mut forged = Pointer::sign(&stranger.signing_key(), last.name, 99, Address::random());
        forged.owner = last.owner;
        let err = client.node().request(group[0], Request::PutRecord(Record::Pointer(forged))).await.unwrap_err();
        assert!(matches!(err, NodeError::Remote { error: RemoteError::Invalid(_), .. }), "forged: {err}");
        // A replayed older version is refused as stale, at every member.
        for &v in &group {
            let err = client.node().request(v, Request::PutRecord(Record::Pointer(history[5].clone()))).await.unwrap_err();
            assert!(matches!(err, NodeError::Remote { error: RemoteError::Stale { held: 21, .. }, .. }), "replay: {err}");
        }
        // A stale update from the owner itself (a lower version) never replaces the newer one.
        let stale = Pointer::sign(&owner.signing_key(), last.name, 10, Address::random());
        let err = client.put_pointer(stale).await.unwrap_err();
        assert!(matches!(err, ClientError::StalePointer { held: 21, sent: 10, .. }), "{err}");
        wait_group_holds(&client, address, &last, Duration::from_secs(5), "after refused updates").await;

        // `kura get` on a pointer fetches what it points at (checked in the CLI test below);
        // here: resolve follows it.
        assert_eq!(client.resolve(address).await.unwrap(), last.target);

        // Half the holders die at once: the pointer still reads, and comes back on a full group.
        let ids: BTreeMap<PeerId, usize> = net.net.running_peers(&net.net.state().unwrap()).into_iter().map(|(i, p)| (p, i)).collect();
        let victims: Vec<usize> = group[..4].iter().map(|p| ids[p]).collect();
        let n2 = net.net.clone();
        tokio::task::spawn_blocking(move || n2.kill(&victims, true)).await.unwrap().unwrap();
        assert_eq!(client.get_pointer(address).await.unwrap().as_ref(), Some(&last));
        client.close().await;
        let client = net.connect().await;
        wait_group_holds(&client, address, &last, Duration::from_secs(90), "4 of 8 holders killed").await;
        client.close().await;
    });
}

#[test]
fn racing_writers_converge_on_the_highest_version_everywhere() {
    let net = Net::up(12, 1 << 30);
    let rt = rt();
    rt.block_on(async {
        let owner = UserKey::generate();
        let a = net.connect().await;
        let b = net.connect().await;
        let address = a.create_pointer(&owner, "race", None).await.unwrap().address();
        let writer = |client: Client, owner: UserKey| async move {
            let mut ok = 0;
            for _ in 0..10 {
                // A writer that lost a race at some vaults is told so; it goes on.
                if client.set_pointer(&owner, address, Address::random()).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        };
        let (ra, rb) = tokio::join!(tokio::spawn(writer(a.clone(), owner.clone())), tokio::spawn(writer(b.clone(), owner.clone())));
        assert!(ra.unwrap() + rb.unwrap() > 0);
        // Whatever interleaving happened, every member ends on the same record: the highest.
        let group = a.closest_vaults(address, 8).await.unwrap();
        let start = Instant::now();
        let winner = loop {
            let held = versions(&a, address, &group).await;
            let top = held.iter().flatten().max_by(|x, y| match (x.supersedes(y), y.supersedes(x)) {
                (true, _) => std::cmp::Ordering::Greater,
                (_, true) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Equal,
            });
            if let Some(top) = top {
                if held.iter().all(|h| h.as_ref() == Some(top)) {
                    break top.clone();
                }
            }
            assert!(start.elapsed() < Duration::from_secs(30), "never converged: {:?}", held.iter().map(|h| h.as_ref().map(|p| p.version)).collect::<Vec<_>>());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(winner.version >= 2);
        assert_eq!(b.get_pointer(address).await.unwrap(), Some(winner));
        a.close().await;
        b.close().await;
    });
}

#[test]
fn forged_shards_leave_a_file_and_the_vaults_records_untouched() {
    let net = Net::up(12, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let client = net.connect().await;
        let content: Vec<u8> = (0..3 << 20).map(|_| rand::random::<u8>()).collect();
        let src = work.path().join("file");
        std::fs::write(&src, &content).unwrap();
        let key = UserKey::generate();
        let address = client.put_path(&src, Visibility::Public, &key, &ProgressBar::hidden()).await.unwrap();
        let (_, chunks) = self_encryption::encrypt(bytes::Bytes::from(content.clone())).unwrap();
        let mut targets: Vec<(Address, Vec<kura_node::Shard>)> =
            chunks.iter().map(|c| { let s = Coding::default().encode(&c.content).unwrap(); (s[0].header.address(), s) }).collect();
        targets.push((address, Vec::new()));

        // What every vault holds of these chunks, before.
        let vaults = common::running_ids(&net);
        let snapshot = |client: Client, vaults: Vec<PeerId>, chunks: Vec<Address>| async move {
            let mut held = BTreeMap::new();
            for &v in &vaults {
                for &c in &chunks {
                    if let Ok(Response::Shards(s)) = client.node().request(v, Request::GetShards { chunk: c }).await {
                        held.insert((v, c), s);
                    }
                }
            }
            held
        };
        let addresses: Vec<Address> = targets.iter().map(|t| t.0).collect();
        let before = snapshot(client.clone(), vaults.clone(), addresses.clone()).await;

        // The attacker sends every vault, for every key of the file, shards that claim it:
        // real headers with other data, and self-consistent codings of other data that reuse the
        // real content hash.
        let mut refused = 0;
        for (chunk, real) in &targets {
            for real in real {
                let mut tampered = real.clone();
                tampered.data.iter_mut().for_each(|b| *b = b.wrapping_add(1));
                let mut other = Coding::default().encode(&vec![7u8; real.header.chunk_len as usize]).unwrap().remove(usize::from(real.header.index));
                other.header.content = real.header.content;
                for &v in &vaults {
                    for forged in [tampered.clone(), other.clone()] {
                        match client.node().request(v, Request::PutShard(forged.clone())).await {
                            Err(NodeError::Remote { error: RemoteError::Invalid(_) | RemoteError::NotResponsible(_), .. }) => refused += 1,
                            Ok(Response::Stored) => assert_ne!(forged.key().address, *chunk, "a forged shard was stored under the real address"),
                            other => panic!("forged shard: {other:?}"),
                        }
                    }
                }
            }
        }
        assert!(refused > 0);
        let after = snapshot(client.clone(), vaults, addresses).await;
        assert_eq!(before, after, "the vaults' records of the file are unchanged");
        let out = work.path().join("back");
        client.get_path(address, &out, &UserKey::generate(), &ProgressBar::hidden()).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), content, "the file is byte-identical");
        client.close().await;
    });
}

#[test]
fn a_vault_holding_pointers_and_shards_restarts_whole_after_sigkill() {
    let net = Net::up_with(10, 1 << 30, &["--no-repair"]);
    let work = tempfile::tempdir().unwrap();
    let rt = rt();
    let victim = 2;
    let peer: PeerId = net.net.state().unwrap().vaults[victim].peer_id.parse().unwrap();
    let before = rt.block_on(async {
        let client = net.connect().await;
        let key = UserKey::generate();
        let src = work.path().join("file");
        std::fs::write(&src, (0..2 << 20).map(|_| rand::random::<u8>()).collect::<Vec<u8>>()).unwrap();
        client.put_path(&src, Visibility::Private, &key, &ProgressBar::hidden()).await.unwrap();
        for i in 0..30 {
            client.create_pointer(&key, &format!("p{i}"), Some(Address::random())).await.unwrap();
        }
        let status = client.vault_status(peer).await.unwrap();
        client.close().await;
        status.records_by_kind
    });
    let kinds: Vec<&str> = before.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["pointer", "shard"], "the victim holds both kinds: {before:?}");
    net.net.kill(&[victim], true).unwrap();
    net.net.restart(victim).unwrap();
    rt.block_on(async {
        net.assert_healthy().await;
        let client = net.connect().await;
        let status = client.vault_status(peer).await.unwrap();
        assert_eq!(status.records_by_kind, before, "every record is still there");
        assert_eq!(status.corrupt_records, 0);
        client.close().await;
    });
}

#[test]
fn the_cli_publishes_a_tree_under_a_pointer_that_never_changes() {
    let net = Net::up(8, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let kura = |args: &[&str]| {
        let out = std::process::Command::new(common::kura_bin())
            .args(args)
            .env("KURA_PEERS", net.peers_file())
            .env("KURA_HOME", work.path().join("home"))
            .output()
            .unwrap();
        assert!(out.status.success(), "kura {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect::<Vec<_>>()
    };
    let tree = work.path().join("site");
    std::fs::create_dir_all(tree.join("docs")).unwrap();
    std::fs::write(tree.join("docs/index.html"), "version one").unwrap();
    let out = kura(&["put", "--public", tree.to_str().unwrap(), "--pointer", "site"]);
    let (first, pointer) = (out[out.len() - 2].clone(), out[out.len() - 1].clone());
    assert_eq!(kura(&["pointer", "get", &pointer]), [format!("{first} 1")]);
    let back = work.path().join("back1");
    kura(&["get", &pointer, back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(back.join("docs/index.html")).unwrap(), "version one");

    std::fs::write(tree.join("docs/index.html"), "version two").unwrap();
    let out = kura(&["put", "--public", tree.to_str().unwrap(), "--pointer", "site"]);
    assert_eq!(out.last().unwrap(), &pointer, "the same user and name give the same address");
    let back = work.path().join("back2");
    kura(&["get", &pointer, back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(back.join("docs/index.html")).unwrap(), "version two");

    let made = kura(&["pointer", "create", "other"]);
    let other = made.last().unwrap().clone();
    assert_eq!(kura(&["pointer", "set", &other, &first]), ["2"]);
    assert_eq!(kura(&["pointer", "get", &other]), [format!("{first} 2")]);
    // A pointer to a pointer is followed too.
    assert_eq!(kura(&["pointer", "set", &other, &pointer]), ["3"]);
    let back = work.path().join("back3");
    kura(&["get", &other, back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(back.join("docs/index.html")).unwrap(), "version two");
}
