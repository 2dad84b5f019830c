//! The repair and handover rules, as a pure function of one vault's view of one chunk.
//!
//! Every holder of a chunk runs [`plan`] on what it sees: the chunk's current close group (the
//! `n` closest vaults in its routing table), which shard indices each group member says it
//! holds, and its own indices. The rules are arranged so that holders with the same view do
//! not duplicate work:
//! - A holder **outside** the group hands each of its shards to a group member that holds
//!   nothing, and deletes its copy once that member has stored it; a shard the group already
//!   holds it simply drops (the group member's answer, checked by an audit, is the
//!   confirmation).
//! - A member holding a shard that a **closer** member also holds drops its copy, freeing its
//!   place for an index the group lacks. Views differ for a while (a vault penalized by some
//!   vaults and not others), and rebuilds made on one view can leave a group full of members
//!   but short of an index; without this rule it would stay short. The closest holder of an
//!   index never drops it for this reason, so one copy always stays.
//! - Inside the group, only the **coordinator** rebuilds: it finds the indices no answering
//!   vault holds, rebuilds them from any `k`, and places them on group members that hold
//!   nothing. The coordinator is the holder in the group that ranks first for this chunk by
//!   rendezvous hashing (BLAKE3 of chunk and peer id), not the closest one: the chunks a dead
//!   vault held all sit near it, so "closest" would hand nearly all of them to its nearest
//!   neighbour, and repair would run at one vault's pace.
//! - Repair **prefers aged holders** (see [`ChunkView::aged`]): a holder that has aged
//!   coordinates before any newcomer, and rebuilt or handed-over shards go to free members
//!   that have aged before free newcomers. A newcomer's id may have been ground next to the
//!   chunk; what it is given is what an attacker would drain.

use std::collections::{BTreeSet, HashMap, HashSet};

use kura_node::{Address, PeerId};

/// What one vault sees of one chunk.
#[derive(Debug, Clone)]
pub struct ChunkView {
    /// The chunk.
    pub chunk: Address,
    /// Total shards `k + m` of the chunk.
    pub n: usize,
    /// The chunk's current close group, closest first (may include this vault).
    pub group: Vec<PeerId>,
    /// Indices each vault that answered holds (this vault included).
    pub holdings: HashMap<PeerId, Vec<u8>>,
    /// Group members that have aged enough to hold data alone
    /// ([`kura_node::age::HOLD_AGE`]; every member on a network where ages do not count).
    pub aged: HashSet<PeerId>,
}

impl ChunkView {
    /// Holders in the group in the order they coordinate: aged before newcomers, then by
    /// rendezvous rank for this chunk.
    fn holders_in_line(&self) -> Vec<PeerId> {
        let held_by = |p: &PeerId| self.holdings.get(p).is_some_and(|h| !h.is_empty());
        let mut holders: Vec<PeerId> = self.group.iter().filter(|p| held_by(p)).copied().collect();
        holders.sort_by_key(|p| std::cmp::Reverse((self.aged.contains(p), rank(&self.chunk, p))));
        holders
    }

    /// The holder that coordinates repair of this chunk (see [`ChunkView::holders_in_line`]).
    pub fn coordinator(&self) -> Option<PeerId> {
        self.holders_in_line().first().copied()
    }
}

/// What a vault should do for a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Rebuild these indices and store each on the given vault.
    Rebuild(Vec<(u8, PeerId)>),
    /// Give a local shard to a group member, then delete it here.
    HandOver {
        /// The shard's index.
        index: u8,
        /// The group member that should hold it.
        to: PeerId,
    },
    /// Delete a local shard that a group member also holds.
    Drop {
        /// The shard's index.
        index: u8,
        /// The group member whose copy stays.
        kept_by: PeerId,
    },
}

/// The actions `me` should take for the chunk seen as `view`.
pub fn plan(me: PeerId, view: &ChunkView) -> Vec<Action> {
    plan_as(me, view, false)
}

/// Where `me` stands in line behind the coordinator for a loss it sees: `Some(r)` when some
/// index is held nowhere, a group member is free to take it, and `me` is the `r`-th holder in
/// the group by rendezvous rank after the coordinator. Views differ for a while (a vault that
/// has not yet seen a departure examines nothing), so a coordinator may never act; the
/// holders behind it stand in one after another ([`plan_as`]) if the loss outlasts their
/// turn, and a later one finds the loss repaired and does nothing.
pub fn stand_in_rank(me: PeerId, view: &ChunkView) -> Option<usize> {
    let held_anywhere: BTreeSet<u8> = view.holdings.values().flatten().copied().collect();
    let lost = (0..view.n as u8).any(|i| !held_anywhere.contains(&i));
    if !lost || free_members(view).is_empty() {
        return None;
    }
    view.holders_in_line().iter().position(|p| *p == me).filter(|r| *r > 0)
}

