//! `[retry]`: retries, hedging and their budget (CONTRACT §4, §5 "Retry"). The values
//! are checked by the retry layer's builder, through `Settings::new`.

use serde::{Deserialize, Serialize};

use super::Dur;

/// `[retry]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySection {
    /// Whether failed calls are retried (and hedged). Off, the request's
    /// `upstream.deadline` still applies.
    pub enabled: bool,
    /// Attempts per upstream call, the first included, hedges included.
    pub max_attempts: u32,
    /// Base of the exponential backoff with full jitter.
    pub backoff: Dur,
    /// Retries and hedges at most this share of first attempts (sliding 10 s).
    pub budget_ratio: f64,
    /// ... plus this many per second.
    pub budget_min_per_sec: u32,
    /// Send one more attempt when none has answered by then; 0 off.
    pub hedge_after: Dur,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            enabled: false,
            max_attempts: 2,
            backoff: Dur::millis(50),
            budget_ratio: 0.1,
            budget_min_per_sec: 1,
            hedge_after: Dur::secs(0),
        }
    }
}
