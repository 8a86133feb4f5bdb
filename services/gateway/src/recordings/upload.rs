//! One recording streamed to the spool and, while the call runs, to object
//! storage.
//!
//! The media task appends encoded bytes through a small buffered writer:
//! `append` is synchronous, touches only the local file and never waits for
//! the network. The bytes written through are published to a background
//! task that uploads every completed part (all but the first, which holds
//! the header patched at the end) from the spool file, so memory stays a
//! few tens of KiB per recording however long the call. `finish` stops that
//! task, patches and syncs the file, marks the spool entry complete and
//! sends what is left (decision 0010).

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::multipart::MultipartStore;
use object_store::path::Path;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::spool::{self, MultipartProgress, SpoolEntry, SpoolPaths};
use super::{parts, Attempts, HeaderPatch, RecordingMeta, RecordingSink, RecordingStoreError, SpooledRecording, StoredRecording};

/// Capacity of the spool writer's buffer.
const BUFFER_BYTES: usize = 32 * 1024;
/// Buffered bytes that are written through at the next append.
const FLUSH_BYTES: usize = 16 * 1024;
/// Buffered bytes are written through at the first append this long after
/// the oldest of them arrived.
const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// What the spool writer tells the part uploader.
#[derive(Debug, Default)]
struct Written {
    /// Bytes written through to the spool file.
    bytes: AtomicU64,
    /// The uploader wants to be woken once `bytes` reaches this.
    boundary: AtomicU64,
    wake: Notify,
    /// Parts uploaded while recording.
    parts: AtomicU32,
}

/// A recording being written: created by [`RecordingSink::begin`], ended by
/// [`RecordingUpload::finish`] or [`RecordingUpload::abort`]. Dropped
/// without either (a panicking media task), its spool entry stays for the
/// next start, which stores what was recorded.
pub struct RecordingUpload {
    sink: RecordingSink,
    entry: SpoolEntry,
    paths: SpoolPaths,
    writer: Option<BufWriter<File>>,
    /// Bytes appended.
    appended: u64,
    /// Bytes written through to the file.
    flushed: u64,
    /// When the oldest buffered byte arrived.
    buffered_since: Option<Instant>,
    written: Arc<Written>,
    stop: CancellationToken,
    task: Option<JoinHandle<SpooledRecording>>,
}

pub(super) fn begin(sink: &RecordingSink, call_id: &str, started_at_ms: i64, meta: RecordingMeta) -> Result<RecordingUpload, RecordingStoreError> {
    if !spool::valid_extension(&meta.extension) {
        return Err(RecordingStoreError::Extension(meta.extension));
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| RecordingStoreError::NoRuntime)?;
    let recording_id = uuid::Uuid::now_v7().to_string();
    let date = chrono::DateTime::from_timestamp_millis(started_at_ms).unwrap_or_default().format("%Y/%m/%d");
    let entry = SpoolEntry {
        object_key: format!("{}{}/{}/{}.{}", sink.prefix, date, call_id, recording_id, meta.extension),
        call_id: call_id.to_owned(),
        recording_id,
        meta,
        complete: false,
        duration_ms: 0,
        upload: None,
    };
    let paths = SpoolPaths::new(&sink.spool, &entry.recording_id, &entry.meta.extension);
    // The sidecar first: a crash leaves no audio file nobody knows about.
    entry.write(&paths.sidecar).map_err(|source| RecordingStoreError::Spool { path: paths.sidecar.clone(), source })?;
    let file = match File::options().write(true).create_new(true).open(&paths.data) {
        Ok(f) => f,
        Err(source) => {
            let _ = std::fs::remove_file(&paths.sidecar);
            return Err(RecordingStoreError::Spool { path: paths.data.clone(), source });
        }
    };
    spool::sync_dir(&paths.data);
    if let Ok(mut active) = sink.active.lock() {
        active.insert(entry.recording_id.clone());
    }
    let written = Arc::new(Written::default());
    written.boundary.store(parts::next_boundary::<String>(sink.part_size, &Default::default()), Ordering::SeqCst);
    let stop = sink.shutdown.child_token();
    let task = sink.multipart.clone().map(|mp| {
        let sp = SpooledRecording { entry: entry.clone(), paths: paths.clone() };
        runtime.spawn(upload_parts(sink.clone(), mp, sp, written.clone(), stop.clone()))
    });
    Ok(RecordingUpload {
        sink: sink.clone(),
        entry,
        paths,
        writer: Some(BufWriter::with_capacity(BUFFER_BYTES, file)),
        appended: 0,
        flushed: 0,
        buffered_since: None,
        written,
        stop,
        task,
    })
}

