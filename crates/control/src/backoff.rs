//! Polls whose pace follows how long the wait has lasted: a tenth of it,
//! from 100 ms up to a ceiling. What is ready soon (an instance healthy a
//! second after it came back, a drain with nothing in flight) is seen
//! within 100 ms or so; what takes long costs few calls; and however long
//! the wait, it is seen at most about a tenth late. Every wait of a batch
//! polls this way instead of sleeping a fixed interval, so a batch ends
//! close to when what it waits on is ready.

use std::time::{Duration, Instant};

/// The shortest pause between polls.
pub const FIRST: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct Backoff {
    started: Instant,
    max: Duration,
}

impl Backoff {
    /// Pauses of a tenth of the time waited so far, between [`FIRST`] (or
    /// `max`, if shorter) and `max`.
    pub fn up_to(max: Duration) -> Self {
        Self {
            started: Instant::now(),
            max,
        }
    }

    /// The pause after `waited`.
    pub fn pause_after(&self, waited: Duration) -> Duration {
        (waited / 10).clamp(FIRST.min(self.max), self.max)
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.pause_after(self.started.elapsed())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_is_a_tenth_of_the_wait_so_far_within_its_bounds() {
        let b = Backoff::up_to(Duration::from_secs(5));
        let at = |s: f64| b.pause_after(Duration::from_secs_f64(s)).as_millis();
        assert_eq!(
            [at(0.0), at(0.5), at(2.0), at(10.0), at(49.0), at(600.0)],
            [100, 100, 200, 1000, 4900, 5000]
        );
        let short = Backoff::up_to(Duration::from_millis(50));
        assert_eq!(short.pause_after(Duration::ZERO), Duration::from_millis(50));
    }
}
