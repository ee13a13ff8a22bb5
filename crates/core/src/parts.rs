//! How a part-based blob store (S3 multipart uploads) cuts an upload into parts.
//!
//! An upload on such a store is a row of *cells*: cell `i` becomes part number `i + 1` of the
//! upload's multipart upload once all its bytes are held. The plan is made once, when the
//! upload is created, and kept in the upload record, so every node cuts the same way:
//!
//! - a declared length gets cells of one size: the store's minimum part, or more when the
//!   length would need more parts than the store allows (rounded up to a whole MiB), and a
//!   multiple of the chunk size when a chunk dialect declares one, so a chunk never straddles
//!   two parts;
//! - a deferred length gets cells that start at the minimum part and double every
//!   [`DOUBLE_EVERY`] cells, so small uploads finish in small parts and the part cap still
//!   leaves room for more than [`DEFERRED_CAPACITY`]; a store that needs equal parts gets
//!   cells of [`DEFERRED_CAPACITY`] / `max_parts` instead.
//!
//! Only the last cell of an upload may be shorter than the minimum part; no cell is larger
//! than the maximum part.

use serde::{Deserialize, Serialize};
use std::ops::Range;

const MIB: u64 = 1 << 20;
/// A deferred-length upload reaches at least this many bytes within the part cap.
pub const DEFERRED_CAPACITY: u64 = 1 << 40;
/// Deferred-length cells double in size after this many cells.
pub const DOUBLE_EVERY: u32 = 1000;

/// The part rules of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartLimits {
    /// Smallest part but the last.
    pub min_part: u64,
    /// Largest part.
    pub max_part: u64,
    /// Most parts in one upload.
    pub max_parts: u32,
    /// Every part but the last must have the same size (Cloudflare R2).
    pub equal_parts: bool,
}

impl PartLimits {
    /// Amazon S3's rules, which every compatible store accepts.
    pub const S3: PartLimits = PartLimits {
        min_part: 5 * MIB,
        max_part: 5 << 30,
        max_parts: 10_000,
        equal_parts: false,
    };

    /// The largest upload these rules can hold with a declared length.
    pub fn max_length(&self) -> u64 {
        self.max_part.saturating_mul(u64::from(self.max_parts))
    }
}

/// How an upload is cut into cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum CellPlan {
    /// Every cell `size` bytes (the last one may be shorter).
    Fixed { size: u64 },
    /// `every` cells of `base` bytes, then `every` of twice that, and so on, never above
    /// `max`.
    Doubling { base: u64, every: u32, max: u64 },
}

/// Why no plan fits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{length} bytes need more than {max_parts} parts of at most {max_part} bytes each")]
    TooLarge {
        length: u64,
        max_parts: u32,
        max_part: u64,
    },
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to).saturating_mul(to)
}

impl CellPlan {
    /// The plan for an upload of `length` (`None`: deferred) whose writes come in chunks of
    /// `chunk` bytes when a chunk dialect says so.
    pub fn new(
        limits: &PartLimits,
        length: Option<u64>,
        chunk: Option<u64>,
    ) -> Result<CellPlan, PlanError> {
        let too_large = |length| PlanError::TooLarge {
            length,
            max_parts: limits.max_parts,
            max_part: limits.max_part,
        };
        let parts = u64::from(limits.max_parts.max(1));
        let Some(length) = length else {
            if limits.equal_parts {
                let size = round_up(DEFERRED_CAPACITY.div_ceil(parts), MIB)
                    .clamp(limits.min_part, limits.max_part);
                return Ok(CellPlan::Fixed { size });
            }
            return Ok(CellPlan::Doubling {
                base: limits.min_part.max(1),
                every: DOUBLE_EVERY.min(limits.max_parts.max(1)),
                max: limits.max_part,
            });
        };
        let least = limits.min_part.max(length.div_ceil(parts)).max(1);
        if least > limits.max_part {
            return Err(too_large(length));
        }
        // A whole number of chunks per cell, when that still fits the limits.
        if let Some(c) = chunk.filter(|&c| c > 0) {
            let size = round_up(least, c);
            if size <= limits.max_part {
                return Ok(CellPlan::Fixed { size });
            }
        }
        let size = round_up(least, MIB).min(limits.max_part);
        if size.saturating_mul(parts) < length {
            return Err(too_large(length));
        }
        Ok(CellPlan::Fixed { size })
    }

