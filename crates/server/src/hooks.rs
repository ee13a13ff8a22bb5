//! Hooks over HTTP (`--hook-url`): the engine's upload events ([`ferry_core::hooks`]) POSTed
//! as JSON, signed with `--hook-secret`, filtered by `--hook-events`.
//!
//! Body: `{"id": "<idempotency key>", "type": "<event>", "upload": {"id", "tenant", "size",
//! "offset", "metadata", "url"}}`; header `X-Ferry-Signature`: lowercase hex HMAC-SHA256 of
//! the exact body bytes under the secret.
//!
//! - Blocking events (`pre-create`, `pre-finish`) are sent while the request waits: up to
//!   [`BLOCKING_ATTEMPTS`] attempts, each given [`BLOCKING_TIMEOUT`], a short pause between
//!   them, the same body every time. A 2xx allows (or rejects, or amends, by its JSON); no
//!   2xx at all is [`HookError::Unavailable`].
//! - Non-blocking events are written to `<data-dir>/hooks/<sequence>-<type>.json` (fsync of
//!   the file and of the directory) before the engine goes on, then delivered in the
//!   background: in order per upload, retried with exponential backoff for up to
//!   [`GIVE_UP_AFTER`] with the same body (and `id`), the file removed after a 2xx. Files
//!   left by a previous process are delivered at start. An event still failing after that
//!   is moved to `hooks/failed/` and logged, never silently dropped.
//! - `post-receive` is throttled per upload: at most one per second; progress within the
//!   second is reported once the second is over (the latest state), and right before the
//!   upload's next `pre-finish`, `post-finish` or `post-terminate`, so the last progress of
//!   every request is always reported, in order.

use crate::config::{ServeArgs, redact_url};
use anyhow::bail;
use ferry_core::hooks::{EventKind, HookError, Hooks, MetadataChanges, event_metadata};
use ferry_core::upload::Upload;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Attempts of a blocking event before the request is answered 503 `hook_unavailable`.
pub const BLOCKING_ATTEMPTS: u32 = 3;
/// How long one attempt of a blocking event may take.
pub const BLOCKING_TIMEOUT: Duration = Duration::from_secs(3);
/// Pauses between the attempts of a blocking event.
const BLOCKING_PAUSES: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(500)];
/// How long one delivery of a queued event may take.
const QUEUED_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a queued event: first after 1 s, doubling up to 5 minutes, for about an hour.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
/// Queued events delivered at once (over all uploads).
const DELIVERIES_AT_ONCE: usize = 16;
/// At most one post-receive per upload per this long.
const RECEIVE_EVERY: Duration = Duration::from_secs(1);
/// How long a pre-finish waits for the upload's queued events to be delivered first (so a
/// receiver sees them in order); a receiver that is down does not hold completion longer.
const ORDER_WAIT: Duration = Duration::from_secs(3);
/// Longest message of a rejection passed on to the client.
const MAX_MESSAGE: usize = 1000;

/// `--hook-url`, `--hook-secret`, `--hook-events`, checked.
#[derive(Clone)]
pub struct HookConfig {
    url: reqwest::Url,
    secret: Option<Vec<u8>>,
    events: BTreeSet<EventKind>,
    /// `--public-url` without its trailing `/`, or empty: `upload.url` is then a path.
    base: String,
    /// With authentication on, the signer of download links: `upload.url` is then a signed
    /// link that downloads without credentials, as the owner's own URL is.
    links: Option<Arc<crate::links::LinkSigner>>,
}

impl std::fmt::Debug for HookConfig {
    // The secret never reaches a log, and a URL's password neither.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookConfig")
            .field("url", &redact_url(self.url.as_str()))
            .field("signed", &self.secret.is_some())
            .field("events", &self.events)
            .finish()
    }
}

impl HookConfig {
    /// Signs the `upload.url` of events with `links` (authentication is on).
    pub fn signing_links(mut self, links: Arc<crate::links::LinkSigner>) -> HookConfig {
        self.links = Some(links);
        self
    }

