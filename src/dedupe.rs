//! Dedupe: which payloads each source accepted recently, so that HQ's resends (after a
//! timeout, or an operator's "Resend") are answered 200 `"duplicate": true` and not routed
//! again (commcare-forwarding.md §6.4).
//!
//! The index holds, per (source, dedupe key), a 128-bit hash with the envelope id and the time
//! it was accepted. It needs no file of its own: every spooled envelope carries its source and
//! dedupe key, so on start the index is rebuilt by reading the spool, which keeps at least the
//! retention period. A key enters the index only after its record is durable, so a duplicate
//! is never answered for a payload that could still be lost; two copies arriving at the same
//! instant may both be accepted (at least once), and are counted.
//!
//! Memory is bounded: keys live in generations, a new one started when the newest has held a
//! slice of the window or of `max_keys`. Whole generations are dropped, never scanned: once
//! all their keys are past the window, or, oldest first, when the index would pass `max_keys`.
//! A key forgotten early only means a late resend of it is delivered again (at least once).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::envelope::EnvelopeFacts;

/// How many generations the window and `max_keys` are cut into: the index keeps at most one
/// generation's worth more than it must, and `find` looks into at most about twice as many.
const GENERATIONS: u32 = 8;

pub struct DedupeIndex {
    window: Duration,
    max_keys: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    /// Oldest first.
    live: VecDeque<Generation>,
    keys: usize,
}

struct Generation {
    /// When the generation was started, in seconds since the Unix epoch.
    started_at: i64,
    /// The newest acceptance it holds.
    newest: i64,
    keys: HashMap<u128, Seen>,
}

/// The first acceptance of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The envelope id the first copy got.
    pub envelope_id: uuid::Uuid,
    /// Seconds since the Unix epoch.
    pub accepted_at: i64,
}

impl DedupeIndex {
    /// An index that answers for `window` and holds at most `max_keys` keys.
    pub fn new(window: Duration, max_keys: usize) -> DedupeIndex {
        DedupeIndex {
            window,
            max_keys: max_keys.max(1),
            generations: Mutex::new(Generations::default()),
        }
    }

    /// Adds a spooled envelope's key while the index is rebuilt at start (`recover`), unless
    /// it is past the window. The first copy of a key wins, as it did when it was accepted.
    pub fn note_spooled(&self, envelope_json: &[u8], now: jiff::Timestamp) -> bool {
        let Ok(text) = std::str::from_utf8(envelope_json) else {
            return false;
        };
        let keyed = EnvelopeFacts::read(text);
        let (Ok(received_at), Ok(envelope_id)) = (
            keyed.received_at.parse::<jiff::Timestamp>(),
            keyed.id.parse::<uuid::Uuid>(),
        ) else {
            return false;
        };
        if self.is_expired(received_at.as_second(), now) {
            return false;
        }
        let key = hash(&keyed.source, &keyed.dedupe_key);
        let seen = Seen {
            envelope_id,
            accepted_at: received_at.as_second(),
        };
        let mut generations = self.lock();
        if generations.find(key).is_none() {
            self.add(&mut generations, key, seen);
        }
        true
    }

    /// The first acceptance of `dedupe_key` on `source`, if it is within the window.
    pub fn find(&self, source: &str, dedupe_key: &str, now: jiff::Timestamp) -> Option<Seen> {
        let seen = self.lock().find(hash(source, dedupe_key))?;
        (!self.is_expired(seen.accepted_at, now)).then_some(seen)
    }

    /// Records that `dedupe_key` was accepted durably on `source` as `envelope_id`. Returns
    /// how many of the oldest keys were forgotten to stay within `max_keys`.
    pub fn insert(
        &self,
        source: &str,
        dedupe_key: &str,
        envelope_id: uuid::Uuid,
        now: jiff::Timestamp,
    ) -> usize {
        let seen = Seen {
            envelope_id,
            accepted_at: now.as_second(),
        };
        self.add(&mut self.lock(), hash(source, dedupe_key), seen)
    }

    /// Drops the generations whose keys are all past the window; returns how many keys are
    /// left.
    pub fn prune(&self, now: jiff::Timestamp) -> usize {
        let mut generations = self.lock();
        while generations
            .live
            .front()
            .is_some_and(|oldest| self.is_expired(oldest.newest, now))
        {
            generations.drop_oldest();
        }
        generations.keys
    }

    fn add(&self, generations: &mut Generations, key: u128, seen: Seen) -> usize {
        let slice_seconds = (self.window.as_secs() / u64::from(GENERATIONS)).max(1) as i64;
        let slice_keys = (self.max_keys / GENERATIONS as usize).max(1);
        let start_new = generations.live.back().is_none_or(|newest| {
            newest.keys.len() >= slice_keys || seen.accepted_at - newest.started_at >= slice_seconds
        });
        if start_new {
            generations.live.push_back(Generation {
                started_at: seen.accepted_at,
                newest: seen.accepted_at,
                keys: HashMap::new(),
            });
        }
        let newest = generations.live.back_mut().expect("pushed above if empty");
        newest.newest = newest.newest.max(seen.accepted_at);
        if newest.keys.insert(key, seen).is_none() {
            generations.keys += 1;
        }
        let mut forgotten = 0;
        while generations.keys > self.max_keys && generations.live.len() > 1 {
            forgotten += generations.drop_oldest();
        }
        forgotten
    }

    fn is_expired(&self, accepted_at: i64, now: jiff::Timestamp) -> bool {
        now.as_second() - accepted_at > self.window.as_secs() as i64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.generations
            .lock()
            .expect("dedupe lock is never poisoned")
    }
}

impl Generations {
    /// Newest first: a key accepted twice (two copies at the same instant) may sit in two
    /// generations, and answers with its latest copy, as one map would after an overwrite.
    fn find(&self, key: u128) -> Option<Seen> {
        self.live
            .iter()
            .rev()
            .find_map(|generation| generation.keys.get(&key).copied())
    }

    fn drop_oldest(&mut self) -> usize {
        let dropped = self.live.pop_front().map_or(0, |oldest| oldest.keys.len());
        self.keys -= dropped;
        dropped
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
        let index = DedupeIndex::new(Duration::from_secs(100), 1000);
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

    #[test]
    fn keys_past_the_window_are_dropped_a_generation_at_a_time() {
        let index = DedupeIndex::new(Duration::from_secs(800), 1000);
        for second in 0..800 {
            index.insert(
                "hq",
                &format!("k{second}"),
                uuid::Uuid::now_v7(),
                at(second),
            );
        }
        assert_eq!(index.prune(at(800)), 800);
        // At 1000 the keys of the first 200 seconds are past the window; their two
        // generations of 100 seconds go whole.
        assert_eq!(index.prune(at(1000)), 600);
        assert!(index.find("hq", "k199", at(1000)).is_none());
        assert!(index.find("hq", "k200", at(1000)).is_some());
    }

    #[test]
    fn past_max_keys_the_oldest_are_forgotten_first() {
        let index = DedupeIndex::new(Duration::from_secs(3600), 80);
        let mut forgotten = 0;
        for n in 0..100 {
            forgotten += index.insert("hq", &format!("k{n}"), uuid::Uuid::now_v7(), at(1000));
        }
        // Generations of 10 keys: two were dropped to stay within 80.
        assert_eq!(forgotten, 20);
        assert_eq!(index.prune(at(1000)), 80);
        assert!(index.find("hq", "k19", at(1000)).is_none());
        assert!(index.find("hq", "k20", at(1000)).is_some());
        assert!(index.find("hq", "k99", at(1000)).is_some());
    }
}
