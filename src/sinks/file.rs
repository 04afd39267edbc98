//! File sink: one payload per line (JSON lines for envelopes and projections; a raw body as
//! sent) in files whose paths are templates, synced per batch and rotated by size.
//!
//! Paths render from envelope fields (`out/{{ kind }}/{{ received_at | date }}.jsonl`) and are
//! resolved under the data dir; a rendered path that is absolute or climbs out with `..` is a
//! permanent failure, never a write elsewhere. A file past `max_file_bytes` is renamed to
//! `<name>.1`, `<name>.2`, … (oldest first) before the batch that would overflow it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Delivery, SinkError};
use crate::template::Template;

/// Open files kept between batches; past this, all are closed (dated paths change daily).
const MAX_OPEN_FILES: usize = 64;

#[derive(Clone, Debug)]
pub struct FileSinkConfig {
    /// Where each envelope goes, relative to the data dir.
    pub path: Template,
    /// A file is rotated before it would grow past this.
    pub max_file_bytes: u64,
}

pub struct FileSink {
    config: FileSinkConfig,
    files: Arc<Mutex<OpenFiles>>,
}

struct OpenFiles {
    root: PathBuf,
    max_file_bytes: u64,
    open: HashMap<PathBuf, (File, u64)>,
}

impl FileSink {
    pub fn new(data_dir: &Path, config: FileSinkConfig) -> FileSink {
        let files = OpenFiles {
            root: data_dir.to_path_buf(),
            max_file_bytes: config.max_file_bytes,
            open: HashMap::new(),
        };
        FileSink {
            config,
            files: Arc::new(Mutex::new(files)),
        }
    }

    pub async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), SinkError>> {
        let mut results: Vec<Result<(), SinkError>> = Vec::with_capacity(batch.len());
        // Lines grouped by file, with the positions in `batch` they answer for.
        let mut groups: Vec<(PathBuf, Vec<u8>, Vec<usize>)> = Vec::new();
        for (index, delivery) in batch.iter().enumerate() {
            match self.relative_path(delivery) {
                Ok(path) => {
                    let group = match groups
                        .iter_mut()
                        .position(|(existing, ..)| *existing == path)
                    {
                        Some(position) => &mut groups[position],
                        None => {
                            groups.push((path, Vec::new(), Vec::new()));
                            groups.last_mut().expect("just pushed")
                        }
                    };
                    group.1.extend_from_slice(&delivery.payload.bytes);
                    group.1.push(b'\n');
                    group.2.push(index);
                    results.push(Ok(()));
                }
                Err(err) => results.push(Err(err)),
            }
        }
        let files = Arc::clone(&self.files);
        let written = tokio::task::spawn_blocking(move || {
            let mut files = files.lock().expect("file sink lock is never poisoned");
            groups
                .into_iter()
                .map(|(path, lines, indices)| (files.append(&path, &lines), indices))
                .collect::<Vec<_>>()
        })
        .await
        .expect("file writes do not panic");
        for (outcome, indices) in written {
            if let Err(err) = outcome {
                for index in indices {
                    results[index] = Err(SinkError::transient(err.clone()));
                }
            }
        }
        results
    }

    fn relative_path(&self, delivery: &Delivery) -> Result<PathBuf, SinkError> {
        let rendered = self
            .config
            .path
            .render_json(&delivery.envelope)
            .map_err(|err| SinkError::permanent(err.to_string()))?;
        let path = PathBuf::from(&rendered);
        let stays_inside = path
            .components()
            .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
        if rendered.is_empty() || !stays_inside {
            return Err(SinkError::permanent(format!(
                "file path `{rendered}` must be relative to the data dir, without `..`"
            )));
        }
        Ok(path)
    }
}

impl OpenFiles {
    /// Appends `lines` to the file at `relative` and syncs it.
    fn append(&mut self, relative: &Path, lines: &[u8]) -> Result<(), String> {
        let path = self.root.join(relative);
        let describe = |err: std::io::Error| format!("writing {}: {err}", path.display());
        if self
            .open
            .get(&path)
            .is_some_and(|(file, _)| !still_at(file, &path))
        {
            // Moved or deleted behind our back (an operator, logrotate): lines written to the
            // open file would land in a file nobody reads any more. Open the path again.
            self.open.remove(&path);
        }
        let size = match self.open.get(&path) {
            Some((_, size)) => *size,
            None => fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0),
        };
        if size > 0 && size + lines.len() as u64 > self.max_file_bytes {
            self.open.remove(&path);
            rotate(&path).map_err(describe)?;
        }
        if !self.open.contains_key(&path) {
            if self.open.len() >= MAX_OPEN_FILES {
                self.open.clear();
            }
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(describe)?;
            }
            let existed = path.exists();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(describe)?;
            if !existed {
                // A new file's name must survive a crash as surely as the lines synced into it.
                sync_parent(&path).map_err(describe)?;
            }
            let size = file.metadata().map_err(describe)?.len();
            self.open.insert(path.clone(), (file, size));
        }
        let (file, size) = self.open.get_mut(&path).expect("opened above");
        let written = file.write_all(lines).and_then(|()| file.sync_data());
        if let Err(err) = written {
            // The batch is re-sent whole: cut off any part of it that was written, so no torn
            // line is left in front of it.
            let _ = file.set_len(*size);
            self.open.remove(&path);
            return Err(describe(err));
        }
        *size += lines.len() as u64;
        Ok(())
    }
}

