//! Hostile input over real QUIC: garbage, truncated, oversized and unknown-version messages
//! sent to a running vault each get an error answer or a closed stream, and the same vault
//! still answers correctly afterwards.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use kura_node::wire::{self, RemoteError, Request, Response, WireError, MAX_FRAME_LEN, REQUEST_PROTOCOL};
use kura_node::{Address, Keypair, Multiaddr, NodeConfig, NodeError, PeerId};
use kura_vault::{Vault, VaultConfig};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, Swarm, SwarmBuilder};

/// Writes request bytes verbatim (no framing) and reads whatever comes back until EOF.
#[derive(Clone, Default)]
struct RawCodec;

#[async_trait::async_trait]
impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>> {
        Err(io::Error::other("this peer serves nothing"))
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        io.take(MAX_FRAME_LEN as u64 + 4).read_to_end(&mut out).await?;
        if out.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream closed without an answer"));
        }
        Ok(out)
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(&mut self, _: &StreamProtocol, _: &mut T, _: Vec<u8>) -> io::Result<()> {
        Err(io::Error::other("this peer serves nothing"))
    }
}

fn raw_swarm() -> Swarm<request_response::Behaviour<RawCodec>> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| {
            request_response::Behaviour::new(
                [(StreamProtocol::new(REQUEST_PROTOCOL), ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Sends raw bytes; returns the decoded answer, or the failure (a closed or reset stream).
async fn send_raw(
    swarm: &mut Swarm<request_response::Behaviour<RawCodec>>,
    peer: PeerId,
    bytes: Vec<u8>,
) -> Result<Response, String> {
    let id = swarm.behaviour_mut().send_request(&peer, bytes);
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { request_id, response },
                ..
            }) if request_id == id => {
                let body = response.get(4..).ok_or("short answer")?;
                return Ok(wire::decode::<Response>(body).expect("a vault's answer always decodes"));
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. })
                if request_id == id =>
            {
                return Err(error.to_string())
            }
            _ => {}
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_refused_and_the_vault_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::start(VaultConfig::local(dir.path().to_path_buf())).await.unwrap();
    let vault_peer = vault.node().peer_id();
    let addr: Multiaddr = vault.node().listen_addrs().await.unwrap()[0].clone();

    let mut swarm = raw_swarm();
    swarm.add_peer_address(vault_peer, addr.clone());

    // Garbage: random bytes whose first four read as a length far over the limit.
    let mut garbage: Vec<u8> = (0..600).map(|_| rand::random::<u8>()).collect();
    garbage[0] = 0xff;
    assert!(send_raw(&mut swarm, vault_peer, garbage).await.is_err(), "garbage must close the stream");

    // Garbage inside a well-formed frame: answered with a clear error.
    let answer = send_raw(&mut swarm, vault_peer, frame(&[wire::WIRE_VERSION, 0xde, 0xad, 0xbe, 0xef])).await;
    assert!(
        matches!(answer, Ok(Response::Error(RemoteError::Malformed(WireError::Body(_))))),
        "framed garbage: {answer:?}"
    );

    // Truncated: the frame announces more than is sent before the stream is closed.
    let mut truncated = frame(&wire::encode(&Request::FindClosest { target: Address::random(), n: 8 }).unwrap());
    truncated.truncate(truncated.len() - 10);
    assert!(send_raw(&mut swarm, vault_peer, truncated).await.is_err(), "truncated must close the stream");

    // Oversized: a frame over the limit, actually sent.
    let oversized = frame(&vec![wire::WIRE_VERSION; MAX_FRAME_LEN + 1]);
    assert!(send_raw(&mut swarm, vault_peer, oversized).await.is_err(), "oversized must close the stream");

    // Unknown version: answered with an error that names both versions.
    let mut future = wire::encode(&Request::Ping).unwrap();
    future[0] = 99;
    let answer = send_raw(&mut swarm, vault_peer, frame(&future)).await;
    assert_eq!(
        answer,
        Ok(Response::Error(RemoteError::Malformed(WireError::UnsupportedVersion { got: 99, supported: wire::WIRE_VERSION })))
    );

    // Asking for too large a group is refused, not served.
    let big = frame(&wire::encode(&Request::FindClosest { target: Address::random(), n: 500 }).unwrap());
    assert!(matches!(send_raw(&mut swarm, vault_peer, big).await, Ok(Response::Error(RemoteError::Invalid(_)))));

    // The same vault still answers a well-formed request on the same connection...
    assert_eq!(send_raw(&mut swarm, vault_peer, frame(&wire::encode(&Request::Ping).unwrap())).await, Ok(Response::Pong));

    // ...and a normal client too, with status showing what it refused.
    let (client, _) = kura_node::spawn(
        NodeConfig::client(Keypair::generate_ed25519())
            .with_bootstrap(vec![format!("{addr}/p2p/{vault_peer}").parse().unwrap()]),
    )
    .await
    .unwrap();
    match client.request(vault_peer, Request::Status).await.unwrap() {
        Response::Status(s) => {
            assert_eq!(s.peer_id, vault_peer);
            assert_eq!(s.malformed_requests, 2, "framed garbage and the unknown version");
        }
        other => panic!("unexpected {other:?}"),
    }
    let closest = client.remote_closest(vault_peer, Address::random(), 8).await.unwrap();
    assert_eq!(closest, vec![vault_peer], "a lone vault is its own close group");
    // Error answers surface as typed errors.
    let err = client.request(vault_peer, Request::FindClosest { target: Address::random(), n: 21 }).await;
    assert!(matches!(err, Err(NodeError::Remote { error: RemoteError::Invalid(_), .. })));
    vault.shutdown().await;
}