    /// `None` without `--hook-url`. Errors name the flag (and never the secret).
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Option<HookConfig>> {
        let Some(url) = args.hook_url.as_deref().filter(|u| !u.trim().is_empty()) else {
            if args.hook_events.is_some() {
                bail!("--hook-events needs --hook-url, the address events are sent to");
            }
            if args.hook_secret.is_some() {
                bail!("--hook-secret needs --hook-url, the address events are sent to");
            }
            return Ok(None);
        };
        let parsed = reqwest::Url::parse(url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        let Some(url) = parsed else {
            bail!(
                "--hook-url {}: expected an http:// or https:// URL, like http://127.0.0.1:9000/ferry",
                redact_url(url)
            );
        };
        let events = match &args.hook_events {
            None => EventKind::ALL.into_iter().collect(),
            Some(list) => parse_events(list)?,
        };
        let secret = match args.hook_secret.as_deref() {
            Some("") => bail!("--hook-secret is empty; give a key, or leave the flag out"),
            Some(s) => Some(s.as_bytes().to_vec()),
            None => None,
        };
        let base = args
            .public_url
            .as_deref()
            .map(|b| b.trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(Some(HookConfig {
            url,
            secret,
            events,
            base,
            links: None,
        }))
    }
}

/// `--hook-events`: names separated by commas, each one of [`EventKind::ALL`].
fn parse_events(list: &str) -> anyhow::Result<BTreeSet<EventKind>> {
    let all = || {
        EventKind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = BTreeSet::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match EventKind::parse(&name.to_ascii_lowercase()) {
            Some(k) => {
                out.insert(k);
            }
            None => bail!(
                "--hook-events: unknown event {name:?}; use one or more of {} separated by commas",
                all()
            ),
        }
    }
    if out.is_empty() {
        bail!(
            "--hook-events is empty; use one or more of {} separated by commas, or leave it out for all",
            all()
        );
    }
    Ok(out)
}

/// The HTTP implementation of [`Hooks`]; install it with `Engine::set_hooks`.
pub struct HttpHooks {
    shared: Arc<Shared>,
}

struct Shared {
    cfg: HookConfig,
    client: reqwest::Client,
    /// `<data-dir>/hooks`: one file per queued event.
    dir: PathBuf,
    /// Orders queued files: nanoseconds since the epoch, strictly increasing.
    seq: AtomicU64,
    /// Queued events per upload, delivered in order by one task per upload.
    lanes: Mutex<HashMap<String, VecDeque<Pending>>>,
    /// Woken whenever an upload's queue empties.
    drained: tokio::sync::Notify,
    /// post-receive throttling per upload.
    throttle: Mutex<HashMap<String, Throttle>>,
    permits: tokio::sync::Semaphore,
}

struct Pending {
    /// The queued file; `None` when it could not be written (delivered from memory).
    path: Option<PathBuf>,
    body: Arc<[u8]>,
    kind: String,
}

struct Throttle {
    last: Instant,
    /// Progress to report once the second is over.
    deferred: Option<Box<Upload>>,
    timer: bool,
}

impl HttpHooks {
    /// Creates `<data-dir>/hooks` and starts delivering the events a previous process left
    /// queued there. Needs a Tokio runtime.
    pub fn start(cfg: HookConfig, data_dir: &Path) -> anyhow::Result<HttpHooks> {
        let dir = data_dir.join("hooks");
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("creating the hook queue {}: {e}", dir.display()))?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(BLOCKING_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("--hook-url: cannot build the HTTP client: {e}"))?;
        let now = now_nanos();
        let shared = Arc::new(Shared {
            cfg,
            client,
            dir,
            seq: AtomicU64::new(now),
            lanes: Mutex::default(),
            drained: tokio::sync::Notify::new(),
            throttle: Mutex::default(),
            permits: tokio::sync::Semaphore::new(DELIVERIES_AT_ONCE),
        });
        let pending = load_pending(&shared.dir)?;
        if !pending.is_empty() {
            tracing::info!(
                events = pending.len(),
                "delivering hook events queued before the last stop"
            );
        }
        for (seq, upload, p) in pending {
            shared.seq.fetch_max(seq + 1, Ordering::Relaxed);
            shared.push(upload, p);
        }
        tracing::info!(url = %redact_url(shared.cfg.url.as_str()), events = ?shared.cfg.events.iter().map(|k| k.name()).collect::<Vec<_>>(), signed = shared.cfg.secret.is_some(), "sending upload events to the hook URL");
        Ok(HttpHooks { shared })
    }
}

#[async_trait::async_trait]
impl Hooks for HttpHooks {
    fn wants(&self, kind: EventKind) -> bool {
        self.shared.cfg.events.contains(&kind)
    }

