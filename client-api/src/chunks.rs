//! Storing and fetching one chunk as erasure-coded shards on its close group.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use kura_node::erasure::{self, Coding};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, NodeError, PeerId, Shard};
use tracing::{debug, warn};

use crate::client::Client;
use crate::error::ClientError;

/// Vaults asked for a chunk (its group, and stand-ins past it): see
/// [`kura_node::record::CHUNK_CANDIDATES`].
const CANDIDATES: usize = kura_node::record::CHUNK_CANDIDATES;
/// Most vaults one download remembers as having served bad shards.
const MAX_SHUNNED: usize = 1024;

/// Vaults that served a bad shard during one download: a shard that fails its hash, or whose
/// header does not derive the address asked for. Each is skipped for the rest of the download
/// (cloning shares the set).
#[derive(Debug, Clone, Default)]
pub struct Shunned(Arc<Mutex<HashSet<PeerId>>>);

impl Shunned {
    fn add(&self, vault: PeerId) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() < MAX_SHUNNED {
            set.insert(vault);
        }
    }

    /// Whether `vault` served a bad shard in this download.
    pub fn contains(&self, vault: &PeerId) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(vault)
    }
}

/// Attempts on one vault for transient (transport) failures.
pub(crate) const ATTEMPTS_PER_VAULT: u32 = 3;
/// First retry delay; doubles each attempt.
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// Whether a failure may pass if the same vault is asked again.
pub(crate) fn transient(e: &NodeError) -> bool {
    match e {
        NodeError::Request { .. } => true,
        NodeError::Remote { error, .. } => error.is_load() || matches!(error, RemoteError::Internal(_)),
        _ => false,
    }
}

/// Codes a chunk into shards off the async threads.
async fn encode(content: Bytes, coding: Coding) -> Result<Vec<Shard>, ClientError> {
    tokio::task::spawn_blocking(move || coding.encode(&content))
        .await
        .map_err(|e| ClientError::Encryption(e.to_string()))?
        .map_err(|e| ClientError::Malformed(e.to_string()))
}

