//! The sink on the local store, and the streaming upload against an
//! in-process multipart store that can be taken down.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use object_store::memory::InMemory;
use object_store::{MultipartId, PutResult};

use super::*;

fn local_sink(dir: &FsPath) -> RecordingSink {
    RecordingSink::from_config(&RecordingsConfig::default(), dir, "http://gw:8080/", CancellationToken::new()).unwrap()
}

/// A WAV header with both sizes zero, as a streaming writer starts it.
fn streaming_wav_header(sample_rate: u32, channels: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * u32::from(channels) * 2).to_le_bytes());
    h.extend_from_slice(&(channels * 2).to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data\0\0\0\0");
    h
}

fn spool_files(dir: &FsPath) -> usize {
    std::fs::read_dir(dir.join("spool")).unwrap().count()
}

#[tokio::test]
async fn local_store_keeps_the_wav_under_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let sink = local_sink(dir.path());
    let mut upload = sink.begin("call-9", 1_700_000_000_000, RecordingMeta::stereo_wav(8000)).unwrap();
    upload.append(b"RIFF....WAVE").unwrap();
    let stored = upload.finish(1500, None).await.unwrap().unwrap();
    assert!(stored.object_key.starts_with("2023/11/14/call-9/"));
    assert!(stored.object_key.ends_with(".wav"));
    assert_eq!(stored.url, format!("http://gw:8080/v1/recordings/{}", stored.recording_id));
    assert_eq!((stored.duration_ms, stored.size_bytes, stored.channels, stored.kind), (1500, 12, 2, RecordingKind::Recording));
    let on_disk = std::fs::read(dir.path().join("recordings").join(&stored.object_key)).unwrap();
    assert_eq!(on_disk, b"RIFF....WAVE");
    assert_eq!(spool_files(dir.path()), 0, "spool emptied after upload");
}

#[tokio::test]
async fn local_store_gets_a_streamed_recording_with_its_patch() {
    let dir = tempfile::tempdir().unwrap();
    let sink = local_sink(dir.path());
    let meta = RecordingMeta { admin_only: true, kind: RecordingKind::Voicemail, channels: 1, ..RecordingMeta::stereo_wav(8000) };
    let mut upload = sink.begin("call-3", 1_700_000_000_000, meta).unwrap();
    let mut expected = streaming_wav_header(8000, 1);
    upload.append(&expected).unwrap();
    for i in 0..3000u32 {
        let chunk: Vec<u8> = (0..1000u32).map(|j| (i * 7 + j) as u8).collect();
        upload.append(&chunk).unwrap();
        expected.extend_from_slice(&chunk);
    }
    let patch = HeaderPatch { offset: 4, bytes: vec![1, 2, 3, 4] };
    expected[4..8].copy_from_slice(&[1, 2, 3, 4]);
    let stored = upload.finish(187_500, Some(patch)).await.unwrap().unwrap();
    assert_eq!((stored.admin_only, stored.kind, stored.channels), (true, RecordingKind::Voicemail, 1));
    assert_eq!(stored.size_bytes, expected.len() as u64);
    let on_disk = std::fs::read(dir.path().join("recordings").join(&stored.object_key)).unwrap();
    assert!(on_disk == expected, "the stored object is the appended bytes with the patch");
    assert_eq!(spool_files(dir.path()), 0);
}

#[tokio::test]
async fn a_patch_beyond_the_recording_is_refused_and_the_audio_kept() {
    let dir = tempfile::tempdir().unwrap();
    let sink = local_sink(dir.path());
    let mut upload = sink.begin("call-4", 0, RecordingMeta::stereo_wav(8000)).unwrap();
    upload.append(&[0u8; 100]).unwrap();
    let err = upload.finish(0, Some(HeaderPatch { offset: 98, bytes: vec![0; 4] })).await.unwrap_err();
    assert!(matches!(err, RecordingStoreError::Patch { recorded: 100, .. }), "{err}");
    assert_eq!(sink.pending().len(), 1, "what was recorded stays in the spool");
}

