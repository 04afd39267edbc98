//! Retry: when a sink's failed delivery is tried again, and when dispatch gives up on it and
//! keeps it as a dead letter instead. Pure: the caller owns the clock.

use std::time::Duration;

/// A sink's `retry:` settings from the rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure; it doubles with each further one.
    pub initial_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
    /// Give up after this many attempts; `None` means no limit on the count.
    pub max_attempts: Option<u32>,
    /// Give up once the first attempt is this old; `None` means no limit on the age.
    pub max_age: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Half a second doubling up to five minutes, for a day: a sink down longer than that is
    /// an outage an operator handles, and its envelopes wait in the dead-letter store for a
    /// replay instead of holding the queue of everything after them.
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(300),
            max_attempts: None,
            max_age: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: exponential, capped, with up to 25% jitter so
    /// that many queues recovering together do not retry in step. A sink's own Retry-After
    /// wins when it is longer, but never past `max_delay`: a far side asking for a week must
    /// not stall the queue beyond what the operator allowed.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self.initial_delay.saturating_mul(1u32 << attempt.min(20));
        let capped = exponential.min(self.max_delay);
        let jitter = capped.mul_f64(fastrand::f64() * 0.25);
        let asked = retry_after.unwrap_or_default().min(self.max_delay);
        (capped + jitter).max(asked)
    }

    /// Whether, after `attempts` failed attempts over `elapsed` since the first, dispatch
    /// stops retrying.
    pub fn gives_up(&self, attempts: u32, elapsed: Duration) -> bool {
        self.max_attempts.is_some_and(|max| attempts >= max)
            || self.max_age.is_some_and(|max| elapsed >= max)
    }

    /// Why dispatch gave up, for the dead letter's reason.
    pub fn exhausted_reason(&self, attempts: u32, elapsed: Duration, last_error: &str) -> String {
        format!(
            "gave up after {attempts} attempts over {}s (retry limits: {}): last error: {last_error}",
            elapsed.as_secs(),
            self.describe_limits()
        )
    }

    fn describe_limits(&self) -> String {
        match (self.max_attempts, self.max_age) {
            (Some(attempts), Some(age)) => {
                format!("max_attempts {attempts}, max_age {}s", age.as_secs())
            }
            (Some(attempts), None) => format!("max_attempts {attempts}"),
            (None, Some(age)) => format!("max_age {}s", age.as_secs()),
            (None, None) => "none".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: Some(5),
            max_age: Some(Duration::from_secs(3600)),
        }
    }

    #[test]
    fn delays_double_from_the_initial_delay_up_to_the_maximum_with_at_most_a_quarter_jitter() {
        let policy = policy();
        for (attempt, base) in [(0, 1), (1, 2), (2, 4), (5, 32), (6, 60), (30, 60)] {
            let delay = policy.delay(attempt, None);
            let base = Duration::from_secs(base);
            assert!(
                delay >= base && delay <= base.mul_f64(1.25),
                "attempt {attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_when_longer_but_never_past_the_maximum_delay() {
        let policy = policy();
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(86_400))),
            Duration::from_secs(60)
        );
        assert!(policy.delay(0, Some(Duration::from_millis(1))) >= Duration::from_secs(1));
    }

    #[test]
    fn gives_up_at_the_attempt_limit_or_the_age_limit_whichever_comes_first() {
        let policy = policy();
        assert!(!policy.gives_up(4, Duration::from_secs(10)));
        assert!(policy.gives_up(5, Duration::from_secs(10)));
        assert!(policy.gives_up(1, Duration::from_secs(3600)));
        let unlimited = RetryPolicy {
            max_attempts: None,
            max_age: None,
            ..policy
        };
        assert!(!unlimited.gives_up(u32::MAX, Duration::from_secs(u64::MAX / 2)));
    }
}
