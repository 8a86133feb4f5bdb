//! Throttling of digest brute force: a source address that fails
//! authentication too often within a window is banned for a while, and
//! everything it sends is dropped unanswered until the ban ends.
//!
//! Sans-IO: the caller passes the time (Unix seconds). Memory is bounded:
//! at most `max_tracked` sources are remembered, the stalest forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;

/// Limits of the guard.
#[derive(Debug, Clone, Copy)]
pub struct GuardPolicy {
    /// Failures within `window_secs` that trigger a ban.
    pub max_failures: u32,
    pub window_secs: u64,
    pub ban_secs: u64,
    pub max_tracked: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: u64,
    failures: u32,
    banned_until: u64,
    last_seen: u64,
}

/// What a failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    Counted { failures: u32 },
    Banned { until: u64 },
}

/// Per-source failure counts and bans.
#[derive(Debug)]
pub struct AuthGuard {
    policy: GuardPolicy,
    sources: HashMap<IpAddr, Entry>,
}

impl AuthGuard {
    pub fn new(policy: GuardPolicy) -> AuthGuard {
        AuthGuard { policy, sources: HashMap::new() }
    }

    /// True while `ip` is banned.
    pub fn is_banned(&self, ip: IpAddr, now: u64) -> bool {
        self.sources.get(&ip).is_some_and(|e| e.banned_until > now)
    }

    /// Counts a failed authentication from `ip`.
    pub fn failure(&mut self, ip: IpAddr, now: u64) -> FailureVerdict {
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.policy.max_tracked {
            self.evict(now);
        }
        let policy = self.policy;
        let e = self.sources.entry(ip).or_insert(Entry { window_start: now, failures: 0, banned_until: 0, last_seen: now });
        e.last_seen = now;
        if e.banned_until > now {
            return FailureVerdict::Banned { until: e.banned_until };
        }
        if now.saturating_sub(e.window_start) >= policy.window_secs {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= policy.max_failures {
            e.banned_until = now + policy.ban_secs;
            e.failures = 0;
            return FailureVerdict::Banned { until: e.banned_until };
        }
        FailureVerdict::Counted { failures: e.failures }
    }

    /// A successful authentication clears the count (not an active ban).
    pub fn success(&mut self, ip: IpAddr) {
        if let Some(e) = self.sources.get_mut(&ip) {
            e.failures = 0;
        }
    }

    /// Sources currently tracked (for the gauge).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn evict(&mut self, now: u64) {
        // Forget everything that is neither banned nor recent, then, if that
        // was not enough, the stalest tenth.
        let window = self.policy.window_secs;
        self.sources.retain(|_, e| e.banned_until > now || now.saturating_sub(e.last_seen) < window);
        if self.sources.len() >= self.policy.max_tracked {
            // Bans are forgotten last.
            let mut by_age: Vec<(bool, u64, IpAddr)> =
                self.sources.iter().map(|(ip, e)| (e.banned_until > now, e.last_seen, *ip)).collect();
            by_age.sort_unstable();
            for (_, _, ip) in by_age.into_iter().take(self.policy.max_tracked / 10 + 1) {
                self.sources.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> AuthGuard {
        AuthGuard::new(GuardPolicy { max_failures: 3, window_secs: 60, ban_secs: 600, max_tracked: 10 })
    }

    #[test]
    fn bans_after_repeated_failures_and_lifts_the_ban_later() {
        let mut g = guard();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(g.failure(ip, 100), FailureVerdict::Counted { failures: 1 });
        assert_eq!(g.failure(ip, 101), FailureVerdict::Counted { failures: 2 });
        assert_eq!(g.failure(ip, 102), FailureVerdict::Banned { until: 702 });
        assert!(g.is_banned(ip, 500));
        assert!(!g.is_banned("192.0.2.8".parse().unwrap(), 500), "other sources are not affected");
        assert!(!g.is_banned(ip, 702));
    }

    #[test]
    fn failures_outside_the_window_and_after_success_do_not_add_up() {
        let mut g = guard();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        g.failure(ip, 0);
        g.failure(ip, 1);
        assert_eq!(g.failure(ip, 100), FailureVerdict::Counted { failures: 1 }, "a new window");
        g.success(ip);
        assert_eq!(g.failure(ip, 101), FailureVerdict::Counted { failures: 1 });
    }

    #[test]
    fn memory_is_bounded_and_bans_survive_eviction() {
        let mut g = guard();
        let banned: IpAddr = "198.51.100.1".parse().unwrap();
        for t in 0..3 {
            g.failure(banned, t);
        }
        for i in 0..1000u32 {
            let ip = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            g.failure(ip, 10);
            assert!(g.tracked() <= 10);
        }
        assert!(g.is_banned(banned, 10), "a flood of new sources does not lift a ban");
    }
}
