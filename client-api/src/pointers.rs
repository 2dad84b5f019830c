//! Mutable pointers: an owner-signed record, replicated whole on the close group of its
//! address, whose highest version wins.
//!
//! Writes go to the whole close group at once and succeed when a majority stores them; reads
//! ask the whole group, check every answer against the address (owner key and signature), and
//! take the newest, so no single vault decides what a client sees. Vaults spread a newer
//! version to the rest of the group themselves.

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, NodeError, Pointer, Record, RecordKey};

use crate::chunks::{transient, ATTEMPTS_PER_VAULT, BACKOFF};
use crate::client::Client;
use crate::error::ClientError;
use crate::keys::UserKey;

/// The all-zero target of a pointer created without one.
pub const UNSET: Address = Address([0; 32]);

/// How many links `kura get` follows from a pointer to what it finally points at.
pub const MAX_HOPS: usize = 8;

impl Client {
    /// The newest valid version of the pointer at `address` any of its replicas holds (its
    /// closest vaults and its closest elders: [`Client::replica_set`]).
    pub async fn get_pointer(&self, address: Address) -> Result<Option<Pointer>, ClientError> {
        let key = RecordKey::pointer(address);
        let (group, _) = self.replica_set(address).await?;
        let mut answers: FuturesUnordered<_> = group
            .iter()
            .map(|&vault| {
                let node = self.node().clone();
                async move { node.request(vault, Request::GetRecord(key)).await }
            })
            .collect();
        let mut newest: Option<Pointer> = None;
        while let Some(answer) = answers.next().await {
            let Ok(Response::Record(Some(record))) = answer else { continue };
            // Checked against the address: a vault cannot make up or alter a version.
            if record.validate_for(&key).is_err() {
                continue;
            }
            if let Record::Pointer(p) = record {
                if newest.as_ref().is_none_or(|n| p.supersedes(n)) {
                    newest = Some(p);
                }
            }
        }
        Ok(newest)
    }

    /// Stores a signed pointer version on its close group; succeeds when a majority stored it.
    pub async fn put_pointer(&self, pointer: Pointer) -> Result<(), ClientError> {
        let address = pointer.address();
        let version = pointer.version;
        let outcome = self.store_replicas(Record::Pointer(pointer)).await?;
        if let Some(held) = outcome.stale {
            if outcome.stored < outcome.needed {
                return Err(ClientError::StalePointer { address, sent: version, held });
            }
        }
        outcome.into_result(format!("pointer {address}"))
    }

    /// Stores a record of a replicated kind (a message) on its close group; succeeds when a
    /// majority stored it.
    pub async fn replicate(&self, record: Record, what: &str) -> Result<(), ClientError> {
        self.store_replicas(record).await?.into_result(what.to_string())
    }

    /// Sends `record` to every vault of its close group at once, a vault that fails replaced
    /// by the next one past the group.
    pub(crate) async fn store_replicas(&self, record: Record) -> Result<Replicas, ClientError> {
        let address = record.key().address;
        let strategy = record.strategy();
        // A transfer is held by its account's committee of elders only; a pointer or a message
        // by its closest vaults and its closest elders, a majority of each.
        let mut elders = Vec::new();
        let (candidates, group) = match record.key().kind {
            kura_node::RecordKind::Transfer => {
                let c = self.committee(address).await?.0;
                let g = strategy.group_size().min(c.len());
                (c, g)
            }
            _ => {
                let (set, e) = self.replica_set(address).await?;
                elders = e;
                let mut c = set.clone();
                let past = self.group(address, strategy.candidates()).await?;
                c.extend(past.into_iter().filter(|p| !set.contains(p)).collect::<Vec<_>>());
                (c, set.len())
            }
        };
        let needed = strategy.write_quorum(group.min(strategy.group_size()));
        let elders_needed = if elders.is_empty() { 0 } else { strategy.write_quorum(elders.len()) };
        let mut out = Replicas { stored: 0, needed, elders_stored: 0, elders_needed, detail: Vec::new(), stale: None };
        let mut spares = candidates.iter().skip(group).copied();
        let send = |vault, attempt: u32| {
            let node = self.node().clone();
            let record = record.clone();
            async move {
                if attempt > 1 {
                    tokio::time::sleep(BACKOFF * (1 << (attempt - 2))).await;
                }
                (vault, attempt, node.request(vault, Request::PutRecord(record)).await)
            }
        };
        let mut sends: FuturesUnordered<_> = candidates[..group].iter().map(|&v| send(v, 1)).collect();
        while let Some((vault, attempt, result)) = sends.next().await {
            match result {
                // A busy group member is asked again: only it can hold the record.
                Err(e) if transient(&e) && attempt < ATTEMPTS_PER_VAULT => sends.push(send(vault, attempt + 1)),
                Ok(Response::Stored) => {
                    out.stored += 1;
                    out.elders_stored += usize::from(elders.contains(&vault));
                }
                // A certified transfer the vault holds already: as good as stored.
                Err(NodeError::Remote {
                    error: RemoteError::Refused(kura_node::RecordError::Ledger(kura_node::ledger::LedgerError::AlreadyApplied(_))),
                    ..
                }) => out.stored += 1,
                Err(NodeError::Remote { error: RemoteError::Stale { held, .. }, .. }) => {
                    out.stale = out.stale.max(Some(held));
                    out.detail.push(format!("{vault}: holds version {held}"));
                }
                // A replica that missed some of an account's transfers refuses one that follows
                // them until it has caught up: the others may hold it.
                Err(NodeError::Remote {
                    error:
                        RemoteError::Refused(kura_node::RecordError::Ledger(
                            e @ (kura_node::ledger::LedgerError::Behind | kura_node::ledger::LedgerError::InsufficientFunds { .. }),
                        )),
                    ..
                }) => out.detail.push(format!("{vault}: {e}")),
                // A refusal of the record itself would be the same from every vault.
                Err(NodeError::Remote { error: error @ RemoteError::Refused(_), .. }) => {
                    return Err(ClientError::Refused(error.to_string()));
                }
                other => {
                    self.forget_group(&address);
                    out.detail.push(format!("{vault}: {}", describe(other)));
                    // A vault that failed is replaced by the next one past the group.
                    if let Some(spare) = spares.next() {
                        sends.push(send(spare, 1));
                    }
                }
            }
        }
        Ok(out)
    }
    /// Creates `key`'s pointer named `name` at version 1, pointing at `target` (or at
    /// [`UNSET`]). Refuses if it exists.
    pub async fn create_pointer(&self, key: &UserKey, name: &str, target: Option<Address>) -> Result<Pointer, ClientError> {
        let signer = key.signing_key();
        let name = Pointer::name_hash(name);
        let address = Pointer::address_of(&signer.verifying_key().to_bytes(), &name);
        if let Some(existing) = self.get_pointer(address).await? {
            return Err(ClientError::PointerExists { address, version: existing.version });
        }
        let pointer = Pointer::sign(&signer, name, 1, target.unwrap_or(UNSET));
        self.put_pointer(pointer.clone()).await?;
        Ok(pointer)
    }

