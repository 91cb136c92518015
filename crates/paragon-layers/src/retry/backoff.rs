//! Exponential backoff with full jitter, a pure function of the draw it is given.

use std::time::Duration;

/// Longest ceiling a backoff can reach, whatever the number of retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait before retry number `retry` (1 for the first retry): a share `unit` (a draw in
/// `0.0..1.0`) of `base` × 2^(retry − 1), capped at [`MAX_BACKOFF`]. Full jitter spreads
/// the retries of calls that failed together over the whole interval, so they do not
/// come back together.
pub fn full_jitter(base: Duration, retry: u32, unit: f64) -> Duration {
    let doublings = retry.saturating_sub(1).min(31);
    let ceiling = base.saturating_mul(1u32 << doublings).min(MAX_BACKOFF);
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    ceiling.mul_f64(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_and_the_draw_scales_it() {
        let base = Duration::from_millis(50);
        assert_eq!(full_jitter(base, 1, 0.999_999), base.mul_f64(0.999_999));
        assert_eq!(full_jitter(base, 1, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(base, 2, 0.5), Duration::from_millis(50));
        assert_eq!(full_jitter(base, 3, 0.5), Duration::from_millis(100));
        assert_eq!(full_jitter(base, 40, 0.5), MAX_BACKOFF / 2);
        assert_eq!(full_jitter(Duration::MAX, 2, 1.0), MAX_BACKOFF);
        // A draw outside 0..1 is clamped, never a panic.
        assert_eq!(full_jitter(base, 1, f64::NAN), Duration::ZERO);
        assert_eq!(full_jitter(base, 1, 7.0), base);
    }
}