/// Group members that answered and hold nothing they will keep, aged first, then closest
/// first: empty, or holding only shards a closer member also holds (copies kept through the
/// handover probation, dropped after it). Counting those as taken would leave a lost shard
/// with nowhere to go for the whole probation.
fn free_members(view: &ChunkView) -> Vec<PeerId> {
    let held_closer = |pos: usize, index: &u8| {
        view.group[..pos].iter().any(|c| view.holdings.get(c).is_some_and(|h| h.contains(index)))
    };
    let mut free: Vec<PeerId> = view
        .group
        .iter()
        .enumerate()
        .filter(|(pos, p)| view.holdings.get(p).is_some_and(|h| h.iter().all(|i| held_closer(*pos, i))))
        .map(|(_, p)| *p)
        .collect();
    free.sort_by_key(|p| !view.aged.contains(p));
    free
}

/// [`plan`], with `me` acting as the coordinator when `stand_in` (see [`stand_in_rank`]).
pub fn plan_as(me: PeerId, view: &ChunkView, stand_in: bool) -> Vec<Action> {
    let mine: Vec<u8> = view.holdings.get(&me).cloned().unwrap_or_default();
    let held_by = |p: &PeerId| view.holdings.get(p).is_some_and(|h| !h.is_empty());
    // The first of `members` (closest first) that holds `index`.
    let holder = |index: u8, members: &[PeerId]| {
        members.iter().find(|p| view.holdings.get(p).is_some_and(|h| h.contains(&index))).copied()
    };
    // Group members that answered and hold nothing they keep: where shards can go.
    let mut free = free_members(view).into_iter();

    let Some(position) = view.group.iter().position(|p| *p == me) else {
        let mut actions = Vec::new();
        for &index in &mine {
            if let Some(kept_by) = holder(index, &view.group) {
                actions.push(Action::Drop { index, kept_by });
            } else if let Some(to) = free.next() {
                actions.push(Action::HandOver { index, to });
            }
        }
        return actions;
    };

    let closer = &view.group[..position];
    let mut actions = Vec::new();
    let mut kept = Vec::new();
    for &index in &mine {
        match holder(index, closer) {
            Some(kept_by) => actions.push(Action::Drop { index, kept_by }),
            None => kept.push(index),
        }
    }
    // A member holding several shards while another holds none gives the extras away, so
    // that losing one vault never loses two shards.
    actions.extend(kept.iter().skip(1).zip(free.by_ref()).map(|(&index, to)| Action::HandOver { index, to }));
    if view.coordinator() != Some(me) && !(stand_in && held_by(&me)) {
        return actions;
    }
    // Indices held anywhere (a holder outside the group will hand its own over) are not lost.
    let held_anywhere: BTreeSet<u8> = view.holdings.values().flatten().copied().collect();
    let missing = (0..view.n as u8).filter(|i| !held_anywhere.contains(i));
    let assigned: Vec<(u8, PeerId)> = missing.zip(free).collect();
    if !assigned.is_empty() {
        actions.push(Action::Rebuild(assigned));
    }
    actions
}

