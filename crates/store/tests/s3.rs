//! The S3 client against a real S3-compatible server that we did not write (Garage or
//! s3s-fs, started by `scripts/s3.sh`; the test command starts both in turn). Every test
//! works under a prefix of its own, so they run in parallel on one bucket.

#![cfg(feature = "s3")]

use bytes::Bytes;
use ferry_store::s3::{Body, S3Client, S3Config, S3ErrorKind, S3Options};
use std::io::Write;

/// The config of the test server. Missing variables are a failure, not a skip: a skipped
/// test in CI is a missing one.
fn config(storage_prefix: &str) -> (S3Config, S3Client) {
    let need = |name: &str| match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the S3 tests need a server. Start one with \
             `eval \"$(scripts/s3.sh start s3s-fs)\"` (or `garage`; `scripts/s3.sh stop` after); \
             scripts/test.sh does this itself"
        ),
    };
    let bucket = need("FERRY_TEST_S3_BUCKET");
    let opts = S3Options {
        endpoint: Some(need("FERRY_TEST_S3_ENDPOINT")),
        ..S3Options::default()
    };
    need("AWS_ACCESS_KEY_ID");
    let config = S3Config::new(&format!("s3://{bucket}/{storage_prefix}"), &opts, |name| {
        std::env::var(name).ok()
    })
    .unwrap();
    let client = config.client(|name| std::env::var(name).ok()).unwrap();
    (config, client)
}

