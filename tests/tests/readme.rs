//! The README's examples, run as written against `eshop serve` (the quick
//! start's process: REST, the relay, the projectors and GraphQL).

use std::process::Command;

use eshop_tests::{ProcessStack, eshop_bin};

fn readme_example() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- example:start -->")
        .expect("example start marker");
    let end = readme
        .find("<!-- example:end -->")
        .expect("example end marker");
    let block = &readme[start..end];
    let code = block
        .split("```sh")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block");
    code.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_examples_work_as_written() {
    let ProcessStack {
        db,
        port,
        env,
        search,
        ..
    } = ProcessStack::new("readme").await;
    // As scripts/serve does: spans go to the local Jaeger, whose query API
    // the example reads a trace from.
    let jaeger = eshop_tests::jaeger::TestJaeger::new().await;
    let env = env.with("OTEL_EXPORTER_OTLP_ENDPOINT", &jaeger.otlp);
    let mut serve = env.spawn(&["serve"]);
    let address = serve.wait_live(port).await;
    let script = readme_example();
    assert!(
        script.contains("API=http://127.0.0.1:8080"),
        "the example names the default address"
    );
    let script = script.replace("API=http://127.0.0.1:8080", &format!("API={address}"));
    // The example's `target/release/eshop` (what scripts/serve builds) is
    // the binary under test here, on the test's database.
    assert!(
        script.contains("target/release/eshop "),
        "the example runs the release binary"
    );
    let script = script.replace(
        "target/release/eshop ",
        &format!("{} ", eshop_bin().display()),
    );
    let database_url = db.url.clone();
    let (search_url, search_prefix) = (search.url.clone(), search.prefix.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("DATABASE_URL", database_url)
            .env("SEARCH_URL", search_url)
            .env("SEARCH_INDEX_PREFIX", search_prefix)
            .output()
    })
    .await
    .expect("task")
    .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    for expected in [
        "\"code\":\"unauthenticated\"",
        "\"code\":\"forbidden\"",
        "\"version\":2",
        "\"code\":\"invalid-transition\"",
        "cannot cancel an order that is delivered",
        "\"code\":\"stale-version\"",
        "[1,\"eshop.Order.OrderPlaced\"]\n[2,\"eshop.Order.OrderPaid\"]\n[3,\"eshop.Order.OrderShipped\"]\n[4,\"eshop.Order.OrderDelivered\"]",
        "every view equals its history",
        "order_view: rebuilt from 4 events",
        "POST /baskets/{id}/checkout",
        "command, commit, decide, load",
        "project order_view",
        "{\"data\":{\"order\":{\"status\":\"DELIVERED\",\"total\":{\"formatted\":\"25.98 EUR\"},\"statusHistory\":[{\"status\":\"PLACED\"},{\"status\":\"PAID\"},{\"status\":\"SHIPPED\"},{\"status\":\"DELIVERED\"}]}}}",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected} in:\n{stdout}"
        );
    }
    let delivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'OrderDelivered'")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(delivered, 1, "the example's order was delivered:\n{stdout}");
}
