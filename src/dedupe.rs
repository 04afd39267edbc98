//! Dedupe: which payloads each source accepted recently, so that HQ's resends (after a
//! timeout, or an operator's "Resend") are answered 200 `"duplicate": true` and not routed
//! again (commcare-forwarding.md §6.4).
//!
//! The index holds, per (source, dedupe key), a 128-bit hash with the envelope id and the time
//! it was accepted; entries older than the window are pruned. It needs no file of its own:
//! every spooled envelope carries its source and dedupe key, so on start the index is rebuilt
//! by reading the spool, which keeps at least the retention period. A key enters the index
//! only after its record is durable, so a duplicate is never answered for a payload that
//! could still be lost; two copies arriving at the same instant may both be accepted (at
//! least once), and are counted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub struct DedupeIndex {
    window: Duration,
    entries: Mutex<HashMap<u128, Seen>>,
}

/// The first acceptance of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The envelope id the first copy got.
    pub envelope_id: uuid::Uuid,
    /// Seconds since the Unix epoch.
    pub accepted_at: i64,
}

/// The envelope fields the start-up scan reads.
#[derive(Deserialize)]
struct Keyed {
    id: String,
    source: String,
    dedupe_key: String,
    received_at: String,
}

impl DedupeIndex {
    pub fn new(window: Duration) -> DedupeIndex {
        DedupeIndex {
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a spooled envelope's key while the index is rebuilt at start (`recover`), unless
    /// it is past the window. The first copy of a key wins, as it did when it was accepted.
    pub fn note_spooled(&self, envelope_json: &[u8], now: jiff::Timestamp) -> bool {
        let Ok(keyed) = serde_json::from_slice::<Keyed>(envelope_json) else {
            return false;
        };
        let (Ok(received_at), Ok(envelope_id)) = (
            keyed.received_at.parse::<jiff::Timestamp>(),
            keyed.id.parse::<uuid::Uuid>(),
        ) else {
            return false;
        };
        if self.is_expired(received_at.as_second(), now) {
            return false;
        }
        let seen = Seen {
            envelope_id,
            accepted_at: received_at.as_second(),
        };
        self.lock()
            .entry(hash(&keyed.source, &keyed.dedupe_key))
            .or_insert(seen);
        true
    }

    /// The first acceptance of `dedupe_key` on `source`, if it is within the window.
    pub fn find(&self, source: &str, dedupe_key: &str, now: jiff::Timestamp) -> Option<Seen> {
        let seen = *self.lock().get(&hash(source, dedupe_key))?;
        (!self.is_expired(seen.accepted_at, now)).then_some(seen)
    }

    /// Records that `dedupe_key` was accepted durably on `source` as `envelope_id`.
    pub fn insert(
        &self,
        source: &str,
        dedupe_key: &str,
        envelope_id: uuid::Uuid,
        now: jiff::Timestamp,
    ) {
        let seen = Seen {
            envelope_id,
            accepted_at: now.as_second(),
        };
        self.lock().insert(hash(source, dedupe_key), seen);
    }

    /// Drops entries older than the window; returns how many are left.
    pub fn prune(&self, now: jiff::Timestamp) -> usize {
        let mut entries = self.lock();
        entries.retain(|_, seen| !self.is_expired(seen.accepted_at, now));
        entries.len()
    }

    fn is_expired(&self, accepted_at: i64, now: jiff::Timestamp) -> bool {
        now.as_second() - accepted_at > self.window.as_secs() as i64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Seen>> {
        self.entries.lock().expect("dedupe lock is never poisoned")
    }
}

/// 128 bits of SHA-256 over the source and the key: collisions are out of reach, and the
/// index does not keep whole keys in memory.
fn hash(source: &str, dedupe_key: &str) -> u128 {
    let digest = Sha256::new()
        .chain_update(source.as_bytes())
        .chain_update([0u8])
        .chain_update(dedupe_key.as_bytes())
        .finalize();
    u128::from_le_bytes(
        digest[..16]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_key_is_a_duplicate_on_its_source_within_the_window_only() {
        let index = DedupeIndex::new(Duration::from_secs(100));
        let id = uuid::Uuid::now_v7();
        assert_eq!(index.find("hq", "form:f1:t", at(1000)), None);
        index.insert("hq", "form:f1:t", id, at(1000));
        assert_eq!(
            index
                .find("hq", "form:f1:t", at(1100))
                .map(|seen| seen.envelope_id),
            Some(id)
        );
        assert_eq!(
            index.find("other", "form:f1:t", at(1000)),
            None,
            "keys are per source"
        );
        assert_eq!(
            index.find("hq", "form:f1:t2", at(1000)),
            None,
            "an edit has a new key"
        );
        assert_eq!(
            index.find("hq", "form:f1:t", at(1101)),
            None,
            "past the window"
        );
        assert_eq!(index.prune(at(1101)), 0);
    }
}
