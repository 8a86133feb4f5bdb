//! Where recordings go: streamed to a local spool file while the call runs
//! (so a crash or an object-store outage loses nothing), and from there to
//! object storage (S3-compatible, or a local directory on the embedded
//! defaults), part by part while the call runs and retried until it works.
//!
//! A recording is a [`RecordingUpload`] from [`RecordingSink::begin`] to
//! [`RecordingUpload::finish`]: the media task appends encoded bytes to the
//! spool file; a background task sends every completed part of the file
//! to an S3 multipart upload, reading it back from disk; `finish` patches
//! the header, marks the spool entry complete and sends the rest, the first
//! part last (decision 0010). On start-up [`RecordingSink::pending`] lists
//! what an earlier run left in the spool and [`RecordingSink::upload`]
//! stores it, repairing a WAV that was cut short by a crash.
//!
//! Rooms: `spool` (files and sidecars), `parts` (which part goes when,
//! sans-IO), `wav` (header repair, sans-IO), `upload` (the streaming
//! upload of one recording); this file holds the sink and its transfers.

mod parts;
mod spool;
mod upload;
mod wav;

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, PutPayload, RetryConfig};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{RecordingStoreKind, RecordingsConfig};
use spool::{MultipartProgress, SpoolEntry, SpoolPaths};

pub use upload::RecordingUpload;

/// Size of the parts uploaded while a call runs. S3 wants at least 5 MiB
/// for every part but the last; 8 MiB is about four minutes of stereo
/// 8 kHz audio.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// Parts read back from the spool and in flight to the store at once, over
/// all recordings: bounds the memory uploads take (each holds one part).
const PARTS_IN_FLIGHT: usize = 4;

/// Failure to set up the recording store or to spool a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingStoreError {
    #[error("cannot use recordings directory {dir}: {source}; check recordings.dir and its permissions")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid S3 settings: {0}; check recordings.s3.*")]
    S3(#[source] object_store::Error),
    #[error("writing the spool file {path} failed: {source}; check free disk space in the data directory")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("recording extension {0:?} is not a plain file extension (letters and digits, e.g. \"wav\")")]
    Extension(String),
    #[error(
        "header patch of {len} bytes at offset {offset} lies beyond the {recorded} bytes recorded; the recording stays in \
         the spool and is stored, as recorded, at the next start"
    )]
    Patch { offset: u64, len: u64, recorded: u64 },
    #[error("recordings are streamed from a tokio runtime; begin() was called outside one")]
    NoRuntime,
}

/// What a recording is, in the events that announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingKind {
    /// A call recording.
    Recording,
    /// A voicemail left by a caller.
    Voicemail,
}

/// How a recording is encoded and who may hear it; fixed when it begins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordingMeta {
    /// Encoding, e.g. `wav/pcm_s16le`; a `wav…` format is repaired from the
    /// file length when the gateway died while recording.
    pub format: String,
    /// File extension of the object key, e.g. `wav`.
    pub extension: String,
    /// MIME type, e.g. `audio/wav`.
    pub content_type: String,
    pub sample_rate_hz: u32,
    pub channels: u16,
    /// Only administrators may play it (F7).
    pub admin_only: bool,
    pub kind: RecordingKind,
    /// A voicemail's mailbox: the user it was left for (kept in the
    /// sidecar, so a voicemail recovered after a crash is announced too).
    #[serde(default)]
    pub mailbox: Option<String>,
}

/// Bytes to rewrite in the spool file when the recording ends, e.g. a WAV
/// header's sizes at offset 0 (what the file encoder gives at its end).
pub use crate::media::encode::HeaderPatch;

/// A recording stored in object storage.
#[derive(Debug, Clone)]
pub struct StoredRecording {
    pub recording_id: String,
    pub object_key: String,
    pub url: String,
    pub format: String,
    pub duration_ms: u64,
    pub size_bytes: u64,
    pub sample_rate_hz: u32,
    pub channels: u16,
    pub admin_only: bool,
    pub kind: RecordingKind,
    pub mailbox: Option<String>,
}

/// How long to wait between attempts while the object store is down.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    max: Duration,
}

