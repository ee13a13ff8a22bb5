//! ferry-store: the storage backends behind ferry-core's traits.
//!
//! - [`fs`] (feature `fs`): [`fs::FsBlobStore`], upload bytes as files in a local directory,
//!   written in place with `pwritev`, staged chunks placed with `copy_file_range`, and
//!   finished files published by an atomic rename.
//! - [`sqlite`] (feature `sqlite`): [`sqlite::SqliteMetaStore`], upload records in one SQLite
//!   file in WAL mode with a full fsync per commit.
//! - [`postgres`] (feature `postgres`): [`postgres::PgMetaStore`], upload records in a
//!   PostgreSQL database that several nodes can share, over a tokio-postgres pool (no TLS
//!   yet), with migrations serialised by an advisory lock.
//! - [`s3`] (feature `s3`): file bytes in an S3-compatible bucket; so far the signed,
//!   retried requests ([`s3::S3Client`]) and the configuration with its start-up check.
//!
//! The conformance suites [`meta_store_suite`] and [`blob_store_suite`] exercise the
//! contract of [`MetaStore`](ferry_core::store::MetaStore) and
//! [`BlobStore`](ferry_core::store::BlobStore) through the public traits only, so every
//! backend (these, and later ones such as S3) is held to the same tests.
//! They panic with a message naming the broken promise. They only create uploads with fresh
//! random ids and keys and only assert about those, so they may run against a store that
//! already holds data, and several times on the same store.

#[cfg(feature = "fs")]
pub mod fs;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use bytes::Bytes;
use ferry_core::hash::HashAlg;
use ferry_core::ranges::RangeSet;
use ferry_core::store::{BlobKind, BlobRead, BlobWrite, Blobs, Meta, MetaError, Usage};
use ferry_core::upload::{
    ChunkLayout, DeclaredDigest, Dialect, HashProgress, Timestamp, Upload, UploadId, UploadState,
};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// An upload with every optional field set, so a round trip that drops or mangles any of
/// them shows up as an inequality.
fn full_upload() -> Upload {
    let id = UploadId::generate();
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "filename".to_owned(),
        "季度报告 2024（终稿）.pdf".to_owned(),
    );
    metadata.insert("content-type".to_owned(), "application/pdf".to_owned());
    metadata.insert("empty".to_owned(), String::new());
    let mut staged = BTreeMap::new();
    staged.insert(3, 1_234);
    Upload {
        owner: Some("tenant 甲".to_owned()),
        key: Some(format!("chunk:{}", UploadId::generate())),
        dialect: Dialect::CHUNK,
        length: Some(3 * 4_194_304 + 1_234),
        state: UploadState::Receiving,
        held: RangeSet::from_pairs([(0, 4_194_304), (2 * 4_194_304, 3 * 4_194_304)]),
        declared: Some(DeclaredDigest {
            alg: HashAlg::Sha256,
            hex: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
        }),
        content_alg: HashAlg::Sha256,
        hash_progress: Some(HashProgress {
            position: 4_194_304,
            state_hex: "01ab23cd45ef".to_owned(),
        }),
        content_digest: None,
        file_name: Some("季度报告 2024（终稿）.pdf".to_owned()),
        ext: ".pdf".to_owned(),
        chunks: Some(ChunkLayout {
            ids: vec![
                "9e107d9d372bb682".to_owned(),
                "e4d909c290d0fb1c".to_owned(),
                "d41d8cd98f00b204-2".to_owned(),
                "0cc175b9c0f1b6a8".to_owned(),
            ],
            chunk_size: Some(4_194_304),
            alg: HashAlg::Md5,
            staged,
        }),
        metadata,
        concat: None,
        created_at: Timestamp(1_700_000_000_000),
        updated_at: Timestamp(1_700_000_100_000),
        completed_at: None,
        // A part store's state round-trips too (multipart id, cells, parts, pieces).
        blob: Some(ferry_core::parts::BlobState {
            multipart: Some("mp-0001".to_owned()),
            cells: Some(ferry_core::parts::CellPlan::Fixed { size: 5 << 20 }),
            parts: BTreeMap::from([(
                0,
                ferry_core::parts::Part {
                    etag: "\"9b2cf535f27731c974343645a3985328\"".to_owned(),
                    len: 5 << 20,
                },
            )]),
            pieces: vec![ferry_core::parts::Piece {
                key: "pieces/x/5242880".to_owned(),
                start: Some(5 << 20),
                index: None,
                len: 10,
            }],
        }),
        version: 0,
        id,
    }
}

