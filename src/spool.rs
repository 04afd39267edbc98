//! Spool: the durable, append-only log of accepted payloads, and each sink's place in it.
//!
//! # Design constraints
//!
//! - `append` returns only once the record is on disk (`fdatasync`): ingress answers 2xx after
//!   that and never before, because a 2xx ends HQ's delivery for good.
//! - Concurrent appends share one sync (group commit): one writer thread takes every record
//!   waiting in its bounded channel, writes them with one `write`, syncs once, and answers all.
//! - Readers never see past the durable end, so nothing is delivered that a crash could undo.
//! - The log is a folder of segment files named by the offset of their first byte
//!   (`spool/00000000000000000000.log`); offsets are global byte positions, so a position
//!   names one record for the life of the spool. Frames are laid out in `spool/record.rs`.
//! - Each consumer (one per sink) keeps its position in `cursors/<name>` (`spool/offsets.rs`), stored after its
//!   sink confirmed a batch: a crash re-delivers at most what was in flight (at least once).
//! - A sealed segment is deleted once every consumer is past it and it is older than the
//!   retention, or sooner when the disk quota needs the room. When the quota is reached with
//!   nothing deletable, appends fail with `Full` and ingress answers 503: HQ retries later.
//! - On open, the last segment is scanned and a torn tail (a frame cut short or failing its
//!   checksum) is truncated: it was never acknowledged, since its sync never completed.

mod offsets;
pub mod record;
mod segments;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use offsets::OffsetFiles;
use record::{FRAME_HEADER_BYTES, RecordError};
pub use record::{Record, Route};
use segments::{Segment, Segments};

use crate::error::ErrorKind;

/// How many appends may wait for the writer before `append` itself waits: backpressure.
const APPEND_QUEUE: usize = 4096;
/// The most one group commit writes, so one slow sync cannot hold up too many requests.
const MAX_BATCH_RECORDS: usize = 1024;
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Roughly the most one `read_batch` returns, so a reader's memory does not grow with the
/// body size limit times the batch size.
const READ_BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Records per read when scanning the whole spool at start.
const SCAN_BATCH_RECORDS: usize = 4096;

#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// The spool's folder; segments go in `spool/`, cursors in `cursors/`.
    pub dir: PathBuf,
    /// A segment is sealed and a new one started past this size.
    pub segment_bytes: u64,
    /// How long delivered records stay on disk for replay.
    pub retention: Duration,
    /// The disk quota for segments; past it, appends fail with `Full`.
    pub max_disk_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full: {used} of {quota} bytes in use")]
    Full { used: u64, quota: u64 },
    #[error("spool is closed")]
    Closed,
    /// Never written: a reader could not read it back.
    #[error("record of {bytes} bytes is over the spool's record limit")]
    TooLarge { bytes: usize },
    #[error("spool write failed: {0}")]
    Write(#[source] std::io::Error),
    #[error("spool cannot be used after an earlier write failure: {0}")]
    Failed(String),
    #[error("spool i/o failed on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool record at offset {offset} is corrupt: {source}")]
    Corrupt {
        offset: u64,
        #[source]
        source: RecordError,
    },
}

impl SpoolError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SpoolError::Corrupt { .. } => ErrorKind::Internal,
            SpoolError::TooLarge { .. } => ErrorKind::PayloadTooLarge,
            _ => ErrorKind::Unavailable,
        }
    }
}

pub type Result<T, E = SpoolError> = std::result::Result<T, E>;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A handle to the spool; cheap to clone. The writer thread stops when the last handle is gone.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
}

struct Shared {
    options: SpoolOptions,
    segment_dir: PathBuf,
    offset_files: OffsetFiles,
    appends: mpsc::Sender<AppendRequest>,
    durable_end: watch::Receiver<u64>,
    segments: Mutex<Segments>,
    cursors: Mutex<HashMap<String, u64>>,
}

struct AppendRequest {
    frame: Vec<u8>,
    done: oneshot::Sender<Result<u64>>,
}

