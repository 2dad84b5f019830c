//! What an account's entries add up to, and what a replica may sign or admit next.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// What an account's entries held by one replica add up to.
///
/// Each debit counts once per nonce and each credit once per `(payer, nonce)`. Where two
/// certified transfers share a `(payer, nonce)` (a double spend: never while fewer than
/// `2q − n` of the payer's committee sign twice), both are kept as evidence and the summary
/// stays conservative whatever order it sees them in: the payer is debited the larger of the
/// two, and the payee is credited neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The genesis supply, for the genesis account; zero for every other.
    pub genesis: u64,
    /// Units credited.
    pub credits: u128,
    /// Units debited.
    pub debits: u128,
    /// The transfer id at each debited nonce (the first seen, where two contest it).
    pub debited: BTreeMap<u64, [u8; 32]>,
    /// The amount debited at each nonce (the larger, where two contest it).
    debit_amounts: BTreeMap<u64, u64>,
    /// Each credit counted, by its payer and nonce: the transfer's id and what it paid here.
    credited: HashMap<(Address, u64), ([u8; 32], u64)>,
    /// Payer nonces at which two certified transfers were seen here (never credited).
    pub contested: BTreeSet<(Address, u64)>,
    /// Entries counted.
    pub entries: u64,
}

impl Summary {
    /// A summary of no entries for an account that starts with `genesis`.
    pub fn new(genesis: u64) -> Summary {
        Summary { genesis, ..Summary::default() }
    }

