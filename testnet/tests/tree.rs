//! A malicious tree cannot reach outside OUT: crafted root records stored on a real 8-vault
//! testnet, fetched with the real `kura get`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use indicatif::ProgressBar;
use kura_client::root::{Content, DirEntry, EntryKind, RootRecord, Visibility};
use kura_client::{Client, UserKey};
use kura_node::erasure::Coding;
use kura_node::Address;

mod common;
use common::{kura_bin, rt, Net};

/// Stores `bytes` as a public file and returns the content record that leads to them.
async fn store_content(client: &Client, dir: &Path, bytes: &[u8]) -> Content {
    let key = UserKey::generate();
    let src = dir.join(format!("content-{:016x}", rand::random::<u64>()));
    std::fs::write(&src, bytes).unwrap();
    let address = client.put_path(&src, Visibility::Public, &key, &ProgressBar::hidden()).await.unwrap();
    let (record, _) = RootRecord::open(&client.get_chunk(address).await.unwrap(), &key).unwrap();
    record.content().unwrap()
}

/// Stores a directory record with `entries` as its manifest.
async fn store_tree(client: &Client, dir: &Path, entries: &[DirEntry]) -> Address {
    let manifest = store_content(client, dir, &postcard::to_stdvec(entries).unwrap()).await;
    store_record(client, RootRecord::Directory { manifest }.seal(Visibility::Public, &UserKey::generate()).unwrap()).await
}

async fn store_record(client: &Client, sealed: Vec<u8>) -> Address {
    client.put_chunk(Bytes::from(sealed), Coding::default()).await.unwrap()
}

fn entry(path: &str, mode: u32, kind: EntryKind) -> DirEntry {
    DirEntry { path: path.into(), mode, kind }
}

fn file(path: &str, content: &Content) -> DirEntry {
    entry(path, 0o644, EntryKind::File { size: content.size(), content: content.clone() })
}

fn link(path: &str, target: &str) -> DirEntry {
    entry(path, 0o777, EntryKind::Symlink(target.into()))
}

fn kura_get(net: &Net, home: &Path, address: Address, out: &Path) -> Output {
    Command::new(kura_bin())
        .args(["get", &address.to_string()])
        .arg(out)
        .env("KURA_PEERS", net.peers_file())
        .env("KURA_HOME", home)
        .output()
        .unwrap()
}

/// Every path under `dir`, not following links.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn crafted_trees_never_write_outside_out() {
    let net = Net::up(8, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let outside_str = outside.to_str().unwrap().to_string();
    let rt = rt();
    let client = rt.block_on(net.connect());
    let payload = rt.block_on(store_content(&client, work.path(), b"pwned by a crafted tree"));

    let deep_path = vec!["d"; 10_000].join("/");
    let refused: Vec<(&str, Vec<DirEntry>)> = vec![
        ("link to a folder outside, then a file through it", vec![link("esc", &outside_str), file("esc/pwned", &payload)]),
        ("relative link climbing out, then a file through it", vec![link("esc", "../outside"), file("esc/pwned", &payload)]),
        ("link named like the temporary file, pointing out", vec![link(".f.kura-partial", "../outside/f"), file("f", &payload)]),
        ("climbing name", vec![file("../outside/pwned", &payload)]),
        ("climbing inner name", vec![file("a/../../outside/pwned", &payload)]),
        ("absolute name", vec![file(&format!("{outside_str}/pwned"), &payload)]),
        ("empty name", vec![file("", &payload)]),
        ("deeply nested path", vec![file(&deep_path, &payload)]),
        ("a name twice", vec![file("f", &payload), link("f", "g")]),
    ];
    for (what, entries) in refused {
        let address = rt.block_on(store_tree(&client, work.path(), &entries));
        let out = work.path().join("out");
        let got = kura_get(&net, &home, address, &out);
        let stderr = String::from_utf8_lossy(&got.stderr);
        assert!(!got.status.success() && got.status.code().is_some(), "{what}: must fail cleanly: {stderr}");
        assert!(stderr.contains("refusing directory manifest"), "{what}: {stderr}");
        assert!(listing(&outside).is_empty(), "{what}: wrote outside OUT: {:?}", listing(&outside));
        assert!(listing(&out).is_empty(), "{what}: refused before writing anything: {:?}", listing(&out));
        let _ = std::fs::remove_dir_all(&out);
    }

    // A directory record nested a million deep: a clean error, not a stack overflow.
    let mut sealed = b"KURA".to_vec();
    sealed.extend_from_slice(&[kura_client::root::ROOT_VERSION, 0]);
    sealed.extend(std::iter::repeat_n(2u8, 1_000_000));
    let address = rt.block_on(store_record(&client, sealed));
    let got = kura_get(&net, &home, address, &work.path().join("nested"));
    assert_eq!(got.status.code(), Some(1), "{}", String::from_utf8_lossy(&got.stderr));
    assert!(String::from_utf8_lossy(&got.stderr).contains("malformed"));

    // A data map that decrypts to more than its declared size: stopped at the size, and the
    // partial file removed.
    let big = rt.block_on(store_content(&client, work.path(), &vec![7u8; 1 << 20]));
    let Content::File { data_map, chunks, .. } = big else { panic!("1 MiB is self-encrypted") };
    let liar = Content::File { data_map, size: 1000, chunks };
    let address = rt.block_on(store_tree(&client, work.path(), &[entry("big", 0o644, EntryKind::File { size: 1000, content: liar })]));
    let out = work.path().join("liar");
    let got = kura_get(&net, &home, address, &out);
    let stderr = String::from_utf8_lossy(&got.stderr);
    assert!(!got.status.success() && stderr.contains("more than the 1000 bytes declared"), "{stderr}");
    assert!(listing(&out).is_empty(), "partial file removed: {:?}", listing(&out));

    // What is safe is written safely: a setuid file comes back 0o755; a link named like a
    // temporary file but pointing inside the tree is kept; a link climbing to the tree's top is
    // fine; a read-only folder is written, then made read-only.
    let suid = entry("bin/tool", 0o4755, EntryKind::File { size: payload.size(), content: payload.clone() });
    let entries = vec![
        entry("bin", 0o6755, EntryKind::Dir),
        suid,
        entry("ro", 0o555, EntryKind::Dir),
        file("ro/inside", &payload),
        file("f", &payload),
        link(".f.kura-partial", "f"),
        link("bin/up", "../f"),
    ];
    let address = rt.block_on(store_tree(&client, work.path(), &entries));
    let out = work.path().join("good");
    let got = kura_get(&net, &home, address, &out);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let mode = |p: &str| std::fs::symlink_metadata(out.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/tool"), 0o755, "setuid bit dropped");
    assert_eq!(mode("bin"), 0o755, "setgid and sticky bits dropped");
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(std::fs::read(out.join("bin/up")).unwrap(), b"pwned by a crafted tree");
    assert_eq!(std::fs::read_link(out.join(".f.kura-partial")).unwrap(), Path::new("f"));
    assert_eq!(std::fs::read(out.join("ro/inside")).unwrap(), b"pwned by a crafted tree");
    assert!(listing(&outside).is_empty());
    std::fs::set_permissions(out.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();

    // Fetching the same tree again into the same folder never writes over what is there.
    let again = kura_get(&net, &home, address, &out);
    assert!(!again.status.success(), "an existing name is not written over");
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"pwned by a crafted tree");
    rt.block_on(client.close());
}
