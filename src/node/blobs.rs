//! The node's content-addressed file store: .blend files (and later their
//! dependencies) named by their SHA-256, streamed to disk, verified before use
//! and evicted least-recently-used when the cache is full.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The name is not a SHA-256 in lowercase hex.
    #[error("'{0}' is not a SHA-256 hash: use 64 lowercase hex digits")]
    InvalidHash(String),
    /// The node does not have this blob.
    #[error("blob {0} is not on this node: upload it with PUT /api/v1/blobs/{0}")]
    NotFound(String),
    /// The upload is larger than the whole cache.
    #[error(
        "upload of {size_bytes} bytes does not fit in this node's cache of {capacity_bytes} bytes: start the node with a larger --cache-size"
    )]
    TooLarge {
        /// Bytes offered (or received so far).
        size_bytes: u64,
        /// The cache size.
        capacity_bytes: u64,
    },
    /// The bytes received do not hash to the name they were sent under.
    #[error(
        "upload does not match its hash: expected {expected}, received {received_bytes} bytes hashing to {actual}; nothing was kept"
    )]
    HashMismatch {
        /// The hash in the URL.
        expected: String,
        /// The hash of what arrived.
        actual: String,
        /// Bytes received.
        received_bytes: u64,
    },
    /// The upload stopped before its end.
    #[error("upload interrupted after {received_bytes} bytes: {reason}; nothing was kept")]
    Interrupted {
        /// Bytes received before it stopped.
        received_bytes: u64,
        /// What the transport said.
        reason: String,
    },
    /// The disk is full.
    #[error(
        "the node's disk is full at {path}: free space there or start the node with a smaller --cache-size; nothing was kept"
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// The sender went quiet mid-upload.
    #[error("upload stalled: no data for {secs} s after {received_bytes} bytes; nothing was kept")]
    Stalled {
        /// The idle limit.
        secs: u64,
        /// Bytes received before it stalled.
        received_bytes: u64,
    },
    /// The disk failed.
    #[error("blob store I/O error at {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// How long an upload may send nothing before it is dropped, so a stalled
/// or hostile sender cannot hold a half-written file open for ever.
pub const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The blob was stored.
    Stored,
    /// The node already had it; the body was not read (see [`discard`]).
    AlreadyPresent,
}

/// Reads and drops an upload's body, at most `limit_bytes` of it and giving
/// up after [`UPLOAD_IDLE`] without data; returns the bytes read. A client
/// still sending a blob the node has must be read to the end, or closing
/// the connection under it breaks its pipe before it reads the answer.
pub async fn discard<S, E>(body: S, limit_bytes: u64) -> u64
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut body = std::pin::pin!(body);
    let mut read_bytes = 0u64;
    while read_bytes <= limit_bytes {
        match tokio::time::timeout(UPLOAD_IDLE, body.next()).await {
            Ok(Some(Ok(chunk))) => read_bytes += chunk.len() as u64,
            Ok(Some(Err(_)) | None) | Err(_) => break,
        }
    }
    read_bytes
}

/// SHA-256 (lowercase hex) and size in bytes of the file at `path`, read in
/// 1 MiB pieces. Blocking: call it on the blocking pool. A file hashed
/// before in this process and not changed since (same size, modification
/// time and inode) is not read again: the controller's local node hashes
/// the .blend while reading the scene, and the job then needs its hash.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let stamp = FileStamp::of(path)?;
    let key = std::path::absolute(path)?;
    if let Some(known) = hashed().get(&key).filter(|(at, _)| *at == stamp) {
        return Ok(known.1.clone());
    }
    let hashed_now = hash_contents(path)?;
    let mut memo = hashed();
    if memo.len() >= HASHES_KEPT {
        memo.clear();
    }
    memo.insert(key, (stamp, hashed_now.clone()));
    Ok(hashed_now)
}

/// Files whose hashes [`hash_file`] keeps.
const HASHES_KEPT: usize = 1024;

/// What tells a file changed: size, modification time, and the inode (a
/// save that replaces the file makes a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size_bytes: u64,
    modified: std::time::SystemTime,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            size_bytes: metadata.len(),
            modified: metadata.modified()?,
            inode,
        })
    }
}

type HashMemo = std::collections::HashMap<std::path::PathBuf, (FileStamp, (String, u64))>;

fn hashed() -> std::sync::MutexGuard<'static, HashMemo> {
    static HASHED: std::sync::OnceLock<std::sync::Mutex<HashMemo>> = std::sync::OnceLock::new();
    HASHED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SHA-256 and size of what the file holds now.
fn hash_contents(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size_bytes = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        size_bytes += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok((hex::encode(hasher.finalize()), size_bytes))
}

/// Whether `hash` is a SHA-256 in lowercase hex: the only names the store
/// makes paths from, so no name can point outside it.
pub fn is_valid_hash(hash: &str) -> bool {
    crate::wire::is_hash(hash)
}

#[derive(Debug)]
struct Entry {
    size_bytes: u64,
    last_used: u64,
    pins: u32,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total_bytes: u64,
    clock: u64,
}