impl Spool {
    /// Opens the spool in `options.dir`, recovering from whatever state a crash left.
    ///
    /// # Errors
    /// When the folder cannot be created or read, or a segment cannot be opened.
    pub fn open(options: SpoolOptions) -> Result<Spool> {
        let segment_dir = options.dir.join("spool");
        let cursor_dir = options.dir.join("cursors");
        for dir in [&segment_dir, &cursor_dir] {
            fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let segments = Segments::recover(&segment_dir)?;
        let offset_files = OffsetFiles::new(cursor_dir);
        let mut cursors = offset_files.load_cursors()?;
        for (name, cursor) in &mut cursors {
            // Past the end only if recovery cut records off: read what is appended next.
            if *cursor > segments.end() {
                tracing::warn!(consumer = %name, cursor = *cursor, end = segments.end(), "cursor was past the recovered end of the spool");
                *cursor = segments.end();
            }
        }
        let last = segments.last().clone();
        let file = OpenOptions::new()
            .append(true)
            .open(&last.path)
            .map_err(io_error(&last.path))?;
        let (durable_end_tx, durable_end) = watch::channel(segments.end());
        let (appends, append_rx) = mpsc::channel(APPEND_QUEUE);
        let shared = Arc::new(Shared {
            options,
            segment_dir,
            offset_files,
            appends,
            durable_end,
            segments: Mutex::new(segments),
            cursors: Mutex::new(cursors),
        });
        let writer = Writer {
            shared: Arc::downgrade(&shared),
            file,
            durable_end: durable_end_tx,
            failure: None,
        };
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(append_rx))
            .map_err(io_error(&shared.segment_dir))?;
        Ok(Spool { shared })
    }

    /// Appends a record and returns its offset once it is durable.
    ///
    /// # Errors
    /// `Full` past the disk quota, `Write`/`Failed` when the disk fails, `Closed` on shutdown.
    pub async fn append(&self, record: &Record) -> Result<u64> {
        let mut frame = Vec::new();
        record.encode_into(&mut frame);
        if frame.len() - record::FRAME_HEADER_BYTES > record::MAX_PAYLOAD_BYTES {
            return Err(SpoolError::TooLarge { bytes: frame.len() });
        }
        let (done, answer) = oneshot::channel();
        self.shared
            .appends
            .send(AppendRequest { frame, done })
            .await
            .map_err(|_| SpoolError::Closed)?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Waits until every append handed to the spool before this call is durable (or failed).
    pub async fn barrier(&self) {
        let (done, answer) = oneshot::channel();
        let request = AppendRequest {
            frame: Vec::new(),
            done,
        };
        if self.shared.appends.send(request).await.is_ok() {
            let _ = answer.await;
        }
    }

    /// The offset just past the last durable record.
    pub fn durable_end(&self) -> u64 {
        *self.shared.durable_end.borrow()
    }

    /// Bytes the segments take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.lock_segments().disk_bytes()
    }

    /// The offset of the oldest record still on disk.
    pub fn start(&self) -> u64 {
        self.lock_segments().start()
    }

    /// Where consumer `name` left off; a consumer seen for the first time starts at the oldest
    /// record kept, and is registered so that retention waits for it.
    pub fn cursor(&self, name: &str) -> u64 {
        let start = self.start();
        let mut cursors = self
            .shared
            .cursors
            .lock()
            .expect("cursor lock is never poisoned");
        let cursor = cursors.entry(name.to_string()).or_insert(start);
        (*cursor).max(start)
    }

    /// Registers a new consumer at the current end of the log, so that it sees only what is
    /// appended from now on; a known consumer keeps its place.
    pub fn register_at_end(&self, name: &str) {
        let end = self.durable_end();
        let mut cursors = self
            .shared
            .cursors
            .lock()
            .expect("cursor lock is never poisoned");
        if cursors.contains_key(name) {
            return;
        }
        cursors.insert(name.to_string(), end);
        drop(cursors);
        // Written now, not at the first delivery: a sink that is down from the start would
        // otherwise have no cursor file at a restart, be registered at the new end, and skip
        // everything accepted for it meanwhile.
        if let Err(err) = self.store_cursor(name, end) {
            tracing::error!(sink = %name, error = %err, "cannot store a new sink's cursor");
        }
    }

    /// Every consumer with a cursor.
    pub fn consumer_names(&self) -> Vec<String> {
        let cursors = self
            .shared
            .cursors
            .lock()
            .expect("cursor lock is never poisoned");
        cursors.keys().cloned().collect()
    }

    /// Forgets a consumer that is gone for good, so retention no longer waits for it.
    ///
    /// # Errors
    /// When its cursor file cannot be removed.
    pub fn forget_cursor(&self, name: &str) -> Result<()> {
        self.shared
            .cursors
            .lock()
            .expect("cursor lock is never poisoned")
            .remove(name);
        let _ = self.shared.offset_files.remove(&attempt_file(name));
        self.shared.offset_files.remove(name)
    }

