//! Recordings streamed to the spool and to a real S3 server while they are
//! written: parts go up during the call, an outage only delays the upload,
//! a crash mid-call loses nothing; and the local store.
//!
//! The S3 server is s3s-fs (`SWITCHBOARD_TEST_S3S_BIN`, installed by
//! `scripts/test`), started with credentials so that every request's SigV4
//! signature is checked. It is started here rather than through the
//! end-to-end harness because these tests stop it and start it again on
//! the same port and data directory.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use switchboard_gateway::config::{RecordingStoreKind, RecordingsConfig, S3Config};
use switchboard_gateway::recordings::{HeaderPatch, RecordingKind, RecordingMeta, RecordingSink, RecordingUpload};
use tokio_util::sync::CancellationToken;

const S3S_BIN: &str = "SWITCHBOARD_TEST_S3S_BIN";
const BUCKET: &str = "recordings";
const MIB: u64 = 1024 * 1024;
/// The smallest part S3 (and s3s-fs) takes, so that a test sends several.
const PART: u64 = 5 * MIB;

/// An s3s-fs server on a fixed port and data directory that a test can
/// stop and start again.
struct S3Server {
    bin: PathBuf,
    port: u16,
    root: PathBuf,
    log: PathBuf,
    access_key: String,
    secret_key: String,
    child: Option<Child>,
}

impl S3Server {
    /// A server not started yet, with its bucket and random credentials.
    fn new(dir: &Path) -> S3Server {
        let value = std::env::var(S3S_BIN).unwrap_or_default();
        assert!(
            !value.trim().is_empty(),
            "environment variable {S3S_BIN} is not set: these tests run the s3s-fs S3 server; run them through \
             `scripts/test`, or `eval \"$(scripts/test --print-env)\"` first, which installs it"
        );
        let bin = PathBuf::from(value);
        assert!(bin.is_file(), "{S3S_BIN}={} does not name a file; rerun `scripts/test --print-env`", bin.display());
        let root = dir.join("s3-data");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
        let secret = |n: usize| -> String { (0..n).map(|_| char::from(b'A' + rand::random::<u8>() % 26)).collect() };
        S3Server { bin, port, root, log: dir.join("s3s-fs.log"), access_key: format!("AK{}", secret(18)), secret_key: secret(40), child: None }
    }

    /// Starts the server and waits until it accepts connections.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key, "--secret-key", &self.secret_key])
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting s3s-fs");
        self.child = Some(child);
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!("s3s-fs exited with {status}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
                }
                if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        ready.await.expect("s3s-fs accepts connections within 30 s");
    }

    /// Kills the server (its data directory stays).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn config(&self) -> RecordingsConfig {
        RecordingsConfig {
            store: RecordingStoreKind::S3,
            s3: S3Config {
                bucket: BUCKET.into(),
                endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
                region: "us-east-1".into(),
                access_key_id: self.access_key.clone(),
                secret_access_key: self.secret_key.clone(),
                prefix: "calls/".into(),
                path_style: true,
            },
            ..RecordingsConfig::default()
        }
    }

    fn client(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(format!("http://127.0.0.1:{}", self.port))
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .with_region("us-east-1")
                .with_bucket_name(BUCKET)
                .with_access_key_id(&self.access_key)
                .with_secret_access_key(&self.secret_key)
                .build()
                .unwrap(),
        )
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        self.client().get(&ObjectPath::from(key)).await.unwrap().bytes().await.unwrap().to_vec()
    }

    /// Files s3s-fs keeps for unfinished multipart uploads: the parts
    /// (`.upload_id-<id>.part-<n>`) and the uploads (`.upload-<id>.json`).
    fn multipart_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(".upload"))
            .collect();
        names.sort();
        names
    }

    /// Part numbers stored for unfinished uploads.
    fn stored_part_numbers(&self) -> Vec<u32> {
        let mut parts: Vec<u32> =
            self.multipart_files().iter().filter_map(|n| n.rsplit_once(".part-").and_then(|(_, p)| p.parse().ok())).collect();
        parts.sort();
        parts
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wav_meta() -> RecordingMeta {
    RecordingMeta {
        format: "wav/pcm_s16le".into(),
        extension: "wav".into(),
        content_type: "audio/wav".into(),
        sample_rate_hz: 8000,
        channels: 2,
        admin_only: false,
        kind: RecordingKind::Recording,
        mailbox: None,
    }
}

/// A stereo 8 kHz 16-bit WAV header; sizes zero until the end, as a
/// streaming writer leaves them, or those of `data_bytes` of audio.
fn wav_header(data_bytes: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(if data_bytes == 0 { 0 } else { 36 + data_bytes }).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&8000u32.to_le_bytes());
    h.extend_from_slice(&32_000u32.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_bytes.to_le_bytes());
    h
}

/// Audio that differs in every chunk, so a misplaced part shows.
fn chunk(i: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|j| (i.wrapping_mul(31).wrapping_add(j * 7) % 251) as u8).collect()
}

