//! Who signs for a ledger account, and when a certificate's signers did: the committee rule.
//!
//! An account's **committee** is the [`VOTERS`] (24) elders closest to its address (vaults with
//! a proven age: see [`crate::elders`]), as the vault that asks sees the network; nothing
//! wider, and never a newcomer however close its id was ground. An honest vault signs a
//! transfer out of an account only while it is in the committee of its own view, and admits
//! a certificate only when a quorum of its signers are in the payer's committee of the
//! admitting vault's view ([`quorum_of`]): [`QUORUM`] (17) of 24, or [`quorum`] of all the
//! elders of a network with fewer than 24.
//!
//! Why one nonce cannot be certified twice (FastPay's argument, with views that differ):
//! let two honest vaults admit certificates `S1` and `S2` at one nonce, seeing committees `C1`
//! and `C2` that differ in `d` members (`|C1 ∪ C2| = n + d`). Then
//! `|S1 ∩ S2| ≥ |S1 ∩ C1| + |S2 ∩ C2| − |C1 ∪ C2| ≥ 2q − n − d = 4 − d`, and every vault in
//! that intersection signed two transfers at one nonce, which an honest vault never does (its
//! promise is fsynced before it signs). So the two certificates need more than `3 − d`
//! dishonest vaults among the payer's committee: with honest vaults and views that differ in
//! up to three members, never. The property test below checks this against an adversary that
//! tries every way of splitting the honest vaults between two transfers.

use crate::{close_group, Address, PeerId};
use kura_types::ledger::{quorum, QUORUM};
use kura_types::age::VOTERS;

/// Members of the account's group who must hold an old entry (whose signers have left the
/// payer's committee) before a vault admits it: `2q − n`, one more than the dishonest members
/// at which the ledger is still safe, so three lying members cannot make up history.
pub const VOUCHERS: usize = 2 * QUORUM - VOTERS;

/// [`VOUCHERS`] for a group of `n` elders (a network with fewer than [`VOTERS`]): `2q − n`.
pub const fn vouchers(n: usize) -> usize {
    2 * quorum(n) - n
}

/// An account's committee as one vault sees it: the [`VOTERS`] closest of `view` (its
/// elders), closest first.
pub fn committee(account: &Address, view: impl IntoIterator<Item = PeerId>) -> Vec<PeerId> {
    close_group(account, view, VOTERS)
}

/// How many distinct `signers` are members of `committee`.
pub fn members_among(signers: &[PeerId], committee: &[PeerId]) -> usize {
    let mut seen: Vec<&PeerId> = signers.iter().filter(|s| committee.contains(s)).collect();
    seen.sort_unstable_by_key(|p| p.to_bytes());
    seen.dedup();
    seen.len()
}

/// How many elders a committee has on a network where `elders` are known: [`VOTERS`], or
/// all of them on a smaller network (at least one).
pub fn committee_size(elders: usize) -> usize {
    elders.clamp(1, VOTERS)
}

/// Whether `signers` hold a quorum of `committee`, on a network whose committees have `size`
/// elders ([`committee_size`]): what makes a certificate current. A committee seen with fewer
/// members than that (ages not yet learned, or a view cut short) certifies nothing less: its
/// quorum is still that of `size`, so no two views that each see a few elders can each
/// certify a transfer at one nonce.
pub fn quorum_of(signers: &[PeerId], committee: &[PeerId], size: usize) -> bool {
    // A committee seen with more members than `size` says (a count behind) needs theirs.
    members_among(signers, committee) >= quorum(size.max(committee.len()).clamp(1, VOTERS))
}

/// The signers that are not members of `committee`.
pub fn outsiders(signers: &[PeerId], committee: &[PeerId]) -> Vec<PeerId> {
    signers.iter().filter(|s| !committee.contains(s)).copied().collect()
}

