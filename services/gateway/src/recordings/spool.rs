//! The spool directory: each recording is a data file `<recording_id>.<ext>`
//! and a JSON sidecar `<recording_id>.json` saying what it is and how far it
//! got (still being recorded or complete, and which parts of it already
//! reached object storage).
//!
//! The sidecar is replaced atomically (written beside, synced, renamed), so a
//! crash leaves either the old or the new state, never half of one. It is
//! written before the data file exists: a data file without a sidecar is
//! never produced by a recording, and a sidecar of an unfinished recording
//! whose data file is missing recorded nothing.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{RecordingKind, RecordingMeta};

/// What the sidecar records about one spooled recording.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpoolEntry {
    pub recording_id: String,
    pub call_id: String,
    pub object_key: String,
    pub meta: RecordingMeta,
    /// The recording was finished (header patched, synced): the data file is
    /// the whole recording. `false` after a crash mid-call.
    pub complete: bool,
    /// Known once complete.
    #[serde(default)]
    pub duration_ms: u64,
    /// The multipart upload under way, if one was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<MultipartProgress>,
}

/// A multipart upload of a recording and the parts it has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MultipartProgress {
    pub upload_id: String,
    pub part_size: u64,
    /// Part index (from 0) → the store's id of the uploaded part (ETag).
    pub parts: BTreeMap<usize, String>,
}

/// The sidecar of gateways before streaming recordings: a finished WAV.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacySidecar {
    call_id: String,
    recording_id: String,
    object_key: String,
    duration_ms: u64,
    sample_rate_hz: u32,
}

impl SpoolEntry {
    /// Reads a sidecar, in today's form or the one before streaming.
    pub fn read(path: &Path) -> Result<SpoolEntry, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        match serde_json::from_slice::<SpoolEntry>(&bytes) {
            Ok(entry) => Ok(entry),
            Err(e) => match serde_json::from_slice::<LegacySidecar>(&bytes) {
                Ok(old) => Ok(SpoolEntry {
                    recording_id: old.recording_id,
                    call_id: old.call_id,
                    object_key: old.object_key,
                    meta: RecordingMeta::stereo_wav(old.sample_rate_hz),
                    complete: true,
                    duration_ms: old.duration_ms,
                    upload: None,
                }),
                Err(_) => Err(e.to_string()),
            },
        }
    }

    /// Replaces the sidecar at `path` atomically and durably.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(path);
        Ok(())
    }
}

/// Makes a rename or a new file in `path`'s directory durable (best effort:
/// some filesystems cannot sync a directory).
pub fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// The two files of a recording in the spool directory.
#[derive(Debug, Clone)]
pub struct SpoolPaths {
    pub data: PathBuf,
    pub sidecar: PathBuf,
}

impl SpoolPaths {
    pub fn new(spool: &Path, recording_id: &str, extension: &str) -> SpoolPaths {
        SpoolPaths { data: spool.join(format!("{recording_id}.{extension}")), sidecar: spool.join(format!("{recording_id}.json")) }
    }

    /// Removes both files, the sidecar last (a sidecar without its data file
    /// is recognised; the other way round would be an unexplained file).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.data);
        let _ = std::fs::remove_file(&self.sidecar);
    }
}

/// A file extension that is safe in a spool file name and an object key.
pub fn valid_extension(ext: &str) -> bool {
    !ext.is_empty() && ext.len() <= 10 && ext.bytes().all(|b| b.is_ascii_alphanumeric()) && ext != "json" && ext != "tmp"
}

impl RecordingMeta {
    /// The stereo 16-bit WAV of the recorder tap.
    pub fn stereo_wav(sample_rate_hz: u32) -> RecordingMeta {
        RecordingMeta {
            format: "wav/pcm_s16le".to_owned(),
            extension: "wav".to_owned(),
            content_type: "audio/wav".to_owned(),
            sample_rate_hz,
            channels: 2,
            admin_only: false,
            kind: RecordingKind::Recording,
            mailbox: None,
        }
    }

    /// Whether the data is a RIFF/WAVE file whose sizes can be repaired.
    pub fn is_wav(&self) -> bool {
        self.format.starts_with("wav") || self.extension.eq_ignore_ascii_case("wav")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_of_the_previous_release_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r1.json");
        std::fs::write(&path, br#"{"call_id":"c1","recording_id":"r1","object_key":"2023/11/14/c1/r1.wav","duration_ms":3000,"sample_rate_hz":8000}"#).unwrap();
        let entry = SpoolEntry::read(&path).unwrap();
        assert!(entry.complete);
        assert_eq!(entry.meta, RecordingMeta::stereo_wav(8000));
        assert_eq!(entry.duration_ms, 3000);
    }

    #[test]
    fn a_sidecar_round_trips_with_its_upload_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r2.json");
        let entry = SpoolEntry {
            recording_id: "r2".into(),
            call_id: "c2".into(),
            object_key: "k".into(),
            meta: RecordingMeta::stereo_wav(8000),
            complete: false,
            duration_ms: 0,
            upload: Some(MultipartProgress { upload_id: "u".into(), part_size: 10, parts: [(1, "e1".to_owned())].into() }),
        };
        entry.write(&path).unwrap();
        let back = SpoolEntry::read(&path).unwrap();
        assert_eq!(back.upload, entry.upload);
        assert!(!back.complete);
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, b"{ torn").unwrap();
        assert!(SpoolEntry::read(&path).is_err());
    }

    #[test]
    fn extensions_are_checked() {
        assert!(valid_extension("wav"));
        assert!(valid_extension("mp3"));
        assert!(!valid_extension("json"));
        assert!(!valid_extension("../x"));
        assert!(!valid_extension(""));
    }
}