    /// Size of cell `index`.
    pub fn cell_size(&self, index: u32) -> u64 {
        match *self {
            CellPlan::Fixed { size } => size,
            CellPlan::Doubling { base, every, max } => {
                let doublings = index / every.max(1);
                base.checked_shl(doublings)
                    .filter(|s| s >> doublings == base)
                    .map_or(max, |s| s.min(max))
            }
        }
    }

    /// Bytes of cell `index`, not clipped to the upload's length.
    pub fn cell(&self, index: u32) -> Range<u64> {
        match *self {
            CellPlan::Fixed { size } => {
                let start = u64::from(index).saturating_mul(size);
                start..start.saturating_add(size)
            }
            CellPlan::Doubling { every, .. } => {
                let every = every.max(1);
                let mut start = 0u64;
                let mut i = 0u32;
                // Whole groups of `every` same-size cells, then the rest of the last group.
                while index - i >= every {
                    start = start.saturating_add(u64::from(every) * self.cell_size(i));
                    i += every;
                }
                start = start.saturating_add(u64::from(index - i) * self.cell_size(i));
                start..start.saturating_add(self.cell_size(index))
            }
        }
    }

    /// The cell holding byte `offset`.
    pub fn cell_of(&self, offset: u64) -> u32 {
        match *self {
            CellPlan::Fixed { size } => u32::try_from(offset / size.max(1)).unwrap_or(u32::MAX),
            CellPlan::Doubling { every, .. } => {
                let every = every.max(1);
                let mut i = 0u32;
                let mut start = 0u64;
                loop {
                    let group = u64::from(every) * self.cell_size(i);
                    if offset < start.saturating_add(group) || group == 0 {
                        let within = (offset - start) / self.cell_size(i).max(1);
                        return i.saturating_add(u32::try_from(within).unwrap_or(u32::MAX));
                    }
                    start += group;
                    i = match i.checked_add(every) {
                        Some(next) => next,
                        None => return u32::MAX,
                    };
                }
            }
        }
    }

    /// Cell `index`'s bytes, clipped to `length` when it is known.
    pub fn clipped(&self, index: u32, length: Option<u64>) -> Range<u64> {
        let r = self.cell(index);
        r.start..length.map_or(r.end, |l| r.end.min(l))
    }

    /// The cells that bytes `span` (not empty) touch.
    pub fn cells_of(&self, span: &Range<u64>) -> std::ops::RangeInclusive<u32> {
        self.cell_of(span.start)..=self.cell_of(span.end - 1)
    }

    /// The cells an upload of `length` bytes consists of, each clipped to the length.
    pub fn cells(&self, length: u64) -> impl Iterator<Item = (u32, Range<u64>)> + '_ {
        let count = if length == 0 {
            0
        } else {
            self.cell_of(length - 1).saturating_add(1)
        };
        (0..count).map(move |i| {
            let r = self.cell(i);
            (i, r.start..r.end.min(length))
        })
    }

    /// How many bytes fit in the first `max_parts` cells.
    pub fn capacity(&self, max_parts: u32) -> u64 {
        match max_parts {
            0 => 0,
            n => self.cell(n - 1).end,
        }
    }
}

/// What a part store keeps about one upload, in its record: where the acknowledged bytes
/// are. The filesystem needs none of this (its bytes are at their offsets in one file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobState {
    /// The store's id of the upload's multipart upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<String>,
    /// How the upload is cut into parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells: Option<CellPlan>,
    /// Parts sent: cell index → the part.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub parts: std::collections::BTreeMap<u32, Part>,
    /// Objects holding acknowledged bytes that are not in a part yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<Piece>,
}

/// A part of the multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub etag: String,
    pub len: u64,
}

/// An object holding bytes `start..start + len` of the upload (`start` is `None` for a
/// staged chunk whose offset is not known yet; `index` is then the chunk's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub len: u64,
}

impl Piece {
    /// The upload's bytes this piece holds; `None` for a staged chunk not placed yet.
    pub fn span(&self) -> Option<Range<u64>> {
        self.start.map(|s| s..s + self.len)
    }
}

/// What one write added to (and took from) a [`BlobState`]; the commit that acknowledges
/// the write's bytes applies it. Applying it twice changes nothing (a commit re-applies its
/// change when another node updated the record first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobDelta {
    pub parts: Vec<(u32, Part)>,
    pub pieces: Vec<Piece>,
    /// Keys of pieces whose bytes are now in a part.
    pub spent: Vec<String>,
}