/// A bare upload in `state`, last updated at `updated_at`.
fn plain_upload(state: UploadState, updated_at: Timestamp) -> Upload {
    Upload {
        id: UploadId::generate(),
        owner: None,
        key: None,
        dialect: Dialect::TUS,
        length: None,
        state,
        held: RangeSet::new(),
        declared: None,
        content_alg: HashAlg::Sha256,
        hash_progress: None,
        content_digest: None,
        file_name: None,
        ext: String::new(),
        chunks: None,
        metadata: BTreeMap::new(),
        concat: None,
        created_at: updated_at,
        updated_at,
        completed_at: (state == UploadState::Complete).then_some(updated_at),
        blob: None,
        version: 0,
    }
}

/// Checks a [`MetaStore`](ferry_core::store::MetaStore) against the contract. Panics on the
/// first violation.
pub async fn meta_store_suite(store: Meta) {
    store.ping().await.expect("ping of a healthy store failed");

    // Round trip of a record with every field set.
    let full = full_upload();
    let key = full.key.clone().expect("the sample has a key");
    store
        .insert(&full)
        .await
        .expect("insert of a new upload failed");
    let got = store.get(&full.id).await.expect("get failed");
    assert_eq!(
        got.as_ref(),
        Some(&full),
        "get did not return the inserted upload unchanged"
    );
    let got = store.get_by_key(&key).await.expect("get_by_key failed");
    assert_eq!(
        got.as_ref(),
        Some(&full),
        "get_by_key did not return the inserted upload unchanged"
    );

    // Duplicates: same id with another key, and another id with the same key.
    let mut same_id = plain_upload(UploadState::Receiving, Timestamp(5));
    same_id.id = full.id.clone();
    same_id.key = Some(format!("offset:{}", UploadId::generate()));
    match store.insert(&same_id).await {
        Err(MetaError::Conflict) => {}
        other => panic!("insert of a duplicate id should be Conflict, got {other:?}"),
    }
    let mut same_key = plain_upload(UploadState::Receiving, Timestamp(5));
    same_key.key = Some(key.clone());
    match store.insert(&same_key).await {
        Err(MetaError::Conflict) => {}
        other => panic!("insert of a duplicate key should be Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(&full.id).await.expect("get failed").as_ref(),
        Some(&full),
        "a refused duplicate insert changed the existing record"
    );
    assert_eq!(
        store.get(&same_key.id).await.expect("get failed"),
        None,
        "a refused duplicate-key insert left a record behind"
    );

    // Uploads without a key never conflict with each other.
    let keyless_a = plain_upload(UploadState::Receiving, Timestamp(5));
    let keyless_b = plain_upload(UploadState::Receiving, Timestamp(5));
    store
        .insert(&keyless_a)
        .await
        .expect("insert of an upload without key failed");
    store
        .insert(&keyless_b)
        .await
        .expect("a second upload without key must not conflict with the first");

    // Update: progress, completion, and a new key.
    let mut updated = full.clone();
    updated.held = RangeSet::from_pairs([(0, updated.length.expect("sample has a length"))]);
    updated.state = UploadState::Complete;
    updated.hash_progress = None;
    updated.content_digest = Some("ab".repeat(32));
    updated
        .chunks
        .as_mut()
        .expect("sample has chunks")
        .staged
        .clear();
    updated
        .metadata
        .insert("note".to_owned(), "已完成 ✓".to_owned());
    updated.updated_at = Timestamp(1_700_000_200_000);
    updated.completed_at = Some(updated.updated_at);
    let new_key = format!("offset:{}", UploadId::generate());
    updated.key = Some(new_key.clone());
    store.update(&updated).await.expect("update failed");
    updated.version += 1;
    assert_eq!(
        store.get(&full.id).await.expect("get failed").as_ref(),
        Some(&updated),
        "get after update did not return the updated record (at the next version)"
    );

    // Compare-and-set: an update from a copy read before that one is stale and changes
    // nothing; re-read, it applies.
    let mut late = full.clone();
    late.metadata.insert("late".to_owned(), "x".to_owned());
    assert!(
        matches!(store.update(&late).await, Err(MetaError::Stale)),
        "an update of a record changed since it was read must be refused as stale"
    );
    assert_eq!(
        store.get(&full.id).await.expect("get failed").as_ref(),
        Some(&updated),
        "a stale update changed the record"
    );
    assert_eq!(
        store
            .get_by_key(&new_key)
            .await
            .expect("get_by_key failed")
            .as_ref(),
        Some(&updated),
        "get_by_key of the new key after update did not find the record"
    );
    assert_eq!(
        store.get_by_key(&key).await.expect("get_by_key failed"),
        None,
        "the old key still finds the record after update changed it"
    );

    // Update onto a key another upload holds must fail and change nothing.
    let mut stealing = keyless_a.clone();
    stealing.key = Some(new_key.clone());
    assert!(
        store.update(&stealing).await.is_err(),
        "update that takes another upload's key should fail"
    );
    assert_eq!(
        store.get(&keyless_a.id).await.expect("get failed").as_ref(),
        Some(&keyless_a),
        "a failed update changed the record"
    );

    // Update of an unknown (deleted) upload is a no-op, not a resurrection.
    let ghost = plain_upload(UploadState::Receiving, Timestamp(5));
    store
        .update(&ghost)
        .await
        .expect("update of an unknown upload should be a no-op");
    assert_eq!(
        store.get(&ghost.id).await.expect("get failed"),
        None,
        "update of an unknown upload created it"
    );

    // Sweeps: only receiving uploads, and only those updated strictly before the cut-off.
    let cut = Timestamp(2_000_000);
    let old_receiving = plain_upload(UploadState::Receiving, Timestamp(1_000_000));
    let at_cut = plain_upload(UploadState::Receiving, cut);
    let new_receiving = plain_upload(UploadState::Receiving, Timestamp(3_000_000));
    let old_complete = plain_upload(UploadState::Complete, Timestamp(1_000_000));
    for u in [&old_receiving, &at_cut, &new_receiving, &old_complete] {
        store.insert(u).await.expect("insert failed");
    }
    let stale = store.list_stale(cut).await.expect("list_stale failed");
    assert!(
        stale.contains(&old_receiving.id),
        "list_stale missed an old receiving upload"
    );
    assert!(
        !stale.contains(&at_cut.id),
        "list_stale included an upload updated exactly at the cut-off"
    );
    assert!(
        !stale.contains(&new_receiving.id),
        "list_stale included a recently updated upload"
    );
    assert!(
        !stale.contains(&old_complete.id),
        "list_stale included a complete upload"
    );
    assert!(
        !stale.contains(&full.id),
        "list_stale included an upload completed by update"
    );
    let incomplete = store
        .list_incomplete()
        .await
        .expect("list_incomplete failed");
    for u in [
        &old_receiving,
        &at_cut,
        &new_receiving,
        &keyless_a,
        &keyless_b,
    ] {
        assert!(
            incomplete.contains(&u.id),
            "list_incomplete missed a receiving upload"
        );
    }
    assert!(
        !incomplete.contains(&old_complete.id),
        "list_incomplete included a complete upload"
    );
    assert!(
        !incomplete.contains(&full.id),
        "list_incomplete included an upload completed by update"
    );

    // A receiving upload refreshed by update leaves the stale list.
    let mut refreshed = old_receiving.clone();
    refreshed.updated_at = Timestamp(4_000_000);
    store.update(&refreshed).await.expect("update failed");
    refreshed.version += 1;
    let stale = store.list_stale(cut).await.expect("list_stale failed");
    assert!(
        !stale.contains(&old_receiving.id),
        "list_stale still lists an upload after update refreshed it"
    );

    // Delete.
    store
        .delete(&old_receiving.id)
        .await
        .expect("delete failed");
    assert_eq!(
        store.get(&old_receiving.id).await.expect("get failed"),
        None,
        "get found a deleted upload"
    );
    let incomplete = store
        .list_incomplete()
        .await
        .expect("list_incomplete failed");
    assert!(
        !incomplete.contains(&old_receiving.id),
        "list_incomplete lists a deleted upload"
    );
    store.delete(&full.id).await.expect("delete failed");
    assert_eq!(
        store.get_by_key(&new_key).await.expect("get_by_key failed"),
        None,
        "get_by_key found a deleted upload"
    );
    store
        .delete(&full.id)
        .await
        .expect("delete of an already deleted upload should be a no-op");
    // The key of a deleted upload is free again.
    let mut reuse = plain_upload(UploadState::Receiving, Timestamp(5));
    reuse.key = Some(new_key.clone());
    store
        .insert(&reuse)
        .await
        .expect("the key of a deleted upload should be free for reuse");

    // Unknowns.
    assert_eq!(
        store.get(&UploadId::generate()).await.expect("get failed"),
        None,
        "get of an unknown id should be None"
    );
    assert_eq!(
        store
            .get_by_key(&format!("chunk:{}", UploadId::generate()))
            .await
            .expect("get_by_key failed"),
        None,
        "get_by_key of an unknown key should be None"
    );

    // Usage per owner: incomplete uploads counted, sizes summed (declared length, else the
    // held prefix), other owners and owner-less uploads apart.
    let owner = format!("usage-{}", UploadId::generate());
    let other = format!("usage-{}", UploadId::generate());
    let mk = |owner: &str, state: UploadState, length: Option<u64>, held: u64| {
        let mut u = plain_upload(state, Timestamp(7));
        u.owner = Some(owner.to_owned());
        u.length = length;
        if held > 0 {
            u.held = RangeSet::from_pairs([(0, held)]);
        }
        u
    };
    let owned = [
        mk(&owner, UploadState::Receiving, Some(1_000), 10),
        mk(&owner, UploadState::Receiving, None, 300),
        mk(&owner, UploadState::Complete, Some(5_000), 5_000),
        mk(&other, UploadState::Receiving, Some(77), 0),
    ];
    for u in &owned {
        store.insert(u).await.expect("insert failed");
    }
    let usage = store.usage(Some(&owner)).await.expect("usage failed");
    assert_eq!(
        usage,
        Usage {
            incomplete: 2,
            stored_bytes: 6_300
        },
        "usage of an owner"
    );
    // The size column of an upload of unknown length follows its held prefix.
    let mut longer = owned[1].clone();
    longer.held = RangeSet::from_pairs([(0, 400)]);
    store.update(&longer).await.expect("update failed");
    assert_eq!(
        store.usage(Some(&owner)).await.unwrap().stored_bytes,
        6_400,
        "usage follows the held prefix of an upload of unknown length"
    );
    let mut grown = longer;
    grown.version += 1;
    grown.length = Some(2_000);
    store.update(&grown).await.expect("update failed");
    grown.version += 1;
    assert_eq!(
        store.usage(Some(&owner)).await.unwrap().stored_bytes,
        8_000,
        "usage follows an update"
    );
    assert_eq!(
        store.usage(Some(&other)).await.unwrap(),
        Usage {
            incomplete: 1,
            stored_bytes: 77
        }
    );
    let nobody = store.usage(Some("nobody at all")).await.unwrap();
    assert_eq!(nobody, Usage::default());

    list_owned_cases(&store).await;

    // Leave the store as found.
    for u in [
        &keyless_a,
        &keyless_b,
        &at_cut,
        &new_receiving,
        &old_complete,
        &reuse,
    ]
    .into_iter()
    .chain(owned.iter())
    {
        store.delete(&u.id).await.expect("delete failed");
    }
}

/// `MetaStore::list_owned`: an owner's uploads newest first (creation time, then id, both
/// descending), pages that neither repeat nor skip, other owners and owner-less uploads
/// apart. Owners are fresh names; owner-less uploads are created at times no other run of
/// the suite uses, and only they are asserted about.
async fn list_owned_cases(store: &Meta) {
    let me = format!("list-{}", UploadId::generate());
    let them = format!("list-{}", UploadId::generate());
    // A run's own stretch of time, far from the suite's other samples and from now.
    let seed = i64::from_str_radix(&UploadId::generate().as_str()[..8], 16).expect("hex");
    let base = 5_000_000_000_000 + seed * 100;
    let mk = |owner: Option<&str>, created: i64, state: UploadState, dialect: Dialect| {
        let mut u = plain_upload(state, Timestamp(base + created));
        u.owner = owner.map(str::to_owned);
        u.dialect = dialect;
        // Updated in the reverse order of creation: the order must not follow updated_at.
        u.updated_at = Timestamp(base + 1_000 - created);
        u
    };
    let mine = vec![
        mk(Some(&me), 0, UploadState::Complete, Dialect::CHUNK),
        mk(Some(&me), 10, UploadState::Receiving, Dialect::OFFSET),
        mk(Some(&me), 10, UploadState::Complete, Dialect::TUS),
        mk(Some(&me), 20, UploadState::Receiving, Dialect::TUS),
        mk(Some(&me), 20, UploadState::Complete, Dialect::CHUNK),
        mk(Some(&me), 20, UploadState::Receiving, Dialect::new("other")),
        mk(Some(&me), 30, UploadState::Receiving, Dialect::OFFSET),
    ];
    let theirs = [
        mk(Some(&them), 20, UploadState::Complete, Dialect::TUS),
        mk(Some(&them), 35, UploadState::Receiving, Dialect::TUS),
    ];
    let nobodys = [
        mk(None, 25, UploadState::Complete, Dialect::TUS),
        mk(None, 20, UploadState::Receiving, Dialect::CHUNK),
        mk(None, 20, UploadState::Receiving, Dialect::OFFSET),
    ];
    // Inserted in an order that is neither the listed one nor its reverse.
    for u in mine
        .iter()
        .rev()
        .step_by(2)
        .chain(mine.iter().skip(1).step_by(2))
    {
        store.insert(u).await.expect("insert failed");
    }
    for u in theirs.iter().chain(&nobodys) {
        store.insert(u).await.expect("insert failed");
    }
    let newest_first = |list: &[Upload]| {
        let mut sorted = list.to_vec();
        sorted.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        sorted
    };
    let ids = |list: &[Upload]| list.iter().map(|u| u.id.clone()).collect::<Vec<_>>();
    let want = newest_first(&mine);
    assert_eq!(mine.len(), want.len());

    let all = store
        .list_owned(Some(&me), None, 100)
        .await
        .expect("list_owned failed");
    assert_eq!(
        ids(&all),
        ids(&want),
        "list_owned is not the owner's uploads newest first (ties by id, descending)"
    );
    assert_eq!(all, want, "list_owned did not return the records unchanged");

    // Pages: each at most `limit` long, the cursor the last of the previous page; together
    // every upload once, in order.
    for limit in [1, 2, 3, 6, 7, 8] {
        let mut walked: Vec<Upload> = Vec::new();
        let mut after = None;
        for _ in 0..=mine.len() {
            let page = store
                .list_owned(Some(&me), after.clone(), limit)
                .await
                .expect("list_owned failed");
            assert!(
                page.len() <= limit,
                "a page of limit {limit} has {} uploads",
                page.len()
            );
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.id.clone()));
            walked.extend(page);
        }
        assert_eq!(
            ids(&walked),
            ids(&want),
            "walking pages of {limit} did not give every upload once, newest first"
        );
    }

    // The cursor is strict, also inside a run of equal creation times, and need not be an
    // upload that exists.
    let tie = &want[2];
    assert_eq!(
        (want[1].created_at, want[3].created_at),
        (tie.created_at, tie.created_at)
    );
    let after_tie = store
        .list_owned(Some(&me), Some((tie.created_at, tie.id.clone())), 100)
        .await
        .expect("list_owned failed");
    assert_eq!(
        ids(&after_tie),
        ids(&want[3..]),
        "a cursor inside equal creation times must list exactly the uploads after it"
    );
    let highest = UploadId::parse(&"f".repeat(32)).expect("an id");
    let lowest = UploadId::parse(&"0".repeat(32)).expect("an id");
    let from_time = store
        .list_owned(Some(&me), Some((Timestamp(base + 20), highest)), 100)
        .await
        .expect("list_owned failed");
    assert_eq!(
        ids(&from_time),
        ids(&want[1..]),
        "a cursor at (t, highest id) must list every upload created at t or before"
    );
    let before_time = store
        .list_owned(Some(&me), Some((Timestamp(base + 20), lowest.clone())), 100)
        .await
        .expect("list_owned failed");
    assert_eq!(
        ids(&before_time),
        ids(&want[4..]),
        "a cursor at (t, lowest id) must list only uploads created before t"
    );
    assert!(
        store
            .list_owned(Some(&me), None, 0)
            .await
            .expect("list_owned failed")
            .is_empty(),
        "a limit of 0 must list nothing"
    );

    // Owners apart; an unknown owner has nothing.
    let listed = store
        .list_owned(Some(&them), None, 100)
        .await
        .expect("list_owned failed");
    assert_eq!(
        ids(&listed),
        ids(&newest_first(&theirs)),
        "list_owned of one owner must list exactly its uploads"
    );
    let unknown = format!("list-{}", UploadId::generate());
    assert!(
        store
            .list_owned(Some(&unknown), None, 100)
            .await
            .expect("list_owned failed")
            .is_empty(),
        "an owner without uploads must list nothing"
    );

    // Owner-less uploads (a server without authentication): from just after this run's
    // stretch of time, only owner-less uploads, this run's newest first. (The store may
    // hold other owner-less uploads; the stretch makes this run's come first.)
    let from = Some((Timestamp(base + 1_000), lowest));
    let listed = store
        .list_owned(None, from.clone(), 50)
        .await
        .expect("list_owned failed");
    assert!(
        listed.iter().all(|u| u.owner.is_none()),
        "list_owned(None) listed an upload that has an owner"
    );
    let ours: Vec<UploadId> = listed
        .iter()
        .filter(|u| nobodys.iter().any(|n| n.id == u.id))
        .map(|u| u.id.clone())
        .collect();
    assert_eq!(
        ours,
        ids(&newest_first(&nobodys)),
        "list_owned(None) is not the owner-less uploads newest first"
    );
    let first = store
        .list_owned(None, from, 1)
        .await
        .expect("list_owned failed");
    assert_eq!(ids(&first), ids(&newest_first(&nobodys)[..1]));

    // An update changes the record listed, not its place; a deleted upload is gone.
    let mut done = want[0].clone();
    done.state = UploadState::Complete;
    done.held = RangeSet::from_pairs([(0, 10)]);
    done.length = Some(10);
    done.updated_at = Timestamp(base + 5_000);
    done.completed_at = Some(done.updated_at);
    store.update(&done).await.expect("update failed");
    done.version += 1;
    store.delete(&want[3].id).await.expect("delete failed");
    let listed = store
        .list_owned(Some(&me), None, 100)
        .await
        .expect("list_owned failed");
    let mut expected = want.clone();
    expected[0] = done;
    expected.remove(3);
    assert_eq!(
        listed, expected,
        "after an update and a delete, list_owned must list the updated record in its place \
         and not the deleted one"
    );

    for u in mine.iter().chain(&theirs).chain(&nobodys) {
        store.delete(&u.id).await.expect("delete failed");
    }
    assert!(
        store
            .list_owned(Some(&me), None, 100)
            .await
            .expect("list_owned failed")
            .is_empty(),
        "list_owned lists deleted uploads"
    );
}

