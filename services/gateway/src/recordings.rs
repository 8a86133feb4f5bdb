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
    /// which case the spool file stays for the next start.
    pub async fn store_recording(&self, call_id: &str, started_at_ms: i64, rec: Finished) -> Result<Option<StoredRecording>, RecordingStoreError> {
        let recording_id = uuid::Uuid::now_v7().to_string();
        let date = chrono::DateTime::from_timestamp_millis(started_at_ms).unwrap_or_default().format("%Y/%m/%d");
        let object_key = format!("{}{}/{}/{}.wav", self.prefix, date, call_id, recording_id);
        let spool_path = self.spool.join(format!("{recording_id}.wav"));
        tokio::fs::write(&spool_path, &rec.wav)
            .await
            .map_err(|source| RecordingStoreError::Spool { path: spool_path.clone(), source })?;
        let size = rec.wav.len() as u64;
        let payload = PutPayload::from(rec.wav);
        let key = Path::from(object_key.as_str());
        let mut delay = Duration::from_millis(200);
        let started = std::time::Instant::now();
        loop {
            match self.store.put(&key, payload.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    warn!(call_id, object_key, error = %e, "uploading the recording failed; retrying (is the object store reachable and are the credentials right?)");
                    metrics::counter!("switchboard_recording_upload_retries_total").increment(1);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        metrics::histogram!("switchboard_recording_upload_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("switchboard_recordings_stored_total").increment(1);
        let _ = tokio::fs::remove_file(&spool_path).await;
        info!(call_id, object_key, size, "recording stored");
        Ok(Some(StoredRecording {
            url: format!("{}/v1/recordings/{}", self.public_url, recording_id),
            recording_id,
            object_key,
            format: "wav/pcm_s16le".to_owned(),
            duration_ms: rec.duration.as_millis() as u64,
            size_bytes: size,
            sample_rate_hz: rec.sample_rate,
        }))
    }
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
}
