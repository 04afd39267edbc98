//! Quarantine: authenticated payloads that could not be decoded, kept durably before ingress
//! answers 4xx, because HQ does not retry most 4xx and nothing it sent may be lost.
//!
//! Each payload is two files under `quarantine/`: `<id>.body`, the body byte for byte, and
//! `<id>.json`, what was known of the request and why it was refused. The body is synced
//! first and the description last, so a description always has its body.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What is kept about a refused payload besides its body.
#[derive(Debug, Serialize)]
pub struct QuarantineNote<'a> {
    pub id: &'a str,
    pub received_at: &'a str,
    pub source: &'a str,
    pub method: &'a str,
    pub content_type: Option<&'a str>,
    pub query: &'a serde_json::Map<String, serde_json::Value>,
    pub headers: &'a serde_json::Map<String, serde_json::Value>,
    /// The HTTP status answered.
    pub status: u16,
    pub error: String,
}

#[derive(Clone, Debug)]
pub struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    pub fn new(data_dir: &Path) -> Quarantine {
        Quarantine {
            dir: data_dir.join("quarantine"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a body and its note durably. Blocking IO.
    ///
    /// # Errors
    /// When either file cannot be written and synced.
    pub fn store(&self, note: &QuarantineNote<'_>, body: &[u8]) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        write_synced(&self.dir.join(format!("{}.body", note.id)), body)?;
        let description = serde_json::to_vec_pretty(note).expect("notes always serialise");
        write_synced(&self.dir.join(format!("{}.json", note.id)), &description)?;
        File::open(&self.dir)?.sync_all()
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