/// Deterministic, position-dependent bytes, so a write at a wrong offset is visible.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// Splits `data` into `Bytes` of the given sizes, cycling through them.
fn split(data: &[u8], sizes: &[usize]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at >= data.len() {
            break;
        }
        let end = (at + size).min(data.len());
        out.push(Bytes::copy_from_slice(&data[at..end]));
        at = end;
    }
    out
}

/// Runs blocking blob work on the blocking pool, as the engine does.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking blob task panicked")
}

async fn write(
    mut w: Box<dyn BlobWrite>,
    offset: u64,
    bufs: Vec<Bytes>,
    what: &str,
) -> Box<dyn BlobWrite> {
    let what = what.to_owned();
    blocking(move || {
        w.write_at(offset, &bufs)
            .unwrap_or_else(|e| panic!("write_at of {what} failed: {e}"));
        w.sync()
            .unwrap_or_else(|e| panic!("sync after {what} failed: {e}"));
        w
    })
    .await
}

/// Reads a whole blob through `read_at`, in uneven pieces.
async fn read_blob(r: Arc<dyn BlobRead>) -> Vec<u8> {
    blocking(move || {
        let len = usize::try_from(r.len()).expect("blob too large for this test");
        let mut out = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let end = (at + 100_003).min(len);
            let n = r
                .read_at(&mut out[at..end], at as u64)
                .unwrap_or_else(|e| panic!("read_at({at}) failed: {e}"));
            assert!(
                n > 0,
                "read_at({at}) returned 0 before the blob's length {len}"
            );
            at += n;
        }
        let mut probe = [0u8; 1];
        assert_eq!(
            r.read_at(&mut probe, len as u64)
                .expect("read_at at the end failed"),
            0,
            "read_at at the end should return 0"
        );
        out
    })
    .await
}

