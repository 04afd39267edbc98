//! The registry: endpoints registered through the served Data Forwarding API, kept durably in
//! `<data_dir>/control/registrations.json`.
//!
//! Every change writes the whole file (it is small and bounded by `max_registrations`) to a
//! temporary file, syncs it, renames it over the old one and syncs the folder, and only then
//! changes the in-memory copy and notifies subscribers: what a client was told was saved has
//! been saved, and a crash leaves either the old file or the new one. Writes are serialised by
//! one lock and are blocking: call them from a blocking thread.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::resource::RepeaterType;
use crate::error::ErrorKind;

const FOLDER: &str = "control";
const FILE: &str = "registrations.json";
const FORMAT_VERSION: u64 = 1;

/// One registered endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// 32 lowercase hex digits, as HQ's ids; sorts by creation time (UUIDv7).
    pub id: String,
    pub domain: String,
    #[serde(rename = "type")]
    pub repeater_type: RepeaterType,
    pub url: String,
    pub version: Option<String>,
}

/// The fields a client sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields {
    pub repeater_type: RepeaterType,
    pub url: String,
    pub version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no registration `{id}` in domain `{domain}`")]
    NotFound { domain: String, id: String },
    #[error("the relay keeps at most {max} registrations; delete some first")]
    Full { max: usize },
    #[error("cannot save the registrations in {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the registrations in {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the registrations file {path} is damaged: {source}")]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl RegistryError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::NotFound { .. } => ErrorKind::NotFound,
            RegistryError::Full { .. } => ErrorKind::BadRequest,
            RegistryError::Write { .. } | RegistryError::Read { .. } => ErrorKind::Unavailable,
            RegistryError::Damaged { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[derive(Serialize, Deserialize)]
struct StoredFile {
    version: u64,
    registrations: Vec<Registration>,
}

pub struct Registry {
    path: PathBuf,
    max: usize,
    /// By id; ids are unique over all domains.
    entries: Mutex<BTreeMap<String, Registration>>,
    /// Bumped after every saved change.
    changes: watch::Sender<u64>,
}

impl Registry {
    /// Opens the registry under `data_dir`, empty when the file does not exist yet.
    ///
    /// # Errors
    /// When the file cannot be read or is not a registrations file.
    pub fn open(data_dir: &Path, max: usize) -> Result<Registry> {
        let path = data_dir.join(FOLDER).join(FILE);
        let entries = match fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredFile =
                    serde_json::from_slice(&bytes).map_err(|source| RegistryError::Damaged {
                        path: path.clone(),
                        source,
                    })?;
                stored
                    .registrations
                    .into_iter()
                    .map(|registration| (registration.id.clone(), registration))
                    .collect()
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        let (changes, _) = watch::channel(0);
        Ok(Registry {
            path,
            max,
            entries: Mutex::new(entries),
            changes,
        })
    }

    /// Notified after every saved change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every registration, in id (creation) order.
    pub fn all(&self) -> Vec<Registration> {
        self.lock().values().cloned().collect()
    }

    /// A domain's registrations in creation order: the one page `[offset, offset + limit)`
    /// and the total count.
    pub fn page(&self, domain: &str, offset: usize, limit: usize) -> (Vec<Registration>, usize) {
        let entries = self.lock();
        let in_domain = entries.values().filter(|entry| entry.domain == domain);
        let total = in_domain.clone().count();
        (in_domain.skip(offset).take(limit).cloned().collect(), total)
    }

    pub fn get(&self, domain: &str, id: &str) -> Option<Registration> {
        self.lock()
            .get(id)
            .filter(|entry| entry.domain == domain)
            .cloned()
    }

    /// Adds and saves a registration. Blocking.
    ///
    /// # Errors
    /// When the registry is full or cannot be saved.
    pub fn create(&self, domain: &str, fields: Fields) -> Result<Registration> {
        let mut entries = self.lock();
        if entries.len() >= self.max {
            return Err(RegistryError::Full { max: self.max });
        }
        let registration = Registration {
            id: uuid::Uuid::now_v7().simple().to_string(),
            domain: domain.to_owned(),
            repeater_type: fields.repeater_type,
            url: fields.url,
            version: fields.version,
        };
        let mut next = entries.clone();
        next.insert(registration.id.clone(), registration.clone());
        self.save(&next)?;
        *entries = next;
        drop(entries);
        self.changes.send_modify(|count| *count += 1);
        Ok(registration)
    }

    /// Replaces a registration's fields and saves. Blocking.
    ///
    /// # Errors
    /// When there is no such registration in `domain`, or it cannot be saved.
    pub fn update(&self, domain: &str, id: &str, fields: Fields) -> Result<Registration> {
        let mut entries = self.lock();
        let mut next = entries.clone();
        let entry = next
            .get_mut(id)
            .filter(|entry| entry.domain == domain)
            .ok_or_else(|| not_found(domain, id))?;
        entry.repeater_type = fields.repeater_type;
        entry.url = fields.url;
        entry.version = fields.version;
        let updated = entry.clone();
        self.save(&next)?;
        *entries = next;
        drop(entries);
        self.changes.send_modify(|count| *count += 1);
        Ok(updated)
    }

    /// Removes a registration and saves. Blocking.
    ///
    /// # Errors
    /// When there is no such registration in `domain`, or it cannot be saved.
    pub fn delete(&self, domain: &str, id: &str) -> Result<()> {
        let mut entries = self.lock();
        if entries.get(id).is_none_or(|entry| entry.domain != domain) {
            return Err(not_found(domain, id));
        }
        let mut next = entries.clone();
        next.remove(id);
        self.save(&next)?;
        *entries = next;
        drop(entries);
        self.changes.send_modify(|count| *count += 1);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Registration>> {
        self.entries
            .lock()
            .expect("the registry lock is never poisoned")
    }

    /// Temp file, fsync, rename, fsync the folder.
    fn save(&self, entries: &BTreeMap<String, Registration>) -> Result<()> {
        let write_error = |source| RegistryError::Write {
            path: self.path.clone(),
            source,
        };
        let folder = self.path.parent().expect("the path has a folder");
        fs::create_dir_all(folder).map_err(write_error)?;
        let stored = StoredFile {
            version: FORMAT_VERSION,
            registrations: entries.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&stored).expect("registrations serialise");
        let temp = self.path.with_extension("json.tmp");
        let mut file = File::create(&temp).map_err(write_error)?;
        file.write_all(&bytes).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        fs::rename(&temp, &self.path).map_err(write_error)?;
        File::open(folder)
            .and_then(|folder| folder.sync_all())
            .map_err(write_error)?;
        Ok(())
    }
}

fn not_found(domain: &str, id: &str) -> RegistryError {
    RegistryError::NotFound {
        domain: domain.to_owned(),
        id: id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(url: &str) -> Fields {
        Fields {
            repeater_type: RepeaterType::FormRepeater,
            url: url.to_owned(),
            version: None,
        }
    }

    #[test]
    fn changes_survive_a_reopen_and_are_notified() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::open(dir.path(), 10).expect("opens empty");
        let changes = registry.subscribe();
        let first = registry
            .create("a", fields("https://x/1"))
            .expect("created");
        let second = registry
            .create("a", fields("https://x/2"))
            .expect("created");
        registry
            .update("a", &first.id, fields("https://x/1b"))
            .expect("updated");
        registry.delete("a", &second.id).expect("deleted");
        assert_eq!(*changes.borrow(), 4);
        assert_eq!(first.id.len(), 32);

        let reopened = Registry::open(dir.path(), 10).expect("reopens");
        let all = reopened.all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].url, "https://x/1b");
        assert!(!dir.path().join("control/registrations.json.tmp").exists());
    }

    #[test]
    fn domains_do_not_see_each_other() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::open(dir.path(), 10).expect("opens empty");
        let entry = registry
            .create("a", fields("https://x/1"))
            .expect("created");
        assert!(registry.get("b", &entry.id).is_none());
        assert!(matches!(
            registry.delete("b", &entry.id),
            Err(RegistryError::NotFound { .. })
        ));
        assert!(matches!(
            registry.update("b", &entry.id, fields("https://y")),
            Err(RegistryError::NotFound { .. })
        ));
        assert_eq!(registry.page("b", 0, 20), (Vec::new(), 0));
        assert_eq!(registry.page("a", 0, 20).1, 1);
    }

    #[test]
    fn the_limit_holds_and_a_damaged_file_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::open(dir.path(), 1).expect("opens empty");
        registry
            .create("a", fields("https://x/1"))
            .expect("created");
        assert!(matches!(
            registry.create("a", fields("https://x/2")),
            Err(RegistryError::Full { max: 1 })
        ));
        fs::write(dir.path().join("control/registrations.json"), "{not json").expect("write");
        let error = Registry::open(dir.path(), 1).err().expect("damaged");
        assert!(matches!(error, RegistryError::Damaged { .. }), "{error}");
    }
}