    /// Records that consumer `name` is done with everything before `offset`, durably.
    ///
    /// # Errors
    /// When the cursor file cannot be written.
    pub fn store_cursor(&self, name: &str, offset: u64) -> Result<()> {
        self.write_cursor(name, offset, true)
    }

    /// Records the same without waiting for the disk: it survives the process being killed,
    /// not the machine losing power. Cheap enough for every batch, so that a killed relay
    /// re-delivers little more than the batch in flight.
    ///
    /// # Errors
    /// When the cursor file cannot be written.
    pub fn note_cursor(&self, name: &str, offset: u64) -> Result<()> {
        self.write_cursor(name, offset, false)
    }

    fn write_cursor(&self, name: &str, offset: u64, sync: bool) -> Result<()> {
        self.shared.offset_files.write(name, offset, sync)?;
        self.shared
            .cursors
            .lock()
            .expect("cursor lock is never poisoned")
            .insert(name.to_string(), offset);
        Ok(())
    }

    /// Notes that consumer `name` is handing the records before `end` to its sink. After an
    /// unclean stop, the records between its cursor and this end may have reached the sink
    /// already: they are the possible duplicates. Not synced, like `note_cursor`.
    ///
    /// # Errors
    /// When the note cannot be written.
    pub fn note_attempt(&self, name: &str, end: u64) -> Result<()> {
        self.shared
            .offset_files
            .write(&attempt_file(name), end, false)
    }

    /// The end consumer `name` last noted with `note_attempt`, if any.
    pub fn attempted(&self, name: &str) -> Option<u64> {
        self.shared.offset_files.read(&attempt_file(name))
    }

    /// Calls `visit` on every durable record from `offset` on, in order, skipping the
    /// damaged rest of a segment as readers do. Blocking IO.
    ///
    /// # Errors
    /// When the spool cannot be read.
    pub fn scan(&self, offset: u64, mut visit: impl FnMut(&Entry)) -> Result<()> {
        let mut reader = self.reader(offset);
        loop {
            let batch = reader.read_batch_past_damage(SCAN_BATCH_RECORDS)?;
            if batch.is_empty() {
                return Ok(());
            }
            batch.iter().for_each(&mut visit);
        }
    }

    /// A reader starting at `offset`.
    pub fn reader(&self, offset: u64) -> Reader {
        Reader {
            spool: self.clone(),
            position: offset,
            open: None,
        }
    }

    /// Deletes the sealed segments that retention and the quota allow; returns how many.
    ///
    /// # Errors
    /// When a segment file cannot be removed.
    pub fn compact(&self) -> Result<usize> {
        self.shared.compact(0)
    }

    fn lock_segments(&self) -> std::sync::MutexGuard<'_, Segments> {
        self.shared.lock_segments()
    }
}

impl Shared {
    fn lock_segments(&self) -> std::sync::MutexGuard<'_, Segments> {
        self.segments
            .lock()
            .expect("segment lock is never poisoned")
    }

    fn min_cursor(&self) -> Option<u64> {
        let cursors = self.cursors.lock().expect("cursor lock is never poisoned");
        cursors.values().copied().min()
    }

    /// Deletes what retention allows, and more when `room_needed` more bytes would not fit
    /// in the quota.
    fn compact(&self, room_needed: u64) -> Result<usize> {
        let min_cursor = self.min_cursor().unwrap_or(0);
        let mut segments = self.lock_segments();
        let over_quota = segments.disk_bytes() + room_needed > self.options.max_disk_bytes;
        let removed = segments.remove_consumed(min_cursor, |segment| {
            over_quota || segment_age(&segment.path) >= self.options.retention
        })?;
        Ok(removed)
    }
}

fn segment_age(path: &Path) -> Duration {
    fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .unwrap_or_default()
}

/// A dot file, so that it is never taken for a consumer's cursor.
fn attempt_file(name: &str) -> String {
    format!(".{name}.attempted")
}

/// The one thread that writes segments. It holds only a weak reference to the shared state,
/// so it stops when the last `Spool` handle is dropped and its channel closes.
struct Writer {
    shared: std::sync::Weak<Shared>,
    file: File,
    durable_end: watch::Sender<u64>,
    /// Set when a failed write could not be rolled back: the segment's tail is unknown, so
    /// nothing more may be appended to it.
    failure: Option<String>,
}

