//! Each projection's own record of where it stands in every partition is
//! the authority on what to read next, not the consumer group's committed
//! offsets.
//!
//! A projection records, in the same transaction as its view change (or
//! right after the search engine acknowledged a bulk request), the next
//! offset of the partition (`projection_offsets.next_offset`). Because a
//! message is only taken when its offset is not past that record, every
//! offset below it has been taken: applied, skipped as a duplicate, or
//! dead-lettered.
//!
//! The consumer's position can still jump past that record: the group's
//! committed offset runs ahead of it when a member that lost its partitions
//! commits late (its commit lands after the new owner started), or when a
//! commit outlives a view transaction that was rolled back; and a broker
//! that answers a fetch inside a record batch from the next batch (tansu
//! 0.6 did) would skip the rest of that batch. The guard notices (the message's offset is past the record) and seeks
//! the partition back: first to the record, then, while the broker still
//! answers past it, twice as far back each time (down to the start of the
//! partition), so that the batch holding the record is read whole.
//! Messages below the record are redeliveries and are passed over without
//! touching the view.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use sqlx::PgPool;

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The next message of its partition (or the first the projection
    /// sees there): take it.
    Take,
    /// Below the recorded next offset: taken before, pass over it.
    Taken,
    /// Past the recorded next offset: messages in between were skipped by
    /// the consumer. The partition has been sought back to `to`.
    Rewound { to: i64 },
}

/// A projection's next offset per partition: what its runner took, or
/// what its record in PostgreSQL says.
pub struct Positions {
    projection: &'static str,
    next: HashMap<(String, i32), i64>,
    /// Per partition being rewound: how far before the record the last
    /// seek went.
    rewinding: HashMap<(String, i32), i64>,
}

impl Positions {
    #[must_use]
    pub fn new(projection: &'static str) -> Self {
        Self {
            projection,
            next: HashMap::new(),
            rewinding: HashMap::new(),
        }
    }

    /// The projection's recorded next offset of a partition, if any.
    async fn recorded(
        &self,
        pool: &PgPool,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2 AND partition = $3",
        )
        .bind(self.projection)
        .bind(topic)
        .bind(partition)
        .fetch_optional(pool)
        .await
    }

    /// Decides whether `message` may be taken, and seeks its partition back
    /// when the consumer skipped messages.
    pub async fn admit<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &mut self,
        pool: &PgPool,
        consumer: &C,
        message: &impl Message,
    ) -> Result<Admission, sqlx::Error> {
        let key = (message.topic().to_owned(), message.partition());
        let offset = message.offset();
        let mut next = self.next.get(&key).copied();
        // Past what this runner knows: another process may have taken the
        // partition further meanwhile, so ask the record before judging.
        if next.is_none_or(|next| offset > next) {
            next = self.recorded(pool, &key.0, key.1).await?;
            if let Some(next) = next {
                self.next.insert(key.clone(), next);
            }
        }
        let admission = self.judge(&key, offset, next);
        if let Admission::Rewound { to } = admission {
            tracing::warn!(
                projection = self.projection,
                topic = %key.0,
                partition = key.1,
                offset,
                recorded = next,
                seek_to = to,
                "the consumer skipped messages; seeking back"
            );
            metrics::counter!("eshop_projection_rewinds_total", "projection" => self.projection)
                .increment(1);
            if let Err(error) =
                consumer.seek(&key.0, key.1, Offset::Offset(to), Duration::from_secs(5))
            {
                // Not assigned here any more, most likely: whoever has
                // the partition now starts from its own check.
                tracing::warn!(projection = self.projection, %error, "seeking back failed");
            }
        }
        Ok(admission)
    }

    /// The guard's rule: a message at the partition's next offset (or the
    /// first the projection sees there) is taken, one below it was taken
    /// before, and one past it means the consumer skipped messages: seek
    /// back to the record, then twice as far back each time the broker
    /// still answers past it.
    fn judge(&mut self, key: &(String, i32), offset: i64, next: Option<i64>) -> Admission {
        match next {
            None => Admission::Take,
            Some(next) if offset <= next => {
                self.rewinding.remove(key);
                if offset == next {
                    Admission::Take
                } else {
                    Admission::Taken
                }
            }
            Some(next) => {
                let back = match self.rewinding.get(key) {
                    None => 0,
                    Some(0) => 1,
                    Some(back) => back.saturating_mul(2),
                };
                self.rewinding.insert(key.clone(), back);
                Admission::Rewound {
                    to: next.saturating_sub(back).max(0),
                }
            }
        }
    }

    /// Notes that `message` was taken.
    pub fn advance(&mut self, message: &impl Message) {
        self.next.insert(
            (message.topic().to_owned(), message.partition()),
            message.offset() + 1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_offset_is_taken_and_those_below_it_passed_over() {
        let (mut positions, key) = (Positions::new("v"), ("t".to_owned(), 0));
        assert_eq!(
            positions.judge(&key, 7, None),
            Admission::Take,
            "no record yet"
        );
        assert_eq!(positions.judge(&key, 7, Some(7)), Admission::Take);
        assert_eq!(positions.judge(&key, 3, Some(7)), Admission::Taken);
    }

    #[test]
    fn a_skip_seeks_back_to_the_record_then_twice_as_far_each_time_down_to_zero() {
        let (mut positions, key) = (Positions::new("v"), ("t".to_owned(), 0));
        let seeks: Vec<Admission> = (0..6)
            .map(|_| positions.judge(&key, 20, Some(10)))
            .collect();
        let to = |to| Admission::Rewound { to };
        assert_eq!(seeks, [to(10), to(9), to(8), to(6), to(2), to(0)]);
        // The record's message arrives: the next skip starts afresh.
        assert_eq!(positions.judge(&key, 10, Some(10)), Admission::Take);
        assert_eq!(positions.judge(&key, 20, Some(11)), to(11));
        let other = ("t".to_owned(), 1);
        assert_eq!(
            positions.judge(&other, 20, Some(11)),
            to(11),
            "per partition"
        );
    }
}
