//! Shared by the process-level tests: a testnet whose vaults are stopped by pid however the
//! test ends.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kura_testnet::state::Layout;
use kura_testnet::{HealthConfig, Testnet};

/// The `kura-vault` binary cargo built beside the test's `kura-testnet`.
pub fn vault_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_kura-testnet")).with_file_name("kura-vault");
    assert!(bin.is_file(), "{} missing: run the tests with --workspace", bin.display());
    bin
}

/// The `kura` CLI binary cargo built beside the test's `kura-testnet`.
pub fn kura_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_kura-testnet")).with_file_name("kura");
    assert!(bin.is_file(), "{} missing: run the tests with --workspace", bin.display());
    bin
}

/// Stops every vault the testnet in `dir` ever started, whatever happened to the test.
pub struct Guard {
    pub dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(state) = Layout::new(self.dir.clone()).load() {
            for v in state.vaults {
                kura_testnet::process::stop(v.pid, true, Duration::from_secs(5));
            }
        }
    }
}

/// A running testnet in a temporary directory.
pub struct Net {
    pub net: Testnet,
    pub guard: Guard,
    pub tmp: tempfile::TempDir,
}

impl Net {
    /// Starts `nodes` vaults of `capacity` bytes and waits until healthy.
    pub fn up(nodes: usize, capacity: u64) -> Net {
        Self::up_with(nodes, capacity, &[])
    }

    /// [`Net::up`] with extra `kura-vault run` flags.
    pub fn up_with(nodes: usize, capacity: u64, vault_args: &[&str]) -> Net {
        // SAFETY-free: every test in this process sets the same values.
        std::env::set_var(kura_testnet::process::VAULT_BIN_ENV, vault_bin());
        let tmp = tempfile::tempdir().unwrap();
        std::env::set_var("XDG_DATA_HOME", std::env::temp_dir().join("kura-test-xdg"));
        let dir = tmp.path().join("net");
        let net = Testnet::new(dir.clone());
        let guard = Guard { dir };
        net.up_with(nodes, capacity, vault_args.iter().map(|a| a.to_string()).collect()).unwrap();
        let net = Net { net, guard, tmp };
        tokio::runtime::Runtime::new().unwrap().block_on(net.assert_healthy());
        net
    }

    /// Waits (up to 60 s) until the network is healthy; fails the test if it never is.
    pub async fn assert_healthy(&self) {
        let report = self
            .net
            .wait_healthy(Duration::from_secs(60), HealthConfig { probes: 20, ..Default::default() })
            .await
            .unwrap();
        assert!(report.healthy(), "testnet not healthy: {:?}", report.problems());
    }

    /// A client joined through the running vaults.
    pub async fn connect(&self) -> kura_client::Client {
        kura_client::Client::connect(kura_client::peers::read_peers_file(&self.peers_file()).unwrap()).await.unwrap()
    }

    /// The peers file.
    pub fn peers_file(&self) -> PathBuf {
        self.net.layout().peers_file()
    }
}
