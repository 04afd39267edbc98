//! The one versioned on-disk format: how a record is framed and checked in a segment file.
//!
//! ```text
//! frame:   [len: u32 LE][crc32c(payload): u32 LE][payload: len bytes]
//! payload: [version: u8 = 1]
//!          [routes_len: u32 LE][routes: JSON array of Route]
//!          [envelope_len: u32 LE][envelope: JSON object]
//!          [body: the rest, the request body exactly as received]
//! ```
//!
//! Routes come first so a dispatcher can skip records that are not for its sink without
//! parsing the envelope; the envelope is kept as JSON text so sinks write it without
//! re-serialising it. A frame whose length or checksum does not hold marks the torn tail of a
//! crash, never data to deliver.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::rules::Shape;

pub const FRAME_HEADER_BYTES: usize = 8;
const FORMAT_VERSION: u8 = 1;
/// No single record may exceed this; it bounds what a corrupt length field can make us allocate.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024 * 1024;
/// The smallest payload: a version byte and two empty length-prefixed parts.
const MIN_PAYLOAD_BYTES: usize = 1 + 4 + 4;

/// Where a rule sent an envelope: one sink, the rule that chose it, and what the sink receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub sink: String,
    pub rule: String,
    /// What the sink receives. Absent in records written before shapes existed, and for the
    /// default (the envelope), so those records stay readable and small.
    #[serde(default, skip_serializing_if = "Shape::is_envelope")]
    pub shape: Shape,
}

/// One accepted payload as the spool keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub routes: Vec<Route>,
    /// The envelope, serialised as JSON.
    pub envelope: Bytes,
    /// The request body exactly as received.
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is truncated")]
    Truncated,
    #[error("record checksum does not match")]
    ChecksumMismatch,
    #[error("record length {0} is over the limit")]
    TooLong(usize),
    #[error("record format version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("record routes are not valid: {0}")]
    BadRoutes(String),
}

impl Record {
    /// Appends this record's frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let routes = serde_json::to_vec(&self.routes).expect("routes always serialise");
        let payload_len = 1 + 4 + routes.len() + 4 + self.envelope.len() + self.body.len();
        out.reserve(FRAME_HEADER_BYTES + payload_len);
        let frame_start = out.len();
        out.extend_from_slice(&(payload_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let payload_start = out.len();
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&(routes.len() as u32).to_le_bytes());
        out.extend_from_slice(&routes);
        out.extend_from_slice(&(self.envelope.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.envelope);
        out.extend_from_slice(&self.body);
        let crc = crc32c::crc32c(&out[payload_start..]);
        out[frame_start + 4..frame_start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn encoded_len(&self) -> usize {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out.len()
    }

    /// Decodes a payload whose frame checksum has already been verified. The envelope and
    /// body share the payload's buffer rather than being copied out of it.
    pub fn decode_payload(payload: Bytes) -> Result<Record, RecordError> {
        let (&version, rest) = payload.split_first().ok_or(RecordError::Truncated)?;
        if version != FORMAT_VERSION {
            return Err(RecordError::UnsupportedVersion(version));
        }
        let (routes, rest) = take_prefixed(rest)?;
        let (envelope, body) = take_prefixed(rest)?;
        let routes: Vec<Route> = serde_json::from_slice(routes)
            .map_err(|err| RecordError::BadRoutes(err.to_string()))?;
        Ok(Record {
            routes,
            envelope: payload.slice_ref(envelope),
            body: payload.slice_ref(body),
        })
    }
}

/// Reads a frame header: the payload length and its expected checksum.
pub fn parse_frame_header(header: [u8; FRAME_HEADER_BYTES]) -> Result<(usize, u32), RecordError> {
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD_BYTES {
        return Err(RecordError::TooLong(len));
    }
    // An all-zero header (a zero-filled tail after a crash) would otherwise pass: the CRC of
    // nothing is 0.
    if len < MIN_PAYLOAD_BYTES {
        return Err(RecordError::Truncated);
    }
    Ok((len, crc))
}

pub fn verify_checksum(payload: &[u8], expected: u32) -> Result<(), RecordError> {
    if crc32c::crc32c(payload) == expected {
        Ok(())
    } else {
        Err(RecordError::ChecksumMismatch)
    }
}

fn take_prefixed(input: &[u8]) -> Result<(&[u8], &[u8]), RecordError> {
    if input.len() < 4 {
        return Err(RecordError::Truncated);
    }
    let len = u32::from_le_bytes(input[0..4].try_into().expect("4 bytes")) as usize;
    let rest = &input[4..];
    if rest.len() < len {
        return Err(RecordError::Truncated);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            routes: vec![Route {
                sink: "archive".into(),
                rule: "everything".into(),
                shape: Shape::Envelope,
            }],
            envelope: Bytes::from_static(br#"{"id":"x"}"#),
            body: Bytes::from_static(b"<data/>"),
        }
    }

    fn decode_frame(frame: &[u8]) -> Result<Record, RecordError> {
        let header: [u8; FRAME_HEADER_BYTES] = frame[..FRAME_HEADER_BYTES].try_into().unwrap();
        let (len, crc) = parse_frame_header(header)?;
        let payload = frame
            .get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len)
            .ok_or(RecordError::Truncated)?;
        verify_checksum(payload, crc)?;
        Record::decode_payload(Bytes::copy_from_slice(payload))
    }

    #[test]
    fn a_record_survives_encoding() {
        let mut frame = Vec::new();
        sample().encode_into(&mut frame);
        assert_eq!(frame.len(), sample().encoded_len());
        assert_eq!(decode_frame(&frame), Ok(sample()));
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_checksum() {
        let mut frame = Vec::new();
        sample().encode_into(&mut frame);
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert_eq!(decode_frame(&frame), Err(RecordError::ChecksumMismatch));
    }

    #[test]
    fn a_cut_frame_is_truncated() {
        let mut frame = Vec::new();
        sample().encode_into(&mut frame);
        frame.truncate(frame.len() - 3);
        assert_eq!(decode_frame(&frame), Err(RecordError::Truncated));
    }

    #[test]
    fn an_absurd_length_is_refused_before_allocating() {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_frame_header(header),
            Err(RecordError::TooLong(_))
        ));
    }
}
