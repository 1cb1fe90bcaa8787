//! The `Clock` port: the only way the server learns the time or waits for
//! it, so that deadlines can be tested with time a test moves by hand.

use std::time::Duration;

use airlock_core::Timestamp;
use tokio::sync::watch;

/// The only source of the current time outside tests, and what the
/// scheduler sleeps on.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;

    /// Returns once [`Clock::now`] has reached `deadline`.
    async fn sleep_until(&self, deadline: Timestamp) {
        tokio::time::sleep(self.now().until(deadline)).await;
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(clippy::disallowed_methods, reason = "the one production clock")]
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp::from_unix_millis(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// Time that moves only when told to, for tests of deadlines that span
/// hours: whoever sleeps on it wakes when [`ManualClock::advance`] passes
/// their deadline, however little real time went by.
pub struct ManualClock {
    now: watch::Sender<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: watch::Sender::new(start),
        }
    }

    /// Moves time forward by `by` and wakes every sleeper now due.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now = now.plus(by));
    }

    /// Moves time forward to `to`; a time already passed changes nothing.
    pub fn advance_to(&self, to: Timestamp) {
        self.now.send_if_modified(|now| {
            let later = to > *now;
            if later {
                *now = to;
            }
            later
        });
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        let mut now = self.now.subscribe();
        // The sender lives as long as `self`, so this cannot fail while
        // anyone can still be waiting on it.
        let _ = now.wait_for(|now| *now >= deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleeper_wakes_only_once_time_is_moved_past_its_deadline() {
        let clock = std::sync::Arc::new(ManualClock::new(Timestamp::from_unix_millis(0)));
        let deadline = Timestamp::from_unix_millis(3_600_000);
        let sleeper = {
            let clock = std::sync::Arc::clone(&clock);
            tokio::spawn(async move { clock.sleep_until(deadline).await })
        };
        clock.advance(Duration::from_secs(1800));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance_to(Timestamp::from_unix_millis(1000));
        assert_eq!(clock.now(), Timestamp::from_unix_millis(1_800_000));
        clock.advance_to(deadline);
        assert!(tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .is_ok());
    }
}
