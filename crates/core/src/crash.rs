//! Named crash points, for tests that kill the server between two steps of a sequence that
//! touches both files and metadata (SPEC §4).
//!
//! Every multi-step sequence (staging and placing a chunk, publishing, concatenation, delete
//! and expiry, recovery) calls [`point`] between its steps, and the file-system backend
//! reports the directory operations it performs with [`event`]. Without the `crash-points`
//! cargo feature both are empty inline functions: nothing is evaluated, the release binary
//! carries no trace of them. With the feature (the test build of the `ferry` binary), two
//! environment variables, read once, drive them:
//!
//! - `FERRY_CRASH_AT=<name>` or `<name>#<n>`: the process aborts (no destructor, no flush, no
//!   commit: what `kill -9` leaves on disk) the first time, or the `n`th time, execution
//!   reaches the point `<name>`;
//! - `FERRY_CRASH_TRACE=<path>`: every point and event reached is appended to `<path>` as one
//!   line, `<name>` or `<name> <detail>`, so a test can list the points a sequence passes and
//!   check the order of file-system operations (a new name is durable only once its
//!   directory is fsynced, before the metadata refers to it).

/// Marks a crash point: the process aborts here when `FERRY_CRASH_AT` names it.
#[inline(always)]
pub fn point(name: &'static str) {
    #[cfg(feature = "crash-points")]
    imp::reach(name, None);
    #[cfg(not(feature = "crash-points"))]
    let _ = name;
}

/// Records an operation (`detail` says on what) and makes it a crash point as well. The
/// detail is computed only when a trace is being written.
#[inline(always)]
pub fn event(name: &'static str, detail: impl FnOnce() -> String) {
    #[cfg(feature = "crash-points")]
    imp::reach(name, Some(Box::new(detail)));
    #[cfg(not(feature = "crash-points"))]
    let _ = (name, detail);
}

#[cfg(feature = "crash-points")]
mod imp {
    use std::fs::File;
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    struct Config {
        /// The point to abort at and at which of its hits (1-based).
        at: Option<(String, u64)>,
        hits: AtomicU64,
        trace: Option<Mutex<File>>,
    }

    fn config() -> &'static Config {
        static CONFIG: OnceLock<Config> = OnceLock::new();
        CONFIG.get_or_init(|| {
            let at = std::env::var("FERRY_CRASH_AT")
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| match v.rsplit_once('#') {
                    Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
                    None => (v, 1),
                });
            let trace = std::env::var_os("FERRY_CRASH_TRACE").map(|p| {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .unwrap_or_else(|e| panic!("FERRY_CRASH_TRACE {}: {e}", p.display()));
                Mutex::new(f)
            });
            Config {
                at,
                hits: AtomicU64::new(0),
                trace,
            }
        })
    }

    pub(super) fn reach(name: &'static str, detail: Option<Box<dyn FnOnce() -> String + '_>>) {
        let cfg = config();
        if let Some(trace) = &cfg.trace {
            let line = match detail {
                Some(d) => format!("{name} {}\n", d()),
                None => format!("{name}\n"),
            };
            let mut f = trace.lock().unwrap_or_else(|e| e.into_inner());
            // One write per line on an O_APPEND file: lines never interleave.
            let _ = f.write_all(line.as_bytes());
        }
        if let Some((at, n)) = &cfg.at
            && at == name
            && cfg.hits.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            let _ = writeln!(
                std::io::stderr(),
                "ferry: crash point {name} reached, aborting"
            );
            std::process::abort();
        }
    }
}
