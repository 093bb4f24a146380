//! The stall watch: a projection with messages pending that takes none
//! for the stall time is reported, and then its group rebalanced and its
//! consumers renewed.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::{ProjectorConfig, rebalance_group};
use crate::status::{Stall, StallDetector, Stalls};

/// The stall time when none is configured.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

/// The longest wait between two rebalances of a group that stays stalled
/// (unless twice the stall time is longer).
const MAX_REBALANCE_WAIT: Duration = Duration::from_secs(300);

/// How a process watches its projections for stalls: after how long
/// without progress, with messages pending, a projection counts as
/// stalled, and where the stalled ones are reported (readiness, metrics).
#[derive(Debug, Clone)]
pub struct StallWatch {
    pub after: Duration,
    pub stalls: Stalls,
}

impl StallWatch {
    #[must_use]
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            stalls: Stalls::default(),
        }
    }
}

/// Watches `watched` (names and aggregate types) until `shutdown`: every
/// quarter of the stall time it compares each projection's recorded
/// offsets with its partitions' ends, or its checkpoint with the event
/// store's feed ([`crate::status::progress`]).
///
/// A projection with messages pending that has taken none for the stall
/// time is reported stalled ([`Stalls`]). Still stalled after twice the
/// stall time, its group is made to rebalance ([`rebalance_group`]), and
/// again while it stays stalled, waiting twice as long each time (up to
/// [`MAX_REBALANCE_WAIT`]); from the second time on, the projection's
/// runner in this process first replaces its consumer ([`Renewals`]),
/// which a rebalance cannot reach when it has dropped out of the group
/// (see [`Escalation`]). A rebalance is what gets a
/// stale assignment fixed: a static member (`--instance-id`) that comes
/// back within its session timeout is handed its old assignment without a
/// rebalance, and librdkafka, which does not implement KIP-814, then takes
/// itself for a follower, so no member checks the assignment against the
/// topics' partitions (KAFKA-13435). Partitions added meanwhile, or missing
/// from an assignment made before the topics' metadata was known, stay
/// unread until the group rebalances for another reason.
pub(super) async fn watch_stalls(
    pool: PgPool,
    config: ProjectorConfig,
    watched: Vec<(&'static str, &'static [&'static str])>,
    watch: StallWatch,
    renewals: Renewals,
    shutdown: impl Future<Output = ()>,
) {
    let every = (watch.after / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut detector = StallDetector::default();
    let mut escalations: std::collections::HashMap<&str, Escalation> =
        std::collections::HashMap::new();
    // Rebalances under way; dropped (aborted) with the watch.
    let mut rebalances = tokio::task::JoinSet::new();
    let mut rebalancing: std::collections::HashMap<&str, tokio::task::AbortHandle> =
        std::collections::HashMap::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
        while rebalances.try_join_next().is_some() {}
        let progress = match crate::status::progress(&pool, &config.bus, &watched).await {
            Ok(progress) => progress,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "projection progress unavailable"
                );
                continue;
            }
        };
        let now = std::time::Instant::now();
        for (progress, &(name, aggregate_types)) in progress.iter().zip(&watched) {
            let stuck_for = detector.observe(progress, now);
            let stalled = stuck_for >= watch.after;
            let was_stalled = watch.stalls.is_stalled(name);
            watch.stalls.record(
                name,
                stalled.then_some(Stall {
                    pending: progress.pending,
                    stuck_for,
                }),
                stuck_for,
            );
            if !stalled {
                if was_stalled {
                    tracing::info!(projection = name, "projection progressing again");
                }
                escalations.remove(name);
                continue;
            }
            if !was_stalled {
                tracing::warn!(
                    projection = name,
                    pending = progress.pending,
                    stuck_ms = stuck_for.as_millis() as u64,
                    "projection stalled: messages pending and none taken"
                );
            }
            if config.bus.kafka().is_none() {
                // Reading the event store, a projection has nothing to
                // rebalance: its reader lock passes to a standby when its
                // holder's connection goes. The stall is reported only.
                continue;
            }
            let remedy = escalations
                .entry(name)
                .or_insert_with(|| Escalation::new(watch.after))
                .step(stuck_for);
            match remedy {
                None => continue,
                Some(Remedy::Rebalance) => tracing::warn!(
                    projection = name,
                    pending = progress.pending,
                    stuck_ms = stuck_for.as_millis() as u64,
                    "projection still stalled; making its consumer group rebalance"
                ),
                Some(Remedy::RenewAndRebalance) => {
                    tracing::warn!(
                        projection = name,
                        pending = progress.pending,
                        stuck_ms = stuck_for.as_millis() as u64,
                        "projection still stalled after a rebalance; replacing its consumer and making its group rebalance"
                    );
                    renewals.request(name);
                }
            }
            // Each group's rebalance runs on its own (a join waits up to a
            // session timeout for every member), so the watch goes on
            // watching the others; one at a time per group.
            if rebalancing.get(name).is_some_and(|r| !r.is_finished()) {
                continue;
            }
            let config = config.clone();
            let started = rebalances.spawn(async move {
                if let Err(error) = rebalance_group(&config, name, aggregate_types).await {
                    tracing::warn!(
                        projection = name,
                        error = format!("{error:#}"),
                        "rebalancing the consumer group failed"
                    );
                }
            });
            rebalancing.insert(name, started);
        }
    }
}

