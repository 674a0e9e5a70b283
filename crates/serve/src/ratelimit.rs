//! Per-key, per-snapshot rate limits: a requests bucket and a tokens bucket, each refilling to
//! its per-minute capacity over 60 s. Admission takes one request and the full reservation
//! (prompt + maximum completion) from both buckets at once, under one lock, so concurrent
//! requests can never be admitted beyond the limit; the request later settles to its actual
//! usage and the unused part of the reservation flows back. A request refused after
//! authentication (malformed, too long, unknown model) still takes one request
//! ([`RateLimiter::charge_refused`]), so that refusals are not free.
//!
//! Also the per-address limit of unauthenticated inserts ([`AddressLimiter`], the waitlist).

use std::collections::HashMap;
use std::net::IpAddr;
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

/// A token bucket that refills to `capacity` over `period` seconds.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    capacity: f64,
    period: f64,
    level: f64,
    updated: f64,
}

impl Bucket {
    fn full(capacity: u64, period: f64, now: f64) -> Self {
        Self {
            capacity: capacity as f64,
            period,
            level: capacity as f64,
            updated: now,
        }
    }

    fn per_minute(capacity: u64, now: f64) -> Self {
        Self::full(capacity, 60.0, now)
    }

    fn rate(&self) -> f64 {
        self.capacity / self.period
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

    fn fresh(&self, now: f64) -> Buckets {
        Buckets {
            requests: Bucket::per_minute(self.rpm, now),
            tokens: Bucket::per_minute(self.tpm, now),
        }
    }

    /// Charges one request to `key_id` for a request refused after authentication: to the
    /// bucket of the snapshot it named, or with `None` (no model could be told: the body was
    /// unreadable, or named no model the key may use) to the key's bucket for such requests.
    /// `Err` when that bucket had no request left, which the refusal then reports instead.
    pub fn charge_refused(&self, key_id: i64, snapshot: Option<&str>) -> Result<(), Denied> {
        let now = self.clock.now();
        // Snapshot ids are never empty (the config checks), so "" cannot collide with one.
        let key = (key_id, snapshot.unwrap_or("").to_string());
        let mut map = self.lock();
        let b = map.entry(key).or_insert_with(|| self.fresh(now));
        b.requests.refill(now);
        b.tokens.refill(now);
        if b.requests.level < 1.0 {
            return Err(Denied::Requests {
                retry_after_s: b.requests.wait_for(1.0),
                state: Self::state(b),
            });
        }
        b.requests.level -= 1.0;
        Ok(())
    }

    /// Takes one request and `tokens` tokens for `key_id` on `model`, or neither.
    pub fn admit(&self, key_id: i64, model: &str, tokens: u64) -> Result<Reservation, Denied> {
        let now = self.clock.now();
        let key = (key_id, model.to_string());
        let mut map = self.lock();
        let b = map.entry(key.clone()).or_insert_with(|| self.fresh(now));
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

/// Addresses tracked at once; past this, addresses whose bucket has refilled are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Limits inserts from unauthenticated clients: `per_address` per hour from one client address
/// (IPv6 by its /64, which one host can fill) and `total` per hour from everyone together, so
/// that even many addresses cannot insert without bound.
pub struct AddressLimiter {
    per_address: u64,
    clock: Arc<dyn Clock>,
    total: Mutex<Bucket>,
    addresses: Mutex<HashMap<IpAddr, Bucket>>,
}

impl AddressLimiter {
    pub fn new(per_address: u64, total: u64, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        Self {
            per_address,
            total: Mutex::new(Bucket::full(total, 3600.0, now)),
            clock,
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one insert for `addr` (`None`: the address is unknown, and all such clients
    /// share one allowance); `Err(seconds until one is available)` when there is none.
    pub fn take(&self, addr: Option<IpAddr>) -> Result<(), f64> {
        let now = self.clock.now();
        let addr = addr.map(network_of).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if addresses.len() >= MAX_TRACKED_ADDRESSES && !addresses.contains_key(&addr) {
            addresses.retain(|_, b| {
                b.refill(now);
                b.level < b.capacity
            });
            if addresses.len() >= MAX_TRACKED_ADDRESSES {
                let any = addresses.values().next().copied();
                return Err(any.map_or(3600.0, |b| b.reset_in()));
            }
        }
        let b = addresses.entry(addr).or_insert_with(|| Bucket::full(self.per_address, 3600.0, now));
        b.refill(now);
        if b.level < 1.0 {
            return Err(b.wait_for(1.0));
        }
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        total.refill(now);
        if total.level < 1.0 {
            return Err(total.wait_for(1.0));
        }
        total.level -= 1.0;
        b.level -= 1.0;
        Ok(())
    }
}

/// The unit one client controls: an IPv4 address, or an IPv6 /64.
fn network_of(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
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
    fn refused_requests_take_a_request_but_no_tokens() {
        let clock = Arc::new(ManualClock(AtomicU64::new(0f64.to_bits())));
        let rl = RateLimiter::new(2, 600, clock.clone());
        rl.charge_refused(1, Some("m")).unwrap();
        let r = rl.admit(1, "m", 100).unwrap();
        assert_eq!((r.state.remaining_requests, r.state.remaining_tokens), (0, 500));
        assert!(matches!(rl.charge_refused(1, Some("m")), Err(Denied::Requests { .. })));
        // Requests naming no model share the key's own bucket.
        rl.charge_refused(1, None).unwrap();
        rl.charge_refused(1, None).unwrap();
        match rl.charge_refused(1, None) {
            Err(Denied::Requests { retry_after_s, .. }) => assert!((retry_after_s - 30.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        assert!(rl.charge_refused(2, None).is_ok(), "another key has its own");
    }

    #[test]
    fn address_limiter_counts_per_network_and_in_total() {
        let clock = Arc::new(ManualClock(AtomicU64::new(0f64.to_bits())));
        let limiter = AddressLimiter::new(2, 5, clock.clone());
        let v4 = |d: u8| Some(IpAddr::from([10, 0, 0, d]));
        assert!(limiter.take(v4(1)).is_ok());
        assert!(limiter.take(v4(1)).is_ok());
        let wait = limiter.take(v4(1)).unwrap_err();
        assert!((wait - 1800.0).abs() < 1e-9, "{wait}");
        // One host's IPv6 /64 is one client, however it varies the low bits.
        let v6 = |low: u16| Some(IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, low]));
        assert!(limiter.take(v6(1)).is_ok());
        assert!(limiter.take(v6(2)).is_ok());
        assert!(limiter.take(v6(3)).is_err());
        // The fifth insert of the hour is the last, whoever sends it.
        assert!(limiter.take(v4(2)).is_ok());
        assert!(limiter.take(v4(3)).is_err());
        clock.set(1800.0);
        assert!(limiter.take(v4(1)).is_ok());
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