/// Appends `bytes` of audio in 4 KiB chunks, recording them in `all`.
fn append_audio(upload: &mut RecordingUpload, all: &mut Vec<u8>, bytes: u64) {
    let mut left = bytes;
    while left > 0 {
        let c = chunk(all.len() as u64, left.min(4096) as usize);
        upload.append(&c).expect("append never fails on a healthy disk");
        all.extend_from_slice(&c);
        left -= c.len() as u64;
    }
}

/// Waits (up to a minute) until `upload` has sent `n` parts while recording.
async fn parts_uploaded(upload: &RecordingUpload, n: u32) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while upload.parts_uploaded() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} parts uploaded while recording; got {}", upload.parts_uploaded()));
}

fn spool_files(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("spool")).unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_recording_goes_up_in_parts_while_it_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::new(dir.path());
    s3.start().await;
    let data_dir = dir.path().join("gateway");
    let sink = RecordingSink::from_config(&s3.config(), &data_dir, "http://gw", CancellationToken::new()).unwrap().with_part_size(PART);

    let mut upload = sink.begin("call-long", 1_700_000_000_000, wav_meta()).unwrap();
    let mut all = wav_header(0);
    upload.append(&all).unwrap();
    // 20 MiB of audio: parts 2, 3 and 4 (5 MiB each) go as soon as each is
    // complete, while the rest is written; part 1 holds the header and
    // goes at the end, with part 5, the last 44 bytes.
    append_audio(&mut upload, &mut all, PART);
    assert_eq!(upload.parts_uploaded(), 0, "part 1 is held back for the header");
    for part in 1..=3u32 {
        append_audio(&mut upload, &mut all, PART);
        parts_uploaded(&upload, part).await;
    }
    assert_eq!(all.len() as u64, 20 * MIB + 44);
    assert_eq!(s3.stored_part_numbers(), vec![2, 3, 4], "the server holds parts 2-4 before the recording ends");

    let audio = (all.len() - 44) as u32;
    let header = wav_header(audio);
    all[..44].copy_from_slice(&header);
    let patch = HeaderPatch { offset: 4, bytes: header[4..44].to_vec() };
    let stored = tokio::time::timeout(Duration::from_secs(60), upload.finish(655_360, Some(patch)))
        .await
        .expect("stored within a minute")
        .unwrap()
        .expect("stored, not shut down");

    assert!(stored.object_key.starts_with("calls/2023/11/14/call-long/"), "{}", stored.object_key);
    assert!(stored.object_key.ends_with(&format!("{}.wav", stored.recording_id)));
    assert_eq!((stored.size_bytes, stored.duration_ms, stored.channels, stored.kind), (all.len() as u64, 655_360, 2, RecordingKind::Recording));
    let object = s3.get(&stored.object_key).await;
    assert_eq!(object.len(), all.len());
    assert!(object == all, "the stored object is exactly the appended bytes with the header patched");
    let wav = hound::WavReader::new(std::io::Cursor::new(&object)).unwrap();
    assert_eq!(wav.duration(), audio / 4);
    assert!(s3.multipart_files().is_empty(), "no upload left open: {:?}", s3.multipart_files());
    assert!(spool_files(&data_dir).is_empty(), "spool emptied: {:?}", spool_files(&data_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_while_s3_is_down_and_the_recording_is_stored_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::new(dir.path());
    let data_dir = dir.path().join("gateway");
    let sink = RecordingSink::from_config(&s3.config(), &data_dir, "http://gw", CancellationToken::new())
        .unwrap()
        .with_part_size(PART)
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500));

    // The server is not up when the call starts.
    let mut upload = sink.begin("call-outage", 1_700_000_000_000, wav_meta()).unwrap();
    let mut all = wav_header(0);
    upload.append(&all).unwrap();
    append_audio(&mut upload, &mut all, 2 * PART);
    assert_eq!(upload.parts_uploaded(), 0);

    // It comes up: part 2, complete meanwhile, goes.
    s3.start().await;
    parts_uploaded(&upload, 1).await;
    assert_eq!(s3.stored_part_numbers(), vec![2]);

    // It goes down again mid-call; the call goes on recording.
    s3.stop();
    append_audio(&mut upload, &mut all, 2 * PART + 1000);
    let audio = (all.len() - 44) as u32;
    let header = wav_header(audio);
    all[..44].copy_from_slice(&header);
    let mut finish = tokio::spawn(upload.finish(1000, Some(HeaderPatch { offset: 0, bytes: header })));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut finish).await.is_err(),
        "nothing can be stored while the server is down"
    );
    assert_eq!(spool_files(&data_dir).len(), 2, "the recording waits in the spool: {:?}", spool_files(&data_dir));

    s3.start().await;
    let stored = tokio::time::timeout(Duration::from_secs(60), finish)
        .await
        .expect("stored within a minute of the server's return")
        .unwrap()
        .unwrap()
        .expect("stored, not shut down");
    assert!(s3.get(&stored.object_key).await == all, "the stored object is exactly what was appended, patched");
    assert!(s3.multipart_files().is_empty(), "{:?}", s3.multipart_files());
    assert!(spool_files(&data_dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_call_keeps_what_was_recorded_as_a_valid_wav() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::new(dir.path());
    s3.start().await;
    let data_dir = dir.path().join("gateway");
    let sink = RecordingSink::from_config(&s3.config(), &data_dir, "http://gw", CancellationToken::new()).unwrap().with_part_size(PART);

    let mut upload = sink.begin("call-crash", 1_700_000_000_000, wav_meta()).unwrap();
    let recording_id = upload.recording_id().to_owned();
    let mut all = wav_header(0);
    upload.append(&all).unwrap();
    append_audio(&mut upload, &mut all, 2 * PART + 12_345);
    parts_uploaded(&upload, 1).await;
    assert_eq!(s3.stored_part_numbers(), vec![2], "a multipart upload is open on the server");
    // The process dies: no finish, no destructor; whatever the buffered
    // writer still held never reaches the disk.
    std::mem::forget(upload);
    let spooled_len = std::fs::metadata(data_dir.join("spool").join(format!("{recording_id}.wav"))).unwrap().len();
    assert!(spooled_len > 2 * PART && spooled_len <= all.len() as u64);

    let restarted = RecordingSink::from_config(&s3.config(), &data_dir, "http://gw", CancellationToken::new()).unwrap().with_part_size(PART);
    let pending = restarted.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].recording_id(), pending[0].call_id(), pending[0].complete()), (recording_id.as_str(), "call-crash", false));
    let stored = tokio::time::timeout(Duration::from_secs(60), restarted.upload(pending.into_iter().next().unwrap()))
        .await
        .expect("stored within a minute")
        .expect("stored, not shut down");

    let frames = (spooled_len - 44) / 4;
    let object = s3.get(&stored.object_key).await;
    let wav = hound::WavReader::new(std::io::Cursor::new(&object)).expect("a valid WAV");
    assert_eq!((wav.spec().channels, wav.spec().sample_rate, wav.spec().bits_per_sample), (2, 8000, 16));
    assert_eq!(u64::from(wav.duration()), frames, "every whole frame on disk at the crash");
    assert_eq!(object.len() as u64, 44 + frames * 4);
    assert!(object[44..] == all[44..object.len()], "the audio is what was appended");
    assert_eq!(stored.duration_ms, frames * 1000 / 8000);
    assert!(s3.multipart_files().is_empty(), "the upload the crash left open was aborted: {:?}", s3.multipart_files());
    assert!(restarted.pending().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_store_gets_a_streamed_recording() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let cfg = RecordingsConfig { dir: Some(store_dir.clone()), ..RecordingsConfig::default() };
    let sink = RecordingSink::from_config(&cfg, dir.path(), "http://gw/", CancellationToken::new()).unwrap();
    let meta = RecordingMeta { channels: 1, admin_only: true, kind: RecordingKind::Voicemail, ..wav_meta() };
    let mut upload = sink.begin("call-local", 1_700_000_000_000, meta).unwrap();
    let mut all = wav_header(0);
    upload.append(&all).unwrap();
    append_audio(&mut upload, &mut all, 3 * MIB + 5);
    let header = wav_header((all.len() - 44) as u32);
    all[..44].copy_from_slice(&header);
    let stored = upload.finish(98_304, Some(HeaderPatch { offset: 0, bytes: header })).await.unwrap().unwrap();
    assert_eq!((stored.admin_only, stored.kind, stored.channels), (true, RecordingKind::Voicemail, 1));
    assert_eq!(stored.url, format!("http://gw/v1/recordings/{}", stored.recording_id));
    assert!(std::fs::read(store_dir.join(&stored.object_key)).unwrap() == all);
    assert!(spool_files(dir.path()).is_empty());
}

