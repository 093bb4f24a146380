//! Benchmark of the read side: how long after a command's 2xx response its
//! order is in `order_view`, at a steady paced rate, and how fast the relay
//! and the projectors drain a backlog. Real processes (`eshop serve
//! --api-only`, `eshop relay`, `eshop project`) on a fresh database, with
//! topics, consumer groups and search indices of their own. A pgbench
//! baseline of the projectors' per-event transaction, taken before and after
//! on the same PostgreSQL, gives the ratios. See docs/benchmarks.md.
//!
//! Phases:
//! 1. pgbench baseline (1 client and one client per projection).
//! 2. API only: register products, then write a backlog of orders with
//!    neither the relay nor the projectors running.
//! 3. Start `eshop relay` alone: time until its checkpoint is the last event.
//! 4. Start `eshop project`: time until every projection has taken every
//!    message of its topics.
//! 5. Everything running: an open-loop pacer sends commands at a fixed
//!    rate; a watcher listens to `order_view`'s change notifications and
//!    records the lag from the checkout's 2xx to the order's first one.
//! 6. pgbench baseline again.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use eshop_tests::bench::{
    CpuSample, CpuSplit, Export, drop_database, recreate_database, store_messages_taken,
};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    /// Commands per second in the paced phase (each order is three
    /// commands: open basket, add item, checkout).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Measured seconds of the paced phase.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Paced but unmeasured seconds before the measured ones.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// How often the watcher reads the relay's checkpoint, for the relayed
    /// part of the lag, in ms (the lag itself is taken from `order_view`'s
    /// change notifications, as they arrive).
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// How long to wait after the paced phase for the last orders to show.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// Orders written as the backlog for the relay and the projectors
    /// (five events each: basket opened, item added, basket checked out,
    /// stock reserved, order placed).
    #[arg(long, default_value_t = 4_000)]
    backlog_orders: usize,
    /// Concurrent clients writing the backlog.
    #[arg(long, default_value_t = 16)]
    backlog_clients: usize,
    /// Products registered before everything else, with ample stock.
    #[arg(long, default_value_t = 200)]
    products: usize,
    /// Seconds of each pgbench baseline run.
    #[arg(long, default_value_t = 10)]
    baseline_duration: u64,
    /// Keep the database, the topics, the search indices and the logs
    /// after the run.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    target: eshop_tests::bench::Target,
    /// The event buses to measure, one after the other in this run, each on
    /// a fresh database (comma-separated: kafka, rabbitmq, none).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kafka")]
    bus: Vec<Bus>,
    /// RabbitMQ, for `--bus rabbitmq`.
    #[arg(long, default_value = "amqp://127.0.0.1:5672/%2f")]
    rabbitmq_url: String,
    /// The Kafka-protocol broker.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// The search engine.
    #[arg(long, default_value = "http://127.0.0.1:9200")]
    search_url: String,
    /// Span export settings to measure for each bus, one run each, in this
    /// order (comma-separated: off, all, tenth).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "off")]
    export: Vec<Export>,
    /// The OTLP/HTTP endpoint spans go to (`scripts/setup`'s Jaeger).
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    otlp: String,
}

/// An event bus the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bus {
    Kafka,
    Rabbitmq,
    None,
}

impl Bus {
    fn name(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::Rabbitmq => "rabbitmq",
            Self::None => "none",
        }
    }
}

/// The benchmark's database and the baseline's, dropped and recreated each
/// run.
const DATABASE: &str = "eshop_bench_lag";
const BASELINE_DATABASE: &str = "eshop_bench_lag_baseline";
const COMMANDS_PER_ORDER: usize = 3;
/// A command sent this long after its slot counts as late.
const LATE: Duration = Duration::from_millis(10);

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn bar(len: u64, template: &str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template)?.progress_chars("=> "));
    Ok(bar)
}

/// Names that keep this run apart from anything else on the broker and the
/// search engine.
struct Run {
    id: String,
    db_url: String,
    logs: PathBuf,
    bus: Bus,
    export: Export,
}

impl Run {
    fn topics(&self) -> [String; 3] {
        let id = &self.id;
        [
            format!("bench-lag-{id}.products"),
            format!("bench-lag-{id}.baskets"),
            format!("bench-lag-{id}.orders"),
        ]
    }

    fn dead_letter_topic(&self) -> String {
        format!("bench-lag-{}.deadletters", self.id)
    }

    fn exchange(&self) -> String {
        format!("bench-lag-{}.events", self.id)
    }

    fn index_prefix(&self) -> String {
        format!("bench-lag-{}", self.id)
    }

    fn relay_name(&self) -> String {
        format!("bench-lag-{}", self.id)
    }

    /// An `eshop` command with this run's settings in its environment.
    /// Other settings (RELAY_POLL_MS, RELAY_BATCH_SIZE, …) pass through
    /// from the benchmark's environment.
    fn eshop(&self, args: &Args) -> Command {
        let [products, baskets, orders] = self.topics();
        let mut command = Command::new(&args.target.eshop);
        command
            .env("DATABASE_URL", &self.db_url)
            .env(
                "EVENT_BUS_URL",
                match self.bus {
                    Bus::Kafka => format!("kafka://{}", args.kafka_brokers),
                    Bus::Rabbitmq => args.rabbitmq_url.clone(),
                    Bus::None => "none".to_owned(),
                },
            )
            .env("RABBITMQ_EXCHANGE", self.exchange())
            .env("KAFKA_BROKERS", &args.kafka_brokers)
            .env(
                "EVENT_TOPICS",
                format!("Product={products},Basket={baskets},Order={orders}"),
            )
            .env("PROJECTOR_GROUP_PREFIX", format!("bench-lag-{}", self.id))
            .env("DEAD_LETTER_TOPIC", self.dead_letter_topic())
            .env("SEARCH_URL", &args.search_url)
            .env("SEARCH_INDEX_PREFIX", self.index_prefix())
            .env("RELAY_NAME", self.relay_name())
            .env("LOG_FORMAT", "json")
            .env("OTEL_SERVICE_NAME", format!("bench-lag-{}", self.id))
            .env_remove("PROJECTIONS")
            .env_remove("SERVE_API_ONLY")
            .stdin(Stdio::null());
        self.export.apply(&mut command, &args.otlp);
        command
    }

