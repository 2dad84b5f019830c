//! The reward ledger on real vault processes (10-vault testnets): payments move exact
//! amounts; forged, zero, overflowing and unfunded transfers, certificates with too few or
//! wrong signers, and replayed certificates are refused by every vault and change nothing;
//! two conflicting transfers at one nonce are never both certified (50 rounds); a replica
//! that answers with a bad share does not stop a payment; and 1,000
//! random transfers among 20 accounts while 3 vaults stop and 3 join conserve the supply,
//! every account's replicas agreeing on its balance.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kura_client::wallet::agreeing;
use kura_client::{ClientError, Wallet};
use kura_node::ledger::{
    quorum, Binding, Certificate, Entry, LedgerError, Output, SignedTransfer, WalletKey,
};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, NodeError, Record};
use kura_testnet::GENESIS_SUPPLY;
use rand::{Rng, SeedableRng};

mod common;
use common::{ask_signatures, refusal, rt, Net};

/// The quorum of a committee on the 10-vault networks these tests start (all ten elders).
const Q10: usize = quorum(10);

fn pay(to: Address, amount: u64) -> Output {
    Output { to, amount, memo: [0; 32] }
}

fn wallet_in(dir: &std::path::Path) -> Wallet {
    Wallet::open(dir, WalletKey::random()).unwrap()
}

/// Sends `record` to every vault of its account's group; returns their answers.
async fn put_everywhere(client: &kura_client::Client, record: Record) -> Vec<Result<Response, NodeError>> {
    let (group, _) = client.committee(record.key().address).await.unwrap();
    let puts = group.iter().map(|&v| client.node().request(v, Request::PutRecord(record.clone())));
    futures::future::join_all(puts).await
}

/// Every running vault's view of `account`: (balance, nonce) per vault of its current group.
async fn replica_views(client: &kura_client::Client, account: Address) -> Vec<(i128, u64)> {
    // The account's replicas are its committee of elders (newcomers hold none of it).
    let (group, _) = client.committee(account).await.unwrap();
    let asks = group.iter().map(|&v| client.node().request(v, Request::Account(account)));
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|a| match a {
            Ok(Response::Account(v)) => Some((v.balance, v.nonce)),
            _ => None,
        })
        .collect()
}

/// The most replicas of the current group that agree on one (balance, nonce), and it.
async fn agreement(client: &kura_client::Client, account: Address) -> (usize, (i128, u64)) {
    let mut votes: HashMap<(i128, u64), usize> = HashMap::new();
    for v in replica_views(client, account).await {
        *votes.entry(v).or_default() += 1;
    }
    votes.into_iter().map(|(v, n)| (n, v)).max().unwrap_or((0, (0, 0)))
}

