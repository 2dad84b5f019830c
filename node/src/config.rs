//! Node configuration with documented defaults.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::Multiaddr;

use crate::budget::Budget;

/// Whether a node serves the network or only uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A vault: Kademlia server mode, in other nodes' routing tables, answers requests.
    Vault,
    /// A client: Kademlia client mode, never in routing tables, serves nothing.
    Client,
}

/// How a node is set up. Build one with [`NodeConfig::vault`] or [`NodeConfig::client`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Vault or client.
    pub role: Role,
    /// The node's identity.
    pub keypair: Keypair,
    /// Addresses to listen on; default `/ip4/127.0.0.1/udp/0/quic-v1` for vaults, none for
    /// clients (QUIC dials from an ephemeral socket).
    pub listen: Vec<Multiaddr>,
    /// Peers to join through, each with a `/p2p/<peer id>` suffix when known.
    pub bootstrap: Vec<Multiaddr>,
    /// How long a request may take before it fails (default 30 s).
    pub request_timeout: Duration,
    /// How long an iterative lookup may take (default 10 s).
    pub lookup_timeout: Duration,
    /// How long an unused connection stays open. Vaults keep theirs for an hour, so that a
    /// closed connection means a departed peer (QUIC keep-alives detect a dead one within
    /// 10 s); clients close theirs after 60 s.
    pub idle_timeout: Duration,
    /// How long a connection may go without a packet from the peer before the peer counts as
    /// gone (QUIC's idle timeout; keep-alives go out four times as often). Vaults: 10 s, so a
    /// departure is noticed within 10 s without a home link's hiccup looking like one. Clients:
    /// 4 s, since until a client notices, every lookup that reaches the dead vault waits for it,
    /// and a client that drops a live connection only dials again.
    pub dead_peer_timeout: Duration,
    /// Inbound requests queued for the application before new ones are refused as busy
    /// (default 256).
    pub inbound_queue: usize,
    /// Largest UDP payload QUIC's path-MTU discovery may try (default 65 000). Discovery only
    /// settles on sizes the path carries: ~1 450 bytes across the internet, but 64 KiB on
    /// loopback, where it cuts the packets (and per-packet CPU) of a bulk transfer ~40×.
    pub mtu_upper_bound: u16,
    /// Delays of the extra Kademlia bootstraps a new node runs while it joins, on top of
    /// libp2p-kad's own five-minute refresh (default 0.5, 1, 2, 4, 8, 16, 32 s).
    pub join_bootstraps: Vec<Duration>,
    /// What each client may ask of this node per second ([`Budget::CLIENT`]).
    pub client_budget: Budget,
    /// What each vault in the routing table may ask per second ([`Budget::VAULT`]).
    pub vault_budget: Budget,
    /// Bytes of inbound requests held at once, being read or waiting for an answer, across
    /// all peers (default 64 MiB; see [`crate::KuraCodec`]).
    pub inbound_bytes: usize,
    /// Bytes of inbound requests read per second from all peers together (default 64 MiB/s for
    /// a vault, `None` for no bound), shared fairly between connections (see
    /// [`crate::fair`]): a flood is not read faster than this, and a quiet peer is read first.
    pub inbound_rate: Option<u64>,
    /// Bytes a peer may send on one QUIC stream ahead of this node reading them (default
    /// 128 KiB for a vault). QUIC buffers what arrives within its windows outside the inbound
    /// budget, so the windows bound that memory: at most `connection_window` a connection.
    pub stream_window: u32,
    /// Bytes a peer may send on all streams of one connection ahead of this node reading them
    /// (default 2 MiB for a vault; quinn's own is 15 MB, so 32 connections that filled theirs
    /// held 480 MB). A window bounds a connection's throughput to window / round trip: 20 MiB/s
    /// at 100 ms.
    pub connection_window: u32,
    /// Streams a peer may have open to this node at once (default 16 for a vault). Streams this
    /// node does not read yet (no room in the inbound budget) keep what arrived in the
    /// connection's window; with at most this many of `stream_window` each, they never fill
    /// it, so the one stream being read always has room to arrive (else a flood's unread
    /// streams starve its own read stream, and everyone waits for their timeouts).
    pub incoming_streams: u32,
    /// Requests one connection may have open at once, both ways together (default 100, as
    /// libp2p; past it an outbound request fails at once, so a vault handing many shards to one
    /// peer needs room; memory is bounded by `inbound_bytes`, not by this).
    pub streams_per_connection: usize,
    /// Connections open at once, in and out (default 1024).
    pub max_connections: usize,
    /// Connections to one peer (default 8: a restarted peer's dead connections count until they time out).
    pub connections_per_peer: usize,
    /// Inbound connections from one IP address (default 64), or `None` for no limit (a
    /// loopback testnet, where every vault shares 127.0.0.1).
    pub connections_per_ip: Option<usize>,
    /// Bits of work a vault id must carry to enter the routing table ([`crate::puzzle`]); 0
    /// accepts every id (default 0; vaults set their network's value).
    pub id_difficulty: u8,
    /// Ids sharing one (non-loopback) IP address that one routing table bucket may hold
    /// (default 2), or `None` for no limit.
    pub ids_per_ip_per_bucket: Option<usize>,
}

impl NodeConfig {
    /// Defaults for a vault.
    pub fn vault(keypair: Keypair) -> Self {
        NodeConfig {
            role: Role::Vault,
            keypair,
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("static multiaddr")],
            bootstrap: Vec::new(),
            request_timeout: Duration::from_secs(30),
            lookup_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            dead_peer_timeout: Duration::from_secs(10),
            inbound_queue: 256,
            mtu_upper_bound: 65_000,
            join_bootstraps: [500, 1000, 2000, 4000, 8000, 16000, 32000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            client_budget: Budget::CLIENT,
            vault_budget: Budget::VAULT,
            inbound_bytes: crate::codec::INBOUND_BYTES,
            inbound_rate: Some(crate::codec::INBOUND_RATE),
            stream_window: 128 << 10,
            connection_window: 2 << 20,
            incoming_streams: 16,
            streams_per_connection: 100,
            max_connections: 1024,
            connections_per_peer: 8,
            connections_per_ip: Some(64),
            id_difficulty: 0,
            ids_per_ip_per_bucket: Some(2),
        }
    }

    /// Defaults for a client.
    pub fn client(keypair: Keypair) -> Self {
        NodeConfig {
            role: Role::Client,
            listen: Vec::new(),
            idle_timeout: Duration::from_secs(60),
            dead_peer_timeout: Duration::from_secs(4),
            join_bootstraps: vec![Duration::from_millis(300)],
            // A client receives only the answers it asked for: quinn's windows, for speed
            // over long round trips.
            stream_window: 10_000_000,
            connection_window: 15_000_000,
            incoming_streams: 256,
            // It takes no requests.
            inbound_rate: None,
            ..NodeConfig::vault(keypair)
        }
    }

    /// Sets the bootstrap peers.
    pub fn with_bootstrap(mut self, peers: Vec<Multiaddr>) -> Self {
        self.bootstrap = peers;
        self
    }

    /// Sets the listen addresses.
    pub fn with_listen(mut self, listen: Vec<Multiaddr>) -> Self {
        self.listen = listen;
        self
    }
}