async fn writer_read_back(w: Box<dyn BlobWrite>, len: usize) -> (Box<dyn BlobWrite>, Vec<u8>) {
    blocking(move || {
        let mut out = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let n = w
                .read_at(&mut out[at..], at as u64)
                .unwrap_or_else(|e| panic!("BlobWrite::read_at({at}) failed: {e}"));
            assert!(
                n > 0,
                "BlobWrite::read_at({at}) returned 0 inside written data"
            );
            at += n;
        }
        (w, out)
    })
    .await
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} instead of {}",
        got.len(),
        want.len()
    );
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first differing byte at offset {i}");
    }
}

fn expect_not_found<T>(r: io::Result<T>, what: &str) {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => panic!("{what} should fail with NotFound, got {e}"),
        Ok(_) => panic!("{what} should fail with NotFound, but succeeded"),
    }
}

/// Checks a [`BlobStore`](ferry_core::store::BlobStore) against the contract. Panics on the
/// first violation.
pub async fn blob_store_suite(store: Blobs) {
    store.ping().await.expect("ping of a healthy store failed");
    let id = UploadId::generate();
    let started = SystemTime::now();

    store.create(&id).await.expect("create failed");
    store
        .create(&id)
        .await
        .expect("create should be idempotent");
    let empty = store
        .open(&id, BlobKind::Partial)
        .await
        .expect("open of a fresh partial failed");
    assert_eq!(empty.len(), 0, "a fresh partial blob should be empty");

    // Final file: head 0..40_000 | body 40_000..100_000 | tail 100_000..130_000 (staged).
    let data = pattern(130_000, 17);
    let (head, body, tail) = (&data[..40_000], &data[40_000..100_000], &data[100_000..]);

    // Out of order, from two writers at once: the body first, in uneven buffers with an
    // empty one among them; the head in 2_000 buffers, more than one vectored call takes.
    let mut body_bufs = split(body, &[25_000, 1, 9_999]);
    body_bufs.insert(1, Bytes::new());
    let head_bufs = split(head, &[20]);
    let body_writer = store.writer(&id).await.expect("writer failed");
    let head_writer = store.writer(&id).await.expect("second writer failed");
    let (body_writer, head_writer) = tokio::join!(
        write(body_writer, 40_000, body_bufs, "the body"),
        write(head_writer, 0, head_bufs, "the head"),
    );
    drop(head_writer);
    let (body_writer, back) = writer_read_back(body_writer, 100_000).await;
    assert_same(&back, &data[..100_000], "reading back through the writer");
    drop(body_writer);
    let partial = store
        .open(&id, BlobKind::Partial)
        .await
        .expect("open of the partial failed");
    assert_same(
        &read_blob(partial).await,
        &data[..100_000],
        "the partial blob after out-of-order writes",
    );

    // Staging: an earlier attempt is truncated away by the next staging_writer.
    let junk = store
        .staging_writer(&id, 3)
        .await
        .expect("staging_writer failed");
    drop(
        write(
            junk,
            0,
            vec![Bytes::from(vec![0xEE; 50_000])],
            "an abandoned staging attempt",
        )
        .await,
    );
    let staging = store
        .staging_writer(&id, 3)
        .await
        .expect("second staging_writer failed");
    let staging = write(staging, 0, split(tail, &[7_000, 3]), "the staged tail").await;
    let tail_len = tail.len() as u64;
    let staging = blocking(move || {
        let mut probe = [0u8; 1];
        let n = staging
            .read_at(&mut probe, tail_len)
            .expect("read_at past the staged bytes failed");
        assert_eq!(n, 0, "staging_writer did not truncate an earlier attempt");
        staging
    })
    .await;
    drop(staging);
    store
        .place_staged(&id, 3, 100_000, tail_len)
        .await
        .expect("place_staged failed");
    let partial = store
        .open(&id, BlobKind::Partial)
        .await
        .expect("open of the partial failed");
    assert_same(
        &read_blob(partial).await,
        &data,
        "the partial blob after place_staged",
    );

    // A staged blob shorter than claimed must not be placed as if it were whole.
    let short = store
        .staging_writer(&id, 7)
        .await
        .expect("staging_writer failed");
    drop(
        write(
            short,
            0,
            vec![Bytes::from_static(b"only eleven")],
            "a short staged chunk",
        )
        .await,
    );
    assert!(
        store.place_staged(&id, 7, 0, 1_000).await.is_err(),
        "place_staged of a staging blob shorter than len should fail"
    );
    let partial = store
        .open(&id, BlobKind::Partial)
        .await
        .expect("open of the partial failed");
    assert_same(
        &read_blob(partial).await,
        &data,
        "the partial blob after a refused place_staged",
    );

    // Publish, twice.
    store.publish(&id).await.expect("publish failed");
    let complete = store
        .open(&id, BlobKind::Complete)
        .await
        .expect("open of the complete blob failed");
    assert_eq!(
        complete.len(),
        data.len() as u64,
        "complete blob has the wrong length"
    );
    assert_same(&read_blob(complete).await, &data, "the complete blob");
    expect_not_found(
        store.open(&id, BlobKind::Partial).await,
        "open(Partial) after publish",
    );
    store
        .publish(&id)
        .await
        .expect("publish of an already published upload should be Ok");
    let complete = store
        .open(&id, BlobKind::Complete)
        .await
        .expect("open after the second publish failed");
    assert_same(
        &read_blob(complete).await,
        &data,
        "the complete blob after a second publish",
    );
    let modified = store.modified(&id).await.expect("modified failed");
    let slack = Duration::from_secs(120);
    assert!(
        modified + slack >= started && modified <= SystemTime::now() + slack,
        "modified() is far from the time the blob was written"
    );

    // Delete everything, twice.
    store.delete(&id).await.expect("delete failed");
    expect_not_found(
        store.open(&id, BlobKind::Complete).await,
        "open(Complete) after delete",
    );
    expect_not_found(
        store.open(&id, BlobKind::Partial).await,
        "open(Partial) after delete",
    );
    assert!(
        store.modified(&id).await.is_err(),
        "modified() of a deleted blob should fail"
    );
    assert!(
        store.place_staged(&id, 7, 0, 11).await.is_err(),
        "a staging blob survived delete"
    );
    store
        .delete(&id)
        .await
        .expect("delete of a deleted upload should be Ok");

    // Publish of nothing is an error, not a silent success.
    let missing = UploadId::generate();
    assert!(
        store.publish(&missing).await.is_err(),
        "publish of an unknown upload should fail"
    );
    expect_not_found(
        store.open(&missing, BlobKind::Partial).await,
        "open(Partial) of an unknown upload",
    );
    expect_not_found(
        store.open(&missing, BlobKind::Complete).await,
        "open(Complete) of an unknown upload",
    );
    store
        .delete(&missing)
        .await
        .expect("delete of an unknown upload should be Ok");
}