/// The most members by which two committees differ (`|a \ b|`, which for committees of
/// equal size is `|b \ a|` too).
pub fn difference(a: &[PeerId], b: &[PeerId]) -> usize {
    a.iter().filter(|p| !b.contains(p)).count().max(b.iter().filter(|p| !a.contains(p)).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The committee size the property tests use. The rule is the same for any size; eight
    /// keeps the adversary's exhaustive split of the honest signers (2^signers) affordable.
    const N: usize = 8;

    /// One honest vault: its id and its view of the network.
    struct Honest {
        id: PeerId,
        view: Vec<PeerId>,
    }

    /// Whether some split of the honest vaults between two transfers at one nonce gets both
    /// certified, each admitted by some honest admitter: one that finds a quorum of its
    /// signers among the vaults it counts (`counted`, one set per admitter). Honest vaults
    /// sign at most one of the two, and only when `signs` says they may; dishonest vaults
    /// sign both.
    fn double_spend(honest: &[Honest], dishonest: &[PeerId], counted: &[Vec<PeerId>], signs: &dyn Fn(&Honest) -> bool) -> bool {
        let willing: Vec<PeerId> = honest.iter().filter(|h| signs(h)).map(|h| h.id).collect();
        assert!(willing.len() <= 16, "{} honest signers to split", willing.len());
        for split in 0u32..(1 << willing.len()) {
            let side = |s: u32| -> Vec<PeerId> {
                willing
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (split >> i) & 1 == s)
                    .map(|(_, p)| *p)
                    .chain(dishonest.iter().copied())
                    .collect()
            };
            let (s1, s2) = (side(0), side(1));
            let admitted = |s: &[PeerId]| counted.iter().any(|c| members_among(s, c) >= quorum(N));
            if admitted(&s1) && admitted(&s2) {
                return true;
            }
        }
        false
    }

    /// What each admitter counts under the committee rule: the payer's committee of its view.
    fn committees(account: &Address, views: &[Vec<PeerId>]) -> Vec<Vec<PeerId>> {
        views.iter().map(|v| close_group(account, v.iter().copied(), N)).collect()
    }

    /// An honest vault signs while it is in the committee of its own view.
    fn member(account: Address) -> impl Fn(&Honest) -> bool {
        move |h| close_group(&account, h.view.iter().copied(), N).contains(&h.id)
    }

    #[test]
    fn the_placement_window_let_a_client_alone_double_spend_and_the_committee_does_not() {
        // The attack of issue 17: 16 honest vaults that see the same network. The old rule
        // let a vault sign, and counted its signature, while it was among the 20 closest.
        let account = Address::random();
        let ids: Vec<PeerId> = (0..16).map(|_| PeerId::random()).collect();
        let honest: Vec<Honest> = ids.iter().map(|&id| Honest { id, view: ids.clone() }).collect();
        let within = |n: usize| {
            move |h: &Honest| close_group(&account, h.view.iter().copied(), n).contains(&h.id)
        };
        let window = vec![close_group(&account, ids.iter().copied(), 20)];
        assert!(double_spend(&honest, &[], &window, &within(20)), "the window rule double-spends");
        let views = [ids.clone()];
        assert!(!double_spend(&honest, &[], &committees(&account, &views), &member(account)));
    }

    /// Views drawn from one network: each honest vault misses some vaults and still counts
    /// some that have left.
    fn network() -> impl Strategy<Value = (Address, Vec<PeerId>, Vec<PeerId>, usize, Vec<(Vec<usize>, Vec<usize>)>)> {
        (9usize..28, 0usize..4, 0usize..4, any::<[u8; 32]>()).prop_flat_map(|(n, departed, dishonest, seed)| {
            let views = proptest::collection::vec(
                (proptest::collection::vec(0usize..n, 0..3), proptest::collection::vec(0usize..departed.max(1), 0..=departed)),
                n,
            );
            (Just(Address(seed)), Just(n), Just(departed), Just(dishonest), views).prop_map(|(account, n, departed, dishonest, views)| {
                let live: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
                let gone: Vec<PeerId> = (0..departed).map(|_| PeerId::random()).collect();
                (account, live, gone, dishonest, views)
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn no_two_certificates_at_one_nonce_while_views_differ_within_the_tolerance(
            (account, live, gone, dishonest, misses) in network()
        ) {
            // The dishonest vaults sit where they do most harm: in the true committee.
            let truth = close_group(&account, live.iter().copied(), N);
            let bad: Vec<PeerId> = truth.iter().take(dishonest).copied().collect();
            let honest: Vec<Honest> = live
                .iter()
                .zip(&misses)
                .filter(|(id, _)| !bad.contains(id))
                .map(|(&id, (missed, stale))| {
                    let view = live
                        .iter()
                        .enumerate()
                        .filter(|(i, p)| **p == id || !missed.contains(i))
                        .map(|(_, p)| *p)
                        .chain(stale.iter().filter_map(|i| gone.get(*i).copied()))
                        .collect();
                    Honest { id, view }
                })
                .collect();
            // Admitters: a few honest vaults, whose committees differ by at most `d`.
            let admitters: Vec<Vec<PeerId>> = honest.iter().take(4).map(|h| h.view.clone()).collect();
            let committees = committees(&account, &admitters);
            let d = committees
                .iter()
                .flat_map(|a| committees.iter().map(move |b| difference(a, b)))
                .max()
                .unwrap_or(0);
            // Within the tolerance the adversary never wins (beyond it, see the next test).
            if dishonest + d < 2 * quorum(N) - N {
                prop_assert!(!double_spend(&honest, &bad, &committees, &member(account)));
            }
        }
    }

    #[test]
    fn a_committee_is_the_voters_closest_and_a_short_view_certifies_nothing_less() {
        let account = Address::random();
        let elders: Vec<PeerId> = (0..40).map(|_| PeerId::random()).collect();
        let c = committee(&account, elders.iter().copied());
        assert_eq!(c.len(), VOTERS);
        assert_eq!((committee_size(40), committee_size(5), committee_size(0)), (VOTERS, 5, 1));
        // A view that shows only the three nearest elders of a full network: three signers
        // are all of it, yet no quorum of a network whose committees have 24.
        let short = committee(&account, c[..3].iter().copied());
        assert!(!quorum_of(&c[..3], &short, committee_size(40)));
        assert!(quorum_of(&c[..QUORUM], &c, committee_size(40)));
        assert!(!quorum_of(&c[..QUORUM - 1], &c, committee_size(40)));
        assert_eq!((VOUCHERS, vouchers(5)), (10, 3));
    }

    #[test]
    fn beyond_the_tolerance_the_adversary_is_found() {
        // The same adversary does find a double spend once the views differ too much: the
        // property above is not vacuous. Two admitters whose views share only four of the
        // eight closest vaults.
        let account = Address::random();
        let live: Vec<PeerId> = (0..12).map(|_| PeerId::random()).collect();
        let order = close_group(&account, live.iter().copied(), 12);
        let first: Vec<PeerId> = order[..8].to_vec();
        let second: Vec<PeerId> = order[..4].iter().chain(&order[8..12]).copied().collect();
        let honest: Vec<Honest> = order
            .iter()
            .map(|&id| Honest { id, view: if first.contains(&id) && !second.contains(&id) { first.clone() } else { second.clone() } })
            .collect();
        assert_eq!(difference(&close_group(&account, first.clone(), N), &close_group(&account, second.clone(), N)), 4);
        assert!(double_spend(&honest, &[], &committees(&account, &[first, second]), &member(account)));
    }
}
