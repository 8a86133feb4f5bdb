//! Where finished recordings go: a local spool file first (so a crash or an
//! object-store outage loses nothing), then object storage (S3-compatible,
//! or a local directory on the embedded defaults), retried until it works.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{RecordingStoreKind, RecordingsConfig};
use crate::media::recorder::Finished;

/// Failure to set up the recording store.
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
}

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
}

/// The recording store of the gateway.
#[derive(Clone)]
pub struct RecordingSink {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    public_url: String,
    spool: PathBuf,
    shutdown: CancellationToken,
}

impl RecordingSink {
    pub fn from_config(
        cfg: &RecordingsConfig,
        data_dir: &FsPath,
        public_url: &str,
        shutdown: CancellationToken,
    ) -> Result<RecordingSink, RecordingStoreError> {
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match cfg.store {
            RecordingStoreKind::Local => {
                let dir = cfg.dir.clone().unwrap_or_else(|| data_dir.join("recordings"));
                std::fs::create_dir_all(&dir).map_err(|source| RecordingStoreError::Dir { dir: dir.clone(), source })?;
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| RecordingStoreError::Dir {
                    dir: dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                (Arc::new(fs), String::new())
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
                (Arc::new(b.build().map_err(RecordingStoreError::S3)?), s3.prefix.clone())
            }
        };
        let spool = data_dir.join("spool");
        std::fs::create_dir_all(&spool).map_err(|source| RecordingStoreError::Dir { dir: spool.clone(), source })?;
        Ok(RecordingSink { store, prefix, public_url: public_url.trim_end_matches('/').to_owned(), spool, shutdown })
    }

    /// The object store (for playback).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Spools and uploads a call's recording; returns once it is in object
    /// storage (retrying while the store is down) or `None` on shutdown, in
    /// which case the spool files stay for [`RecordingSink::pending`].
    pub async fn store_recording(&self, call_id: &str, started_at_ms: i64, rec: Finished) -> Result<Option<StoredRecording>, RecordingStoreError> {
        let spooled = self.spool(call_id, started_at_ms, rec).await?;
        Ok(self.upload(spooled).await)
    }

    /// Writes the WAV and a JSON sidecar describing it to the spool
    /// directory, so the recording survives a crash before its upload.
    pub async fn spool(&self, call_id: &str, started_at_ms: i64, rec: Finished) -> Result<SpooledRecording, RecordingStoreError> {
        let recording_id = uuid::Uuid::now_v7().to_string();
        let date = chrono::DateTime::from_timestamp_millis(started_at_ms).unwrap_or_default().format("%Y/%m/%d");
        let meta = SpoolMeta {
            call_id: call_id.to_owned(),
            object_key: format!("{}{}/{}/{}.wav", self.prefix, date, call_id, recording_id),
            recording_id,
            duration_ms: rec.duration.as_millis() as u64,
            sample_rate_hz: rec.sample_rate,
        };
        let wav_path = self.spool.join(format!("{}.wav", meta.recording_id));
        let meta_path = self.spool.join(format!("{}.json", meta.recording_id));
        let write = async {
            tokio::fs::write(&wav_path, &rec.wav).await?;
            // The sidecar is written last: a WAV without one is incomplete.
            let json = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
            tokio::fs::write(&meta_path, json).await
        };
        write.await.map_err(|source| RecordingStoreError::Spool { path: wav_path.clone(), source })?;
        Ok(SpooledRecording { meta, wav_path, meta_path })
    }

    /// Recordings left in the spool by an earlier run (crash, shutdown or
    /// object-store outage), oldest first.
    pub fn pending(&self) -> Vec<SpooledRecording> {
        let Ok(entries) = std::fs::read_dir(&self.spool) else { return Vec::new() };
        let mut out: Vec<SpooledRecording> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|meta_path| {
                let meta: SpoolMeta = match std::fs::read(&meta_path).map(|b| serde_json::from_slice(&b)) {
                    Ok(Ok(m)) => m,
                    _ => {
                        warn!(path = %meta_path.display(), "unreadable spool sidecar skipped; inspect it by hand");
                        return None;
                    }
                };
                let wav_path = meta_path.with_extension("wav");
                wav_path.exists().then_some(SpooledRecording { meta, wav_path, meta_path })
            })
            .collect();
        out.sort_by(|a, b| a.meta.recording_id.cmp(&b.meta.recording_id));
        out
    }

