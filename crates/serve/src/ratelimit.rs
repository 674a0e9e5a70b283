//! Per-key, per-snapshot rate limits: a requests bucket and a tokens bucket, each refilling to
//! its per-minute capacity over 60 s. Admission takes one request and the full reservation
//! (prompt + maximum completion) from both buckets at once, under one lock, so concurrent
//! requests can never be admitted beyond the limit; the request later settles to its actual
//! usage and the unused part of the reservation flows back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// Seconds on a monotonic clock. Injected so tests can freeze time and stay exact.
pub trait Clock: Send + Sync {
    fn now(&self) -> f64;
}

/// The process's monotonic clock.
pub struct MonotonicClock(std::time::Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        Self(std::time::Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    capacity: f64,
    level: f64,
    updated: f64,
}

impl Bucket {
    fn full(capacity: u64, now: f64) -> Self {
        Self {
            capacity: capacity as f64,
            level: capacity as f64,
            updated: now,
        }
    }

    fn rate(&self) -> f64 {
        self.capacity / 60.0
    }

    fn refill(&mut self, now: f64) {
        let dt = (now - self.updated).max(0.0);
        self.level = (self.level + dt * self.rate()).min(self.capacity);
        self.updated = now;
    }

    /// Seconds until `amount` is available.
    fn wait_for(&self, amount: f64) -> f64 {
        ((amount - self.level) / self.rate()).max(0.0)
    }

    /// Seconds until the bucket is full again ("resets to its initial state").
    fn reset_in(&self) -> f64 {
        ((self.capacity - self.level) / self.rate()).max(0.0)
    }
}

/// What the headers report after a decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitState {
    pub limit_requests: u64,
    pub remaining_requests: u64,
    pub reset_requests_s: f64,
    pub limit_tokens: u64,
    pub remaining_tokens: u64,
    pub reset_tokens_s: f64,
}

impl LimitState {
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        put("x-ratelimit-limit-requests", self.limit_requests.to_string());
        put("x-ratelimit-remaining-requests", self.remaining_requests.to_string());
        put("x-ratelimit-reset-requests", go_duration(self.reset_requests_s));
        put("x-ratelimit-limit-tokens", self.limit_tokens.to_string());
        put("x-ratelimit-remaining-tokens", self.remaining_tokens.to_string());
        put("x-ratelimit-reset-tokens", go_duration(self.reset_tokens_s));
        h
    }
}

/// Why admission failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Denied {
    /// Out of requests or tokens for now; retry after `retry_after_s`.
    Requests { retry_after_s: f64, state: LimitState },
    Tokens {
        retry_after_s: f64,
        requested: u64,
        state: LimitState,
    },
    /// The reservation alone exceeds the per-minute token limit: retrying cannot help.
    TooLarge { requested: u64, state: LimitState },
}

/// A granted reservation; hand it back to [`RateLimiter::settle`] when the request ends.
#[derive(Debug)]
pub struct Reservation {
    key: (i64, String),
    pub reserved_tokens: u64,
    pub state: LimitState,
}

struct Buckets {
    requests: Bucket,
    tokens: Bucket,
}

pub struct RateLimiter {
    rpm: u64,
    tpm: u64,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<(i64, String), Buckets>>,
}

impl RateLimiter {
    pub fn new(rpm: u64, tpm: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            rpm,
            tpm,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), Buckets>> {
        // Bucket arithmetic cannot panic half-way, so a poisoned map is still consistent.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(b: &Buckets) -> LimitState {
        LimitState {
            limit_requests: b.requests.capacity as u64,
            remaining_requests: b.requests.level.max(0.0).floor() as u64,
            reset_requests_s: b.requests.reset_in(),
            limit_tokens: b.tokens.capacity as u64,
            remaining_tokens: b.tokens.level.max(0.0).floor() as u64,
            reset_tokens_s: b.tokens.reset_in(),
        }
    }