    /// Starts a long-running eshop process, its output in the log folder.
    fn spawn(&self, args: &Args, name: &'static str, argv: &[&str]) -> anyhow::Result<Process> {
        let log = self.logs.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let child = args.target.spawn(
            self.eshop(args)
                .args(argv)
                .stdout(out.try_clone()?)
                .stderr(out),
        )?;
        Ok(Process { name, child, log })
    }

    /// `eshop projections status --json`.
    fn status(&self, args: &Args) -> anyhow::Result<Vec<Value>> {
        let output = self
            .eshop(args)
            .args(["projections", "status", "--json"])
            .env("RUST_LOG", "warn")
            .output()?;
        if !output.status.success() {
            bail!(
                "eshop projections status failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        // Log lines are JSON objects; the status is the one JSON array.
        let start = text.find("\n[").map_or(0, |i| i + 1);
        serde_json::from_str(&text[start..]).context("status output is not a JSON array")
    }
}

/// A child process, stopped with SIGTERM (then SIGKILL) when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "eshop {} exited ({status}); see {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(api: &mut Process, base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        api.check_alive()?;
        if let Ok(response) = client.get(format!("{base}/health/ready")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("eshop did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(
    client: &reqwest::Client,
    url: String,
    body: &Value,
    idempotency_key: Option<String>,
) -> anyhow::Result<Value> {
    let mut request = client.post(url).json(body);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    Ok(body)
}

/// One command of an order, as the client saw it.
struct Sent {
    /// How long after its slot it was sent (zero when not paced).
    late: Duration,
    latency: Duration,
    done_at: Instant,
}

/// A placed order: what the checkout answered, and when.
struct Placed {
    order_id: Uuid,
    consistency_token: i64,
    acked_at: Instant,
}

/// Opens a basket, adds one item, checks out. With `slots`, each command
/// waits for its slot (or for the previous response, whichever is later).
/// Returns the commands that succeeded and, if all did, the order.
async fn place_order(
    client: &reqwest::Client,
    base: &str,
    product: &str,
    slots: Option<[Instant; COMMANDS_PER_ORDER]>,
) -> (Vec<Sent>, anyhow::Result<Placed>) {
    let mut sent = Vec::with_capacity(COMMANDS_PER_ORDER);
    let result = async {
        let mut step = async |i: usize, url: String, body: Value, key: Option<String>| {
            let late = match slots {
                Some(slots) => {
                    tokio::time::sleep_until(slots[i].into()).await;
                    slots[i].elapsed()
                }
                None => Duration::ZERO,
            };
            let started = Instant::now();
            let body = post(client, url, &body, key).await?;
            let done_at = Instant::now();
            sent.push(Sent {
                late,
                latency: done_at - started,
                done_at,
            });
            anyhow::Ok((body, done_at))
        };
        let (basket, _) = step(
            0,
            format!("{base}/baskets"),
            json!({"customer_id": Uuid::now_v7()}),
            None,
        )
        .await?;
        let basket = basket["id"].as_str().context("basket id")?.to_owned();
        step(
            1,
            format!("{base}/baskets/{basket}/items"),
            json!({"product_id": product, "quantity": 1}),
            None,
        )
        .await?;
        let (order, acked_at) = step(
            2,
            format!("{base}/baskets/{basket}/checkout"),
            json!({"shipping_address": {"recipient": "Ada Lovelace", "line1": "12 St James Square",
                "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}}),
            Some(format!("checkout-{basket}")),
        )
        .await?;
        anyhow::Ok(Placed {
            order_id: order["order_id"]
                .as_str()
                .context("order id")?
                .parse()
                .context("order id")?,
            consistency_token: order["consistency_token"]
                .as_str()
                .context("consistency token")?
                .parse()
                .context("consistency token")?,
            acked_at,
        })
    }
    .await;
    (sent, result)
}

async fn register_products(
    client: &reqwest::Client,
    base: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut products = Vec::with_capacity(count);
    for n in 0..count {
        let body = json!({"sku": format!("LAG-{n}"), "name": format!("Product {n}"),
            "description": "Benchmark product",
            "price": {"amount_minor": 100 + n, "currency": "EUR"}, "initial_stock": 1_000_000_000u32});
        products.push(
            post(client, format!("{base}/products"), &body, None).await?["id"]
                .as_str()
                .context("product id")?
                .to_owned(),
        );
    }
    Ok(products)
}

/// Writes `args.backlog_orders` orders as fast as `args.backlog_clients`
/// clients can.
async fn write_backlog(args: &Args, base: &str, products: &Arc<Vec<String>>) -> anyhow::Result<()> {
    let client = eshop_tests::auth::client(eshop_tests::auth::Who::Ops).await;
    let next = Arc::new(AtomicUsize::new(0));
    let bar = bar(
        args.backlog_orders as u64,
        "backlog [{bar:30}] {pos}/{len} orders  {per_sec}",
    )?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.backlog_clients {
        let (client, base, products, next, bar, total) = (
            client.clone(),
            base.to_owned(),
            Arc::clone(products),
            Arc::clone(&next),
            bar.clone(),
            args.backlog_orders,
        );
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(());
                }
                let product = &products[n % products.len()];
                place_order(&client, &base, product, None).await.1?;
                bar.inc(1);
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    bar.finish_and_clear();
    Ok(())
}

/// The last event in the global order, and the number of events.
async fn store_end(db: &mut PgConnection) -> anyhow::Result<(String, i64, i64)> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS txid, global_position, (SELECT count(*) FROM events) AS n \
         FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(&mut *db)
    .await?;
    Ok((
        row.try_get("txid")?,
        row.try_get("global_position")?,
        row.try_get("n")?,
    ))
}

struct Drained {
    events: i64,
    /// From the process's start to the first progress it recorded.
    startup: Duration,
    /// From the first recorded progress to the last.
    steady: Duration,
    /// Events taken in `steady` (all but the first batch).
    steady_events: i64,
}

impl Drained {
    fn rate(&self) -> f64 {
        self.steady_events as f64 / self.steady.as_secs_f64()
    }

    fn total(&self) -> Duration {
        self.startup + self.steady
    }
}

/// Starts the relay and times it until its checkpoint is the store's last
/// event.
async fn drain_relay(
    run: &Run,
    args: &Args,
    db: &mut PgConnection,
) -> anyhow::Result<(Process, Drained)> {
    let (last_txid, last_position, events) = store_end(db).await?;
    let first_position: i64 = sqlx::query_scalar("SELECT min(global_position) FROM events")
        .fetch_one(&mut *db)
        .await?;
    let bar = bar(
        u64::try_from(last_position - first_position + 1)?,
        "relay   [{bar:30}] {pos}/{len} positions  {msg}",
    )?;
    let started = Instant::now();
    let mut relay = run.spawn(args, "relay", &["relay"])?;
    let mut first: Option<(Instant, i64)> = None;
    loop {
        relay.check_alive()?;
        let row = sqlx::query(
            "SELECT global_position, (transaction_id, global_position) >= ($2::text::xid8, $3) AS done, \
               transaction_id::text AS txid \
             FROM relay_checkpoints WHERE name = $1",
        )
        .bind(run.relay_name())
        .bind(&last_txid)
        .bind(last_position)
        .fetch_optional(&mut *db)
        .await?;
        let now = Instant::now();
        if let Some(row) = row {
            let position: i64 = row.try_get("global_position")?;
            bar.set_position(u64::try_from(position - first_position + 1).unwrap_or(0));
            if first.is_none() {
                let txid: String = row.try_get("txid")?;
                let taken: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM events WHERE (transaction_id, global_position) <= ($1::text::xid8, $2)",
                )
                .bind(txid)
                .bind(position)
                .fetch_one(&mut *db)
                .await?;
                first = Some((now, taken));
            }
            if row.try_get("done")? {
                bar.finish_and_clear();
                let (first_at, first_taken) = first.context("first checkpoint")?;
                return Ok((
                    relay,
                    Drained {
                        events,
                        startup: first_at - started,
                        steady: now - first_at,
                        steady_events: events - first_taken,
                    },
                ));
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the relay did not catch up within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The sum of the high watermarks of each topic's partitions, as a
/// consumer reading with `isolation` sees them. Blocking.
fn high_watermarks(
    brokers: &str,
    topics: &[String],
    isolation: &str,
) -> anyhow::Result<HashMap<String, i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let timeout = Duration::from_secs(5);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-lag.watermarks")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()?;
    let mut sums = HashMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let mut sum = 0;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
            sum += high - low;
        }
        sums.insert(topic.clone(), sum);
    }
    Ok(sums)
}

/// Per topic: its events in the store and what the broker reports.
async fn check_watermarks(
    run: &Run,
    args: &Args,
    db: &mut PgConnection,
) -> anyhow::Result<Vec<(String, i64, i64, i64)>> {
    let topics = run.topics().to_vec();
    let (brokers, names) = (args.kafka_brokers.clone(), topics.clone());
    let (committed, uncommitted) = tokio::task::spawn_blocking(move || {
        anyhow::Ok((
            high_watermarks(&brokers, &names, "read_committed")?,
            high_watermarks(&brokers, &names, "read_uncommitted")?,
        ))
    })
    .await??;
    let mut out = Vec::new();
    for (topic, aggregate_type) in topics.into_iter().zip(["Product", "Basket", "Order"]) {
        let events: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
                .bind(aggregate_type)
                .fetch_one(&mut *db)
                .await?;
        let (c, u) = (
            committed.get(&topic).copied().unwrap_or(0),
            uncommitted.get(&topic).copied().unwrap_or(0),
        );
        out.push((topic, events, c, u));
    }
    Ok(out)
}

/// What one projection has to take: the messages of its topics, counted
/// in the event store (every event of the store is in the backlog), and
/// per partition the offset it starts from.
struct Target {
    messages: i64,
    from: HashMap<(String, i32), i64>,
}

async fn targets(
    run: &Run,
    status: &[Value],
    db: &mut PgConnection,
) -> anyhow::Result<BTreeMap<String, Target>> {
    let counts: HashMap<String, i64> =
        sqlx::query_as("SELECT aggregate_type, count(*) FROM events GROUP BY aggregate_type")
            .fetch_all(&mut *db)
            .await?
            .into_iter()
            .collect();
    if run.bus == Bus::None {
        // One feed per projection: every event of its aggregate types.
        return Ok(projections::views::catalog()
            .into_iter()
            .map(|(name, types)| {
                let messages = types.iter().filter_map(|t| counts.get(*t)).sum();
                (
                    name.to_owned(),
                    Target {
                        messages,
                        from: HashMap::new(),
                    },
                )
            })
            .collect());
    }
    let [products, baskets, orders] = run.topics();
    let of_topic = |topic: &str| {
        let aggregate_type = if topic == products {
            "Product"
        } else if topic == baskets {
            "Basket"
        } else if topic == orders {
            "Order"
        } else {
            return 0;
        };
        counts.get(aggregate_type).copied().unwrap_or(0)
    };
    let mut targets = BTreeMap::new();
    for projection in status {
        let name = projection["projection"]
            .as_str()
            .context("projection name")?;
        let mut target = Target {
            messages: 0,
            from: HashMap::new(),
        };
        let mut topics = std::collections::BTreeSet::new();
        for p in projection["partitions"].as_array().context("partitions")? {
            let topic = p["topic"].as_str().context("topic")?.to_owned();
            let from = p["next_offset"].as_i64().context("next_offset")?;
            target.from.insert(
                (
                    topic.clone(),
                    i32::try_from(p["partition"].as_i64().context("partition")?)?,
                ),
                from,
            );
            topics.insert(topic);
        }
        target.messages = topics.iter().map(|t| of_topic(t)).sum();
        targets.insert(name.to_owned(), target);
    }
    Ok(targets)
}

struct Projected {
    drained: Drained,
    /// Per projection: messages, and seconds from the first recorded
    /// progress of any projection to its own last message.
    per_projection: Vec<(String, i64, f64)>,
}

/// Starts the projectors and times them until every projection has taken
/// every message of its topics (by the offsets it records with each view
/// change).
async fn drain_projectors(
    run: &Run,
    args: &Args,
    db: &mut PgConnection,
    targets: &BTreeMap<String, Target>,
) -> anyhow::Result<(Process, Projected)> {
    let total: i64 = targets.values().map(|t| t.messages).sum();
    let bar = bar(
        u64::try_from(total)?,
        "project [{bar:30}] {pos}/{len} messages  {per_sec}",
    )?;
    let started = Instant::now();
    let mut project = run.spawn(args, "project", &["project"])?;
    let mut first: Option<(Instant, i64)> = None;
    let mut done_at: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        project.check_alive()?;
        let rows =
            sqlx::query("SELECT projection, topic, partition, next_offset FROM projection_offsets")
                .fetch_all(&mut *db)
                .await?;
        let now = Instant::now();
        let mut taken_by: HashMap<String, i64> = HashMap::new();
        if run.bus == Bus::None {
            // Each projection's checkpoint in the feed: the events of its
            // types up to there.
            for (name, types) in projections::views::catalog() {
                let taken = store_messages_taken(db, name, types).await?;
                taken_by.insert(name.to_owned(), taken);
            }
        }
        for row in rows.iter().filter(|_| run.bus != Bus::None) {
            let name: String = row.try_get("projection")?;
            let Some(target) = targets.get(&name) else {
                continue;
            };
            let key = (row.try_get("topic")?, row.try_get("partition")?);
            let next: i64 = row.try_get("next_offset")?;
            let from = target.from.get(&key).copied().unwrap_or(0);
            *taken_by.entry(name).or_default() += (next - from).max(0);
        }
        let mut taken = 0;
        for (name, target) in targets {
            let by = taken_by
                .get(name)
                .copied()
                .unwrap_or(0)
                .min(target.messages);
            taken += by;
            if by >= target.messages {
                done_at.entry(name.clone()).or_insert(now);
            }
        }
        bar.set_position(u64::try_from(taken).unwrap_or(0));
        if first.is_none() && taken > 0 {
            first = Some((now, taken));
        }
        if done_at.len() == targets.len() {
            bar.finish_and_clear();
            let (first_at, first_taken) = first.unwrap_or((now, 0));
            let per_projection = targets
                .iter()
                .map(|(name, target)| {
                    let at = done_at.get(name).copied().unwrap_or(now);
                    (
                        name.clone(),
                        target.messages,
                        at.saturating_duration_since(first_at).as_secs_f64(),
                    )
                })
                .collect();
            return Ok((
                project,
                Projected {
                    drained: Drained {
                        events: total,
                        startup: first_at - started,
                        steady: now - first_at,
                        steady_events: total - first_taken,
                    },
                    per_projection,
                },
            ));
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("the projectors did not catch up within 900 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An order the watcher waits for.
struct Pending {
    acked_at: Instant,
    consistency_token: i64,
    measured: bool,
    relayed: bool,
}

/// What the watcher shares with the progress line.
struct Watch {
    lag: Mutex<Histogram<u64>>,
    relay_lag: Mutex<Histogram<u64>>,
    pending: AtomicUsize,
    queries: AtomicU64,
}

/// Waits for every pending order in `order_view` by listening to its
/// change notifications (`eshop_order_view`, sent by a trigger from the
/// projector's transaction, so delivered when the change commits): the
/// lag is taken when the first notification of the order arrives, with no
/// polling load on the machine under test. With a relay, also polls the
/// relay's checkpoint every `relay_poll` for the relayed part of the lag.
/// Returns, once the senders are gone and nothing is pending or `drain`
/// has passed since, the orders never seen.
async fn watch(
    mut db: PgConnection,
    mut listener: PgListener,
    relay_name: Option<String>,
    mut orders: mpsc::UnboundedReceiver<(Uuid, Pending)>,
    relay_poll: Duration,
    drain: Duration,
    shared: Arc<Watch>,
) -> anyhow::Result<usize> {
    let mut pending: HashMap<Uuid, Pending> = HashMap::new();
    // Orders whose row committed before their checkout's 2xx reached the
    // pacer: a lag of zero once the 2xx is registered.
    let mut early: HashMap<Uuid, Instant> = HashMap::new();
    let mut closed_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(relay_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        shared.pending.store(pending.len(), Ordering::Relaxed);
        if let Some(closed_at) = closed_at
            && (pending.is_empty() || closed_at.elapsed() > drain)
        {
            return Ok(pending.len());
        }
        let give_up = closed_at.map_or_else(
            || tokio::time::Instant::now() + drain,
            |closed| (closed + drain).into(),
        );
        tokio::select! {
            notification = listener.try_recv() => {
                // A lost connection loses notifications: the figures
                // would be wrong, so the run stops.
                let notification = notification?
                    .context("the listener's connection to PostgreSQL was lost")?;
                let now = Instant::now();
                shared.queries.fetch_add(1, Ordering::Relaxed);
                let change: Value = serde_json::from_str(notification.payload())?;
                let id: Uuid = serde_json::from_value(change["order_id"].clone())
                    .context("an eshop_order_view notification without an order_id")?;
                match pending.remove(&id) {
                    Some(order) if order.measured => {
                        shared.lag.lock().expect("not poisoned").record(micros(now - order.acked_at))?;
                    }
                    Some(_) => {}
                    None => {
                        early.entry(id).or_insert(now);
                    }
                }
            }
            received = orders.recv(), if closed_at.is_none() => match received {
                Some((id, order)) => match early.remove(&id) {
                    Some(_) if order.measured => shared.lag.lock().expect("not poisoned").record(0)?,
                    Some(_) => {}
                    None => {
                        pending.insert(id, order);
                    }
                },
                None => {
                    closed_at = Some(Instant::now());
                }
            },
            _ = tick.tick(), if relay_name.is_some() && !pending.is_empty() => {
                let relayed: Option<i64> = sqlx::query_scalar(
                    "SELECT global_position FROM relay_checkpoints WHERE name = $1",
                )
                .bind(relay_name.as_deref())
                .fetch_optional(&mut db)
                .await?;
                let now = Instant::now();
                if let Some(relayed) = relayed {
                    let mut relay_lag = shared.relay_lag.lock().expect("not poisoned");
                    for order in pending.values_mut() {
                        if !order.relayed && order.consistency_token <= relayed {
                            order.relayed = true;
                            if order.measured {
                                relay_lag.record(micros(now - order.acked_at))?;
                            }
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(give_up) => {}
        }
        // Notifications of orders the pacer never registers (a failed
        // checkout's order cannot exist; warm-up orders are registered
        // too) cannot pile up: forget those older than the drain time.
        if early.len() > 10_000 {
            early.retain(|_, seen| seen.elapsed() < drain);
        }
    }
}

/// What the paced clients saw.
#[derive(Default)]
struct Client {
    ok: u64,
    failed: u64,
    late: u64,
    sent: u64,
    max_late: Duration,
    errors: Vec<String>,
}

struct Paced {
    lag: Histogram<u64>,
    relay_lag: Histogram<u64>,
    latency: Histogram<u64>,
    checkout_latency: Histogram<u64>,
    client: Client,
    /// Commands answered 2xx within the measured window.
    ok_in_window: u64,
    orders: u64,
    unseen: usize,
    pacer_max_late: Duration,
    pacer_late: u64,
    max_in_flight: i64,
    queries: u64,
}

/// The paced phase: orders at fixed slots, three commands per order, each
/// `COMMANDS_PER_ORDER / rate` apart; a watcher measures the lag.
async fn run_paced(
    run: &Run,
    args: &Args,
    base: &str,
    products: &Arc<Vec<String>>,
) -> anyhow::Result<Paced> {
    let watcher_db = PgConnection::connect(&run.db_url).await?;
    let mut listener = PgListener::connect(&run.db_url).await?;
    listener.listen("eshop_order_view").await?;
    let shared = Arc::new(Watch {
        lag: Mutex::new(histogram()),
        relay_lag: Mutex::new(histogram()),
        pending: AtomicUsize::new(0),
        queries: AtomicU64::new(0),
    });
    let (orders, received) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch(
        watcher_db,
        listener,
        (run.bus != Bus::None).then(|| run.relay_name()),
        received,
        Duration::from_millis(args.poll_ms),
        Duration::from_secs(args.drain_timeout),
        Arc::clone(&shared),
    ));

    let client = eshop_tests::auth::client_builder(eshop_tests::auth::Who::Ops)
        .await
        .pool_max_idle_per_host(64)
        .build()?;
    let gap = Duration::from_secs_f64(1.0 / args.rate);
    let per_order = gap * u32::try_from(COMMANDS_PER_ORDER)?;
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + Duration::from_secs(args.warmup);
    let measure_to = measure_from + Duration::from_secs(args.duration);
    let stats = Arc::new(Mutex::new(Client::default()));
    let latency = Arc::new(Mutex::new((histogram(), histogram())));
    let ok_in_window = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicI64::new(0));
    let max_in_flight = Arc::new(AtomicI64::new(0));

    let pacer = {
        let (client, base, products, orders) = (
            client.clone(),
            base.to_owned(),
            Arc::clone(products),
            orders.clone(),
        );
        let (stats, latency, ok_in_window, in_flight, max_in_flight) = (
            Arc::clone(&stats),
            Arc::clone(&latency),
            Arc::clone(&ok_in_window),
            Arc::clone(&in_flight),
            Arc::clone(&max_in_flight),
        );
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let (mut max_late, mut late, mut n) = (Duration::ZERO, 0u64, 0u64);
            loop {
                // Open loop: slot k is fixed at start + k × per_order,
                // whatever happened to earlier orders.
                let at = start + per_order.mul_f64(n as f64);
                if at >= measure_to {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let behind = at.elapsed();
                max_late = max_late.max(behind);
                late += u64::from(behind > LATE);
                let slots = [at, at + gap, at + gap * 2];
                let product = products[usize::try_from(n)? % products.len()].clone();
                let (client, base, orders, stats, latency, ok_in_window, in_flight) = (
                    client.clone(),
                    base.clone(),
                    orders.clone(),
                    Arc::clone(&stats),
                    Arc::clone(&latency),
                    Arc::clone(&ok_in_window),
                    Arc::clone(&in_flight),
                );
                let flying = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                max_in_flight.fetch_max(flying, Ordering::Relaxed);
                tasks.spawn(async move {
                    let (sent, placed) = place_order(&client, &base, &product, Some(slots)).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let measured = at >= measure_from;
                    let ok_now = sent
                        .iter()
                        .filter(|s| s.done_at >= measure_from && s.done_at < measure_to)
                        .count();
                    ok_in_window.fetch_add(ok_now as u64, Ordering::Relaxed);
                    if measured {
                        let mut latency = latency.lock().expect("not poisoned");
                        for (i, s) in sent.iter().enumerate() {
                            latency.0.record(micros(s.latency))?;
                            if i == COMMANDS_PER_ORDER - 1 {
                                latency.1.record(micros(s.latency))?;
                            }
                        }
                        drop(latency);
                        let mut stats = stats.lock().expect("not poisoned");
                        stats.ok += sent.len() as u64;
                        stats.failed += (COMMANDS_PER_ORDER - sent.len()) as u64;
                        stats.sent += sent.len() as u64;
                        for s in &sent {
                            stats.max_late = stats.max_late.max(s.late);
                            stats.late += u64::from(s.late > LATE);
                        }
                        if let Err(error) = &placed
                            && stats.errors.len() < 5
                        {
                            stats.errors.push(format!("{error:#}"));
                        }
                    }
                    if let Ok(placed) = placed {
                        let _ = orders.send((
                            placed.order_id,
                            Pending {
                                acked_at: placed.acked_at,
                                consistency_token: placed.consistency_token,
                                measured,
                                relayed: false,
                            },
                        ));
                    }
                    anyhow::Ok(())
                });
                while let Some(result) = tasks.try_join_next() {
                    result??;
                }
                n += 1;
            }
            while let Some(result) = tasks.join_next().await {
                result??;
            }
            anyhow::Ok((n, max_late, late))
        })
    };
    drop(orders);

    let total = args.warmup + args.duration;
    let bar = bar(total, "paced   [{bar:30}] {pos}/{len} s  {msg}")?;
    for second in 1..=total {
        tokio::time::sleep_until((start + Duration::from_secs(second)).into()).await;
        bar.set_position(second);
        let lag = shared.lag.lock().expect("not poisoned");
        let phase = if second <= args.warmup {
            "warm-up".to_owned()
        } else {
            format!(
                "{:.0} commands/s, lag p99 {:.1} ms",
                ok_in_window.load(Ordering::Relaxed) as f64 / measure_from.elapsed().as_secs_f64(),
                ms(&lag, 0.99)
            )
        };
        bar.set_message(format!(
            "{phase}, {} orders in flight, {} awaited in order_view",
            in_flight.load(Ordering::Relaxed),
            shared.pending.load(Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
    let (orders, pacer_max_late, pacer_late) = pacer.await??;
    eprintln!("waiting for the last orders in order_view …");
    let unseen = watcher.await??;
    let client = std::mem::take(&mut *stats.lock().expect("not poisoned"));
    let (latency, checkout_latency) = std::mem::replace(
        &mut *latency.lock().expect("not poisoned"),
        (histogram(), histogram()),
    );
    let lag = shared.lag.lock().expect("not poisoned").clone();
    let relay_lag = shared.relay_lag.lock().expect("not poisoned").clone();
    Ok(Paced {
        lag,
        relay_lag,
        latency,
        checkout_latency,
        client,
        ok_in_window: ok_in_window.load(Ordering::Relaxed),
        orders,
        unseen,
        pacer_max_late,
        pacer_late,
        max_in_flight: max_in_flight.load(Ordering::Relaxed),
        queries: shared.queries.load(Ordering::Relaxed),
    })
}

const ORDER_LINES: &str = r#"[{"product_id": "01a20086-6ce6-71da-9548-f2cad798d11d", "sku": "LAG-1", "name": "Product 1", "unit_price": {"amount_minor": 101, "currency": "EUR"}, "quantity": 1}]"#;
const ADDRESS: &str = r#"{"recipient": "Ada Lovelace", "line1": "12 St James Square", "line2": null, "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"}"#;
const HISTORY: &str = r#"[{"status": "placed", "at": "2026-11-22T10:00:00.123456Z"}]"#;

/// The transaction a projector runs per event (here an OrderPlaced into
/// `order_view`): record the partition's offset, claim the aggregate's
/// sequence, insert the view row; one commit.
fn pgbench_script() -> String {
    format!(
        "\\set n random(1, 2000000000)\n\
         BEGIN;\n\
         INSERT INTO projection_offsets AS p (projection, topic, partition, next_offset, global_position, event_time) \
         VALUES ('pgbench', 'pgbench', :client_id, :n, :n, now()) \
         ON CONFLICT (projection, topic, partition) DO UPDATE \
         SET next_offset = GREATEST(p.next_offset, EXCLUDED.next_offset), \
         global_position = GREATEST(p.global_position, EXCLUDED.global_position), \
         event_time = GREATEST(p.event_time, EXCLUDED.event_time), updated_at = now();\n\
         INSERT INTO projection_progress (projection, aggregate_id, sequence) VALUES ('pgbench', gen_random_uuid()::text, 1) \
         ON CONFLICT (projection, aggregate_id) DO UPDATE SET sequence = EXCLUDED.sequence \
         WHERE projection_progress.sequence < EXCLUDED.sequence;\n\
         INSERT INTO order_view (order_id, customer_id, basket_id, status, total_minor, currency, lines, \
         shipping_address, status_history, placed_at, updated_at, version) \
         VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'placed', 101, 'EUR', \
         '{ORDER_LINES}', '{ADDRESS}', '{HISTORY}', now(), now(), 1);\n\
         END;\n"
    )
}

fn run_pgbench(args: &Args, db_url: &str, clients: usize) -> anyhow::Result<f64> {
    eshop_tests::pgbench::tps(&pgbench_script(), db_url, clients, args.baseline_duration)
}

/// pgbench with one client (one projection, or the relay: one pipeline
/// each) and with one client per projection (the projectors together).
fn baseline(args: &Args, db_url: &str, projections: usize) -> anyhow::Result<(f64, f64)> {
    Ok((
        run_pgbench(args, db_url, 1)?,
        run_pgbench(args, db_url, projections)?,
    ))
}

/// Deletes this run's lanes, dead-letter stream and exchange on RabbitMQ
/// (best effort).
async fn clean_up_rabbitmq(run: &Run, args: &Args) {
    let lanes = projections::rabbit::RabbitOptions::default_lanes();
    let mut streams: Vec<String> = run
        .topics()
        .iter()
        .flat_map(|topic| {
            (0..lanes).map(move |lane| projections::rabbit::RabbitConfig::stream(topic, lane))
        })
        .collect();
    streams.push(run.dead_letter_topic());
    let (url, exchange) = (args.rabbitmq_url.clone(), run.exchange());
    let _ = tokio::task::spawn_blocking(move || {
        eshop_tests::rabbit::delete(&url, &exchange, streams);
    })
    .await;
}

/// Deletes this run's topics or streams and search indices (best effort).
async fn clean_up(run: &Run, args: &Args) {
    if run.bus == Bus::Rabbitmq {
        clean_up_rabbitmq(run, args).await;
    }
    if let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .create::<AdminClient<DefaultClientContext>>()
    {
        let mut topics = run.topics().to_vec();
        topics.push(run.dead_letter_topic());
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let _ = tokio::time::timeout(
            Duration::from_secs(15),
            admin.delete_topics(&topics, &options),
        )
        .await;
    }
    let client = reqwest::Client::new();
    let prefix = format!("{}-", run.index_prefix());
    if let Ok(response) = client
        .get(format!("{}/_alias", args.search_url))
        .send()
        .await
        && let Ok(Value::Object(indices)) = response.json::<Value>().await
    {
        for index in indices.keys().filter(|i| i.starts_with(&prefix)) {
            let _ = client
                .delete(format!("{}/{index}", args.search_url))
                .send()
                .await;
        }
    }
}

struct Report {
    bus: Bus,
    export: Export,
    paced: Paced,
    /// Where the CPU went during the paced phase (drain included).
    cpu: CpuSplit,
    /// The relay's drain (none without a broker).
    relay: Option<Drained>,
    projected: Projected,
    before: (f64, f64),
    after: (f64, f64),
    projections: usize,
    /// Per topic: events, and the high watermarks' sums (read_committed,
    /// read_uncommitted) once the relay had published everything.
    watermarks: Vec<(String, i64, i64, i64)>,
}

/// Whose CPU time a process's is, for the paced phase's split: eshop's
/// processes by their part, the backing services by what they run.
fn role(eshop: &[(u32, &'static str)], pid: u32, comm: &str, cmdline: &str) -> Option<String> {
    if let Some((_, name)) = eshop.iter().find(|(p, _)| *p == pid) {
        return Some(format!("eshop {name}"));
    }
    if pid == std::process::id() {
        return Some("bench-lag".to_owned());
    }
    let role = match comm {
        "postgres" => "postgres",
        "beam.smp" => "rabbitmq",
        "jaeger" => "jaeger",
        "redis-server" => "redis",
        "memcached" => "memcached",
        "java" if cmdline.contains("kafka.Kafka") => "kafka",
        "java" if cmdline.contains("keycloak") => "keycloak",
        "java" if cmdline.contains("opensearch") => "opensearch",
        _ => return None,
    };
    Some(role.to_owned())
}

async fn bench(run: &Run, args: &Args) -> anyhow::Result<Report> {
    // The baseline gets a database of its own with eshop's schema, so its
    // rows never reach the relay or the views measured here.
    let baseline_url = args.target.database_url(BASELINE_DATABASE);
    let status = run
        .eshop(args)
        .env("DATABASE_URL", &baseline_url)
        .arg("migrate")
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("eshop migrate failed on the baseline database");
    }
    let projections = projections::projector::names().len();
    let before = baseline(args, &baseline_url, projections)?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let mut api = run.spawn(args, "api", &["serve", "--api-only", "--listen", &listen])?;
    wait_ready(&mut api, &base).await?;
    let mut db = PgConnection::connect(&run.db_url).await?;

    let client = eshop_tests::auth::client(eshop_tests::auth::Who::Ops).await;
    eprintln!("registering {} products …", args.products);
    let products = Arc::new(register_products(&client, &base, args.products).await?);
    eprintln!(
        "backlog: {} orders from {} clients, relay and projectors stopped …",
        args.backlog_orders, args.backlog_clients
    );
    write_backlog(args, &base, &products).await?;

    let (relay, relay_drained) = if run.bus == Bus::None {
        (None, None)
    } else {
        let (relay, drained) = drain_relay(run, args, &mut db).await?;
        eprintln!(
            "relay: {} events, {:.0} events/s",
            drained.events,
            drained.rate()
        );
        (Some(relay), Some(drained))
    };
    let targets = targets(run, &run.status(args)?, &mut db).await?;
    let watermarks = if run.bus == Bus::Kafka {
        check_watermarks(run, args, &mut db).await?
    } else {
        Vec::new()
    };
    let (project, projected) = drain_projectors(run, args, &mut db, &targets).await?;
    eprintln!(
        "projectors: {} messages, {:.0} messages/s",
        projected.drained.events,
        projected.drained.rate()
    );
    for status in run.status(args)? {
        let (behind, dead) = (&status["events_behind"], &status["dead_letters"]);
        if behind != 0 || dead != 0 {
            bail!(
                "projection {} is not caught up after the drain: {behind} behind, {dead} dead letters",
                status["projection"]
            );
        }
    }

    eprintln!(
        "paced: {} commands/s, {} s warm-up, {} s measured, relay and projectors running …",
        args.rate, args.warmup, args.duration
    );
    let mut processes: Vec<Process> = [Some(api), relay, Some(project)]
        .into_iter()
        .flatten()
        .collect();
    let eshop: Vec<(u32, &'static str)> = processes
        .iter()
        .map(|process| (process.child.id(), process.name))
        .collect();
    let classify = |pid: u32, comm: &str, cmdline: &str| role(&eshop, pid, comm, cmdline);
    let cpu_before = CpuSample::take(&classify)?;
    let paced = run_paced(run, args, &base, &products).await?;
    let cpu = cpu_before.since(&classify)?;
    for process in &mut processes {
        process.check_alive()?;
    }
    drop(processes);
    drop(db);

    let after = baseline(args, &baseline_url, projections)?;
    Ok(Report {
        bus: run.bus,
        export: run.export,
        paced,
        cpu,
        relay: relay_drained,
        projected,
        before,
        after,
        projections,
        watermarks,
    })
}

fn print_report(args: &Args, report: &Report) {
    let Report {
        bus,
        export,
        paced,
        cpu,
        relay,
        projected,
        before,
        after,
        projections,
        watermarks,
    } = report;
    let one = f64::midpoint(before.0, after.0);
    let many = f64::midpoint(before.1, after.1);
    let achieved = paced.ok_in_window as f64 / args.duration as f64;
    let lag = &paced.lag;
    let relay_lag = &paced.relay_lag;
    println!();
    println!("== event bus: {}, {}", bus.name(), export.name());
    println!(
        "paced load:           {:.0} commands/s intended, {achieved:.1} achieved (2xx within the {} s window); \
         {} commands per order (open basket, add item, checkout)",
        args.rate, args.duration, COMMANDS_PER_ORDER
    );
    println!(
        "measured orders:      {} ok commands, {} failed; {} orders scheduled in all",
        paced.client.ok, paced.client.failed, paced.orders
    );
    for error in &paced.client.errors {
        println!("  error: {error}");
    }
    println!(
        "pacer:                wake-up max {:.1} ms late ({} wake-ups > {} ms); commands sent > {} ms after their slot: {} of {} (max {:.1} ms); max {} orders in flight",
        paced.pacer_max_late.as_secs_f64() * 1000.0,
        paced.pacer_late,
        LATE.as_millis(),
        LATE.as_millis(),
        paced.client.late,
        paced.client.sent,
        paced.client.max_late.as_secs_f64() * 1000.0,
        paced.max_in_flight
    );
    if paced.pacer_late > 0 || paced.client.late > paced.client.sent / 100 {
        println!("                      the pacer FELL BEHIND its schedule");
    }
    println!(
        "command latency:      all p50 {:.2} ms, p99 {:.2} ms; checkout p50 {:.2} ms, p99 {:.2} ms",
        ms(&paced.latency, 0.5),
        ms(&paced.latency, 0.99),
        ms(&paced.checkout_latency, 0.5),
        ms(&paced.checkout_latency, 0.99)
    );
    println!("CPU, paced phase:     {}", cpu.line());
    println!(
        "lag 2xx → order_view: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} orders; {} not visible {} s after the load; {} change notifications)",
        ms(lag, 0.5),
        ms(lag, 0.99),
        lag.max() as f64 / 1000.0,
        lag.len(),
        paced.unseen,
        args.drain_timeout,
        paced.queries
    );
    if *bus == Bus::None {
        println!("  no relay: the projectors read the event store");
    } else {
        println!(
            "  of which → relayed: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (until the relay checkpoint passed the checkout's position)",
            ms(relay_lag, 0.5),
            ms(relay_lag, 0.99),
            relay_lag.max() as f64 / 1000.0
        );
    }
    match relay {
        Some(relay) => println!(
            "relay backlog:        {} events; {:.0} events/s after the first batch ({:.2} s start-up, {:.2} s in all)",
            relay.events,
            relay.rate(),
            relay.startup.as_secs_f64(),
            relay.total().as_secs_f64()
        ),
        None => println!("relay backlog:        no relay (the projectors read the event store)"),
    }
    let d = &projected.drained;
    println!(
        "projector backlog:    {} projections took {} messages; {:.0} messages/s together after the first ({:.2} s start-up, {:.2} s in all)",
        projections,
        d.events,
        d.rate(),
        d.startup.as_secs_f64(),
        d.total().as_secs_f64()
    );
    for (name, messages, seconds) in &projected.per_projection {
        // Done by the first progress the benchmark saw: no time to divide
        // by (the benchmark looks every 20 ms).
        let rate = if *seconds < 0.02 {
            "done before the first look, too fast to time".to_owned()
        } else {
            format!("{:>6.0} messages/s", *messages as f64 / seconds)
        };
        println!("  {name:<16} {messages:>6} messages in {seconds:>6.2} s: {rate}");
    }
    for (topic, events, committed, uncommitted) in watermarks {
        if committed != events || uncommitted != events {
            println!(
                "  note: {topic} holds {events} events, but the broker's high watermarks of its partitions add up to \
                 {committed} (read_committed) and {uncommitted} (read_uncommitted); eshop projections status reads \
                 the partitions' ends instead"
            );
        }
    }
    println!(
        "pgbench equivalent:   1 client {one:.0} TPS (before {:.0}, after {:.0}); {projections} clients {many:.0} TPS (before {:.0}, after {:.0})",
        before.0, after.0, before.1, after.1
    );
    let relay_rate = relay.as_ref().map(Drained::rate);
    println!(
        "ratios:               relay/pgbench(1) {}; projectors/pgbench({projections}) {:.2}",
        relay_rate.map_or_else(|| "n/a".to_owned(), |r| format!("{:.2}", r / one)),
        d.rate() / many
    );
    println!(
        "| {} ({}) | {:.0} | {achieved:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} | {:.2} | {:.0} / {:.0} | {:.0} / {:.0} |",
        bus.name(),
        export.name(),
        args.rate,
        ms(lag, 0.5),
        ms(lag, 0.99),
        lag.max() as f64 / 1000.0,
        relay_rate.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.0}")),
        relay_rate.map_or_else(|| "n/a".to_owned(), |r| format!("{:.2}", r / one)),
        d.rate(),
        d.rate() / many,
        before.0,
        after.0,
        before.1,
        after.1
    );
}

/// The buses side by side, and how each compares with the first measured
/// (Kafka's p99, when it ran).
fn print_comparison(reports: &[Report]) {
    if reports.len() < 2 {
        return;
    }
    println!();
    println!(
        "| bus | export | lag p50 ms | lag p99 ms | p99 / kafka p99 | projectors msg/s | projectors / pgbench |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let kafka = reports
        .iter()
        .find(|r| r.bus == Bus::Kafka && r.export == Export::Off)
        .map(|r| ms(&r.paced.lag, 0.99));
    for report in reports {
        let p99 = ms(&report.paced.lag, 0.99);
        let many = f64::midpoint(report.before.1, report.after.1);
        println!(
            "| {} | {} | {:.1} | {p99:.1} | {} | {:.0} | {:.2} |",
            report.bus.name(),
            report.export.name(),
            ms(&report.paced.lag, 0.5),
            kafka.map_or_else(|| "n/a".to_owned(), |k| format!("{:.2}", p99 / k)),
            report.projected.drained.rate(),
            report.projected.drained.rate() / many
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rate <= 0.0 || args.duration == 0 {
        bail!("--rate and --duration must be positive");
    }
    let mut admin = PgConnection::connect(&args.target.admin_url)
        .await
        .context("PostgreSQL must be running")?;
    let mut reports = Vec::new();
    let runs: Vec<(Bus, Export)> = args
        .bus
        .iter()
        .flat_map(|&bus| args.export.iter().map(move |&export| (bus, export)))
        .collect();
    for (bus, export) in runs {
        let id = Uuid::now_v7().simple().to_string();
        let logs = std::env::temp_dir().join(format!("eshop-bench-lag-{id}"));
        std::fs::create_dir_all(&logs)?;
        let run = Run {
            db_url: args.target.database_url(DATABASE),
            id,
            logs,
            bus,
            export,
        };
        eprintln!("== event bus: {}, {}", bus.name(), export.name());
        recreate_database(&mut admin, DATABASE).await?;
        recreate_database(&mut admin, BASELINE_DATABASE).await?;
        let result = tokio::select! {
            result = bench(&run, &args) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        if !args.keep {
            clean_up(&run, &args).await;
            for name in [DATABASE, BASELINE_DATABASE] {
                drop_database(&mut admin, name).await?;
            }
        }
        let report = result.with_context(|| format!("logs in {}", run.logs.display()))?;
        if !args.keep {
            let _ = remove_logs(&run.logs);
        }
        print_report(&args, &report);
        reports.push(report);
    }
    print_comparison(&reports);
    Ok(())
}

fn remove_logs(logs: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(logs)
}
