//! Ledger safety against a client alone and against lying group members, on real vault
//! processes with honest code (issue 17):
//! - the double spend through vaults near an account that are not its committee (a testnet of
//!   eight elders and eight newcomers): entries pushed there are refused, and at most one
//!   transfer at the nonce is certified or admitted anywhere;
//! - certificates from keys that are no vault, with a forged owner signature (naming the
//!   genesis account), overdrawing, or crediting one (payer, nonce) a second time are refused
//!   by every vault, whether stored fresh or met in catch-up after three members of the
//!   account's group (lying nodes) hold and return them;
//! - three replicas lying about a balance do not change what the client shows;
//! - (issue 19) six lying vaults with ids ground next to the attacker's own account, six of
//!   its eight closest vaults, are newcomers with forged age proofs: they mint nothing, by a
//!   double spend at one nonce or out of an empty account;
//! - (issue 19) eight such vaults ground next to a pointer and eight next to an inbox, the
//!   closest vaults to each, neither hide the pointer's newest version nor drop messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_node::ledger::{quorum, AccountView, Binding, Certificate, Entry, LedgerError, Output, SignedTransfer, WalletKey, QUORUM};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, NodeError, NodeHandle, PeerId, Record, REPLICAS};
use kura_testnet::process::TESTNET_ID_DIFFICULTY;
use kura_testnet::GENESIS_SUPPLY;

mod common;
use common::{ask_signatures as shares, refusal, rt, Net};

const KURA: u64 = kura_node::ledger::UNITS_PER_TOKEN;

fn pay(to: Address, amount: u64) -> Output {
    Output { to, amount, memo: [0; 32] }
}

/// Sends `record` to each of `vaults`; returns their answers.
async fn put_at(client: &kura_client::Client, vaults: &[PeerId], record: &Record) -> Vec<(PeerId, Result<Response, NodeError>)> {
    let puts = vaults.iter().map(|&v| async move { (v, client.node().request(v, Request::PutRecord(record.clone())).await) });
    futures::future::join_all(puts).await
}

/// One vault's view of an account, asked directly.
async fn view_at(client: &kura_client::Client, vault: PeerId, account: Address) -> Option<AccountView> {
    match client.node().request(vault, Request::Account(account)).await {
        Ok(Response::Account(v)) => Some(v),
        _ => None,
    }
}

/// A key and binding of an id with work that is no vault of the network.
fn stranger() -> (WalletKey, Binding) {
    let key = WalletKey::random();
    let binding = key.bind(&kura_node::puzzle::generate(TESTNET_ID_DIFFICULTY));
    (key, binding)
}

fn certify(signed: &SignedTransfer, by: &[(WalletKey, Binding)]) -> Certificate {
    Certificate::aggregate(signed.clone(), by.iter().map(|(k, b)| (b.clone(), k.sign_replica(signed))).collect()).unwrap()
}