/// What the stall watch does about a projection that stays stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remedy {
    /// Make its consumer group rebalance.
    Rebalance,
    /// Replace this process's consumer of the projection, then make the
    /// group rebalance.
    RenewAndRebalance,
}

/// When the stall watch steps in for one stalled projection: first once
/// it has been seen stalled for another stall time (at twice the stall
/// time, unless it was first seen later: right after a broker outage, say,
/// when every group is rejoining by itself), with a group rebalance; then,
/// while it stays stalled, after twice as long a wait each time (up to
/// [`MAX_REBALANCE_WAIT`]) with a new consumer as well.
///
/// A rebalance reaches every member of the group, but not a consumer that
/// has dropped out of it and does not come back: after a broker outage
/// longer than the session timeout, librdkafka now and then leaves a
/// consumer waiting for an unassignment that never completes (its offset
/// commits answered "unknown member" in join state
/// `wait-unassign-to-complete`); it takes no message again. Only a new
/// consumer gets such a projection going.
#[derive(Debug, Clone)]
struct Escalation {
    stall: Duration,
    /// How long stuck the projection must be for the next step; unknown
    /// until it is first seen stalled.
    due: Option<Duration>,
    wait: Duration,
    longest_wait: Duration,
    steps: u32,
}

impl Escalation {
    fn new(stall: Duration) -> Self {
        Self {
            stall,
            due: None,
            wait: stall * 2,
            longest_wait: MAX_REBALANCE_WAIT.max(stall * 2),
            steps: 0,
        }
    }

    /// What to do now that the stalled projection has been stuck for
    /// `stuck_for` (at least the stall time).
    fn step(&mut self, stuck_for: Duration) -> Option<Remedy> {
        let due = *self
            .due
            .get_or_insert_with(|| stuck_for.max(self.stall) + self.stall);
        if stuck_for < due {
            return None;
        }
        self.due = Some(stuck_for + self.wait);
        self.wait = (self.wait * 2).min(self.longest_wait);
        self.steps += 1;
        Some(if self.steps == 1 {
            Remedy::Rebalance
        } else {
            Remedy::RenewAndRebalance
        })
    }
}

/// How the stall watch asks a projection's runner in this process for a
/// new consumer: one wake-up per projection, kept until the runner takes
/// it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Renewals {
    by_projection: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
    >,
}

impl Renewals {
    /// The wake-up of `projection`'s runner.
    pub(crate) fn of(&self, projection: &str) -> Arc<tokio::sync::Notify> {
        self.by_projection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(projection.to_owned())
            .or_default()
            .clone()
    }

    fn request(&self, projection: &str) {
        self.of(projection).notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projection_that_stays_stalled_gets_a_rebalance_then_new_consumers() {
        let secs = Duration::from_secs;
        let mut escalation = Escalation::new(secs(3));
        assert_eq!(escalation.step(secs(3)), None);
        assert_eq!(escalation.step(secs(5)), None);
        assert_eq!(escalation.step(secs(6)), Some(Remedy::Rebalance));
        assert_eq!(escalation.step(secs(11)), None);
        assert_eq!(escalation.step(secs(12)), Some(Remedy::RenewAndRebalance));
        assert_eq!(escalation.step(secs(23)), None);
        assert_eq!(escalation.step(secs(24)), Some(Remedy::RenewAndRebalance));
        // The waits double up to the longest one.
        let mut stuck = secs(24);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            let before = stuck;
            stuck += secs(1);
            while escalation.step(stuck).is_none() {
                stuck += secs(1);
            }
            last = stuck - before;
        }
        assert_eq!(last, MAX_REBALANCE_WAIT);
    }

    #[test]
    fn a_projection_first_seen_stalled_late_gets_a_stall_time_to_recover_by_itself() {
        // Seen stalled only once the broker is back after a 15 s outage:
        // its group is rejoining by itself.
        let secs = Duration::from_secs;
        let mut escalation = Escalation::new(secs(3));
        assert_eq!(escalation.step(secs(15)), None);
        assert_eq!(escalation.step(secs(17)), None);
        assert_eq!(escalation.step(secs(18)), Some(Remedy::Rebalance));
        assert_eq!(escalation.step(secs(23)), None);
        assert_eq!(escalation.step(secs(24)), Some(Remedy::RenewAndRebalance));
    }

    #[test]
    fn a_renewal_asked_for_while_the_runner_is_busy_waits_for_it() {
        use futures::FutureExt;
        let renewals = Renewals::default();
        let order_view = renewals.of("order_view");
        let search = renewals.of("search");
        renewals.request("order_view");
        assert!(
            order_view.notified().now_or_never().is_some(),
            "the runner takes the renewal asked for before it waited"
        );
        assert!(
            order_view.notified().now_or_never().is_none(),
            "one request, one renewal"
        );
        assert!(
            search.notified().now_or_never().is_none(),
            "another projection's runner is not woken"
        );
    }
}
