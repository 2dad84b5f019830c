//! Starting and stopping `kura-vault` processes.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kura_vault::VaultInfo;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::TestnetError;

/// Environment variable naming the `kura-vault` binary to launch.
pub const VAULT_BIN_ENV: &str = "KURA_VAULT_BIN";

/// Finds the `kura-vault` binary: `$KURA_VAULT_BIN`, else the one beside this executable.
///
/// When run through `cargo run` (cargo sets `$CARGO`), the sibling is first built with the same
/// profile, so `cargo run -p kura-testnet -- up` works on a fresh checkout and never launches a
/// stale vault.
pub fn vault_binary() -> Result<PathBuf, TestnetError> {
    if let Ok(bin) = std::env::var(VAULT_BIN_ENV) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(TestnetError::VaultBinary(format!("${VAULT_BIN_ENV} = {} is not a file", bin.display())))
        };
    }
    let exe = std::env::current_exe().map_err(|e| TestnetError::VaultBinary(e.to_string()))?;
    let dir = exe.parent().ok_or_else(|| TestnetError::VaultBinary("executable has no directory".into()))?;
    let sibling = dir.join("kura-vault");
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "kura-vault"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|e| TestnetError::VaultBinary(format!("running cargo: {e}")))?;
        if !status.success() {
            return Err(TestnetError::VaultBinary(format!("cargo build -p kura-vault failed: {status}")));
        }
    }
    if sibling.is_file() {
        Ok(sibling)
    } else {
        Err(TestnetError::VaultBinary(format!(
            "{} not found; build it with `cargo build --release -p kura-vault` or set ${VAULT_BIN_ENV}",
            sibling.display()
        )))
    }
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The binary.
    pub bin: PathBuf,
    /// Vault index (for messages).
    pub index: usize,
    /// The vault's root directory.
    pub root: PathBuf,
    /// UDP port, 0 for any.
    pub port: u16,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bootstrap peers file, if any.
    pub peers_file: Option<PathBuf>,
    /// Bootstrap peers given directly.
    pub peers: Vec<String>,
}

/// A vault that has started and published its address.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its status file.
    pub info: VaultInfo,
    /// Its process id.
    pub pid: u32,
}

/// Starts a vault in its own process group (so it outlives this command and a terminal's
/// Ctrl-C does not reach it), logging to `root/log`. Does not wait.
pub fn spawn(l: &Launch) -> Result<u32, TestnetError> {
    std::fs::create_dir_all(&l.root).map_err(|e| TestnetError::io(&l.root, e))?;
    // A status file left by a killed vault must not be mistaken for the new one's.
    VaultInfo::remove(&l.root);
    let log_path = l.root.join("log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| TestnetError::io(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| TestnetError::io(&log_path, e))?;
    let mut cmd = Command::new(&l.bin);
    cmd.arg("run")
        .arg("--root")
        .arg(&l.root)
        .arg("--listen")
        .arg(format!("/ip4/127.0.0.1/udp/{}/quic-v1", l.port))
        .arg("--max-capacity")
        .arg(l.capacity.to_string());
    if let Some(f) = &l.peers_file {
        cmd.arg("--peers-file").arg(f);
    }
    for p in &l.peers {
        cmd.arg("--peer").arg(p);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| TestnetError::VaultStart {
            index: l.index,
            reason: format!("cannot run {}: {e}", l.bin.display()),
            log: log_path.clone(),
        })?;
    Ok(child.id())
}

/// Waits until the vault started as `pid` under `root` publishes its status file.
pub fn wait_started(index: usize, root: &Path, pid: u32, timeout: Duration) -> Result<Started, TestnetError> {
    let start = Instant::now();
    loop {
        if let Ok(info) = VaultInfo::read(root) {
            if info.pid == pid {
                return Ok(Started { info, pid });
            }
        }
        if !exists(pid) {
            return Err(TestnetError::VaultStart {
                index,
                reason: "process exited".into(),
                log: root.join("log"),
            });
        }
        if start.elapsed() > timeout {
            return Err(TestnetError::VaultStart {
                index,
                reason: format!("no status file after {timeout:?}"),
                log: root.join("log"),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a live (not zombie) `kura-vault` process.
pub fn is_alive(pid: u32) -> bool {
    if !exists(pid) {
        return false;
    }
    // A reaped pid may be reused by an unrelated process. (Not checked in `exists`: right
    // after fork a child still shows its parent's command line.)
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains("kura-vault")
}

/// Whether process `pid` exists and is not a zombie.
fn exists(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    // Reap it if it is our own exited child; for anyone else's process this is a no-op.
    let _ = nix::sys::wait::waitpid(Pid::from_raw(raw), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    if kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    // An unreaped child (of another parent) lingers as a zombie.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Stops `pid`: SIGTERM (or SIGKILL when `hard`), then waits for it to go, escalating to
/// SIGKILL after `grace`. Returns whether the process was running.
pub fn stop(pid: u32, hard: bool, grace: Duration) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else { return false };
    let target = Pid::from_raw(raw);
    let _ = kill(target, if hard { Signal::SIGKILL } else { Signal::SIGTERM });
    let start = Instant::now();
    while is_alive(pid) {
        if start.elapsed() > grace {
            let _ = kill(target, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Resident set size of `pid` in bytes, from `/proc`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
