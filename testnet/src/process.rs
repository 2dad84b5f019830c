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

/// Bits of work each testnet vault id carries (a real network asks 16).
pub const TESTNET_ID_DIFFICULTY: u8 = 8;
/// Seconds a testnet vault keeps a handed-over shard (a real network waits 10 minutes).
pub const TESTNET_PROBATION_SECS: u64 = 20;

/// Seconds a client has to pay a testnet vault for the shards it stored (a real network
/// gives 10 minutes).
pub const TESTNET_PAYMENT_GRACE_SECS: u64 = 60;

/// Seconds in a testnet's age epoch: a vault added to a testnet is first relocated one to two
/// epochs after it joins (it must be seen for a whole epoch), and is an elder after about 31
/// epochs (some five hours). Long enough that no test sees a vault it added move unless it
/// asks for a shorter epoch (`--age-epoch`).
pub const TESTNET_AGE_EPOCH_SECS: u64 = 600;

/// The age `kura-testnet up` grants the vaults it starts with: elders that move about once in
/// 2¹⁶ epochs, so a testnet's founders stay where tests expect them.
pub const FOUNDER_AGE: u8 = 16;

/// Finds the `kura-vault` program to launch for the testnet in `dir`: `$KURA_VAULT_BIN`; else
/// a `kura-vault` built beside this executable, if it is at least as new; else this very
/// executable under the name `kura-vault` (a symlink in `dir/bin`), which runs the same vault
/// command line (`kura_vault::cli`). The last case is what makes
/// `cargo run -p kura-testnet -- up` work on a fresh checkout: `cargo run` builds only the
/// binary it runs, and holds the build lock while it runs, so the vault cannot be built then.
pub fn vault_binary(dir: &Path) -> Result<PathBuf, TestnetError> {
    if let Ok(bin) = std::env::var(VAULT_BIN_ENV) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(TestnetError::VaultBinary(format!("${VAULT_BIN_ENV} = {} is not a file", bin.display())))
        };
    }
    let exe = std::env::current_exe().map_err(|e| TestnetError::VaultBinary(e.to_string()))?;
    let sibling = exe.with_file_name(VAULT_PROGRAM);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(theirs), Some(ours)) = (modified(&sibling), modified(&exe)) {
        if theirs >= ours {
            return Ok(sibling);
        }
    }
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|e| TestnetError::io(&bin_dir, e))?;
    let link = bin_dir.join(VAULT_PROGRAM);
    let tmp = bin_dir.join(format!("{VAULT_PROGRAM}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&exe, &tmp).map_err(|e| TestnetError::io(&tmp, e))?;
    std::fs::rename(&tmp, &link).map_err(|e| TestnetError::io(&link, e))?;
    Ok(link)
}

/// The vault program's name; `kura-testnet` run under this name is a vault.
pub const VAULT_PROGRAM: &str = "kura-vault";

/// Runs the vault command line if this process was invoked as `kura-vault` (see
/// [`vault_binary`]). Every program that launches testnets through this crate calls it first.
pub fn run_as_vault_if_invoked_so() -> Option<std::process::ExitCode> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    (argv0.file_name()? == VAULT_PROGRAM).then(kura_vault::cli::main)
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
    /// Extra `kura-vault run` flags.
    pub extra: Vec<String>,
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
        .arg(l.capacity.to_string())
        // Many vaults share this machine's cores: one worker each avoids thrashing them.
        .args(["--threads", "1"])
        // Ids carry a little work, as on a real network, but cheap enough for 100 vaults.
        .args(["--id-difficulty", &TESTNET_ID_DIFFICULTY.to_string()])
        // Seconds, not a production vault's minutes: long enough to outlast an attack staged in
        // a test, short enough for churn tests to see copies go.
        .args(["--handover-probation", &TESTNET_PROBATION_SECS.to_string()])
        .args(["--age-epoch", &TESTNET_AGE_EPOCH_SECS.to_string()])
        .args(["--payment-grace", &TESTNET_PAYMENT_GRACE_SECS.to_string()]);
    if let Some(f) = &l.peers_file {
        cmd.arg("--peers-file").arg(f);
    }
    for p in &l.peers {
        cmd.arg("--peer").arg(p);
    }
    cmd.args(&l.extra);
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
