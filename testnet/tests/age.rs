//! Node age on real vault processes (issue 19): vaults added to a running network start as
//! newcomers, are relocated by their groups' elders to places no one chose (each time a new
//! id, in the same process), age one step a relocation, and become elders that others check
//! by their proofs; the ledger keeps working and the supply stays whole meanwhile.

use std::collections::HashSet;

use futures::StreamExt;
use std::time::{Duration, Instant};

use kura_node::age::ELDER_AGE;
use kura_node::ledger::{Output, WalletKey};
use kura_node::wire::{Request, Response};
use kura_node::PeerId;
use kura_testnet::GENESIS_SUPPLY;

mod common;
use common::{rt, Net};

/// Seconds in this test's age epoch: a newcomer is an elder after about 31 epochs.
const EPOCH: &str = "2";

#[test]
fn newcomers_are_relocated_by_their_elders_and_age_into_elders() {
    let net = Net::up_with(8, 1 << 30, &["--age-epoch", EPOCH]);
    let rt = rt();
    let added = net.net.add(3, 1 << 30).unwrap();
    let first_ids: HashSet<String> = added.iter().map(|&i| net.net.state().unwrap().vaults[i].peer_id.clone()).collect();
    let dirs = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let client = net.connect().await;
        let elders = client.elders().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(360);
        let (elder, seen) = loop {
            // The testnet's state follows each vault to its new id.
            let state = net.net.state().unwrap();
            let mut ages = Vec::new();
            for &i in &added {
                let peer: PeerId = state.vaults[i].peer_id.parse().unwrap();
                let proof = match client.node().request(peer, Request::Age).await {
                    Ok(Response::Age { proof, .. }) => proof,
                    _ => None,
                };
                let shown = proof.as_ref().map_or(0, |p| p.age);
                // Checked as any vault checks it: the relocation's signers must be elders.
                let checked = elders.admit(client.node(), peer, proof).await;
                ages.push((i, peer, shown, checked));
            }
            if let Some(&(i, peer, _, _)) = ages.iter().find(|(_, _, _, checked)| *checked >= ELDER_AGE) {
                break (i, peer);
            }
            assert!(Instant::now() < deadline, "no added vault became an elder: (index, id, age shown, age checked) {ages:?}");
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        eprintln!("vault {elder} is an elder as {seen}");
        assert!(!first_ids.contains(&seen.to_string()), "it was relocated: its id is not the one it joined with");
        let status = client.vault_status(seen).await.unwrap();
        let relocations = status
            .workers
            .iter()
            .find(|w| w.name == "age")
            .and_then(|w| w.counters.iter().find(|(n, _)| n == "relocations"))
            .map_or(0, |(_, n)| *n);
        eprintln!("its age worker since its last start: {:?}", status.workers.iter().find(|w| w.name == "age"));
        assert!(relocations <= 1, "one relocation per start of the process's vault ({relocations})");
        // A forged claim of the same age by another key is no proof: only the new id holds it.
        let Ok(Response::Age { proof: Some(proof), .. }) = client.node().request(seen, Request::Age).await else { panic!("no proof") };
        let stranger = PeerId::random();
        assert_eq!(elders.admit(client.node(), stranger, Some(proof)).await, 0);
        // The ledger works on, and adds up, with vaults relocating under it.
        let payer = kura_client::Wallet::open(&dirs.path().join("payer"), WalletKey::random()).unwrap();
        let payee = WalletKey::random().address();
        let faucet = net.faucet();
        client.pay(&faucet, vec![Output { to: payer.address(), amount: 1000, memo: [0; 32] }]).await.unwrap();
        client.pay(&payer, vec![Output { to: payee, amount: 400, memo: [0; 32] }]).await.unwrap();
        let total: i128 = [payer.address(), payee, faucet.address()]
            .into_iter()
            .map(|a| {
                let client = client.clone();
                async move { client.balance(a).await.unwrap().balance }
            })
            .collect::<futures::stream::FuturesOrdered<_>>()
            .collect::<Vec<i128>>()
            .await
            .into_iter()
            .sum();
        assert_eq!(total, i128::from(GENESIS_SUPPLY), "the supply is whole");
        client.close().await;
    });
}

/// An elder signs one ticket of a vault an epoch: asked again with another range (which
/// would give another signature, so another churn event), it refuses, so a vault cannot pick
/// where it goes from several draws.
#[test]
fn an_elder_signs_one_ticket_of_a_vault_an_epoch() {
    let net = Net::up_with(6, 1 << 30, &["--age-epoch", EPOCH]);
    let rt = rt();
    let peers = kura_client::peers::read_peers_file(&net.peers_file()).unwrap();
    let elders = common::running_ids(&net);
    rt.block_on(async {
        let key = kura_node::puzzle::generate(kura_testnet::process::TESTNET_ID_DIFFICULTY);
        let me = key.public().to_peer_id();
        let (node, mut inbound) = kura_node::spawn(kura_node::NodeConfig::vault(key).with_bootstrap(peers)).await.unwrap();
        // A newcomer: it shows no age.
        tokio::spawn(async move {
            while let Some(req) = inbound.recv().await {
                let (_, request, responder) = req.into_parts();
                responder.respond(match request {
                    Request::Age => Response::Age { proof: None, genesis: None },
                    _ => Response::Pong,
                });
            }
        });
        // Seen by the elders for a whole epoch first.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / EPOCH.parse::<u64>().unwrap();
        let ticket = |bits| kura_node::age::Ticket { peer: me, age: 0, epoch, bits };
        let elder = elders[0];
        let first = node.request(elder, Request::Ticket(ticket(0))).await;
        assert!(matches!(first, Ok(Response::Ticket(_))), "{first:?}");
        let again = node.request(elder, Request::Ticket(ticket(0))).await;
        assert!(matches!(again, Ok(Response::Ticket(_))), "the same ticket is signed again: {again:?}");
        let other = node.request(elder, Request::Ticket(ticket(1))).await;
        assert!(other.is_err_and(|e| e.to_string().contains("another ticket")), "another range is refused");
        // The promise is on the elder's disk before its signature left: a restart keeps it.
        let state = net.net.state().unwrap();
        let index = net.net.running_peers(&state).into_iter().find(|(_, p)| *p == elder).unwrap().0;
        let kept = net.net.layout().vault_root(index).join("tickets").join(epoch.to_string());
        assert!(std::fs::metadata(&kept).is_ok_and(|m| m.len() > 32), "{} holds the promise", kept.display());
        node.shutdown().await;
    });
}
