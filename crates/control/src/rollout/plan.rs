//! Splitting an environment's in-service instances into deploy batches.
//!
//! A strategy says how many instances leave service at once: one at a
//! time, a percentage of the group, or all at once. The minimum healthy
//! share is a promise the plan keeps: while a batch is out of service, at
//! least `floor(n × share)` instances still serve, or the plan is refused
//! with the largest batch that would keep it. (Rounding down lets a
//! one-instance environment deploy one at a time: it has no instance to
//! spare, and saying so is the point of the check.)

pub use slipway_core::strategy::{BadStrategy, Strategy};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    BadStrategy(#[from] BadStrategy),
    #[error("the minimum healthy share must be between 0% and 100%")]
    BadShare,
    #[error(
        "{strategy} takes {batch} of {total} instances out of service at once, leaving fewer than the minimum healthy {min_healthy}; use batches of at most {allowed}"
    )]
    BreaksMinimum {
        strategy: Strategy,
        batch: usize,
        total: usize,
        min_healthy: usize,
        allowed: usize,
    },
}

/// How many instances one batch takes out of `total`.
pub fn batch_size(strategy: Strategy, total: usize) -> usize {
    match strategy {
        Strategy::OneAtATime => 1,
        Strategy::AllAtOnce => total,
        Strategy::Percent(p) => (total * p as usize).div_ceil(100).max(1),
    }
    .min(total)
}

/// The batches, in order, for `instances` (already in the order to visit).
pub fn plan<T: Clone>(
    instances: &[T],
    strategy: Strategy,
    min_healthy_percent: u8,
) -> Result<Vec<Vec<T>>, PlanError> {
    if min_healthy_percent > 100 {
        return Err(PlanError::BadShare);
    }
    let total = instances.len();
    if total == 0 {
        return Ok(Vec::new());
    }
    let batch = batch_size(strategy, total);
    let min_healthy = total * min_healthy_percent as usize / 100;
    if total - batch < min_healthy {
        return Err(PlanError::BreaksMinimum {
            strategy,
            batch,
            total,
            min_healthy,
            allowed: (total - min_healthy).max(1),
        });
    }
    Ok(instances.chunks(batch).map(<[T]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(n: usize, strategy: &str, share: u8) -> Result<Vec<usize>, PlanError> {
        let instances: Vec<usize> = (0..n).collect();
        plan(&instances, strategy.parse()?, share).map(|b| b.iter().map(Vec::len).collect())
    }

    #[test]
    fn batch_sizes_follow_the_strategy_with_odd_counts_rounded_up() {
        assert_eq!(sizes(4, "one-at-a-time", 50).unwrap(), [1, 1, 1, 1]);
        assert_eq!(sizes(10, "25%", 50).unwrap(), [3, 3, 3, 1]);
        assert_eq!(sizes(5, "50%", 50).unwrap(), [3, 2]);
        assert_eq!(sizes(3, "1%", 0).unwrap(), [1, 1, 1]);
        assert_eq!(sizes(6, "all-at-once", 0).unwrap(), [6]);
    }

    #[test]
    fn one_instance_deploys_one_at_a_time_and_none_means_no_batches() {
        assert_eq!(sizes(1, "one-at-a-time", 50).unwrap(), [1]);
        assert_eq!(sizes(1, "25%", 90).unwrap(), [1]);
        assert_eq!(sizes(0, "all-at-once", 100).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn a_plan_that_breaks_the_minimum_is_refused_with_what_would_work() {
        let err = sizes(4, "all-at-once", 50).unwrap_err();
        assert_eq!(
            err,
            PlanError::BreaksMinimum {
                strategy: Strategy::AllAtOnce,
                batch: 4,
                total: 4,
                min_healthy: 2,
                allowed: 2
            }
        );
        assert!(err.to_string().contains("at most 2"));
        assert!(sizes(10, "50%", 60).is_err());
        assert_eq!(sizes(10, "40%", 60).unwrap(), [4, 4, 2]);
        assert!(sizes(2, "one-at-a-time", 100).is_err());
    }

    #[test]
    fn strategies_parse_and_print_the_same_way() {
        for s in ["one-at-a-time", "all-at-once", "25%", "100%"] {
            assert_eq!(s.parse::<Strategy>().unwrap().to_string(), s);
        }
        for bad in ["", "0%", "101%", "25", "fast", "-5%"] {
            assert!(bad.parse::<Strategy>().is_err(), "{bad}");
        }
        assert!(sizes(1, "one-at-a-time", 101).is_err());
    }
}
