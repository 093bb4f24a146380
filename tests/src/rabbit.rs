//! Reading and writing the test's lanes on RabbitMQ, as another service
//! would: plain AMQP, no eshop code.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::broker::Consumed;

async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|error| {
            panic!("RabbitMQ at {url}: {error}; run scripts/setup (it starts it)")
        })
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A consumer of `stream` from its first message, on a channel of its own.
///
/// The relay may not have declared the stream yet: it is declared as the
/// relay does (the same arguments). A stream declared a moment ago may
/// still be starting its replica, and RabbitMQ then refuses the consumer
/// (`PRECONDITION_FAILED ... does not have a replica on the local node`)
/// and closes the channel: that answer is retried on a new channel until
/// `until`; any other fails the test.
async fn consume_from_first(
    connection: &Connection,
    stream: &str,
    until: Instant,
) -> lapin::Consumer {
    let mut pause = Duration::from_millis(10);
    loop {
        let channel = connection.create_channel().await.expect("channel");
        channel
            .basic_qos(1000, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut stream_type = FieldTable::default();
        stream_type.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        channel
            .queue_declare(
                stream.into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..lapin::options::QueueDeclareOptions::default()
                },
                stream_type,
            )
            .await
            .unwrap_or_else(|error| panic!("declare {stream}: {error}"));
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let consumed = channel
            .basic_consume(
                stream.into(),
                format!("test-reader-{}", uuid::Uuid::now_v7().simple())
                    .as_str()
                    .into(),
                BasicConsumeOptions::default(),
                arguments,
            )
            .await;
        match consumed {
            Ok(consumer) => return consumer,
            Err(error)
                if error.to_string().contains("does not have a replica")
                    && Instant::now() + pause < until =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(error) => panic!("consume {stream}: {error}"),
        }
    }
}

/// Reads `streams` (topic, partition and stream name of each) from their
/// first message until `done` says so; fails the test at `deadline`.
pub async fn read_streams(
    url: &str,
    streams: &[(String, i32, String)],
    deadline: Duration,
    done: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    let connection = connect(url).await;
    let started = Instant::now();
    let mut all = futures::stream::SelectAll::new();
    for (topic, partition, stream) in streams {
        let consumer = consume_from_first(&connection, stream, started + deadline).await;
        let (topic, partition) = (topic.clone(), *partition);
        all.push(consumer.map(move |d| (topic.clone(), partition, d)).boxed());
    }
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "read {} messages before the deadline",
            seen.len()
        );
        let Ok(Some((topic, partition, delivery))) =
            tokio::time::timeout(left.min(Duration::from_secs(1)), all.next()).await
        else {
            continue;
        };
        let delivery = delivery.expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        let headers: HashMap<String, String> = delivery
            .properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), text(v)?)))
                    .collect()
            })
            .unwrap_or_default();
        seen.push(Consumed {
            topic,
            partition,
            offset: headers["x-stream-offset"].parse().expect("offset"),
            key: headers.get("aggregate_id").cloned().unwrap_or_default(),
            envelope: serde_json::from_slice(&delivery.data).expect("a JSON envelope"),
            headers,
        });
    }
    let _ = connection.close(200, "done".into()).await;
    seen
}

/// Publishes `message` again into the stream it was read from, with its
/// aggregate id, as a relay that crashed before its checkpoint would.
pub async fn publish_again(url: &str, stream: &str, message: &Consumed) {
    let connection = connect(url).await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut headers = FieldTable::default();
    headers.insert(
        "aggregate_id".into(),
        AMQPValue::LongString(message.key.as_str().into()),
    );
    let payload = serde_json::to_vec(&message.envelope).expect("json");
    let confirm = channel
        .basic_publish(
            "".into(),
            stream.into(),
            BasicPublishOptions::default(),
            &payload,
            BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "RabbitMQ took the copy");
    let _ = connection.close(200, "done".into()).await;
}

/// A RabbitMQ node of a test's own (the fault tests stop it), started from
/// the installation `scripts/setup` made, on ports of its own, with its
/// data under the temporary directory.
pub struct RabbitNode {
    pub name: String,
    pub port: u16,
    dist_port: u16,
    root: std::path::PathBuf,
}

impl RabbitNode {
    /// Starts the node and waits (120 s at most) until it is up.
    pub fn start() -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let name = format!("eshop-{}@localhost", &id[id.len() - 12..]);
        let port = crate::process::free_port();
        let root = std::env::temp_dir().join(format!("eshop-rabbit-{id}"));
        std::fs::create_dir_all(root.join("log")).expect("node directory");
        std::fs::write(
            root.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users.guest = true\n"),
        )
        .expect("config");
        std::fs::write(root.join("enabled_plugins"), "[].\n").expect("plugins");
        let dist_port = crate::process::free_port();
        let node = Self {
            name,
            port,
            dist_port,
            root,
        };
        let status = std::process::Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&node.root)
            .status()
            .expect("chown");
        assert!(status.success(), "chown the node's directory to rabbitmq");
        let status = node
            .command("rabbitmq-server")
            .env("RABBITMQ_DIST_PORT", node.dist_port.to_string())
            .arg("-detached")
            .status()
            .expect("rabbitmq-server runs (scripts/setup installs it)");
        assert!(status.success(), "rabbitmq-server -detached");
        // The node answers the CLI only once its VM has registered with the
        // port mapper; until then `await_startup` fails at once.
        let started = std::time::Instant::now();
        while !node.try_ctl(&["await_startup", "--timeout", "5"]) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "RabbitMQ node {} did not start; logs in {}",
                node.name,
                node.root.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        node
    }

    fn try_ctl(&self, args: &[&str]) -> bool {
        self.command("rabbitmqctl")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .is_ok_and(|output| output.status.success())
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", self.root.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.root.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.root.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.root.join("rabbitmq.conf"))
            .env("RABBITMQ_PID_FILE", self.root.join("rabbitmq.pid"));
        command
    }

    /// Runs `rabbitmqctl -n <node> <args>`; fails the test when it fails.
    pub fn ctl(&self, args: &[&str]) {
        let output = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?}: {}{}; logs in {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.root.join("log").display()
        );
    }

    /// The node's AMQP URL.
    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.name)
            .arg("stop")
            .output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Deletes `streams` and `exchange` (a test's own), on a thread of its own:
/// called from a destructor, outside any runtime.
pub fn delete(url: &str, exchange: &str, streams: Vec<String>) {
    let (url, exchange) = (url.to_owned(), exchange.to_owned());
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await
            else {
                return;
            };
            for stream in streams {
                // A channel each: deleting what does not exist closes it.
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel
                        .queue_delete(
                            stream.as_str().into(),
                            lapin::options::QueueDeleteOptions::default(),
                        )
                        .await;
                }
            }
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .exchange_delete(
                        exchange.as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            let _ = connection.close(200, "done".into()).await;
        });
    });
    let _ = cleanup.join();
}