#[tokio::test]
async fn appends_reach_the_spool_file_every_16_kib_or_on_flush() {
    let dir = tempfile::tempdir().unwrap();
    let sink = local_sink(dir.path());
    let mut upload = sink.begin("call-6", 0, RecordingMeta::stereo_wav(8000)).unwrap();
    let path = dir.path().join("spool").join(format!("{}.wav", upload.recording_id()));
    let on_disk = || std::fs::metadata(&path).unwrap().len();
    upload.append(&[1u8; 1000]).unwrap();
    assert_eq!(on_disk(), 0, "buffered");
    for _ in 0..16 {
        upload.append(&[2u8; 1000]).unwrap();
    }
    assert_eq!(on_disk(), 17_000, "written through once 16 KiB are buffered");
    upload.append(&[3u8; 10]).unwrap();
    upload.flush().unwrap();
    assert_eq!(on_disk(), 17_010);
    assert_eq!(upload.bytes_appended(), 17_010);
}

#[tokio::test]
async fn bad_extensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = local_sink(dir.path());
    let meta = RecordingMeta { extension: "../../etc".into(), ..RecordingMeta::stereo_wav(8000) };
    assert!(matches!(sink.begin("c", 0, meta), Err(RecordingStoreError::Extension(_))));
    assert_eq!(spool_files(dir.path()), 0);
}

#[tokio::test]
async fn an_aborted_recording_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = local_sink(dir.path());
    let mut upload = sink.begin("call-5", 0, RecordingMeta::stereo_wav(8000)).unwrap();
    upload.append(&[1u8; 5000]).unwrap();
    upload.abort();
    assert_eq!(spool_files(dir.path()), 0);
    assert!(sink.pending().is_empty());
}

#[tokio::test]
async fn a_recording_cut_short_by_a_crash_is_repaired_and_stored_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sink = local_sink(dir.path());
    let mut upload = sink.begin("call-7", 1_700_000_000_000, RecordingMeta::stereo_wav(8000)).unwrap();
    let id = upload.recording_id().to_owned();
    upload.append(&streaming_wav_header(8000, 2)).unwrap();
    // Three seconds of stereo audio and half a frame cut by the crash.
    let audio: Vec<u8> = (0..3 * 32_000 + 2).map(|i| (i % 251) as u8).collect();
    for chunk in audio.chunks(640) {
        upload.append(chunk).unwrap();
    }
    assert!(sink.pending().is_empty(), "a recording still being written is not pending");
    drop(upload); // the media task dies; the process with it
    drop(sink);

    let again = local_sink(dir.path());
    let pending = again.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].call_id(), pending[0].recording_id(), pending[0].complete()), ("call-7", id.as_str(), false));
    let stored = again.upload(pending.into_iter().next().unwrap()).await.unwrap();
    assert_eq!(stored.recording_id, id);
    assert_eq!(stored.duration_ms, 3000);
    let object = std::fs::read(dir.path().join("recordings").join(&stored.object_key)).unwrap();
    let wav = hound::WavReader::new(std::io::Cursor::new(&object)).unwrap();
    assert_eq!((wav.spec().channels, wav.spec().sample_rate), (2, 8000));
    assert_eq!(wav.duration(), 3 * 8000, "every whole frame recorded, the cut one dropped");
    assert_eq!(&object[44..], &audio[..3 * 32_000]);
    assert!(again.pending().is_empty());
}

#[tokio::test]
async fn sidecars_of_the_previous_release_are_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("spool")).unwrap();
    std::fs::write(dir.path().join("spool/r-old.wav"), b"RIFFold").unwrap();
    std::fs::write(
        dir.path().join("spool/r-old.json"),
        br#"{"call_id":"c-old","recording_id":"r-old","object_key":"2023/11/14/c-old/r-old.wav","duration_ms":3000,"sample_rate_hz":8000}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("spool/r-bad.json"), b"{ not json").unwrap();
    let sink = local_sink(dir.path());
    let pending = sink.pending();
    assert_eq!(pending.len(), 1, "the unreadable sidecar is skipped");
    let stored = sink.upload(pending.into_iter().next().unwrap()).await.unwrap();
    assert_eq!((stored.object_key.as_str(), stored.duration_ms), ("2023/11/14/c-old/r-old.wav", 3000));
    assert_eq!(std::fs::read(dir.path().join("recordings").join(&stored.object_key)).unwrap(), b"RIFFold");
    assert!(dir.path().join("spool/r-bad.json").exists(), "left for the operator");
}

