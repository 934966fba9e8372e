//! Capped exponential backoff for reconnects.

use std::time::Duration;

/// Capped exponential backoff: `FIRST`, doubling up to `CAP`.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) const FIRST: Duration = Duration::from_millis(250);
    pub(super) const CAP: Duration = Duration::from_secs(30);

    pub(super) fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The wait before the next attempt.
    pub(super) fn take(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        d
    }

    /// After a connection that lasted: start again from `FIRST`.
    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_wait() {
        let mut b = Backoff::new();
        let ms: Vec<u128> = (0..5).map(|_| b.take().as_millis()).collect();
        assert_eq!(ms, vec![250, 500, 1000, 2000, 4000]);
    }

    #[test]
    fn stops_growing_at_the_cap() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..12).map(|_| b.take()).collect();
        assert!(waits.iter().all(|d| *d <= Backoff::CAP));
        // 250 ms · 2^7 = 32 s > 30 s: the eighth wait is capped, and so
        // is every one after it.
        assert_eq!(waits[6], Duration::from_millis(16_000));
        assert!(waits[7..].iter().all(|d| *d == Backoff::CAP));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new();
        for _ in 0..10 {
            b.take();
        }
        b.reset();
        assert_eq!(b.take(), Backoff::FIRST);
        assert_eq!(b.take(), Backoff::FIRST * 2);
    }
}
