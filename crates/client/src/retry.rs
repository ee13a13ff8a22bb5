//! Retries with exponential backoff and jitter, honouring `Retry-After`, bounded in time.
//!
//! The bound is on time *without progress*: every successful request resets the clock, so a
//! long upload over a flaky link keeps going as long as it moves, and gives up only after
//! [`RetryPolicy::give_up_after`] of nothing but failures. That is what a person means by
//! "retry for 5 minutes".

use crate::error::Error;
use rand::Rng;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// First delay; each further failure doubles it, up to `max_delay`.
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Give up after this long without a successful request.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(15),
            give_up_after: Duration::from_secs(300),
        }
    }
}

/// The retry state of one sequence of requests (one part, one chunk, one range).
#[derive(Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    failures: u32,
    since: Instant,
}

impl Retrier {
    pub fn new(policy: &RetryPolicy) -> Retrier {
        Retrier {
            policy: policy.clone(),
            failures: 0,
            since: Instant::now(),
        }
    }

    /// Records a success: the backoff and the give-up clock start over.
    pub fn progress(&mut self) {
        self.failures = 0;
        self.since = Instant::now();
    }

    /// Number of failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a failure: how long to wait before trying again, or the error to give up with
    /// (the error itself when it is not worth retrying, [`Error::GaveUp`] when time is up).
    pub fn next_delay(&mut self, err: Error) -> Result<Duration, Error> {
        if !err.is_retryable() {
            return Err(err);
        }
        self.backoff(err)
    }

    /// Like [`Retrier::next_delay`] for an error the caller knows to be passing (e.g. a
    /// tus 409 whose offset, asked again, had not moved: another request still holds it).
    pub fn backoff(&mut self, err: Error) -> Result<Duration, Error> {
        let exp = self
            .policy
            .initial_delay
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.policy.max_delay);
        self.failures += 1;
        // "Equal jitter": half the step fixed, half random, so that many clients retrying
        // after the same outage spread out but none hammers the server at once.
        let half = exp / 2;
        let jitter = Duration::from_nanos(
            rand::rng().random_range(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX)),
        );
        let waited = self.since.elapsed();
        let left = self.policy.give_up_after.saturating_sub(waited);
        // A server's `Retry-After` wins when it asks for longer (RFC 9110 §10.2.3); when it
        // asks for longer than the time left, waiting is pointless.
        let asked = err.retry_after().unwrap_or_default();
        if left.is_zero() || asked > left {
            return Err(Error::GaveUp {
                waited,
                last: Box::new(err),
            });
        }
        // The last try comes when the time is up, not a backoff step before it.
        Ok((half + jitter).max(asked).min(left))
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// `1h 5m`, `5m`, `42s`, `750ms`: durations as people write them.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = Vec::new();
    if h > 0 {
        out.push(format!("{h}h"));
    }
    if m > 0 {
        out.push(format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push(format!("{s}s"));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(retry_after: Option<Duration>) -> Error {
        Error::Server {
            status: 503,
            code: None,
            message: "busy".into(),
            retry_after,
        }
    }

    #[test]
    fn delays_grow_with_jitter_and_cap() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            give_up_after: Duration::from_secs(3600),
        };
        let mut r = Retrier::new(&policy);
        let mut steps = Vec::new();
        for _ in 0..8 {
            steps.push(r.next_delay(Error::Network("reset".into())).unwrap());
        }
        for (i, d) in steps.iter().enumerate() {
            let full = Duration::from_millis(100 * (1 << i)).min(Duration::from_millis(1000));
            assert!(
                *d >= full / 2 && *d <= full,
                "step {i}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        r.progress();
        assert!(r.next_delay(Error::Network("x".into())).unwrap() <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_is_honoured() {
        let mut r = Retrier::new(&RetryPolicy::default());
        let d = r
            .next_delay(unavailable(Some(Duration::from_secs(7))))
            .unwrap();
        assert_eq!(d, Duration::from_secs(7));
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn permanent_errors_are_not_retried_and_time_runs_out() {
        let mut r = Retrier::new(&RetryPolicy::default());
        let e = Error::Server {
            status: 413,
            code: None,
            message: "too large".into(),
            retry_after: None,
        };
        assert!(matches!(
            r.next_delay(e),
            Err(Error::Server { status: 413, .. })
        ));

        let mut r = Retrier::new(&RetryPolicy {
            give_up_after: Duration::from_secs(5),
            ..RetryPolicy::default()
        });
        let e = r.next_delay(unavailable(Some(Duration::from_secs(60))));
        assert!(matches!(e, Err(Error::GaveUp { .. })), "{e:?}");

        // Delays never run past the bound; once it has passed, the next failure gives up.
        let mut r = Retrier::new(&RetryPolicy {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(10),
            give_up_after: Duration::from_millis(50),
        });
        let d = r.next_delay(Error::Network("x".into())).unwrap();
        assert!(d <= Duration::from_millis(50), "{d:?}");
        std::thread::sleep(Duration::from_millis(60));
        let e = r.next_delay(Error::Network("x".into()));
        assert!(matches!(e, Err(Error::GaveUp { .. })), "{e:?}");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(3725)), "1h 2m 5s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_secs(0)), "0ms");
    }
}