impl Client {
    async fn candidates(&self, chunk: Address) -> Result<Vec<PeerId>, ClientError> {
        let mut delay = BACKOFF;
        for attempt in 1..=ATTEMPTS_PER_VAULT {
            match self.node().closest_vaults(chunk, CANDIDATES).await {
                Ok(peers) if !peers.is_empty() => return Ok(peers),
                Ok(_) => debug!(%chunk, attempt, "lookup found no vaults"),
                Err(e) => debug!(%chunk, attempt, error = %e, "lookup failed"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Err(ClientError::ChunkUnavailable {
            chunk,
            found: 0,
            needed: 0,
            asked: 0,
            detail: "no vaults found for its address".into(),
        })
    }

    /// Stores `content` as `coding.n()` shards, shard `i` on the `i`-th closest vault to the
    /// chunk's storage address; a shard a vault refuses goes to the next-closest vault that
    /// accepts. Returns the storage address (which commits to the coding and shard hashes).
    pub async fn put_chunk(&self, content: Bytes, coding: Coding) -> Result<Address, ClientError> {
        let shards = encode(content.clone(), coding).await?;
        let n = shards.len();
        let chunk = shards[0].header.address();
        // First sends take the shards themselves; the rare resend codes the chunk again rather
        // than every send copying a shard it will almost never need.
        let mut resend: Option<Vec<Shard>> = None;
        let candidates = self.candidates(chunk).await?;
        let mut spare = candidates.iter().skip(n).copied();
        let mut used: HashSet<PeerId> = HashSet::new();
        let mut tried: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut inflight = FuturesUnordered::new();
        let send = |shard: Shard, vault: PeerId, attempt: u32| {
            let client = self.clone();
            async move {
                if attempt > 1 {
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 2)).await;
                }
                let index = usize::from(shard.header.index);
                let result = client.send_shard(vault, shard).await;
                (index, vault, attempt, result)
            }
        };
        for (i, shard) in shards.into_iter().enumerate() {
            // With fewer vaults than shards, some vaults hold several shards of one chunk.
            let vault = candidates[i % candidates.len()];
            used.insert(vault);
            inflight.push(send(shard, vault, 1));
        }
        while let Some((i, vault, attempt, result)) = inflight.next().await {
            let next = match result {
                Ok(Response::Stored) => continue,
                Ok(Response::Owed(_)) => continue, // billed by send_shard
                Ok(other) => {
                    tried[i].push(format!("{vault}: unexpected answer {other:?}"));
                    spare.find(|p| !used.contains(p)).map(|p| (p, 1))
                }
                Err(e) if transient(&e) && attempt < ATTEMPTS_PER_VAULT => {
                    tried[i].push(format!("{vault}: {e} (retrying)"));
                    Some((vault, attempt + 1))
                }
                Err(e) => {
                    tried[i].push(format!("{vault}: {e}"));
                    spare.find(|p| !used.contains(p)).map(|p| (p, 1))
                }
            };
            match next {
                Some((next, attempt)) => {
                    used.insert(next);
                    if resend.is_none() {
                        resend = Some(encode(content.clone(), coding).await?);
                    }
                    let shard = resend.as_ref().map(|all| all[i].clone()).ok_or(ClientError::Malformed("no shard".into()))?;
                    inflight.push(send(shard, next, attempt));
                }
                None => {
                    return Err(ClientError::StoreShard { chunk, shard: i as u8, tried: tried[i].join("; ") });
                }
            }
        }
        Ok(chunk)
    }

    /// Fetches the chunk stored at `chunk`: asks the whole close group at once, keeps only
    /// shards that verify and whose header derives the address (so the coding is the one the
    /// address commits to), decodes from the first `k`, checks the content hash, and asks the
    /// vaults behind the close group when the group cannot deliver.
    pub async fn get_chunk(&self, chunk: Address) -> Result<Bytes, ClientError> {
        self.get_chunk_shunning(chunk, &Shunned::default()).await
    }

    /// [`Client::get_chunk`], skipping the vaults in `shunned` and adding to it every vault
    /// that serves a bad shard.
    pub async fn get_chunk_shunning(&self, chunk: Address, shunned: &Shunned) -> Result<Bytes, ClientError> {
        let mut candidates = self.candidates(chunk).await?;
        candidates.retain(|v| !shunned.contains(v));
        let group = self.config.coding.n().min(candidates.len());
        let mut shards: Vec<Shard> = Vec::new();
        let mut detail = Vec::new();
        let mut asked = 0;
        for wave in [&candidates[..group], &candidates[group..]] {
            let mut replies: FuturesUnordered<_> = wave
                .iter()
                .map(|&vault| {
                    let node = self.node().clone();
                    async move { (vault, node.request(vault, Request::GetShards { chunk }).await) }
                })
                .collect();
            asked += wave.len();
            while let Some((vault, reply)) = replies.next().await {
                match reply {
                    Ok(Response::Shards(got)) => {
                        let before = shards.len();
                        let (good, lie) = erasure::sift(chunk, got);
                        if let Some(index) = lie {
                            warn!(%vault, %chunk, index, "vault served a bad shard; skipping it");
                            detail.push(format!("{vault}: bad shard {index}"));
                            shunned.add(vault);
                        }
                        for s in good {
                            if !shards.iter().any(|h| h.header.index == s.header.index) {
                                shards.push(s);
                            }
                        }
                        if shards.len() == before {
                            detail.push(format!("{vault}: none"));
                        }
                    }
                    Ok(other) => detail.push(format!("{vault}: unexpected {other:?}")),
                    Err(e) => detail.push(format!("{vault}: {e}")),
                }
                let k = shards.first().map_or(usize::MAX, |s| usize::from(s.header.k));
                if shards.len() >= k {
                    // Verified on arrival above; decode without hashing them again.
                    let attempt = std::mem::take(&mut shards);
                    let (decoded, back) = tokio::task::spawn_blocking(move || {
                        (erasure::decode_verified(chunk, &attempt), attempt)
                    })
                    .await
                    .map_err(|e| ClientError::Encryption(e.to_string()))?;
                    match decoded {
                        Ok(bytes) => return Ok(Bytes::from(bytes)),
                        Err(e) => {
                            detail.push(format!("decode: {e}"));
                            shards = back;
                        }
                    }
                }
            }
        }
        let needed = shards.first().map_or(usize::from(self.config.coding.k), |s| usize::from(s.header.k));
        let distinct: HashSet<u8> = shards.iter().map(|s| s.header.index).collect();
        Err(ClientError::ChunkUnavailable { chunk, found: distinct.len(), needed, asked, detail: detail.join("; ") })
    }
}
