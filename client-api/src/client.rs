//! A connection to the Kura network in Kademlia client mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_node::erasure::Coding;

use kura_node::wire::{Request, Response, VaultStatus};
use kura_node::{Address, Keypair, Multiaddr, NodeConfig, NodeError, NodeHandle, PeerId};

use crate::error::ClientError;

/// How long [`Client::connect`] waits for a first vault to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How a client stores and fetches.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Reed-Solomon coding of chunks (default 4 data + 4 parity shards).
    pub coding: Coding,
    /// Bytes of chunk content being stored at once; bounds upload memory (default 32 MiB).
    pub max_bytes_in_flight: usize,
    /// Chunks `streaming_decrypt` asks for at once (default 4).
    pub download_batch: usize,
    /// Chunks fetched ahead of decryption (default 4).
    pub prefetch: usize,
    /// The wallet that pays for storage, where vaults ask to be paid (see [`crate::payments`]).
    pub wallet: Option<Arc<crate::Wallet>>,
    /// A local testnet's faucet, drawn from when the wallet is short (never on a real network).
    pub faucet: Option<Arc<crate::Wallet>>,
    /// The most a put may cost, in units; a put estimated above it stores nothing.
    pub max_cost: Option<u64>,
    /// The network's genesis key, against which vaults' ages are checked. When unset, the
    /// client takes it from its bootstrap vaults, all of which must agree (it trusts them to
    /// show it the network anyway).
    pub genesis: Option<Vec<u8>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            coding: Coding::default(),
            max_bytes_in_flight: 32 << 20,
            download_batch: 4,
            prefetch: 4,
            wallet: None,
            faucet: None,
            genesis: None,
            max_cost: None,
        }
    }
}

/// A client of the network: queries and uses vaults, serves nothing, is in no routing table.
#[derive(Debug, Clone)]
pub struct Client {
    node: NodeHandle,
    pub(crate) config: Arc<ClientConfig>,
    /// Close groups looked up lately (see [`Client::group`]).
    groups: Arc<std::sync::Mutex<HashMap<Address, (Instant, Vec<PeerId>)>>>,
    /// Vault key bindings and certificates verified already (each costs a pairing).
    pub(crate) verified: Arc<std::sync::Mutex<kura_node::ledger::BindingCache>>,
    /// The thread that checks certificates, many at a time when many payments run at once;
    /// started on first use (`None` if it could not start: checks then run one by one).
    pub(crate) verifier: Arc<std::sync::OnceLock<Option<kura_node::verifier::Verifier>>>,
    /// Storage quotes, bills and payments (see [`crate::payments`]).
    pub(crate) payments: Arc<crate::payments::Payments>,
    /// The vaults this client joined through (asked for the genesis key).
    bootstrap: Arc<Vec<PeerId>>,
    /// The ages this client has learned, once it knows the genesis key.
    elders: Arc<tokio::sync::OnceCell<Arc<kura_node::elders::Elders>>>,
}

/// How long a looked-up close group is reused: a payment asks one group three times in a
/// few hundred milliseconds, and an iterative lookup costs more than the rest of it.
const GROUP_TTL: Duration = Duration::from_secs(10);

/// Close groups remembered at once.
const GROUPS_KEPT: usize = 4096;

impl Client {
    /// Joins the network through `peers` with default settings.
    pub async fn connect(peers: Vec<Multiaddr>) -> Result<Client, ClientError> {
        Self::connect_with(peers, ClientConfig::default()).await
    }

