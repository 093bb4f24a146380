//! `eshop events export`, the real binary against a real PostgreSQL:
//! every filter, both formats, the global order, upcasting, bad input, a
//! reader that goes away, and memory that stays flat as the store grows.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eshop_tests::{EshopEnv, TestApp, TestDb};
use event_store::feed::{self, FeedFilter, GlobalPosition, RecordedEvent};
use serde_json::{Value, json};
use uuid::Uuid;

/// The CSV format's columns, in order.
const CSV_COLUMNS: [&str; 15] = [
    "globalposition",
    "id",
    "type",
    "schemaversion",
    "aggregatetype",
    "aggregateid",
    "aggregatesequence",
    "time",
    "source",
    "dataschema",
    "correlationid",
    "causationid",
    "actor",
    "traceparent",
    "data",
];

/// An event appended by a test, with what the export should say of it.
#[derive(Debug, Clone)]
struct Appended {
    position: i64,
    aggregate_type: &'static str,
    aggregate_id: String,
    event_type: &'static str,
    time: DateTime<Utc>,
}

fn at(time: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(time)
        .expect("test time")
        .with_timezone(&Utc)
}

/// Appends one event row as the store writes it (full metadata), at a
/// given occurrence time; returns its global position.
#[allow(clippy::too_many_arguments)]
async fn append(
    db: impl sqlx::PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    version: &str,
    data: Value,
    time: &str,
) -> i64 {
    let metadata = json!({
        "event_id": Uuid::now_v7().to_string(),
        "occurred_at": time,
        "correlation_id": "corr-1",
        "causation_id": format!("cmd-{aggregate_id}-{sequence}"),
        "actor": "tests",
        "schema_version": version,
    });
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING global_position",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .bind(event_type)
    .bind(version)
    .bind(json!({ event_type: data }))
    .bind(metadata)
    .fetch_one(db)
    .await
    .expect("append an event")
}

/// A small store of every aggregate type over three days: two products
/// (registered, repriced, one discontinued), a basket with an item, an
/// order placed.
async fn small_store(db: &TestDb) -> Vec<Appended> {
    let money = |minor: i64| json!({"amount_minor": minor, "currency": "EUR"});
    let product = |sku: &str| json!({"sku": sku, "name": format!("Mug {sku}"), "description": "", "price": money(1299), "initial_stock": 5});
    let order_line = json!({"product_id": Uuid::nil(), "sku": "A", "name": "Mug A", "quantity": 1, "unit_price": money(1299)});
    let rows: Vec<(&'static str, &str, i64, &'static str, Value, &str)> = vec![
        (
            "Product",
            "p-a",
            1,
            "ProductRegistered",
            product("A"),
            "2026-01-01T09:00:00Z",
        ),
        (
            "Product",
            "p-b",
            1,
            "ProductRegistered",
            product("B"),
            "2026-01-01T10:00:00Z",
        ),
        (
            "Basket",
            "b-1",
            1,
            "BasketOpened",
            json!({"customer_id": Uuid::nil()}),
            "2026-01-02T08:00:00Z",
        ),
        (
            "Product",
            "p-a",
            2,
            "PriceChanged",
            json!({"old_price": money(1299), "new_price": money(999)}),
            "2026-01-02T09:00:00Z",
        ),
        (
            "Basket",
            "b-1",
            2,
            "ItemAdded",
            json!({"product_id": Uuid::nil(), "quantity": 1}),
            "2026-01-02T09:30:00Z",
        ),
        (
            "Order",
            "o-1",
            1,
            "OrderPlaced",
            json!({"lines": [order_line]}),
            "2026-01-03T00:00:00Z",
        ),
        (
            "Product",
            "p-b",
            2,
            "ProductDiscontinued",
            json!({}),
            "2026-01-03T12:00:00Z",
        ),
    ];
    let mut appended = Vec::new();
    for (aggregate_type, aggregate_id, sequence, event_type, data, time) in rows {
        let position = append(
            &db.pool,
            aggregate_type,
            aggregate_id,
            sequence,
            event_type,
            "1.0",
            data,
            time,
        )
        .await;
        appended.push(Appended {
            position,
            aggregate_type,
            aggregate_id: aggregate_id.to_owned(),
            event_type,
            time: at(time),
        });
    }
    appended
}

