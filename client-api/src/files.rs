//! Files and directory trees: self-encrypt → erasure-code → close groups, and back.
//!
//! Uploads stream: a blocking thread reads the file and runs `self_encryption::stream_encrypt`;
//! each chunk it yields is stored by its own task, and a semaphore on bytes in flight holds the
//! reader back, so memory stays flat whatever the file size. Downloads resolve the data map,
//! then `streaming_decrypt` pulls chunks through a prefetcher that keeps the next chunks in
//! flight while the current batch decrypts, and writes to a temporary file renamed into place
//! only when the whole file is back.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use indicatif::ProgressBar;
use kura_node::Address;
use self_encryption::{DataMap, XorName};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::chunks::Shunned;
use crate::client::Client;
use crate::error::ClientError;
use crate::keys::{Convergence, UserKey};
use crate::root::{ChunkRef, Content, DirEntry, EntryKind, RootRecord, Visibility};
use crate::tree::{Extractor, TreePlan};

/// How much of a file is read per step.
const READ_SIZE: usize = 1 << 20;
/// Largest directory manifest accepted when reading one back.
const MAX_MANIFEST: usize = 256 << 20;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io { path: path.to_path_buf(), source }
}

fn enc_err(e: self_encryption::Error) -> ClientError {
    ClientError::Encryption(e.to_string())
}

fn join_err(e: tokio::task::JoinError) -> ClientError {
    ClientError::Encryption(format!("worker failed: {e}"))
}

/// Reads a file as the byte pieces `stream_encrypt` consumes, remembering any read error.
struct Pieces<R> {
    reader: R,
    error: Arc<Mutex<Option<std::io::Error>>>,
    progress: ProgressBar,
    /// The owner's keystream for private content, and the offset reached.
    layer: Option<(Convergence, u64)>,
}

impl<R: Read> Iterator for Pieces<R> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let mut buf = vec![0u8; READ_SIZE];
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    return None;
                }
            }
        }
        if filled == 0 {
            return None;
        }
        buf.truncate(filled);
        if let Some((layer, offset)) = &mut self.layer {
            layer.apply(*offset, &mut buf);
            *offset += filled as u64;
        }
        self.progress.inc(filled as u64);
        Some(Bytes::from(buf))
    }
}

/// The storage addresses of the chunks `content` becomes when stored with `visibility` by the
/// owner of `key` (without its root record): what a vault would hold for it. Private content
/// carries its owner's convergence keystream, so only the owner can compute these.
pub fn chunk_addresses(content: &[u8], visibility: Visibility, key: &UserKey, coding: kura_node::erasure::Coding) -> Result<Vec<Address>, ClientError> {
    if content.len() < self_encryption::MIN_ENCRYPTABLE_BYTES {
        return Ok(Vec::new());
    }
    let mut bytes = content.to_vec();
    if visibility == Visibility::Private {
        key.convergence().apply(0, &mut bytes);
    }
    let (_, chunks) = self_encryption::encrypt(Bytes::from(bytes)).map_err(enc_err)?;
    chunks.iter().map(|c| coding.address_of(&c.content).map_err(|e| ClientError::Malformed(e.to_string()))).collect()
}

