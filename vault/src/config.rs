//! Vault configuration: one struct holding every setting and tuning value, with documented
//! defaults and two named presets. `kura-vault run` fills it from a preset, then a TOML file
//! (`--config`), then its flags; `kura-vault config` prints the result.

use std::path::PathBuf;
use std::time::Duration;

use kura_node::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::error::VaultError;

/// How a vault is set up. In TOML every field is optional: what a file leaves out keeps the
/// preset's value (`preset = "production"` or `"local"`, default production).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Directory holding the identity key, the records and the status file.
    pub root: PathBuf,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// A file of more bootstrap peers, one multiaddr a line (a kura-testnet peers file).
    pub peers_file: Option<PathBuf>,
    /// Most bytes of records the vault stores before refusing new ones (TOML: a number of
    /// bytes or a size such as "50GiB").
    #[serde(with = "size")]
    pub capacity: u64,
    /// Tokio worker threads.
    pub threads: usize,
    /// Inbound requests handled at once, a quarter of them kept for clients; more wait in the
    /// node's bounded queue.
    pub max_concurrent_requests: usize,
    /// Where records are kept.
    pub storage: Storage,
    /// Whether repair and handover run (off only for tests of what erasure coding alone
    /// survives).
    pub repair: bool,
    /// Seconds between the repair worker's full sweeps (a sweep reads every record held).
    pub repair_sweep_secs: u64,
    /// Most bytes per second of shard traffic repair and handover may cause (fetches and
    /// stores together), so that they leave the disk and uplink to clients.
    #[serde(with = "size")]
    pub repair_rate: u64,
    /// Milliseconds the repair worker waits for more routing changes before acting on one.
    pub repair_debounce_ms: u64,
    /// Chunks examined and repaired at once.
    pub repair_concurrency: usize,
    /// Rebuilds run at once (each holds a chunk's shards in memory).
    pub rebuild_concurrency: usize,
    /// Seconds between notes of new chunks' groups (and checks for due handovers).
    pub repair_baseline_secs: u64,
    /// Milliseconds before a chunk whose repair failed is examined again.
    pub repair_retry_ms: u64,
    /// Seconds each holder in line behind a chunk's coordinator waits, per place in line,
    /// before it repairs a loss the coordinator has not (views differ for a while).
    pub repair_stand_in_secs: u64,
    /// Vaults past a close group asked during an examination, standing in for members that do
    /// not answer.
    pub spare_candidates: usize,
    /// How far past the close group a vault still accepts records (a vault that refuses one,
    /// full, pushes it to the next-closest vault, so holders may sit a little beyond `n`).
    pub placement_window: usize,
    /// Whether storage audits run.
    pub audit: bool,
    /// Seconds between storage audit rounds.
    pub audit_interval_secs: u64,
    /// Chunks audited per round.
    pub audit_sample: usize,
    /// Seconds another vault has to answer a repair or audit request.
    pub maintenance_timeout_secs: u64,
    /// Seconds a vault remembers handing a shard on (longer than an auditor takes between
    /// asking what a vault holds and challenging it).
    pub release_memory_secs: u64,
    /// Seconds a vault that refused a shard for want of room is not offered another.
    pub full_memory_secs: u64,
    /// Seconds a vault keeps its copy of a shard after another vault of the close group holds
    /// it (handed over, or found there): the new holder must hold it, and then prove it, for
    /// this long before the copy goes, so ids made to sit close to a chunk cannot drain it.
    pub handover_probation_secs: u64,
    /// Seconds in an age epoch: once an epoch a vault asks its group's elders to sign its
    /// ticket, whose hash may relocate it (one step older) to a place no one chose; 0 turns
    /// relocation off (a vault then never ages past what it was granted). The same on every
    /// vault of a network.
    pub age_epoch_secs: u64,
    /// Seconds another vault may go without answering audits before its silence counts as a
    /// failed audit (a vault under load may miss some answers; only lasting silence is held
    /// against it).
    pub audit_silence_secs: u64,
    /// Requests per second each client may make of this vault (more are answered "rate
    /// limited").
    pub client_requests_per_sec: u32,
    /// Of those, records per second each client may ask this vault to store.
    pub client_writes_per_sec: u32,
    /// Request bytes per second each client may send this vault.
    #[serde(with = "size")]
    pub client_bytes_per_sec: u64,
    /// Bits of work this vault's id must carry, and that it asks of every vault id it puts in
    /// its routing table (S/Kademlia's static puzzle; 16 bits is about a second of one core
    /// per id). Every vault of a network must use the same value.
    pub id_difficulty: u8,
    /// Ids sharing one IP address that a routing table bucket may hold; 0 for no limit
    /// (loopback addresses are never limited).
    pub ids_per_ip_per_bucket: usize,
    /// Inbound connections from one IP address; 0 for no limit (a loopback testnet, where
    /// every vault and client shares 127.0.0.1).
    pub connections_per_ip: usize,
    /// Proof-of-work trials per byte this vault asks of every inbox message (Bitmessage's
    /// `nonceTrialsPerByte`; see `kura_types::message::Difficulty`).
    pub message_trials_per_byte: u64,
    /// Bytes added to every message's length in the work formula.
    pub message_extra_bytes: u64,
    /// Seconds between purges of expired messages.
    pub message_purge_secs: u64,
    /// The genesis account's BLS public key (hex): the account that holds the whole supply
    /// when the network starts. The same on every vault of a network; none mints nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_key: Option<String>,
    /// Units the genesis account starts with.
    #[serde(default)]
    pub genesis_supply: u64,
    /// Store clients' shards only when paid for (a quote, then a certified payment within the
    /// grace period). Off on a local testnet unless asked for.
    #[serde(default)]
    pub paid_storage: bool,
    /// Units per MiB this vault asks when empty (ten times as much when full).
    #[serde(default = "default_storage_price")]
    pub storage_price: u64,
    /// Seconds a client has to pay for shards it stored before they are dropped.
    #[serde(default = "default_payment_grace")]
    pub payment_grace_secs: u64,
}

