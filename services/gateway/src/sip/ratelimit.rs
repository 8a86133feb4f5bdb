//! Per-source rate limits on new SIP requests: a token bucket per source
//! address, so one host flooding INVITEs, REGISTERs or OPTIONS cannot crowd
//! out everyone else. Requests over the limit are dropped unanswered (an
//! answer would cost as much as the request) and counted.
//!
//! Sans-IO: the caller passes the time. Memory is bounded: at most
//! `max_tracked` sources are remembered; when full, buckets that have
//! refilled completely are forgotten first (they carry no information).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Limits of the rate limiter.
#[derive(Debug, Clone, Copy)]
pub struct RatePolicy {
    /// Sustained requests per second per source.
    pub per_second: f64,
    /// Requests a source may send at once before the rate applies.
    pub burst: f64,
    pub max_tracked: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets per source address.
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    policy: RatePolicy,
    buckets: HashMap<K, Bucket>,
}

impl<K: std::hash::Hash + Eq> RateLimiter<K> {
    pub fn new(policy: RatePolicy) -> Self {
        RateLimiter { policy, buckets: HashMap::new() }
    }

    /// Takes one token for a request from `ip`; `false` when over the limit.
    pub fn allow(&mut self, ip: K, now: Instant) -> bool {
        let p = self.policy;
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= p.max_tracked {
            self.forget_full(now);
            if self.buckets.len() >= p.max_tracked {
                // Every tracked source is busy: treat the newcomer as one
                // more busy source rather than grow without bound.
                return false;
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket { tokens: p.burst, updated: now });
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * p.per_second).min(p.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn forget_full(&mut self, now: Instant) {
        let p = self.policy;
        self.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * p.per_second < p.burst);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new(RatePolicy { per_second: 10.0, burst: 5.0, max_tracked: 2 })
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate_applies() {
        let mut l = limiter();
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!((0..8).filter(|_| l.allow(ip, t0)).count(), 5);
        assert!(!l.allow(ip, t0 + Duration::from_millis(50)), "half a token refilled");
        assert!(l.allow(ip, t0 + Duration::from_millis(100)));
        assert_eq!((0..10).filter(|_| l.allow(ip, t0 + Duration::from_secs(10))).count(), 5, "refill is capped at the burst");
    }

    #[test]
    fn sources_are_limited_independently() {
        let mut l = limiter();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        while l.allow(a, t0) {}
        assert!(l.allow(b, t0));
    }

    #[test]
    fn memory_is_bounded_and_idle_sources_are_forgotten() {
        let mut l = limiter();
        let t0 = Instant::now();
        let ips: Vec<IpAddr> = (1..=3).map(|i| format!("192.0.2.{i}").parse().unwrap()).collect();
        assert!(l.allow(ips[0], t0));
        assert!(l.allow(ips[1], t0));
        assert!(!l.allow(ips[2], t0), "table full of busy sources");
        assert_eq!(l.tracked(), 2);
        assert!(l.allow(ips[2], t0 + Duration::from_secs(1)), "refilled sources make room");
        assert!(l.tracked() <= 2);
    }
}