    async fn pre_create(&self, upload: &Upload) -> Result<Option<MetadataChanges>, HookError> {
        let answer = self.shared.ask(EventKind::PreCreate, upload).await?;
        let Some(Value::Object(meta)) = answer.get("metadata") else {
            return Ok(None);
        };
        let changes = meta
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                (k.clone(), v)
            })
            .collect();
        Ok(Some(changes))
    }

    async fn pre_finish(&self, upload: &Upload) -> Result<(), HookError> {
        let id = upload.id.to_string();
        // What the receiver was told about this upload comes first.
        self.shared.flush_receive(&id, false).await;
        self.shared.wait_drained(&id, ORDER_WAIT).await;
        self.shared
            .ask(EventKind::PreFinish, upload)
            .await
            .map(drop)
    }

    async fn notify(&self, kind: EventKind, upload: &Upload) {
        let s = &self.shared;
        match kind {
            EventKind::PostReceive => s.receive(upload).await,
            EventKind::PostFinish | EventKind::PostTerminate => {
                s.flush_receive(&upload.id.to_string(), true).await;
                s.enqueue(kind, upload).await;
            }
            _ => s.enqueue(kind, upload).await,
        }
    }
}

impl Shared {
    /// The event's body: `{"id", "type", "upload"}`.
    fn body(&self, kind: EventKind, u: &Upload) -> Vec<u8> {
        let url = u.is_complete().then(|| {
            let path = format!("/files/{}", u.id);
            match &self.cfg.links {
                Some(links) => format!("{}{}", self.cfg.base, links.sign(&path)),
                None => format!("{}{path}", self.cfg.base),
            }
        });
        let body = json!({
            "id": ferry_core::hooks::new_event_id(),
            "type": kind.name(),
            "upload": {
                "id": u.id.to_string(),
                "tenant": u.owner,
                "size": u.length,
                "offset": u.held.covered(),
                "metadata": event_metadata(u),
                "url": url,
            },
        });
        serde_json::to_vec(&body).expect("JSON values serialise")
    }

    fn request(&self, kind: &str, body: &Arc<[u8]>, timeout: Duration) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .post(self.cfg.url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-ferry-event", kind)
            .body(reqwest::Body::from(bytes::Bytes::copy_from_slice(body)));
        if let Some(key) = &self.cfg.secret {
            req = req.header("x-ferry-signature", sign(key, body));
        }
        req
    }

