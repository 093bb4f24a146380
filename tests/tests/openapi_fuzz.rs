//! A fuzzing pass of the OpenAPI document with schemathesis: every
//! operation, with generated valid and invalid requests, alone and chained
//! through the document's links. It fails on any 5xx and on any response
//! that the document does not describe (status, content type, headers or
//! body schema), and on a wrong answer to an unsupported method.
//!
//! Needs schemathesis (`scripts/setup` installs it). Not part of the pass:
//! `positive_data_acceptance` and `negative_data_rejection`, because
//! business rules the schema cannot express (stock, state, SKU uniqueness,
//! a product's currency) rightly refuse some schema-valid requests, and the
//! API is lenient where clients benefit (surrounding whitespace is trimmed).

use std::process::Command;

use eshop_tests::TestApp;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,unsupported_method,\
                      allow_header_conformance";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_generated_requests_as_its_document_says() {
    let app = TestApp::spawn().await;
    let examples = std::env::var("FUZZ_MAX_EXAMPLES").unwrap_or_else(|_| "30".into());
    let schema = format!("{}/openapi.json", app.address);
    // Generated requests carry a real token: the fuzzing is of the
    // commands, not of the door (forged tokens have tests of their own).
    let authorization = format!(
        "Authorization: {}",
        eshop_tests::auth::bearer(eshop_tests::auth::Who::Ops).await
    );
    let run = tokio::task::spawn_blocking(move || {
        Command::new(std::env::var("SCHEMATHESIS_BIN").unwrap_or_else(|_| "st".into()))
            .args([
                "run",
                &schema,
                "--checks",
                CHECKS,
                "--max-examples",
                &examples,
                "--header",
                &authorization,
            ])
            .args([
                "--workers",
                "2",
                "--suppress-health-check",
                "all",
                "--no-color",
            ])
            .output()
    })
    .await
    .expect("fuzz task");
    let output = run.unwrap_or_else(|error| {
        panic!("schemathesis ('st') could not be run ({error}); install it with scripts/setup")
    });
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("Tested: 16"),
        "not every operation was tested:\n{report}"
    );
}
