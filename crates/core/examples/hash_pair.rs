//! Prints how fast the two digests the chunk dialect needs (a chunk's MD5 and the whole
//! file's) are computed over the same bytes: one after the other, and paired
//! (`Hasher::update_both`). Medians of alternating runs over 256 MiB in 256 KiB batches.
//!
//! `cargo run --release -p ferry-core --example hash_pair [runs]`

use ferry_core::hash::{HashAlg, Hasher};
use std::time::Instant;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let data: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let mib = (data.len() >> 20) as f64;
    let (mut apart, mut paired) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (mut a, mut b) = (Hasher::new(HashAlg::Md5), Hasher::new(HashAlg::Md5));
        let t = Instant::now();
        for batch in data.chunks(256 << 10) {
            a.update(batch);
            b.update(batch);
        }
        apart.push(mib / t.elapsed().as_secs_f64());
        let one = (a.finalize_hex(), b.finalize_hex());

        let (mut a, mut b) = (Hasher::new(HashAlg::Md5), Hasher::new(HashAlg::Md5));
        let t = Instant::now();
        for batch in data.chunks(256 << 10) {
            Hasher::update_both(&mut a, &mut b, batch);
        }
        paired.push(mib / t.elapsed().as_secs_f64());
        assert_eq!(one, (a.finalize_hex(), b.finalize_hex()));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (x, y) = (median(&mut apart), median(&mut paired));
    println!(
        "two MD5 digests of the same bytes, {runs} alternating runs, medians: one after the other {x:.0} MiB/s of input, paired {y:.0} MiB/s ({:.2}x)",
        y / x
    );
}
