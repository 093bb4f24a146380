//! A projection's feed of RabbitMQ: its lanes, read from the offsets it
//! recorded in PostgreSQL, shared with the other processes running it.
//!
//! **Which process reads which lane.** RabbitMQ 3.10 has no single active
//! consumer for streams (3.11+, super streams only), and a stream reader's
//! offset is ours anyway (in PostgreSQL, with the view change). So the
//! lanes are shared out in PostgreSQL too, with advisory locks held on a
//! connection of the source's own, which PostgreSQL releases the moment
//! the process or its connection dies:
//!
//! - every process running the projection holds a shared *member* lock;
//!   the number of holders is the number of members;
//! - a process reads the lanes whose exclusive *lane* lock it holds, at
//!   most `ceil(lanes / members)` of them: every second it gives up lanes
//!   beyond that share, between batches (so what it handed out is
//!   committed), and tries for free lanes while it has room. The shares
//!   add up to at least every lane, so a free lane is always taken by
//!   someone with room: a killed process's lanes are read again within a
//!   second or two, from the offsets it committed.
//!
//! Two processes reading a lane at once (one that lost its database
//! connection without noticing yet) only repeat events: the claims by
//! aggregate sequence apply each once.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use event_store::DatabaseConfig;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use sqlx::{Connection as _, PgConnection, PgPool, Row};

use super::{RabbitConfig, connect, declare, header_bytes, header_number};
use crate::projector::{Delivered, Origin, Source};

/// How often a process looks at its share of the lanes.
const BALANCE_EVERY: Duration = Duration::from_secs(1);
/// Messages RabbitMQ sends ahead of the acknowledgements, per lane.
const PREFETCH: u16 = 1000;
/// How long the batch waits for each further message once it has one.
const GATHER: Duration = Duration::from_millis(1);
/// How long `next` waits for a first message before returning none.
const WAIT: Duration = Duration::from_millis(200);

/// The AMQP side: a connection, a channel, a consumer per lane held.
struct Link {
    connection: Connection,
    channel: Channel,
    deliveries: SelectAll<BoxStream<'static, (usize, Result<Delivery, lapin::Error>)>>,
    /// Per lane held (index into `lanes`): the next offset to hand out.
    next: HashMap<usize, i64>,
}

/// A projection's lanes on RabbitMQ.
pub struct RabbitSource {
    pool: PgPool,
    database: DatabaseConfig,
    config: RabbitConfig,
    name: &'static str,
    /// The projection's consumer group (`{prefix}.{projection}`): processes
    /// of one group share the lanes; another group reads them all again.
    group: String,
    aggregate_types: Vec<&'static str>,
    /// Every lane of the projection: (topic, lane).
    lanes: Vec<(String, u16)>,
    /// The connection holding the member lock and the lane locks.
    locks: Option<PgConnection>,
    owned: BTreeSet<usize>,
    balanced: Option<tokio::time::Instant>,
    link: Option<Link>,
    retry: Duration,
}