    /// Joins the network through `peers` with a fresh identity and waits until at least one
    /// vault is in the routing table.
    pub async fn connect_with(peers: Vec<Multiaddr>, config: ClientConfig) -> Result<Client, ClientError> {
        let tried = peers.len();
        let bootstrap: Vec<PeerId> = peers
            .iter()
            .filter_map(|a| a.iter().find_map(|p| if let kura_node::Protocol::P2p(id) = p { Some(id) } else { None }))
            .collect();
        let (node, _inbound) =
            kura_node::spawn(NodeConfig::client(Keypair::generate_ed25519()).with_bootstrap(peers)).await?;
        let start = Instant::now();
        while node.routing_table().await?.is_empty() {
            if start.elapsed() > CONNECT_TIMEOUT {
                node.shutdown().await;
                return Err(ClientError::Unreachable { tried, secs: CONNECT_TIMEOUT.as_secs() });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Client {
            node,
            config: Arc::new(config),
            groups: Default::default(),
            verified: Default::default(),
            verifier: Default::default(),
            payments: Default::default(),
            bootstrap: Arc::new(bootstrap),
            elders: Default::default(),
        })
    }

    /// The ages this client has learned (set up on first use with the network's genesis key:
    /// the configured one, or the one every bootstrap vault that answers shows).
    pub async fn elders(&self) -> Result<Arc<kura_node::elders::Elders>, ClientError> {
        self.elders
            .get_or_try_init(|| async {
                if let Some(g) = &self.config.genesis {
                    return Ok(kura_node::elders::Elders::new(Some(g.clone())));
                }
                let mut asked = self.bootstrap.iter().take(8).copied().collect::<Vec<_>>();
                if asked.is_empty() {
                    asked = self.node.routing_table().await?.into_iter().take(8).collect();
                }
                let answers = futures::future::join_all(asked.iter().map(|&p| self.node.request(p, Request::Age))).await;
                let shown: Vec<Option<Vec<u8>>> = answers
                    .into_iter()
                    .filter_map(|a| match a {
                        Ok(Response::Age { genesis, .. }) => Some(genesis),
                        _ => None,
                    })
                    .collect();
                match shown.first() {
                    None => Err(ClientError::Wallet(format!("none of the {} bootstrap vaults showed the network's genesis key; try again", asked.len()))),
                    Some(first) if shown.iter().all(|g| g == first) => {
                        let elders = kura_node::elders::Elders::new(first.clone());
                        // Counted before first use, so proofs are checked against the
                        // network's committee size.
                        elders.count_live(&self.node).await;
                        Ok(elders)
                    }
                    Some(_) => Err(ClientError::Wallet("the bootstrap vaults disagree on the network's genesis key: they are not one network".into())),
                }
            })
            .await
            .cloned()
    }

    /// The committee of `account`: its [`kura_node::age::VOTERS`] closest elders (vaults with a
    /// proven age; see [`kura_node::elders`]), closest first, and how many elders a committee
    /// has on this network as this client knows it.
    pub async fn committee(&self, account: Address) -> Result<(Vec<PeerId>, usize), ClientError> {
        let elders = self.elders().await?;
        elders.count_live(&self.node).await;
        let near = self.group(account, 2 * kura_node::age::VOTERS).await?;
        let members: Vec<PeerId> = elders.elders(&self.node, near).await.into_iter().take(kura_node::age::VOTERS).collect();
        Ok((members, elders.committee_size()))
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The underlying network handle.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// Where a replicated record (a pointer, a message) lives: its [`kura_node::REPLICAS`]
    /// closest vaults and its [`kura_node::REPLICAS`] closest elders (closest first, each
    /// once), and which of them are elders. Ids ground next to an address make newcomers its
    /// closest vaults, never its elders: a record is always written to and read from vaults
    /// whose place no one chose.
    pub async fn replica_set(&self, address: Address) -> Result<(Vec<PeerId>, Vec<PeerId>), ClientError> {
        let n = usize::from(kura_node::REPLICAS);
        let near = self.group(address, 2 * n).await?;
        let elders: Vec<PeerId> = self.elders().await?.elders(&self.node, near.clone()).await.into_iter().take(n).collect();
        let mut set: Vec<PeerId> = near.into_iter().take(n).collect();
        set.extend(elders.iter().filter(|e| !set.contains(e)).copied().collect::<Vec<_>>());
        Ok((set, elders))
    }

    /// The `n` vaults closest to `target`, closest first.
    pub async fn closest_vaults(&self, target: Address, n: usize) -> Result<Vec<PeerId>, ClientError> {
        Ok(self.node.closest_vaults(target, n).await?)
    }

    /// The `n` (at most 48) vaults closest to `target`, as looked up within the last few
    /// seconds, or looked up now. [`Client::forget_group`] drops one a vault of failed.
    pub async fn group(&self, target: Address, n: usize) -> Result<Vec<PeerId>, ClientError> {
        let wide = 2 * kura_node::age::VOTERS;
        if let Some((at, group)) = self.groups.lock().unwrap_or_else(|e| e.into_inner()).get(&target) {
            if at.elapsed() < GROUP_TTL && n <= wide {
                return Ok(group.iter().take(n).copied().collect());
            }
        }
        let group = self.node.closest_vaults(target, wide.max(n)).await?;
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups.len() >= GROUPS_KEPT {
            groups.clear();
        }
        groups.insert(target, (Instant::now(), group.clone()));
        Ok(group.into_iter().take(n).collect())
    }

    /// Forgets the group of `target`: one of its vaults failed, so the next use looks again.
    pub fn forget_group(&self, target: &Address) {
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).remove(target);
    }

    /// Asks a vault for its status.
    pub async fn vault_status(&self, peer: PeerId) -> Result<VaultStatus, ClientError> {
        match self.node.request(peer, Request::Status).await? {
            Response::Status(s) => Ok(s),
            _ => Err(NodeError::UnexpectedResponse { peer, request: "Status" }.into()),
        }
    }

    /// Leaves the network.
    pub async fn close(self) {
        self.node.shutdown().await;
    }
}
