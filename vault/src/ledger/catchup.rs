//! Catching up: what a replica holds of an account (views, id pages, history), and
//! bringing an account's group in step ([`plan_entries`] decides who fetches, who pushes,
//! who drops).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use kura_node::ledger::Entry;
use kura_node::wire::{RemoteError, Request, Response, HISTORY_PAGE, PAGE};
use kura_node::{Address, NodeError, PeerId, Record, RecordKey, RecordKind};
use tracing::debug;

use super::*;

impl Ledger {

    /// Counts a stored entry in its account's summary, and has the account's group compared
    /// a little later: a member that missed this transfer (its payer stopped at a quorum)
    /// gets it then, not at the next full sweep.
    pub(crate) fn entry_stored(&self, entry: &Entry) {
        self.state.stats.applied.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = lock(&self.state.summaries).get_mut(&entry.account) {
            let _ = s.apply(entry);
        }
        let account = entry.account;
        if claim(&self.state.scheduled, MAX_SCHEDULED, account) {
            let ledger = self.clone();
            self.ctx.spawn_background(async move {
                // One comparison per account per period, however many transfers it saw.
                tokio::time::sleep(COMPARE_AFTER).await;
                lock(&ledger.state.scheduled).remove(&account);
                if let Err(e) = ledger.repair_account(account).await {
                    debug!(%account, error = %e, "comparing an account with its group failed");
                }
            });
        }
    }

    /// Forgets the summary of an account one of whose entries left the store.
    pub(crate) fn entry_gone(&self, key: &RecordKey) {
        if key.kind == RecordKind::Transfer {
            self.state.forget(&key.address);
        }
    }

    /// What this vault holds of an account.
    pub(crate) async fn account_view(&self, account: Address) -> Result<Response, RemoteError> {
        // In turn with stores at the account: a summary built from disk while an entry is being
        // written could miss it and be kept.
        let s = {
            let _turn = self.state.turn(&account).await;
            self.summary(account).await?
        };
        Ok(Response::Account(AccountView {
            account,
            balance: s.balance(),
            genesis: s.genesis,
            nonce: s.nonce(),
            entries: s.entries,
            behind: s.has_gap(),
            pending: self.promise(&account)?.filter(|p| p.transfer.nonce > s.nonce()),
        }))
    }

    pub(crate) fn ids_after(&self, account: &Address, after: Option<[u8; 32]>) -> Vec<RecordKey> {
        let mut keys: Vec<RecordKey> = self
            .ctx
            .store()
            .keys_at(RecordKind::Transfer, account)
            .into_iter()
            .filter(|k| after.is_none_or(|a| k.id > a))
            .collect();
        keys.sort();
        keys
    }

    /// A page of the ids of the transfers held at an account.
    pub(crate) fn entry_ids(&self, account: Address, after: Option<[u8; 32]>) -> Response {
        let keys = self.ids_after(&account, after);
        Response::Ids { more: keys.len() > PAGE, ids: keys.into_iter().take(PAGE).map(|k| k.id).collect() }
    }

    /// A page of the transfers held at an account.
    pub(crate) async fn history(&self, account: Address, after: Option<[u8; 32]>) -> Result<Response, RemoteError> {
        let keys = self.ids_after(&account, after);
        let more = keys.len() > HISTORY_PAGE;
        let records = self.records.read_records(keys.into_iter().take(HISTORY_PAGE).collect()).await.map_err(internal)?;
        let entries = records
            .into_iter()
            .filter_map(|r| match r {
                Record::Transfer(e) => Some(e),
                _ => None,
            })
            .collect();
        Ok(Response::Entries { entries, more })
    }

    /// Every id a peer holds at an account (all pages), or `None` if it did not answer.
    pub(crate) async fn peer_ids(&self, peer: PeerId, account: Address) -> Option<HashSet<[u8; 32]>> {
        let mut ids = HashSet::new();
        let mut after = None;
        loop {
            match self.ctx.ask(peer, Request::EntryIds { account, after }).await {
                Ok(Response::Ids { ids: page, more }) => {
                    after = page.last().copied();
                    ids.extend(page);
                    if !more || after.is_none() {
                        return Some(ids);
                    }
                }
                _ => return None,
            }
        }
    }