    /// Adds an entry for this account, whatever its order among the others (rebuilding from
    /// disk). [`LedgerError::AlreadyApplied`] changes nothing; [`LedgerError::DoubleSpend`]
    /// means the entry contests another at its nonce, and is counted as the type's docs say.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), LedgerError> {
        let t = &entry.certificate.transfer.transfer;
        let id = t.id();
        let total = t.total()?;
        if entry.is_debit() {
            let held = self.debited.get(&t.nonce).copied();
            match held {
                Some(h) if h == id => return Err(LedgerError::AlreadyApplied(hex::encode(&id[..8]))),
                Some(_) => {
                    let before = self.debit_amounts.get(&t.nonce).copied().unwrap_or(0);
                    if total > before {
                        self.debits += u128::from(total - before);
                        self.debit_amounts.insert(t.nonce, total);
                    }
                    self.contested.insert((entry.account, t.nonce));
                    self.entries += 1;
                    return Err(LedgerError::DoubleSpend(t.nonce));
                }
                None => {
                    self.debits += u128::from(total);
                    self.debited.insert(t.nonce, id);
                    self.debit_amounts.insert(t.nonce, total);
                }
            }
        } else {
            let pair = (t.from_address(), t.nonce);
            let amount = t.paid_to(&entry.account);
            if self.contested.contains(&pair) {
                self.entries += 1;
                return Err(LedgerError::DoubleSpend(t.nonce));
            }
            match self.credited.get(&pair).copied() {
                Some((h, _)) if h == id => return Err(LedgerError::AlreadyApplied(hex::encode(&id[..8]))),
                Some((_, earlier)) => {
                    // Neither is credited: the earlier one is taken back.
                    self.credits -= u128::from(earlier);
                    self.credited.remove(&pair);
                    self.contested.insert(pair);
                    self.entries += 1;
                    return Err(LedgerError::DoubleSpend(t.nonce));
                }
                None => {
                    self.credits += u128::from(amount);
                    self.credited.insert(pair, (id, amount));
                }
            }
        }
        self.entries += 1;
        Ok(())
    }

    /// Whether a replica holding this summary may admit `entry` (its certificate already
    /// checked) as a new entry: a debit only at the account's next nonce (or one that fills
    /// a gap) and only if the balance covers it; a credit only once per `(payer, nonce)`.
    /// [`LedgerError::DoubleSpend`] is evidence (the caller keeps both); [`LedgerError::Behind`]
    /// and [`LedgerError::InsufficientFunds`] may mean this replica missed entries.
    pub fn admits(&self, entry: &Entry) -> Result<(), LedgerError> {
        let t = &entry.certificate.transfer.transfer;
        let id = t.id();
        let total = t.total()?;
        if entry.is_debit() {
            match self.debited.get(&t.nonce) {
                Some(h) if *h == id => return Err(LedgerError::AlreadyApplied(hex::encode(&id[..8]))),
                Some(_) => return Err(LedgerError::DoubleSpend(t.nonce)),
                None if t.nonce > self.nonce() + 1 => return Err(LedgerError::Behind),
                None => {}
            }
            if self.balance() < i128::from(total) {
                return Err(LedgerError::InsufficientFunds { balance: self.balance(), needed: total });
            }
            return Ok(());
        }
        let pair = (t.from_address(), t.nonce);
        if self.contested.contains(&pair) {
            return Err(LedgerError::DoubleSpend(t.nonce));
        }
        match self.credited.get(&pair) {
            Some((h, _)) if *h == id => Err(LedgerError::AlreadyApplied(hex::encode(&id[..8]))),
            Some(_) => Err(LedgerError::DoubleSpend(t.nonce)),
            None => Ok(()),
        }
    }

    /// The transfer this summary counts at `(payer, nonce)`, if any: a debit's id for this
    /// account's own nonces, a credit's for another payer's.
    pub fn counted(&self, payer: &Address, nonce: u64, own: bool) -> Option<[u8; 32]> {
        match own {
            true => self.debited.get(&nonce).copied(),
            false => self.credited.get(&(*payer, nonce)).map(|(id, _)| *id),
        }
    }

    /// The balance: genesis and credits less debits. Negative only at a replica that holds a
    /// debit but missed the credits that paid for it.
    pub fn balance(&self) -> i128 {
        i128::from(self.genesis) + self.credits as i128 - self.debits as i128
    }

    /// The highest nonce debited.
    pub fn nonce(&self) -> u64 {
        self.debited.keys().next_back().copied().unwrap_or(0)
    }

    /// Whether a debit below the highest is missing here.
    pub fn has_gap(&self) -> bool {
        self.debited.len() as u64 != self.nonce()
    }

    /// Whether a replica holding this summary, and `promise` (the transfer it last signed
    /// for the account, if any), may sign `transfer` (already checked by
    /// [`SignedTransfer::verify`] to total `total`). The rules: the same transfer again may be
    /// signed again; another at a promised nonce never; only the next nonce; only with no
    /// debit missing; only with the balance to cover it.
    pub fn may_sign(&self, promise: Option<&SignedTransfer>, signed: &SignedTransfer, total: u64) -> Result<(), LedgerError> {
        let t = &signed.transfer;
        if let Some(id) = self.debited.get(&t.nonce) {
            return match *id == t.id() {
                true => Ok(()),
                false => Err(LedgerError::WrongNonce { expected: self.nonce() + 1, got: t.nonce }),
            };
        }
        if let Some(p) = promise {
            if p.transfer.nonce == t.nonce {
                return match p.transfer.id() == t.id() {
                    true => Ok(()),
                    false => Err(LedgerError::Conflict { nonce: t.nonce, promised: Box::new(p.clone()) }),
                };
            }
        }
        if self.has_gap() {
            return Err(LedgerError::Behind);
        }
        if let Some(p) = promise {
            if p.transfer.nonce > self.nonce() && t.nonce != p.transfer.nonce {
                // Signed at a nonce whose certificate has not arrived: the owner finishes that
                // one first.
                return Err(LedgerError::Conflict { nonce: p.transfer.nonce, promised: Box::new(p.clone()) });
            }
        }
        if t.nonce != self.nonce() + 1 {
            return Err(LedgerError::WrongNonce { expected: self.nonce() + 1, got: t.nonce });
        }
        if self.balance() < i128::from(total) {
            return Err(LedgerError::InsufficientFunds { balance: self.balance(), needed: total });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tests::{certify, pay, replicas};

    #[test]
    fn a_replica_signs_one_transfer_per_nonce_and_only_what_the_balance_covers() {
        let reps = replicas(6);
        let owner = WalletKey::random();
        let (a, b) = (Address::random(), Address::random());
        let mut s = Summary::new(0);
        // Funded by a credit.
        let funder = WalletKey::random();
        let credit = certify(&funder.sign(1, vec![pay(owner.address(), 10)]), &reps);
        s.apply(&Entry { account: owner.address(), certificate: credit.clone() }).unwrap();
        assert_eq!(s.balance(), 10);
        assert!(matches!(s.apply(&Entry { account: owner.address(), certificate: credit }), Err(LedgerError::AlreadyApplied(_))));
        assert_eq!(s.balance(), 10, "a credit counts once");
        let s = {
            let mut s = Summary::new(0);
            s.credits = 10;
            s
        };
        let t1 = owner.sign(1, vec![pay(a, 7)]);
        let t1x = owner.sign(1, vec![pay(b, 7)]);
        assert_eq!(s.may_sign(None, &t1, 7), Ok(()));
        assert_eq!(s.may_sign(Some(&t1), &t1, 7), Ok(()), "the same transfer may be signed again");
        assert!(matches!(s.may_sign(Some(&t1), &t1x, 7), Err(LedgerError::Conflict { nonce: 1, .. })));
        assert_eq!(s.may_sign(None, &owner.sign(2, vec![pay(a, 1)]), 1), Err(LedgerError::WrongNonce { expected: 1, got: 2 }));
        assert_eq!(
            s.may_sign(None, &owner.sign(1, vec![pay(a, 11)]), 11),
            Err(LedgerError::InsufficientFunds { balance: 10, needed: 11 })
        );
        // Certified: the debit applies once; a conflicting certificate is a double spend.
        let mut s = s;
        let c1 = certify(&t1, &reps);
        s.apply(&Entry { account: owner.address(), certificate: c1.clone() }).unwrap();
        assert_eq!((s.balance(), s.nonce()), (3, 1));
        assert!(matches!(s.apply(&Entry { account: owner.address(), certificate: c1 }), Err(LedgerError::AlreadyApplied(_))));
        assert_eq!(
            s.apply(&Entry { account: owner.address(), certificate: certify(&t1x, &reps) }),
            Err(LedgerError::DoubleSpend(1))
        );
        assert_eq!(s.balance(), 3, "nothing changed");
        // A replica that holds nonce 3 but not 2 is behind and signs nothing.
        let mut gap = s.clone();
        gap.debited.insert(3, [9; 32]);
        assert_eq!(gap.may_sign(None, &owner.sign(4, vec![pay(a, 1)]), 1), Err(LedgerError::Behind));
        // Promised nonce 2, whose certificate has not come: nonce 2 again (another transfer)
        // and nonce 3 are both refused with the promised transfer.
        let t2 = owner.sign(2, vec![pay(a, 1)]);
        assert!(matches!(s.may_sign(Some(&t2), &owner.sign(2, vec![pay(b, 1)]), 1), Err(LedgerError::Conflict { nonce: 2, .. })));
        assert!(matches!(s.may_sign(Some(&t2), &owner.sign(3, vec![pay(b, 1)]), 1), Err(LedgerError::Conflict { nonce: 2, .. })));
    }

    #[test]
    fn a_replica_admits_debits_in_order_and_covered_and_credits_once_per_payer_nonce() {
        let reps = replicas(6);
        let (funder, owner, other) = (WalletKey::random(), WalletKey::random(), WalletKey::random());
        let entry = |account: Address, c: &Certificate| Entry { account, certificate: c.clone() };
        let credit = certify(&funder.sign(1, vec![pay(owner.address(), 10)]), &reps);
        let mut s = Summary::new(0);
        // A debit before the credit that pays for it is an overdraft here.
        let d1 = certify(&owner.sign(1, vec![pay(other.address(), 7)]), &reps);
        assert_eq!(s.admits(&entry(owner.address(), &d1)), Err(LedgerError::InsufficientFunds { balance: 0, needed: 7 }));
        s.apply(&entry(owner.address(), &credit)).unwrap();
        // A debit past the next nonce: this replica is behind.
        let d2 = certify(&owner.sign(2, vec![pay(other.address(), 1)]), &reps);
        assert_eq!(s.admits(&entry(owner.address(), &d2)), Err(LedgerError::Behind));
        s.admits(&entry(owner.address(), &d1)).unwrap();
        s.apply(&entry(owner.address(), &d1)).unwrap();
        assert_eq!(s.admits(&entry(owner.address(), &d1)), Err(LedgerError::AlreadyApplied(hex::encode(&d1.id()[..8]))));
        let d1x = certify(&owner.sign(1, vec![pay(other.address(), 9)]), &reps);
        assert_eq!(s.admits(&entry(owner.address(), &d1x)), Err(LedgerError::DoubleSpend(1)));
        // Kept as evidence, the larger debit counts, in either order.
        let mut a = s.clone();
        assert_eq!(a.apply(&entry(owner.address(), &d1x)), Err(LedgerError::DoubleSpend(1)));
        let mut b = Summary::new(0);
        for c in [&credit, &d1x, &d1] {
            let _ = b.apply(&entry(owner.address(), c));
        }
        assert_eq!((a.balance(), b.balance()), (1, 1));
        assert!(a.contested.contains(&(owner.address(), 1)));

        // The payee: credited once per (payer, nonce); two certificates there credit neither,
        // whichever came first.
        let mut p = Summary::new(0);
        p.apply(&entry(other.address(), &d1)).unwrap();
        assert_eq!(p.balance(), 7);
        assert_eq!(p.admits(&entry(other.address(), &d1x)), Err(LedgerError::DoubleSpend(1)));
        assert_eq!(p.apply(&entry(other.address(), &d1x)), Err(LedgerError::DoubleSpend(1)));
        assert_eq!(p.balance(), 0, "neither is credited");
        let mut q = Summary::new(0);
        for c in [&d1x, &d1] {
            let _ = q.apply(&entry(other.address(), c));
        }
        assert_eq!(q.balance(), 0);
        assert_eq!(q.admits(&entry(other.address(), &d1)), Err(LedgerError::DoubleSpend(1)));
    }
}
