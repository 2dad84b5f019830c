//! A passing failure never exiles an honest vault: `kura-testnet up --nodes 100` on this
//! 2-core machine turns healthy (it never did while one failed dial made the health check's
//! client drop a vault's address for good). Its own test binary, so it does not share the
//! machine with the other process tests. Ignored in the suite: 100 vaults of a debug build did
//! not turn healthy within 240 s on CI's two cores (release vaults do in 32 s, see
//! `benches/RESULTS.md`); `scripts/soak.sh` runs it against a release build.

use std::process::Command;
use std::time::Instant;

mod common;
use common::{vault_bin, Guard};

#[test]
#[ignore = "100 debug-build vaults overload two cores; scripts/soak.sh runs it on a release build"]
fn a_hundred_vaults_turn_healthy_through_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let _guard = Guard { dir: dir.clone() };
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kura-testnet"))
        .arg("--dir")
        .arg(&dir)
        .args(["up", "--nodes", "100", "--timeout", "240"])
        .env("KURA_VAULT_BIN", vault_bin())
        .env("XDG_DATA_HOME", dir.join("xdg"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "up failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("100 vaults healthy"), "{stdout}");
    eprintln!("100 vaults healthy {:.1} s after `up` started", started.elapsed().as_secs_f64());
    let down = Command::new(env!("CARGO_BIN_EXE_kura-testnet")).arg("--dir").arg(&dir).arg("down").output().unwrap();
    assert!(down.status.success());
}