#[test]
fn payments_move_exact_amounts_and_bad_transfers_change_nothing() {
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let dirs = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let client = net.connect().await;
        let faucet = net.faucet();
        let alice = wallet_in(&dirs.path().join("alice"));
        let bob = wallet_in(&dirs.path().join("bob"));
        client.pay(&faucet, vec![pay(alice.address(), 1000)]).await.unwrap();
        client.pay(&alice, vec![pay(bob.address(), 300)]).await.unwrap();
        let cert = client.pay(&alice, vec![pay(bob.address(), 1), pay(faucet.address(), 2)]).await.unwrap();
        let (c, addrs) = (&client, [alice.address(), bob.address(), faucet.address()]);
        let expect = |a: i128, b: i128, g: i128| async move {
            for (who, address, want) in [("alice", addrs[0], a), ("bob", addrs[1], b), ("faucet", addrs[2], g)] {
                assert_eq!(c.balance(address).await.unwrap().balance, want, "{who}");
            }
        };
        let genesis = i128::from(GENESIS_SUPPLY);
        expect(697, 301, genesis - 1000 + 2).await;
        let state = client.balance(alice.address()).await.unwrap();
        assert_eq!(state.nonce, 2);
        assert!(state.agreeing >= Q10, "every replica that answered agrees: {state:?}");

        let (group, _) = client.committee(alice.address()).await.unwrap();
        let sign_everywhere = |signed: SignedTransfer| {
            let group = group.clone();
            let client = client.clone();
            async move {
                let asks = group.iter().map(|&v| client.node().request(v, Request::Sign(signed.clone())));
                futures::future::join_all(asks).await
            }
        };

        // A transfer out of Alice's account signed by Bob's key.
        let mut forged = bob.key().sign(3, vec![pay(bob.address(), 500)]);
        forged.transfer.from = alice.key().public_key();
        for a in sign_everywhere(forged).await {
            assert_eq!(refusal(&a), Some(LedgerError::BadOwnerSignature), "{a:?}");
        }
        // Zero and overflowing amounts: the client refuses to send them, and so does every
        // vault that is sent them anyway.
        for (outputs, why) in [
            (vec![pay(bob.address(), 0)], LedgerError::ZeroAmount),
            (vec![pay(bob.address(), u64::MAX), pay(bob.address(), 2)], LedgerError::Overflow),
        ] {
            assert!(matches!(client.pay(&alice, outputs.clone()).await, Err(ClientError::Ledger(ref e)) if *e == why));
            for a in sign_everywhere(alice.key().sign(3, outputs)).await {
                assert_eq!(refusal(&a), Some(why.clone()), "{a:?}");
            }
        }
        // More than the balance.
        match client.pay(&alice, vec![pay(bob.address(), 698)]).await {
            Err(ClientError::NotCertified { signed: 0, detail, .. }) => {
                assert!(detail.contains("insufficient funds: balance 697"), "{detail}")
            }
            other => panic!("an unfunded transfer: {other:?}"),
        }
        // A nonce already spent.
        for a in sign_everywhere(alice.key().sign(2, vec![pay(bob.address(), 1)])).await {
            assert!(matches!(refusal(&a), Some(LedgerError::WrongNonce { expected: 3, got: 2 })), "{a:?}");
        }
        // A replayed certificate: every replica of both accounts already applied it.
        for account in [alice.address(), bob.address()] {
            let record = Record::Transfer(Entry { account, certificate: cert.clone() });
            for a in put_everywhere(&client, record).await {
                assert!(matches!(refusal(&a), Some(LedgerError::AlreadyApplied(_))), "{a:?}");
            }
        }
        // A certificate of real signatures, one short of the quorum (six of the ten elders).
        let t = alice.key().sign(3, vec![pay(bob.address(), 600)]);
        let few = ask_signatures(&client, &group[..Q10 - 1], &t).await;
        assert_eq!(few.len(), Q10 - 1);
        let short = Certificate::aggregate(t.clone(), few).unwrap();
        for account in [alice.address(), bob.address()] {
            for a in put_everywhere(&client, Record::Transfer(Entry { account, certificate: short.clone() })).await {
                assert_eq!(refusal(&a), Some(LedgerError::TooFewSigners { got: Q10 - 1, need: Q10 }), "{a:?}");
            }
        }
        // A quorum of well-formed signers that are not the account's replicas (keys of the
        // attacker's own, bound to peer ids of its own).
        let strangers: Vec<(Binding, Vec<u8>)> = (0..Q10)
            .map(|_| {
                let key = WalletKey::random();
                (key.bind(&kura_node::Keypair::generate_ed25519()), key.sign_replica(&t))
            })
            .collect();
        let fake = Certificate::aggregate(t.clone(), strangers).unwrap();
        fake.verify(&mut Default::default()).expect("well formed: only who signed is wrong");
        for a in put_everywhere(&client, Record::Transfer(Entry { account: bob.address(), certificate: fake })).await {
            assert!(matches!(refusal(&a), Some(LedgerError::UnknownSigners(_))), "{a:?}");
        }
        // The six replicas that signed promised nonce 3 to that transfer; another transfer
        // at nonce 3 is refused by them with it. (Not sent to the other four: an owner who
        // gets two transfers at one nonce signed by replicas that add up to more than
        // `n − q` locks the account for good, as in FastPay.)
        let other = alice.key().sign(3, vec![pay(bob.address(), 5)]);
        let asks = group[..Q10 - 1].iter().map(|&v| client.node().request(v, Request::Sign(other.clone())));
        let answers = futures::future::join_all(asks).await;
        let conflicts = answers.iter().filter(|a| matches!(refusal(a), Some(LedgerError::Conflict { nonce: 3, .. }))).count();
        assert_eq!(conflicts, Q10 - 1, "{answers:?}");
        expect(697, 301, genesis - 1000 + 2).await;

        // Alice's wallet finishes the promised transfer before its own next one.
        client.pay(&alice, vec![pay(bob.address(), 7)]).await.unwrap();
        expect(697 - 600 - 7, 301 + 600 + 7, genesis - 1000 + 2).await;
        client.close().await;
    });
}