    /// Uploads a spooled recording, retrying until it is stored or the
    /// gateway shuts down (`None`); the spool files are removed after.
    pub async fn upload(&self, spooled: SpooledRecording) -> Option<StoredRecording> {
        let SpooledRecording { meta, wav_path, meta_path } = spooled;
        let call_id = meta.call_id.as_str();
        let bytes = match tokio::fs::read(&wav_path).await {
            Ok(b) => b,
            Err(e) => {
                warn!(call_id, path = %wav_path.display(), error = %e, "spooled recording cannot be read");
                return None;
            }
        };
        let size = bytes.len() as u64;
        let payload = PutPayload::from(bytes);
        let key = Path::from(meta.object_key.as_str());
        let mut delay = Duration::from_millis(200);
        let started = std::time::Instant::now();
        loop {
            match self.store.put(&key, payload.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    warn!(call_id, object_key = %meta.object_key, error = %e, "uploading the recording failed; retrying (is the object store reachable and are the credentials right?)");
                    metrics::counter!("switchboard_recording_upload_retries_total").increment(1);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        metrics::histogram!("switchboard_recording_upload_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("switchboard_recordings_stored_total").increment(1);
        let _ = tokio::fs::remove_file(&meta_path).await;
        let _ = tokio::fs::remove_file(&wav_path).await;
        info!(call_id, object_key = %meta.object_key, size, "recording stored");
        Some(StoredRecording {
            url: format!("{}/v1/recordings/{}", self.public_url, meta.recording_id),
            recording_id: meta.recording_id,
            object_key: meta.object_key,
            format: "wav/pcm_s16le".to_owned(),
            duration_ms: meta.duration_ms,
            size_bytes: size,
            sample_rate_hz: meta.sample_rate_hz,
        })
    }
}

/// What the spool sidecar records about a recording.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpoolMeta {
    pub call_id: String,
    pub recording_id: String,
    pub object_key: String,
    pub duration_ms: u64,
    pub sample_rate_hz: u32,
}

/// A recording in the spool, waiting for upload.
#[derive(Debug)]
pub struct SpooledRecording {
    pub meta: SpoolMeta,
    wav_path: PathBuf,
    meta_path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_keeps_the_wav_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let sink = RecordingSink::from_config(&RecordingsConfig::default(), dir.path(), "http://gw:8080/", CancellationToken::new()).unwrap();
        let rec = Finished { wav: b"RIFF....WAVE".to_vec(), duration: Duration::from_millis(1500), sample_rate: 8000 };
        let stored = sink.store_recording("call-9", 1_700_000_000_000, rec).await.unwrap().unwrap();
        assert!(stored.object_key.starts_with("2023/11/14/call-9/"));
        assert_eq!(stored.url, format!("http://gw:8080/v1/recordings/{}", stored.recording_id));
        let on_disk = std::fs::read(dir.path().join("recordings").join(&stored.object_key)).unwrap();
        assert_eq!(on_disk, b"RIFF....WAVE");
        assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 0, "spool emptied after upload");
    }

    #[tokio::test]
    async fn spooled_recordings_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let sink = RecordingSink::from_config(&RecordingsConfig::default(), dir.path(), "http://gw", CancellationToken::new()).unwrap();
        let rec = Finished { wav: b"WAVDATA".to_vec(), duration: Duration::from_secs(3), sample_rate: 8000 };
        let spooled = sink.spool("call-7", 1_700_000_000_000, rec).await.unwrap();
        let id = spooled.meta.recording_id.clone();
        drop(spooled); // the process dies before uploading
        let again = RecordingSink::from_config(&RecordingsConfig::default(), dir.path(), "http://gw", CancellationToken::new()).unwrap();
        let pending = again.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].meta.call_id, "call-7");
        let stored = again.upload(pending.into_iter().next().unwrap()).await.unwrap();
        assert_eq!(stored.recording_id, id);
        assert_eq!(stored.duration_ms, 3000);
        assert!(again.pending().is_empty());
    }
}