/// A presigned link plays the stored object without credentials, and only
/// that object; the local store has no presigner (the gateway signs its
/// own links instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_link_plays_the_recording_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::new(dir.path());
    s3.start().await;
    let sink = RecordingSink::from_config(&s3.config(), &dir.path().join("gateway"), "http://gw", CancellationToken::new()).unwrap();
    let mut upload = sink.begin("call-link", 1_700_000_000_000, wav_meta()).unwrap();
    let mut all = wav_header(0);
    upload.append(&all).unwrap();
    append_audio(&mut upload, &mut all, 64 * 1024);
    let stored = upload.finish(2_048, None).await.unwrap().expect("stored");

    let url = sink.presigned(&stored.object_key, Duration::from_secs(60)).await.expect("S3 presigns");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let http = reqwest::Client::new();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert!(r.bytes().await.unwrap() == all, "the link plays exactly the stored recording");
    let tampered = url.replace("call-link", "call-other");
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), reqwest::StatusCode::FORBIDDEN, "the signature covers the key");
    let unsigned = url.split('?').next().unwrap();
    assert_ne!(http.get(unsigned).send().await.unwrap().status(), reqwest::StatusCode::OK, "no credentials, no audio");

    let local = RecordingSink::from_config(&Default::default(), &dir.path().join("local"), "http://gw", CancellationToken::new()).unwrap();
    assert!(local.presigned(&stored.object_key, Duration::from_secs(60)).await.is_none());
}