impl RecordingUpload {
    /// The id the stored recording will have.
    pub fn recording_id(&self) -> &str {
        &self.entry.recording_id
    }

    /// The object key the recording will be stored under.
    pub fn object_key(&self) -> &str {
        &self.entry.object_key
    }

    /// Bytes appended so far.
    pub fn bytes_appended(&self) -> u64 {
        self.appended
    }

    /// Parts already in object storage (uploaded while recording).
    pub fn parts_uploaded(&self) -> u32 {
        self.written.parts.load(Ordering::SeqCst)
    }

    /// Appends encoded audio to the spool file. Synchronous and cheap: a
    /// buffered write, written through to the file every 16 KiB or second;
    /// never waits for the object store.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), RecordingStoreError> {
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        writer.write_all(bytes).map_err(|source| RecordingStoreError::Spool { path: self.paths.data.clone(), source })?;
        self.appended += bytes.len() as u64;
        let now = Instant::now();
        let since = *self.buffered_since.get_or_insert(now);
        if writer.buffer().len() >= FLUSH_BYTES || now.duration_since(since) >= FLUSH_AFTER || writer.buffer().is_empty() {
            self.write_through()?;
        }
        Ok(())
    }

    /// Writes what is buffered through to the spool file now (not synced),
    /// e.g. when the media task stops appending for a while (hold).
    pub fn flush(&mut self) -> Result<(), RecordingStoreError> {
        self.write_through()
    }

    /// Writes the buffer through to the spool file and tells the uploader.
    fn write_through(&mut self) -> Result<(), RecordingStoreError> {
        if let Some(writer) = self.writer.as_mut() {
            writer.flush().map_err(|source| RecordingStoreError::Spool { path: self.paths.data.clone(), source })?;
        }
        self.buffered_since = None;
        metrics::gauge!("switchboard_recording_spool_bytes").increment((self.appended - self.flushed) as f64);
        self.flushed = self.appended;
        self.written.bytes.store(self.flushed, Ordering::SeqCst);
        if self.flushed >= self.written.boundary.load(Ordering::SeqCst) {
            self.written.wake.notify_one();
        }
        Ok(())
    }

    /// Ends the recording: applies `header_patch` (e.g. a WAV's sizes),
    /// syncs the spool file, marks the entry complete and stores the rest in
    /// object storage, retrying while it is down. `None` when the gateway
    /// shuts down first: the entry stays in the spool for the next start.
    pub async fn finish(mut self, duration_ms: u64, header_patch: Option<HeaderPatch>) -> Result<Option<StoredRecording>, RecordingStoreError> {
        self.write_through()?;
        if let Some(p) = &header_patch {
            let end = p.offset.saturating_add(p.bytes.len() as u64);
            if end > self.appended {
                return Err(RecordingStoreError::Patch { offset: p.offset, len: p.bytes.len() as u64, recorded: self.appended });
            }
        }
        // The uploader stops before the patch, so no part is read while it
        // is written; what it uploaded is known exactly.
        self.stop.cancel();
        let (mut sp, trusted) = match self.task.take() {
            None => (SpooledRecording { entry: self.entry.clone(), paths: self.paths.clone() }, true),
            Some(task) => match task.await {
                Ok(sp) => (sp, true),
                Err(e) => {
                    // Its progress is unknown: treat its upload as left over.
                    warn!(call_id = %self.entry.call_id, error = %e, "the part uploader of a recording failed; uploading it again");
                    let entry = SpoolEntry::read(&self.paths.sidecar).unwrap_or_else(|_| self.entry.clone());
                    (SpooledRecording { entry, paths: self.paths.clone() }, false)
                }
            },
        };
        let writer = self.writer.take();
        let path = self.paths.data.clone();
        let patched = header_patch.as_ref().map(|p| p.offset..p.offset + p.bytes.len() as u64);
        let synced = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::FileExt as _;
            let Some(writer) = writer else { return Ok(()) };
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            if let Some(p) = header_patch {
                file.write_all_at(&p.bytes, p.offset)?;
            }
            file.sync_all()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        synced.map_err(|source| RecordingStoreError::Spool { path: self.paths.data.clone(), source })?;
        sp.entry.complete = true;
        sp.entry.duration_ms = duration_ms;
        let (entry, sidecar) = (sp.entry.clone(), sp.paths.sidecar.clone());
        tokio::task::spawn_blocking(move || entry.write(&sidecar))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| RecordingStoreError::Spool { path: path.clone(), source })?;
        let stop = self.sink.shutdown.clone();
        Ok(self.sink.complete_entry(sp, trusted, patched, &stop).await)
    }

    /// Discards the recording: its spool files go at once, a multipart
    /// upload it started is aborted in the background.
    pub fn abort(mut self) {
        self.stop.cancel();
        drop(self.writer.take());
        self.paths.remove();
        metrics::gauge!("switchboard_recording_spool_bytes").decrement(self.flushed as f64);
        let (Some(task), Some(mp)) = (self.task.take(), self.sink.multipart.clone()) else { return };
        let sink = self.sink.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let Ok(sp) = task.await else { return };
            if let Some(upload) = &sp.entry.upload {
                let key = Path::from(sp.entry.object_key.as_str());
                let stop = sink.shutdown.clone();
                sink.abort_upload(&mp, &key, &upload.upload_id, &sp.entry, &stop).await;
            }
        });
    }
}