impl Writer {
    fn run(mut self, mut requests: mpsc::Receiver<AppendRequest>) {
        while let Some(first) = requests.blocking_recv() {
            let mut batch_bytes = first.frame.len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_RECORDS && batch_bytes < MAX_BATCH_BYTES {
                match requests.try_recv() {
                    Ok(request) => {
                        batch_bytes += request.frame.len();
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            let Some(shared) = self.shared.upgrade() else {
                return;
            };
            match self.write_batch(&shared, &batch, batch_bytes as u64) {
                Ok(first_offset) => {
                    let mut offset = first_offset;
                    for request in batch {
                        let len = request.frame.len() as u64;
                        let _ = request.done.send(Ok(offset));
                        offset += len;
                    }
                }
                Err(err) => {
                    let message = err.to_string();
                    tracing::error!(error = %message, records = batch.len(), "spool append failed");
                    let mut err = Some(err);
                    for request in batch {
                        let this = err
                            .take()
                            .unwrap_or_else(|| clone_error(&message, &self.failure));
                        let _ = request.done.send(Err(this));
                    }
                }
            }
        }
    }

    /// Writes a batch and syncs it; returns the offset of its first record.
    fn write_batch(
        &mut self,
        shared: &Shared,
        batch: &[AppendRequest],
        batch_bytes: u64,
    ) -> Result<u64> {
        if let Some(failure) = &self.failure {
            return Err(SpoolError::Failed(failure.clone()));
        }
        // Seal a full segment first: only sealed segments can be removed to make room.
        let last = shared.lock_segments().last().clone();
        if last.len > 0 && last.len + batch_bytes > shared.options.segment_bytes {
            self.file = shared.lock_segments().start_segment(&shared.segment_dir)?;
        }
        let quota = shared.options.max_disk_bytes;
        if shared.lock_segments().disk_bytes() + batch_bytes > quota {
            shared.compact(batch_bytes)?;
            let used = shared.lock_segments().disk_bytes();
            if used + batch_bytes > quota {
                return Err(SpoolError::Full { used, quota });
            }
        }
        let start = shared.lock_segments().end();
        let mut buffer = Vec::with_capacity(batch_bytes as usize);
        for request in batch {
            buffer.extend_from_slice(&request.frame);
        }
        let written = self
            .file
            .write_all(&buffer)
            .and_then(|()| self.file.sync_data());
        if let Err(err) = written {
            self.roll_back(shared);
            return Err(SpoolError::Write(err));
        }
        shared.lock_segments().grow_last(batch_bytes);
        let end = start + batch_bytes;
        self.durable_end.send_replace(end);
        Ok(start)
    }

    /// Cuts a half-written batch off the segment, so the next batch starts on a frame boundary.
    fn roll_back(&mut self, shared: &Shared) {
        let last = shared.lock_segments().last().clone();
        if let Err(err) = self
            .file
            .set_len(last.len)
            .and_then(|()| self.file.sync_data())
        {
            self.failure = Some(format!(
                "cannot truncate {} after a failed write: {err}",
                last.path.display()
            ));
        }
    }
}

fn clone_error(message: &str, failure: &Option<String>) -> SpoolError {
    SpoolError::Failed(failure.clone().unwrap_or_else(|| message.to_string()))
}

/// One record read back from the spool.
#[derive(Debug)]
pub struct Entry {
    pub offset: u64,
    /// The offset of the record after this one.
    pub next: u64,
    pub record: Record,
}

/// Reads records in order from a position up to the durable end. Blocking file IO: async
/// callers run `read_batch` on a blocking thread.
pub struct Reader {
    spool: Spool,
    position: u64,
    open: Option<OpenSegment>,
}

struct OpenSegment {
    segment: Segment,
    file: BufReader<File>,
    /// The position the file's read pointer stands at.
    position: u64,
}

impl Reader {
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Waits until there is something past this reader's position.
    pub async fn wait_for_records(&self) {
        let mut durable_end = self.spool.shared.durable_end.clone();
        let position = self.position;
        // The sender lives as long as the writer thread; if it is gone, nothing more will come.
        let _ = durable_end.wait_for(|end| *end > position).await;
    }

    /// Reads up to `max_records` records (and about `READ_BATCH_BYTES`), stopping at the
    /// durable end. Records read before an error are returned; the error comes again on the
    /// next call, from the record that caused it.
    ///
    /// # Errors
    /// `Io` for a failed read (retry later), and `Corrupt` for a durable record that is cut
    /// short or fails its checksum (after which `skip_segment` moves past the damage).
    pub fn read_batch(&mut self, max_records: usize) -> Result<Vec<Entry>> {
        let durable_end = self.spool.durable_end();
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        while entries.len() < max_records && bytes < READ_BATCH_BYTES && self.position < durable_end
        {
            let entry = match self.read_one() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(err) if entries.is_empty() => return Err(err),
                Err(_) => {
                    // Hand over what was read; the next call starts at the failing record.
                    self.open = None;
                    return Ok(entries);
                }
            };
            bytes += entry.next - entry.offset;
            self.position = entry.next;
            entries.push(entry);
        }
        // Bytes read ahead may belong to a batch whose sync is yet to succeed or fail.
        self.forget_read_ahead()?;
        Ok(entries)
    }

    /// Like `read_batch`, for a one-pass reader (start-up, replay) that moves past a damaged
    /// segment rather than waiting on it: the damage is logged and skipped. Empty at the end,
    /// or when the damage is in the segment being written.
    ///
    /// # Errors
    /// `Io` for a failed read.
    pub fn read_batch_past_damage(&mut self, max_records: usize) -> Result<Vec<Entry>> {
        loop {
            match self.read_batch(max_records) {
                Err(SpoolError::Corrupt { offset, source }) => {
                    tracing::error!(offset, error = %source, "skipping a damaged spool segment");
                    if !self.skip_segment() {
                        return Ok(Vec::new());
                    }
                }
                read => return read,
            }
        }
    }

    /// Drops bytes read ahead past the durable end: a failed write is cut off the segment and
    /// its place is written again, so what lies past the end may still change.
    fn forget_read_ahead(&mut self) -> Result<()> {
        if let Some(open) = &mut self.open {
            let within = open.position - open.segment.base;
            open.file
                .seek(SeekFrom::Start(within))
                .map_err(io_error(&open.segment.path))?;
        }
        Ok(())
    }

    /// Moves to the next segment, abandoning the rest of the current one; false when there
    /// is no next segment yet (the damage is in the one being written).
    pub fn skip_segment(&mut self) -> bool {
        self.open = None;
        let segments = self.spool.lock_segments();
        let Some(next) = segments.after(self.position) else {
            return false;
        };
        tracing::error!(
            from = self.position,
            to = next.base,
            "skipping the damaged rest of a spool segment"
        );
        self.position = next.base;
        true
    }

    fn read_one(&mut self) -> Result<Option<Entry>> {
        let Some(open) = self.open_segment_at_position()? else {
            return Ok(None);
        };
        let offset = open.position;
        let corrupt = |source| SpoolError::Corrupt { offset, source };
        // Below the durable end every byte was written: running out is damage, while any
        // other read error may pass and is retried, never skipped.
        let path = open.segment.path.clone();
        let read_failed = move |err: std::io::Error| match err.kind() {
            std::io::ErrorKind::UnexpectedEof => corrupt(RecordError::Truncated),
            _ => io_error(&path)(err),
        };
        let mut header = [0u8; FRAME_HEADER_BYTES];
        open.file
            .read_exact(&mut header)
            .map_err(read_failed.clone())?;
        let (len, crc) = record::parse_frame_header(header).map_err(corrupt)?;
        let mut payload = vec![0u8; len];
        open.file.read_exact(&mut payload).map_err(read_failed)?;
        record::verify_checksum(&payload, crc).map_err(corrupt)?;
        let record = Record::decode_payload(payload.into()).map_err(corrupt)?;
        let next = offset + (FRAME_HEADER_BYTES + len) as u64;
        open.position = next;
        Ok(Some(Entry {
            offset,
            next,
            record,
        }))
    }

    /// Makes sure the open file is the segment holding `self.position`, positioned there.
    fn open_segment_at_position(&mut self) -> Result<Option<&mut OpenSegment>> {
        let segment = {
            let segments = self.spool.lock_segments();
            match segments.containing(self.position) {
                Some(segment) => segment.clone(),
                None => return Ok(None),
            }
        };
        if segment.base > self.position {
            // The position was in a segment that retention removed, or at a sealed segment's end.
            self.position = segment.base;
        }
        let reusable = self.open.as_ref().is_some_and(|open| {
            open.segment.base == segment.base && open.position == self.position
        });
        if !reusable {
            let mut file = File::open(&segment.path).map_err(io_error(&segment.path))?;
            file.seek(SeekFrom::Start(self.position - segment.base))
                .map_err(io_error(&segment.path))?;
            self.open = Some(OpenSegment {
                segment,
                file: BufReader::with_capacity(256 * 1024, file),
                position: self.position,
            });
        }
        Ok(self.open.as_mut())
    }
}
