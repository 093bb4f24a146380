//! Replay of the search index: a rebuild from the event store into new
//! indices, swapped in behind the aliases while `eshop serve` projects
//! live, and the audit of the live index against the store, on histories
//! made through the REST API.

use std::collections::BTreeMap;
use std::time::Duration;

use eshop_tests::fault::{caught_up, differences_found};
use eshop_tests::history::{Served, random_history};
use eshop_tests::{ProcessStack, Rounds, TestDb, eventually};
use event_store::DatabaseConfig;
use projections::replay::{Difference, TableReport, rebuild_search, verify_search};
use projections::search::{SearchClient, ensure_indices};
use serde_json::{Value, json};

type Documents = BTreeMap<String, (i64, Value)>;

fn database(db: &TestDb) -> DatabaseConfig {
    DatabaseConfig {
        url: db.url.clone(),
        max_connections: 4,
        acquire_timeout_secs: 30,
    }
}

/// Registers a product through the API at `base`; returns its id.
async fn register_product(base: &str, product: Value) -> String {
    let registered = eshop_tests::auth::client(eshop_tests::auth::Who::Ops)
        .await
        .post(format!("{base}/products"))
        .json(&product)
        .send()
        .await
        .expect("register a product");
    assert!(registered.status().is_success());
    registered.json::<Value>().await.expect("answer")["id"]
        .as_str()
        .expect("product id")
        .to_owned()
}

/// Both indices' documents, by id: `(version, source)`.
async fn documents(stack: &ProcessStack) -> (Documents, Documents) {
    (
        stack.search.documents("products").await,
        stack.search.documents("orders").await,
    )
}

/// The concrete indices `{prefix}-{suffix}` points at.
async fn aliased(stack: &ProcessStack, suffix: &str) -> Vec<String> {
    let client = SearchClient::new(&stack.search.config().url).expect("search client");
    client
        .alias_indices(&stack.search.alias(suffix))
        .await
        .expect("alias lookup")
}

async fn index_exists(stack: &ProcessStack, index: &str) -> bool {
    let response = reqwest::Client::new()
        .head(format!("{}/{index}", stack.search.url))
        .send()
        .await
        .expect("index lookup");
    response.status().is_success()
}

async fn rebuild(stack: &ProcessStack, keep: bool) {
    rebuild_search(&database(&stack.db), &stack.search.config(), keep)
        .await
        .expect("the search rebuild succeeds");
}

async fn verify(stack: &ProcessStack) -> Vec<TableReport> {
    verify_search(&database(&stack.db), &stack.search.config())
        .await
        .expect("the search audit runs")
}

/// One report per alias, each without a difference.
fn assert_clean(reports: &[TableReport], stack: &ProcessStack) {
    let tables: Vec<&str> = reports.iter().map(|r| r.table.as_str()).collect();
    assert_eq!(
        tables,
        [stack.search.alias("products"), stack.search.alias("orders")]
    );
    for report in reports {
        assert!(
            report.differences.is_empty()
                && report.view_rows == report.history_rows
                && report.view_hash == report.history_hash,
            "the index differs from its history: {report:?}"
        );
        assert_eq!(report.projection, "search");
    }
}