/// Whether `path` still names the open `file`: one `stat` per file and batch.
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

fn rotate(path: &Path) -> std::io::Result<()> {
    let mut number = 1u32;
    loop {
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(format!(".{number}"));
        let rotated = PathBuf::from(rotated);
        if !rotated.exists() {
            fs::rename(path, &rotated)?;
            return sync_parent(path);
        }
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::spool::Route;

    fn delivery(kind: &str, n: u64) -> Delivery {
        let envelope =
            format!(r#"{{"id":"e{n}","kind":"{kind}","received_at":"2024-05-02T06:14:09Z"}}"#);
        Delivery {
            offset: n,
            facts: crate::sinks::EnvelopeFacts {
                id: format!("e{n}"),
                ..Default::default()
            },
            route: Route {
                sink: "archive".into(),
                rule: "all".into(),
                shape: Default::default(),
            },
            payload: crate::rules::Shape::Envelope.apply(&envelope, b"", None),
            envelope: Arc::from(envelope),
            body: Bytes::new(),
        }
    }

    fn sink(dir: &Path, path: &str, max_file_bytes: u64) -> FileSink {
        let config = FileSinkConfig {
            path: crate::template::Template::compile(path).unwrap(),
            max_file_bytes,
        };
        FileSink::new(dir, config)
    }

    #[tokio::test]
    async fn envelopes_are_appended_as_lines_to_the_file_their_template_names() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(
            dir.path(),
            "out/{{ kind }}/{{ received_at | date }}.jsonl",
            1 << 20,
        );
        let results = sink
            .deliver(&[
                delivery("form", 1),
                delivery("case", 2),
                delivery("form", 3),
            ])
            .await;
        assert!(results.iter().all(Result::is_ok));
        let forms = fs::read_to_string(dir.path().join("out/form/2024-05-02.jsonl")).unwrap();
        assert_eq!(forms.lines().count(), 2);
        let cases = fs::read_to_string(dir.path().join("out/case/2024-05-02.jsonl")).unwrap();
        assert!(cases.contains("\"e2\""));
    }

    #[tokio::test]
    async fn a_full_file_is_rotated_to_numbered_siblings_before_it_overflows() {
        let dir = tempfile::tempdir().unwrap();
        let line_bytes = delivery("form", 1).envelope.len() as u64 + 1;
        let sink = sink(dir.path(), "out.jsonl", line_bytes * 2);
        for n in 0..5 {
            assert!(sink.deliver(&[delivery("form", n)]).await[0].is_ok());
        }
        let lines = |name: &str| {
            fs::read_to_string(dir.path().join(name))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(lines("out.jsonl.1"), 2, "oldest first");
        assert_eq!(lines("out.jsonl.2"), 2);
        assert_eq!(lines("out.jsonl"), 1);
    }

    #[tokio::test]
    async fn a_path_that_leaves_the_data_dir_or_cannot_render_fails_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let escaping = sink(dir.path(), "../{{ kind }}.jsonl", 1 << 20);
        let result = escaping.deliver(&[delivery("form", 1)]).await.remove(0);
        assert!(
            matches!(&result, Err(SinkError::Permanent { reason }) if reason.contains("without `..`")),
            "{result:?}"
        );
        let missing = sink(dir.path(), "{{ form.xmlns }}.jsonl", 1 << 20);
        let result = missing.deliver(&[delivery("form", 1)]).await.remove(0);
        assert!(matches!(result, Err(SinkError::Permanent { .. })));
    }

    #[tokio::test]
    async fn a_file_moved_away_between_batches_is_written_again_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), "out/a.jsonl", 1 << 20);
        assert!(sink.deliver(&[delivery("form", 1)]).await[0].is_ok());
        fs::rename(dir.path().join("out"), dir.path().join("taken")).unwrap();

        assert!(sink.deliver(&[delivery("form", 2)]).await[0].is_ok());

        let lines = fs::read_to_string(dir.path().join("out/a.jsonl")).unwrap();
        assert!(
            lines.contains("\"e2\"") && !lines.contains("\"e1\""),
            "{lines}"
        );
    }

    #[tokio::test]
    async fn a_folder_replaced_by_a_plain_file_fails_transiently_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path(), "out/a.jsonl", 1 << 20);
        assert!(sink.deliver(&[delivery("form", 1)]).await[0].is_ok());
        fs::remove_dir_all(dir.path().join("out")).unwrap();
        fs::write(dir.path().join("out"), "not a folder").unwrap();

        let result = sink.deliver(&[delivery("form", 2)]).await.remove(0);
        assert!(
            matches!(result, Err(SinkError::Transient { .. })),
            "{result:?}"
        );

        fs::remove_file(dir.path().join("out")).unwrap();
        assert!(sink.deliver(&[delivery("form", 2)]).await[0].is_ok());
    }
}
