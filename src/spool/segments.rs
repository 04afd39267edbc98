//! The list of segment files: finding them on open, repairing a torn tail, starting new ones
//! and removing consumed ones. Only the spool's writer and compaction change it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::record::{self, FRAME_HEADER_BYTES};
use super::{Result, io_error};

#[derive(Clone, Debug)]
pub struct Segment {
    /// Global offset of the segment's first byte; also its file name.
    pub base: u64,
    pub len: u64,
    pub path: PathBuf,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.base + self.len
    }
}

/// The segments in offset order; never empty, the last one is the one being written.
pub struct Segments {
    list: Vec<Segment>,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

impl Segments {
    /// Finds the segments in `dir`, creating the first one on a new spool, and truncates a
    /// torn tail off the last one.
    pub fn recover(dir: &Path) -> Result<Segments> {
        let mut list = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(base) = name
                .strip_suffix(".log")
                .and_then(|stem| stem.parse::<u64>().ok())
            else {
                continue;
            };
            let len = entry.metadata().map_err(io_error(&entry.path()))?.len();
            list.push(Segment {
                base,
                len,
                path: entry.path(),
            });
        }
        list.sort_by_key(|segment| segment.base);
        let mut segments = Segments { list };
        if segments.list.is_empty() {
            segments.create_segment(dir, 0)?;
        } else {
            segments.repair_last()?;
        }
        Ok(segments)
    }

    pub fn last(&self) -> &Segment {
        self.list.last().expect("there is always a segment")
    }

    pub fn start(&self) -> u64 {
        self.list[0].base
    }

    pub fn end(&self) -> u64 {
        self.last().end()
    }

    pub fn disk_bytes(&self) -> u64 {
        self.list.iter().map(|segment| segment.len).sum()
    }

    /// The segment to read at `position`: the one holding it, or the next one when `position`
    /// is at the end of a sealed segment or in a gap. None at the end of the log.
    pub fn containing(&self, position: u64) -> Option<&Segment> {
        self.list.iter().find(|segment| segment.end() > position)
    }

    /// The first segment that starts after `position`.
    pub fn after(&self, position: u64) -> Option<&Segment> {
        self.list.iter().find(|segment| segment.base > position)
    }

    /// Seals the last segment and starts a new one at the end of the log.
    pub fn start_segment(&mut self, dir: &Path) -> Result<File> {
        let base = self.end();
        self.create_segment(dir, base)
    }

    pub fn grow_last(&mut self, bytes: u64) {
        self.list.last_mut().expect("there is always a segment").len += bytes;
    }

    /// Removes sealed segments from the front while every consumer is past them and `may_remove`
    /// agrees; returns how many went.
    pub fn remove_consumed(
        &mut self,
        min_cursor: u64,
        may_remove: impl Fn(&Segment) -> bool,
    ) -> Result<usize> {
        let mut removed = 0;
        while self.list.len() > 1 && self.list[0].end() <= min_cursor && may_remove(&self.list[0]) {
            let segment = self.list.remove(0);
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            tracing::info!(segment = %segment.path.display(), "removed a consumed spool segment");
            removed += 1;
        }
        Ok(removed)
    }

    fn create_segment(&mut self, dir: &Path, base: u64) -> Result<File> {
        let path = segment_path(dir, base);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        // The new file's name must survive a crash as surely as the records written into it.
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(dir))?;
        self.list.push(Segment { base, len: 0, path });
        Ok(file)
    }

    /// Scans the last segment frame by frame and cuts it after the last whole, valid frame.
    fn repair_last(&mut self) -> Result<()> {
        let last = self.list.last_mut().expect("there is always a segment");
        let file = File::open(&last.path).map_err(io_error(&last.path))?;
        let valid = valid_prefix_len(BufReader::new(file), last.len);
        if valid < last.len {
            set_aside(&last.path, valid)?;
            tracing::warn!(
                segment = %last.path.display(),
                dropped_bytes = last.len - valid,
                "truncating a spool tail that fails its checks (usually a torn write, never acknowledged); its bytes are kept beside the segment as .damaged-<offset>"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&last.path)
                .map_err(io_error(&last.path))?;
            file.set_len(valid)
                .and_then(|()| file.sync_all())
                .map_err(io_error(&last.path))?;
            last.len = valid;
        }
        Ok(())
    }
}

/// The length of the longest run of whole, valid frames at the start of `reader`.
fn valid_prefix_len(mut reader: impl Read, len: u64) -> u64 {
    let mut valid = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        if reader.read_exact(&mut header).is_err() {
            return valid;
        }
        let Ok((payload_len, crc)) = record::parse_frame_header(header) else {
            return valid;
        };
        if valid + (FRAME_HEADER_BYTES + payload_len) as u64 > len {
            return valid;
        }
        payload.resize(payload_len, 0);
        if reader.read_exact(&mut payload).is_err()
            || record::verify_checksum(&payload, crc).is_err()
            || record::Record::decode_payload(bytes::Bytes::copy_from_slice(&payload)).is_err()
        {
            return valid;
        }
        valid += (FRAME_HEADER_BYTES + payload_len) as u64;
    }
}

/// Copies the bytes of `path` from `from` on to `<path>.damaged-<offset>`, before they are cut
/// off: a tail that fails its checks is usually a torn write, but it may be damage in the
/// middle, and an operator should be able to look at it.
fn set_aside(path: &Path, from: u64) -> Result<()> {
    let mut source = File::open(path).map_err(io_error(path))?;
    std::io::Seek::seek(&mut source, std::io::SeekFrom::Start(from)).map_err(io_error(path))?;
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{from}"));
    let aside = PathBuf::from(aside);
    let mut target = File::create(&aside).map_err(io_error(&aside))?;
    std::io::copy(&mut source, &mut target)
        .and_then(|_| target.sync_all())
        .map_err(io_error(&aside))?;
    Ok(())
}
