//! Pacing of Salesforce requests by the org's API usage, so the connector
//! slows down before the daily limit rather than running into it.
//!
//! Every data answer carries `Sforce-Limit-Info: api-usage=used/limit` for
//! the org's rolling 24-hour window, which the connector shares with every
//! other integration of the org. Below `slow_down_at` of the limit the
//! connector sends as fast as its batches fill. Above it, the requests left
//! before the reserve (`reserve` of the limit, kept for the org's other
//! users) are spread over a whole window: with 1,000 requests left, one
//! every 86.4 s. Batches grow meanwhile (up to 200 Tasks a request), so
//! calls keep being logged, only later. With nothing left the connector
//! sends one request per `max_spacing`: each is a full batch, and its answer
//! tells whether the window has freed up.
//!
//! Sans-IO: usage and times in, the next allowed send time out.

use std::time::{Duration, Instant};

use crate::salesforce::ApiUsage;

/// The 24-hour window Salesforce counts API requests in.
pub const WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// When and how much to slow down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingPolicy {
    /// Fraction of the limit (0–1) from which requests are spaced out.
    pub slow_down_at: f64,
    /// Fraction of the limit (0–1) left to the org's other integrations.
    pub reserve: f64,
    /// The longest wait between two requests.
    pub max_spacing: Duration,
}

/// The pacing state of one org.
#[derive(Debug, Clone)]
pub struct Pacer {
    policy: PacingPolicy,
    usage: Option<ApiUsage>,
    last_sent: Option<Instant>,
}

impl Pacer {
    /// A pacer that knows nothing of the org's usage yet.
    pub fn new(policy: PacingPolicy) -> Self {
        Self { policy, usage: None, last_sent: None }
    }

    /// A request is sent at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }

    /// Salesforce reported the org's usage.
    pub fn observe(&mut self, usage: ApiUsage) {
        self.usage = Some(usage);
    }

    /// The shortest time between two requests at the last reported usage;
    /// zero below the slow-down threshold.
    pub fn spacing(&self) -> Duration {
        let Some(ApiUsage { used, limit }) = self.usage else {
            return Duration::ZERO;
        };
        if limit == 0 {
            return self.policy.max_spacing;
        }
        let limit = limit as f64;
        let used = used as f64;
        if used < limit * self.policy.slow_down_at {
            return Duration::ZERO;
        }
        let left = limit * (1.0 - self.policy.reserve) - used;
        if left < 1.0 {
            return self.policy.max_spacing;
        }
        WINDOW.div_f64(left).min(self.policy.max_spacing)
    }

    /// When the next request may go: `None` when it may go at once.
    pub fn next_allowed(&self, now: Instant) -> Option<Instant> {
        let at = self.last_sent? + self.spacing();
        (at > now).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer() -> Pacer {
        Pacer::new(PacingPolicy { slow_down_at: 0.8, reserve: 0.1, max_spacing: Duration::from_secs(600) })
    }

    #[test]
    fn no_pacing_without_usage_or_below_the_threshold() {
        let mut p = pacer();
        let t0 = Instant::now();
        p.sent(t0);
        assert_eq!(p.spacing(), Duration::ZERO);
        assert_eq!(p.next_allowed(t0), None);
        p.observe(ApiUsage { used: 11_999, limit: 15_000 });
        assert_eq!(p.spacing(), Duration::ZERO);
        assert_eq!(p.next_allowed(t0), None);
    }

    #[test]
    fn spreads_what_is_left_before_the_reserve_over_the_window() {
        let mut p = pacer();
        let t0 = Instant::now();
        p.sent(t0);
        // 15,000 × 0.9 − 12,500 = 1,000 requests left: one per 86.4 s.
        p.observe(ApiUsage { used: 12_500, limit: 15_000 });
        assert_eq!(p.spacing(), Duration::from_millis(86_400));
        assert_eq!(p.next_allowed(t0), Some(t0 + Duration::from_millis(86_400)));
        assert_eq!(p.next_allowed(t0 + Duration::from_secs(87)), None);
        // Usage climbing further spaces requests more.
        p.observe(ApiUsage { used: 13_000, limit: 15_000 });
        assert_eq!(p.spacing(), Duration::from_millis(172_800));
    }

    #[test]
    fn at_the_reserve_one_request_per_max_spacing() {
        let mut p = pacer();
        p.observe(ApiUsage { used: 13_500, limit: 15_000 });
        assert_eq!(p.spacing(), Duration::from_secs(600));
        p.observe(ApiUsage { used: 16_000, limit: 15_000 });
        assert_eq!(p.spacing(), Duration::from_secs(600));
        p.observe(ApiUsage { used: 0, limit: 0 });
        assert_eq!(p.spacing(), Duration::from_secs(600));
        // The window freed up: back to full speed.
        p.observe(ApiUsage { used: 100, limit: 15_000 });
        assert_eq!(p.spacing(), Duration::ZERO);
    }
}
