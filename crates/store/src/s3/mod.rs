//! File bytes in an S3-compatible bucket (`--storage s3://bucket/prefix`).
//!
//! - [`client`]: the requests, signed by rusty-s3 and sent with reqwest, with retries.
//! - [`S3Config`]: the storage URL and flags, and the start-up check that the bucket exists
//!   and the credentials may use it.
//! - [`S3BlobStore`]: the `BlobStore` over them.
//!
//! The object layout under the prefix (see ARCHITECTURE.md, *Object storage*):
//! `<prefix>files/<id>` is a finished upload (the multipart upload's object) and
//! `<prefix>pieces/<id>/…` hold acknowledged bytes that do not fill a part yet. Nothing ferry
//! writes lives outside the prefix.

pub mod client;
mod store;

pub use client::{Body, S3Client, S3Error, S3ErrorKind};
pub use store::S3BlobStore;
use url::Url;

/// Region used when neither the flag nor the environment names one.
const DEFAULT_REGION: &str = "us-east-1";

/// Where and how to reach the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
    pub endpoint: Url,
    pub region: String,
    pub virtual_hosted: bool,
    /// Every part but the last of the same size (Cloudflare R2).
    pub equal_parts: bool,
}

/// The flags and environment an [`S3Config`] is made from.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// `--s3-endpoint`.
    pub endpoint: Option<String>,
    /// `--s3-region`.
    pub region: Option<String>,
    /// `--s3-virtual-hosted`.
    pub virtual_hosted: bool,
    /// `--s3-equal-parts`.
    pub equal_parts: bool,
}

/// Whether `storage` names a bucket (`s3://…`).
pub fn is_s3_url(storage: &str) -> bool {
    storage.starts_with("s3://")
}

