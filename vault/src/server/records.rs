//! A vault's records on its own disk: checked before they are stored, one writer per chunk
//! at a time, stored records never replaced by different ones (only a pointer, by a newer
//! version its owner signed), reads off the async threads, and shards placed on other vaults.

use super::*;

impl Vault {

    /// Validates a record off the async threads (hashing a shard is ~1 ms per MiB).
    pub(super) async fn validated(record: Record) -> Result<(Record, RecordKey), RemoteError> {
        tokio::task::spawn_blocking(move || record.validate().map(|()| (record.key(), record)))
            .await
            .map_err(internal)?
            .map(|(key, record)| (record, key))
            .map_err(|e| RemoteError::Invalid(e.to_string()))
    }

    /// The vaults responsible for `address`, closest first (its `n` closest, and the placement
    /// window past them), or an error when this vault is not among them.
    pub(crate) async fn responsible(&self, address: Address, n: usize) -> Result<Vec<PeerId>, RemoteError> {
        let window = self.shared.config.placement_window.max(n);
        let vaults = self.node.local_closest(address, window).await.map_err(internal)?;
        if !vaults.contains(&self.node.peer_id()) {
            return Err(RemoteError::NotResponsible(address));
        }
        Ok(vaults)
    }

    /// Holds `address` against other writes here until the guard drops, or answers busy.
    pub(super) fn lock_address(&self, address: Address) -> Result<Storing<'_>, RemoteError> {
        if !self.shared.storing.lock().unwrap_or_else(|e| e.into_inner()).insert(address) {
            return Err(RemoteError::Busy);
        }
        Ok(Storing(&self.shared, address))
    }

    pub(crate) async fn put_shard(&self, shard: Shard) -> Result<(), RemoteError> {
        let (record, key) = Self::validated(Record::Shard(shard)).await?;
        let chunk = key.address;
        let n = record.strategy().group_size();
        let responsible = self.responsible(chunk, n).await?;
        // Checking what is held and storing must not interleave with another shard of the same
        // chunk (two repairers placing on the same vault at once): the second waits its turn.
        let _storing = self.lock_address(chunk)?;
        let held = self.shared.store.keys_at(RecordKind::Shard, &chunk);
        // A shard's key derives from its checked header and data, so the one already stored
        // under the key (if it still reads) is this very shard: stored records are never
        // replaced, and a resend is simply acknowledged.
        if held.contains(&key) && self.read_record(key).await.map_err(internal)?.is_some() {
            return Ok(());
        }
        // One shard of a chunk per vault, so that losing a vault loses one shard; only a
        // network smaller than the close group needs vaults to hold several.
        let group = responsible[..n.min(responsible.len())].to_vec();
        if let Some(other) = held.iter().find(|k| **k != key) {
            if group.len() >= n {
                return Err(RemoteError::Invalid(format!("already holds {other}")));
            }
        }
        self.write_record(key, &record).await?;
        if self.shared.config.repair {
            let mut noted = self.shared.stored_groups.lock().unwrap_or_else(|e| e.into_inner());
            if noted.len() < MEMORY_LEN {
                noted.push((chunk, group));
            }
        }
        Ok(())
    }

    /// The groups of chunks stored since the last call (see [`Shared::stored_groups`]).
    pub(crate) fn take_stored_groups(&self) -> Vec<(Address, Vec<PeerId>)> {
        std::mem::take(&mut *self.shared.stored_groups.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stores a whole record of a replicated kind, unless a record that supersedes it is held.
    pub(crate) async fn put_record(&self, record: Record) -> Result<(), RemoteError> {
        if record.kind() == RecordKind::Shard {
            return Err(RemoteError::Invalid(format!("{} records are stored with PutShard", record.kind().name())));
        }
        let (record, key) = Self::validated(record).await?;
        if let Record::Message(m) = &record {
            self.admit_message(m, &key)?;
        }
        match &record {
            // An account's entries are held by its committee, nothing wider.
            Record::Transfer(_) => drop(self.committee_member(key.address).await?),
            _ => drop(self.responsible(key.address, record.strategy().group_size()).await?),
        }
        // Versions of one pointer are written one at a time; the messages of an inbox are
        // each a record of their own, so two senders never make each other wait.
        let _storing = match &record {
            Record::Message(m) => Some(self.lock_address(Address(m.id()))?),
            Record::Transfer(_) => None,
            _ => Some(self.lock_address(key.address)?),
        };
        let _turn = match &record {
            Record::Transfer(entry) => {
                // A replay is answered before the certificate is checked: for an old transfer
                // whose signers have gone, checking asks the account's group.
                if self.read_record(key).await.map_err(internal)?.is_some() {
                    return Err(already_applied(&key));
                }
                self.check_entry(entry).await?;
                Some(self.ledger().turn(&key.address).await)
            }
            _ => None,
        };
        if let Some(held) = self.read_record(key).await.map_err(internal)? {
            if key.kind == RecordKind::Transfer {
                // Its key is the transfer's id: this very certificate is applied already.
                return Err(already_applied(&key));
            }
            // A message's key is its id, which covers all but the work: one held under the key
            // is this message (perhaps with another nonce).
            if held == record || key.kind == RecordKind::Message {
                return Ok(());
            }
            if !record.supersedes(&held) {
                let version = match &held {
                    Record::Pointer(p) => p.version,
                    _ => 0,
                };
                return Err(RemoteError::Stale { key, held: version });
            }
        }
        let admission = match &record {
            Record::Transfer(entry) => Some(self.admit_entry(entry).await?),
            _ => None,
        };
        self.write_record(key, &record).await?;
        match &record {
            // Its sender stores it on the whole group; repair spreads it when the group changes.
            Record::Message(m) => self.inbox_ledger().held(key, m.expires),
            // Its payer stores it on the whole group; a replica that missed it catches up.
            Record::Transfer(entry) => self.entry_stored(entry),
            // Spread it: the repair worker brings the rest of the group up to this version.
            _ => {
                let _ = self.shared.updated.try_send(key);
            }
        }
        if let Some(crate::ledger::Admission::Contested(nonce)) = admission {
            // Kept as evidence; the sender learns it was not taken as a transfer.
            return Err(RemoteError::Refused(kura_node::RecordError::Ledger(kura_node::ledger::LedgerError::DoubleSpend(nonce))));
        }
        Ok(())
    }

    /// Writes a checked record in the disk format.
    pub(super) async fn write_record(&self, key: RecordKey, record: &Record) -> Result<(), RemoteError> {
        let bytes = stored::encode(record);
        let store = self.shared.store.clone();
        let permit = self.write_permit().ok_or(RemoteError::Busy)?;
        let written = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            store.put(&key, &bytes)
        });
        match written.await.map_err(internal)? {
            Ok(()) => {
                // Held again: losing it from now on is a loss, not a hand-on.
                self.shared.released.forget(&key);
                Ok(())
            }
            Err(StoreError::Full { used, capacity, wanted }) => {
                self.shared.refused_full.fetch_add(1, Ordering::Relaxed);
                Err(RemoteError::Full { used, capacity, wanted })
            }
            Err(e) => {
                warn!(%key, error = %e, "storing a record failed");
                Err(internal(e))
            }
        }
    }

    /// The record stored under `key`, read and checked against the key; one that does not
    /// read or check out is moved aside and counted, never returned.
    pub(crate) async fn read_record(&self, key: RecordKey) -> Result<Option<Record>, StoreError> {
        let mut records = self.read_records(vec![key]).await?;
        Ok(records.pop())
    }

    /// [`Vault::read_record`] for many keys at once; returns those that check out.
    pub(crate) async fn read_records(&self, keys: Vec<RecordKey>) -> Result<Vec<Record>, StoreError> {
        let store = self.shared.store.clone();
        let (records, corrupt) = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            let mut corrupt = 0u64;
            for key in keys {
                let Some(bytes) = store.get(&key)? else { continue };
                let record = stored::decode(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.validate_for(&key).map(|()| r).map_err(|e| e.to_string()));
                match record {
                    Ok(r) => records.push(r),
                    Err(reason) => {
                        corrupt += 1;
                        store.quarantine(&key, &reason)?;
                    }
                }
            }
            Ok::<_, StoreError>((records, corrupt))
        })
        .await
        .map_err(|e| StoreError::Index(e.to_string()))??;
        self.shared.corrupt_records.fetch_add(corrupt, Ordering::Relaxed);
        Ok(records)
    }

    /// Answers a storage audit of shard `index` of `chunk`: reads it (verifying it, so a
    /// damaged or vanished one is dropped and reported as not held) and proves the slices asked.
    /// A shard handed on since the auditor asked what this vault holds is reported as such.
    pub(super) async fn prove(&self, chunk: Address, index: u8, challenge: Challenge) -> Result<Vec<u8>, RemoteError> {
        let shards = self.read_shards(chunk).await.map_err(internal)?;
        let Some(shard) = shards.into_iter().find(|s| s.header.index == index) else {
            if self.released(RecordKey::shard(chunk, index)) {
                return Err(RemoteError::Released { chunk, index });
            }
            return Err(RemoteError::NotHeld { chunk, index });
        };
        tokio::task::spawn_blocking(move || audit::prove(&shard.data, &challenge))
            .await
            .map_err(internal)?
            .map_err(|e| RemoteError::Invalid(e.to_string()))
    }

    /// The verified shards of `chunk` held here that fit in one answer.
    pub(super) async fn get_shards(&self, chunk: Address) -> Result<Vec<Shard>, RemoteError> {
        let mut shards = self.read_shards(chunk).await.map_err(internal)?;
        let mut size = 0usize;
        shards.retain(|s| {
            size += s.data.len() + 1024;
            size <= MAX_FRAME_LEN - 64 * 1024
        });
        Ok(shards)
    }

    /// Every verified shard of `chunk` held here. Corrupt ones are moved aside and counted,
    /// never returned.
    pub(crate) async fn read_shards(&self, chunk: Address) -> Result<Vec<Shard>, StoreError> {
        let keys = self.shared.store.keys_at(RecordKind::Shard, &chunk);
        let records = self.read_records(keys).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| match r {
                Record::Shard(s) => Some(s),
                _ => None,
            })
            .collect())
    }

    /// Deletes a shard this vault is no longer responsible for (handed over, or held by a
    /// closer vault), remembering that it did.
    pub(crate) async fn release(&self, key: RecordKey) {
        // Noted first: an audit answered while the file goes must not find it merely missing.
        self.shared.released.note(key);
        self.delete_record(key).await
    }

    /// Deletes a record this vault should no longer keep (an expired or deleted message).
    pub(crate) async fn delete_record(&self, key: RecordKey) {
        self.entry_gone(&key);
        let store = self.shared.store.clone();
        let Some(permit) = self.write_permit() else { return };
        let deleted = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            store.delete(&key)
        });
        match deleted.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(%key, error = %e, "deleting a record failed"),
            Err(e) => warn!(%key, error = %e, "deleting a record failed"),
        }
    }

    /// Stores `shard` on `peer` for repair or handover; a peer that refuses it for want of
    /// room is remembered as full.
    pub(crate) async fn place(&self, peer: PeerId, shard: Shard) -> Result<(), NodeError> {
        match self.node.request(peer, Request::PutShard(shard)).await {
            Ok(Response::Stored) => Ok(()),
            Ok(_) => Err(NodeError::UnexpectedResponse { peer, request: "PutShard" }),
            Err(e) => {
                if let NodeError::Remote { error: RemoteError::Full { .. }, .. } = &e {
                    self.shared.full.note(peer);
                }
                Err(e)
            }
        }
    }

    /// Whether `peer` refused a shard for want of room lately: repair counts it as not
    /// answering, so that nothing is offered to it again and again.
    pub(crate) fn full_lately(&self, peer: &PeerId) -> bool {
        self.shared.full.contains(peer)
    }

    /// Whether this vault released `key` lately.
    pub(super) fn released(&self, key: RecordKey) -> bool {
        self.shared.released.contains(&key)
    }
}