/// Runs `eshop events export <args>`, which must succeed.
fn export(env: &EshopEnv, args: &[&str]) -> Output {
    let mut argv = vec!["events", "export"];
    argv.extend_from_slice(args);
    let output = env.command(&argv).output().expect("eshop runs");
    assert!(
        output.status.success(),
        "eshop {argv:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The envelopes of an NDJSON export; every line must be one.
fn envelopes(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not an envelope ({error}): {line}"))
        })
        .collect()
}

fn positions(envelopes: &[Value]) -> Vec<i64> {
    envelopes
        .iter()
        .map(|e| e["globalposition"].as_i64().expect("globalposition"))
        .collect()
}

/// The positions of the appended events that `keep` admits, in order.
fn expected(appended: &[Appended], keep: impl Fn(&Appended) -> bool) -> Vec<i64> {
    appended
        .iter()
        .filter(|a| keep(a))
        .map(|a| a.position)
        .collect()
}

/// Every stored event in the global order, as the relay reads them.
async fn stored(db: &TestDb) -> Vec<RecordedEvent> {
    let everything = FeedFilter {
        beyond_horizon: true,
        ..FeedFilter::default()
    };
    feed::read_after(&db.pool, GlobalPosition::default(), &everything, 1_000_000)
        .await
        .expect("read the store")
}

