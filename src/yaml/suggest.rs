//! "Did you mean" for misspelled names.

/// The valid name closest to `name`, when close enough to be a likely typo: same letters in
/// another case, or an edit distance of at most a third of the name (at least 1).
pub fn closest<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    if let Some(same) = valid
        .iter()
        .find(|candidate| candidate.eq_ignore_ascii_case(name))
    {
        return Some(same);
    }
    let limit = (name.chars().count() / 3).max(1);
    valid
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, counting an adjacent swap (`lsiten`) as one edit.
fn edit_distance(left: &str, right: &str) -> usize {
    let left: Vec<char> = left.chars().collect();
    let right: Vec<char> = right.chars().collect();
    let width = right.len() + 1;
    let mut table = vec![0usize; (left.len() + 1) * width];
    for (i, row) in table.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in table.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=left.len() {
        for j in 1..=right.len() {
            let cost = usize::from(left[i - 1] != right[j - 1]);
            let mut best = (table[(i - 1) * width + j] + 1)
                .min(table[i * width + j - 1] + 1)
                .min(table[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && left[i - 1] == right[j - 2] && left[i - 2] == right[j - 1] {
                best = best.min(table[(i - 2) * width + j - 2] + 1);
            }
            table[i * width + j] = best;
        }
    }
    table[left.len() * width + right.len()]
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggests_only_likely_typos() {
        let valid = ["listen", "admin_listen", "data_dir", "rules", "version"];
        let cases = [
            ("lisen", Some("listen")),
            ("lsiten", Some("listen")),
            ("LISTEN", Some("listen")),
            ("datadir", Some("data_dir")),
            ("admin_listn", Some("admin_listen")),
            ("rule", Some("rules")),
            ("spool", None),
            ("x", None),
        ];
        for (name, expected) in cases {
            assert_eq!(closest(name, &valid), expected, "for {name:?}");
        }
    }
}