fn default_storage_price() -> u64 {
    // 0.001 KURA per MiB when empty.
    kura_node::ledger::UNITS_PER_TOKEN / 1000
}

fn default_payment_grace() -> u64 {
    600
}

/// Which record store backs a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Files under `root/store`, indexed in `root/index` (crash-safe).
    Disk,
    /// Memory only (tests).
    Memory,
}

/// The named presets.
pub const PRESETS: [&str; 2] = ["production", "local"];

impl VaultConfig {
    /// A vault of a local testnet run in-process: loopback, an OS-assigned port, 1 GiB, short
    /// repair and audit periods.
    pub fn local(root: PathBuf) -> Self {
        VaultConfig {
            root,
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("static multiaddr")],
            bootstrap: Vec::new(),
            peers_file: None,
            capacity: 1 << 30,
            threads: 2,
            max_concurrent_requests: 64,
            storage: Storage::Disk,
            repair: true,
            repair_sweep_secs: 60,
            repair_rate: 64 << 20,
            repair_debounce_ms: 500,
            repair_concurrency: 16,
            rebuild_concurrency: 4,
            repair_baseline_secs: 5,
            repair_retry_ms: 2000,
            repair_stand_in_secs: 10,
            spare_candidates: 4,
            placement_window: crate::PLACEMENT_WINDOW,
            audit: true,
            audit_interval_secs: 30,
            audit_sample: 32,
            maintenance_timeout_secs: 10,
            release_memory_secs: 600,
            full_memory_secs: 60,
            audit_silence_secs: 60,
            handover_probation_secs: 30,
            age_epoch_secs: 0,
            client_requests_per_sec: kura_node::budget::Budget::CLIENT.requests_per_sec as u32,
            client_writes_per_sec: kura_node::budget::Budget::CLIENT.writes_per_sec as u32,
            client_bytes_per_sec: kura_node::budget::Budget::CLIENT.bytes_per_sec as u64,
            connections_per_ip: 0,
            id_difficulty: 0,
            ids_per_ip_per_bucket: 0,
            message_trials_per_byte: kura_node::message::Difficulty::DEFAULT.trials_per_byte,
            message_extra_bytes: kura_node::message::Difficulty::DEFAULT.extra_bytes,
            message_purge_secs: 5,
            genesis_key: None,
            genesis_supply: 0,
            paid_storage: false,
            storage_price: default_storage_price(),
            payment_grace_secs: 60,
        }
    }

    /// A vault on a real network (the `kura-vault run` default): every interface, port 12000,
    /// 50 GiB, a full repair sweep every 10 minutes, audits every 5.
    pub fn production(root: PathBuf) -> Self {
        VaultConfig {
            listen: vec!["/ip4/0.0.0.0/udp/12000/quic-v1".parse().expect("static multiaddr")],
            capacity: 50 << 30,
            repair_sweep_secs: 600,
            repair_rate: 32 << 20,
            audit_interval_secs: 300,
            audit_silence_secs: 900,
            handover_probation_secs: 600,
            age_epoch_secs: 3600,
            connections_per_ip: 64,
            id_difficulty: 16,
            ids_per_ip_per_bucket: 2,
            message_purge_secs: 60,
            paid_storage: true,
            payment_grace_secs: default_payment_grace(),
            ..VaultConfig::local(root)
        }
    }

    /// The genesis key's bytes, if the network has one: it holds the supply and grants the
    /// first elders their age.
    pub fn genesis_public_key(&self) -> Result<Option<Vec<u8>>, VaultError> {
        let Some(key) = &self.genesis_key else { return Ok(None) };
        hex::decode(key.trim())
            .ok()
            .filter(|b| b.len() == kura_node::ledger::PUBLIC_KEY_LEN)
            .map(Some)
            .ok_or_else(|| VaultError::Config(format!("genesis_key {key:?} is not a 48-byte BLS public key in hex")))
    }

    /// The genesis account's address and supply, if the network has one.
    pub fn genesis(&self) -> Result<Option<(kura_node::Address, u64)>, VaultError> {
        Ok(self.genesis_public_key()?.map(|bytes| (kura_node::ledger::account_address(&bytes), self.genesis_supply)))
    }

    /// The work this vault asks of inbox messages.
    pub fn message_difficulty(&self) -> kura_node::message::Difficulty {
        kura_node::message::Difficulty { trials_per_byte: self.message_trials_per_byte, extra_bytes: self.message_extra_bytes }
    }

    /// The preset called `name`.
    pub fn preset(name: &str, root: PathBuf) -> Result<Self, VaultError> {
        match name {
            "production" => Ok(Self::production(root)),
            "local" => Ok(Self::local(root)),
            other => Err(VaultError::Config(format!("unknown preset {other:?} (known: {PRESETS:?})"))),
        }
    }

    /// The preset a TOML text names (default production), overlaid with the text's settings.
    pub fn from_toml(text: &str, root: PathBuf) -> Result<Self, VaultError> {
        let mut table: toml::Table = text.parse().map_err(|e| VaultError::Config(format!("config: {e}")))?;
        let preset = match table.remove("preset") {
            Some(toml::Value::String(name)) => name,
            Some(other) => return Err(VaultError::Config(format!("config: preset must be a name, not {other}"))),
            None => "production".to_string(),
        };
        let base = Self::preset(&preset, root)?;
        let mut merged = toml::Table::try_from(&base).map_err(|e| VaultError::Config(e.to_string()))?;
        for (k, v) in table {
            merged.insert(k, v);
        }
        merged.try_into().map_err(|e: toml::de::Error| VaultError::Config(format!("config: {e}")))
    }

    /// The configuration as TOML, every field shown.
    pub fn to_toml(&self) -> Result<String, VaultError> {
        toml::to_string(self).map_err(|e| VaultError::Config(e.to_string()))
    }

    /// The repair worker's sweep period, or `None` when repair is off.
    pub fn repair_sweep(&self) -> Option<Duration> {
        self.repair.then(|| Duration::from_secs(self.repair_sweep_secs.max(1)))
    }

    /// The audit period, or `None` when audits are off.
    pub fn audit_interval(&self) -> Option<Duration> {
        self.audit.then(|| Duration::from_secs(self.audit_interval_secs.max(1)))
    }

    /// Every setting with a single value, as `(name, value)` (what status shows): the values
    /// this vault runs with, whichever of preset, file and flags set them.
    pub fn effective_settings(&self) -> Vec<(String, String)> {
        let Ok(toml::Value::Table(table)) = toml::Value::try_from(self) else { return Vec::new() };
        table
            .into_iter()
            .filter(|(k, v)| !matches!(v, toml::Value::Array(_) | toml::Value::Table(_)) && k != "root" && k != "genesis_key")
            .map(|(k, v)| (k, v.to_string().trim_matches('"').to_string()))
            .collect()
    }

    /// How long another vault has to answer a maintenance request.
    pub fn maintenance_timeout(&self) -> Duration {
        Duration::from_secs(self.maintenance_timeout_secs.max(1))
    }
}

