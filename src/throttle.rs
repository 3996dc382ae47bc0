//! A shared rate limit on rows and bytes per second across all workers.
//!
//! Each worker reports what it read; the limiter computes when the total would be within the
//! limit and sleeps until then. Zero means unlimited.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rows/bytes-per-second limiter shared by all workers.
#[derive(Debug)]
pub struct Throttle {
    rows_per_sec: u64,
    bytes_per_sec: u64,
    state: Mutex<(Instant, u64, u64)>,
}

impl Throttle {
    /// A limiter; 0 disables a limit.
    pub fn new(rows_per_sec: u64, bytes_per_sec: u64) -> Throttle {
        Throttle {
            rows_per_sec,
            bytes_per_sec,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// Any limit at all?
    pub fn is_active(&self) -> bool {
        self.rows_per_sec > 0 || self.bytes_per_sec > 0
    }

    /// Accounts `rows` and `bytes` and returns how long the caller must wait.
    pub fn account(&self, rows: u64, bytes: u64) -> Duration {
        if !self.is_active() {
            return Duration::ZERO;
        }
        let Ok(mut st) = self.state.lock() else {
            return Duration::ZERO;
        };
        st.1 += rows;
        st.2 += bytes;
        let secs = |done: u64, rate: u64| {
            if rate == 0 {
                0.0
            } else {
                done as f64 / rate as f64
            }
        };
        let due = secs(st.1, self.rows_per_sec).max(secs(st.2, self.bytes_per_sec));
        let at = st.0 + Duration::from_secs_f64(due);
        at.saturating_duration_since(Instant::now())
    }

    /// Accounts and sleeps as long as needed.
    pub async fn consume(&self, rows: u64, bytes: u64) {
        let wait = self.account(rows, bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let t = Throttle::new(0, 0);
        assert_eq!(t.account(1_000_000, 1 << 30), Duration::ZERO);
    }

    #[test]
    fn rows_limit_asks_to_wait() {
        let t = Throttle::new(100, 0);
        let w = t.account(200, 0);
        assert!(
            w > Duration::from_millis(1900) && w <= Duration::from_secs(2),
            "{w:?}"
        );
        let t = Throttle::new(0, 1000);
        let w = t.account(1, 500);
        assert!(w > Duration::from_millis(400), "{w:?}");
    }
}