impl Index {
    fn touch(&mut self, hash: &str) -> bool {
        self.clock += 1;
        let clock = self.clock;
        match self.entries.get_mut(hash) {
            Some(entry) => {
                entry.last_used = clock;
                true
            }
            None => false,
        }
    }
}

/// Content-addressed files on disk with an LRU size bound.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    tmp_dir: PathBuf,
    capacity_bytes: u64,
    index: Mutex<Index>,
    /// Bytes of the blobs stored since start (uploads that were kept).
    received_bytes: std::sync::atomic::AtomicU64,
}

/// Keeps a blob from being evicted while a render needs it.
#[derive(Debug)]
pub struct BlobPin {
    store: Arc<BlobStore>,
    hash: String,
}

impl BlobPin {
    /// Path of the pinned blob.
    pub fn path(&self) -> PathBuf {
        self.store.path(&self.hash)
    }

    /// The pinned blob's hash.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        let mut index = self.store.lock();
        if let Some(entry) = index.entries.get_mut(&self.hash) {
            entry.pins = entry.pins.saturating_sub(1);
        }
        drop(index);
        self.store.evict();
    }
}

impl BlobStore {
    /// Opens the store in `dir`, indexing what is there (oldest modification
    /// first) and removing half-finished uploads left by a crash.
    pub fn open(dir: &Path, capacity_bytes: u64) -> Result<Arc<Self>, BlobError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BlobError::Io { path, source }
        };
        let tmp_dir = dir.join("incoming");
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
        }
        std::fs::create_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_valid_hash(&name) {
                continue;
            }
            let meta = entry.metadata().map_err(io(&entry.path()))?;
            if meta.is_file() {
                let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                found.push((modified, name, meta.len()));
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, hash, size_bytes) in found {
            index.clock += 1;
            index.total_bytes += size_bytes;
            index.entries.insert(
                hash,
                Entry {
                    size_bytes,
                    last_used: index.clock,
                    pins: 0,
                },
            );
        }
        let store = Arc::new(Self {
            dir: dir.to_path_buf(),
            tmp_dir,
            capacity_bytes,
            index: Mutex::new(index),
            received_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        store.evict();
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where blob `hash` lives (whether or not it is there).
    pub fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    /// The most the store holds, in bytes (`--cache-size`).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Whether the store has `hash`; counts as a use for eviction.
    pub fn contains(&self, hash: &str) -> bool {
        self.lock().touch(hash)
    }

    /// Bytes of the blobs uploaded and kept since the node started.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of the blobs held now.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// Pins `hash` for a render.
    pub fn pin(self: &Arc<Self>, hash: &str) -> Result<BlobPin, BlobError> {
        if !is_valid_hash(hash) {
            return Err(BlobError::InvalidHash(hash.to_string()));
        }
        let mut index = self.lock();
        if !index.touch(hash) {
            return Err(BlobError::NotFound(hash.to_string()));
        }
        if let Some(entry) = index.entries.get_mut(hash) {
            entry.pins += 1;
        }
        drop(index);
        // Record the use on disk so the LRU order survives a restart.
        if let Ok(file) = std::fs::File::options().append(true).open(self.path(hash)) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        Ok(BlobPin {
            store: Arc::clone(self),
            hash: hash.to_string(),
        })
    }

    /// Streams an upload to disk under `hash`, hashing as it goes; keeps it
    /// only when the bytes hash to `hash`. `declared_bytes` is the request's
    /// Content-Length, if any: too large is refused before reading.
    pub async fn put<S, E>(
        &self,
        hash: &str,
        declared_bytes: Option<u64>,
        body: S,
    ) -> Result<PutOutcome, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        if !is_valid_hash(hash) {
            return Err(BlobError::InvalidHash(hash.to_string()));
        }
        if self.contains(hash) {
            return Ok(PutOutcome::AlreadyPresent);
        }
        if let Some(size_bytes) = declared_bytes
            && size_bytes > self.capacity_bytes
        {
            return Err(BlobError::TooLarge {
                size_bytes,
                capacity_bytes: self.capacity_bytes,
            });
        }
        let tmp = self
            .tmp_dir
            .join(format!("{hash}.{}.part", uuid::Uuid::new_v4()));
        let result = self.receive(&tmp, hash, declared_bytes, body).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        let size_bytes = result?;
        let path = self.path(hash);
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|source| BlobError::Io {
                path: path.clone(),
                source,
            })?;
        {
            let mut index = self.lock();
            index.clock += 1;
            let clock = index.clock;
            if !index.entries.contains_key(hash) {
                index.total_bytes += size_bytes;
            }
            index.entries.entry(hash.to_string()).or_insert(Entry {
                size_bytes,
                last_used: clock,
                pins: 0,
            });
        }
        self.received_bytes
            .fetch_add(size_bytes, std::sync::atomic::Ordering::Relaxed);
        self.evict();
        Ok(PutOutcome::Stored)
    }

    async fn receive<S, E>(
        &self,
        tmp: &Path,
        hash: &str,
        declared_bytes: Option<u64>,
        body: S,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let io = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::StorageFull {
                BlobError::DiskFull {
                    path: tmp.to_path_buf(),
                }
            } else {
                BlobError::Io {
                    path: tmp.to_path_buf(),
                    source,
                }
            }
        };
        let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut received_bytes = 0u64;
        let mut body = std::pin::pin!(body);
        loop {
            let next = tokio::time::timeout(UPLOAD_IDLE, body.next()).await;
            let Ok(next) = next else {
                return Err(BlobError::Stalled {
                    secs: UPLOAD_IDLE.as_secs(),
                    received_bytes,
                });
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|err| BlobError::Interrupted {
                received_bytes,
                reason: err.to_string(),
            })?;
            received_bytes += chunk.len() as u64;
            if received_bytes > self.capacity_bytes {
                return Err(BlobError::TooLarge {
                    size_bytes: received_bytes,
                    capacity_bytes: self.capacity_bytes,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        if let Some(declared) = declared_bytes
            && declared != received_bytes
        {
            return Err(BlobError::Interrupted {
                received_bytes,
                reason: format!("Content-Length said {declared} bytes"),
            });
        }
        file.sync_all().await.map_err(io)?;
        let actual = hex::encode(hasher.finalize());
        if actual != hash {
            return Err(BlobError::HashMismatch {
                expected: hash.to_string(),
                actual,
                received_bytes,
            });
        }
        Ok(received_bytes)
    }

    /// Removes least-recently-used unpinned blobs until the store fits.
    fn evict(&self) {
        let mut index = self.lock();
        while index.total_bytes > self.capacity_bytes {
            let victim = index
                .entries
                .iter()
                .filter(|(_, entry)| entry.pins == 0)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(hash, _)| hash.clone());
            let Some(hash) = victim else { break };
            if let Some(entry) = index.entries.remove(&hash) {
                index.total_bytes -= entry.size_bytes;
            }
            let path = self.path(&hash);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!("evicted blob {hash} from the cache"),
                Err(err) => tracing::warn!("cannot evict {}: {err}", path.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scene.blend");
        std::fs::write(&path, b"first").unwrap();
        let first = hash_file(&path).unwrap();
        assert_eq!(first, (hex::encode(Sha256::digest(b"first")), 5));
        assert_eq!(
            hash_file(&path).unwrap(),
            first,
            "the same file, the same hash"
        );
        // Saved again the way Blender saves: a new file renamed over it.
        let temp = dir.path().join("scene.blend@");
        std::fs::write(&temp, b"other").unwrap();
        std::fs::rename(&temp, &path).unwrap();
        assert_eq!(
            hash_file(&path).unwrap(),
            (hex::encode(Sha256::digest(b"other")), 5)
        );
        // Written in place with a longer content.
        std::fs::write(&path, b"longer content").unwrap();
        assert_eq!(hash_file(&path).unwrap().1, 14);
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn body(bytes: &'static [u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::iter(bytes.chunks(3).map(|c| Ok(Bytes::from_static(c))))
    }

    #[tokio::test]
    async fn stores_verifies_and_refuses_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1000).unwrap();
        let data: &'static [u8] = b"hello blender";
        let hash = sha(data);
        assert!(!store.contains(&hash));
        assert_eq!(
            store.put(&hash, None, body(data)).await.unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(std::fs::read(store.path(&hash)).unwrap(), data);
        assert_eq!(
            store.put(&hash, None, body(data)).await.unwrap(),
            PutOutcome::AlreadyPresent
        );

        let wrong = sha(b"something else");
        let err = store.put(&wrong, None, body(data)).await.unwrap_err();
        assert!(matches!(err, BlobError::HashMismatch { .. }), "{err}");
        assert!(!store.path(&wrong).exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("incoming"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn evicts_least_recently_used_but_never_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 25).unwrap();
        let (a, b, c): (&'static [u8], &'static [u8], &'static [u8]) =
            (b"aaaaaaaaaa", b"bbbbbbbbbb", b"cccccccccc");
        store.put(&sha(a), None, body(a)).await.unwrap();
        store.put(&sha(b), None, body(b)).await.unwrap();
        let pin = store.pin(&sha(a)).unwrap();
        store.put(&sha(c), None, body(c)).await.unwrap();
        // b was used least recently and is not pinned.
        assert!(store.path(&sha(a)).exists());
        assert!(!store.path(&sha(b)).exists());
        assert!(store.path(&sha(c)).exists());
        assert_eq!(store.total_bytes(), 20);
        drop(pin);

        let big: &'static [u8] = b"0123456789012345678901234567890";
        let err = store.put(&sha(big), None, body(big)).await.unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn bad_names_and_short_bodies_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1000).unwrap();
        for bad in ["../../etc/passwd", "ABC", &"g".repeat(64), &"A".repeat(64)] {
            assert!(matches!(
                store.put(bad, None, body(b"x")).await,
                Err(BlobError::InvalidHash(_))
            ));
        }
        let data: &'static [u8] = b"hello";
        let err = store
            .put(&sha(data), Some(10), body(data))
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::Interrupted { .. }), "{err}");
        assert!(!store.path(&sha(data)).exists());
    }
}
