//! GraphiQL, bundled: the page and its scripts are served from the binary
//! (GraphiQL 3.8.3 and React 18.3.1, MIT, see `assets/graphiql/`), so the
//! explorer works without reaching any CDN.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>eshop GraphQL</title>
<link rel="stylesheet" href="/graphiql/graphiql.min.css">
<style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
</head>
<body>
<div id="graphiql">Loading…</div>
<script src="/graphiql/react.production.min.js"></script>
<script src="/graphiql/react-dom.production.min.js"></script>
<script src="/graphiql/graphiql.min.js"></script>
<script>
  const ws = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql/ws";
  const fetcher = GraphiQL.createFetcher({ url: "/graphql", subscriptionUrl: ws });
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, { fetcher, defaultEditorToolsVisibility: true })
  );
</script>
</body>
</html>
"#;

const JS: &str = "text/javascript; charset=utf-8";
const CACHE: &str = "public, max-age=86400";

/// The page (the caller routes it) and its assets under `/graphiql/`.
pub fn page() -> Html<&'static str> {
    Html(PAGE)
}

pub fn assets() -> Router {
    let asset = |body: &'static [u8], content_type: &'static str| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, CACHE),
                ],
                body,
            )
                .into_response()
        })
    };
    Router::new()
        .route(
            "/graphiql/graphiql.min.js",
            asset(include_bytes!("../assets/graphiql/graphiql.min.js"), JS),
        )
        .route(
            "/graphiql/graphiql.min.css",
            asset(
                include_bytes!("../assets/graphiql/graphiql.min.css"),
                "text/css; charset=utf-8",
            ),
        )
        .route(
            "/graphiql/react.production.min.js",
            asset(
                include_bytes!("../assets/graphiql/react.production.min.js"),
                JS,
            ),
        )
        .route(
            "/graphiql/react-dom.production.min.js",
            asset(
                include_bytes!("../assets/graphiql/react-dom.production.min.js"),
                JS,
            ),
        )
}
