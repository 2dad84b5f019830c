//! Pointers as a vault keeps them: held whole by every member of the close group of their
//! address, one version written at a time, replaced only by a version that supersedes the one
//! held (a higher version its owner signed), and spread to the rest of the group by repair as
//! soon as a new version is stored here.
//!
//! Owns: nothing of its own. Talks to: the records (storing), repair (spreading, and the
//! replica-repair routine every replicated kind shares).

use kura_node::wire::RemoteError;
use kura_node::{Address, NodeError, Record, RecordKey};

use crate::context::Ctx;
use crate::records::{Guard, Held, KindRules, Records};
use crate::repair::Repair;

/// The pointer rules of a vault.
pub(crate) struct Pointers {
    ctx: Ctx,
    records: Records,
    repair: Repair,
}

impl Pointers {
    /// The pointer rules of the vault whose context is `ctx`.
    pub(crate) fn new(ctx: Ctx, records: Records, repair: Repair) -> Pointers {
        Pointers { ctx, records, repair }
    }
}

#[async_trait::async_trait]
impl KindRules for Pointers {
    async fn admit(&self, record: &Record, key: &RecordKey) -> Result<Guard, RemoteError> {
        self.ctx.responsible(key.address, record.strategy().group_size()).await?;
        // Versions of one pointer are written one at a time.
        self.records.lock_address(key.address)
    }

    fn held_already(&self, held: &Record, record: &Record, key: &RecordKey) -> Result<Held, RemoteError> {
        if held == record {
            return Ok(Held::Same);
        }
        // Only a newer version its owner signed replaces the one held.
        if !record.supersedes(held) {
            let version = match held {
                Record::Pointer(p) => p.version,
                _ => 0,
            };
            return Err(RemoteError::Stale { key: *key, held: version });
        }
        Ok(Held::Superseded)
    }

    fn stored(&self, _record: &Record, key: &RecordKey) {
        // The repair worker brings the rest of the group up to this version.
        self.repair.spread(*key);
    }

    async fn repair(&self, address: Address) -> Result<(), NodeError> {
        self.repair.repair_record(RecordKey::pointer(address)).await
    }
}