/// A replica that answers every request to sign at once with a share that does not verify
/// (its key is bound and proven; the signature is of another transfer), and claims to store
/// whatever it is sent. Its share is among the first a client gets, so the client's first
/// aggregate fails: it must find the bad share and wait for the rest of the group.
#[test]
fn a_replica_with_a_bad_share_does_not_stop_a_payment() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let dirs = tempfile::tempdir().unwrap();
    let peers = kura_client::peers::read_peers_file(&net.peers_file()).unwrap();
    let liar_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let keypair = kura_node::puzzle::generate(kura_testnet::process::TESTNET_ID_DIFFICULTY);
    let binding = WalletKey::random().bind(&keypair);
    let liar_key = WalletKey::random();
    // An elder, by the network's genesis grant: it sits in committees, and is asked to sign.
    let genesis = net.faucet().key().clone();
    let age = kura_node::age::AgeProof::genesis(&genesis, keypair.public().to_peer_id(), kura_node::age::ELDER_AGE);
    let (liar, mut inbound) =
        liar_rt.block_on(kura_node::spawn(kura_node::NodeConfig::vault(keypair).with_bootstrap(peers))).unwrap();
    let lies = Arc::new(AtomicU64::new(0));
    {
        let (lies, liar) = (lies.clone(), liar.clone());
        liar_rt.spawn(async move {
            while let Some(req) = inbound.recv().await {
                let (_, request, responder) = req.into_parts();
                let response = match request {
                    Request::Ping => Response::Pong,
                    Request::Age => Response::Age { proof: Some(age.clone()), genesis: Some(genesis.public_key()) },
                    Request::Sign(_) => {
                        lies.fetch_add(1, Ordering::Relaxed);
                        let signature = liar_key.sign_replica(&WalletKey::random().sign(1, vec![pay(Address::random(), 7)]));
                        Response::Signed(kura_node::ledger::ReplicaSignature { binding: binding.clone(), signature })
                    }
                    Request::PutRecord(_) => Response::Stored,
                    Request::FindClosest { target, n } => match liar.closest_vaults(target, usize::from(n)).await {
                        Ok(found) => Response::Closest(found),
                        Err(e) => Response::Error(RemoteError::Internal(e.to_string())),
                    },
                    _ => Response::Error(RemoteError::Invalid("not served".into())),
                };
                responder.respond(response);
            }
        });
    }
    rt.block_on(async {
        let client = net.connect().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client.closest_vaults(Address::random(), 20).await.unwrap().contains(&liar.peer_id()) {
            assert!(Instant::now() < deadline, "the liar never joined");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A payer whose group has the liar in it.
        let payer = loop {
            let w = wallet_in(&dirs.path().join(format!("payer-{}", rand::random::<u32>())));
            if client.committee(w.address()).await.unwrap().0.contains(&liar.peer_id()) {
                break w;
            }
        };
        let payee = WalletKey::random().address();
        client.pay(&net.faucet(), vec![pay(payer.address(), 100)]).await.unwrap();
        let before = lies.load(Ordering::Relaxed);
        for i in 1..=5 {
            client.pay(&payer, vec![pay(payee, i)]).await.expect("the payment routes around the bad share");
        }
        let asked = lies.load(Ordering::Relaxed) - before;
        assert!(asked >= 5, "the liar was asked to sign {asked} times, not each time");
        assert_eq!(client.balance(payer.address()).await.unwrap().balance, 100 - 15);
        assert_eq!(client.balance(payee).await.unwrap().balance, 15);
        let (agreeing, view) = agreement(&client, payer.address()).await;
        assert!(agreeing >= Q10, "only {agreeing} replicas agree on {view:?}");
        client.close().await;
    });
    liar_rt.block_on(liar.shutdown());
}