impl S3Config {
    /// Reads `s3://bucket/prefix` and the options; `env` looks up environment variables.
    /// Errors are one sentence naming the flag to fix.
    pub fn new(
        storage: &str,
        opts: &S3Options,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<S3Config, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let rest = storage
            .strip_prefix("s3://")
            .ok_or_else(|| format!("--storage {storage:?} is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(format!(
                "--storage s3://{bucket}/…: {bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|seg| seg == "." || seg == "..")
            || prefix.contains("//")
            || prefix.chars().any(char::is_control)
        {
            return Err(format!(
                "--storage s3://{bucket}/{prefix}: the key prefix may not contain empty, \".\" or \"..\" segments or control characters"
            ));
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let region = opts
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let (endpoint, virtual_hosted) = match opts
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
        {
            // A self-hosted store: path-style unless asked otherwise.
            Some(e) => (
                Url::parse(&e).map_err(|err| {
                    format!("--s3-endpoint {e:?} is not a URL ({err}); write it like http://127.0.0.1:3900")
                })?,
                opts.virtual_hosted,
            ),
            None => (
                Url::parse(&format!("https://s3.{region}.amazonaws.com")).map_err(|_| {
                    format!("--s3-region {region:?} does not make a valid AWS endpoint")
                })?,
                true,
            ),
        };
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(format!(
                "--s3-endpoint {endpoint} must be an http:// or https:// URL with a host"
            ));
        }
        Ok(S3Config {
            bucket: bucket.to_owned(),
            prefix,
            endpoint,
            region,
            virtual_hosted,
            equal_parts: opts.equal_parts,
        })
    }

    /// A client with the credentials of the standard `AWS_*` variables (read by `env`);
    /// both or neither of the key id and secret must be set (neither: unsigned requests, for
    /// a public or anonymous store).
    pub fn client(&self, env: impl Fn(&str) -> Option<String>) -> Result<S3Client, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => Some(match env("AWS_SESSION_TOKEN") {
                Some(token) => rusty_s3::Credentials::new_with_token(key, secret, token),
                None => rusty_s3::Credentials::new(key, secret),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(
                    "--storage s3://…: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
                        .to_owned(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "--storage s3://…: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"
                        .to_owned(),
                );
            }
        };
        S3Client::new(
            self.endpoint.clone(),
            self.virtual_hosted,
            &self.bucket,
            &self.region,
            credentials,
        )
    }

    /// Start-up check: one sentence naming `--storage` and what is wrong when the bucket is
    /// missing, the credentials are refused or the store cannot be reached.
    pub async fn check(&self, client: &S3Client) -> Result<(), String> {
        let at = format!("--storage s3://{}/{}", self.bucket, self.prefix);
        client.check(&self.prefix).await.map_err(|e| match e.kind {
            S3ErrorKind::NoSuchBucket => format!(
                "{at}: bucket {:?} does not exist at {} (create it first)",
                self.bucket, self.endpoint
            ),
            S3ErrorKind::Denied => format!(
                "{at}: the object store at {} refused the credentials (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that the key may use bucket {:?}): {}",
                self.endpoint, self.bucket, e.message
            ),
            S3ErrorKind::Unavailable => format!(
                "{at}: the object store at {} cannot be reached ({}); check --s3-endpoint",
                self.endpoint, e.message
            ),
            _ => format!("{at}: the bucket cannot be used: {}", e.message),
        })
    }
}

/// S3's bucket naming rules (the subset every provider accepts).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(storage: &str, opts: &S3Options, vars: &[(&str, &str)]) -> Result<S3Config, String> {
        S3Config::new(storage, opts, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn storage_urls_and_flags_make_a_config() {
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:3900".into()),
            ..S3Options::default()
        };
        let c = config("s3://uploads/team/a/", &opts, &[("AWS_REGION", "garage")]).unwrap();
        assert_eq!(c.bucket, "uploads");
        assert_eq!(c.prefix, "team/a/");
        assert_eq!(c.region, "garage");
        assert!(!c.virtual_hosted, "an endpoint means path-style");
        let c = config("s3://uploads", &S3Options::default(), &[]).unwrap();
        assert_eq!(c.prefix, "");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.endpoint.as_str(), "https://s3.us-east-1.amazonaws.com/");
        assert!(c.virtual_hosted);
        let flag = S3Options {
            region: Some("eu-west-3".into()),
            ..S3Options::default()
        };
        let c = config(
            "s3://uploads",
            &flag,
            &[("AWS_REGION", "x"), ("AWS_DEFAULT_REGION", "y")],
        )
        .unwrap();
        assert_eq!(
            c.region, "eu-west-3",
            "--s3-region wins over the environment"
        );
        let c = config(
            "s3://uploads",
            &S3Options::default(),
            &[("AWS_DEFAULT_REGION", "y")],
        )
        .unwrap();
        assert_eq!(c.region, "y");
    }

    #[test]
    fn bad_storage_urls_name_the_flag() {
        for bad in [
            "s3://",
            "s3://A_B/x",
            "s3://ab",
            "s3://-ab/x",
            "s3://ok-bucket/../x",
            "s3://ok-bucket/a//b",
        ] {
            let err = config(bad, &S3Options::default(), &[]).unwrap_err();
            assert!(err.starts_with("--storage"), "{bad}: {err}");
        }
        let opts = S3Options {
            endpoint: Some("not a url".into()),
            ..S3Options::default()
        };
        let err = config("s3://uploads", &opts, &[]).unwrap_err();
        assert!(err.starts_with("--s3-endpoint"), "{err}");
    }

    #[test]
    fn half_a_credential_is_refused_without_echoing_it() {
        let c = config("s3://uploads", &S3Options::default(), &[]).unwrap();
        let err = c
            .client(|name| (name == "AWS_ACCESS_KEY_ID").then(|| "AKIDSECRETISH".to_owned()))
            .unwrap_err();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");
        assert!(!err.contains("AKIDSECRETISH"));
        let client = c
            .client(|name| match name {
                "AWS_ACCESS_KEY_ID" => Some("id".into()),
                "AWS_SECRET_ACCESS_KEY" => Some("very-secret".into()),
                _ => None,
            })
            .unwrap();
        assert!(!format!("{client:?}").contains("very-secret"));
    }
}
