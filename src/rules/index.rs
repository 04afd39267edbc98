//! The equality index: which rules can possibly match an envelope, without evaluating each.
//!
//! For each rule, one conjunct that every match requires is picked: an `eq` (or `in`) on a
//! path whose values must be text (not a number, not `true`/`false`, so only a string equal
//! to it can match, see `Literal::index_key`). The index maps (path, text) to the rules that
//! picked it. An envelope's candidates are the rules found under the texts its values have
//! at those paths, plus every rule with no such conjunct; candidates are then evaluated in
//! file order as usual. A rule that is not a candidate cannot match, so routing with the
//! index gives exactly the answers of evaluating every rule.

use std::collections::HashMap;

use serde_json::Value;

use super::condition::{Condition, Op, text_of};
use super::path::Path;

#[derive(Debug, Default)]
pub struct Index {
    /// One table per distinct indexed path: text → rule positions, ascending.
    tables: Vec<(Path, HashMap<String, Vec<u32>>)>,
    /// Rules with no indexable conjunct, ascending.
    unindexed: Vec<u32>,
}

impl Index {
    /// Indexes `conditions`, given in file order.
    pub fn build<'a>(conditions: impl IntoIterator<Item = &'a Condition>) -> Index {
        let mut index = Index::default();
        for (position, condition) in conditions.into_iter().enumerate() {
            let position = u32::try_from(position).expect("fewer than 2^32 rules");
            match pick_key(condition) {
                None => index.unindexed.push(position),
                Some((path, texts)) => {
                    let table = match index.tables.iter().position(|(known, _)| known == path) {
                        Some(at) => &mut index.tables[at].1,
                        None => {
                            index.tables.push((path.clone(), HashMap::new()));
                            &mut index.tables.last_mut().expect("just pushed").1
                        }
                    };
                    for text in texts {
                        let positions = table.entry(text.to_owned()).or_default();
                        if positions.last() != Some(&position) {
                            positions.push(position);
                        }
                    }
                }
            }
        }
        index
    }

    /// Calls `visit` with the position of every rule that may match `envelope`, ascending,
    /// until `visit` returns `false`.
    pub fn for_each_candidate(&self, envelope: &Value, visit: &mut dyn FnMut(u32) -> bool) {
        let mut hits: Vec<u32> = Vec::new();
        for (path, table) in &self.tables {
            path.any(envelope, &mut |value| {
                if let Some(positions) = text_of(value).and_then(|text| table.get(text)) {
                    hits.extend_from_slice(positions);
                }
                false
            });
        }
        hits.sort_unstable();
        hits.dedup();
        let (mut left, mut right) = (hits.iter().peekable(), self.unindexed.iter().peekable());
        loop {
            let next = match (left.peek(), right.peek()) {
                (Some(&&a), Some(&&b)) if a < b => left.next(),
                (Some(_), Some(_)) => right.next(),
                (Some(_), None) => left.next(),
                (None, Some(_)) => right.next(),
                (None, None) => return,
            };
            if !visit(*next.expect("peeked")) {
                return;
            }
        }
    }

    /// The paths the index looks values up at, in the order first picked.
    pub fn indexed_paths(&self) -> impl Iterator<Item = &str> {
        self.tables.iter().map(|(path, _)| path.as_str())
    }
}

/// The conjunct to index a rule under: the deepest path (deeper paths such as `form.xmlns`
/// tell rules apart better than `kind`), `eq` before `in`, then the first written.
fn pick_key(condition: &Condition) -> Option<(&Path, Vec<&str>)> {
    let mut best: Option<((usize, bool), &Path, Vec<&str>)> = None;
    for test in condition.conjuncts() {
        for op in &test.same_value {
            let (texts, is_eq) = match op {
                Op::Eq(literal) => (literal.index_key().map(|text| vec![text]), true),
                Op::In(literals) => (
                    literals.iter().map(|literal| literal.index_key()).collect(),
                    false,
                ),
                _ => (None, false),
            };
            let Some(texts) = texts else { continue };
            let score = (test.path.segments().len(), is_eq);
            if best.as_ref().is_none_or(|(known, ..)| score > *known) {
                best = Some((score, &test.path, texts));
            }
        }
    }
    best.map(|(_, path, texts)| (path, texts))
}
