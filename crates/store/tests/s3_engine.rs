//! The real [`Engine`] over [`S3BlobStore`] (a real S3 server, started by `scripts/s3.sh`)
//! and SQLite: appends of any size (1 byte, 5 MiB − 1, a body spanning many parts), writes
//! out of order, chunks in any order and staged, completion by `CompleteMultipartUpload`,
//! the digest checked, and nothing left in the bucket after a delete.

#![cfg(all(feature = "s3", feature = "sqlite"))]

use bytes::Bytes;
use ferry_core::Engine;
use ferry_core::engine::{EngineConfig, NewUpload, WriteMode};
use ferry_core::hash::HashAlg;
use ferry_core::parts::PartLimits;
use ferry_core::store::{BlobKind, Blobs, Meta};
use ferry_core::upload::{ChunkLayout, Dialect, Upload};
use ferry_store::s3::{S3BlobStore, S3Client, S3Config, S3Options};
use ferry_store::sqlite::SqliteMetaStore;
use futures_util::{StreamExt, stream};
use std::collections::BTreeMap;
use std::sync::Arc;

const MIB: usize = 1 << 20;

struct Harness {
    engine: Engine,
    client: S3Client,
    prefix: String,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let need = |name: &str| match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the S3 tests need a server. Start one with \
             `eval \"$(scripts/s3.sh start s3s-fs)\"`; scripts/test.sh does this itself"
        ),
    };
    let prefix = format!(
        "engine-{}",
        &ferry_core::upload::UploadId::generate().as_str()[..12]
    );
    let config = S3Config::new(
        &format!("s3://{}/{prefix}", need("FERRY_TEST_S3_BUCKET")),
        &S3Options {
            endpoint: Some(need("FERRY_TEST_S3_ENDPOINT")),
            ..S3Options::default()
        },
        |name| std::env::var(name).ok(),
    )
    .unwrap();
    let client = config.client(|name| std::env::var(name).ok()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = S3BlobStore::new(
        client.clone(),
        config.prefix.clone(),
        PartLimits::S3,
        dir.path().join("spool"),
    )
    .unwrap();
    let meta = SqliteMetaStore::open(&dir.path().join("meta.db")).unwrap();
    let engine = Engine::new(
        Meta(Arc::new(meta)),
        Blobs(Arc::new(store)),
        EngineConfig {
            max_upload_size: 1 << 30,
            ..Default::default()
        },
    );
    Harness {
        engine,
        client,
        prefix: config.prefix,
        _dir: dir,
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn body(bytes: &[u8]) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let frames: Vec<_> = bytes
        .chunks(256 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(frames)
}

async fn create(h: &Harness, dialect: Dialect, length: Option<u64>) -> Upload {
    let mut new = NewUpload::new(dialect);
    new.length = length;
    h.engine.create(new).await.unwrap().0
}

async fn append(h: &Harness, u: &Upload, at: u64, bytes: &[u8]) -> Upload {
    h.engine
        .write(&u.id, WriteMode::Append { offset: at }, body(bytes))
        .await
        .unwrap_or_else(|e| panic!("append of {} bytes at {at} failed: {e:?}", bytes.len()))
        .upload
}

async fn read_back(h: &Harness, u: &Upload) -> Vec<u8> {
    let blob = h
        .engine
        .blobs()
        .open(&u.id, BlobKind::Complete)
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let mut out = vec![0u8; blob.len() as usize];
        let mut at = 0;
        while at < out.len() {
            let n = blob.read_at(&mut out[at..], at as u64).unwrap();
            assert!(n > 0, "the object ended early");
            at += n;
        }
        out
    })
    .await
    .unwrap()
}