#[test]
fn a_client_alone_cannot_double_spend_through_vaults_outside_the_committee() {
    // Eight elders, and eight newcomers that sit among them: an account's committee is its
    // eight elders, whichever vaults are closest.
    let net = Net::up(8, 1 << 30);
    net.net.add(8, 1 << 30).unwrap();
    let rt = rt();
    rt.block_on(net.assert_healthy());
    let dirs = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let client = net.connect().await;
        let payer = kura_client::Wallet::open(&dirs.path().join("payer"), WalletKey::random()).unwrap();
        let funding = client.pay(&net.faucet(), vec![pay(payer.address(), 10 * KURA)]).await.unwrap();
        let ranked = client.closest_vaults(payer.address(), 16).await.unwrap();
        assert_eq!(ranked.len(), 16);
        let (committee, _) = client.committee(payer.address()).await.unwrap();
        assert_eq!(committee.len(), 8);
        let outside: Vec<PeerId> = ranked.iter().filter(|p| !committee.contains(p)).copied().collect();
        let (committee, outside) = (&committee[..], &outside[..]);

        // The payer's credit pushed to the vaults outside the committee: none of them holds it.
        let credit = Record::Transfer(Entry { account: payer.address(), certificate: funding.clone() });
        for (vault, answer) in put_at(&client, outside, &credit).await {
            assert!(
                matches!(answer, Err(NodeError::Remote { error: RemoteError::NotResponsible(_), .. })),
                "newcomer {vault} took the payer's entry: {answer:?}"
            );
        }
        // The committee asked to sign one transfer of the whole balance, the newcomers another
        // at the same nonce.
        let (x, y) = (WalletKey::random().address(), WalletKey::random().address());
        let t1 = payer.key().sign(1, vec![pay(x, 10 * KURA)]);
        let t2 = payer.key().sign(1, vec![pay(y, 10 * KURA)]);
        let (s1, s2) = tokio::join!(shares(&client, committee, &t1), shares(&client, outside, &t2));
        assert!(s1.len() >= quorum(8), "the committee signs the first: {} shares", s1.len());
        assert!(s2.is_empty(), "vaults outside the committee signed {} shares", s2.len());
        // The outsiders' shares could not make a certificate anyway; the committee's, once
        // promised, sign nothing else at the nonce.
        let asks = committee.iter().map(|&v| client.node().request(v, Request::Sign(t2.clone())));
        for answer in futures::future::join_all(asks).await {
            assert!(matches!(refusal(&answer), Some(LedgerError::Conflict { nonce: 1, .. })), "{answer:?}");
        }
        let c1 = Certificate::aggregate(t1.clone(), s1).unwrap();
        client.confirm(&c1).await.unwrap();

        // Every vault of the network: nobody credits y, and x's credit is the payer's whole
        // balance and nothing more.
        let ids = common::running_ids(&net);
        for &v in &ids {
            for (account, most) in [(x, 10 * KURA), (y, 0)] {
                if let Some(view) = view_at(&client, v, account).await {
                    assert!(view.balance <= i128::from(most), "vault {v} credits {} to {account}", view.balance);
                }
            }
        }
        let (bx, by, bp) = (
            client.balance(x).await.unwrap().balance,
            client.balance(y).await.unwrap().balance,
            client.balance(payer.address()).await.unwrap().balance,
        );
        assert_eq!((bx, by, bp), (i128::from(10 * KURA), 0, 0));
        assert_eq!(bx + by, i128::from(10 * KURA), "the payees hold what the payer held");
        client.close().await;
    });
}

/// A lying node's identity: its libp2p key and its bound BLS key.
struct Liar {
    keypair: kura_node::Keypair,
    key: WalletKey,
    binding: Binding,
}

impl Liar {
    /// A liar whose id is closer to `account` than `than` is (ids are drawn until one is).
    fn closer_than(account: &Address, than: &PeerId) -> Liar {
        let bound = kura_node::distance_to_peer(account, than);
        let keypair = loop {
            let keypair = kura_node::puzzle::generate(TESTNET_ID_DIFFICULTY);
            if kura_node::distance_to_peer(account, &keypair.public().to_peer_id()) < bound {
                break keypair;
            }
        };
        let key = WalletKey::random();
        let binding = key.bind(&keypair);
        Liar { keypair, key, binding }
    }
}

/// Nodes that join as vaults and lie: they sign every transfer they are asked to (no promise
/// kept), claim to store anything, hold `forged` entries and return them to whoever lists or
/// asks for them, report `lie` as every account's balance, and show an elder's age signed by
/// a genesis key of their own.
struct Liars {
    rt: tokio::runtime::Runtime,
    nodes: Vec<NodeHandle>,
}

