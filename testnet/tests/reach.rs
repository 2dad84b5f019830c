//! A passing failure never exiles an honest vault: a long-lived client talks to a vault, the
//! vault dies and comes back on a new port (its dials fail meanwhile, and every routing table
//! drops it), and the same client reaches it again, as do all the other vaults.

use std::time::{Duration, Instant};

use kura_node::PeerId;

mod common;
use common::{rt, Net};

#[test]
fn a_client_reaches_a_vault_again_after_it_restarts_on_a_new_address() {
    let net = Net::up(8, 1 << 30);
    let rt = rt();
    let client = rt.block_on(net.connect());
    let state = net.net.state().unwrap();
    let (index, old_port) = (3, state.vaults[3].port);
    let peer: PeerId = state.vaults[index].peer_id.parse().unwrap();
    rt.block_on(client.vault_status(peer)).expect("reachable before");

    // It dies; the client's next request fails, and the vault leaves every routing table.
    net.net.kill(&[index], true).unwrap();
    let failed = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client.vault_status(peer).await.is_err() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    assert!(failed, "a dead vault still answered");

    // It comes back with its identity and data, on a port the OS picks.
    let mut state = net.net.state().unwrap();
    state.vaults[index].port = 0;
    let running = net.net.running(&state);
    net.net.layout().save(&state, &running).unwrap();
    net.net.restart(index).unwrap();
    let new_port = net.net.state().unwrap().vaults[index].port;
    assert_ne!(new_port, old_port, "the vault came back on a new address");

    let started = Instant::now();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match client.vault_status(peer).await {
                Ok(s) => {
                    assert_eq!(s.peer_id, peer);
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "the long-lived client never reached it again: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    eprintln!("reached again {:.1} s after the restart", started.elapsed().as_secs_f64());
    // And the network is whole: every vault has it in its routing table again.
    rt.block_on(net.assert_healthy());
    rt.block_on(client.close());
}