#[cfg(test)]
impl RecordingUpload {
    /// What a crash leaves: the spool as written so far and the parts sent,
    /// with the part uploader stopped (a dropped upload's uploader can still
    /// be finishing a part, which a process that died would not).
    pub(super) async fn crash(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RecordingUpload {
    fn drop(&mut self) {
        // The buffered writer writes itself through when dropped.
        self.stop.cancel();
        if let Ok(mut active) = self.sink.active.lock() {
            active.remove(&self.entry.recording_id);
        }
    }
}

/// Uploads every completed part but the first while the recording is
/// written, until `stop`; returns the entry with the upload's progress.
async fn upload_parts(sink: RecordingSink, mp: Arc<dyn MultipartStore>, mut sp: SpooledRecording, written: Arc<Written>, stop: CancellationToken) -> SpooledRecording {
    let key = Path::from(sp.entry.object_key.as_str());
    let part_size = sink.part_size;
    loop {
        let no_parts = Default::default();
        let uploaded = sp.entry.upload.as_ref().map(|u| &u.parts).unwrap_or(&no_parts);
        let bytes = written.bytes.load(Ordering::SeqCst);
        let Some(idx) = parts::ready_while_recording(part_size, bytes, uploaded) else {
            written.boundary.store(parts::next_boundary(part_size, uploaded), Ordering::SeqCst);
            // The writer may have passed the boundary before it was set.
            if written.bytes.load(Ordering::SeqCst) >= written.boundary.load(Ordering::SeqCst) {
                continue;
            }
            tokio::select! {
                _ = written.wake.notified() => continue,
                _ = stop.cancelled() => return sp,
            }
        };
        if sp.entry.upload.is_none() {
            let Some(upload_id) = sink.create_upload(&mp, &key, &sp.entry, &stop).await else { return sp };
            sp.entry.upload = Some(MultipartProgress { upload_id, part_size, parts: Default::default() });
            // Recorded before any part goes, so a crash leaves an upload the
            // next start can abort.
            sink.save(&sp).await;
        }
        let Some(upload_id) = sp.entry.upload.as_ref().map(|u| u.upload_id.clone()) else { continue };
        match sink.send_part(&mp, &sp, &key, &upload_id, idx, part_size, bytes, &stop).await {
            Attempts::Done(etag) => {
                if let Some(u) = sp.entry.upload.as_mut() {
                    u.parts.insert(idx, etag);
                }
                written.parts.fetch_add(1, Ordering::SeqCst);
                sink.save(&sp).await;
            }
            Attempts::Refused(_) => {
                warn!(call_id = %sp.entry.call_id, "the object store no longer knows the recording's multipart upload; starting a new one");
                sp.entry.upload = None;
                sink.save(&sp).await;
            }
            Attempts::Unreadable(e) => {
                // Left to finish, which reads the whole file again.
                warn!(call_id = %sp.entry.call_id, path = %sp.paths.data.display(), error = %e, "reading a part of the spooled recording failed");
                return sp;
            }
            Attempts::Stopped => return sp,
        }
    }
}