    /// Brings an account's group in step: lists what each member holds, fetches the entries
    /// this vault lacks (checked as any other), pushes those a member lacks when this vault
    /// is the one chosen to, and drops its own copies once it is out of the group and the
    /// group holds them.
    pub(crate) async fn repair_account(&self, account: Address) -> Result<(), NodeError> {
        // One comparison of an account at a time: catch-up, the comparison after a store and
        // the repair worker's sweep would otherwise fetch the same entries side by side.
        if !claim(&self.state.comparing, MAX_COMPARING, account) {
            return Ok(());
        }
        let _done = Unclaim(&self.state.comparing, account);
        let started = std::time::Instant::now();
        let me = self.ctx.node().peer_id();
        let n = kura_node::age::VOTERS;
        // The group is the account's elders: a newcomer neither holds its entries nor is asked.
        let view = self.ctx.node().local_closest(account, WIDE + self.ctx.config().spare_candidates).await?;
        let candidates = self.ctx.elders_among(view).await;
        let asked = futures::future::join_all(
            candidates.iter().filter(|p| **p != me).map(|&p| async move { (p, self.peer_ids(p, account).await) }),
        )
        .await;
        let mut held: HashMap<PeerId, HashSet<[u8; 32]>> = asked.into_iter().filter_map(|(p, ids)| Some((p, ids?))).collect();
        held.insert(me, self.ids_after(&account, None).into_iter().map(|k| k.id).collect());
        let group: Vec<PeerId> = candidates.iter().filter(|p| held.contains_key(p)).take(n).copied().collect();
        let mut wanted = Vec::new();
        for action in plan_entries(me, &account, &group, &held) {
            match action {
                EntryAction::Fetch { id, from } => {
                    if wanted.len() < FETCH_PER_ROUND {
                        wanted.push((RecordKey { kind: RecordKind::Transfer, address: account, id }, from));
                    }
                }
                EntryAction::Push { id, to } => {
                    let key = RecordKey { kind: RecordKind::Transfer, address: account, id };
                    let Ok(Some(record)) = self.records.read_record(key).await else { continue };
                    for peer in to {
                        match self.ctx.ask(peer, Request::PutRecord(record.clone())).await {
                            Ok(Response::Stored) => {
                                self.repair.stats().replicas_sent.fetch_add(1, Ordering::Relaxed);
                            }
                            other => debug!(%key, %peer, answer = ?other, "transfer not taken"),
                        }
                    }
                }
                EntryAction::Drop { id } => {
                    let key = RecordKey { kind: RecordKind::Transfer, address: account, id };
                    self.records.release(key).await;
                    self.repair.stats().handed_over.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let mut fetched = Vec::new();
        for batch in wanted.chunks(CHECKS_AT_ONCE) {
            let asks = batch.iter().map(|&(key, from)| async move { (key, self.ctx.ask(from, Request::GetRecord(key)).await) });
            for (key, answer) in futures::future::join_all(asks).await {
                if let Ok(Response::Record(Some(record))) = answer {
                    if record.validate_for(&key).is_ok() {
                        fetched.push(record);
                    }
                }
            }
        }
        // Each is admitted as a fresh store is, so order matters: credits before the debits
        // they pay for, debits by nonce.
        fetched.sort_by_key(|r| match r {
            Record::Transfer(e) => (e.is_debit(), e.certificate.transfer.transfer.nonce),
            _ => (true, u64::MAX),
        });
        // Their certificates are checked side by side first (each may ask the network: a
        // committee lookup, the group's vouchers); admitting them in order then finds each
        // checked already.
        let entries: Vec<&Entry> = fetched
            .iter()
            .filter_map(|r| match r {
                Record::Transfer(e) => Some(e),
                _ => None,
            })
            .collect();
        // The group's other members (with the margin a lagging table needs) that listed each.
        let near: Vec<&PeerId> = candidates.iter().filter(|p| **p != me && held.contains_key(p)).take(n + LAGGING).collect();
        let holders = |id: &[u8; 32]| -> Vec<PeerId> {
            near.iter().filter(|p| held.get(**p).is_some_and(|ids| ids.contains(id))).map(|p| **p).collect()
        };
        for batch in entries.chunks(CHECKS_AT_ONCE) {
            let mut checks = Vec::with_capacity(batch.len());
            for e in batch {
                checks.push(self.check_entry_held(e, Some(holders(&e.certificate.id()))));
            }
            futures::future::join_all(checks).await;
        }
        let (fetched_count, mut admitted) = (fetched.len(), 0);
        for record in fetched {
            let key = record.key();
            match self.records.put_record(record).await {
                Ok(()) => admitted += 1,
                Err(e) => debug!(%key, error = %e, "a fetched transfer was refused"),
            }
        }
        debug!(%account, group = group.len(), fetched = fetched_count, admitted, secs = started.elapsed().as_secs_f64(), "account compared with its group");
        Ok(())
    }
}

/// What a vault does for one entry of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryAction {
    /// Fetch entry `id` from `from` (it is checked on arrival).
    Fetch {
        /// The entry.
        id: [u8; 32],
        /// A holder.
        from: PeerId,
    },
    /// Send entry `id` to these group members.
    Push {
        /// The entry.
        id: [u8; 32],
        /// Members lacking it.
        to: Vec<PeerId>,
    },
    /// Delete the local copy: the group holds it.
    Drop {
        /// The entry.
        id: [u8; 32],
    },
}

/// The entry actions of `me` for an account whose `group` (closest first, those that answered)
/// holds `held` (every vault that answered, `me` included). A member in the group fetches
/// what others hold and it lacks; for each entry, one holder (the group member first by
/// rendezvous hashing, or any holder when no member has it) pushes it to members lacking it;
/// a holder outside the group drops an entry once every member that answered holds it.
pub fn plan_entries(
    me: PeerId,
    account: &Address,
    group: &[PeerId],
    held: &HashMap<PeerId, HashSet<[u8; 32]>>,
) -> Vec<EntryAction> {
    let empty = HashSet::new();
    let mine = held.get(&me).unwrap_or(&empty);
    let in_group = group.contains(&me);
    let mut all: Vec<[u8; 32]> = held.values().flatten().copied().collect::<HashSet<_>>().into_iter().collect();
    all.sort();
    let mut actions = Vec::new();
    for id in all {
        let holds = |p: &PeerId| held.get(p).is_some_and(|s| s.contains(&id));
        if !mine.contains(&id) {
            if in_group {
                if let Some(from) = group.iter().chain(held.keys()).find(|p| holds(p)) {
                    actions.push(EntryAction::Fetch { id, from: *from });
                }
            }
            continue;
        }
        let rank = |p: &&PeerId| crate::repair::rendezvous_id(account, &id, p);
        let members: Vec<&PeerId> = group.iter().filter(|p| holds(p)).collect();
        let coordinator = match members.is_empty() {
            true => held.keys().filter(|p| holds(p)).max_by_key(rank),
            false => members.into_iter().max_by_key(rank),
        };
        if coordinator == Some(&me) {
            let to: Vec<PeerId> = group.iter().filter(|p| **p != me && !holds(p)).copied().collect();
            if !to.is_empty() {
                actions.push(EntryAction::Push { id, to });
            }
        }
        if !in_group && !group.is_empty() && group.iter().all(|p| holds(p)) {
            actions.push(EntryAction::Drop { id });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn members_fetch_what_they_lack_one_holder_pushes_and_outsiders_drop_only_when_all_hold() {
        let account = Address::random();
        let g = peers(4);
        let outsider = PeerId::random();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut held: HashMap<PeerId, HashSet<[u8; 32]>> = HashMap::new();
        held.insert(g[0], [a, b].into());
        held.insert(g[1], [a].into());
        held.insert(g[2], HashSet::new());
        held.insert(g[3], [a].into());
        held.insert(outsider, [b].into());
        // g[2] fetches both; g[1] fetches b.
        let p2 = plan_entries(g[2], &account, &g, &held);
        assert_eq!(p2.iter().filter(|a| matches!(a, EntryAction::Fetch { .. })).count(), 2);
        assert!(plan_entries(g[1], &account, &g, &held).contains(&EntryAction::Fetch { id: b, from: g[0] }));
        // Exactly one vault pushes each entry to each member lacking it.
        for id in [a, b] {
            for m in &g {
                if held[m].contains(&id) {
                    continue;
                }
                let pushers = g
                    .iter()
                    .chain([&outsider])
                    .filter(|p| {
                        plan_entries(**p, &account, &g, &held)
                            .iter()
                            .any(|x| matches!(x, EntryAction::Push { id: i, to } if *i == id && to.contains(m)))
                    })
                    .count();
                assert_eq!(pushers, 1);
            }
        }
        // The outsider keeps b until every member holds it.
        assert!(!plan_entries(outsider, &account, &g, &held).contains(&EntryAction::Drop { id: b }));
        for m in &g {
            held.get_mut(m).unwrap().insert(b);
        }
        assert!(plan_entries(outsider, &account, &g, &held).contains(&EntryAction::Drop { id: b }));
        assert!(plan_entries(outsider, &account, &[], &held).is_empty(), "no group answered: keep");
    }
}
