//! The vault's request loop: takes requests from the node and answers them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use kura_node::wire::{RemoteError, Request, Response, VaultStatus};
use kura_node::{InboundRequest, NodeHandle};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info};

use crate::config::VaultConfig;
use crate::error::VaultError;
use crate::info::VaultInfo;

/// A running vault.
#[derive(Debug, Clone)]
pub struct Vault {
    node: NodeHandle,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: VaultConfig,
    started: Instant,
}

impl Vault {
    /// Starts a vault: loads or creates its identity under `config.root`, joins the network and
    /// serves requests on the current tokio runtime until [`Vault::shutdown`].
    pub async fn start(config: VaultConfig) -> Result<Vault, VaultError> {
        std::fs::create_dir_all(&config.root).map_err(|source| VaultError::Io {
            path: config.root.clone(),
            source,
        })?;
        let keypair = kura_node::identity::load_or_create(&config.root)?;
        let node_config = kura_node::NodeConfig::vault(keypair)
            .with_listen(config.listen.clone())
            .with_bootstrap(config.bootstrap.clone());
        let (node, inbound) = kura_node::spawn(node_config).await?;
        let listen = node.listen_addrs().await?;
        info!(peer = %node.peer_id(), ?listen, "vault started");
        VaultInfo {
            peer_id: node.peer_id().to_string(),
            listen_addrs: listen.iter().map(|a| a.to_string()).collect(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
        .write(&config.root)?;
        let vault = Vault {
            node,
            shared: Arc::new(Shared { config, started: Instant::now() }),
        };
        tokio::spawn(vault.clone().serve(inbound));
        Ok(vault)
    }

    /// The vault's network handle.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// Stops the vault's network node and removes its status file.
    pub async fn shutdown(&self) {
        self.node.shutdown().await;
        VaultInfo::remove(&self.shared.config.root);
    }

    async fn serve(self, mut inbound: mpsc::Receiver<InboundRequest>) {
        let permits = Arc::new(Semaphore::new(self.shared.config.max_concurrent_requests.max(1)));
        while let Some(req) = inbound.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            let vault = self.clone();
            tokio::spawn(async move {
                let peer = req.peer;
                let response = vault.handle(&req.request).await;
                debug!(%peer, "answered request");
                req.respond(response);
                drop(permit);
            });
        }
    }

    async fn handle(&self, request: &Request) -> Response {
        match request {
            Request::Ping => Response::Pong,
            Request::Status => match self.status().await {
                Ok(s) => Response::Status(s),
                Err(e) => Response::Error(RemoteError::Internal(e.to_string())),
            },
            Request::FindClosest { target, n } => {
                match self.node.closest_vaults(*target, usize::from(*n)).await {
                    Ok(peers) => Response::Closest(peers),
                    Err(e) => Response::Error(RemoteError::Internal(e.to_string())),
                }
            }
            other => Response::Error(RemoteError::Invalid(format!("unsupported request {other:?}"))),
        }
    }

    /// The vault's current status.
    pub async fn status(&self) -> Result<VaultStatus, VaultError> {
        let routing = self.node.routing_table().await?;
        Ok(VaultStatus {
            peer_id: self.node.peer_id(),
            listen_addrs: self.node.listen_addrs().await?,
            routing_table_size: routing.len() as u32,
            // No record kinds are stored yet: the shard store arrives with file storage.
            records_stored: 0,
            bytes_used: 0,
            capacity: self.shared.config.capacity,
            uptime_secs: self.shared.started.elapsed().as_secs(),
            malformed_requests: self.node.stats().malformed_requests.load(Ordering::Relaxed),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}
