//! Where each lane ends, for status and lag. A stream's `queue.declare`
//! answers no message count, and RabbitMQ 3.10 has no stream statistics
//! (3.11+), so the end is read: a consumer from `last` (the start of the
//! stream's last chunk) reads on to the last message. Its offset plus one
//! is the lane's end. A lane that sends nothing within [`FIRST`] is empty.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::Channel;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};

use super::{RabbitConfig, connect, header_number};

/// How long a lane may take to send its first message.
const FIRST: Duration = Duration::from_millis(500);
/// The quiet after which a lane has sent what it had.
const QUIET: Duration = Duration::from_millis(50);

/// One lane as the probe found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneEnd {
    /// The offset after its last message (0 when empty).
    pub end: i64,
    /// The time of the message at the offset asked to peek at, when there
    /// is one.
    pub peeked: Option<DateTime<Utc>>,
}

/// Whether RabbitMQ answered that the queue does not exist.
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::NOTFOUND))
    )
}

/// Reads from `from` on `stream` until a quiet: the offsets and times of
/// what came, at most `most` messages.
async fn read(
    channel: &Channel,
    stream: &str,
    from: AMQPValue,
    most: usize,
) -> anyhow::Result<Vec<(i64, Option<DateTime<Utc>>)>> {
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), from);
    let tag = format!("eshop.probe.{}", uuid::Uuid::now_v7().simple());
    let mut consumer = channel
        .basic_consume(
            stream.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await
        .with_context(|| format!("failed to read {stream}"))?;
    let mut read = Vec::new();
    let mut wait = FIRST;
    while read.len() < most {
        let Ok(Some(delivery)) = tokio::time::timeout(wait, consumer.next()).await else {
            break;
        };
        let delivery = delivery.with_context(|| format!("failed to read {stream}"))?;
        let offset = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| {
                headers
                    .inner()
                    .get("x-stream-offset")
                    .and_then(header_number)
            })
            .context("a lane's message without its x-stream-offset")?;
        let at = delivery
            .properties
            .timestamp()
            .and_then(|seconds| i64::try_from(seconds).ok())
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0));
        delivery
            .ack(BasicAckOptions::default())
            .await
            .context("failed to acknowledge")?;
        read.push((offset, at));
        wait = QUIET;
    }
    channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await
        .context("failed to stop reading")?;
    Ok(read)
}

/// The end of each of `lanes` (topic and lane), and for those `peek` names
/// an offset below the end of, the time of the message there.
pub async fn lane_ends(
    config: &RabbitConfig,
    lanes: &[(String, u16)],
    peek: &(dyn Fn(&str, u16) -> Option<i64> + Sync),
) -> anyhow::Result<HashMap<(String, u16), LaneEnd>> {
    let connection = connect(config, "eshop status")
        .await
        .context("failed to connect to RabbitMQ")?;
    let probes = lanes.iter().map(|(topic, lane)| {
        let connection = &connection;
        async move {
            let stream = RabbitConfig::stream(topic, *lane);
            // A channel per lane: asking for a stream that does not exist
            // (nothing was published yet) closes the channel that asked.
            let channel = connection.create_channel().await?;
            let exists = channel
                .queue_declare(
                    stream.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match exists {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {
                    let empty = LaneEnd {
                        end: 0,
                        peeked: None,
                    };
                    return anyhow::Ok(((topic.clone(), *lane), empty));
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("failed to look up {stream}"));
                }
            }
            channel.basic_qos(2000, BasicQosOptions::default()).await?;
            let last = read(
                &channel,
                &stream,
                AMQPValue::LongString("last".into()),
                usize::MAX,
            )
            .await?;
            let end = last.iter().map(|(offset, _)| offset + 1).max().unwrap_or(0);
            let peeked = match peek(topic, *lane) {
                Some(offset) if offset < end => {
                    read(&channel, &stream, AMQPValue::LongLongInt(offset), 1)
                        .await?
                        .first()
                        .and_then(|(_, at)| *at)
                }
                _ => None,
            };
            let _ = channel.close(200, "done".into()).await;
            anyhow::Ok(((topic.clone(), *lane), LaneEnd { end, peeked }))
        }
    });
    let ends = futures::future::try_join_all(probes).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(ends.into_iter().collect())
}
