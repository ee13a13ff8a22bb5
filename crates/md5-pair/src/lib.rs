//! Two MD5 digests of the same bytes for about 1.2× the cost of one.
//!
//! MD5 is one long dependency chain: each of a block's 64 steps needs the previous step's
//! result, so one stream keeps a core's arithmetic units mostly idle. The chunk dialect needs
//! two digests of every byte (the chunk's id and the whole file's); running both chains in the
//! same loop lets the core overlap them. On this project's 2-core machine the md-5 crate hashes
//! one stream at 527–558 MiB/s; this loop feeds two states at 431–462 MiB/s of input, against
//! 266–288 for md-5 twice (docs/BENCHMARKS.md, W7).
//!
//! No crate offers multi-state MD5 (RustCrypto's `md-5` compresses one state; the
//! multi-buffer libraries are C and assembly), so the compression function is written here,
//! from RFC 1321, in safe Rust. The states live in `md-5` hashers; only whole 64-byte
//! blocks pass through this loop, moved in and out through RustCrypto's serialized state
//! (chaining words, block count, buffer), whose layout `super` pins at compile time.

use digest::Digest;
use digest::common::hazmat::{SerializableState, SerializedState};

/// Feeds `data` to two MD5 hashers that have both consumed `position` bytes modulo 64, so
/// that their block boundaries line up.
pub fn update_same(a: &mut md5::Md5, b: &mut md5::Md5, position: u64, data: &[u8]) {
    // Complete the partly filled block each hasher buffers (their buffered bytes differ).
    let head = ((64 - position % 64) % 64).min(data.len() as u64) as usize;
    let (first, rest) = data.split_at(head);
    Digest::update(a, first);
    Digest::update(b, first);
    let whole = rest.len() / 64 * 64;
    let (blocks, tail) = rest.split_at(whole);
    if !blocks.is_empty() {
        let (mut sa, mut sb) = (a.serialize(), b.serialize());
        let (mut wa, mut wb) = (words(&sa), words(&sb));
        compress_same(&mut wa, &mut wb, blocks);
        put(&mut sa, wa, (whole / 64) as u64);
        put(&mut sb, wb, (whole / 64) as u64);
        *a = restore(&sa);
        *b = restore(&sb);
    }
    Digest::update(a, tail);
    Digest::update(b, tail);
}

type State = SerializedState<md5::Md5>;

/// The chaining words at the start of a serialized state.
fn words(s: &State) -> [u32; 4] {
    std::array::from_fn(|i| u32::from_le_bytes(s[i * 4..i * 4 + 4].try_into().expect("4 bytes")))
}

