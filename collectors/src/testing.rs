//! Helpers the property tests of both crates share (feature `testing`,
//! enabled for tests only): valid inputs with random edits, the way a
//! truncated, corrupted or hostile answer looks.

use proptest::prelude::*;
use proptest::sample::Index;

/// One edit: replace, remove or insert at a position.
type Edit<T> = (Index, T, u8);

fn apply<T: Clone>(mut v: Vec<T>, edits: Vec<Edit<T>>) -> Vec<T> {
    for (at, x, op) in edits {
        let n = v.len();
        match op {
            0 if n > 0 => v[at.index(n)] = x,
            1 if n > 0 => {
                v.remove(at.index(n));
            }
            _ => v.insert(at.index(n + 1), x),
        }
    }
    v
}

/// One of `valid`, with up to five bytes changed, removed or inserted.
pub fn mutated_bytes(valid: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    (
        0..valid.len(),
        prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 0..6),
    )
        .prop_map(move |(i, edits)| apply(valid[i].to_vec(), edits))
}

/// One of `valid`, with up to five characters changed, removed or inserted.
pub fn mutated_text(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    (
        0..valid.len(),
        prop::collection::vec((any::<Index>(), any::<char>(), 0u8..3), 0..6),
    )
        .prop_map(move |(i, edits)| {
            apply(valid[i].chars().collect(), edits)
                .into_iter()
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest! {
        #[test]
        fn edits_stay_near_the_valid_input(b in mutated_bytes(&[b"abcdef"]), t in mutated_text(&["xyz"])) {
            prop_assert!(b.len() <= 6 + 5);
            prop_assert!(t.chars().count() <= 3 + 5);
        }
    }
}
