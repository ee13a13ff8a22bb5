//! The S3 server the test command starts (`scripts/s3.sh`): its address, a bucket prefix of
//! each test's own, and a client to look into the bucket behind ferry's back.

use ferry_store::s3::{S3Client, S3Config, S3Options};

/// A variable of the S3 server; missing is a failure, not a skip.
pub fn need(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the S3 tests need a server. Start one with \
             `eval \"$(scripts/s3.sh start garage)\"` (or s3s-fs; `scripts/s3.sh stop` after); \
             scripts/test.sh does this itself"
        ),
    }
}

/// A prefix in the test bucket for one test, and the `serve` arguments that store there.
pub struct Bucket {
    pub prefix: String,
    pub args: Vec<String>,
    pub client: S3Client,
}

impl Bucket {
    pub fn new(tag: &str) -> Bucket {
        let nonce: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let prefix = format!("{tag}-{:x}-{}", nonce, std::process::id());
        let bucket = need("FERRY_TEST_S3_BUCKET");
        let endpoint = need("FERRY_TEST_S3_ENDPOINT");
        need("AWS_ACCESS_KEY_ID");
        let storage = format!("s3://{bucket}/{prefix}");
        let config = S3Config::new(
            &storage,
            &S3Options {
                endpoint: Some(endpoint.clone()),
                ..S3Options::default()
            },
            |name| std::env::var(name).ok(),
        )
        .unwrap();
        let client = config.client(|name| std::env::var(name).ok()).unwrap();
        Bucket {
            prefix: config.prefix,
            args: vec![
                "--storage".into(),
                storage,
                "--s3-endpoint".into(),
                endpoint,
            ],
            client,
        }
    }

    pub fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// The finished object of upload `id`, read straight from the bucket.
    pub fn object(&self, id: &str) -> Vec<u8> {
        let key = format!("{}files/{id}", self.prefix);
        self.block_on(self.client.get_bytes(&key, None))
            .unwrap_or_else(|e| panic!("reading {key} from the bucket: {e}"))
            .to_vec()
    }

    /// Keys of the finished objects in the bucket under this prefix.
    pub fn finished(&self) -> Vec<String> {
        let files = format!("{}files/", self.prefix);
        self.block_on(self.client.list(&files))
            .unwrap_or_else(|e| panic!("listing {files}: {e}"))
            .into_iter()
            .map(|l| l.key[files.len()..].to_owned())
            .collect()
    }
}

/// Files under a node's data directory other than its metadata and lock: none may hold
/// file bytes once its requests ended (spool files are removed when a write ends).
pub fn file_bytes_on_node(data_dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![data_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                // Metadata, the data directory's lock, the download-link key.
                let bookkeeping =
                    name.starts_with("ferry.db") || name == "ferry.lock" || name == "link.key";
                if !bookkeeping && meta.len() > 0 {
                    found.push((path, meta.len()));
                }
            }
        }
    }
    found
}

/// An S3 server of this test's own (the kind the test command runs, `scripts/s3.sh`), for
/// tests that stop it: the shared one must stay up for the others.
pub struct OwnS3 {
    pub dir: String,
    pub endpoint: String,
    pub bucket: String,
}

fn script(args: &[&str]) -> std::process::Output {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::process::Command::new(format!("{root}/scripts/s3.sh"))
        .args(args)
        .output()
        .expect("running scripts/s3.sh")
}

impl OwnS3 {
    pub fn start() -> OwnS3 {
        let kind = need("FERRY_TEST_S3_SERVER");
        let out = script(&["start", &kind]);
        assert!(
            out.status.success(),
            "scripts/s3.sh start {kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exports = String::from_utf8_lossy(&out.stdout).into_owned();
        let var = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} not in {exports}"))
                .to_owned()
        };
        OwnS3 {
            dir: var("FERRY_S3_DIR"),
            endpoint: var("FERRY_TEST_S3_ENDPOINT"),
            bucket: var("FERRY_TEST_S3_BUCKET"),
        }
    }

    /// Stops the server, keeping its data (`halt`) or starts it again (`resume`).
    pub fn ctl(&self, what: &str) {
        let out = script(&[what, &self.dir]);
        assert!(
            out.status.success(),
            "scripts/s3.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `serve` arguments storing under `prefix` here.
    pub fn args(&self, prefix: &str) -> Vec<String> {
        vec![
            "--storage".into(),
            format!("s3://{}/{prefix}", self.bucket),
            "--s3-endpoint".into(),
            self.endpoint.clone(),
        ]
    }
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        let _ = script(&["stop", &self.dir]);
    }
}