/// The recording store of the gateway; cheap to clone.
#[derive(Clone)]
pub struct RecordingSink {
    /// For playback: the client with the store's default retries.
    store: Arc<dyn ObjectStore>,
    /// Presigns playback links (S3); `None` for the local directory, whose
    /// links are the gateway's own.
    signer: Option<Arc<dyn object_store::signer::Signer>>,
    /// For uploads: few retries per attempt, the sink retries on its own.
    uploads: Arc<dyn ObjectStore>,
    /// Parts with explicit numbers (S3); `None` for the local directory,
    /// which gets each recording in one go when it is finished.
    multipart: Option<Arc<dyn MultipartStore>>,
    prefix: String,
    public_url: String,
    spool: PathBuf,
    shutdown: CancellationToken,
    part_size: u64,
    backoff: Backoff,
    part_slots: Arc<Semaphore>,
    /// Recordings of this process still being written: not `pending`.
    active: Arc<Mutex<HashSet<String>>>,
    /// The local store's directory: a finished recording is moved there
    /// (a rename on the same file system), not copied.
    local_dir: Option<PathBuf>,
}

impl RecordingSink {
    pub fn from_config(
        cfg: &RecordingsConfig,
        data_dir: &FsPath,
        public_url: &str,
        shutdown: CancellationToken,
    ) -> Result<RecordingSink, RecordingStoreError> {
        let spool = data_dir.join("spool");
        std::fs::create_dir_all(&spool).map_err(|source| RecordingStoreError::Dir { dir: spool.clone(), source })?;
        let sink = match cfg.store {
            RecordingStoreKind::Local => {
                let dir = cfg.dir.clone().unwrap_or_else(|| data_dir.join("recordings"));
                std::fs::create_dir_all(&dir).map_err(|source| RecordingStoreError::Dir { dir: dir.clone(), source })?;
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| RecordingStoreError::Dir {
                    dir: dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let fs: Arc<dyn ObjectStore> = Arc::new(fs);
                let mut sink = RecordingSink::with_stores(fs.clone(), fs, None, String::new(), public_url, spool, shutdown);
                sink.local_dir = Some(dir);
                sink
            }
            RecordingStoreKind::S3 => {
                let s3 = &cfg.s3;
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(if s3.region.is_empty() { "us-east-1" } else { &s3.region })
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key)
                    .with_virtual_hosted_style_request(!s3.path_style && s3.endpoint.is_none());
                if let Some(ep) = &s3.endpoint {
                    b = b.with_endpoint(ep).with_allow_http(ep.starts_with("http://"));
                }
                let playback = b.clone().build().map_err(RecordingStoreError::S3)?;
                // An upload attempt gives up after a few quick tries, so the
                // sink's own backoff (and its warnings) take over during an
                // outage and a finished call is not stuck in a long retry.
                let retry = RetryConfig {
                    backoff: BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1), base: 2.0 },
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(10),
                };
                let uploads = Arc::new(b.with_retry(retry).build().map_err(RecordingStoreError::S3)?);
                let playback = Arc::new(playback);
                let mut sink = RecordingSink::with_stores(playback.clone(), uploads.clone(), Some(uploads), s3.prefix.clone(), public_url, spool, shutdown);
                sink.signer = Some(playback);
                sink
            }
        };
        // What an earlier run left in the spool is waiting too.
        let waiting: u64 = std::fs::read_dir(&sink.spool)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x != "json" && x != "tmp"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        metrics::gauge!("switchboard_recording_spool_bytes").increment(waiting as f64);
        Ok(sink)
    }

    fn with_stores(
        store: Arc<dyn ObjectStore>,
        uploads: Arc<dyn ObjectStore>,
        multipart: Option<Arc<dyn MultipartStore>>,
        prefix: String,
        public_url: &str,
        spool: PathBuf,
        shutdown: CancellationToken,
    ) -> RecordingSink {
        RecordingSink {
            store,
            signer: None,
            uploads,
            multipart,
            prefix,
            public_url: public_url.trim_end_matches('/').to_owned(),
            spool,
            shutdown,
            part_size: DEFAULT_PART_SIZE,
            backoff: Backoff { first: Duration::from_millis(200), max: Duration::from_secs(30) },
            part_slots: Arc::new(Semaphore::new(PARTS_IN_FLIGHT)),
            active: Arc::new(Mutex::new(HashSet::new())),
            local_dir: None,
        }
    }

    /// Uses parts of `bytes` for multipart uploads (S3 refuses parts under
    /// 5 MiB except the last; some S3-compatible stores want more).
    pub fn with_part_size(mut self, bytes: u64) -> RecordingSink {
        self.part_size = bytes.max(1);
        self
    }

    /// Waits `first`, doubling up to `max`, between attempts while the
    /// object store fails (defaults: 200 ms up to 30 s).
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> RecordingSink {
        self.backoff = Backoff { first, max: max.max(first) };
        self
    }

    /// The object store (for playback).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// A presigned GET link to a stored object, valid for `expires_in`,
    /// when the store can make one (S3); `None` for the local directory.
    pub async fn presigned(&self, object_key: &str, expires_in: Duration) -> Option<String> {
        let signer = self.signer.as_ref()?;
        match signer.signed_url(reqwest::Method::GET, &Path::from(object_key), expires_in).await {
            Ok(url) => Some(url.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "presigning a recording link failed; the gateway serves it instead");
                None
            }
        }
    }

    /// Starts a recording of `call_id`: creates its spool entry and, on S3,
    /// the task that uploads its parts while it is written. Call from the
    /// tokio runtime.
    pub fn begin(&self, call_id: &str, started_at_ms: i64, meta: RecordingMeta) -> Result<RecordingUpload, RecordingStoreError> {
        upload::begin(self, call_id, started_at_ms, meta)
    }

    /// Recordings left in the spool by an earlier run (crash, shutdown or
    /// object-store outage), oldest first, finished or not.
    pub fn pending(&self) -> Vec<SpooledRecording> {
        let Ok(entries) = std::fs::read_dir(&self.spool) else { return Vec::new() };
        let active = self.active.lock().map(|a| a.clone()).unwrap_or_default();
        let mut out: Vec<SpooledRecording> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|sidecar| {
                let entry = match SpoolEntry::read(&sidecar) {
                    Ok(e) => e,
                    Err(error) => {
                        warn!(
                            path = %sidecar.display(), %error,
                            "unreadable spool sidecar skipped; the audio is in the file of the same name beside it: \
                             inspect both by hand, copy the audio to the recordings store if it is wanted, then delete them"
                        );
                        return None;
                    }
                };
                if active.contains(&entry.recording_id) {
                    return None;
                }
                let paths = SpoolPaths::new(&self.spool, &entry.recording_id, &entry.meta.extension);
                if !paths.data.exists() {
                    if entry.complete {
                        warn!(path = %sidecar.display(), "spool sidecar without its audio file skipped; delete it");
                    } else {
                        // The gateway stopped before the first byte was written.
                        info!(call_id = %entry.call_id, recording_id = %entry.recording_id, "spooled recording without audio removed");
                        let _ = std::fs::remove_file(&sidecar);
                    }
                    return None;
                }
                Some(SpooledRecording { entry, paths })
            })
            .collect();
        out.sort_by(|a, b| a.entry.recording_id.cmp(&b.entry.recording_id));
        out
    }

    /// Uploads a spooled recording of an earlier run, retrying until it is
    /// stored or the gateway shuts down (`None`); the spool files are
    /// removed after. A recording the gateway was still writing when it
    /// died is kept as recorded (a WAV's sizes are set from its length) and
    /// a multipart upload it had started is aborted first.
    pub async fn upload(&self, mut spooled: SpooledRecording) -> Option<StoredRecording> {
        if !spooled.entry.complete {
            let (entry, paths) = (spooled.entry.clone(), spooled.paths.clone());
            match tokio::task::spawn_blocking(move || finalize(entry, &paths)).await {
                Ok(Ok(entry)) => spooled.entry = entry,
                Ok(Err(e)) => {
                    warn!(call_id = %spooled.entry.call_id, path = %spooled.paths.data.display(), error = %e,
                        "the recording cut short by a restart cannot be finalized; it stays in the spool: check the disk, then restart");
                    return None;
                }
                Err(e) => {
                    warn!(error = %e, "finalizing a spooled recording failed");
                    return None;
                }
            }
        }
        self.complete_entry(spooled, false, None, &self.shutdown.clone()).await
    }

    /// Sends a complete spool entry to the store and removes it from the
    /// spool. `trust_progress`: the entry's multipart upload is this run's
    /// own (its parts match the file) rather than one left by a crash.
    async fn complete_entry(
        &self,
        mut sp: SpooledRecording,
        trust_progress: bool,
        patched: Option<Range<u64>>,
        stop: &CancellationToken,
    ) -> Option<StoredRecording> {
        let started = Instant::now();
        let call_id = sp.entry.call_id.clone();
        let size = match tokio::fs::metadata(&sp.paths.data).await {
            Ok(m) => m.len(),
            Err(e) => {
                warn!(call_id, path = %sp.paths.data.display(), error = %e, "spooled recording cannot be read");
                return None;
            }
        };
        let key = Path::from(sp.entry.object_key.as_str());
        let stored = match self.multipart.clone() {
            None if self.move_into_local_dir(&sp).await => true,
            None => self.put_whole(&sp, &key, size, stop).await,
            Some(mp) => self.put_parts(&mp, &mut sp, &key, size, trust_progress, patched, stop).await,
        };
        if !stored {
            return None;
        }
        metrics::histogram!("switchboard_recording_upload_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("switchboard_recordings_stored_total").increment(1);
        metrics::gauge!("switchboard_recording_spool_bytes").decrement(size as f64);
        let paths = sp.paths.clone();
        let _ = tokio::task::spawn_blocking(move || paths.remove()).await;
        let SpoolEntry { recording_id, object_key, meta, duration_ms, .. } = sp.entry;
        info!(call_id, object_key, size, "recording stored");
        Some(StoredRecording {
            url: format!("{}/v1/recordings/{}", self.public_url, recording_id),
            recording_id,
            object_key,
            format: meta.format,
            duration_ms,
            size_bytes: size,
            sample_rate_hz: meta.sample_rate_hz,
            channels: meta.channels,
            admin_only: meta.admin_only,
            kind: meta.kind,
            mailbox: meta.mailbox,
        })
    }

    /// Moves a finished spool file into the local store's directory under
    /// its key; `false` (and the caller copies it) when there is no local
    /// directory or the rename fails, e.g. across file systems.
    async fn move_into_local_dir(&self, sp: &SpooledRecording) -> bool {
        let Some(dir) = self.local_dir.clone() else { return false };
        let (data, key) = (sp.paths.data.clone(), sp.entry.object_key.clone());
        let moved = tokio::task::spawn_blocking(move || {
            let target = dir.join(&key);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&data, &target)?;
            spool::sync_dir(&target);
            Ok::<_, std::io::Error>(())
        })
        .await;
        matches!(moved, Ok(Ok(())))
    }

    /// The whole file in one upload (the local directory), read from disk
    /// in pieces; `false` when stopped.
    async fn put_whole(&self, sp: &SpooledRecording, key: &Path, size: u64, stop: &CancellationToken) -> bool {
        let (store, data) = (self.uploads.clone(), sp.paths.data.clone());
        let attempts = self
            .retrying(stop, &sp.entry, |_| false, || {
                let (store, data, key) = (store.clone(), data.clone(), key.clone());
                async move {
                    let mut file = tokio::fs::File::open(&data).await.map_err(Failure::Spool)?;
                    let mut upload = store.put_multipart(&key).await?;
                    let mut sent = 0u64;
                    while sent < size {
                        let len = (size - sent).min(1024 * 1024) as usize;
                        let mut buf = vec![0u8; len];
                        if let Err(e) = file.read_exact(&mut buf).await {
                            let _ = upload.abort().await;
                            return Err(Failure::Spool(e));
                        }
                        if let Err(e) = upload.put_part(PutPayload::from(buf)).await {
                            let _ = upload.abort().await;
                            return Err(e.into());
                        }
                        sent += len as u64;
                    }
                    upload.complete().await?;
                    Ok(())
                }
            })
            .await;
        self.settled(attempts, sp).is_some()
    }

    /// The file as a multipart upload, resuming the entry's own upload when
    /// `trust_progress`; `false` when stopped.
    #[allow(clippy::too_many_arguments)]
    async fn put_parts(
        &self,
        mp: &Arc<dyn MultipartStore>,
        sp: &mut SpooledRecording,
        key: &Path,
        size: u64,
        mut trust_progress: bool,
        mut patched: Option<Range<u64>>,
        stop: &CancellationToken,
    ) -> bool {
        loop {
            if !trust_progress {
                if let Some(orphan) = sp.entry.upload.take() {
                    if !self.abort_upload(mp, key, &orphan.upload_id, &sp.entry, stop).await {
                        sp.entry.upload = Some(orphan);
                        return false;
                    }
                    self.save(sp).await;
                }
                trust_progress = true;
                patched = None;
            }
            if sp.entry.upload.is_none() && size <= self.part_size {
                return self.put_small(sp, key, stop).await;
            }
            if sp.entry.upload.is_none() {
                let Some(upload_id) = self.create_upload(mp, key, &sp.entry, stop).await else { return false };
                sp.entry.upload = Some(MultipartProgress { upload_id, part_size: self.part_size, parts: Default::default() });
                self.save(sp).await;
            }
            let progress = sp.entry.upload.clone().unwrap_or_else(|| unreachable!("set above"));
            let todo = match parts::remaining(progress.part_size, size, &progress.parts, patched.clone()) {
                Ok(todo) => todo,
                Err(parts::StartOver) => {
                    warn!(call_id = %sp.entry.call_id, "the uploaded parts do not match the spool file; uploading it again");
                    trust_progress = false;
                    continue;
                }
            };
            let mut vanished = false;
            for idx in todo {
                match self.send_part(mp, sp, key, &progress.upload_id, idx, progress.part_size, size, stop).await {
                    Attempts::Done(etag) => {
                        if let Some(u) = sp.entry.upload.as_mut() {
                            u.parts.insert(idx, etag);
                        }
                        self.save(sp).await;
                    }
                    Attempts::Refused(_) => {
                        vanished = true;
                        break;
                    }
                    other => return self.settled(other, sp).is_some(),
                }
            }
            if !vanished {
                let parts: Vec<PartId> = sp
                    .entry
                    .upload
                    .as_ref()
                    .map(|u| u.parts.values().map(|etag| PartId { content_id: etag.clone() }).collect())
                    .unwrap_or_default();
                let (mp2, id) = (mp.clone(), progress.upload_id.clone());
                let done = self
                    .retrying(stop, &sp.entry, is_not_found, || {
                        let (mp, key, id, parts) = (mp2.clone(), key.clone(), id.clone(), parts.clone());
                        async move { Ok(mp.complete_multipart(&key, &id, parts).await?) }
                    })
                    .await;
                match done {
                    Attempts::Done(_) => return true,
                    Attempts::Stopped | Attempts::Unreadable(_) => return false,
                    Attempts::Refused(_) => {
                        // Completed, with the answer lost, or expired.
                        if self.uploads.head(key).await.is_ok_and(|m| m.size == size) {
                            return true;
                        }
                    }
                }
            }
            warn!(call_id = %sp.entry.call_id, object_key = %sp.entry.object_key,
                "the object store no longer knows the recording's multipart upload (expired?); uploading it again");
            sp.entry.upload = None;
            self.save(sp).await;
            patched = None;
        }
    }

    /// A file of at most one part in a single PUT; `false` when stopped.
    async fn put_small(&self, sp: &SpooledRecording, key: &Path, stop: &CancellationToken) -> bool {
        let (store, data, slots) = (self.uploads.clone(), sp.paths.data.clone(), self.part_slots.clone());
        let attempts = self
            .retrying(stop, &sp.entry, |_| false, || {
                let (store, data, key, slots) = (store.clone(), data.clone(), key.clone(), slots.clone());
                async move {
                    let _slot = slots.acquire_owned().await;
                    let bytes = tokio::fs::read(&data).await.map_err(Failure::Spool)?;
                    store.put(&key, PutPayload::from(bytes)).await?;
                    Ok(())
                }
            })
            .await;
        self.settled(attempts, sp).is_some()
    }

    /// Starts a multipart upload; `None` when stopped.
    async fn create_upload(&self, mp: &Arc<dyn MultipartStore>, key: &Path, entry: &SpoolEntry, stop: &CancellationToken) -> Option<String> {
        let attempts = self
            .retrying(stop, entry, |_| false, || {
                let (mp, key) = (mp.clone(), key.clone());
                async move { Ok(mp.create_multipart(&key).await?) }
            })
            .await;
        match attempts {
            Attempts::Done(id) => Some(id),
            _ => None,
        }
    }

    /// Reads part `idx` of a file of `size` bytes from the spool and sends
    /// it; `Refused` when the store no longer knows the upload.
    #[allow(clippy::too_many_arguments)]
    async fn send_part(
        &self,
        mp: &Arc<dyn MultipartStore>,
        sp: &SpooledRecording,
        key: &Path,
        upload_id: &str,
        idx: usize,
        part_size: u64,
        size: u64,
        stop: &CancellationToken,
    ) -> Attempts<String> {
        let range = parts::part_range(idx, part_size, size);
        let (data, slots) = (sp.paths.data.clone(), self.part_slots.clone());
        let attempts = self
            .retrying(stop, &sp.entry, is_not_found, || {
                let (mp, data, key, id, slots, range) = (mp.clone(), data.clone(), key.clone(), upload_id.to_owned(), slots.clone(), range.clone());
                async move {
                    // The part is read for each attempt and dropped after it,
                    // so a recording waiting out an outage holds no part.
                    let _slot = slots.acquire_owned().await;
                    let bytes = read_range(&data, range).await.map_err(Failure::Spool)?;
                    Ok(mp.put_part(&key, &id, idx, PutPayload::from(bytes)).await?.content_id)
                }
            })
            .await;
        if matches!(attempts, Attempts::Done(_)) {
            metrics::counter!("switchboard_recording_parts_uploaded_total").increment(1);
        }
        attempts
    }

    /// Aborts a multipart upload a crash or a discarded recording left
    /// behind; `false` when stopped. An upload the store does not know
    /// (already gone) counts as aborted.
    async fn abort_upload(&self, mp: &Arc<dyn MultipartStore>, key: &Path, upload_id: &str, entry: &SpoolEntry, stop: &CancellationToken) -> bool {
        let attempts = self
            .retrying(stop, entry, |e| matches!(e, object_store::Error::NotFound { .. } | object_store::Error::PermissionDenied { .. }), || {
                let (mp, key, id) = (mp.clone(), key.clone(), upload_id.to_owned());
                async move { Ok(mp.abort_multipart(&key, &id).await?) }
            })
            .await;
        match attempts {
            Attempts::Done(()) => true,
            Attempts::Refused(e) => {
                info!(call_id = %entry.call_id, upload_id, error = %e, "the abandoned multipart upload is already gone");
                true
            }
            Attempts::Stopped | Attempts::Unreadable(_) => false,
        }
    }

    /// Runs `op` until it succeeds, the store refuses it for good (`final_`
    /// says which errors are final), or `stop` is cancelled, waiting with
    /// backoff in between. A spool file that cannot be read is final too.
    async fn retrying<T, Fut>(
        &self,
        stop: &CancellationToken,
        entry: &SpoolEntry,
        final_: impl Fn(&object_store::Error) -> bool,
        mut op: impl FnMut() -> Fut,
    ) -> Attempts<T>
    where
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut delay = self.backoff.first;
        loop {
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => return Attempts::Stopped,
                r = op() => r,
            };
            match result {
                Ok(v) => return Attempts::Done(v),
                Err(Failure::Store(e)) if final_(&e) => return Attempts::Refused(e),
                Err(Failure::Spool(e)) => return Attempts::Unreadable(e),
                Err(Failure::Store(e)) => {
                    warn!(call_id = %entry.call_id, object_key = %entry.object_key, error = %e,
                        "uploading the recording failed; retrying (is the object store reachable and are the credentials right?)");
                    metrics::counter!("switchboard_recording_upload_retries_total").increment(1);
                    tokio::select! {
                        _ = stop.cancelled() => return Attempts::Stopped,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(self.backoff.max);
                }
            }
        }
    }

    /// The value of a finished retry loop, with a warning when the spool
    /// file could not be read.
    fn settled<T>(&self, attempts: Attempts<T>, sp: &SpooledRecording) -> Option<T> {
        match attempts {
            Attempts::Done(v) => Some(v),
            Attempts::Unreadable(e) => {
                warn!(call_id = %sp.entry.call_id, path = %sp.paths.data.display(), error = %e,
                    "spooled recording cannot be read; it stays in the spool: check the disk, then restart the gateway");
                None
            }
            _ => None,
        }
    }

    /// Writes the entry's sidecar; a failure is logged (the upload goes on,
    /// but a crash before the next write could leave an upload to abort by
    /// hand).
    async fn save(&self, sp: &SpooledRecording) {
        let (entry, path) = (sp.entry.clone(), sp.paths.sidecar.clone());
        let result = tokio::task::spawn_blocking(move || entry.write(&path)).await.map_err(std::io::Error::other).and_then(|r| r);
        if let Err(e) = result {
            warn!(call_id = %sp.entry.call_id, path = %sp.paths.sidecar.display(), error = %e,
                "updating the spool sidecar failed; check free disk space in the data directory");
        }
    }
}

