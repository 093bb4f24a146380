//! The README's examples, run as written against `eshop serve` (the quick
//! start's process: REST, the relay, the projectors and GraphQL).

use std::process::Command;

use eshop_tests::ProcessStack;

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
    let ProcessStack { db, port, env, .. } = ProcessStack::new("readme").await;
    let mut serve = env.spawn(&["serve"]);
    let address = serve.wait_live(port).await;
    let script = readme_example();
    assert!(
        script.contains("API=http://127.0.0.1:8080"),
        "the example names the default address"
    );
    let script = script.replace("API=http://127.0.0.1:8080", &format!("API={address}"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
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
        "\"version\":2",
        "\"code\":\"invalid-transition\"",
        "cannot cancel an order that is delivered",
        "\"code\":\"stale-version\"",
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
