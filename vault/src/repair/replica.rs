//! The repair and handover rules for replicated records (a whole copy on each of the `n`
//! closest vaults), as a pure function of one vault's view of one record.
//!
//! Each vault that answered says which version it holds, as a rank (higher is newer; the
//! ranks come from the records themselves, which the examining vault fetched and checked, so
//! a vault cannot claim a version it does not hold). The rules:
//! - A vault holding an older version than some other vault fetches the newest.
//! - Exactly one vault, the **coordinator**, pushes the newest version to every group member
//!   that answered without it: among the holders of the newest version, the group member that
//!   ranks first by rendezvous hashing, or, when no group member holds it, the holder outside
//!   the group that ranks first. Vaults with the same view pick the same coordinator, so each
//!   lacking member is sent the record once.
//! - A holder outside the group drops its copy only once every group member that answered
//!   holds a version at least as new, and at least one does: the last copy is never dropped.

use std::collections::HashMap;

use kura_node::{Address, PeerId};

/// What one vault sees of one replicated record.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    /// The record's address.
    pub address: Address,
    /// Its close group, closest first (may include this vault).
    pub group: Vec<PeerId>,
    /// The version each vault that answered holds, as a rank (higher is newer), or `None`
    /// when it holds none. Vaults that did not answer are absent.
    pub held: HashMap<PeerId, Option<usize>>,
}

/// What a vault should do for a replicated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaAction {
    /// Fetch the newest version from this vault and keep it.
    Fetch {
        /// A holder of the newest version.
        from: PeerId,
    },
    /// Send the newest version to these group members.
    Push {
        /// The members lacking it.
        to: Vec<PeerId>,
    },
    /// Delete the local copy: the group holds it.
    Drop,
}

/// The actions `me` should take for the record seen as `view`.
pub fn plan_replica(me: PeerId, view: &ReplicaView) -> Vec<ReplicaAction> {
    let rank = |p: &PeerId| view.held.get(p).copied().flatten();
    let Some(newest) = view.held.values().flatten().max().copied() else { return Vec::new() };
    let mine = rank(&me);
    let mut actions = Vec::new();
    if mine < Some(newest) {
        let from = view
            .group
            .iter()
            .chain(view.held.keys())
            .find(|p| rank(p) == Some(newest))
            .copied();
        if let (Some(from), true) = (from, mine.is_some() || view.group.contains(&me)) {
            actions.push(ReplicaAction::Fetch { from });
        }
    }
    let in_group = view.group.contains(&me);
    let holders_in_group: Vec<&PeerId> = view.group.iter().filter(|p| rank(p) == Some(newest)).collect();
    let coordinator = if holders_in_group.is_empty() {
        view.held.keys().filter(|p| rank(p) == Some(newest)).max_by_key(|p| rendezvous(&view.address, p))
    } else {
        holders_in_group.into_iter().max_by_key(|p| rendezvous(&view.address, p))
    };
    if coordinator == Some(&me) {
        let to: Vec<PeerId> = view
            .group
            .iter()
            .filter(|p| **p != me && view.held.contains_key(p) && rank(p) < Some(newest))
            .copied()
            .collect();
        if !to.is_empty() {
            actions.push(ReplicaAction::Push { to });
        }
    }
    if !in_group {
        if let Some(mine) = mine {
            let answered: Vec<&PeerId> = view.group.iter().filter(|p| view.held.contains_key(p)).collect();
            let all_hold = answered.iter().all(|p| rank(p) >= Some(mine));
            if all_hold && !answered.is_empty() {
                actions.push(ReplicaAction::Drop);
            }
        }
    }
    actions
}

/// A peer's rendezvous rank for an address: every vault computes the same for the same pair.
pub(crate) fn rendezvous(address: &Address, peer: &PeerId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&address.0);
    h.update(&peer.to_bytes());
    *h.finalize().as_bytes()
}

/// A peer's rendezvous rank for one record (`id`) at an address.
pub(crate) fn rendezvous_id(address: &Address, id: &[u8; 32], peer: &PeerId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&address.0);
    h.update(id);
    h.update(&peer.to_bytes());
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn view(group: &[PeerId], held: &[(PeerId, Option<usize>)]) -> ReplicaView {
        ReplicaView { address: Address::random(), group: group.to_vec(), held: held.iter().cloned().collect() }
    }

    #[test]
    fn a_full_group_at_one_version_needs_nothing() {
        let g = peers(8);
        let v = view(&g, &g.iter().map(|p| (*p, Some(3))).collect::<Vec<_>>());
        for p in &g {
            assert!(plan_replica(*p, &v).is_empty());
        }
    }

    #[test]
    fn one_coordinator_pushes_to_members_lacking_or_behind() {
        let g = peers(8);
        let mut held: Vec<(PeerId, Option<usize>)> = g.iter().map(|p| (*p, Some(2))).collect();
        held[5].1 = None;
        held[6].1 = Some(1);
        let v = view(&g, &held);
        let pushers: Vec<_> = g.iter().filter(|p| plan_replica(**p, &v).iter().any(|a| matches!(a, ReplicaAction::Push { .. }))).collect();
        assert_eq!(pushers.len(), 1);
        assert_eq!(plan_replica(*pushers[0], &v), vec![ReplicaAction::Push { to: vec![g[5], g[6]] }]);
        assert_eq!(plan_replica(g[6], &v), vec![ReplicaAction::Fetch { from: g[0] }]);
    }

    #[test]
    fn an_outside_holder_hands_over_then_drops() {
        let g = peers(8);
        let out = PeerId::random();
        let mut held: Vec<(PeerId, Option<usize>)> = g.iter().map(|p| (*p, None)).collect();
        held.push((out, Some(0)));
        let v = view(&g, &held);
        assert_eq!(plan_replica(out, &v), vec![ReplicaAction::Push { to: g.clone() }]);
        held.iter_mut().for_each(|h| h.1 = Some(0));
        assert_eq!(plan_replica(out, &view(&g, &held)), vec![ReplicaAction::Drop]);
    }

    proptest! {
        #[test]
        fn never_drops_the_last_copy_and_one_vault_pushes_to_each_lacking_member(
            members in 1usize..10, outside in 0usize..4, seed in any::<u64>()
        ) {
            let g = peers(members);
            let o = peers(outside);
            let mut held = HashMap::new();
            for (i, p) in g.iter().chain(&o).enumerate() {
                let r = (seed >> ((i * 3) % 60)) & 7;
                // 0: silent, 1-2: holds nothing, 3-7: a version.
                match r {
                    0 => {}
                    1 | 2 => { held.insert(*p, None); }
                    v => { held.insert(*p, Some(v as usize)); }
                }
            }
            let v = ReplicaView { address: Address::random(), group: g.clone(), held };
            let everyone: Vec<PeerId> = g.iter().chain(&o).copied().collect();
            let newest = v.held.values().flatten().max().copied();
            for p in &everyone {
                for a in plan_replica(*p, &v) {
                    if a == ReplicaAction::Drop {
                        let mine = v.held[p];
                        prop_assert!(everyone.iter().any(|q| q != p && v.held.get(q).copied().flatten() >= mine));
                    }
                }
            }
            // Each answering member behind the newest version is pushed to by exactly one vault.
            if newest.is_some() {
                for m in g.iter().filter(|m| v.held.get(*m).is_some_and(|h| *h < newest)) {
                    let senders = everyone.iter().filter(|p| plan_replica(**p, &v).iter().any(|a| matches!(a, ReplicaAction::Push { to } if to.contains(m)))).count();
                    prop_assert_eq!(senders, 1);
                }
            }
        }
    }
}