    /// A blocking event: the receiver's JSON answer (`Null` when it sent none) on a 2xx,
    /// its rejection, or `Unavailable` after the quick retries.
    async fn ask(&self, kind: EventKind, u: &Upload) -> Result<Value, HookError> {
        let body: Arc<[u8]> = self.body(kind, u).into();
        let mut last = String::new();
        for attempt in 0..BLOCKING_ATTEMPTS {
            if attempt > 0 {
                let pause = BLOCKING_PAUSES[(attempt as usize - 1).min(BLOCKING_PAUSES.len() - 1)];
                tokio::time::sleep(pause).await;
            }
            let resp = self
                .request(kind.name(), &body, BLOCKING_TIMEOUT)
                .send()
                .await;
            let resp = match resp {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    last = format!("answered {}", r.status());
                    continue;
                }
                Err(e) => {
                    last = describe(&e);
                    continue;
                }
            };
            let text = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = describe(&e);
                    continue;
                }
            };
            let answer: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
            if answer.get("reject").and_then(Value::as_bool) == Some(true) {
                let status = answer
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|s| (400..500).contains(s))
                    .unwrap_or(403);
                let message = answer
                    .get("message")
                    .and_then(Value::as_str)
                    .map(clean_message)
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| {
                        format!(
                            "the upload was refused by the server's {} hook",
                            kind.name()
                        )
                    });
                tracing::info!(id = %u.id, event = kind.name(), status, "upload hook rejected the request");
                return Err(HookError::Rejected { status, message });
            }
            return Ok(answer);
        }
        tracing::warn!(id = %u.id, event = kind.name(), url = %redact_url(self.cfg.url.as_str()), why = %last, "upload hook unavailable");
        Err(HookError::Unavailable)
    }

    /// Writes the event to the queue (durably) and hands it to its upload's delivery task.
    async fn enqueue(self: &Arc<Self>, kind: EventKind, u: &Upload) {
        let body: Arc<[u8]> = self.body(kind, u).into();
        let seq = self.next_seq();
        let path = self.dir.join(format!("{seq:020}-{}.json", kind.name()));
        let written = {
            let (path, body) = (path.clone(), body.clone());
            tokio::task::spawn_blocking(move || write_durably(&path, &body)).await
        };
        let path = match written {
            Ok(Ok(())) => Some(path),
            Ok(Err(e)) => {
                tracing::warn!(id = %u.id, event = kind.name(), error = %e, "could not queue a hook event on disk; delivering it from memory only");
                None
            }
            Err(e) => {
                tracing::warn!(id = %u.id, event = kind.name(), error = %e, "could not queue a hook event on disk; delivering it from memory only");
                None
            }
        };
        self.push(
            u.id.to_string(),
            Pending {
                path,
                body,
                kind: kind.name().to_owned(),
            },
        );
    }

    fn next_seq(&self) -> u64 {
        let now = now_nanos();
        // Strictly increasing, also within one nanosecond and after a clock step back.
        let prev = self
            .seq
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some(cur.max(now) + 1)
            })
            .unwrap_or(now);
        prev.max(now) + 1
    }

    /// Appends to the upload's queue; starts its delivery task when it had none.
    fn push(self: &Arc<Self>, upload: String, p: Pending) {
        let start = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            let lane = lanes.entry(upload.clone()).or_default();
            lane.push_back(p);
            lane.len() == 1
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.run_lane(upload).await });
        }
    }

    /// Delivers one upload's queued events in order; ends when its queue is empty.
    async fn run_lane(self: Arc<Self>, upload: String) {
        loop {
            let next = {
                let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
                lanes.get(&upload).and_then(|l| {
                    l.front()
                        .map(|p| (p.path.clone(), p.body.clone(), p.kind.clone()))
                })
            };
            let Some((path, body, kind)) = next else {
                break;
            };
            self.deliver(&upload, path.as_deref(), &body, &kind).await;
            let empty = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
                let lane = lanes.entry(upload.clone()).or_default();
                lane.pop_front();
                if lane.is_empty() {
                    lanes.remove(&upload);
                    true
                } else {
                    false
                }
            };
            if empty {
                self.drained.notify_waiters();
                break;
            }
        }
    }

    /// Sends one queued event until a 2xx, with exponential backoff, for up to
    /// [`GIVE_UP_AFTER`]; then removes its file (or moves it to `failed/`).
    async fn deliver(&self, upload: &str, path: Option<&Path>, body: &Arc<[u8]>, kind: &str) {
        let started = Instant::now();
        let mut pause = FIRST_RETRY;
        loop {
            let outcome = {
                let _permit = self.permits.acquire().await;
                match self.request(kind, body, QUEUED_TIMEOUT).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("answered {}", r.status())),
                    Err(e) => Err(describe(&e)),
                }
            };
            match outcome {
                Ok(()) => {
                    if let Some(p) = path
                        && let Err(e) = std::fs::remove_file(p)
                    {
                        tracing::warn!(file = %p.display(), error = %e, "could not remove a delivered hook event");
                    }
                    return;
                }
                Err(why) if started.elapsed() < GIVE_UP_AFTER => {
                    tracing::debug!(upload, event = kind, %why, retry_in_s = pause.as_secs(), "hook delivery failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY);
                }
                Err(why) => {
                    let kept = path.map(|p| {
                        let failed = self.dir.join("failed");
                        let to = failed.join(p.file_name().unwrap_or_default());
                        match std::fs::create_dir_all(&failed)
                            .and_then(|()| std::fs::rename(p, &to))
                        {
                            Ok(()) => to.display().to_string(),
                            Err(_) => p.display().to_string(),
                        }
                    });
                    tracing::warn!(upload, event = kind, %why, kept = kept.as_deref().unwrap_or("nowhere"), "gave up delivering a hook event after an hour of retries");
                    return;
                }
            }
        }
    }

    /// Waits until the upload has no queued event left, for at most `within`.
    async fn wait_drained(&self, upload: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let busy = self
                .lanes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(upload);
            if !busy {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// post-receive: at most one per upload per [`RECEIVE_EVERY`]; within it, the latest
    /// progress is reported when it is over.
    async fn receive(self: &Arc<Self>, u: &Upload) {
        let id = u.id.to_string();
        let now = Instant::now();
        let send_now = {
            let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() > 4096 {
                t.retain(|_, v| v.timer || v.last.elapsed() < RECEIVE_EVERY * 2);
            }
            match t.get_mut(&id) {
                Some(entry) if entry.last.elapsed() < RECEIVE_EVERY => {
                    entry.deferred = Some(Box::new(u.clone()));
                    if !entry.timer {
                        entry.timer = true;
                        let at = entry.last + RECEIVE_EVERY;
                        let me = self.clone();
                        let id = id.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep_until(at.into()).await;
                            me.flush_receive(&id, false).await;
                        });
                    }
                    false
                }
                Some(entry) => {
                    entry.last = now;
                    true
                }
                None => {
                    t.insert(
                        id,
                        Throttle {
                            last: now,
                            deferred: None,
                            timer: false,
                        },
                    );
                    true
                }
            }
        };
        if send_now {
            self.enqueue(EventKind::PostReceive, u).await;
        }
    }

    /// Queues the upload's deferred post-receive, if any; `forget`: the upload is done, its
    /// throttle goes too.
    async fn flush_receive(self: &Arc<Self>, id: &str, forget: bool) {
        let deferred = {
            let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
            let deferred = t.get_mut(id).and_then(|entry| {
                entry.timer = false;
                let d = entry.deferred.take();
                if d.is_some() {
                    entry.last = Instant::now();
                }
                d
            });
            if forget {
                t.remove(id);
            }
            deferred
        };
        if let Some(u) = deferred {
            self.enqueue(EventKind::PostReceive, &u).await;
        }
    }
}