/// A multipart store in memory that takes parts in any order (like S3) and
/// can be taken down.
#[derive(Default)]
struct PartStore {
    objects: InMemory,
    uploads: std::sync::Mutex<HashMap<String, BTreeMap<usize, Bytes>>>,
    next_id: AtomicU32,
    down: AtomicBool,
    failures: AtomicU32,
    failed: tokio::sync::Notify,
    /// Part indexes in the order they were sent.
    sent: std::sync::Mutex<Vec<usize>>,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

impl PartStore {
    fn check_up(&self) -> object_store::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            self.failed.notify_one();
            return Err(object_store::Error::Generic { store: "test", source: "store is down".into() });
        }
        Ok(())
    }
}

impl MultipartStore for PartStore {
    fn create_multipart<'a, 'b, 'c>(&'a self, _path: &'b Path) -> BoxFut<'c, MultipartId>
    where
        'a: 'c,
        'b: 'c,
    {
        Box::pin(async move {
            self.check_up()?;
            let id = self.next_id.fetch_add(1, Ordering::SeqCst).to_string();
            self.uploads.lock().unwrap().insert(id.clone(), BTreeMap::new());
            Ok(id)
        })
    }

    fn put_part<'a, 'b, 'd, 'c>(&'a self, _path: &'b Path, id: &'d MultipartId, part_idx: usize, data: PutPayload) -> BoxFut<'c, PartId>
    where
        'a: 'c,
        'b: 'c,
        'd: 'c,
    {
        Box::pin(async move {
            self.check_up()?;
            let mut uploads = self.uploads.lock().unwrap();
            let parts = uploads.get_mut(id).ok_or(object_store::Error::NotFound { path: id.clone(), source: "no upload".into() })?;
            parts.insert(part_idx, Bytes::from(data));
            self.sent.lock().unwrap().push(part_idx);
            Ok(PartId { content_id: format!("etag-{part_idx}") })
        })
    }

    fn complete_multipart<'a, 'b, 'd, 'c>(&'a self, path: &'b Path, id: &'d MultipartId, parts: Vec<PartId>) -> BoxFut<'c, PutResult>
    where
        'a: 'c,
        'b: 'c,
        'd: 'c,
    {
        Box::pin(async move {
            self.check_up()?;
            let uploaded = self.uploads.lock().unwrap().remove(id).ok_or(object_store::Error::NotFound { path: id.clone(), source: "no upload".into() })?;
            assert_eq!(uploaded.keys().copied().collect::<Vec<_>>(), (0..parts.len()).collect::<Vec<_>>(), "parts 0..n, none missing");
            for (i, p) in parts.iter().enumerate() {
                assert_eq!(p.content_id, format!("etag-{i}"));
            }
            let whole: Vec<u8> = uploaded.values().flat_map(|b| b.iter().copied()).collect();
            self.objects.put(path, PutPayload::from(whole)).await
        })
    }

    fn abort_multipart<'a, 'b, 'd, 'c>(&'a self, _path: &'b Path, id: &'d MultipartId) -> BoxFut<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        'd: 'c,
    {
        Box::pin(async move {
            self.check_up()?;
            self.uploads.lock().unwrap().remove(id);
            Ok(())
        })
    }
}

fn part_sink(dir: &FsPath, store: &Arc<PartStore>, part_size: u64) -> RecordingSink {
    let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    RecordingSink::with_stores(objects.clone(), objects, Some(store.clone()), "rec/".into(), "http://gw", spool, CancellationToken::new())
        .with_part_size(part_size)
        .with_backoff(Duration::from_millis(1), Duration::from_millis(20))
}

async fn stored_bytes(store: &PartStore, key: &str) -> Vec<u8> {
    store.objects.get(&Path::from(key)).await.unwrap().bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn parts_go_while_recording_and_a_patched_part_goes_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PartStore::default());
    let sink = part_sink(dir.path(), &store, 64 * 1024);
    let mut upload = sink.begin("call-1", 0, RecordingMeta::stereo_wav(8000)).unwrap();
    let mut expected = Vec::new();
    for i in 0..210u32 {
        let chunk = vec![i as u8; 1000];
        upload.append(&chunk).unwrap();
        expected.extend_from_slice(&chunk);
    }
    // 210,000 bytes (at least 204,000 written through): parts 1 and 2 are
    // complete and go while recording.
    tokio::time::timeout(Duration::from_secs(10), async {
        while upload.parts_uploaded() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("parts 1 and 2 uploaded while recording");
    // The patch touches part 0 (held back) and part 1 (already sent).
    let patch = HeaderPatch { offset: 65_530, bytes: vec![0xAB; 10] };
    expected[65_530..65_540].fill(0xAB);
    let stored = upload.finish(1000, Some(patch)).await.unwrap().unwrap();
    assert!(stored_bytes(&store, &stored.object_key).await == expected);
    assert_eq!(*store.sent.lock().unwrap(), vec![1, 2, 1, 3, 0], "part 1 again after the patch, part 0 last");
    assert_eq!(spool_files(dir.path()), 0);
}

#[tokio::test]
async fn recording_goes_on_while_the_store_is_down_and_is_stored_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PartStore::default());
    store.down.store(true, Ordering::SeqCst);
    let sink = part_sink(dir.path(), &store, 16 * 1024);
    let mut upload = sink.begin("call-2", 0, RecordingMeta::stereo_wav(8000)).unwrap();
    let mut expected = Vec::new();
    for i in 0..100u32 {
        let chunk = vec![(i * 3) as u8; 1000];
        upload.append(&chunk).unwrap();
        expected.extend_from_slice(&chunk);
    }
    tokio::time::timeout(Duration::from_secs(10), store.failed.notified()).await.expect("the uploader tried the store");
    assert_eq!(upload.parts_uploaded(), 0);
    let finish = tokio::spawn(upload.finish(100, None));
    store.down.store(false, Ordering::SeqCst);
    let stored = tokio::time::timeout(Duration::from_secs(10), finish).await.expect("stored once the store is back").unwrap().unwrap().unwrap();
    assert!(stored_bytes(&store, &stored.object_key).await == expected);
    assert!(store.failures.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_crash_after_parts_were_sent_aborts_that_upload_and_stores_the_whole_recording() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PartStore::default());
    let sink = part_sink(dir.path(), &store, 16 * 1024);
    let mut upload = sink.begin("call-8", 0, RecordingMeta::stereo_wav(8000)).unwrap();
    let mut expected = streaming_wav_header(8000, 2);
    upload.append(&expected).unwrap();
    for i in 0..100u32 {
        let chunk = vec![i as u8; 1000];
        upload.append(&chunk).unwrap();
        expected.extend_from_slice(&chunk);
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while upload.parts_uploaded() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    upload.crash().await;
    assert_eq!(store.uploads.lock().unwrap().len(), 1, "an unfinished upload on the store");

    let again = part_sink(dir.path(), &store, 16 * 1024);
    let pending = again.pending();
    assert_eq!(pending.len(), 1);
    let stored = again.upload(pending.into_iter().next().unwrap()).await.unwrap();
    assert!(store.uploads.lock().unwrap().is_empty(), "the orphan upload was aborted, the new one completed");
    let object = stored_bytes(&store, &stored.object_key).await;
    let wav = hound::WavReader::new(std::io::Cursor::new(&object)).unwrap();
    assert_eq!(wav.duration(), 100_000 / 4);
    assert_eq!(&object[44..], &expected[44..]);
    assert_eq!(stored.duration_ms, 3125);
}
