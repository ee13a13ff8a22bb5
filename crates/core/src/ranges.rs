//! Sets of byte ranges: what an upload holds durably, what is in flight, what is missing.
//!
//! Ranges are half-open (`start..end`) and the set keeps them sorted, disjoint and
//! non-adjacent, so two sets holding the same bytes compare equal and serialise the same.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// A normalised set of half-open byte ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RangeSet {
    /// Sorted, disjoint, non-adjacent `[start, end)` pairs with `start < end`.
    spans: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a set from possibly unsorted, overlapping pairs (e.g. read from a database),
    /// dropping empty ones.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut set = Self::new();
        for (s, e) in pairs {
            set.insert(s..e);
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.spans.iter().map(|&(s, e)| s..e)
    }

    /// Total number of bytes covered.
    pub fn covered(&self) -> u64 {
        self.spans.iter().map(|(s, e)| e - s).sum()
    }

    /// End of the run that starts at byte 0, i.e. how many bytes an append-only client may
    /// assume are held (the tus `Upload-Offset`, the byte-offset dialect's status).
    pub fn prefix_end(&self) -> u64 {
        match self.spans.first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }

    /// Adds a range, merging with overlapping and adjacent ones.
    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // First span that could touch `r`: its end is >= r.start (adjacency merges too).
        let first = self.spans.partition_point(|&(_, e)| e < start);
        let mut last = first;
        while last < self.spans.len() && self.spans[last].0 <= end {
            start = start.min(self.spans[last].0);
            end = end.max(self.spans[last].1);
            last += 1;
        }
        self.spans.splice(first..last, [(start, end)]);
    }

    /// Removes a range (used when a write is abandoned or an upload is truncated).
    pub fn remove(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let mut out = Vec::with_capacity(self.spans.len() + 1);
        for &(s, e) in &self.spans {
            if e <= r.start || s >= r.end {
                out.push((s, e));
                continue;
            }
            if s < r.start {
                out.push((s, r.start));
            }
            if e > r.end {
                out.push((r.end, e));
            }
        }
        self.spans = out;
    }

    /// True when every byte of `r` is in the set (an empty range is always contained).
    pub fn contains(&self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return true;
        }
        let i = self.spans.partition_point(|&(_, e)| e <= r.start);
        self.spans
            .get(i)
            .is_some_and(|&(s, e)| s <= r.start && e >= r.end)
    }

    /// True when any byte of `r` is in the set.
    pub fn intersects(&self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return false;
        }
        let i = self.spans.partition_point(|&(_, e)| e <= r.start);
        self.spans.get(i).is_some_and(|&(s, _)| s < r.end)
    }

    /// The parts of `r` that are not in the set, in order.
    pub fn gaps_in(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let mut gaps = Vec::new();
        let mut cursor = r.start;
        for &(s, e) in &self.spans {
            if e <= cursor {
                continue;
            }
            if s >= r.end {
                break;
            }
            if s > cursor {
                gaps.push(cursor..s.min(r.end));
            }
            cursor = cursor.max(e);
            if cursor >= r.end {
                break;
            }
        }
        if cursor < r.end {
            gaps.push(cursor..r.end);
        }
        gaps
    }

    /// True when the set covers `0..len` (a zero-length upload is complete at once).
    pub fn is_complete(&self, len: u64) -> bool {
        self.contains(0..len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(u64, u64)]) -> RangeSet {
        RangeSet::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn insert_merges_overlaps_and_adjacent_ranges() {
        let mut s = RangeSet::new();
        s.insert(10..20);
        s.insert(30..40);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10..20, 30..40]);
        s.insert(20..30); // adjacent on both sides
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10..40]);
        s.insert(0..5);
        s.insert(3..12); // overlaps two
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..40]);
        assert_eq!(s.covered(), 40);
    }

    #[test]
    fn duplicate_inserts_change_nothing() {
        let mut s = set(&[(0, 100)]);
        let before = s.clone();
        s.insert(0..100);
        s.insert(10..20);
        s.insert(5..5); // empty
        assert_eq!(s, before);
    }

    #[test]
    fn unordered_inserts_normalise_to_one_form() {
        let a = set(&[(50, 60), (0, 10), (10, 20), (55, 70)]);
        let b = set(&[(0, 20), (50, 70)]);
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "[[0,20],[50,70]]");
    }

    #[test]
    fn prefix_end_is_the_run_from_zero() {
        assert_eq!(set(&[]).prefix_end(), 0);
        assert_eq!(set(&[(1, 10)]).prefix_end(), 0);
        assert_eq!(set(&[(0, 10), (11, 20)]).prefix_end(), 10);
    }

    #[test]
    fn gaps_cover_holes_and_edges() {
        let s = set(&[(10, 20), (30, 40)]);
        assert_eq!(s.gaps_in(0..50), vec![0..10, 20..30, 40..50]);
        assert_eq!(s.gaps_in(12..35), vec![20..30]);
        assert_eq!(s.gaps_in(10..20), Vec::<Range<u64>>::new());
        assert_eq!(s.gaps_in(15..15), Vec::<Range<u64>>::new());
        assert_eq!(RangeSet::new().gaps_in(0..5), vec![0..5]);
    }

    #[test]
    fn contains_and_intersects() {
        let s = set(&[(10, 20), (30, 40)]);
        assert!(s.contains(10..20));
        assert!(s.contains(12..18));
        assert!(!s.contains(15..25));
        assert!(!s.contains(20..30));
        assert!(s.intersects(19..21));
        assert!(!s.intersects(20..30));
        assert!(!s.intersects(0..10));
        assert!(s.contains(7..7));
    }

    #[test]
    fn completion_needs_every_byte() {
        assert!(set(&[]).is_complete(0));
        assert!(!set(&[(0, 9)]).is_complete(10));
        assert!(!set(&[(0, 5), (6, 10)]).is_complete(10));
        assert!(set(&[(0, 5), (5, 10)]).is_complete(10));
    }

    #[test]
    fn remove_splits_spans() {
        let mut s = set(&[(0, 100)]);
        s.remove(10..20);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..10, 20..100]);
        s.remove(0..10);
        s.remove(90..200);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![20..90]);
    }
}