/// Lowercase hex HMAC-SHA256 of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A rejection's message as a client may see it: one line, printable, bounded.
fn clean_message(m: &str) -> String {
    let one_line: String = m
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    match trimmed.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => trimmed[..cut].to_owned(),
        None => trimmed.to_owned(),
    }
}

/// Why a request failed, without the URL (it may carry credentials).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Writes `body` to `path` so that it survives a crash once this returns: a temporary file,
/// fsynced, renamed into place, the directory fsynced.
fn write_durably(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The events a previous process queued, oldest first: (sequence, upload id, event).
/// Half-written temporary files (a crash before the rename) were never queued: removed.
fn load_pending(dir: &Path) -> anyhow::Result<Vec<(u64, String, Pending)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading the hook queue {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let Some((seq, kind)) = stem.split_once('-') else {
            continue;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            continue;
        };
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable queued hook event");
                continue;
            }
        };
        let upload = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["upload"]["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push((
            seq,
            upload,
            Pending {
                path: Some(path),
                body: body.into(),
                kind: kind.to_owned(),
            },
        ));
    }
    out.sort_by_key(|(seq, _, _)| *seq);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_unknown_names_are_refused() {
        let set = parse_events("post-finish, pre-create").unwrap();
        assert_eq!(
            set.into_iter().collect::<Vec<_>>(),
            vec![EventKind::PreCreate, EventKind::PostFinish]
        );
        let e = parse_events("post-finish,post-upload")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--hook-events") && e.contains("post-upload"),
            "{e}"
        );
        assert!(parse_events(" , ").is_err());
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