/// [`Served::with_history`] with a random seed, once every projection,
/// the search index among them, has taken the history.
async fn served_history(name: &str, products: usize, shoppers: usize, baskets: usize) -> Served {
    let served = Served::with_history(name, rand::random(), (products, shoppers, baskets)).await;
    caught_up(&served.stack.env, Duration::from_secs(300)).await;
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_rebuild_yields_exactly_the_incremental_documents_behind_moved_aliases() {
    let Served {
        stack,
        mut serve,
        base,
        ..
    } = served_history("search-rebuild", 20, 6, 30).await;
    let incremental = documents(&stack).await;
    assert!(!incremental.0.is_empty() && !incremental.1.is_empty());
    let (products, orders) = (stack.search.alias("products"), stack.search.alias("orders"));
    assert_eq!(
        aliased(&stack, "products").await,
        [format!("{products}-v1")]
    );
    assert_clean(&verify(&stack).await, &stack);

    rebuild(&stack, false).await;
    assert_eq!(documents(&stack).await, incremental);
    let first = (
        aliased(&stack, "products").await,
        aliased(&stack, "orders").await,
    );
    assert_eq!(first.0.len(), 1, "{first:?}");
    assert_eq!(first.1.len(), 1, "{first:?}");
    assert!(
        first.0[0].starts_with(&format!("{products}-v1-r")),
        "{first:?}"
    );
    assert!(
        first.1[0].starts_with(&format!("{orders}-v1-r")),
        "{first:?}"
    );
    for old in [format!("{products}-v1"), format!("{orders}-v1")] {
        assert!(!index_exists(&stack, &old).await, "{old} was dropped");
    }

    // With --keep, the replaced indices stay, without the aliases.
    rebuild(&stack, true).await;
    assert_eq!(documents(&stack).await, incremental);
    let second = (
        aliased(&stack, "products").await,
        aliased(&stack, "orders").await,
    );
    assert_eq!((second.0.len(), second.1.len()), (1, 1), "{second:?}");
    assert_ne!(second.0, first.0);
    assert_ne!(second.1, first.1);
    for kept in [&first.0[0], &first.1[0]] {
        assert!(index_exists(&stack, kept).await, "{kept} was kept");
    }

    // The projector's start-up leaves the rebuilt indices behind the
    // aliases, and does not make a `-v1` again.
    let client = SearchClient::new(&stack.search.config().url).expect("search client");
    ensure_indices(&client, &stack.search.config())
        .await
        .expect("start-up preparation of the indices");
    assert_eq!(aliased(&stack, "products").await, second.0);
    assert_eq!(aliased(&stack, "orders").await, second.1);
    assert!(!index_exists(&stack, &format!("{products}-v1")).await);

    // The live projector goes on through the aliases, into the new index.
    let id = register_product(
        &base,
        json!({"sku": "AFTER-REBUILD", "name": "After the rebuild",
            "description": "registered once the aliases moved", "initial_stock": 3,
            "price": {"amount_minor": 250, "currency": "EUR"}}),
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the new product in the index",
        || async { stack.search.document("products", &id).await },
    )
    .await;
    caught_up(&stack.env, Duration::from_secs(120)).await;
    assert_clean(&verify(&stack).await, &stack);
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_search_names_exactly_the_documents_changed_or_removed_behind_its_back() {
    let Served {
        stack, mut serve, ..
    } = served_history("search-verify", 10, 4, 12).await;
    let incremental = documents(&stack).await;
    let clean = verify(&stack).await;
    assert_clean(&clean, &stack);
    assert_eq!(clean[0].view_rows, incremental.0.len() as i64);
    assert_eq!(clean[1].view_rows, incremental.1.len() as i64);

    // A product renamed at a newer version, and an order deleted, straight
    // in the index.
    let (product, (version, source)) = incremental.0.iter().next().expect("a product");
    let (order, _) = incremental.1.iter().next().expect("an order");
    let mut renamed = source.clone();
    renamed["name"] = json!("Renamed behind eshop's back");
    let http = reqwest::Client::new();
    let url = &stack.search.url;
    let put = http
        .put(format!(
            "{url}/{}/_doc/{product}?version={}&version_type=external",
            stack.search.alias("products"),
            version + 1
        ))
        .json(&renamed)
        .send()
        .await
        .expect("index a changed document");
    assert!(put.status().is_success(), "{:?}", put.text().await);
    let delete = http
        .delete(format!(
            "{url}/{}/_doc/{order}",
            stack.search.alias("orders")
        ))
        .send()
        .await
        .expect("delete a document");
    assert!(delete.status().is_success(), "{:?}", delete.text().await);

    let reports = verify(&stack).await;
    assert_eq!(
        reports[0].differences,
        [Difference {
            key: format!("product_id={product}"),
            kind: "differs".to_owned(),
            columns: vec!["_version".to_owned(), "name".to_owned()],
        }]
    );
    assert_eq!(reports[0].view_rows, reports[0].history_rows);
    assert_ne!(reports[0].view_hash, reports[0].history_hash);
    assert_eq!(
        reports[1].differences,
        [Difference {
            key: format!("order_id={order}"),
            kind: "missing from the view".to_owned(),
            columns: Vec::new(),
        }]
    );
    assert_eq!(reports[1].view_rows + 1, reports[1].history_rows);
    assert_ne!(reports[1].view_hash, reports[1].history_hash);

    // The command an operator schedules says so too, and exits 1.
    let report = differences_found(&stack.env, "search");
    let keys: Vec<String> = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .flat_map(|t| t["differences"].as_array().cloned().unwrap_or_default())
        .map(|d| d["key"].as_str().map(str::to_owned).unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        [format!("product_id={product}"), format!("order_id={order}")]
    );

    // A rebuild (through the command) puts back what the history says.
    let out = stack
        .env
        .try_run(&["projections", "rebuild", "search"])
        .expect("the search rebuild succeeds");
    assert!(out.contains("search: rebuilt"), "{out}");
    assert_eq!(documents(&stack).await, incremental);
    assert_clean(&verify(&stack).await, &stack);
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_rebuild_while_commands_flow_loses_nothing_and_searches_keep_answering() {
    let Served {
        stack,
        mut serve,
        base,
        seed,
    } = served_history("search-rebuild-live", 15, 4, 15).await;
    let mut rounds = Rounds::default();
    // A reader of both aliases through the whole run: it always gets an
    // answer.
    let aliases = [stack.search.alias("products"), stack.search.alias("orders")];
    let (http, url) = (reqwest::Client::new(), stack.search.url.clone());
    rounds.spawn(0, move || {
        let (http, url, aliases) = (http.clone(), url.clone(), aliases.clone());
        async move {
            for alias in &aliases {
                let response = http
                    .post(format!("{url}/{alias}/_search"))
                    .json(&json!({"size": 0, "query": {"match_all": {}}}))
                    .send()
                    .await
                    .expect("the search engine answers");
                let status = response.status();
                assert!(
                    status.is_success(),
                    "a search of {alias} failed during a rebuild: {status} {:?}",
                    response.text().await
                );
            }
            // A search every 5 ms: a steady reader, not a second load.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (database, config) = (database(&stack.db), stack.search.config());
    rounds.spawn(2, move || {
        let (database, config) = (database.clone(), config.clone());
        async move {
            rebuild_search(&database, &config, false)
                .await
                .expect("the search rebuild succeeds");
        }
    });
    let (history, counts) = rounds
        .beside(random_history(
            &base,
            &stack.db.pool,
            seed.wrapping_add(1),
            15,
            6,
            30,
        ))
        .await;
    history.assert_ok();
    eprintln!(
        "{} rebuilds, {} searches of both aliases during the load",
        counts[1], counts[0]
    );

    caught_up(&stack.env, Duration::from_secs(300)).await;
    assert_clean(&verify(&stack).await, &stack);
    let (products, orders) = documents(&stack).await;
    assert_eq!(
        products.len() as i64,
        stack
            .db
            .count("SELECT count(*) FROM events WHERE event_type = 'ProductRegistered'")
            .await,
        "one product document per ProductRegistered"
    );
    assert_eq!(
        orders.len() as i64,
        stack
            .db
            .count("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .await,
        "one order document per OrderPlaced"
    );
    let (products_alias, orders_alias) = (
        aliased(&stack, "products").await,
        aliased(&stack, "orders").await,
    );
    assert_eq!((products_alias.len(), orders_alias.len()), (1, 1));
    let indices: Value = reqwest::Client::new()
        .get(format!(
            "{}/_cat/indices/{}-*?format=json",
            stack.search.url, stack.search.prefix
        ))
        .send()
        .await
        .expect("index list")
        .json()
        .await
        .expect("index list answer");
    let mut names: Vec<&str> = indices
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["index"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [orders_alias[0].as_str(), products_alias[0].as_str()],
        "every replaced index was dropped"
    );
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_rebuild_on_a_fresh_system_makes_the_aliases_the_projector_then_uses() {
    let stack = ProcessStack::new("search-rebuild-fresh").await;
    rebuild(&stack, false).await;
    for suffix in ["products", "orders"] {
        let alias = stack.search.alias(suffix);
        let indices = aliased(&stack, suffix).await;
        assert_eq!(indices.len(), 1, "{indices:?}");
        assert!(
            indices[0].starts_with(&format!("{alias}-v1-r")),
            "{indices:?}"
        );
        assert!(!index_exists(&stack, &format!("{alias}-v1")).await);
    }

    let (mut serve, base) = stack.serve(&["serve"]).await;
    let id = register_product(
        &base,
        json!({"sku": "FRESH-1", "name": "Fresh", "description": "first product",
            "initial_stock": 1, "price": {"amount_minor": 100, "currency": "EUR"}}),
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the product in the rebuilt index",
        || async { stack.search.document("products", &id).await },
    )
    .await;
    assert_clean(&verify(&stack).await, &stack);
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}

/// Every index under `{alias}-…`, with the aliases that point at it.
async fn indices_of(stack: &ProcessStack, suffix: &str) -> BTreeMap<String, Vec<String>> {
    let pattern = format!("{}-*", stack.search.alias(suffix));
    let body: Value = reqwest::Client::new()
        .get(format!("{}/{pattern}/_alias", stack.search.url))
        .send()
        .await
        .expect("alias listing")
        .json()
        .await
        .expect("alias listing json");
    body.as_object()
        .map(|indices| {
            indices
                .iter()
                .map(|(index, entry)| {
                    let aliases = entry["aliases"]
                        .as_object()
                        .map(|a| a.keys().cloned().collect())
                        .unwrap_or_default();
                    (index.clone(), aliases)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_indices_of_a_killed_search_rebuild_are_removed_by_the_next_one() {
    let Served {
        stack, mut serve, ..
    } = served_history("search-rebuild-kill", 6, 3, 12).await;

    // The rebuild is held after it created its indices, at its first read
    // of the event store (the test locks the table), and killed there.
    let mut lock = stack.db.pool.begin().await.expect("transaction");
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let mut killed = stack.env.spawn(&["projections", "rebuild", "search"]);
    let unfinished = eventually(
        Duration::from_secs(60),
        "the rebuild's new indices",
        || async {
            let mut new = Vec::new();
            for suffix in ["products", "orders"] {
                for (index, aliases) in indices_of(&stack, suffix).await {
                    if index.contains("-v1-r") && aliases.is_empty() {
                        new.push(index);
                    }
                }
            }
            (new.len() == 2).then_some(new)
        },
    )
    .await;
    killed.kill();
    lock.rollback().await.expect("unlock");

    stack.env.run(&["projections", "rebuild", "search"]);
    for index in &unfinished {
        assert!(
            !index_exists(&stack, index).await,
            "{index}, left by the killed rebuild, is still there"
        );
    }
    for suffix in ["products", "orders"] {
        let indices = indices_of(&stack, suffix).await;
        assert_eq!(indices.len(), 1, "one index per alias: {indices:?}");
        assert!(
            indices.values().all(|aliases| !aliases.is_empty()),
            "{indices:?}"
        );
    }
    assert_eq!(
        stack
            .db
            .count("SELECT count(*) FROM search_rebuild_indices")
            .await,
        0
    );
    assert_clean(&verify(&stack).await, &stack);
    assert!(serve.running(), "serve exited; see {}", serve.log.display());
}