#[test]
fn two_transfers_at_one_nonce_are_never_both_certified() {
    let net = Net::up(10, 1 << 30);
    let rt = rt();
    let dirs = tempfile::tempdir().unwrap();
    const ROUNDS: usize = 50;
    const FUNDS: u64 = 1000;
    rt.block_on(async {
        let client = net.connect().await;
        let spenders: Vec<Wallet> = (0..ROUNDS).map(|i| wallet_in(&dirs.path().join(format!("s{i}")))).collect();
        // One transfer of fifty outputs funds them all.
        client.pay(&net.faucet(), spenders.iter().map(|w| pay(w.address(), FUNDS)).collect()).await.unwrap();
        let (x, y) = (WalletKey::random().address(), WalletKey::random().address());
        let mut certified_rounds = 0;
        for (round, w) in spenders.iter().enumerate() {
            let (group, _) = client.committee(w.address()).await.unwrap();
            let half = group.len() / 2;
            // Both spend the whole balance, so two certificates would leave it negative.
            let t1 = w.key().sign(1, vec![pay(x, FUNDS)]);
            let t2 = w.key().sign(1, vec![pay(y, FUNDS)]);
            // Even rounds: each to one half of the replicas. Odd rounds: both to every
            // replica at the same moment, racing.
            let (to1, to2) = match round % 2 {
                0 => (group[..half].to_vec(), group[half..].to_vec()),
                _ => (group.clone(), group.clone()),
            };
            let (s1, s2) = tokio::join!(ask_signatures(&client, &to1, &t1), ask_signatures(&client, &to2, &t2));
            let mut certs = Vec::new();
            for (t, shares) in [(&t1, s1), (&t2, s2)] {
                if shares.len() >= Q10 {
                    let c = Certificate::aggregate(t.clone(), shares).unwrap();
                    c.verify(&mut Default::default()).unwrap();
                    certs.push(c);
                }
            }
            assert!(certs.len() <= 1, "round {round}: both transfers certified");
            if let Some(c) = certs.pop() {
                certified_rounds += 1;
                client.confirm(&c).await.unwrap();
            }
            let b = client.balance(w.address()).await.unwrap();
            assert!(b.balance == 0 || b.balance == i128::from(FUNDS), "round {round}: balance {}", b.balance);
            // Asked again, all together, each replica still refuses the transfer it did not
            // promise: neither can be certified later.
            let (s1, s2) = tokio::join!(ask_signatures(&client, &group, &t1), ask_signatures(&client, &group, &t2));
            assert!(s1.len() < Q10 || s2.len() < Q10, "round {round}: {} and {} signatures", s1.len(), s2.len());
        }
        let paid = client.balance(x).await.map(|b| b.balance).unwrap_or(0) + client.balance(y).await.map(|b| b.balance).unwrap_or(0);
        assert_eq!(paid, i128::from(FUNDS) * certified_rounds, "only certified transfers were paid");
        eprintln!("{ROUNDS} rounds: {certified_rounds} certified one transfer, none both");
        client.close().await;
    });
}