use super::replica::rendezvous as rank;

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn view(group: &[PeerId], holdings: &[(PeerId, Vec<u8>)]) -> ChunkView {
        let aged = group.iter().copied().collect();
        ChunkView { chunk: Address::random(), n: 8, group: group.to_vec(), holdings: holdings.iter().cloned().collect(), aged }
    }

    /// The holder that coordinates `v`.
    fn coordinator(v: &ChunkView) -> PeerId {
        v.coordinator().unwrap()
    }

    #[test]
    fn a_member_holding_only_a_copy_on_probation_takes_a_lost_shard() {
        let g = peers(8);
        // Shard 1 is lost; g[7] still holds a copy of shard 0, which g[0] holds too.
        let mut holdings: Vec<(PeerId, Vec<u8>)> = vec![(g[0], vec![0])];
        holdings.extend((1..7).map(|i| (g[i], vec![i as u8 + 1])));
        holdings.push((g[7], vec![0]));
        let v = view(&g, &holdings);
        assert_eq!(plan(coordinator(&v), &v).last(), Some(&Action::Rebuild(vec![(1, g[7])])));
        // It drops its copy in time (and, when it is the coordinator itself, it also rebuilds).
        let mut expected = vec![Action::Drop { index: 0, kept_by: g[0] }];
        if coordinator(&v) == g[7] {
            expected.push(Action::Rebuild(vec![(1, g[7])]));
        }
        assert_eq!(plan(g[7], &v), expected);
    }

    #[test]
    fn full_group_needs_nothing() {
        let g = peers(8);
        let v = view(&g, &g.iter().enumerate().map(|(i, p)| (*p, vec![i as u8])).collect::<Vec<_>>());
        for p in &g {
            assert!(plan(*p, &v).is_empty());
        }
    }

    #[test]
    fn only_the_coordinator_rebuilds_onto_free_members() {
        let g = peers(8);
        // Shards 0 and 1 were on vaults that left; their places went to g[6], g[7] (empty).
        let mut holdings: Vec<(PeerId, Vec<u8>)> = (0..6).map(|i| (g[i], vec![i as u8 + 2])).collect();
        holdings.push((g[6], vec![]));
        holdings.push((g[7], vec![]));
        let v = view(&g, &holdings);
        let c = coordinator(&v);
        assert!(g[..6].contains(&c), "the coordinator holds a shard");
        assert_eq!(plan(c, &v), vec![Action::Rebuild(vec![(0, g[6]), (1, g[7])])]);
        for p in g.iter().filter(|p| **p != c) {
            assert!(plan(*p, &v).is_empty(), "only the coordinator acts");
        }
    }

    #[test]
    fn coordinators_spread_over_the_holders_of_a_group() {
        let g = peers(8);
        let mut holdings: Vec<(PeerId, Vec<u8>)> = vec![(g[0], vec![])];
        holdings.extend((1..8).map(|i| (g[i], vec![i as u8])));
        let mut coordinators = std::collections::HashSet::new();
        for _ in 0..64 {
            // The same group, other chunks (as when one vault held many chunks and died).
            let v = view(&g, &holdings);
            let c = coordinator(&v);
            assert_ne!(c, g[0], "a member holding nothing does not coordinate");
            assert_eq!(plan(c, &v), vec![Action::Rebuild(vec![(0, g[0])])]);
            assert_eq!(g.iter().filter(|p| !plan(**p, &v).is_empty()).count(), 1);
            coordinators.insert(c);
        }
        assert!(coordinators.len() >= 5, "rebuilds of 64 chunks fell on {} holders", coordinators.len());
    }

    #[test]
    fn a_vault_pushed_out_hands_over_then_drops() {
        let g = peers(8);
        let out = PeerId::random();
        // A new closest vault g[0] joined and holds nothing; `out` fell out holding shard 7.
        let mut holdings: Vec<(PeerId, Vec<u8>)> = vec![(g[0], vec![]), (out, vec![7])];
        holdings.extend((1..8).map(|i| (g[i], vec![i as u8 - 1])));
        let v = view(&g, &holdings);
        assert_eq!(plan(out, &v), vec![Action::HandOver { index: 7, to: g[0] }]);
        // Nobody in the group rebuilds 7: it is held, and about to be handed over.
        for p in &g {
            assert!(plan(*p, &v).is_empty());
        }
        // Once g[0] holds 7, the old holder just drops its copy.
        let mut after = holdings.clone();
        after[0] = (g[0], vec![7]);
        assert_eq!(plan(out, &view(&g, &after)), vec![Action::Drop { index: 7, kept_by: g[0] }]);
    }

    #[test]
    fn a_member_holding_two_gives_one_to_an_empty_member() {
        let g = peers(8);
        let mut holdings: Vec<(PeerId, Vec<u8>)> = vec![(g[0], vec![0]), (g[1], vec![1, 7]), (g[7], vec![])];
        holdings.extend((2..7).map(|i| (g[i], vec![i as u8])));
        let v = view(&g, &holdings);
        assert_eq!(plan(g[1], &v), vec![Action::HandOver { index: 7, to: g[7] }]);
        assert!(plan(g[0], &v).is_empty(), "nothing is missing, so the coordinator waits");
    }

    #[test]
    fn a_group_full_but_short_of_an_index_frees_a_place_for_it() {
        let g = peers(8);
        let out = PeerId::random();
        // Every member holds a shard, g[2] and g[6] the same one; shard 5 sits outside.
        let mut holdings: Vec<(PeerId, Vec<u8>)> = vec![(out, vec![5])];
        holdings.extend([0u8, 1, 2, 3, 4, 6, 2, 7].iter().enumerate().map(|(i, &x)| (g[i], vec![x])));
        let v = view(&g, &holdings);
        assert_eq!(plan(g[6], &v), vec![Action::Drop { index: 2, kept_by: g[2] }]);
        for p in g.iter().filter(|p| **p != g[6]) {
            assert!(plan(*p, &v).is_empty(), "the closer copy stays, and nothing is missing");
        }
        // g[6] holds only a copy it will drop (after the handover probation): the outside
        // holder hands shard 5 to it now rather than wait for the copy to go.
        assert_eq!(plan(out, &v), vec![Action::HandOver { index: 5, to: g[6] }]);
        holdings[7] = (g[6], vec![]);
        assert_eq!(plan(out, &view(&g, &holdings)), vec![Action::HandOver { index: 5, to: g[6] }]);
    }

    #[test]
    fn a_shard_lost_everywhere_is_rebuilt_in_a_place_freed_by_a_duplicate() {
        let g = peers(8);
        let holdings: Vec<(PeerId, Vec<u8>)> =
            [0u8, 1, 2, 3, 4, 1, 6, 7].iter().enumerate().map(|(i, &x)| (g[i], vec![x])).collect();
        let v = view(&g, &holdings);
        assert_eq!(plan(g[5], &v).first(), Some(&Action::Drop { index: 1, kept_by: g[1] }));
        // g[5] holds only a copy it will drop: the lost shard goes there at once.
        assert_eq!(plan(coordinator(&v), &v).last(), Some(&Action::Rebuild(vec![(5, g[5])])));
        let mut after = holdings.clone();
        after[5] = (g[5], vec![]);
        let v = view(&g, &after);
        assert_eq!(plan(coordinator(&v), &v), vec![Action::Rebuild(vec![(5, g[5])])]);
    }

    proptest::proptest! {
        /// Over random views: a drop always names another vault that holds the index (so the
        /// last copy is never dropped), and each index lost everywhere is rebuilt by exactly one
        /// vault when the group has a holder to coordinate and a free member to take it.
        #[test]
        fn never_drops_the_last_copy_and_one_vault_acts_on_each_loss(seed in proptest::prelude::any::<u64>(), outside in 0usize..3) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let g = peers(8);
            let o = peers(outside);
            let mut holdings = HashMap::new();
            for p in g.iter().chain(&o) {
                if rng.gen_bool(0.1) {
                    continue; // silent
                }
                let held: Vec<u8> = match rng.gen_range(0..10) {
                    0..=2 => vec![],
                    3..=8 => vec![rng.gen_range(0..8)],
                    _ => vec![rng.gen_range(0..8), rng.gen_range(0..8)],
                };
                let mut held = held;
                held.sort();
                held.dedup();
                holdings.insert(*p, held);
            }
            // Some members are newcomers: the rules hold whoever has aged.
            let aged = g.iter().filter(|_| rng.gen_bool(0.7)).copied().collect();
            let v = ChunkView { chunk: Address::random(), n: 8, group: g.clone(), holdings, aged };
            let everyone: Vec<PeerId> = g.iter().chain(&o).copied().collect();
            let mut rebuilt: HashMap<u8, usize> = HashMap::new();
            for p in &everyone {
                for a in plan(*p, &v) {
                    match a {
                        Action::Drop { index, kept_by } => {
                            proptest::prop_assert_ne!(kept_by, *p);
                            proptest::prop_assert!(v.holdings.get(&kept_by).is_some_and(|h| h.contains(&index)));
                        }
                        Action::Rebuild(assign) => {
                            for (i, _) in assign {
                                *rebuilt.entry(i).or_default() += 1;
                            }
                        }
                        Action::HandOver { .. } => {}
                    }
                }
            }
            let held_anywhere: BTreeSet<u8> = v.holdings.values().flatten().copied().collect();
            let missing: Vec<u8> = (0..8u8).filter(|i| !held_anywhere.contains(i)).collect();
            let coordinator = g.iter().any(|p| v.holdings.get(p).is_some_and(|h| !h.is_empty()));
            // Free members the coordinator does not give its own extra shards to.
            let free = free_members(&v).len().saturating_sub(if coordinator { plan(super::tests::coordinator(&v), &v).iter().filter(|a| matches!(a, Action::HandOver { .. })).count() } else { 0 });
            for i in 0..8u8 {
                let count = rebuilt.get(&i).copied().unwrap_or(0);
                proptest::prop_assert!(count <= 1, "index {} rebuilt by {} vaults", i, count);
                if missing.contains(&i) && coordinator && free >= missing.len() {
                    proptest::prop_assert_eq!(count, 1, "lost index {} rebuilt by nobody", i);
                }
                if !missing.contains(&i) {
                    proptest::prop_assert_eq!(count, 0, "held index {} rebuilt", i);
                }
            }
        }
    }

    #[test]
    fn holders_stand_in_line_behind_a_coordinator_that_does_not_act() {
        let g = peers(8);
        let mut holdings: Vec<(PeerId, Vec<u8>)> = (0..7).map(|i| (g[i], vec![i as u8])).collect();
        holdings.push((g[7], vec![]));
        let v = view(&g, &holdings);
        let c = coordinator(&v);
        assert_eq!(stand_in_rank(c, &v), None, "the coordinator acts itself");
        let mut ranks: Vec<usize> = g.iter().filter_map(|p| stand_in_rank(*p, &v)).collect();
        ranks.sort();
        assert_eq!(ranks, (1..7).collect::<Vec<_>>(), "every other holder has its own turn");
        assert_eq!(stand_in_rank(g[7], &v), None, "a member holding nothing cannot rebuild");
        let second = *g.iter().find(|p| stand_in_rank(**p, &v) == Some(1)).unwrap();
        assert!(plan(second, &v).is_empty());
        assert_eq!(plan_as(second, &v, true), vec![Action::Rebuild(vec![(7, g[7])])], "same placement as the coordinator's");
        // Nothing lost: nobody stands in.
        let full: Vec<(PeerId, Vec<u8>)> = (0..8).map(|i| (g[i], vec![i as u8])).collect();
        assert!(g.iter().all(|p| stand_in_rank(*p, &view(&g, &full)).is_none()));
    }

    #[test]
    fn repair_prefers_aged_holders() {
        let g = peers(8);
        // Shards 6 and 7 were lost; g[6] and g[7] hold nothing; only g[0], g[1], g[7] have aged
        // (the rest are newcomers whose ids may have been ground next to the chunk).
        let mut holdings: Vec<(PeerId, Vec<u8>)> = (0..6).map(|i| (g[i], vec![i as u8])).collect();
        holdings.push((g[6], vec![]));
        holdings.push((g[7], vec![]));
        let mut v = view(&g, &holdings);
        v.aged = [g[0], g[1], g[7]].into_iter().collect();
        let c = coordinator(&v);
        assert!(c == g[0] || c == g[1], "an aged holder coordinates, not a newcomer");
        // The aged free member takes the first lost shard though it is farther.
        assert_eq!(plan(c, &v), vec![Action::Rebuild(vec![(6, g[7]), (7, g[6])])]);
        let mut ranks: Vec<(usize, PeerId)> = g.iter().filter_map(|p| stand_in_rank(*p, &v).map(|r| (r, *p))).collect();
        ranks.sort();
        assert!([g[0], g[1]].contains(&ranks[0].1), "the other aged holder stands in first");
        // Handed over too: an outside holder gives its shard to the aged free member first.
        let out = PeerId::random();
        let mut with_out = holdings.clone();
        with_out.push((out, vec![6]));
        let mut v = view(&g, &with_out);
        v.aged = [g[0], g[1], g[7]].into_iter().collect();
        assert_eq!(plan(out, &v), vec![Action::HandOver { index: 6, to: g[7] }]);
        // With no aged holder at all, a newcomer still coordinates (data is never left alone).
        v.aged.clear();
        assert!(v.coordinator().is_some());
    }

    #[test]
    fn silent_members_receive_nothing() {
        let g = peers(8);
        // g[7] did not answer (no entry): it may be dead, so it is not a placement target.
        let holdings: Vec<(PeerId, Vec<u8>)> = (0..7).map(|i| (g[i], if i < 5 { vec![i as u8] } else { vec![] })).collect();
        let v = view(&g, &holdings);
        assert_eq!(plan(coordinator(&v), &v), vec![Action::Rebuild(vec![(5, g[5]), (6, g[6])])]);
    }
}
