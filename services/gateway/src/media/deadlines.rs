//! One heap of per-key deadlines for an event loop (the media threads, the
//! WebRTC edge): each key keeps the deadline it is armed for, and an entry
//! whose deadline moved since is stale and skipped when it comes up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines by `u64` key.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Deadlines {
    /// The earliest deadline, stale or not (waiting until then is safe).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Sets `key`'s deadline to `next`, `armed` being the one it has: a new
    /// entry only when it changed.
    pub(crate) fn arm(&mut self, key: u64, armed: &mut Option<Instant>, next: Option<Instant>) {
        if next != *armed {
            *armed = next;
            if let Some(at) = next {
                self.heap.push(Reverse((at, key)));
            }
        }
    }

    /// An entry (at, key) due at `now` that is not armed elsewhere, e.g. a
    /// one-off timer of a key with no `armed` of its own.
    pub(crate) fn push(&mut self, key: u64, at: Instant) {
        self.heap.push(Reverse((at, key)));
    }

    /// The entries due at `now`, earliest first, at most as many as the
    /// heap held when called: a key whose deadline stays in the past cannot
    /// hold the loop; it comes round again after the next wait. The caller
    /// skips stale entries (its `armed` differs) and clears `armed` of the
    /// others before handling them.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(Instant, u64)> {
        let mut due = Vec::new();
        for _ in 0..self.heap.len() {
            match self.heap.peek() {
                Some(&Reverse((at, key))) if at <= now => {
                    self.heap.pop();
                    due.push((at, key));
                }
                _ => break,
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_moved_deadline_leaves_a_stale_entry_and_only_due_ones_come_out() {
        let t = Instant::now();
        let mut d = Deadlines::default();
        let mut armed = None;
        d.arm(7, &mut armed, Some(t + Duration::from_millis(10)));
        d.arm(7, &mut armed, Some(t + Duration::from_millis(10)));
        d.arm(7, &mut armed, Some(t + Duration::from_millis(30)));
        d.push(9, t + Duration::from_millis(20));
        assert_eq!(d.next(), Some(t + Duration::from_millis(10)));
        let due = d.due(t + Duration::from_millis(25));
        assert_eq!(due, vec![(t + Duration::from_millis(10), 7), (t + Duration::from_millis(20), 9)]);
        // The first entry of 7 is stale: 7 is armed for 30 ms now.
        assert_ne!(Some(due[0].0), armed);
        assert_eq!(d.due(t + Duration::from_millis(30)), vec![(t + Duration::from_millis(30), 7)]);
        assert_eq!(d.next(), None);
    }
}