impl Client {
    /// Stores a file or a directory tree and returns its address. Private content is opened
    /// only with `key`; public content by anyone holding the address.
    pub async fn put_path(
        &self,
        path: &Path,
        visibility: Visibility,
        key: &UserKey,
        progress: &ProgressBar,
    ) -> Result<Address, ClientError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        let layer = (visibility == Visibility::Private).then(|| key.convergence());
        if self.config.wallet.is_some() {
            // Priced and funded before a byte is stored.
            let size = if meta.is_dir() { tree_size(path)? } else { meta.len() };
            let estimate = self.estimate(size).await?;
            if let Some(max) = self.config.max_cost {
                if estimate.cost > max {
                    return Err(ClientError::TooExpensive { cost: estimate.cost, max });
                }
            }
            self.ensure_funds(estimate.cost).await?;
        }
        let record = if meta.is_dir() {
            progress.set_length(tree_size(path)?);
            self.put_dir(path, layer.as_ref(), progress).await?
        } else {
            progress.set_length(meta.len());
            self.put_file_content(path, layer.as_ref(), progress).await?.into()
        };
        let sealed = record.seal(visibility, key)?;
        let address = self.put_chunk(Bytes::from(sealed), self.config.coding).await?;
        self.settle().await?;
        progress.finish();
        Ok(address)
    }

    /// Stores a file's content; returns the record that leads to it.
    async fn put_file_content(
        &self,
        path: &Path,
        layer: Option<&Convergence>,
        progress: &ProgressBar,
    ) -> Result<Content, ClientError> {
        let file = fs::File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        self.put_reader(file, size, path, layer, progress).await
    }

    /// Stores `size` bytes from `reader` (named `what` in errors), under the owner's keystream
    /// `layer` when private.
    async fn put_reader<R: Read + Send + 'static>(
        &self,
        reader: R,
        size: u64,
        what: &Path,
        layer: Option<&Convergence>,
        progress: &ProgressBar,
    ) -> Result<Content, ClientError> {
        let reader = reader.take(size);
        if (size as usize) < self_encryption::MIN_ENCRYPTABLE_BYTES {
            let mut content = Vec::new();
            { reader }.read_to_end(&mut content).map_err(io_err(what))?;
            progress.inc(content.len() as u64);
            return Ok(Content::Inline(content));
        }
        let kib_in_flight = (self.config.max_bytes_in_flight / 1024).max(8192) as u32;
        let budget = Arc::new(Semaphore::new(kib_in_flight as usize));
        let (tx, mut rx) = mpsc::channel::<(XorName, Bytes, tokio::sync::OwnedSemaphorePermit)>(64);
        let read_error = Arc::new(Mutex::new(None));
        let pieces = Pieces { reader, error: read_error.clone(), progress: progress.clone(), layer: layer.map(|l| (l.clone(), 0)) };
        let handle = Handle::current();
        let encrypt_budget = budget.clone();
        let encrypter = tokio::task::spawn_blocking(move || -> Result<Option<DataMap>, ClientError> {
            let mut stream = self_encryption::stream_encrypt(size as usize, pieces).map_err(enc_err)?;
            for item in stream.chunks() {
                let (name, content) = item.map_err(enc_err)?;
                let kib = ((content.len() / 1024) as u32 + 1).min(kib_in_flight);
                let Ok(permit) = handle.block_on(encrypt_budget.clone().acquire_many_owned(kib)) else {
                    return Ok(None);
                };
                if tx.blocking_send((name, content, permit)).is_err() {
                    return Ok(None); // the uploader stopped on an error; it reports it
                }
            }
            Ok(stream.into_datamap())
        });

        let mut uploads = JoinSet::new();
        let coding = self.config.coding;
        let mut failure = None;
        let mut chunks = Vec::new();
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some((name, content, permit)) => {
                        let client = self.clone();
                        uploads.spawn(async move {
                            let stored = client.put_chunk(content, coding).await;
                            drop(permit);
                            let stored = match stored {
                                Ok(a) => client.settle_if_long().await.map(|()| a),
                                Err(e) => Err(e),
                            };
                            stored.map(|address| ChunkRef { content: Address(name.0), address })
                        });
                    }
                    None => break,
                },
                Some(done) = uploads.join_next(), if !uploads.is_empty() => {
                    match done.map_err(join_err).and_then(|r| r) {
                        Ok(chunk) => chunks.push(chunk),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        if let Some(e) = failure {
            drop(rx);
            uploads.abort_all();
            budget.close();
            let _ = encrypter.await;
            return Err(e);
        }
        while let Some(done) = uploads.join_next().await {
            chunks.push(done.map_err(join_err)??);
        }
        chunks.sort_by_key(|c| c.content);
        chunks.dedup();
        let data_map = encrypter.await.map_err(join_err)??;
        if let Some(e) = read_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(ClientError::Io { path: what.to_path_buf(), source: e });
        }
        let data_map = data_map.ok_or_else(|| ClientError::Encryption("encryption ended without a data map".into()))?;
        let data_map = data_map.to_bytes().map_err(|e| ClientError::Encryption(e.to_string()))?;
        Ok(Content::File { data_map, size, chunks })
    }

    async fn put_dir(&self, dir: &Path, layer: Option<&Convergence>, progress: &ProgressBar) -> Result<RootRecord, ClientError> {
        let mut entries = Vec::new();
        for path in walk(dir)? {
            let rel = path.strip_prefix(dir).map_err(|_| ClientError::Malformed(format!("{} escapes the tree", path.display())))?;
            let rel_str = rel
                .components()
                .map(|c| c.as_os_str().to_str())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ClientError::Malformed(format!("{} is not UTF-8", rel.display())))?
                .join("/");
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).map_err(io_err(&path))?;
                EntryKind::Symlink(target.to_string_lossy().into_owned())
            } else if meta.is_dir() {
                EntryKind::Dir
            } else if meta.is_file() {
                let content = Box::pin(self.put_file_content(&path, layer, progress)).await?;
                EntryKind::File { size: meta.len(), content }
            } else {
                continue; // sockets, fifos, devices: not content
            };
            entries.push(DirEntry { path: rel_str, mode, kind });
        }
        let manifest = postcard::to_stdvec(&entries).map_err(|e| ClientError::Malformed(e.to_string()))?;
        let len = manifest.len() as u64;
        let manifest = self
            .put_reader(std::io::Cursor::new(manifest), len, dir, layer, &ProgressBar::hidden())
            .await?;
        Ok(RootRecord::Directory { manifest })
    }

    /// Fetches what `address` leads to into `out` (a file, or a directory for a tree). Returns
    /// the root record and whether it was public or private.
    pub async fn get_path(
        &self,
        address: Address,
        out: &Path,
        key: &UserKey,
        progress: &ProgressBar,
    ) -> Result<(RootRecord, Visibility), ClientError> {
        let sealed = self.get_chunk(address).await?;
        let (record, visibility, layered) = RootRecord::open_layered(&sealed, key)?;
        let layer = layered.then(|| key.convergence());
        match &record {
            RootRecord::Directory { manifest } => {
                let bytes = self.get_to_vec(manifest, MAX_MANIFEST, layer.as_ref()).await?;
                let (entries, rest) = postcard::take_from_bytes::<Vec<DirEntry>>(&bytes)
                    .map_err(|e| ClientError::Malformed(format!("directory manifest: {e}")))?;
                if !rest.is_empty() {
                    return Err(ClientError::Malformed("directory manifest has trailing bytes".into()));
                }
                self.restore_tree(TreePlan::check(entries)?, out, layer.as_ref(), progress).await?;
            }
            file => {
                let content = file.content().ok_or_else(|| ClientError::Malformed("not file content".into()))?;
                progress.set_length(content.size());
                self.get_to_file(&content, out, layer.as_ref(), progress).await?;
            }
        }
        progress.finish();
        Ok((record, visibility))
    }

    /// Writes a checked tree under `out`: folders, then files (each created new, without
    /// following links, and removed again if its download fails), then links, then the
    /// folders' modes, deepest first so a read-only folder does not block its own children.
    async fn restore_tree(
        &self,
        plan: TreePlan,
        out: &Path,
        layer: Option<&Convergence>,
        progress: &ProgressBar,
    ) -> Result<(), ClientError> {
        progress.set_length(plan.total_bytes);
        let tree = Extractor::open(out)?;
        for (path, _) in &plan.dirs {
            tree.make_dir(path)?;
        }
        for f in &plan.files {
            let file = tree.create_file(&f.path)?;
            let shown = out.join(f.path.join("/"));
            let written =
                self.get_into(&f.content, std::io::BufWriter::with_capacity(1 << 20, file), &shown, layer, progress).await;
            let finished = written.and_then(|w| w.into_inner().map_err(|e| io_err(&shown)(e.into_error())));
            match finished.and_then(|file| tree.finish_file(&f.path, &file, f.mode)) {
                Ok(()) => {}
                Err(e) => {
                    tree.remove_file(&f.path);
                    return Err(e);
                }
            }
        }
        for (path, target) in &plan.links {
            tree.link(path, target)?;
        }
        for (path, mode) in plan.dirs.iter().rev() {
            tree.set_dir_mode(path, *mode)?;
        }
        Ok(())
    }

    /// Writes a file's content to `out` through a temporary file renamed into place at the end.
    async fn get_to_file(
        &self,
        record: &Content,
        out: &Path,
        layer: Option<&Convergence>,
        progress: &ProgressBar,
    ) -> Result<(), ClientError> {
        let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        // A fresh name, created exclusively and not through a link: nothing already in the
        // folder can redirect the write.
        let tmp = out.with_file_name(format!(".{name}.{:016x}.kura-partial", rand::random::<u64>()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc_nofollow())
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let written = self.get_into(record, std::io::BufWriter::with_capacity(1 << 20, file), &tmp, layer, progress).await;
        match written {
            Ok(mut writer) => {
                writer.flush().map_err(io_err(&tmp))?;
                let file = writer.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
                file.sync_all().map_err(io_err(&tmp))?;
                fs::rename(&tmp, out).map_err(io_err(out))
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    async fn get_to_vec(&self, record: &Content, limit: usize, layer: Option<&Convergence>) -> Result<Vec<u8>, ClientError> {
        let size = record.size();
        if size > limit as u64 {
            return Err(ClientError::Malformed(format!("content of {size} bytes exceeds the limit of {limit}")));
        }
        self.get_into(record, Vec::with_capacity(size as usize), Path::new("<memory>"), layer, &ProgressBar::hidden())
            .await
    }

    /// Streams a content record's bytes into `writer`.
    async fn get_into<W: Write + Send + 'static>(
        &self,
        record: &Content,
        mut writer: W,
        what: &Path,
        layer: Option<&Convergence>,
        progress: &ProgressBar,
    ) -> Result<W, ClientError> {
        let (data_map, size, chunks) = match record {
            Content::Inline(bytes) => {
                writer.write_all(bytes).map_err(io_err(what))?;
                progress.inc(bytes.len() as u64);
                return Ok(writer);
            }
            Content::File { data_map, size, chunks } => (data_map, *size, chunks),
        };
        let data_map = DataMap::from_bytes(data_map).map_err(|e| ClientError::Malformed(format!("data map: {e}")))?;
        let places: HashMap<XorName, Address> = chunks.iter().map(|c| (XorName(c.content.0), c.address)).collect();
        let prefetch = Arc::new(Prefetcher::new(self.clone(), self.config.prefetch, places));
        let handle = Handle::current();
        let batch = self.config.download_batch.max(1);
        let what = what.to_path_buf();
        let progress = progress.clone();
        let layer = layer.cloned();
        tokio::task::spawn_blocking(move || -> Result<W, ClientError> {
            let fetch = |names: &[(usize, XorName)]| prefetch.fetch(&handle, names);
            // Resolve a shrunk data map first, so the prefetcher knows every chunk in order.
            let root = if data_map.is_child() {
                self_encryption::get_root_data_map_parallel(data_map, &fetch).map_err(|e| prefetch.error_or(e))?
            } else {
                data_map
            };
            prefetch.set_order(root.infos().iter().map(|i| i.dst_hash).collect());
            let stream = self_encryption::streaming_decrypt_with_batch_size(&root, &fetch, batch)
                .map_err(|e| prefetch.error_or(e))?;
            let mut written = 0u64;
            for piece in stream {
                let piece = piece.map_err(|e| prefetch.error_or(e))?;
                // Stop at the declared size: a crafted data map cannot fill the disk.
                if written + piece.len() as u64 > size {
                    return Err(ClientError::Malformed(format!("data map decrypts to more than the {size} bytes declared")));
                }
                let n = piece.len() as u64;
                match &layer {
                    Some(layer) => {
                        // Decrypted pieces are usually owned by nothing else: no copy then.
                        let mut plain = piece.try_into_mut().unwrap_or_else(|shared| shared.as_ref().into());
                        layer.apply(written, &mut plain);
                        writer.write_all(&plain)
                    }
                    None => writer.write_all(&piece),
                }
                .map_err(io_err(&what))?;
                written += n;
                progress.inc(n);
            }
            if written != size {
                return Err(ClientError::Malformed(format!("data map promised {size} bytes, decrypted {written}")));
            }
            Ok(writer)
        })
        .await
        .map_err(join_err)?
    }
}

/// Keeps chunk fetches in flight ahead of `streaming_decrypt`, which otherwise fetches a batch,
/// decrypts it, and only then asks for the next.
struct Prefetcher {
    client: Client,
    ahead: usize,
    /// Where each chunk (by self-encryption's name, its content hash) is stored.
    places: HashMap<XorName, Address>,
    /// Vaults that served a bad shard in this download: not asked again.
    shunned: Shunned,
    state: Mutex<PrefetchState>,
    error: Mutex<Option<ClientError>>,
}

#[derive(Default)]
struct PrefetchState {
    order: Vec<XorName>,
    next: usize,
    pending: HashMap<XorName, tokio::task::JoinHandle<Result<Bytes, ClientError>>>,
}

impl Prefetcher {
    fn new(client: Client, ahead: usize, places: HashMap<XorName, Address>) -> Self {
        Prefetcher {
            client,
            ahead,
            places,
            shunned: Shunned::default(),
            state: Mutex::new(PrefetchState::default()),
            error: Mutex::new(None),
        }
    }

    fn set_order(&self, order: Vec<XorName>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.order = order;
        st.next = 0;
    }

    /// The network error behind a self_encryption failure, if one caused it.
    fn error_or(&self, e: self_encryption::Error) -> ClientError {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_else(|| enc_err(e))
    }

    fn spawn(&self, handle: &Handle, name: XorName) -> tokio::task::JoinHandle<Result<Bytes, ClientError>> {
        let client = self.client.clone();
        let shunned = self.shunned.clone();
        let place = self.places.get(&name).copied();
        handle.spawn(async move {
            let address = place.ok_or_else(|| {
                ClientError::Malformed(format!("data map names chunk {} that the file record does not place", Address(name.0)))
            })?;
            let content = client.get_chunk_shunning(address, &shunned).await?;
            // The address commits to the content hash, and decoding checked it; this catches a
            // file record that places a chunk under another chunk's name.
            if Address::of_content(&content) != Address(name.0) {
                return Err(ClientError::Malformed(format!("chunk stored at {address} is not chunk {}", Address(name.0))));
            }
            Ok(content)
        })
    }

    fn fetch(&self, handle: &Handle, names: &[(usize, XorName)]) -> self_encryption::Result<Vec<(usize, Bytes)>> {
        let waits: Vec<_> = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let waits = names
                .iter()
                .map(|(i, name)| (*i, st.pending.remove(name).unwrap_or_else(|| self.spawn(handle, *name))))
                .collect();
            // Move the window past what was just asked for, then fill it.
            if let Some(pos) = names.iter().filter_map(|(_, n)| st.order.iter().position(|o| o == n)).max() {
                st.next = st.next.max(pos + 1);
            }
            while st.pending.len() < self.ahead && st.next < st.order.len() {
                let name = st.order[st.next];
                st.next += 1;
                let job = self.spawn(handle, name);
                st.pending.insert(name, job);
            }
            waits
        };
        let mut out = Vec::with_capacity(waits.len());
        for (i, job) in waits {
            let result = handle.block_on(job).map_err(join_err).and_then(|r| r);
            match result {
                Ok(bytes) => out.push((i, bytes)),
                Err(e) => {
                    let msg = e.to_string();
                    *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    return Err(self_encryption::Error::Generic(msg));
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, job) in st.pending.drain() {
            job.abort();
        }
    }
}

/// `O_NOFOLLOW`: open fails on a link instead of following it.
fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Every path under `dir` (not following symlinks), parents before children, in name order.
fn walk(dir: &Path) -> Result<Vec<PathBuf>, ClientError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut children: Vec<PathBuf> =
            fs::read_dir(&d).map_err(io_err(&d))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io_err(&d))?;
        children.sort();
        for child in children.into_iter().rev() {
            let meta = fs::symlink_metadata(&child).map_err(io_err(&child))?;
            if meta.is_dir() {
                stack.push(child.clone());
            }
            out.push(child);
        }
    }
    out.sort();
    Ok(out)
}

fn tree_size(dir: &Path) -> Result<u64, ClientError> {
    let mut total = 0;
    for p in walk(dir)? {
        let meta = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}
