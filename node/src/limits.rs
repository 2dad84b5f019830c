//! Per-IP caps: on inbound connections, and on routing table entries per bucket.
//!
//! libp2p's connection limits count per peer and in total; peer ids cost nothing, so one
//! machine could fill the total with fresh ids. This behaviour refuses an inbound connection
//! when its IP address already has `max` established, so one address holds at most `max` of
//! the node's connections whatever ids it makes. Loopback addresses are not limited: they are
//! this machine, where a local testnet runs every vault and client on 127.0.0.1.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Inbound connections by IP address.
#[derive(Debug, Default)]
pub(crate) struct IpLimits {
    max: Option<usize>,
    by_ip: HashMap<IpAddr, usize>,
    connections: HashMap<ConnectionId, IpAddr>,
}

/// Why an inbound connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {max} connections")]
struct TooMany {
    ip: IpAddr,
    max: usize,
}

/// The non-loopback IP addresses among `addrs` (loopback is this machine: a local testnet).
pub(crate) fn remote_ips<'a>(addrs: impl Iterator<Item = &'a Multiaddr>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = addrs.filter_map(ip_of).filter(|ip| !ip.is_loopback()).collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Whether a peer at `new` would be one too many in a routing table bucket whose other
/// entries are at `others`: at most `max` ids of one bucket may share an IP address, so ids
/// made on one machine cannot fill the buckets around a target (S/Kademlia's IP limit).
pub(crate) fn crowded(new: &[IpAddr], others: &[Vec<IpAddr>], max: usize) -> bool {
    new.iter().any(|ip| others.iter().filter(|o| o.contains(ip)).count() >= max)
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl IpLimits {
    /// At most `max` inbound connections per IP address (`None`: no limit).
    pub fn new(max: Option<usize>) -> Self {
        IpLimits { max, ..Default::default() }
    }

    /// Admits connection `id` from `remote`, or refuses it.
    fn admit(&mut self, id: ConnectionId, remote: &Multiaddr) -> Result<(), TooMany> {
        let (Some(max), Some(ip)) = (self.max, ip_of(remote)) else { return Ok(()) };
        if ip.is_loopback() {
            return Ok(());
        }
        let count = self.by_ip.entry(ip).or_default();
        if *count >= max {
            return Err(TooMany { ip, max });
        }
        *count += 1;
        self.connections.insert(id, ip);
        Ok(())
    }

    fn closed(&mut self, id: ConnectionId) {
        if let Some(ip) = self.connections.remove(&id) {
            if let Some(count) = self.by_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }
}

impl NetworkBehaviour for IpLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(connection_id, remote_addr).map_err(ConnectionDenied::new)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(c) => self.closed(c.connection_id),
            // Another behaviour refused the connection after this one counted it.
            FromSwarm::ListenFailure(f) => self.closed(f.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _connection: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_at_most_max_ids_of_one_address() {
        let addr = |s: &str| -> Multiaddr { s.parse().unwrap() };
        let a = remote_ips([addr("/ip4/10.0.0.1/udp/1/quic-v1"), addr("/ip4/10.0.0.1/udp/2/quic-v1")].iter());
        assert_eq!(a.len(), 1);
        let b = remote_ips([addr("/ip4/10.0.0.2/udp/1/quic-v1")].iter());
        assert!(!crowded(&a, &[a.clone(), b.clone()], 2));
        assert!(crowded(&a, &[a.clone(), a.clone(), b.clone()], 2));
        let local = remote_ips([addr("/ip4/127.0.0.1/udp/1/quic-v1")].iter());
        assert!(local.is_empty() && !crowded(&local, &vec![local.clone(); 10], 2), "loopback is exempt");
    }

    #[test]
    fn one_address_holds_at_most_max_and_frees_on_close() {
        let mut l = IpLimits::new(Some(2));
        let a: Multiaddr = "/ip4/10.0.0.1/udp/1/quic-v1".parse().unwrap();
        let b: Multiaddr = "/ip4/10.0.0.2/udp/1/quic-v1".parse().unwrap();
        let ids: Vec<ConnectionId> = (0..4).map(|_| ConnectionId::new_unchecked(rand::random())).collect();
        l.admit(ids[0], &a).unwrap();
        l.admit(ids[1], &a).unwrap();
        assert!(l.admit(ids[2], &a).is_err(), "a third from one address is refused");
        l.admit(ids[3], &b).unwrap();
        l.closed(ids[0]);
        l.admit(ids[2], &a).unwrap();
        assert!(IpLimits::new(None).admit(ids[0], &a).is_ok());
        let local: Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap();
        assert!(ids.iter().all(|id| l.admit(*id, &local).is_ok()), "loopback is this machine: not limited");
    }
}