/// What the relay publishes for each stored event, in the global order.
async fn published(db: &TestDb) -> Vec<Value> {
    let upcasters = event_schemas::upcasters();
    stored(db)
        .await
        .iter()
        .map(|event| {
            serde_json::to_value(projections::relay::envelope_of(event, &upcasters))
                .expect("envelope")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_is_what_the_relay_publishes_for_every_event_in_global_order() {
    let app = TestApp::spawn().await;
    let (order, _) = app.placed_order("EXPORT-1", 1500, 2).await;
    let cancelled = app
        .post(
            &format!("/orders/{order}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let env = EshopEnv::for_database(&app.db, "export");

    let output = export(&env, &[]);
    let exported = envelopes(&output.stdout);
    let relay = published(&app.db).await;
    assert_eq!(exported.len() as i64, app.event_count().await);
    assert_eq!(
        exported, relay,
        "the export differs from the relay's envelopes"
    );

    let types: BTreeSet<&str> = exported.iter().filter_map(|e| e["type"].as_str()).collect();
    for expected in [
        "eshop.Product.ProductRegistered",
        "eshop.Basket.ItemAdded",
        "eshop.Basket.BasketCheckedOut",
        "eshop.Order.OrderPlaced",
        "eshop.Order.OrderCancelled",
        "eshop.Product.StockReleased",
    ] {
        assert!(
            types.contains(expected),
            "{expected} missing from {types:?}"
        );
    }
    let placed = exported
        .iter()
        .find(|e| e["type"] == "eshop.Order.OrderPlaced")
        .expect("the order");
    assert_eq!(placed["aggregateid"], order.to_string());
    assert_eq!(placed["data"]["lines"][0]["quantity"], 2);
    assert_eq!(
        placed["data"]["lines"][0]["unit_price"]["amount_minor"],
        1500
    );

    // Logs went to stderr, as JSON lines; stdout held envelopes only.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let finished = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|log| log["message"] == "events exported")
        .unwrap_or_else(|| panic!("no summary log on stderr:\n{stderr}"));
    assert_eq!(finished["events"], exported.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_in_the_global_order_even_when_a_lower_position_commits_later() {
    let db = TestDb::new().await;
    // The late writer takes its transaction id first, then the early writer
    // takes the lower position and commits; the late one appends (a higher
    // position, a lower transaction id) and commits after.
    let mut late = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *late)
        .await
        .expect("take a transaction id");
    let early = append(
        &db.pool,
        "Product",
        "early",
        1,
        "ProductDiscontinued",
        "1.0",
        json!({}),
        "2026-01-01T00:00:00Z",
    )
    .await;
    let later = append(
        &mut *late,
        "Product",
        "late",
        1,
        "ProductDiscontinued",
        "1.0",
        json!({}),
        "2026-01-01T00:00:00Z",
    )
    .await;
    late.commit().await.expect("commit");
    assert!(early < later);

    let env = EshopEnv::for_database(&db, "export-order");
    let exported = envelopes(&export(&env, &[]).stdout);
    assert_eq!(
        positions(&exported),
        [later, early],
        "ordered by (transaction id, position), not by position"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_selects_exactly_its_events() {
    let db = TestDb::new().await;
    let appended = small_store(&db).await;
    let env = EshopEnv::for_database(&db, "export-filters");
    let run = |args: &[&str]| positions(&envelopes(&export(&env, args).stdout));
    let p = |i: usize| appended[i].position.to_string();

    assert_eq!(run(&[]), expected(&appended, |_| true));
    // Positions: inclusive bounds.
    assert_eq!(
        run(&["--from", &p(2), "--to", &p(4)]),
        expected(&appended, |a| a.position >= appended[2].position
            && a.position <= appended[4].position)
    );
    assert_eq!(
        run(&["--from", &p(5)]),
        expected(&appended, |a| a.position >= appended[5].position)
    );
    assert_eq!(run(&["--to", &p(0)]), vec![appended[0].position]);
    // Times: inclusive, on when the event occurred, in any offset.
    let (from, to) = (at("2026-01-02T09:00:00Z"), at("2026-01-03T00:00:00Z"));
    assert_eq!(
        run(&[
            "--from",
            "2026-01-02T10:00:00+01:00",
            "--to",
            "2026-01-03T00:00:00Z"
        ]),
        expected(&appended, |a| a.time >= from && a.time <= to)
    );
    assert_eq!(
        run(&["--to", "2026-01-01T23:59:59.999Z"]),
        expected(&appended, |a| a.time < at("2026-01-02T00:00:00Z"))
    );
    // Types: public names, bare names, repeated and comma-separated.
    assert_eq!(
        run(&["--type", "eshop.Product.PriceChanged"]),
        expected(&appended, |a| a.event_type == "PriceChanged")
    );
    let some_types = expected(&appended, |a| {
        ["PriceChanged", "OrderPlaced", "ProductDiscontinued"].contains(&a.event_type)
    });
    assert_eq!(
        run(&[
            "--type",
            "eshop.Product.PriceChanged,OrderPlaced",
            "--type",
            "ProductDiscontinued"
        ]),
        some_types
    );
    // Aggregates.
    assert_eq!(
        run(&["--aggregate-type", "Basket"]),
        expected(&appended, |a| a.aggregate_type == "Basket")
    );
    assert_eq!(
        run(&["--aggregate-id", "p-a"]),
        expected(&appended, |a| a.aggregate_id == "p-a")
    );
    // Together: all of them hold.
    assert_eq!(
        run(&[
            "--aggregate-type",
            "Product",
            "--type",
            "ProductRegistered,PriceChanged",
            "--from",
            "2026-01-01T09:30:00Z"
        ]),
        expected(&appended, |a| a.aggregate_type == "Product"
            && ["ProductRegistered", "PriceChanged"].contains(&a.event_type)
            && a.time >= at("2026-01-01T09:30:00Z"))
    );
    assert!(run(&["--aggregate-id", "nobody"]).is_empty());

    // --output writes the same to a file, and nothing to stdout.
    let file = std::env::temp_dir().join(format!("eshop-export-{}.ndjson", Uuid::now_v7()));
    let path = file.to_str().expect("utf-8 temp path");
    let output = export(&env, &["--type", "ProductRegistered", "--output", path]);
    assert!(output.stdout.is_empty());
    let written = std::fs::read(&file).expect("the export file");
    std::fs::remove_file(&file).expect("remove the export file");
    assert_eq!(
        positions(&envelopes(&written)),
        expected(&appended, |a| a.event_type == "ProductRegistered")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_has_a_header_and_one_properly_quoted_row_per_event() {
    let db = TestDb::new().await;
    let mut appended = small_store(&db).await;
    // A name with a comma, quotes and a line break, to be quoted.
    let awkward = "Mug, \"large\"\nsecond line";
    let position = append(
        &db.pool,
        "Product",
        "p-c",
        1,
        "ProductRegistered",
        "2.0",
        json!({"sku": "C", "name": awkward, "description": "a; b", "price": {"amount_minor": 5, "currency": "EUR"}, "initial_stock": 1}),
        "2026-01-04T00:00:00Z",
    )
    .await;
    appended.push(Appended {
        position,
        aggregate_type: "Product",
        aggregate_id: "p-c".into(),
        event_type: "ProductRegistered",
        time: at("2026-01-04T00:00:00Z"),
    });
    let env = EshopEnv::for_database(&db, "export-csv");
    let ndjson = envelopes(&export(&env, &[]).stdout);
    let csv_out = export(&env, &["--format", "csv"]).stdout;

    let mut reader = csv::Reader::from_reader(csv_out.as_slice());
    let headers = reader.headers().expect("a header row").clone();
    assert_eq!(headers.iter().collect::<Vec<_>>(), CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("well-formed CSV");
    assert_eq!(rows.len(), appended.len());
    for ((row, envelope), appended) in rows.iter().zip(&ndjson).zip(&appended) {
        let column = |name: &str| {
            let index = CSV_COLUMNS
                .iter()
                .position(|c| *c == name)
                .expect("a column");
            &row[index]
        };
        assert_eq!(column("globalposition"), appended.position.to_string());
        assert_eq!(
            column("type"),
            format!("eshop.{}.{}", appended.aggregate_type, appended.event_type)
        );
        assert_eq!(column("aggregateid"), appended.aggregate_id);
        assert_eq!(at(column("time")), appended.time);
        for (attribute, value) in envelope.as_object().expect("an object") {
            match attribute.as_str() {
                "data" => assert_eq!(
                    &serde_json::from_str::<Value>(column("data")).expect("data is JSON"),
                    value
                ),
                "time" => assert_eq!(at(column("time")), at(value.as_str().expect("time"))),
                "specversion" | "subject" | "datacontenttype" => {}
                name => {
                    let text = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned);
                    assert_eq!(column(name), text, "column {name}");
                }
            }
        }
    }
    let last: Value = serde_json::from_str(&rows[rows.len() - 1][14]).expect("data");
    assert_eq!(last["name"], awkward);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_are_exported_upcast_to_the_current_schema() {
    let db = TestDb::new().await;
    let position = append(
        &db.pool,
        "Product",
        "old",
        1,
        "ProductRegistered",
        "1.0",
        json!({"sku": "OLD-1", "name": "Old mug", "description": "from 2025", "price_cents": 1299, "currency": "EUR", "stock": 7}),
        "2025-06-01T00:00:00Z",
    )
    .await;
    let env = EshopEnv::for_database(&db, "export-upcast");

    let exported = envelopes(&export(&env, &[]).stdout);
    let [envelope] = exported.as_slice() else {
        panic!("one event expected: {exported:?}")
    };
    assert_eq!(envelope["globalposition"], position);
    assert_eq!(envelope["schemaversion"], "2.0");
    assert_eq!(envelope["dataschema"], "Product/ProductRegistered.v2.json");
    assert_eq!(
        envelope["data"],
        json!({"sku": "OLD-1", "name": "Old mug", "description": "from 2025",
               "price": {"amount_minor": 1299, "currency": "EUR"}, "initial_stock": 7})
    );

    let csv_out = export(&env, &["--format", "csv"]).stdout;
    let mut reader = csv::Reader::from_reader(csv_out.as_slice());
    let row = reader.records().next().expect("a row").expect("valid CSV");
    assert_eq!(&row[3], "2.0");
    let data: Value = serde_json::from_str(&row[14]).expect("data");
    assert_eq!(data["price"]["amount_minor"], 1299);
    assert_eq!(data["initial_stock"], 7);

    // The stored row itself is left as it was written.
    let stored: String = sqlx::query_scalar("SELECT event_version FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("stored version");
    assert_eq!(stored, "1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_non_zero_with_a_message_and_no_output() {
    let db = TestDb::new().await;
    small_store(&db).await;
    let env = EshopEnv::for_database(&db, "export-errors");
    let cases: [(&[&str], &str); 9] = [
        (&["--from", "yesterday"], "RFC 3339"),
        (&["--to", "2026-13-01T00:00:00Z"], "RFC 3339"),
        (&["--from", "5", "--to", "4"], "--from 5 is after --to 4"),
        (
            &[
                "--from",
                "2026-02-01T00:00:00Z",
                "--to",
                "2026-01-01T00:00:00Z",
            ],
            "is after --to",
        ),
        (&["--format", "xml"], "possible values: ndjson, csv"),
        (&["--type", "eshop.Order.OrderLost"], "unknown event type"),
        (&["--aggregate-type", "Invoice"], "unknown aggregate type"),
        (
            &["--output", "/nonexistent-dir/out.csv"],
            "failed to create",
        ),
        (
            &[
                "--database-url",
                "postgres://postgres@127.0.0.1:5432/eshop_export_missing",
            ],
            "failed to connect to the event store",
        ),
    ];
    for (args, message) in cases {
        let mut argv = vec!["events", "export"];
        argv.extend_from_slice(args);
        let output = env.command(&argv).output().expect("eshop runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(message),
            "{args:?}: no {message:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
        assert!(output.stdout.is_empty(), "{args:?} wrote to stdout");
    }
}

/// Appends `count` `ProductRegistered` events of about a kilobyte each in
/// one statement.
async fn bulk_append(db: &TestDb, first: i64, count: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'Product', 'bulk-' || n, 1, 'ProductRegistered', '2.0', \
                jsonb_build_object('ProductRegistered', jsonb_build_object( \
                  'sku', 'BULK-' || n, 'name', 'Bulk mug ' || n, 'description', repeat('stoneware ', 90), \
                  'price', jsonb_build_object('amount_minor', 1000 + n % 500, 'currency', 'EUR'), \
                  'initial_stock', n % 100)), \
                jsonb_build_object('event_id', gen_random_uuid()::text, \
                  'occurred_at', '2026-01-01T00:00:00Z', 'correlation_id', 'bulk', \
                  'causation_id', 'bulk-' || n, 'actor', 'tests', 'schema_version', '2.0') \
         FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS n",
    )
    .bind(first)
    .bind(count)
    .execute(&db.pool)
    .await
    .expect("bulk append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_closes_the_output_ends_the_export_quietly() {
    let db = TestDb::new().await;
    bulk_append(&db, 1, 20_000).await;
    let env = EshopEnv::for_database(&db, "export-pipe");
    let mut child = env
        .command(&["events", "export"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("eshop starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("a first line");
    // `| head -1`: the reader is gone after one line.
    let output = child.wait_with_output().expect("eshop exits");
    let envelope: Value = serde_json::from_str(&first).expect("an envelope");
    assert_eq!(envelope["type"], "eshop.Product.ProductRegistered");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}:\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("the output was closed by its reader"),
        "{stderr}"
    );
}

/// Runs an export to /dev/null and samples the process's peak resident
/// set (`VmHWM` in /proc/<pid>/status, a high-water mark) every
/// millisecond until it exits. Returns the peak in KiB and how many events
/// it says it exported.
fn peak_rss_of_export(env: &EshopEnv) -> (u64, u64) {
    let mut child = env
        .command(&["events", "export"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("eshop starts");
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let started = Instant::now();
    let exit = loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kib) = text
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(exit) = child.try_wait().expect("wait for eshop") {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the export did not finish in 5 minutes"
        );
        // The sampling interval of the measurement.
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(exit.success(), "the export failed:\n{stderr}");
    let events = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|log| log["message"] == "events exported")
        .and_then(|log| log["events"].as_u64())
        .unwrap_or_else(|| panic!("no summary log:\n{stderr}"));
    assert!(peak_kib > 0, "no memory figure was read");
    (peak_kib, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_as_the_event_count_grows_tenfold() {
    const SMALL: i64 = 5_000;
    const LARGE: i64 = 50_000;
    let db = TestDb::new().await;
    let env = EshopEnv::for_database(&db, "export-memory");

    bulk_append(&db, 1, SMALL).await;
    let (small_kib, small_events) = tokio::task::spawn_blocking({
        let env = env.clone();
        move || peak_rss_of_export(&env)
    })
    .await
    .expect("measure");
    assert_eq!(small_events, SMALL as u64);

    bulk_append(&db, SMALL + 1, LARGE - SMALL).await;
    let (large_kib, large_events) = tokio::task::spawn_blocking({
        let env = env.clone();
        move || peak_rss_of_export(&env)
    })
    .await
    .expect("measure");
    assert_eq!(large_events, LARGE as u64);

    // About 1.3 KB of output per event: holding the large export whole
    // would take 60 MB more than the small one.
    println!(
        "peak RSS of `eshop events export`: {SMALL} events {small_kib} KiB, \
         {LARGE} events {large_kib} KiB"
    );
    let margin_kib = (small_kib / 2).min(10 * 1024);
    assert!(
        large_kib <= small_kib + margin_kib,
        "memory grew with the event count: {small_kib} KiB for {SMALL} events, \
         {large_kib} KiB for {LARGE}"
    );
}