    /// Points `key`'s pointer at `address` to `target`, one version past the newest the
    /// network holds. Returns the new version.
    pub async fn set_pointer(&self, key: &UserKey, address: Address, target: Address) -> Result<Pointer, ClientError> {
        let signer = key.signing_key();
        let current = self.get_pointer(address).await?.ok_or(ClientError::NoPointer(address))?;
        if current.owner != signer.verifying_key().to_bytes() {
            return Err(ClientError::NotYourPointer(address));
        }
        let pointer = Pointer::sign(&signer, current.name, current.version + 1, target);
        self.put_pointer(pointer.clone()).await?;
        Ok(pointer)
    }

    /// Creates or moves `key`'s pointer named `name` to `target`.
    pub async fn publish_pointer(&self, key: &UserKey, name: &str, target: Address) -> Result<Pointer, ClientError> {
        let signer = key.signing_key();
        let address = Pointer::address_of(&signer.verifying_key().to_bytes(), &Pointer::name_hash(name));
        match self.get_pointer(address).await? {
            Some(_) => self.set_pointer(key, address, target).await,
            None => self.create_pointer(key, name, Some(target)).await,
        }
    }

    /// What `address` finally leads to: itself, or, when it is a pointer, the target of the
    /// chain of pointers (at most [`MAX_HOPS`]).
    pub async fn resolve(&self, address: Address) -> Result<Address, ClientError> {
        let mut at = address;
        for _ in 0..MAX_HOPS {
            match self.get_pointer(at).await? {
                Some(p) if p.target == UNSET => {
                    return Err(ClientError::Malformed(format!("pointer {at} points at nothing yet")))
                }
                Some(p) => at = p.target,
                None => return Ok(at),
            }
        }
        Err(ClientError::Malformed(format!("{address}: more than {MAX_HOPS} pointers in a chain")))
    }
}

fn describe(result: Result<Response, NodeError>) -> String {
    match result {
        Ok(other) => format!("unexpected answer {other:?}"),
        Err(e) => e.to_string(),
    }
}

/// How a replicated write went.
pub(crate) struct Replicas {
    pub(crate) stored: usize,
    needed: usize,
    /// Of those stored, how many at the record's closest elders, and how many must be.
    elders_stored: usize,
    elders_needed: usize,
    pub(crate) detail: Vec<String>,
    stale: Option<u64>,
}

impl Replicas {
    fn into_result(self, what: String) -> Result<(), ClientError> {
        if self.stored < self.needed {
            return Err(ClientError::NotStored { what, stored: self.stored, needed: self.needed, detail: self.detail.join("; ") });
        }
        if self.elders_stored < self.elders_needed {
            let detail = format!("stored at {} of its elders, {} needed; {}", self.elders_stored, self.elders_needed, self.detail.join("; "));
            return Err(ClientError::NotStored { what, stored: self.stored, needed: self.needed, detail });
        }
        Ok(())
    }
}
