//! CORS for browser frontends: only the origins in `CORS_ALLOWED_ORIGINS`
//! may call the API from a page, none by default.

use eshop_tests::TestApp;
use reqwest::Method;
use serde_json::json;

const SHOP: &str = "https://shop.example";

async fn app_allowing(origins: &[&str]) -> TestApp {
    let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    TestApp::spawn_with(move |config| config.http.cors_allowed_origins = origins).await
}

fn header<'a>(response: &'a eshop_tests::TestResponse, name: &str) -> Option<&'a str> {
    response.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A browser's preflight for a POST with a bearer token and an
/// idempotency key.
fn preflight(origin: &str) -> [(&str, &str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization,content-type,idempotency-key",
        ),
    ]
}

#[tokio::test]
async fn an_allowed_origins_preflight_is_answered_with_what_a_frontend_sends() {
    let app = app_allowing(&[SHOP, "http://localhost:5173"]).await;
    let response = app
        .send(Method::OPTIONS, "/baskets", None, &preflight(SHOP))
        .await;
    assert!((200..300).contains(&response.status), "{response:?}");
    assert_eq!(header(&response, "access-control-allow-origin"), Some(SHOP));
    let methods = header(&response, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let headers = header(&response, "access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for wanted in ["authorization", "content-type", "idempotency-key"] {
        assert!(headers.contains(wanted), "{wanted} not in {headers}");
    }
}

#[tokio::test]
async fn an_allowed_origins_request_may_read_the_answer_and_its_headers() {
    let app = app_allowing(&[SHOP]).await;
    let response = app
        .send(
            Method::POST,
            "/baskets",
            Some(json!({"customer_id": uuid::Uuid::now_v7()})),
            &[("origin", SHOP)],
        )
        .await
        .accepted();
    assert_eq!(header(&response, "access-control-allow-origin"), Some(SHOP));
    let exposed = header(&response, "access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for wanted in ["location", "etag", "x-correlation-id"] {
        assert!(exposed.contains(wanted), "{wanted} not in {exposed}");
    }
}

#[tokio::test]
async fn another_origin_gets_no_permission() {
    let app = app_allowing(&[SHOP]).await;
    let response = app
        .send(
            Method::OPTIONS,
            "/baskets",
            None,
            &preflight("https://evil.example"),
        )
        .await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn with_no_origins_configured_no_browser_origin_is_allowed() {
    let app = TestApp::spawn().await;
    let response = app
        .send(Method::OPTIONS, "/baskets", None, &preflight(SHOP))
        .await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(response.status, 405, "{response:?}");
}

#[test]
fn origins_that_are_not_origins_are_refused_at_start_up() {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        http: command_api::server::HttpLimits,
    }
    let parse = |value: &str| Args::try_parse_from(["eshop", "--cors-allowed-origins", value]);
    assert!(parse("https://shop.example,http://localhost:5173").is_ok());
    assert!(parse("*").is_ok());
    for bad in [
        "shop.example",
        "https://shop.example/path",
        "ftp://x",
        "https://",
    ] {
        assert!(parse(bad).is_err(), "{bad} accepted");
    }
}