/// Writes the chaining words back and counts `blocks` more compressed blocks. The buffer
/// (after the block count) is untouched: it was empty before and stays so.
fn put(s: &mut State, w: [u32; 4], blocks: u64) {
    for (i, v) in w.iter().enumerate() {
        s[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    let count = u64::from_le_bytes(s[16..24].try_into().expect("8 bytes")) + blocks;
    s[16..24].copy_from_slice(&count.to_le_bytes());
}

fn restore(s: &State) -> md5::Md5 {
    // The state came from `serialize` with only the words and the count changed, so its
    // buffer is as valid as before.
    md5::Md5::deserialize(s).expect("a state serialized a moment ago stays valid")
}

#[inline(always)]
fn f(x: u32, y: u32, z: u32) -> u32 {
    (x & y) | (!x & z)
}
#[inline(always)]
fn g(x: u32, y: u32, z: u32) -> u32 {
    (x & z) | (y & !z)
}
#[inline(always)]
fn h(x: u32, y: u32, z: u32) -> u32 {
    x ^ y ^ z
}
#[inline(always)]
fn i(x: u32, y: u32, z: u32) -> u32 {
    y ^ (x | !z)
}

/// One step on both lanes: `a = b + ((a + fun(b, c, d) + m + k) <<< s)`.
macro_rules! step {
    ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:expr) => {
        $a.0 = $b.0.wrapping_add(
            $a.0.wrapping_add($fun($b.0, $c.0, $d.0))
                .wrapping_add($m)
                .wrapping_add($k)
                .rotate_left($s),
        );
        $a.1 = $b.1.wrapping_add(
            $a.1.wrapping_add($fun($b.1, $c.1, $d.1))
                .wrapping_add($m)
                .wrapping_add($k)
                .rotate_left($s),
        );
    };
}

/// Compresses the same whole 64-byte blocks into two chaining states, step by step in
/// lockstep.
fn compress_same(sa: &mut [u32; 4], sb: &mut [u32; 4], blocks: &[u8]) {
    debug_assert_eq!(blocks.len() % 64, 0);
    for block in blocks.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|j| {
            u32::from_le_bytes(block[j * 4..j * 4 + 4].try_into().expect("4 bytes"))
        });
        let mut a = (sa[0], sb[0]);
        let mut b = (sa[1], sb[1]);
        let mut c = (sa[2], sb[2]);
        let mut d = (sa[3], sb[3]);

        step!(f, a, b, c, d, m[0], 0xd76a_a478, 7);
        step!(f, d, a, b, c, m[1], 0xe8c7_b756, 12);
        step!(f, c, d, a, b, m[2], 0x2420_70db, 17);
        step!(f, b, c, d, a, m[3], 0xc1bd_ceee, 22);
        step!(f, a, b, c, d, m[4], 0xf57c_0faf, 7);
        step!(f, d, a, b, c, m[5], 0x4787_c62a, 12);
        step!(f, c, d, a, b, m[6], 0xa830_4613, 17);
        step!(f, b, c, d, a, m[7], 0xfd46_9501, 22);
        step!(f, a, b, c, d, m[8], 0x6980_98d8, 7);
        step!(f, d, a, b, c, m[9], 0x8b44_f7af, 12);
        step!(f, c, d, a, b, m[10], 0xffff_5bb1, 17);
        step!(f, b, c, d, a, m[11], 0x895c_d7be, 22);
        step!(f, a, b, c, d, m[12], 0x6b90_1122, 7);
        step!(f, d, a, b, c, m[13], 0xfd98_7193, 12);
        step!(f, c, d, a, b, m[14], 0xa679_438e, 17);
        step!(f, b, c, d, a, m[15], 0x49b4_0821, 22);

        step!(g, a, b, c, d, m[1], 0xf61e_2562, 5);
        step!(g, d, a, b, c, m[6], 0xc040_b340, 9);
        step!(g, c, d, a, b, m[11], 0x265e_5a51, 14);
        step!(g, b, c, d, a, m[0], 0xe9b6_c7aa, 20);
        step!(g, a, b, c, d, m[5], 0xd62f_105d, 5);
        step!(g, d, a, b, c, m[10], 0x0244_1453, 9);
        step!(g, c, d, a, b, m[15], 0xd8a1_e681, 14);
        step!(g, b, c, d, a, m[4], 0xe7d3_fbc8, 20);
        step!(g, a, b, c, d, m[9], 0x21e1_cde6, 5);
        step!(g, d, a, b, c, m[14], 0xc337_07d6, 9);
        step!(g, c, d, a, b, m[3], 0xf4d5_0d87, 14);
        step!(g, b, c, d, a, m[8], 0x455a_14ed, 20);
        step!(g, a, b, c, d, m[13], 0xa9e3_e905, 5);
        step!(g, d, a, b, c, m[2], 0xfcef_a3f8, 9);
        step!(g, c, d, a, b, m[7], 0x676f_02d9, 14);
        step!(g, b, c, d, a, m[12], 0x8d2a_4c8a, 20);

        step!(h, a, b, c, d, m[5], 0xfffa_3942, 4);
        step!(h, d, a, b, c, m[8], 0x8771_f681, 11);
        step!(h, c, d, a, b, m[11], 0x6d9d_6122, 16);
        step!(h, b, c, d, a, m[14], 0xfde5_380c, 23);
        step!(h, a, b, c, d, m[1], 0xa4be_ea44, 4);
        step!(h, d, a, b, c, m[4], 0x4bde_cfa9, 11);
        step!(h, c, d, a, b, m[7], 0xf6bb_4b60, 16);
        step!(h, b, c, d, a, m[10], 0xbebf_bc70, 23);
        step!(h, a, b, c, d, m[13], 0x289b_7ec6, 4);
        step!(h, d, a, b, c, m[0], 0xeaa1_27fa, 11);
        step!(h, c, d, a, b, m[3], 0xd4ef_3085, 16);
        step!(h, b, c, d, a, m[6], 0x0488_1d05, 23);
        step!(h, a, b, c, d, m[9], 0xd9d4_d039, 4);
        step!(h, d, a, b, c, m[12], 0xe6db_99e5, 11);
        step!(h, c, d, a, b, m[15], 0x1fa2_7cf8, 16);
        step!(h, b, c, d, a, m[2], 0xc4ac_5665, 23);

        step!(i, a, b, c, d, m[0], 0xf429_2244, 6);
        step!(i, d, a, b, c, m[7], 0x432a_ff97, 10);
        step!(i, c, d, a, b, m[14], 0xab94_23a7, 15);
        step!(i, b, c, d, a, m[5], 0xfc93_a039, 21);
        step!(i, a, b, c, d, m[12], 0x655b_59c3, 6);
        step!(i, d, a, b, c, m[3], 0x8f0c_cc92, 10);
        step!(i, c, d, a, b, m[10], 0xffef_f47d, 15);
        step!(i, b, c, d, a, m[1], 0x8584_5dd1, 21);
        step!(i, a, b, c, d, m[8], 0x6fa8_7e4f, 6);
        step!(i, d, a, b, c, m[15], 0xfe2c_e6e0, 10);
        step!(i, c, d, a, b, m[6], 0xa301_4314, 15);
        step!(i, b, c, d, a, m[13], 0x4e08_11a1, 21);
        step!(i, a, b, c, d, m[4], 0xf753_7e82, 6);
        step!(i, d, a, b, c, m[11], 0xbd3a_f235, 10);
        step!(i, c, d, a, b, m[2], 0x2ad7_d2bb, 15);
        step!(i, b, c, d, a, m[9], 0xeb86_d391, 21);

        sa[0] = sa[0].wrapping_add(a.0);
        sa[1] = sa[1].wrapping_add(b.0);
        sa[2] = sa[2].wrapping_add(c.0);
        sa[3] = sa[3].wrapping_add(d.0);
        sb[0] = sb[0].wrapping_add(a.1);
        sb[1] = sb[1].wrapping_add(b.1);
        sb[2] = sb[2].wrapping_add(c.1);
        sb[3] = sb[3].wrapping_add(d.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// Both states advance exactly as md-5 alone would, whatever came before (different
    /// prefixes, any alignment) and however the bytes are split.
    #[test]
    fn matches_md5_for_any_prefix_alignment_and_length() {
        for prefix in [0usize, 1, 17, 63, 64, 65, 127, 200] {
            for len in [0usize, 1, 63, 64, 65, 128, 1000, 4096 + 7, 100_000] {
                let (pa, pb) = (bytes(prefix, 1), bytes(prefix + 64 * 3, 2));
                let data = bytes(len, 3);
                let mut a = md5::Md5::new();
                let mut b = md5::Md5::new();
                Digest::update(&mut a, &pa);
                Digest::update(&mut b, &pb);
                // `b` is 192 bytes further on: the same position modulo 64.
                update_same(&mut a, &mut b, prefix as u64, &data);
                let want_a = md5::Md5::digest([pa.as_slice(), &data].concat());
                let want_b = md5::Md5::digest([pb.as_slice(), &data].concat());
                assert_eq!(a.finalize(), want_a, "prefix {prefix}, len {len}");
                assert_eq!(b.finalize(), want_b, "prefix {prefix}, len {len}");
            }
        }
    }

    /// RFC 1321's million-`a` vector, all of it through the paired loop.
    #[test]
    fn known_answer_through_the_pair() {
        let mut a = md5::Md5::new();
        let mut b = md5::Md5::new();
        update_same(&mut a, &mut b, 0, &[b'a'; 1_000_000]);
        assert_eq!(
            hex::encode(a.finalize()),
            "7707d6ae4e027c70eea2a935c2296f21"
        );
        assert_eq!(
            hex::encode(b.finalize()),
            "7707d6ae4e027c70eea2a935c2296f21"
        );
    }
}
