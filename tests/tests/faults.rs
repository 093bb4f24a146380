//! Fault tests with real processes: `kill -9` of the relay and the
//! projector under load, `kill -9` of the leader of a busy partition in a
//! three-broker Kafka cluster, a broker that stops answering for 20
//! seconds and one stopped again and again, a killed `eshop serve` that
//! resumes projecting at once, a projection held up until its consumer is
//! replaced, and two projector processes sharing one consumer group. Each
//! ends by comparing the views and the index with a from-scratch build of
//! the same events by fresh single processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use eshop_tests::fault::{
    Projected, assert_no_failures, assert_verified, caught_up, chaos, scratch_build, shop_load,
};
use eshop_tests::{
    EshopProcess, KafkaCluster, ProcessStack, TestBroker, TestBus, TestDb, eventually,
};

/// No event lost and none applied twice: one order row per OrderPlaced, the
/// views equal a from-scratch build by fresh processes, and `eshop
/// projections verify` (the audit operators schedule) finds nothing.
async fn assert_complete(stack: &ProcessStack) {
    let ProcessStack {
        db, search, env, ..
    } = stack;
    assert_verified(env).await;
    let placed = db
        .count("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
        .await;
    assert_eq!(db.count("SELECT count(*) FROM order_view").await, placed);
    assert_eq!(search.documents("orders").await.len() as i64, placed);
    let live = Projected::read(db, search).await;
    let scratch = scratch_build(db).await;
    live.assert_same(&scratch);
}

/// How a test ends: within `deadline` every projection catches up, `serve`
/// still runs, and nothing is lost or applied twice.
async fn assert_recovered(stack: &ProcessStack, serve: &mut EshopProcess, deadline: Duration) {
    caught_up(&stack.env, deadline).await;
    assert!(serve.running(), "see {}", serve.log.display());
    assert_complete(stack).await;
}

/// Sends rounds of shop traffic (`products` products and `orders` orders
/// a round, four commands at a time) until `done`; returns every command
/// that failed.
async fn load_until(
    done: &AtomicBool,
    base: &str,
    prefix: &str,
    (products, orders): (usize, usize),
    sent: &Arc<AtomicU64>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut round = 0;
    while !done.load(Ordering::Relaxed) {
        let sku_prefix = format!("{prefix}R{round}");
        let report = shop_load(base, &sku_prefix, products, orders, 4, sent.clone()).await;
        failures.extend(report.failures);
        round += 1;
    }
    failures
}

/// Waits (60 s at most) until `order_view` holds at least `orders` rows.
async fn orders_projected(db: &TestDb, orders: i64) {
    let what = format!("{orders} orders projected");
    eventually(Duration::from_secs(60), &what, || async {
        (db.count("SELECT count(*) FROM order_view").await >= orders).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_relay_and_projector_under_load_loses_nothing() {
    let stack = ProcessStack::new("kill9").await;
    let (_api, base) = stack.serve(&["serve", "--api-only"]).await;
    // The relay and a projector; with no broker, two projectors (each
    // projection's active reader of the event store, and a standby).
    let first = match stack.broker.bus {
        TestBus::Kafka | TestBus::RabbitMq => "relay",
        TestBus::None => "project",
    };
    let mut processes = vec![
        (stack.env.spawn(&[first]), vec![first]),
        (stack.env.spawn(&["project"]), vec!["project"]),
    ];

    // 40 products and 1,300 orders of four commands each (plus a ship or
    // cancel for most): over 5,000 commands.
    let done = AtomicBool::new(false);
    let sent = Arc::new(AtomicU64::new(0));
    let (report, kills) = tokio::join!(
        async {
            let report = shop_load(&base, "K", 40, 1300, 16, sent.clone()).await;
            done.store(true, Ordering::Relaxed);
            report
        },
        chaos(&stack.env, &mut processes, &done)
    );
    assert_no_failures("commands failed", &report.failures);
    assert!(report.ok >= 5000, "only {} commands", report.ok);
    assert!(kills >= 3, "only {kills} kills");
    eprintln!("{} commands, {kills} kills", report.ok);

    caught_up(&stack.env, Duration::from_secs(240)).await;
    for (process, _) in &mut processes {
        assert!(process.running(), "see {}", process.log.display());
    }
    assert_complete(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_stopped_for_20_seconds_fails_no_command_and_the_lag_drains() {
    let (own, stack) = on_a_broker_of_its_own("outage").await;
    let (mut serve, base) = stack.serve(&["serve"]).await;

    let done = AtomicBool::new(false);
    let sent = Arc::new(AtomicU64::new(0));
    let (failures, during) = tokio::join!(load_until(&done, &base, "", (3, 20), &sent), async {
        // Events projected before the outage.
        orders_projected(&stack.db, 1).await;
        // The outage: the broker process is stopped (SIGSTOP) and
        // resumed (SIGCONT) 20 s later: it answers nothing meanwhile,
        // and every session it holds has run out when it comes back.
        own.signal(1, "-STOP");
        let before = sent.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let during = sent.load(Ordering::Relaxed) - before;
        own.signal(1, "-CONT");
        done.store(true, Ordering::Relaxed);
        during
    });
    assert_no_failures("commands failed", &failures);
    assert!(during > 100, "only {during} commands during the outage");
    eprintln!("{during} commands during the outage");

    assert_recovered(&stack, &mut serve, Duration::from_secs(180)).await;
}

/// RabbitMQ stopped for 20 s under load (its broker application stopped
/// and started again: every connection to it closes, and none opens
/// meanwhile): no command fails, the relay and the projectors reconnect,
/// the lag drains, and the views equal a from-scratch build.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_stopped_for_20_seconds_fails_no_command_and_the_lag_drains() {
    let node = eshop_tests::RabbitNode::start();
    let stack = ProcessStack::on(TestBroker::on_rabbitmq(&node.url()), "rabbit-outage").await;
    let (mut serve, base) = stack.serve(&["serve"]).await;

    let done = AtomicBool::new(false);
    let sent = Arc::new(AtomicU64::new(0));
    let (failures, during) = tokio::join!(load_until(&done, &base, "", (3, 20), &sent), async {
        orders_projected(&stack.db, 1).await;
        node.ctl(&["stop_app"]);
        let before = sent.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let during = sent.load(Ordering::Relaxed) - before;
        node.ctl(&["start_app"]);
        done.store(true, Ordering::Relaxed);
        during
    });
    assert_no_failures("commands failed", &failures);
    assert!(during > 100, "only {during} commands during the outage");
    eprintln!("{during} commands during the outage");

    assert_recovered(&stack, &mut serve, Duration::from_secs(180)).await;
}

/// A broker that stops answering for longer than the consumers' session
/// timeout, again and again, under load. Each time, every consumer's
/// session runs out, and a static member fences itself when it rejoins:
/// fences that are the consumer's own doing must not be taken for another
/// process with the same instance id (that stopped `eshop serve`). Now and
/// then a consumer stays wedged afterwards (librdkafka waits for an
/// unassignment that never completes and never rejoins its group), which a
/// group rebalance cannot reach. Every projection must still catch up
/// after every outage, within a few stall times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_stopped_again_and_again_leaves_no_projection_behind() {
    let (own, stack) = on_a_broker_of_its_own("outages").await;
    let stack = stack
        .with("PROJECTION_STALL_MS", "3000")
        .with("KAFKA_SESSION_TIMEOUT_MS", "6000");
    let (mut serve, base) = serving_at_work(&stack).await;

    for outage in 0..6 {
        let done = AtomicBool::new(false);
        let (prefix, sent) = (format!("O{outage}"), Arc::new(AtomicU64::new(0)));
        let (failures, ()) =
            tokio::join!(load_until(&done, &base, &prefix, (2, 5), &sent), async {
                own.signal(1, "-STOP");
                // The outage outlasts the session timeout (6 s) well.
                tokio::time::sleep(Duration::from_secs(14)).await;
                own.signal(1, "-CONT");
                done.store(true, Ordering::Relaxed);
            });
        assert_no_failures(&format!("outage {outage}"), &failures);
        caught_up(&stack.env, Duration::from_secs(45)).await;
        eprintln!("caught up after outage {outage}");
    }
    assert!(serve.running(), "see {}", serve.log.display());
    assert_complete(&stack).await;
}

/// The partitions of `topic` a projection process was last assigned.
fn assigned(log: &std::path::Path, projection: &str, topic: &str) -> Vec<String> {
    let text = std::fs::read_to_string(log).expect("log");
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| {
            entry["message"] == "partitions assigned" && entry["projection"] == projection
        })
        .map(|entry| {
            entry["partitions"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .filter(|p| p.starts_with(topic))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projector_processes_share_the_partitions() {
    let stack = ProcessStack::new("scale").await;
    let (_api, base) = stack.serve(&["serve", "--api-only"]).await;
    let _relay = stack.env.spawn(&["relay"]);
    let mut first = stack.env.spawn(&["project"]);
    let mut second = stack.env.spawn(&["project"]);

    let report = shop_load(&base, "S", 20, 300, 8, Arc::new(AtomicU64::new(0))).await;
    assert_no_failures("commands failed", &report.failures);
    caught_up(&stack.env, Duration::from_secs(180)).await;
    assert!(first.running() && second.running());

    // Each process holds a share of every projection's partitions: disjoint,
    // and together all three.
    let orders = format!("{}.orders", stack.broker.prefix);
    for projection in ["order_view", "sales_daily", "search"] {
        let (a, b) = eventually(
            Duration::from_secs(60),
            "both processes assigned",
            || async {
                let a = assigned(&first.log, projection, &orders);
                let b = assigned(&second.log, projection, &orders);
                (!a.is_empty() && !b.is_empty() && a.len() + b.len() == 3).then_some((a, b))
            },
        )
        .await;
        assert!(
            a.iter().all(|p| !b.contains(p)),
            "{projection}: {a:?} and {b:?} overlap"
        );
    }
    assert_complete(&stack).await;
}

/// How many times a projector process took up reading the event store
/// for `projection` (it logs each time it holds the reader lock).
fn store_readings(log: &std::path::Path, projection: &str) -> usize {
    let text = std::fs::read_to_string(log).expect("log");
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            entry["message"] == "reading the event store" && entry["projection"] == projection
        })
        .count()
}

/// With no broker: each projection has one active reader of the event
/// store among the projector processes, and a standby that takes over,
/// from the checkpoint, when the active one is killed under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_broker_a_killed_store_reader_is_replaced_by_its_standby() {
    let stack = ProcessStack::new("standby").await;
    assert_eq!(
        stack.broker.bus,
        TestBus::None,
        "a test of the broker-less bus: run it with TEST_EVENT_BUS=none"
    );
    let (_api, base) = stack.serve(&["serve", "--api-only"]).await;
    let mut first = stack.env.spawn(&["project"]);
    let mut second = stack.env.spawn(&["project"]);

    let done = AtomicBool::new(false);
    let sent = Arc::new(AtomicU64::new(0));
    let (failures, (killed, standby)) =
        tokio::join!(load_until(&done, &base, "B", (3, 20), &sent), async {
            orders_projected(&stack.db, 20).await;
            // One process reads order_view, the other waits for it.
            let (first_log, second_log) = (first.log.clone(), second.log.clone());
            let first_is_active = eventually(
                Duration::from_secs(30),
                "one active reader of order_view",
                || async {
                    match (
                        store_readings(&first_log, "order_view"),
                        store_readings(&second_log, "order_view"),
                    ) {
                        (1, 0) => Some(true),
                        (0, 1) => Some(false),
                        _ => None,
                    }
                },
            )
            .await;
            let (active, standby) = if first_is_active {
                (&mut first, &mut second)
            } else {
                (&mut second, &mut first)
            };
            active.kill();
            let killed = active.log.clone();
            // The standby takes over while the load goes on.
            eventually(
                Duration::from_secs(30),
                "the standby to take over",
                || async { (store_readings(&standby.log, "order_view") == 1).then_some(()) },
            )
            .await;
            let before = stack.db.count("SELECT count(*) FROM order_view").await;
            orders_projected(&stack.db, before + 20).await;
            done.store(true, Ordering::Relaxed);
            (killed, standby.log.clone())
        });
    assert_no_failures("commands failed", &failures);
    eprintln!("killed {}, standby {}", killed.display(), standby.display());
    caught_up(&stack.env, Duration::from_secs(120)).await;
    assert_complete(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_leader_of_a_busy_partition_fails_no_command_and_loses_nothing() {
    // Three brokers, every topic replicated three times with
    // min.insync.replicas=2: one broker can go without a write failing.
    let mut cluster = KafkaCluster::start(3);
    let broker = TestBroker::on(&cluster.bootstrap());
    let orders = format!("{}.orders", broker.prefix);
    let stack = ProcessStack::on(broker, "leaderkill")
        .await
        .with("KAFKA_TOPIC_REPLICATION", "3");
    let (mut serve, base) = stack.serve(&["serve"]).await;

    let done = AtomicBool::new(false);
    let sent = Arc::new(AtomicU64::new(0));
    let (report, killed) = tokio::join!(
        async {
            // 30 products and 550 orders: over 2,000 commands.
            let report = shop_load(&base, "L", 30, 550, 8, sent.clone()).await;
            done.store(true, Ordering::Relaxed);
            report
        },
        async {
            // Busy: orders are flowing through the partition's leader.
            orders_projected(&stack.db, 100).await;
            let leader = cluster
                .leader(&orders, 0)
                .expect("partition 0 of the orders topic has a leader");
            let at = sent.load(Ordering::Relaxed);
            cluster.kill(leader);
            eprintln!("killed broker {leader}, the leader of {orders}/0, after {at} commands");
            assert!(
                !done.load(Ordering::Relaxed),
                "the load ended before the leader was killed"
            );
            let new_leader = eventually(Duration::from_secs(30), "a new leader", || async {
                cluster.leader(&orders, 0).filter(|l| *l != leader)
            })
            .await;
            eprintln!("broker {new_leader} leads {orders}/0 now");
            leader
        }
    );
    assert_no_failures("commands failed", &report.failures);
    assert!(report.ok >= 2000, "only {} commands", report.ok);
    eprintln!("{} commands; broker {killed} killed under load", report.ok);

    assert_recovered(&stack, &mut serve, Duration::from_secs(180)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_serve_restarted_under_load_projects_again_within_10_seconds() {
    let stack = ProcessStack::new("restart").await;
    let (mut serve, base) = stack.serve(&["serve"]).await;

    let done = AtomicBool::new(false);
    let sent = Arc::new(AtomicU64::new(0));
    tokio::join!(
        // Load before, during and after the restart; commands sent while
        // no API listens fail, which is not what this test is about.
        load_until(&done, &base, "", (3, 20), &sent),
        async {
            orders_projected(&stack.db, 50).await;
            every_projection_at_work(&stack.db).await;
            serve.kill();
            let restarted = std::time::Instant::now();
            serve = stack.env.spawn(&["serve"]);
            serve.wait_live(stack.port).await;
            // An order placed after the restart, in every view it touches
            // and in the search index.
            let placed = shop_load(&base, "after", 1, 1, 1, Arc::new(AtomicU64::new(0))).await;
            assert!(placed.failures.is_empty(), "{:?}", placed.failures);
            let order: String = sqlx::query_scalar(
                "SELECT aggregate_id FROM events WHERE event_type = 'OrderPlaced' \
                 ORDER BY global_position DESC LIMIT 1",
            )
            .fetch_one(&stack.db.pool)
            .await
            .expect("the new order");
            let id = uuid::Uuid::parse_str(&order).expect("order id");
            eventually(
                Duration::from_secs(30),
                "the new order projected everywhere",
                || async {
                    let row: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM order_view WHERE order_id = $1")
                            .bind(id)
                            .fetch_one(&stack.db.pool)
                            .await
                            .ok()?;
                    let indexed = stack.search.documents("orders").await.contains_key(&order);
                    (row == 1 && indexed).then_some(())
                },
            )
            .await;
            let resumed = restarted.elapsed();
            eprintln!("projected again {resumed:?} after the restart");
            done.store(true, Ordering::Relaxed);
            assert!(
                resumed < Duration::from_secs(10),
                "the restarted serve took {resumed:?} to project a new order; see {}",
                serve.log.display()
            );
        }
    );
    caught_up(&stack.env, Duration::from_secs(120)).await;
    assert_complete(&stack).await;
}

/// `/health/ready` of the API at `base`: its status code and body.
async fn readiness(base: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{base}/health/ready"))
        .await
        .expect("readiness answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Whether `/metrics` of the API at `base` reports `projection` stalled.
async fn reported_stalled(base: &str, projection: &str) -> bool {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .any(|line| line == format!("eshop_projection_stalled{{projection=\"{projection}\"}} 1"))
}

/// A static member that comes back within its session timeout gets its
/// old assignment from the group coordinator, without a rebalance, and
/// librdkafka, which does not speak KIP-814, then takes itself for a
/// follower: no member of the group checks the topics for partitions the
/// assignment misses. Here the products topic grows from 3 to 6
/// partitions while `eshop serve` is down; the restarted process must
/// notice that the product projections have events pending and make no
/// progress, say so on `/health/ready` and `/metrics`, and get the whole
/// topic assigned by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_stuck_on_a_stale_assignment_after_a_restart_is_reported_and_rejoins() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;

    let stack = ProcessStack::new("stall")
        .await
        .with("PROJECTION_STALL_MS", "3000");
    let (mut serve, base) = serving_at_work(&stack).await;

    serve.kill();
    let products = format!("{}.products", stack.broker.prefix);
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.broker.brokers)
        .create()
        .expect("admin client");
    let grown = admin
        .create_partitions(
            &[NewPartitions::new(&products, 6)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("partitions added");
    assert!(grown.iter().all(Result::is_ok), "{grown:?}");
    serve = stack.env.spawn(&["serve"]);
    serve.wait_live(stack.port).await;

    // Products whose events go to every partition, the new ones included.
    let after = shop_load(&base, "A", 12, 0, 4, Arc::new(AtomicU64::new(0))).await;
    assert!(after.failures.is_empty(), "{:?}", after.failures);

    eventually(
        Duration::from_secs(60),
        "readiness and /metrics to report product_catalog stalled",
        || async {
            let (status, body) = readiness(&base).await;
            let named = body["checks"].as_array().is_some_and(|checks| {
                checks.iter().any(|c| {
                    c["name"] == "projections"
                        && c["status"] == "down"
                        && c["error"]
                            .as_str()
                            .is_some_and(|e| e.contains("product_catalog"))
                })
            });
            (status == 503 && named && reported_stalled(&base, "product_catalog").await)
                .then_some(())
        },
    )
    .await;

    // No restart: the process gets the new partitions assigned by itself.
    caught_up(&stack.env, Duration::from_secs(90)).await;
    eventually(Duration::from_secs(30), "ready again", || async {
        (readiness(&base).await.0 == 200).then_some(())
    })
    .await;
    assert!(serve.running(), "see {}", serve.log.display());
    assert!(!reported_stalled(&base, "product_catalog").await);
    assert_complete(&stack).await;
}

/// A projection held up for several stall times (here its view's table is
/// locked by an operator's transaction) is what a wedged consumer looks
/// like from outside: the stall watch makes its group rebalance, then
/// replaces its consumer. When the lock goes, the projection carries on
/// with the new consumer from its recorded positions: nothing lost, nothing
/// applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_held_up_for_long_gets_a_new_consumer_and_loses_nothing() {
    let stack = ProcessStack::new("renew")
        .await
        .with("PROJECTION_STALL_MS", "2000");
    let (mut serve, base) = serving_at_work(&stack).await;

    let mut lock = stack.db.pool.begin().await.expect("transaction");
    sqlx::query("LOCK TABLE basket_view IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let during = shop_load(&base, "D", 2, 5, 2, Arc::new(AtomicU64::new(0))).await;
    assert!(during.failures.is_empty(), "{:?}", during.failures);
    eventually(
        Duration::from_secs(60),
        "the stall watch to replace basket_view's consumer",
        || async {
            let log = std::fs::read_to_string(&serve.log).ok()?;
            log.lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .any(|entry| {
                    entry["projection"] == "basket_view"
                        && entry["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("replacing its consumer"))
                })
                .then_some(())
        },
    )
    .await;
    lock.rollback().await.expect("unlock");

    assert_recovered(&stack, &mut serve, Duration::from_secs(60)).await;
}

/// A one-node Kafka cluster of the test's own, so that stopping it troubles
/// no other test, and a process stack on it.
async fn on_a_broker_of_its_own(name: &str) -> (KafkaCluster, ProcessStack) {
    let own = KafkaCluster::start(1);
    let broker = TestBroker::on(&own.bootstrap());
    let stack = ProcessStack::on(broker, name).await;
    (own, stack)
}

/// `eshop serve` on `port`, with every projection at work on a first few
/// commands; and the API's base URL.
async fn serving_at_work(stack: &ProcessStack) -> (EshopProcess, String) {
    let (serve, base) = stack.serve(&["serve"]).await;
    let first = shop_load(&base, "B", 2, 2, 2, Arc::new(AtomicU64::new(0))).await;
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    every_projection_at_work(&stack.db).await;
    (serve, base)
}

/// Waits until every projection has joined its group and taken events.
async fn every_projection_at_work(db: &TestDb) {
    eventually(
        Duration::from_secs(60),
        "every projection at work",
        || async {
            let working: i64 =
                sqlx::query_scalar("SELECT count(DISTINCT projection) FROM projection_offsets")
                    .fetch_one(&db.pool)
                    .await
                    .ok()?;
            (working as usize == projections::projector::names().len()).then_some(())
        },
    )
    .await;
}
