//! A connection to the Kura network in Kademlia client mode.

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
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { coding: Coding::default(), max_bytes_in_flight: 32 << 20, download_batch: 4, prefetch: 4 }
    }
}

/// A client of the network: queries and uses vaults, serves nothing, is in no routing table.
#[derive(Debug, Clone)]
pub struct Client {
    node: NodeHandle,
    pub(crate) config: Arc<ClientConfig>,
}

impl Client {
    /// Joins the network through `peers` with default settings.
    pub async fn connect(peers: Vec<Multiaddr>) -> Result<Client, ClientError> {
        Self::connect_with(peers, ClientConfig::default()).await
    }

    /// Joins the network through `peers` with a fresh identity and waits until at least one
    /// vault is in the routing table.
    pub async fn connect_with(peers: Vec<Multiaddr>, config: ClientConfig) -> Result<Client, ClientError> {
        let tried = peers.len();
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
        Ok(Client { node, config: Arc::new(config) })
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The underlying network handle.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// The `n` vaults closest to `target`, closest first.
    pub async fn closest_vaults(&self, target: Address, n: usize) -> Result<Vec<PeerId>, ClientError> {
        Ok(self.node.closest_vaults(target, n).await?)
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