#[test]
fn random_transfers_through_churn_conserve_the_supply() {
    // Two-second age epochs: the vaults added midway are relocated (new ids, in the same
    // processes) again and again while the transfers run, and may age into elders.
    let net = Net::up_with(10, 1 << 30, &["--age-epoch", "2"]);
    let rt = rt();
    let dirs = tempfile::tempdir().unwrap();
    const ACCOUNTS: usize = 20;
    const TRANSFERS: usize = 1000;
    rt.block_on(async {
        let client = net.connect().await;
        let faucet = net.faucet();
        let wallets: Vec<Wallet> = (0..ACCOUNTS).map(|i| wallet_in(&dirs.path().join(format!("w{i}")))).collect();
        let addresses: Vec<Address> = wallets.iter().map(|w| w.address()).collect();
        client.pay(&faucet, addresses.iter().map(|a| pay(*a, 1_000_000)).collect()).await.unwrap();
        let started = Instant::now();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let retries = std::sync::atomic::AtomicUsize::new(0);
        let churn = async {
            let wait_for = |n: usize| {
                let done = &done;
                async move {
                    while done.load(std::sync::atomic::Ordering::Relaxed) < n {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            wait_for(TRANSFERS / 4).await;
            // Two of the ten elders go: the vaults added later are newcomers, which hold and
            // earn but do not vote until relocation has aged them (about a minute here), so
            // eight elders stay for committees that certify with seven meanwhile.
            let victims = net.net.pick_running(2).unwrap();
            net.net.kill(&victims, true).unwrap();
            eprintln!("stopped vaults {victims:?} after {} transfers", done.load(std::sync::atomic::Ordering::Relaxed));
            wait_for(TRANSFERS / 2).await;
            let added = net.net.add(3, 1 << 30).unwrap();
            eprintln!("added vaults {added:?} after {} transfers", done.load(std::sync::atomic::Ordering::Relaxed));
        };
        let payers = wallets.iter().enumerate().map(|(i, w)| {
            let client = client.clone();
            let addresses = &addresses;
            let (done, retries) = (&done, &retries);
            async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
                for _ in 0..TRANSFERS / ACCOUNTS {
                    let mut to = addresses[rng.gen_range(0..ACCOUNTS)];
                    while to == w.address() {
                        to = addresses[rng.gen_range(0..ACCOUNTS)];
                    }
                    let amount = rng.gen_range(1..=1000);
                    let mut attempt = 0;
                    loop {
                        match client.pay(w, vec![pay(to, amount)]).await {
                            Ok(_) => break,
                            Err(e) => {
                                attempt += 1;
                                if retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 12 {
                                    eprintln!("retrying a transfer: {e}");
                                }
                                assert!(attempt < 20, "a transfer failed 20 times: {e}");
                                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                            }
                        }
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        tokio::join!(futures::future::join_all(payers), churn);
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{TRANSFERS} transfers in {secs:.1} s ({:.0}/s) with {} retries",
            TRANSFERS as f64 / secs,
            retries.load(std::sync::atomic::Ordering::Relaxed)
        );

        // Every account's current group catches up; then a quorum agrees, and the balances
        // add up to the supply.
        let mut all = addresses.clone();
        all.push(faucet.address());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut total = 0i128;
            let mut short = Vec::new();
            for a in &all {
                let (agree, (balance, _)) = agreement(&client, *a).await;
                if agree < Q10 {
                    short.push(format!("{a}: {:?}", replica_views(&client, *a).await));
                }
                assert!(balance >= 0, "{a}: negative balance {balance}");
                total += balance;
            }
            if short.is_empty() {
                assert_eq!(total, i128::from(GENESIS_SUPPLY), "the supply is conserved");
                break;
            }
            assert!(Instant::now() < deadline, "replicas never agreed: {short:?}");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        // And what the client believes (f + 1 agreeing) is the same.
        let mut total = 0i128;
        for a in &all {
            let b = client.balance(*a).await.unwrap();
            assert!(b.agreeing >= agreeing(10));
            total += b.balance;
        }
        assert_eq!(total, i128::from(GENESIS_SUPPLY));
        client.close().await;
    });
}

#[test]
fn storage_is_paid_exactly_once_and_unpaid_shards_are_refused_or_dropped() {
    use std::sync::Arc;
    let net = Net::up_with(10, 1 << 30, &["--paid-storage", "--payment-grace", "6"]);
    let rt = rt();
    let dirs = tempfile::tempdir().unwrap();
    let file = dirs.path().join("file");
    let content: Vec<u8> = (0..3 << 20).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&file, &content).unwrap();
    let key = kura_client::UserKey::generate();
    let bar = indicatif::ProgressBar::hidden();
    rt.block_on(async {
        let peers = kura_client::peers::read_peers_file(&net.peers_file()).unwrap();
        // Without a wallet: every vault refuses the shards.
        let plain = net.connect().await;
        let err = plain.put_path(&file, kura_client::Visibility::Private, &key, &bar).await.unwrap_err();
        assert!(err.to_string().contains("stores only paid shards"), "{err}");

        let wallet = Arc::new(wallet_in(&dirs.path().join("payer")));
        let faucet = net.faucet();
        let config = kura_client::ClientConfig {
            wallet: Some(wallet.clone()),
            faucet: Some(Arc::new(net.faucet())),
            ..Default::default()
        };
        // Above --max-cost: nothing is stored, nothing paid.
        let stingy = kura_client::Client::connect_with(peers.clone(), kura_client::ClientConfig { max_cost: Some(10), ..config.clone() })
            .await
            .unwrap();
        assert!(matches!(
            stingy.put_path(&file, kura_client::Visibility::Private, &key, &bar).await,
            Err(ClientError::TooExpensive { max: 10, .. })
        ));
        assert_eq!(stingy.storage_paid(), 0);

        let client = kura_client::Client::connect_with(peers, config).await.unwrap();
        let vaults = common::running_ids(&net);
        let mut accounts = HashMap::new();
        for v in &vaults {
            let s = client.vault_status(*v).await.unwrap();
            accounts.insert(*v, (s.account, s.earned));
        }
        let mut before = HashMap::new();
        for (a, _) in accounts.values() {
            before.insert(*a, client.balance(*a).await.unwrap().balance);
        }
        let estimate = client.estimate(content.len() as u64).await.unwrap();
        let address = client.put_path(&file, kura_client::Visibility::Private, &key, &bar).await.unwrap();
        let paid = client.storage_paid();
        assert!(paid > 0 && paid <= estimate.cost, "paid {paid}, estimated at most {}", estimate.cost);
        // The payer holds what the faucet gave it, less exactly what was paid.
        let drawn = i128::from(GENESIS_SUPPLY) - client.balance(faucet.address()).await.unwrap().balance;
        assert_eq!(client.balance(wallet.address()).await.unwrap().balance, drawn - i128::from(paid));
        // The holders' balances rose by exactly that, each by what it says it earned.
        let mut gained = 0i128;
        for v in &vaults {
            let (account, earned_before) = accounts[v];
            let delta = client.balance(account).await.unwrap().balance - before[&account];
            let earned = client.vault_status(*v).await.unwrap().earned - earned_before;
            assert_eq!(delta, i128::from(earned), "vault {v}: ledger and status agree");
            gained += delta;
        }
        assert_eq!(gained, i128::from(paid));
        let out = dirs.path().join("back");
        client.get_path(address, &out, &key, &bar).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), content);

        // Stored again: its chunks are held and paid for already, so only the new root record
        // (sealed afresh) is owed.
        client.put_path(&file, kura_client::Visibility::Private, &key, &bar).await.unwrap();
        let again = client.storage_paid() - paid;
        assert!(again < paid / 10, "paid {again} again for {paid} worth of stored chunks");

        // A shard stored with a quote and never paid is dropped after the grace period; a
        // payment whose memo does not name it is refused.
        let shards = kura_node::erasure::Coding::default().encode(b"never paid for").unwrap();
        let chunk = shards[0].header.address();
        let group = client.closest_vaults(chunk, 8).await.unwrap();
        let holder = group[0];
        let quote = client.quote_of(holder).await.unwrap();
        let owed = client.node().request(holder, Request::StoreShard { shard: shards[0].clone(), quote: quote.clone() }).await;
        assert!(matches!(owed, Ok(Response::Owed(n)) if n > 0), "{owed:?}");
        let cheat = client.pay(&wallet, vec![Output { to: quote.account, amount: 1, memo: [7; 32] }]).await.unwrap();
        let refused = client.node().request(holder, Request::Paid { certificate: cheat, shards: vec![shards[0].key()] }).await;
        assert!(matches!(refusal(&refused), Some(LedgerError::Underpaid { paid: 0, .. })), "{refused:?}");
        let held = |client: &kura_client::Client| {
            let client = client.clone();
            async move {
                match client.node().request(holder, Request::ShardIndices { chunk }).await {
                    Ok(Response::Indices(i)) => i,
                    other => panic!("{other:?}"),
                }
            }
        };
        assert_eq!(held(&client).await, vec![0]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !held(&client).await.is_empty() {
            assert!(Instant::now() < deadline, "an unpaid shard was kept past its grace period");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        client.close().await;
    });
}

/// A network smaller than a committee: five vaults, paid storage on. Its committees are all
/// five elders and certify with four signatures (issue 19; before, a payment needed six of
/// five and `kura put` failed), and a paid put stores and reads back.
#[test]
fn a_five_vault_network_certifies_payments_and_stores_paid_files() {
    use std::sync::Arc;
    let net = Net::up_with(5, 1 << 30, &["--paid-storage"]);
    let rt = rt();
    let dirs = tempfile::tempdir().unwrap();
    let file = dirs.path().join("file");
    let content: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&file, &content).unwrap();
    let key = kura_client::UserKey::generate();
    let bar = indicatif::ProgressBar::hidden();
    rt.block_on(async {
        let peers = kura_client::peers::read_peers_file(&net.peers_file()).unwrap();
        let wallet = Arc::new(wallet_in(&dirs.path().join("payer")));
        let config = kura_client::ClientConfig { wallet: Some(wallet.clone()), faucet: Some(Arc::new(net.faucet())), ..Default::default() };
        let client = kura_client::Client::connect_with(peers, config).await.unwrap();
        let (committee, size) = client.committee(wallet.address()).await.unwrap();
        assert_eq!((committee.len(), size), (5, 5), "every vault is an elder of every committee");
        let address = client.put_path(&file, kura_client::Visibility::Private, &key, &bar).await.unwrap();
        assert!(client.storage_paid() > 0, "the put was paid for");
        let back = dirs.path().join("back");
        client.get_path(address, &back, &key, &bar).await.unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), content);
        let payee = WalletKey::random().address();
        client.pay(&net.faucet(), vec![pay(payee, 7)]).await.unwrap();
        assert_eq!(client.balance(payee).await.unwrap().balance, 7);
        client.close().await;
    });
}