/// Sizes in TOML: a number of bytes, or a string such as "50GiB"; written as bytes.
mod size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Bytes(u64),
            Text(String),
        }
        match Size::deserialize(d)? {
            Size::Bytes(b) => Ok(b),
            Size::Text(t) => t.parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_settings_name_the_values_run_with() {
        let mut c = VaultConfig::production("/v".into());
        c.payment_grace_secs = 60;
        let settings: std::collections::HashMap<String, String> = c.effective_settings().into_iter().collect();
        assert_eq!(settings["payment_grace_secs"], "60");
        assert_eq!(settings["paid_storage"], "true");
        assert_eq!(settings["handover_probation_secs"], "600");
        assert!(!settings.contains_key("root") && !settings.contains_key("listen"));
    }

    #[test]
    fn toml_overlays_a_preset_and_round_trips() {
        let text = "preset = \"local\"\ncapacity = \"2GiB\"\naudit = false\nrepair_sweep_secs = 7\nlisten = [\"/ip4/127.0.0.1/udp/4000/quic-v1\"]\n";
        let c = VaultConfig::from_toml(text, "/v".into()).unwrap();
        assert_eq!(c.capacity, 2 << 30);
        assert_eq!(c.audit_interval(), None);
        assert_eq!(c.repair_sweep(), Some(Duration::from_secs(7)));
        assert_eq!(c.listen[0].to_string(), "/ip4/127.0.0.1/udp/4000/quic-v1");
        assert_eq!(c.repair_rate, VaultConfig::local("/v".into()).repair_rate, "the rest is the preset's");
        let again = VaultConfig::from_toml(&c.to_toml().unwrap(), "/elsewhere".into()).unwrap();
        assert_eq!(again, c, "printed config reads back the same (root included)");
        assert_eq!(VaultConfig::from_toml("", "/v".into()).unwrap(), VaultConfig::production("/v".into()));
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        for bad in ["capacity = \"lots\"", "no_such_setting = 1", "preset = \"huge\"", "threads = \"two\"", "= ="] {
            let e = VaultConfig::from_toml(bad, "/v".into()).unwrap_err().to_string();
            assert!(e.contains("config") || e.contains("preset"), "{bad}: {e}");
        }
    }
}
