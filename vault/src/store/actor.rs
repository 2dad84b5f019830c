//! The store as an actor (as iroh-blobs' store is): the vault hands it jobs through a handle
//! and a bounded queue, a few threads of its own run them off the async threads, and
//! [`StoreActor::close`] refuses new jobs, runs those queued and waits for those running
//! before the caller marks the index clean.
//!
//! Index lookups (which keys are held, usage) are not jobs: the index is in memory and a
//! lookup takes microseconds under its lock, less than a round trip through the queue.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::{RecordStore, StoreError};

/// Threads that run the store's jobs (reads and writes of record files).
const THREADS: usize = 8;

/// Jobs queued or running at once: a caller past this waits (asynchronously) for room.
const QUEUE: usize = 1024;

/// A job: runs on a store thread with the store, holding its place in the queue.
type Job = Box<dyn FnOnce(&dyn RecordStore) + Send>;

/// The handle to a vault's store actor.
pub struct StoreActor {
    store: Arc<dyn RecordStore>,
    /// Room in the queue; closed at [`StoreActor::close`].
    room: Arc<Semaphore>,
    /// The queue's sending end; `None` once closed.
    jobs: Mutex<Option<mpsc::Sender<(Job, OwnedSemaphorePermit)>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for StoreActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreActor").field("room", &self.room.available_permits()).finish()
    }
}

impl StoreActor {
    /// Starts the actor's threads on `store`.
    pub fn start(store: Arc<dyn RecordStore>) -> std::io::Result<StoreActor> {
        let (tx, rx) = mpsc::channel::<(Job, OwnedSemaphorePermit)>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(THREADS);
        for i in 0..THREADS {
            let (rx, store) = (rx.clone(), store.clone());
            let thread = std::thread::Builder::new().name(format!("kura-store-{i}")).spawn(move || loop {
                // One thread waits on the queue at a time; the others wait for the lock.
                let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((job, _room)) = next else { return };
                // A job that panics loses its answer (its caller gets an error), not the thread:
                // were every thread lost, queued jobs would wait for ever.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(store.as_ref())));
            })?;
            threads.push(thread);
        }
        Ok(StoreActor { store, room: Arc::new(Semaphore::new(QUEUE)), jobs: Mutex::new(Some(tx)), threads: Mutex::new(threads) })
    }

    /// The store, for index lookups (in memory: see the module docs).
    pub fn store(&self) -> &Arc<dyn RecordStore> {
        &self.store
    }

    /// Runs `job` on a store thread and returns what it returns; [`StoreError::Closed`] once
    /// the actor is closing.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce(&dyn RecordStore) -> T + Send + 'static) -> Result<T, StoreError> {
        // Room first, then the queue: a caller that got room after close began finds the
        // queue gone, so no job starts once closing has begun.
        let room = self.room.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = done.send(job(store));
        });
        {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let sender = jobs.as_ref().ok_or(StoreError::Closed)?;
            sender.send((job, room)).map_err(|_| StoreError::Closed)?;
        }
        answer.await.map_err(|_| StoreError::Closed)
    }

    /// Refuses new jobs, then waits up to `limit` for the queued and running ones to finish;
    /// says whether they did (only then may the index be marked clean).
    pub async fn close(&self, limit: Duration) -> bool {
        self.room.close();
        drop(self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let joined = tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok()));
        matches!(tokio::time::timeout(limit, joined).await, Ok(Ok(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use kura_node::{Address, RecordKey};

    #[tokio::test]
    async fn jobs_run_off_the_async_threads_and_close_waits_for_them() {
        let actor = Arc::new(StoreActor::start(Arc::new(MemoryStore::new(1 << 20))).unwrap());
        let key = RecordKey::pointer(Address([1; 32]));
        actor.run(move |s| s.put(&key, b"v")).await.unwrap().unwrap();
        let name = actor.run(|_| std::thread::current().name().map(String::from)).await.unwrap();
        assert!(name.is_some_and(|n| n.starts_with("kura-store-")));
        // A slow job holds close until it ends; a job asked for after close began is refused.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let slow = tokio::spawn({
            let actor = actor.clone();
            async move { actor.run(move |s| { let _ = wait.recv(); s.delete(&key) }).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let closing = tokio::spawn({
            let actor = actor.clone();
            async move { actor.close(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!closing.is_finished(), "close returned while a job ran");
        assert!(matches!(actor.run(|_| ()).await, Err(StoreError::Closed)));
        release.send(()).unwrap();
        assert!(closing.await.unwrap(), "every job ended");
        assert!(slow.await.unwrap().unwrap().unwrap(), "the slow job ran to its end");
        assert!(actor.store().keys().is_empty());
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_threads_stay() {
        let actor = StoreActor::start(Arc::new(MemoryStore::new(1 << 20))).unwrap();
        for _ in 0..2 * THREADS {
            assert!(actor.run(|_| -> () { panic!("a bad job") }).await.is_err());
        }
        assert_eq!(actor.run(|_| 7).await.unwrap(), 7, "every thread still runs jobs");
        assert!(actor.close(Duration::from_secs(5)).await);
    }
}