impl RabbitSource {
    #[must_use]
    pub fn new(
        pool: PgPool,
        database: DatabaseConfig,
        config: RabbitConfig,
        name: &'static str,
        group: String,
        aggregate_types: &'static [&'static str],
    ) -> Self {
        // Lane by lane across the aggregate types: a share taken from the
        // front holds lanes of every type, as Kafka's assignment gives a
        // member partitions of every topic.
        let mut lanes: Vec<(String, u16)> = config
            .lanes_of(aggregate_types)
            .map(|(_, topic, lane)| (topic.to_owned(), lane))
            .collect();
        lanes.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Self {
            pool,
            database,
            config,
            name,
            group,
            aggregate_types: aggregate_types.to_vec(),
            lanes,
            locks: None,
            owned: BTreeSet::new(),
            balanced: None,
            link: None,
            retry: Duration::from_millis(200),
        }
    }

    fn lane_key(&self, index: usize) -> String {
        let (topic, lane) = &self.lanes[index];
        format!("eshop.rabbit-lane.{}.{topic}.{lane}", self.group)
    }

    /// Joins the projection's members (once), then takes or gives up
    /// lanes to hold its share. Drops the AMQP side when the lanes changed.
    async fn balance(&mut self) -> anyhow::Result<()> {
        if self
            .balanced
            .is_some_and(|at| at.elapsed() < BALANCE_EVERY && self.locks.is_some())
        {
            return Ok(());
        }
        if self.locks.is_none() {
            self.owned.clear();
            self.link = None;
            let mut connection = PgConnection::connect(&self.database.url)
                .await
                .context("failed to connect for the lane locks")?;
            sqlx::query(
                "SELECT pg_advisory_lock_shared(hashtext('eshop.rabbit-members'), hashtext($1))",
            )
            .bind(&self.group)
            .execute(&mut connection)
            .await
            .context("failed to join the projection's members")?;
            self.locks = Some(connection);
        }
        let result = self.share().await;
        if result.is_err() {
            // The locks went with the connection, or will with it now.
            self.locks = None;
            self.owned.clear();
            self.link = None;
        }
        self.balanced = Some(tokio::time::Instant::now());
        result
    }

    async fn share(&mut self) -> anyhow::Result<()> {
        let keys: Vec<String> = (0..self.lanes.len()).map(|i| self.lane_key(i)).collect();
        let connection = self.locks.as_mut().expect("joined");
        let members: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid = hashtext('eshop.rabbit-members')::oid AND objid = hashtext($1)::oid \
             AND objsubid = 2",
        )
        .bind(&self.group)
        .fetch_one(&mut *connection)
        .await
        .context("failed to count the projection's members")?;
        let members = usize::try_from(members.max(1)).unwrap_or(1);
        let share = self.lanes.len().div_ceil(members);
        let mut changed = false;
        while self.owned.len() > share {
            let index = *self.owned.last().expect("more than the share");
            sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
                .bind(&keys[index])
                .execute(&mut *connection)
                .await?;
            self.owned.remove(&index);
            changed = true;
        }
        for (index, key) in keys.iter().enumerate() {
            if self.owned.len() >= share {
                break;
            }
            if self.owned.contains(&index) {
                continue;
            }
            let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(key)
                .fetch_one(&mut *connection)
                .await?;
            if held {
                self.owned.insert(index);
                changed = true;
            }
        }
        if changed {
            let partitions: Vec<String> = self
                .owned
                .iter()
                .map(|&i| format!("{}/{}", self.lanes[i].0, self.lanes[i].1))
                .collect();
            tracing::info!(projection = self.name, members, partitions = %partitions.join(","), "partitions assigned");
            self.link = None;
        }
        Ok(())
    }

    /// Subscribes to every lane held, each from the offset the projection
    /// recorded for it.
    async fn subscribe(&mut self) -> anyhow::Result<()> {
        let recorded: HashMap<(String, i32), i64> = sqlx::query(
            "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1",
        )
        .bind(self.name)
        .fetch_all(&self.pool)
        .await
        .context("failed to read the recorded offsets")?
        .iter()
        .map(|row| {
            Ok((
                (row.try_get("topic")?, row.try_get("partition")?),
                row.try_get("next_offset")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let connection = connect(&self.config, &format!("eshop projector {}", self.name)).await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        declare(&channel, &self.config, &self.aggregate_types).await?;
        let mut deliveries = SelectAll::new();
        let mut next = HashMap::new();
        for &index in &self.owned {
            let (topic, lane) = &self.lanes[index];
            let from = recorded
                .get(&(topic.clone(), i32::from(*lane)))
                .copied()
                .unwrap_or(0);
            let mut arguments = FieldTable::default();
            arguments.insert("x-stream-offset".into(), AMQPValue::LongLongInt(from));
            let consumer = channel
                .basic_consume(
                    RabbitConfig::stream(topic, *lane).as_str().into(),
                    format!(
                        "{}.{}.{topic}.{lane}",
                        self.group,
                        uuid::Uuid::now_v7().simple()
                    )
                    .as_str()
                    .into(),
                    BasicConsumeOptions::default(),
                    arguments,
                )
                .await?;
            deliveries.push(consumer.map(move |delivery| (index, delivery)).boxed());
            next.insert(index, from);
        }
        self.link = Some(Link {
            connection,
            channel,
            deliveries,
            next,
        });
        Ok(())
    }

    async fn read_next(&mut self, max: usize) -> anyhow::Result<Vec<Delivered>> {
        self.balance().await?;
        if self.owned.is_empty() {
            // Every lane is read by other processes: stand by.
            tokio::time::sleep(BALANCE_EVERY).await;
            return Ok(Vec::new());
        }
        if self.link.is_none() {
            self.subscribe().await?;
        }
        let link = self.link.as_mut().expect("subscribed");
        if !link.connection.status().connected() {
            self.link = None;
            anyhow::bail!("the connection to RabbitMQ is gone");
        }
        let mut taken = Vec::new();
        let mut last_tag = None;
        let first = match tokio::time::timeout(WAIT, link.deliveries.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => {
                self.link = None;
                anyhow::bail!("RabbitMQ ended the lanes' consumers");
            }
            Ok(Some(first)) => first,
        };
        let mut pending = Some(first);
        while let Some((index, delivery)) = pending.take() {
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err(error) => {
                    self.link = None;
                    return Err(error).context("a lane's consumer failed");
                }
            };
            last_tag = Some(delivery.delivery_tag);
            if let Some(message) = admit(&self.lanes[index], link.next.get_mut(&index), delivery)? {
                taken.push(message);
            }
            if taken.len() >= max {
                break;
            }
            // Whatever else arrives at once joins the batch, as on Kafka.
            pending = tokio::time::timeout(GATHER, link.deliveries.next())
                .await
                .ok()
                .flatten();
        }
        if let Some(tag) = last_tag {
            // A stream's acknowledgements only make room for more
            // messages; where the projection stands is in PostgreSQL.
            link.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .context("failed to acknowledge to RabbitMQ")?;
        }
        Ok(taken)
    }
}

/// A lane's message as a projector message, unless it lies before the
/// lane's next offset (a stream starts a consumer at the beginning of the
/// chunk holding the offset asked for).
fn admit(
    (topic, lane): &(String, u16),
    next: Option<&mut i64>,
    delivery: Delivery,
) -> anyhow::Result<Option<Delivered>> {
    let headers = delivery
        .properties
        .headers()
        .as_ref()
        .map(|table| table.inner().clone())
        .unwrap_or_default();
    let offset = headers
        .get("x-stream-offset")
        .and_then(header_number)
        .context("a lane's message without its x-stream-offset")?;
    let next = next.context("a message of a lane not subscribed to")?;
    if offset < *next {
        return Ok(None);
    }
    *next = offset + 1;
    let key = headers.get("aggregate_id").and_then(header_bytes);
    let headers = headers
        .iter()
        .filter(|(name, _)| name.as_str() != "x-stream-offset" && name.as_str() != "aggregate_id")
        .map(|(name, value)| (name.as_str().to_owned(), header_bytes(value)))
        .collect();
    Ok(Some(Delivered::new(
        Origin {
            topic,
            partition: i32::from(*lane),
            offset,
        },
        key,
        Some(delivery.data),
        headers,
    )))
}

#[async_trait]
impl Source for RabbitSource {
    async fn next(&mut self, max: usize) -> anyhow::Result<Vec<Delivered>> {
        match self.read_next(max).await {
            Ok(batch) => {
                self.retry = Duration::from_millis(200);
                Ok(batch)
            }
            Err(error) => {
                // RabbitMQ or the database is away: try again, from the
                // recorded offsets.
                tracing::warn!(
                    projection = self.name,
                    error = format!("{error:#}"),
                    retry_in_ms = self.retry.as_millis() as u64,
                    "reading the lanes failed; retrying"
                );
                self.link = None;
                tokio::time::sleep(self.retry).await;
                self.retry = (self.retry * 2).min(Duration::from_secs(5));
                Ok(Vec::new())
            }
        }
    }

    fn acknowledge(&mut self, _batch: &[Delivered]) {
        // The sink recorded each lane's offset with its view change.
    }
}