fn unique() -> String {
    format!(
        "t{}",
        ferry_core::upload::UploadId::generate().as_str()[..12].to_owned()
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

fn on_garage() -> bool {
    std::env::var("FERRY_TEST_S3_SERVER").as_deref() == Ok("garage")
}

/// The open multipart uploads under `prefix`; `None` where the server does not implement
/// the listing (s3s-fs answers 501, and the sweep does without it there); Garage must list
/// them.
async fn open_uploads(
    s3: &S3Client,
    prefix: &str,
) -> Option<Vec<ferry_store::s3::client::OpenUpload>> {
    match s3.list_multipart(prefix).await {
        Ok(open) => Some(open),
        Err(e) if e.kind == S3ErrorKind::Unsupported => {
            assert!(!on_garage(), "Garage lists multipart uploads: {e}");
            None
        }
        Err(e) => panic!("listing multipart uploads failed: {e}"),
    }
}

#[tokio::test]
async fn objects_round_trip_with_ranges_and_deletes() {
    let (config, s3) = config(&unique());
    config.check(&s3).await.expect("the bucket is usable");
    let key = format!("{}small", config.prefix);
    let data = pattern(100_000, 1);
    s3.put(&key, Body::Bytes(Bytes::from(data.clone())))
        .await
        .unwrap();
    assert_eq!(s3.get_bytes(&key, None).await.unwrap(), data);
    assert_eq!(
        s3.get_bytes(&key, Some(10..20_010)).await.unwrap(),
        &data[10..20_010]
    );
    // A body from a file region, as spooled writes are sent.
    let mut spool = tempfile::NamedTempFile::new().unwrap();
    spool.write_all(&pattern(300_000, 2)).unwrap();
    let from_file = format!("{}from-file", config.prefix);
    s3.put(
        &from_file,
        Body::File {
            path: spool.path().to_owned(),
            offset: 1000,
            len: 200_000,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s3.get_bytes(&from_file, None).await.unwrap(),
        &pattern(300_000, 2)[1000..201_000]
    );
    let listed = s3.list(&config.prefix).await.unwrap();
    let mut keys: Vec<_> = listed.iter().map(|l| l.key.clone()).collect();
    keys.sort();
    assert_eq!(keys, [from_file.clone(), key.clone()]);
    assert_eq!(listed.iter().find(|l| l.key == key).unwrap().size, 100_000);
    s3.delete(&key).await.unwrap();
    s3.delete(&key)
        .await
        .expect("deleting a missing object is fine");
    let gone = s3.get(&key, None).await.unwrap_err();
    assert_eq!(gone.kind, S3ErrorKind::NotFound, "{gone}");
    s3.delete(&from_file).await.unwrap();
    assert!(s3.list(&config.prefix).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_multipart_upload_completes_into_one_object() {
    let (config, s3) = config(&unique());
    let key = format!("{}files/big", config.prefix);
    let id = s3.create_multipart(&key).await.unwrap();
    // Two 5 MiB parts (the minimum) and a short last one, sent out of order.
    let parts = [pattern(5 << 20, 3), pattern(5 << 20, 4), pattern(12_345, 5)];
    let mut etags = vec![String::new(); 3];
    for i in [2usize, 0, 1] {
        etags[i] = s3
            .upload_part(
                &key,
                &id,
                i as u16 + 1,
                Body::Bytes(Bytes::from(parts[i].clone())),
            )
            .await
            .unwrap();
        assert!(!etags[i].is_empty(), "part {} has an ETag", i + 1);
    }
    assert!(
        open_uploads(&s3, &config.prefix)
            .await
            .is_none_or(|open| open.iter().any(|u| u.key == key && u.upload_id == id)),
        "the open upload is listed"
    );
    s3.complete_multipart(&key, &id, &etags).await.unwrap();
    let whole = s3.get_bytes(&key, None).await.unwrap();
    assert_eq!(whole.len(), (10 << 20) + 12_345);
    assert!(whole == parts.concat(), "the object is the parts in order");
    let tail = s3
        .get_bytes(&key, Some((5 << 20) - 10..(5 << 20) + 10))
        .await
        .unwrap();
    assert_eq!(tail, whole[(5 << 20) - 10..(5 << 20) + 10]);
    assert!(
        open_uploads(&s3, &config.prefix)
            .await
            .is_none_or(|open| !open.iter().any(|u| u.upload_id == id)),
        "a completed upload is no longer open"
    );
    s3.delete(&key).await.unwrap();
}

#[tokio::test]
async fn an_aborted_multipart_upload_leaves_nothing() {
    let (config, s3) = config(&unique());
    let key = format!("{}files/abandoned", config.prefix);
    let id = s3.create_multipart(&key).await.unwrap();
    s3.upload_part(&key, &id, 1, Body::Bytes(Bytes::from(pattern(5 << 20, 6))))
        .await
        .unwrap();
    s3.abort_multipart(&key, &id).await.unwrap();
    assert!(
        open_uploads(&s3, &config.prefix)
            .await
            .is_none_or(|open| !open.iter().any(|u| u.upload_id == id)),
        "an aborted upload is no longer open"
    );
    let gone = s3
        .upload_part(&key, &id, 2, Body::Bytes(Bytes::from_static(b"x")))
        .await
        .unwrap_err();
    // NoSuchUpload; s3s-fs says AccessDenied for an upload id it does not know.
    assert!(
        matches!(gone.kind, S3ErrorKind::NotFound | S3ErrorKind::Denied),
        "{gone}"
    );
    assert!(s3.list(&config.prefix).await.unwrap().is_empty());
    match s3.abort_multipart(&key, &id).await {
        Ok(()) => {}
        // s3s-fs answers AccessDenied for an upload id it does not know.
        Err(e) if e.kind == S3ErrorKind::Denied && !on_garage() => {}
        Err(e) => panic!("aborting an upload that is gone should be fine: {e}"),
    }
}

#[tokio::test]
async fn a_missing_bucket_and_wrong_credentials_are_named() {
    let (config, _) = config("");
    let missing = S3Config {
        bucket: format!("no-such-{}", unique()),
        ..config.clone()
    };
    let client = missing.client(|name| std::env::var(name).ok()).unwrap();
    let err = missing.check(&client).await.unwrap_err();
    assert!(err.starts_with("--storage s3://no-such-"), "{err}");
    assert!(err.contains("does not exist"), "{err}");

    let secret = "0000000000000000000000000000000000000000000000000000000000000000";
    let wrong = config
        .client(|name| match name {
            "AWS_SECRET_ACCESS_KEY" => Some(secret.to_owned()),
            other => std::env::var(other).ok(),
        })
        .unwrap();
    let err = config.check(&wrong).await.unwrap_err();
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains(secret), "the secret is not echoed: {err}");

    let unreachable = S3Config {
        endpoint: "http://127.0.0.1:9".parse().unwrap(),
        ..config.clone()
    };
    let client = unreachable.client(|name| std::env::var(name).ok()).unwrap();
    let started = std::time::Instant::now();
    let err = unreachable.check(&client).await.unwrap_err();
    assert!(err.contains("cannot be reached"), "{err}");
    assert!(
        !err.contains("X-Amz-Signature") && !err.contains("X-Amz-Credential"),
        "no signed URL in the message: {err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "gave up after the retry budget, not never"
    );
}