fn hex_of(alg: HashAlg, bytes: &[u8]) -> String {
    ferry_core::hash::digest(alg, bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn blake3_hex(bytes: &[u8]) -> String {
    hex_of(HashAlg::Blake3, bytes)
}

/// Only the finished object is left under the prefix.
/// A chunk-handshake upload of `src` cut at `chunk` (MD5 chunk ids, no chunk size given);
/// `length` `None` leaves the size to the last chunk. Returns the upload and its chunk ids.
async fn create_chunked(
    h: &Harness,
    src: &[u8],
    chunk: usize,
    length: Option<u64>,
) -> (Upload, Vec<String>) {
    let ids: Vec<String> = src
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| format!("{}-{i}", hex_of(HashAlg::Md5, c)))
        .collect();
    let mut new = NewUpload::new(Dialect::CHUNK);
    new.length = length;
    new.chunks = Some(ChunkLayout {
        ids: ids.clone(),
        chunk_size: None,
        alg: HashAlg::Md5,
        staged: BTreeMap::new(),
    });
    (h.engine.create(new).await.unwrap().0, ids)
}

async fn only_the_object_is_left(h: &Harness, u: &Upload) {
    let keys: Vec<String> = h
        .client
        .list(&h.prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(keys, [format!("{}files/{}", h.prefix, u.id)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_any_size_complete_into_one_object() {
    let h = harness();
    let src = data(13 * MIB + 12_345, 1);
    let u = create(&h, Dialect::TUS, Some(src.len() as u64)).await;
    let mut at = 0usize;
    // 1-byte appends, then up to 5 MiB − 1 (no cell is whole yet: pieces only), then a
    // body completing two cells (sent as parts while it streams, the first composed with
    // the pieces before it), then the rest.
    for _ in 0..3 {
        append(&h, &u, at as u64, &src[at..at + 1]).await;
        at += 1;
    }
    let mid = append(&h, &u, at as u64, &src[at..5 * MIB - 1]).await;
    at = 5 * MIB - 1;
    let state = mid.blob.clone().expect("a part store records its state");
    assert!(state.parts.is_empty(), "no cell was whole: {state:?}");
    assert_eq!(state.pieces.len(), 4, "three 1-byte pieces and one more");
    let mid = append(&h, &u, at as u64, &src[at..at + 6 * MIB]).await;
    at += 6 * MIB;
    let state = mid.blob.clone().unwrap();
    assert_eq!(
        state.parts.keys().copied().collect::<Vec<_>>(),
        [0, 1],
        "cells 0 and 1 became parts as the body streamed"
    );
    assert!(
        state
            .pieces
            .iter()
            .all(|p| p.start.unwrap() >= 10 * MIB as u64)
            && state.pieces.len() == 1,
        "the pieces of cell 0 were spent: {state:?}"
    );
    let done = append(&h, &u, at as u64, &src[at..]).await;
    assert!(done.is_complete());
    assert_eq!(
        done.content_digest.as_deref(),
        Some(blake3_hex(&src).as_str())
    );
    assert!(
        read_back(&h, &done).await == src,
        "the object is the source"
    );
    only_the_object_is_left(&h, &done).await;
    h.engine.delete(&done.id).await.unwrap();
    assert!(h.client.list(&h.prefix).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_out_of_order_complete_and_the_digest_is_checked() {
    let h = harness();
    let src = data(11 * MIB + 7, 2);
    let u = create(&h, Dialect::OFFSET, Some(src.len() as u64)).await;
    let len = src.len();
    // Last cell first, then the middle, then the start: the hasher never sees them in order.
    for r in [10 * MIB..len, 3 * MIB..10 * MIB, 0..3 * MIB] {
        h.engine
            .write(
                &u.id,
                WriteMode::At {
                    start: r.start as u64,
                    len: (r.end - r.start) as u64,
                },
                body(&src[r.clone()]),
            )
            .await
            .unwrap();
    }
    let done = h.engine.get(&u.id).await.unwrap();
    assert!(done.is_complete());
    assert_eq!(
        done.content_digest.as_deref(),
        Some(blake3_hex(&src).as_str())
    );
    assert!(read_back(&h, &done).await == src);
    only_the_object_is_left(&h, &done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_in_any_order_and_staged_complete() {
    let h = harness();
    let chunk = MIB;
    let src = data(7 * chunk + 100, 3);
    let (u, ids) = create_chunked(&h, &src, chunk, Some(src.len() as u64)).await;
    // The last chunk first (its offset is unknown: staged), then the rest backwards.
    let order = [7usize, 3, 6, 0, 5, 1, 4, 2];
    for (n, i) in order.into_iter().enumerate() {
        let bytes = &src[i * chunk..((i + 1) * chunk).min(src.len())];
        h.engine
            .write_chunk(&u.id, &ids[i], body(bytes))
            .await
            .unwrap_or_else(|e| panic!("chunk {i}: {e:?}"));
        if n == 6 {
            // Chunks 5, 6 and the staged 7 (pieces of three separate writes, one placed
            // later) cover cell 1 (5 MiB..the end) whole: it becomes a part before
            // completion, and its pieces go.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let state = h.engine.get(&u.id).await.unwrap().blob.unwrap();
                if state.parts.contains_key(&1) {
                    assert!(
                        state
                            .pieces
                            .iter()
                            .all(|p| p.start.is_some_and(|s| s < 5 * MIB as u64)),
                        "the pieces of cell 1 are spent: {state:?}"
                    );
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "cell 1 was not composed: {state:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let done = h.engine.get(&u.id).await.unwrap();
    assert!(done.is_complete(), "held {:?}", done.held);
    assert!(read_back(&h, &done).await == src);
    only_the_object_is_left(&h, &done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_upload_and_a_deleted_one_leave_nothing_behind() {
    let h = harness();
    let empty = create(&h, Dialect::TUS, Some(0)).await;
    assert!(empty.is_complete());
    assert!(read_back(&h, &empty).await.is_empty());
    h.engine.delete(&empty.id).await.unwrap();

    let src = data(6 * MIB, 4);
    let u = create(&h, Dialect::TUS, Some(12 * MIB as u64)).await;
    // An unfinished upload's blobs are dated (the start-up sweep of nodes sharing the
    // bucket leaves young ones alone): by its multipart upload before any byte (where the
    // store lists multipart uploads), by its newest piece after.
    let recent = |t: std::io::Result<std::time::SystemTime>| {
        t.is_ok_and(|t| t.elapsed().unwrap_or_default() < std::time::Duration::from_secs(120))
    };
    let before = h.engine.blobs().modified(&u.id).await;
    if std::env::var("FERRY_TEST_S3_SERVER").as_deref() == Ok("garage") {
        assert!(
            recent(before),
            "a fresh upload is dated by its multipart upload"
        );
    }
    append(&h, &u, 0, &src).await;
    assert!(
        recent(h.engine.blobs().modified(&u.id).await),
        "an unfinished upload is dated by its newest piece"
    );
    assert!(!h.client.list(&h.prefix).await.unwrap().is_empty());
    let mp = h
        .engine
        .get(&u.id)
        .await
        .unwrap()
        .blob
        .unwrap()
        .multipart
        .unwrap();
    h.engine.delete(&u.id).await.unwrap();
    assert!(
        h.client.list(&h.prefix).await.unwrap().is_empty(),
        "no piece or object is left"
    );
    let key = format!("{}files/{}", h.prefix, u.id);
    assert!(
        h.client
            .upload_part(
                &key,
                &mp,
                3,
                ferry_store::s3::Body::Bytes(Bytes::from_static(b"x"))
            )
            .await
            .is_err(),
        "the multipart upload was aborted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_upload_is_assembled_from_its_parts_objects() {
    let h = harness();
    // Parts of odd sizes: under the minimum part, and across cell boundaries.
    let src = data(9 * MIB + 333, 5);
    let cuts = [0, 3 * MIB + 1, 3 * MIB + 1000, src.len()];
    let mut parts = Vec::new();
    for w in cuts.windows(2) {
        let mut new = NewUpload::new(Dialect::TUS);
        new.length = Some((w[1] - w[0]) as u64);
        new.concat = Some(ferry_core::upload::Concat::Partial { finals: Vec::new() });
        let part = h.engine.create(new).await.unwrap().0;
        let done = append(&h, &part, 0, &src[w[0]..w[1]]).await;
        assert!(done.is_complete());
        parts.push(part.id);
    }
    let fin = h
        .engine
        .create_final(NewUpload::new(Dialect::TUS), parts.clone())
        .await
        .unwrap();
    assert!(fin.is_complete(), "assembled at once: {fin:?}");
    assert_eq!(
        fin.content_digest.as_deref(),
        Some(blake3_hex(&src).as_str())
    );
    assert!(
        read_back(&h, &fin).await == src,
        "the final is its parts in order"
    );
    // The parts are released once the final is complete: only the final's object is left.
    for p in &parts {
        assert!(h.engine.get(p).await.is_err(), "part {p} was released");
    }
    only_the_object_is_left(&h, &fin).await;
}

/// The store's `ferry_store_spooled_bytes_total`.
fn spooled(h: &Harness) -> u64 {
    h.engine
        .blobs()
        .metrics()
        .iter()
        .find(|m| m.name == "ferry_store_spooled_bytes_total")
        .expect("the S3 store reports its spooled bytes")
        .value as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_arriving_in_order_go_from_memory_and_many_writes_at_once_spool() {
    let h = harness();
    // One body from offset 0: its two whole cells go as parts straight from the received
    // buffers; only the tail that is no whole cell passes through the spool.
    let src = data(16 * MIB, 3);
    let u = create(&h, Dialect::TUS, Some(src.len() as u64)).await;
    let first = 12 * MIB + 3;
    let mid = append(&h, &u, 0, &src[..first]).await;
    let state = mid.blob.clone().unwrap();
    assert_eq!(state.parts.keys().copied().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(
        spooled(&h),
        (first - 10 * MIB) as u64,
        "only the unfinished cell was spooled"
    );
    let done = append(&h, &u, first as u64, &src[first..]).await;
    assert!(done.is_complete());
    assert!(read_back(&h, &done).await == src);

    // Six writes open at once (more than may hold cells in memory): each body waits until
    // all six writers are open. They spool, and every upload completes intact.
    let before = spooled(&h);
    let len = 11 * MIB + 5;
    let barrier = Arc::new(tokio::sync::Barrier::new(6));
    let mut tasks = Vec::new();
    for seed in 0..6u64 {
        let src = data(len, 10 + seed);
        let u = create(&h, Dialect::TUS, Some(len as u64)).await;
        let engine = h.engine.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let frames: Vec<Result<Bytes, std::io::Error>> = src
                .chunks(256 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let gate = stream::once(async move {
                barrier.wait().await;
            })
            .filter_map(|()| async { None });
            let body = Box::pin(gate.chain(stream::iter(frames)));
            let done = engine
                .write(&u.id, WriteMode::Append { offset: 0 }, body)
                .await
                .unwrap()
                .upload;
            (done, src)
        }));
    }
    for t in tasks {
        let (done, src) = t.await.unwrap();
        assert!(done.is_complete());
        assert_eq!(
            done.content_digest.as_deref(),
            Some(blake3_hex(&src).as_str())
        );
        assert!(read_back(&h, &done).await == src, "{} is intact", done.id);
    }
    assert!(
        spooled(&h) - before >= len as u64,
        "at least the first write to end spooled all its bytes: {}",
        spooled(&h) - before
    );
}

/// Chunks of an upload whose size comes only with its last chunk, all sent at once, several
/// times over: the background pass that composes cells from pieces and the completion that
/// publishes the upload never send the same part numbers at the same time (they did: the
/// store then refused the part list, `InvalidPart`, and the last chunk got a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_chunks_of_a_deferred_size_complete_every_time() {
    // The seed articles' client: 5 MiB chunks, the last one shorter.
    let chunk = 5 * MIB;
    for round in 0..4u64 {
        let h = harness();
        let src = data(4 * chunk + 3 * MIB + 4321, 40 + round);
        let (u, ids) = create_chunked(&h, &src, chunk, None).await;
        let write = |i: usize| {
            let (engine, id, cid) = (h.engine.clone(), u.id.clone(), ids[i].clone());
            let bytes = src[i * chunk..((i + 1) * chunk).min(src.len())].to_vec();
            tokio::spawn(async move { (i, engine.write_chunk(&id, &cid, body(&bytes)).await) })
        };
        // As the seed client's log had it: the first three at once, then the last one (the
        // size is known from then on, and a background pass starts composing what the
        // pieces cover), and right after it the one missing chunk, whose write completes
        // the upload while that pass may still be sending parts.
        let last = ids.len() - 1;
        let mut order: Vec<Vec<usize>> = vec![(0..last - 1).collect(), vec![last], vec![last - 1]];
        if round % 2 == 1 {
            // And all at once.
            order = vec![(0..=last).collect()];
        }
        for batch in order {
            let writes: Vec<_> = batch.into_iter().map(write).collect();
            for w in futures_util::future::join_all(writes).await {
                let (i, r) = w.unwrap();
                r.unwrap_or_else(|e| panic!("round {round}, chunk {i}: {e:?}"));
            }
        }
        let done = h.engine.get(&u.id).await.unwrap();
        assert!(done.is_complete(), "round {round}: held {:?}", done.held);
        assert!(
            read_back(&h, &done).await == src,
            "round {round}: bytes differ"
        );
        only_the_object_is_left(&h, &done).await;
    }
}