/// What a retried store operation came to.
enum Attempts<T> {
    Done(T),
    /// The store refused it for good.
    Refused(#[allow(dead_code)] object_store::Error),
    /// The spool file could not be read.
    Unreadable(std::io::Error),
    /// The gateway is shutting down, or the caller stopped waiting.
    Stopped,
}

/// Why one attempt failed.
enum Failure {
    Store(object_store::Error),
    Spool(std::io::Error),
}

impl From<object_store::Error> for Failure {
    fn from(e: object_store::Error) -> Failure {
        Failure::Store(e)
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// The bytes `range` of the file at `path`.
async fn read_range(path: &FsPath, range: Range<u64>) -> std::io::Result<Bytes> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(range.start)).await?;
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    file.read_exact(&mut buf).await?;
    Ok(Bytes::from(buf))
}

/// Makes a recording cut short by a crash complete: a WAV gets the sizes of
/// what reached the disk; other formats stay as they are (their decoders
/// read to the end of the file).
fn finalize(mut entry: SpoolEntry, paths: &SpoolPaths) -> std::io::Result<SpoolEntry> {
    use std::io::Read as _;
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&paths.data)?;
    let len = file.metadata()?.len();
    if entry.meta.is_wav() {
        let mut head = Vec::with_capacity(4096);
        (&file).take(4096).read_to_end(&mut head)?;
        match wav::fix_sizes(&head, len) {
            Ok(fix) => {
                for (offset, bytes) in &fix.patches {
                    file.write_all_at(bytes, *offset)?;
                }
                file.set_len(fix.len)?;
                entry.duration_ms = fix.duration_ms();
            }
            Err(e) => warn!(call_id = %entry.call_id, path = %paths.data.display(), error = %e,
                "the WAV cut short by a restart has no header to repair; it is stored as recorded"),
        }
    } else {
        warn!(call_id = %entry.call_id, format = %entry.meta.format, "recording cut short by a restart stored as recorded; its duration is unknown");
    }
    file.sync_all()?;
    entry.complete = true;
    info!(call_id = %entry.call_id, recording_id = %entry.recording_id, bytes = len, "recording cut short by a restart kept as recorded");
    entry.write(&paths.sidecar)?;
    Ok(entry)
}

/// A recording in the spool, waiting for upload.
#[derive(Debug)]
pub struct SpooledRecording {
    entry: SpoolEntry,
    paths: SpoolPaths,
}

impl SpooledRecording {
    pub fn call_id(&self) -> &str {
        &self.entry.call_id
    }

    pub fn recording_id(&self) -> &str {
        &self.entry.recording_id
    }

    /// Whether the recording was finished; `false` when the gateway died
    /// while recording it.
    pub fn complete(&self) -> bool {
        self.entry.complete
    }

    pub fn meta(&self) -> &RecordingMeta {
        &self.entry.meta
    }
}

#[cfg(test)]
mod tests;