    /// Takes one request and `tokens` tokens for `key_id` on `model`, or neither.
    pub fn admit(&self, key_id: i64, model: &str, tokens: u64) -> Result<Reservation, Denied> {
        let now = self.clock.now();
        let key = (key_id, model.to_string());
        let mut map = self.lock();
        let b = map.entry(key.clone()).or_insert_with(|| Buckets {
            requests: Bucket::full(self.rpm, now),
            tokens: Bucket::full(self.tpm, now),
        });
        b.requests.refill(now);
        b.tokens.refill(now);
        if tokens > self.tpm {
            return Err(Denied::TooLarge {
                requested: tokens,
                state: Self::state(b),
            });
        }
        if b.requests.level < 1.0 {
            return Err(Denied::Requests {
                retry_after_s: b.requests.wait_for(1.0),
                state: Self::state(b),
            });
        }
        if b.tokens.level < tokens as f64 {
            return Err(Denied::Tokens {
                retry_after_s: b.tokens.wait_for(tokens as f64),
                requested: tokens,
                state: Self::state(b),
            });
        }
        b.requests.level -= 1.0;
        b.tokens.level -= tokens as f64;
        Ok(Reservation {
            key,
            reserved_tokens: tokens,
            state: Self::state(b),
        })
    }

    /// Settles a reservation to the tokens actually used: refunds the rest (or charges the
    /// excess, letting the bucket go into debt, should usage ever exceed the reservation).
    pub fn settle(&self, reservation: Reservation, used_tokens: u64) {
        let now = self.clock.now();
        let mut map = self.lock();
        if let Some(b) = map.get_mut(&reservation.key) {
            b.tokens.refill(now);
            b.tokens.level += reservation.reserved_tokens as f64 - used_tokens as f64;
            b.tokens.level = b.tokens.level.min(b.tokens.capacity);
        }
    }
}

/// `1s`, `6m0s`, `12ms`: the duration format of OpenAI's reset headers.
pub fn go_duration(secs: f64) -> String {
    if secs <= 0.0 {
        return "0s".into();
    }
    if secs < 1.0 {
        return format!("{}ms", (secs * 1000.0).ceil() as u64);
    }
    let total = secs.ceil() as u64;
    let (m, s) = (total / 60, total % 60);
    if m == 0 {
        format!("{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock that only moves when told to.
    pub struct ManualClock(AtomicU64);
    impl Clock for ManualClock {
        fn now(&self) -> f64 {
            f64::from_bits(self.0.load(Ordering::SeqCst))
        }
    }
    impl ManualClock {
        fn set(&self, t: f64) {
            self.0.store(t.to_bits(), Ordering::SeqCst);
        }
    }

    #[test]
    fn reserves_settles_and_refills() {
        let clock = Arc::new(ManualClock(AtomicU64::new(0f64.to_bits())));
        let rl = RateLimiter::new(2, 600, clock.clone());
        let r1 = rl.admit(1, "m", 500).unwrap();
        assert_eq!(r1.state.remaining_tokens, 100);
        assert_eq!(r1.state.remaining_requests, 1);
        match rl.admit(1, "m", 200) {
            Err(Denied::Tokens { retry_after_s, .. }) => assert!((retry_after_s - 10.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        rl.settle(r1, 150);
        let r2 = rl.admit(1, "m", 200).unwrap();
        assert_eq!(r2.state.remaining_tokens, 250);
        assert!(matches!(rl.admit(1, "m", 1), Err(Denied::Requests { .. })));
        // Another model is another bucket.
        assert!(rl.admit(1, "other", 1).is_ok());
        assert!(matches!(rl.admit(1, "m", 601), Err(Denied::TooLarge { requested: 601, .. })));
        clock.set(30.0);
        let r3 = rl.admit(1, "m", 1).unwrap();
        assert_eq!(r3.state.remaining_requests, 0);
        assert_eq!(r3.state.remaining_tokens, 549);
    }

    #[test]
    fn duration_format() {
        assert_eq!(go_duration(0.0), "0s");
        assert_eq!(go_duration(0.0123), "13ms");
        assert_eq!(go_duration(1.0), "1s");
        assert_eq!(go_duration(360.0), "6m0s");
    }

    #[test]
    fn headers_are_set() {
        let clock = Arc::new(ManualClock(AtomicU64::new(0f64.to_bits())));
        let rl = RateLimiter::new(200, 40_000, clock);
        let h = rl.admit(7, "m", 1000).unwrap().state.headers();
        assert_eq!(h["x-ratelimit-remaining-tokens"], "39000");
        assert_eq!(h["x-ratelimit-remaining-requests"], "199");
        assert_eq!(h["x-ratelimit-reset-tokens"], "2s");
    }
}
