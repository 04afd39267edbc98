//! The small files that hold one offset each: a consumer's cursor (`cursors/<name>`) and the
//! end of its delivery in progress (`cursors/.<name>.attempted`).
//!
//! A dispatcher writes both for every batch, so each file is kept open and overwritten in
//! place with one fixed-width write, rather than written anew and renamed: that cost two
//! metadata operations and a forced flush per batch. One `pwrite` cannot be half done by a
//! killed process. A file torn by a power cut fails to parse and is ignored with a warning,
//! so its consumer starts again from the oldest record kept: a re-delivery, never a skip.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{Result, io_error};

/// Wide enough for any u64 in decimal, so every write covers whatever was there before.
const WIDTH: usize = 20;

pub(super) struct OffsetFiles {
    dir: PathBuf,
    open: Mutex<HashMap<String, File>>,
}

impl OffsetFiles {
    pub(super) fn new(dir: PathBuf) -> OffsetFiles {
        OffsetFiles {
            dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Every offset in a file whose name does not start with a dot: the cursors.
    pub(super) fn load_cursors(&self) -> Result<HashMap<String, u64>> {
        let mut cursors = HashMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let entry = entry.map_err(io_error(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            match self.read(&name) {
                Some(offset) => {
                    cursors.insert(name, offset);
                }
                None => tracing::warn!(cursor = %name, "ignoring unreadable cursor file"),
            }
        }
        Ok(cursors)
    }

    pub(super) fn read(&self, file_name: &str) -> Option<u64> {
        let text = fs::read_to_string(self.dir.join(file_name)).ok()?;
        text.trim().parse().ok()
    }

    /// Overwrites `file_name` with `offset`; with `sync`, waits until it is on disk.
    pub(super) fn write(&self, file_name: &str, offset: u64, sync: bool) -> Result<()> {
        let path = self.dir.join(file_name);
        let text = format!("{offset:<WIDTH$}\n");
        let mut open = self.lock();
        if !open.contains_key(file_name) {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_error(&path))?;
            open.insert(file_name.to_string(), file);
        }
        let file = &open[file_name];
        let written = file
            .write_all_at(text.as_bytes(), 0)
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
        if written.is_err() {
            // Reopened next time, in case the file was replaced or its descriptor went bad.
            open.remove(file_name);
        }
        written.map_err(io_error(&path))
    }

    /// Removes `file_name`; a file already gone is not an error.
    pub(super) fn remove(&self, file_name: &str) -> Result<()> {
        self.lock().remove(file_name);
        let path = self.dir.join(file_name);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path)(err)),
            _ => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, File>> {
        self.open
            .lock()
            .expect("offset file lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_overwrites_a_longer_or_shorter_one_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let files = OffsetFiles::new(dir.path().to_path_buf());
        files.write("archive", u64::MAX, false).unwrap();
        files.write("archive", 7, true).unwrap();
        assert_eq!(files.read("archive"), Some(7));
        // A cursor written by an older version, as a bare number, is read and overwritten.
        fs::write(dir.path().join("old"), "123").unwrap();
        assert_eq!(files.load_cursors().unwrap()["old"], 123);
        files.write("old", 45_678, false).unwrap();
        assert_eq!(files.read("old"), Some(45_678));
    }

    #[test]
    fn dot_files_are_not_cursors_and_unreadable_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let files = OffsetFiles::new(dir.path().to_path_buf());
        files.write("archive", 10, false).unwrap();
        files.write(".archive.attempted", 20, false).unwrap();
        fs::write(dir.path().join("torn"), "12\0\0").unwrap();
        let cursors = files.load_cursors().unwrap();
        assert_eq!(cursors, HashMap::from([("archive".to_string(), 10)]));
        assert_eq!(files.read(".archive.attempted"), Some(20));
    }

    #[test]
    fn a_removed_file_is_created_again_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let files = OffsetFiles::new(dir.path().to_path_buf());
        files.write("archive", 10, false).unwrap();
        files.remove("archive").unwrap();
        files.remove("archive").unwrap();
        assert_eq!(files.read("archive"), None);
        files.write("archive", 11, false).unwrap();
        assert_eq!(files.read("archive"), Some(11));
    }
}