impl Liars {
    fn spawn(net: &Net, liars: &[Liar], forged: Arc<Vec<Entry>>, lie: i128) -> Liars {
        let peers = kura_client::peers::read_peers_file(&net.peers_file()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut nodes = Vec::new();
        for liar in liars {
            let (key, binding) = (liar.key.clone(), liar.binding.clone());
            let config = kura_node::NodeConfig::vault(liar.keypair.clone()).with_bootstrap(peers.clone());
            let (node, mut inbound) = rt.block_on(kura_node::spawn(config)).unwrap();
            let (me, forged) = (node.clone(), forged.clone());
            let fake_genesis = WalletKey::random();
            let fake_age = kura_node::age::AgeProof::genesis(&fake_genesis, liar.binding.peer, 40);
            rt.spawn(async move {
                while let Some(req) = inbound.recv().await {
                    let (_, request, responder) = req.into_parts();
                    let at = |account: Address| forged.iter().filter(move |e| e.account == account);
                    let response = match request {
                        Request::Ping => Response::Pong,
                        Request::Age => Response::Age { proof: Some(fake_age.clone()), genesis: Some(fake_genesis.public_key()) },
                        Request::Sign(signed) => Response::Signed(kura_node::ledger::ReplicaSignature {
                            binding: binding.clone(),
                            signature: key.sign_replica(&signed),
                        }),
                        Request::PutRecord(_) => Response::Stored,
                        Request::Inbox(_) => Response::Messages { messages: Vec::new(), more: false },
                        Request::GetRecord(k) => Response::Record(at(k.address).find(|e| e.key() == k).map(|e| Record::Transfer(e.clone()))),
                        Request::EntryIds { account, .. } => {
                            let mut ids: Vec<[u8; 32]> = at(account).map(|e| e.certificate.id()).collect();
                            ids.sort();
                            Response::Ids { ids, more: false }
                        }
                        Request::History { account, .. } => Response::Entries { entries: at(account).cloned().collect(), more: false },
                        Request::Account(account) => Response::Account(AccountView {
                            account,
                            balance: lie,
                            genesis: 0,
                            nonce: 0,
                            entries: 1,
                            behind: false,
                            pending: None,
                        }),
                        Request::FindClosest { target, n } => match me.closest_vaults(target, usize::from(n)).await {
                            Ok(found) => Response::Closest(found),
                            Err(e) => Response::Error(RemoteError::Internal(e.to_string())),
                        },
                        _ => Response::Error(RemoteError::Invalid("not served".into())),
                    };
                    responder.respond(response);
                }
            });
            nodes.push(node);
        }
        Liars { rt, nodes }
    }
}

impl Drop for Liars {
    fn drop(&mut self) {
        for n in &self.nodes {
            self.rt.block_on(n.shutdown());
        }
    }
}

#[test]
fn forged_certificates_are_refused_fresh_and_in_catch_up_and_three_lying_replicas_change_no_balance() {
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let dirs = tempfile::tempdir().unwrap();
    let wallet = |name: &str| kura_client::Wallet::open(&dirs.path().join(name), WalletKey::random()).unwrap();
    let honest = common::running_ids(&net);
    // The victim's committee, once the liars join, holds all three of them: each is closer to
    // it than the fifth-closest honest vault. (Drawing accounts until one's committee held
    // three liars drawn first never ended for some draws of their ids.)
    let victim = wallet("victim");
    let fifth = kura_node::close_group(&victim.address(), honest.iter().copied(), 5)[4];
    let liars: Vec<Liar> = (0..3).map(|_| Liar::closer_than(&victim.address(), &fifth)).collect();
    let liar_ids: Vec<PeerId> = liars.iter().map(|l| l.binding.peer).collect();
    let (payer, twice) = (wallet("payer"), wallet("twice"));
    let faucet = net.faucet();
    let genesis_key = faucet.key().public_key();
    let attacker = WalletKey::random();
    let forged = rt.block_on(async {
        // Honest payments while every vault is honest: the victim holds 150.
        let client = net.connect().await;
        client.pay(&faucet, vec![pay(victim.address(), 100), pay(payer.address(), 100), pay(twice.address(), 100)]).await.unwrap();
        client.pay(&twice, vec![pay(victim.address(), 50)]).await.unwrap();
        client.close().await;
        // Signers the liars could muster: themselves and three ids with work that are no
        // vault.
        let signers: Vec<(WalletKey, Binding)> =
            liars.iter().map(|l| (l.key.clone(), l.binding.clone())).chain((0..3).map(|_| stranger())).collect();
        let strangers: Vec<(WalletKey, Binding)> = (0..QUORUM).map(|_| stranger()).collect();
        // 1. Keys that are no vault, out of an account nobody funded.
        let no_vaults = certify(&attacker.sign(1, vec![pay(victim.address(), 1_000_000 * KURA)]), &strangers);
        // 2. The genesis account named as payer, under the attacker's signature.
        let mut unowned = attacker.sign(1, vec![pay(victim.address(), 1_000_000 * KURA)]);
        unowned.transfer.from = genesis_key.clone();
        let unowned = certify(&unowned, &signers);
        // 3. More than the payer holds.
        let overdraft = certify(&payer.key().sign(1, vec![pay(victim.address(), 5_000_000)]), &signers);
        // 4. A second credit at a (payer, nonce) the victim was credited at.
        let second = certify(&twice.key().sign(1, vec![pay(victim.address(), 60)]), &signers);
        let mut forged = Vec::new();
        for cert in [no_vaults, unowned, overdraft, second] {
            let from = cert.transfer.transfer.from_address();
            forged.push(Entry { account: victim.address(), certificate: cert.clone() });
            forged.push(Entry { account: from, certificate: cert });
        }
        forged
    });
    let forged = Arc::new(forged);
    let _liars = Liars::spawn(&net, &liars, forged.clone(), i128::from(1_000_000 * KURA));
    rt.block_on(async {
        let client = net.connect().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let group = client.closest_vaults(victim.address(), usize::from(REPLICAS)).await.unwrap();
            if liar_ids.iter().all(|l| group.contains(l)) {
                break;
            }
            assert!(Instant::now() < deadline, "the liars never joined the victim's group: {group:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Fresh: stored at every honest vault, each forged entry is refused.
        for entry in forged.iter() {
            for (vault, answer) in put_at(&client, &honest, &Record::Transfer(entry.clone())).await {
                assert!(answer.is_err(), "vault {vault} took a forged entry at {}: {answer:?}", entry.account);
            }
        }
        // Catch-up: a payment to the victim has its honest replicas compare the account with
        // its group 30 s later, where the liars list the forged entries and hand them over
        // (three holders: under the old rule of f + 1 vouchers, enough).
        client.pay(&faucet, vec![pay(victim.address(), 1)]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(40)).await;
        let forged_ids: Vec<[u8; 32]> = forged.iter().map(|e| e.certificate.id()).collect();
        for &v in &honest {
            if let Some(view) = view_at(&client, v, victim.address()).await {
                // Vaults the liars pushed out of the group keep what they held (150) until the
                // group holds it.
                assert!(
                    view.entries == 0 || (150..=151).contains(&view.balance),
                    "vault {v}: the victim holds {} ({} entries)",
                    view.balance,
                    view.entries
                );
            }
            for account in [victim.address(), payer.address(), twice.address(), attacker.address(), faucet.address()] {
                if let Ok(Response::Ids { ids, .. }) = client.node().request(v, Request::EntryIds { account, after: None }).await {
                    assert!(!ids.iter().any(|i| forged_ids.contains(i)), "vault {v} holds a forged entry at {account}");
                }
            }
        }
        // The client, with three of the victim's eight replicas lying about every balance and
        // returning forged entries, shows what the certificates add up to.
        let victim_balance = client.balance(victim.address()).await.unwrap();
        assert_eq!(victim_balance.balance, 151, "{victim_balance:?}");
        let mut total = 0i128;
        for account in [victim.address(), payer.address(), twice.address(), faucet.address(), attacker.address()] {
            total += client.balance(account).await.unwrap().balance;
        }
        assert_eq!(total, i128::from(GENESIS_SUPPLY), "the supply is conserved to the unit");
        client.close().await;
    });
}

/// Signers that sign twice at one nonce (simulated: the payer's committee is restarted with
/// its promise files deleted, as a dishonest vault would ignore them) produce two valid
/// certificates. Both are refused as transfers, kept as evidence and reported in status; the
/// payee is credited neither, the payer debited once, and no money appears.
#[test]
fn two_certificates_at_one_nonce_are_evidence_and_the_payee_credits_neither() {
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let dirs = tempfile::tempdir().unwrap();
    let payer = kura_client::Wallet::open(&dirs.path().join("payer"), WalletKey::random()).unwrap();
    let payee = WalletKey::random().address();
    let faucet = net.faucet();
    let (t1, t2) = (payer.key().sign(1, vec![pay(payee, 100)]), payer.key().sign(1, vec![pay(payee, 60)]));
    let (committee, s1) = rt.block_on(async {
        let client = net.connect().await;
        client.pay(&faucet, vec![pay(payer.address(), 100)]).await.unwrap();
        let (committee, _) = client.committee(payer.address()).await.unwrap();
        let s1 = shares(&client, &committee, &t1).await;
        client.close().await;
        (committee, s1)
    });
    assert!(s1.len() >= quorum(10), "{} shares", s1.len());
    // The committee forgets its promises.
    let state = net.net.state().unwrap();
    let members: Vec<usize> = net.net.running_peers(&state).into_iter().filter(|(_, p)| committee.contains(p)).map(|(i, _)| i).collect();
    let promise = format!("{}.promise", hex::encode(payer.address().0));
    for &i in &members {
        net.net.kill(&[i], false).unwrap();
        let path = net.net.layout().vault_root(i).join("ledger").join(&promise);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        net.net.restart(i).unwrap();
    }
    rt.block_on(net.assert_healthy());
    rt.block_on(async {
        let client = net.connect().await;
        let s2 = shares(&client, &committee, &t2).await;
        assert!(s2.len() >= quorum(10), "{} shares", s2.len());
        let (c1, c2) = (Certificate::aggregate(t1.clone(), s1).unwrap(), Certificate::aggregate(t2.clone(), s2).unwrap());
        client.confirm(&c1).await.unwrap();
        assert_eq!(client.balance(payee).await.unwrap().balance, 100);
        // The second certificate, at both accounts' committees: refused as a double spend.
        for account in [payee, payer.address()] {
            let (group, _) = client.committee(account).await.unwrap();
            let record = Record::Transfer(Entry { account, certificate: c2.clone() });
            for (vault, answer) in put_at(&client, &group, &record).await {
                assert_eq!(refusal(&answer), Some(LedgerError::DoubleSpend(1)), "vault {vault} at {account}");
            }
        }
        // The payee is credited neither; the payer debited once; nothing was created.
        let ids = common::running_ids(&net);
        for &v in &ids {
            if let Some(view) = view_at(&client, v, payee).await {
                assert_eq!(view.balance, 0, "vault {v} credits the payee");
            }
        }
        assert_eq!(client.balance(payee).await.unwrap().balance, 0);
        assert_eq!(client.balance(payer.address()).await.unwrap().balance, 0);
        let faucet_balance = client.balance(faucet.address()).await.unwrap().balance;
        assert_eq!(faucet_balance, i128::from(GENESIS_SUPPLY) - 100, "the supply only shrinks by the contested 100");
        // Evidence, in status and on disk; the vaults that signed both are penalized.
        let mut reported = 0;
        for &v in &ids {
            reported += client.vault_status(v).await.map(|s| s.ledger_evidence).unwrap_or(0);
        }
        assert!(reported >= 1, "no vault reports the evidence");
        let state = net.net.state().unwrap();
        let kept: usize = state
            .vaults
            .iter()
            .filter_map(|v| std::fs::read_dir(net.net.layout().vault_root(v.index).join("evidence")).ok())
            .flat_map(|d| d.filter_map(Result::ok))
            .filter(|e| {
                let exhibit = kura_vault::evidence::read(&std::fs::read(e.path()).unwrap()).unwrap();
                let guilty = kura_vault::evidence::culprits(&exhibit);
                guilty.len() >= 2 * quorum(10) - 10 && guilty.iter().all(|p| committee.contains(p))
            })
            .count();
        assert!(kept >= 1, "no evidence file names the double signers");
        client.close().await;
    });
}

/// Issue 19's mint. Six lying vaults (the honest code with the one-signature-per-nonce promise
/// and the balance rule removed) with ids ground next to the attacker's own account, six of
/// its eight closest vaults, sign three transfers of the account's whole 10 KURA at nonce 1,
/// and 5,000,000 KURA out of an empty account. They are newcomers, whatever age they claim: no
/// payee's replica and no client takes a certificate they made, the one transfer the
/// account's elders certified is the only one paid, and the supply is conserved to the unit.
#[test]
fn aimed_newcomers_mint_nothing_however_close_their_ids() {
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let dirs = tempfile::tempdir().unwrap();
    let honest = common::running_ids(&net);
    let attacker = kura_client::Wallet::open(&dirs.path().join("attacker"), WalletKey::random()).unwrap();
    let second = kura_node::close_group(&attacker.address(), honest.iter().copied(), 2)[1];
    let liars: Vec<Liar> = (0..6).map(|_| Liar::closer_than(&attacker.address(), &second)).collect();
    let liar_ids: Vec<PeerId> = liars.iter().map(|l| l.binding.peer).collect();
    let signers: Vec<(WalletKey, Binding)> = liars.iter().map(|l| (l.key.clone(), l.binding.clone())).collect();
    let faucet = net.faucet();
    let payees: Vec<Address> = (0..3).map(|_| WalletKey::random().address()).collect();
    let empty = WalletKey::random();
    rt.block_on(async {
        let client = net.connect().await;
        client.pay(&faucet, vec![pay(attacker.address(), 10 * KURA)]).await.unwrap();
        client.close().await;
    });
    let _liars = Liars::spawn(&net, &liars, Arc::new(Vec::new()), 0);
    rt.block_on(async {
        let client = net.connect().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let group = client.closest_vaults(attacker.address(), usize::from(REPLICAS)).await.unwrap();
            if liar_ids.iter().all(|l| group.contains(l)) {
                break;
            }
            assert!(Instant::now() < deadline, "the liars never became the account's closest vaults: {group:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Three transfers of the whole balance at nonce 1: each signed by the six liars and
        // by whichever honest vaults near the account sign it.
        let near = client.closest_vaults(attacker.address(), 16).await.unwrap();
        let honest_near: Vec<PeerId> = near.into_iter().filter(|p| !liar_ids.contains(p)).collect();
        let mut certificates = Vec::new();
        for payee in &payees {
            let t = attacker.key().sign(1, vec![pay(*payee, 10 * KURA)]);
            let mut s = shares(&client, &honest_near, &t).await;
            s.extend(signers.iter().map(|(k, b)| (b.clone(), k.sign_replica(&t))));
            // A certificate names at most a committee's worth of signers: the honest first.
            s.truncate(kura_node::age::VOTERS);
            certificates.push(Certificate::aggregate(t, s).unwrap());
        }
        certificates.push(certify(&empty.sign(1, vec![pay(payees[1], 5_000_000 * KURA)]), &signers));
        // The elders signed the first transfer only; every other certificate is refused by
        // every honest vault and by the client.
        let mut taken = 0;
        for (i, cert) in certificates.iter().enumerate() {
            let confirmed = client.confirm(cert).await;
            if confirmed.is_ok() {
                taken += 1;
                assert_eq!(i, 0, "certificate {i} was taken: {:?}", cert.transfer.transfer);
                continue;
            }
            let to = cert.transfer.transfer.outputs[0].to;
            for (vault, answer) in put_at(&client, &honest, &Record::Transfer(Entry { account: to, certificate: cert.clone() })).await {
                assert!(answer.is_err(), "vault {vault} took certificate {i} at the payee: {answer:?}");
            }
        }
        assert_eq!(taken, 1, "the elders' certificate of the first transfer is taken");
        // Later payments from the account find nothing left to spend.
        let onward = client.pay(&attacker, vec![pay(payees[2], 1)]).await;
        assert!(onward.is_err(), "the account spent twice: {onward:?}");
        let balances: Vec<i128> = {
            let mut b = Vec::new();
            for account in [payees[0], payees[1], payees[2], attacker.address(), empty.address(), faucet.address()] {
                b.push(client.balance(account).await.unwrap().balance);
            }
            b
        };
        assert_eq!(&balances[..5], &[i128::from(10 * KURA), 0, 0, 0, 0], "one payee paid, once");
        assert_eq!(balances.iter().sum::<i128>(), i128::from(GENESIS_SUPPLY), "the supply is conserved to the unit");
        client.close().await;
    });
}

/// Issue 19's pointer and inbox groups. Eight lying vaults with ids ground next to a pointer,
/// and eight next to a recipient's inbox, are the closest vaults to each: they take every write
/// and keep nothing, and answer every read with nothing. They are newcomers: the owner's newest
/// version stays visible and every message is delivered, now and after the vaults have
/// compared their replicas.
#[test]
fn aimed_newcomers_hide_no_pointer_version_and_drop_no_message() {
    use kura_client::messages::{Mailbox, DEFAULT_TTL};
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let homes = tempfile::tempdir().unwrap();
    let honest = common::running_ids(&net);
    let owner = kura_client::UserKey::generate();
    let (alice_home, bob_home) = (homes.path().join("alice"), homes.path().join("bob"));
    let (alice, bob) = (kura_client::Account::generate(), kura_client::Account::generate());
    alice.install(&alice_home).unwrap();
    bob.install(&bob_home).unwrap();
    let (first, second) = (Address::random(), Address::random());
    let pointer = rt.block_on(async {
        let client = net.connect().await;
        let p = client.create_pointer(&owner, "aimed", Some(first)).await.unwrap();
        client.close().await;
        p.address()
    });
    let inbox = bob.id().inbox();
    let closest = |a: Address| kura_node::close_group(&a, honest.iter().copied(), 1)[0];
    let liars: Vec<Liar> = (0..8)
        .map(|_| Liar::closer_than(&pointer, &closest(pointer)))
        .chain((0..8).map(|_| Liar::closer_than(&inbox, &closest(inbox))))
        .collect();
    let liar_ids: Vec<PeerId> = liars.iter().map(|l| l.binding.peer).collect();
    let _liars = Liars::spawn(&net, &liars, Arc::new(Vec::new()), 0);
    rt.block_on(async {
        let client = net.connect().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        for address in [pointer, inbox] {
            loop {
                let group = client.closest_vaults(address, usize::from(REPLICAS)).await.unwrap();
                if group.iter().all(|p| liar_ids.contains(p)) {
                    break;
                }
                assert!(Instant::now() < deadline, "the liars never became the closest vaults to {address}: {group:?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        client.forget_group(&pointer);
        client.forget_group(&inbox);
        // Shown if the test fails: where the client looks for the pointer.
        let (set, elders) = client.replica_set(pointer).await.unwrap();
        eprintln!("replica set of {pointer}: {} vaults, elders {elders:?}", set.len());
        client.set_pointer(&owner, pointer, second).await.expect("the new version is stored at the pointer's elders");
        let mut mailbox = Mailbox::open(&alice_home).unwrap();
        for i in 0..3 {
            mailbox.send(&client, bob.id(), format!("message {i}"), vec![], DEFAULT_TTL).await.expect("delivered to the inbox's elders");
        }
        drop(mailbox);
        let seen = client.get_pointer(pointer).await.unwrap().expect("the pointer");
        assert_eq!((seen.version, seen.target), (2, second), "the newest version is visible");
        client.close().await;
    });
    // The vaults compare their replicas (the repair sweep) with the liars in every group;
    // the elders keep theirs.
    std::thread::sleep(Duration::from_secs(25));
    rt.block_on(async {
        let client = net.connect().await;
        let seen = client.get_pointer(pointer).await.unwrap().expect("the pointer");
        assert_eq!((seen.version, seen.target), (2, second), "the newest version is still visible");
        let mut mailbox = Mailbox::open(&bob_home).unwrap();
        let got = mailbox.sync(&client).await.unwrap();
        let texts: Vec<&str> = got.new.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["message 0", "message 1", "message 2"], "every message, once, in order");
        client.close().await;
    });
}
