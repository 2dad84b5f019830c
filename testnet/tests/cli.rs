//! Process-level: `kura-testnet up/status/kill/restart/add/down` on 12 real kura-vault
//! processes. A drop guard kills every vault by pid even when an assertion fails.

use std::path::Path;
use std::process::{Command, Output};

use kura_testnet::state::Layout;

mod common;
use common::{kura_bin, vault_bin, Guard};

fn testnet(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kura-testnet"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env("KURA_VAULT_BIN", vault_bin())
        .env("XDG_DATA_HOME", dir.join("xdg"))
        .env_remove("CARGO")
        .output()
        .expect("run kura-testnet");
    eprintln!(
        "$ kura-testnet {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = testnet(dir, args);
    assert!(out.status.success(), "kura-testnet {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pids(dir: &Path) -> Vec<u32> {
    Layout::new(dir.to_path_buf()).load().unwrap().vaults.iter().map(|v| v.pid).collect()
}

fn rows_with(status: &str, word: &str) -> usize {
    status.lines().filter(|l| l.split_whitespace().nth(4) == Some(word)).count()
}

#[test]
fn testnet_lifecycle_on_twelve_vaults() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let _guard = Guard { dir: dir.clone() };

    let up = ok(&dir, &["up", "--nodes", "12", "--timeout", "60"]);
    assert!(up.contains("12 vaults healthy"), "{up}");
    let peers = std::fs::read_to_string(dir.join("peers")).unwrap();
    assert_eq!(peers.lines().count(), 12);
    assert!(peers.lines().all(|l| l.starts_with("/ip4/127.0.0.1/udp/") && l.contains("/quic-v1/p2p/")));
    // The latest-testnet pointer lets clients find it without --peers.
    let pointer = std::fs::read_to_string(dir.join("xdg/kura/latest-testnet")).unwrap();
    assert_eq!(Path::new(pointer.trim()), dir.canonicalize().unwrap());

    let status = ok(&dir, &["status", "--probes", "20"]);
    assert_eq!(rows_with(&status, "up"), 12, "{status}");
    assert!(status.contains("healthy: 12 vaults up"));
    // Each vault's row is followed by a line of its records by kind and its workers.
    assert_eq!(status.matches("workers: repair idle").count() + status.matches("workers: repair busy").count(), 12, "{status}");
    assert!(status.contains("audit idle (rounds=0 passed=0 failed=0)"), "{status}");
    // And a line of the settings it runs with: the testnet's timings, not production's.
    assert_eq!(status.matches("payment_grace_secs=60 handover_probation_secs=20 age_epoch_secs=600").count(), 12, "{status}");
    for line in status.lines().skip(1).filter(|l| !l.trim_start().starts_with("records:") && !l.trim_start().starts_with("settings:")).take(12) {
        let table: usize = line.split_whitespace().nth(5).unwrap().parse().unwrap();
        assert_eq!(table, 11, "every vault knows the 11 others: {line}");
    }

    let before = pids(&dir);
    ok(&dir, &["kill", "--count", "2"]);
    ok(&dir, &["kill", "--node", "5", "--hard"]);
    let after = pids(&dir);
    let dead: Vec<usize> = (0..12).filter(|&i| !kura_testnet::process::is_alive(after[i])).collect();
    assert!(dead.len() == 3 || (dead.len() == 2 && dead.contains(&5)), "dead: {dead:?}");
    assert!(dead.contains(&5));
    assert_eq!(std::fs::read_to_string(dir.join("peers")).unwrap().lines().count(), 12 - dead.len());

    // Vault 5 comes back with its identity and data directory.
    let key_before = std::fs::read(dir.join("vault-5/identity.key")).unwrap();
    ok(&dir, &["restart", "--node", "5", "--timeout", "60"]);
    assert_eq!(std::fs::read(dir.join("vault-5/identity.key")).unwrap(), key_before);
    let restarted = pids(&dir);
    assert_ne!(restarted[5], before[5]);
    assert!(kura_testnet::process::is_alive(restarted[5]));

    let add = ok(&dir, &["add", "--nodes", "2", "--timeout", "60"]);
    assert!(add.contains("added vaults [12, 13]"), "{add}");
    let status = ok(&dir, &["status", "--probes", "20"]);
    assert_eq!(rows_with(&status, "up"), 14 - (dead.len() - 1), "{status}");
    assert_eq!(rows_with(&status, "down"), dead.len() - 1);

    // The wallet: the faucet pays a new home, which pays another; the balances are exact.
    let kura = |home: &str, args: &[&str]| {
        let out = Command::new(kura_bin())
            .args(args)
            .env("KURA_HOME", tmp.path().join(home))
            .env("KURA_PEERS", dir.join("peers"))
            .env("XDG_DATA_HOME", dir.join("xdg"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "kura {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text.trim().to_string()
    };
    assert_eq!(kura("a", &["wallet", "faucet", "5"]), "5 KURA");
    let b = kura("b", &["wallet", "address"]);
    assert_eq!(b.len(), 64, "{b}");
    assert_eq!(kura("a", &["wallet", "send", &b, "1.25"]), "3.75 KURA");
    assert_eq!(kura("b", &["wallet", "balance"]), "1.25 KURA");
    let history = kura("a", &["wallet", "history"]);
    assert!(history.contains("out") && history.contains("1.25 KURA") && history.contains(" in "), "{history}");
    let refused = Command::new(kura_bin())
        .args(["wallet", "send", &b, "1000"])
        .env("KURA_HOME", tmp.path().join("a"))
        .env("KURA_PEERS", dir.join("peers"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("insufficient funds: balance 3750000000"), "{refused:?}");

    // status exits non-zero when the network is not healthy: here, with no vault at all.
    ok(&dir, &["down"]);
    assert!(pids(&dir).iter().all(|&p| !kura_testnet::process::is_alive(p)));
    let status = testnet(&dir, &["status", "--probes", "5"]);
    assert!(!status.status.success(), "status of a stopped testnet must fail");
    assert!(String::from_utf8_lossy(&status.stdout).contains("no vault is running"));
}

#[test]
fn bad_commands_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let _guard = Guard { dir: dir.clone() };
    let out = testnet(&dir, &["restart", "--node", "3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no vault 3"));
    let out = testnet(&dir, &["add", "--nodes", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kura-testnet up"));
}

/// Runs `client-api/examples/<name>` (built by `cargo test --workspace`) against the testnet
/// whose peers file is `peers`; returns what it printed.
fn example(name: &str, peers: &Path, args: &[&str]) -> String {
    let bin = kura_bin().with_file_name("examples").join(name);
    assert!(bin.is_file(), "{} missing: run the tests with --workspace", bin.display());
    let out = Command::new(&bin).args(args).env("KURA_PEERS", peers).env_remove("KURA_HOME").output().expect("run the example");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("$ {name}\n{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "example {name} failed");
    printed
}

/// The programs in `client-api/examples` do what they say on a real network: a file comes
/// back identical, a pointer moves, a message is delivered and acknowledged, a payment lands.
#[test]
fn the_client_examples_run_against_a_testnet() {
    let net = common::Net::up(10, 1 << 30);
    let peers = net.peers_file();
    let file = net.tmp.path().join("hello.txt");
    std::fs::write(&file, "a file a developer stores with the example\n".repeat(5000)).unwrap();
    let stored = example("store_file", &peers, &[file.to_str().unwrap()]);
    assert!(stored.contains("identical"), "{stored}");
    let pointer = example("pointer", &peers, &[]);
    assert!(pointer.contains("read back"), "{pointer}");
    let message = example("message", &peers, &[]);
    assert!(message.contains("hello Bob, from Alice"), "{message}");
    assert!(message.contains("1 of her messages delivered"), "{message}");
    let paid = example("pay", &peers, &[]);
    assert!(paid.contains("mine now: 3 KURA") && paid.contains("friend:   2 KURA"), "{paid}");
}