impl BlobDelta {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.pieces.is_empty() && self.spent.is_empty()
    }
}

impl BlobState {
    /// Cells without a part that recorded pieces cover whole (their bytes came from several
    /// writes), each clipped to `length` when it is known: what [`crate::store::BlobStore::settle`]
    /// composes.
    pub fn cells_in_pieces(&self, length: Option<u64>) -> Vec<(u32, Range<u64>)> {
        let Some(cells) = self.cells else {
            return Vec::new();
        };
        let mut covered = crate::ranges::RangeSet::new();
        for span in self.pieces.iter().filter_map(Piece::span) {
            covered.insert(span);
        }
        let Some(last) = covered.iter().map(|r| r.end).max() else {
            return Vec::new();
        };
        (0..=cells.cell_of(last - 1))
            .filter(|i| !self.parts.contains_key(i))
            .map(|i| (i, cells.clipped(i, length)))
            .filter(|(_, r)| !r.is_empty() && covered.contains(r.clone()))
            .collect()
    }

    /// Applies what a write stored.
    pub fn apply(&mut self, delta: &BlobDelta) {
        for (cell, part) in &delta.parts {
            self.parts.insert(*cell, part.clone());
        }
        for piece in &delta.pieces {
            // The same key again is the same object, placed (a staged chunk's offset known).
            match self.pieces.iter_mut().find(|p| p.key == piece.key) {
                Some(p) => *p = piece.clone(),
                None => self.pieces.push(piece.clone()),
            }
        }
        self.pieces.retain(|p| !delta.spent.contains(&p.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    /// The rules a store checks at completion, for an upload of `length` bytes.
    fn check(plan: &CellPlan, limits: &PartLimits, length: u64) {
        let cells: Vec<_> = plan.cells(length).collect();
        assert!(
            cells.len() as u64 <= u64::from(limits.max_parts),
            "{} cells for {length} bytes with {plan:?}",
            cells.len()
        );
        let mut next = 0;
        for (n, (i, r)) in cells.iter().enumerate() {
            assert_eq!(*i as usize, n);
            assert_eq!(r.start, next, "cells are contiguous");
            assert!(r.end > r.start, "no empty cell");
            let last = n + 1 == cells.len();
            let len = r.end - r.start;
            assert!(
                len <= limits.max_part,
                "cell {i} of {len} bytes is too large"
            );
            if !last {
                assert!(
                    len >= limits.min_part,
                    "cell {i} of {len} bytes is too small"
                );
                if limits.equal_parts {
                    assert_eq!(len, cells[0].1.end - cells[0].1.start, "cells are equal");
                }
            }
            assert_eq!(plan.cell_of(r.start), *i);
            assert_eq!(plan.cell_of(r.end - 1), *i);
            next = r.end;
        }
        assert_eq!(next, length, "the cells cover the upload");
    }

    #[test]
    fn a_declared_12_gib_upload_plans_under_the_part_cap() {
        let limits = PartLimits::S3;
        let length = 12 * GIB;
        let plan = CellPlan::new(&limits, Some(length), None).unwrap();
        assert_eq!(plan, CellPlan::Fixed { size: 5 << 20 });
        assert_eq!(plan.cells(length).count(), 2458);
        check(&plan, &limits, length);
    }

    #[test]
    fn large_declared_lengths_grow_the_cells_by_whole_mib() {
        let limits = PartLimits::S3;
        let length = 100 * GIB;
        let plan = CellPlan::new(&limits, Some(length), None).unwrap();
        assert_eq!(plan, CellPlan::Fixed { size: 11 << 20 });
        check(&plan, &limits, length);
        let most = limits.max_length();
        check(
            &CellPlan::new(&limits, Some(most), None).unwrap(),
            &limits,
            most,
        );
        assert!(matches!(
            CellPlan::new(&limits, Some(most + 1), None),
            Err(PlanError::TooLarge { .. })
        ));
    }

    #[test]
    fn chunks_never_straddle_two_cells() {
        let limits = PartLimits::S3;
        for chunk in [1, 1 << 20, (5 << 20) - 1, 5 << 20, 8 << 20] {
            let plan = CellPlan::new(&limits, Some(GIB), Some(chunk)).unwrap();
            let CellPlan::Fixed { size } = plan else {
                panic!("a declared length gets fixed cells")
            };
            assert_eq!(size % chunk, 0, "chunk {chunk}: cells of {size}");
            check(&plan, &limits, GIB);
        }
        // A 5 MiB chunk is exactly a part.
        assert_eq!(
            CellPlan::new(&limits, Some(GIB), Some(5 << 20)).unwrap(),
            CellPlan::Fixed { size: 5 << 20 }
        );
    }

    #[test]
    fn a_deferred_length_reaches_a_tebibyte_within_the_cap() {
        let limits = PartLimits::S3;
        let plan = CellPlan::new(&limits, None, None).unwrap();
        assert!(matches!(plan, CellPlan::Doubling { .. }));
        assert!(plan.capacity(limits.max_parts) >= DEFERRED_CAPACITY);
        assert_eq!(plan.cell(0), 0..5 << 20);
        assert_eq!(plan.cell(1000).end - plan.cell(1000).start, 10 << 20);
        for length in [1, 5 << 20, (5 << 20) + 1, 7 * GIB, DEFERRED_CAPACITY] {
            check(&plan, &limits, length);
        }
        let equal = PartLimits {
            equal_parts: true,
            ..limits
        };
        let plan = CellPlan::new(&equal, None, None).unwrap();
        assert_eq!(plan, CellPlan::Fixed { size: 105 << 20 });
        assert!(plan.capacity(equal.max_parts) >= DEFERRED_CAPACITY);
        check(&plan, &equal, DEFERRED_CAPACITY);
    }

    #[test]
    fn a_delta_applies_once_however_often_it_is_applied() {
        let piece = |key: &str, start| Piece {
            key: key.into(),
            start: Some(start),
            index: None,
            len: 10,
        };
        let mut state = BlobState {
            pieces: vec![piece("a", 0)],
            ..BlobState::default()
        };
        let delta = BlobDelta {
            parts: vec![(
                0,
                Part {
                    etag: "e".into(),
                    len: 20,
                },
            )],
            pieces: vec![piece("b", 10)],
            spent: vec!["a".into(), "b".into()],
        };
        state.apply(&delta);
        let once = state.clone();
        state.apply(&delta);
        assert_eq!(state, once);
        assert!(state.pieces.is_empty());
        assert_eq!(state.parts[&0].len, 20);
        assert_eq!(
            serde_json::from_str::<BlobState>(&serde_json::to_string(&state).unwrap()).unwrap(),
            state
        );
        // A staged piece placed later is the same object with its offset now known.
        let staged = Piece {
            key: "s".into(),
            start: None,
            index: Some(3),
            len: 10,
        };
        state.apply(&BlobDelta {
            pieces: vec![staged.clone()],
            ..BlobDelta::default()
        });
        let placed = Piece {
            start: Some(30),
            index: None,
            ..staged
        };
        state.apply(&BlobDelta {
            pieces: vec![placed.clone()],
            ..BlobDelta::default()
        });
        assert_eq!(state.pieces, [placed]);
    }

    #[test]
    fn the_plan_round_trips_through_the_record() {
        let plan = CellPlan::new(&PartLimits::S3, None, None).unwrap();
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<CellPlan>(&json).unwrap(), plan);
    }

    proptest! {
        #[test]
        fn every_plan_obeys_the_store_rules(
            length in 1u64..(48 << 40),
            chunk in proptest::option::of(1u64..(64 << 20)),
            equal in any::<bool>(),
        ) {
            let limits = PartLimits { equal_parts: equal, ..PartLimits::S3 };
            let plan = CellPlan::new(&limits, Some(length), chunk).unwrap();
            let cells = plan.cell_of(length - 1) as u64 + 1;
            prop_assert!(cells <= u64::from(limits.max_parts));
            let CellPlan::Fixed { size } = plan else { panic!() };
            prop_assert!(size >= limits.min_part && size <= limits.max_part);
        }

        #[test]
        fn deferred_cells_are_contiguous(index in 0u32..10_000) {
            let plan = CellPlan::new(&PartLimits::S3, None, None).unwrap();
            let r = plan.cell(index);
            if index > 0 {
                prop_assert_eq!(plan.cell(index - 1).end, r.start);
            }
            prop_assert_eq!(plan.cell_of(r.start), index);
            prop_assert_eq!(plan.cell_of(r.end - 1), index);
        }
    }
}
