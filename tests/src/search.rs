//! The search engine the tests use, with index names of their own.

use projections::search::SearchConfig;
use serde_json::{Value, json};

/// The search engine at `TEST_SEARCH_URL` (default `http://127.0.0.1:9200`,
/// where `scripts/setup` starts OpenSearch), and an index prefix no other
/// test uses.
pub struct TestSearch {
    pub url: String,
    pub prefix: String,
    http: reqwest::Client,
}

impl TestSearch {
    /// Fails the test when no search server answers.
    pub async fn new(prefix: &str) -> Self {
        let url =
            std::env::var("TEST_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into());
        let http = reqwest::Client::new();
        let answer = http.get(&url).send().await;
        assert!(
            answer.is_ok_and(|r| r.status().is_success()),
            "search tests need Elasticsearch or OpenSearch at {url}; \
             run scripts/setup (it starts OpenSearch)"
        );
        Self {
            url,
            prefix: prefix.to_lowercase(),
            http,
        }
    }

    pub fn config(&self) -> SearchConfig {
        SearchConfig {
            url: self.url.parse().expect("search url"),
            index_prefix: self.prefix.clone(),
        }
    }

    /// `{prefix}-products` or `{prefix}-orders`.
    pub fn alias(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// Runs a search body against `{prefix}-{suffix}`, over every document
    /// indexed so far.
    pub async fn search(&self, suffix: &str, body: Value) -> Value {
        self.refresh(suffix).await;
        let response = self
            .http
            .post(format!("{}/{}/_search", self.url, self.alias(suffix)))
            .json(&body)
            .send()
            .await
            .expect("search request");
        let status = response.status();
        let body: Value = response.json().await.expect("search answer");
        assert!(status.is_success(), "search failed: {status} {body}");
        body
    }

    /// Makes every document indexed so far visible to searches (the engine
    /// otherwise does so at its next periodic refresh).
    pub async fn refresh(&self, suffix: &str) {
        let response = self
            .http
            .post(format!("{}/{}/_refresh", self.url, self.alias(suffix)))
            .send()
            .await
            .expect("refresh request");
        assert!(
            response.status().is_success(),
            "refresh of {} failed: {}",
            self.alias(suffix),
            response.status()
        );
    }

    /// Every document of `{prefix}-{suffix}` by id: `(version, source)`.
    pub async fn documents(
        &self,
        suffix: &str,
    ) -> std::collections::BTreeMap<String, (i64, Value)> {
        let body = self
            .search(
                suffix,
                json!({ "size": 10000, "version": true, "query": { "match_all": {} } }),
            )
            .await;
        body["hits"]["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|hit| {
                (
                    hit["_id"].as_str().unwrap_or_default().to_owned(),
                    (
                        hit["_version"].as_i64().unwrap_or(-1),
                        hit["_source"].clone(),
                    ),
                )
            })
            .collect()
    }

    /// One document's source, if the index holds it.
    pub async fn document(&self, suffix: &str, id: &str) -> Option<(i64, Value)> {
        let response = self
            .http
            .get(format!("{}/{}/_doc/{id}", self.url, self.alias(suffix)))
            .send()
            .await
            .expect("get request");
        let body: Value = response.json().await.expect("get answer");
        (body["found"].as_bool() == Some(true)).then(|| {
            (
                body["_version"].as_i64().unwrap_or(-1),
                body["_source"].clone(),
            )
        })
    }
}

/// The test's indices go with it (the engine caps the shards a node holds
/// open, and every test makes its own). A failed test keeps them, to be
/// looked at.
impl Drop for TestSearch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let url = format!("{}/{}-*", self.url.trim_end_matches('/'), self.prefix);
        // Drop runs inside the test's runtime; use a thread with its own.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                reqwest::Client::new()
                    .delete(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            })
        })
        .join();
        if !matches!(deleted, Ok(Some(_))) {
            eprintln!(
                "the test's search indices {}-* were not deleted",
                self.prefix
            );
        }
    }
}
