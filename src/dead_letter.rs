//! Dead letters: deliveries a sink refused for good or that ran out of retries, kept on disk
//! with the reason so that nothing accepted is ever silently gone.
//!
//! Each dead letter is one JSON file, `dead/<sink>/<envelope id>.json`, holding the route,
//! the error, attempt counts and times, the envelope and the raw body (base64), written to a
//! temporary name, synced and renamed, so a crash leaves either the whole letter or none.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::sinks::is_plain_name;
use crate::spool::Route;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub envelope_id: String,
    pub route: Route,
    /// The spool offset of the record, for tracing it back.
    pub offset: u64,
    /// The last error the sink gave.
    pub reason: String,
    pub attempts: u32,
    pub first_attempt_at: String,
    pub last_attempt_at: String,
    pub envelope: serde_json::Value,
    /// The request body as HQ sent it, base64-encoded.
    pub body_base64: String,
}

impl DeadLetter {
    pub fn body(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.body_base64)
    }

    pub fn encode_body(body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(body)
    }
}

#[derive(Clone, Debug)]
pub struct DeadLetters {
    dir: PathBuf,
}

impl DeadLetters {
    pub fn new(data_dir: &Path) -> DeadLetters {
        DeadLetters {
            dir: data_dir.join("dead"),
        }
    }

    /// Stores a dead letter durably.
    ///
    /// # Errors
    /// When the file cannot be written and synced.
    pub fn store(&self, letter: &DeadLetter) -> std::io::Result<PathBuf> {
        let dir = self.dir.join(&letter.route.sink);
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", letter.envelope_id));
        let temporary = dir.join(format!(".{}.tmp", letter.envelope_id));
        let mut file = File::create(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(letter).expect("dead letters always serialise"))?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        File::open(&dir)?.sync_all()?;
        Ok(path)
    }

    /// Every dead letter that `filter` selects, across sinks, oldest envelope first.
    ///
    /// # Errors
    /// When a folder or a letter cannot be read.
    pub fn find(&self, filter: &Filter) -> std::io::Result<Vec<DeadLetter>> {
        let sinks = match &filter.sink {
            Some(sink) => vec![sink.clone()],
            None => self.sink_names()?,
        };
        let mut letters = Vec::new();
        for sink in sinks {
            letters.extend(
                self.list(&sink)?
                    .into_iter()
                    .filter(|letter| filter.matches(letter)),
            );
        }
        letters.sort_by(|a, b| a.envelope_id.cmp(&b.envelope_id));
        Ok(letters)
    }

    /// How many dead letters each sink has, from the file names alone: the admin page asks
    /// every few seconds, and reading every letter (envelope and body) for a count would not do.
    ///
    /// # Errors
    /// When a folder cannot be read.
    pub fn count_by_sink(&self) -> std::io::Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for sink in self.sink_names()? {
            let letters = fs::read_dir(self.dir.join(&sink))?
                .flatten()
                .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
                .count();
            if letters > 0 {
                counts.insert(sink, letters as u64);
            }
        }
        Ok(counts)
    }

    /// The sinks that have a dead-letter folder.
    fn sink_names(&self) -> std::io::Result<Vec<String>> {
        match fs::read_dir(&self.dir) {
            Ok(entries) => Ok(entries
                .flatten()
                .filter(|entry| entry.path().is_dir())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    /// One dead letter, if there is one.
    ///
    /// # Errors
    /// When the letter exists but cannot be read.
    pub fn get(&self, sink: &str, envelope_id: &str) -> std::io::Result<Option<DeadLetter>> {
        if !is_plain_name(sink) || !is_plain_name(envelope_id) {
            return Ok(None);
        }
        let path = self.dir.join(sink).join(format!("{envelope_id}.json"));
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| std::io::Error::other(format!("{}: {err}", path.display()))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Deletes a dead letter (after a replay, or a purge).
    ///
    /// # Errors
    /// When the file cannot be removed.
    pub fn remove(&self, letter: &DeadLetter) -> std::io::Result<()> {
        let dir = self.dir.join(&letter.route.sink);
        match fs::remove_file(dir.join(format!("{}.json", letter.envelope_id))) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => File::open(&dir)?.sync_all(),
        }
    }

    /// Every dead letter of `sink`, oldest envelope first.
    ///
    /// # Errors
    /// When the folder or a letter cannot be read.
    pub fn list(&self, sink: &str) -> std::io::Result<Vec<DeadLetter>> {
        let dir = self.dir.join(sink);
        let mut letters = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(letters),
            Err(err) => return Err(err),
        };
        for entry in entries {
            let path = entry?.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "json")
            {
                let letter = serde_json::from_slice(&fs::read(&path)?)
                    .map_err(|err| std::io::Error::other(format!("{}: {err}", path.display())))?;
                letters.push(letter);
            }
        }
        letters.sort_by(|a: &DeadLetter, b: &DeadLetter| a.envelope_id.cmp(&b.envelope_id));
        Ok(letters)
    }
}

/// Which dead letters an operator means: every field that is set must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub sink: Option<String>,
    pub rule: Option<String>,
    /// The envelope's kind (`form`, `case`, ...).
    pub kind: Option<String>,
    /// Last attempt at or after this RFC 3339 time.
    pub since: Option<jiff::Timestamp>,
    /// Last attempt before this RFC 3339 time.
    pub until: Option<jiff::Timestamp>,
}

impl Filter {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let last_attempt = letter.last_attempt_at.parse::<jiff::Timestamp>().ok();
        self.sink
            .as_ref()
            .is_none_or(|sink| *sink == letter.route.sink)
            && self
                .rule
                .as_ref()
                .is_none_or(|rule| *rule == letter.route.rule)
            && self
                .kind
                .as_ref()
                .is_none_or(|kind| letter.envelope["kind"] == kind.as_str())
            && self
                .since
                .is_none_or(|since| last_attempt.is_some_and(|at| at >= since))
            && self
                .until
                .is_none_or(|until| last_attempt.is_some_and(|at| at < until))
    }
}
