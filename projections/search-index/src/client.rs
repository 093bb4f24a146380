//! The part of the search engine's REST API that Elasticsearch 8/9 and
//! OpenSearch 2/3 share: index creation with mappings and an alias,
//! `_mget`, `_bulk` with external versioning, and the root for health.
//!
//! Plain JSON over HTTP, on purpose: the official clients of each engine
//! negotiate engine-specific media types and product checks, and eshop
//! must run unchanged against either by URL.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use reqwest::{Client, StatusCode, Url};

use crate::SearchReply;
use serde_json::{Value, json};
use tracing::Instrument;

/// Why a request to the search engine failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Unreachable, timed out, overloaded (429) or failing (5xx): retry.
    #[error("the search engine is unavailable: {0}")]
    Unavailable(String),
    /// The engine refused the request itself: retrying will not help.
    #[error("the search engine refused the request: {0}")]
    Refused(String),
    /// The engine answered with a reply eshop cannot read (a proxy's page,
    /// an incompatible engine): retrying will not help.
    #[error("the search engine's reply does not read: {0}")]
    Malformed(String),
}

impl SearchError {
    /// The same error, saying what was being done.
    #[must_use]
    pub fn context(self, doing: &str) -> Self {
        match self {
            Self::Unavailable(reason) => Self::Unavailable(format!("{doing}: {reason}")),
            Self::Refused(reason) => Self::Refused(format!("{doing}: {reason}")),
            Self::Malformed(reason) => Self::Malformed(format!("{doing}: {reason}")),
        }
    }

    /// Whether trying again later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<reqwest::Error> for SearchError {
    fn from(error: reqwest::Error) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// A document to index, at the version of the event that produced it.
#[derive(Debug, Clone)]
pub struct IndexOp {
    pub index: String,
    pub id: String,
    pub version: i64,
    pub source: Value,
}

/// What became of one document of a bulk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkOutcome {
    Indexed,
    /// The index already holds this version or a newer one.
    Stale,
    /// Worth retrying (429, 5xx).
    Retry(String),
    /// Refused (a mapping conflict, …): will not apply on a retry.
    Rejected(String),
}

/// A client of one search cluster, addressed by `SEARCH_URL`. Credentials
/// in the URL (`https://user:pass@host:9200`) are sent as basic auth.
#[derive(Debug, Clone)]
pub struct SearchClient {
    http: Client,
    base: Url,
    credentials: Option<(String, String)>,
}

impl SearchClient {
    pub fn new(url: &Url) -> Result<Self, SearchError> {
        let mut base = url.clone();
        let credentials = (!base.username().is_empty()).then(|| {
            (
                base.username().to_owned(),
                base.password().unwrap_or_default().to_owned(),
            )
        });
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| SearchError::Refused(error.to_string()))?;
        Ok(Self {
            http,
            base,
            credentials,
        })
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Value), SearchError> {
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(SearchError::Unavailable(format!("{status}: {body}")));
        }
        Ok((status, body))
    }

    /// The cluster's root document (name and version): the health check.
    pub async fn info(&self) -> Result<Value, SearchError> {
        let (status, body) = self.send(self.request(reqwest::Method::GET, "/")).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(SearchError::Unavailable(format!("{status}: {body}")))
        }
    }

    /// Makes sure `alias` points at an index with `mappings`: creates
    /// `index` with the alias when the alias does not exist yet, and
    /// otherwise adds any new fields to the aliased index's mapping (a
    /// conflicting change is refused, and eshop does not start).
    pub async fn ensure_index(
        &self,
        alias: &str,
        index: &str,
        mappings: &Value,
    ) -> Result<(), SearchError> {
        let (status, _) = self
            .send(self.request(reqwest::Method::HEAD, &format!("/_alias/{alias}")))
            .await?;
        if status.is_success() {
            let (status, body) = self
                .send(
                    self.request(reqwest::Method::PUT, &format!("/{alias}/_mapping"))
                        .json(mappings),
                )
                .await?;
            return if status.is_success() {
                Ok(())
            } else {
                Err(SearchError::Refused(format!(
                    "updating the mapping of {alias}: {status}: {body}"
                )))
            };
        }
        let (status, body) = self
            .send(
                self.request(reqwest::Method::PUT, &format!("/{index}"))
                    .json(&json!({
                        "mappings": mappings,
                        "aliases": { alias: { "is_write_index": true } }
                    })),
            )
            .await?;
        let error_type = body["error"]["type"].as_str().unwrap_or_default();
        if status.is_success() || error_type == "resource_already_exists_exception" {
            // Another process may have created it first: either way, the
            // alias must now point at it.
            let (status, body) = self
                .send(
                    self.request(reqwest::Method::PUT, &format!("/{index}/_alias/{alias}"))
                        .json(&json!({ "is_write_index": true })),
                )
                .await?;
            if status.is_success() {
                return Ok(());
            }
            return Err(SearchError::Refused(format!(
                "pointing {alias} at {index}: {status}: {body}"
            )));
        }
        Err(SearchError::Refused(format!(
            "creating {index}: {status}: {body}"
        )))
    }

    /// Creates `index` with `mappings` and no alias (a rebuild's new
    /// index, swapped in later with [`Self::update_aliases`]).
    pub async fn create_index(&self, index: &str, mappings: &Value) -> Result<(), SearchError> {
        let (status, body) = self
            .send(
                self.request(reqwest::Method::PUT, &format!("/{index}"))
                    .json(&json!({ "mappings": mappings })),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(SearchError::Refused(format!(
                "creating {index}: {status}: {body}"
            )))
        }
    }

    /// The concrete indices `alias` points at (none when it does not exist).
    pub async fn alias_indices(&self, alias: &str) -> Result<Vec<String>, SearchError> {
        let (status, body) = self
            .send(self.request(reqwest::Method::GET, &format!("/_alias/{alias}")))
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(SearchError::Refused(format!(
                "reading the alias {alias}: {status}: {body}"
            )));
        }
        let mut indices: Vec<String> = body
            .as_object()
            .map(|indices| indices.keys().cloned().collect())
            .ok_or_else(|| {
                SearchError::Malformed(format!("the indices of the alias {alias}: {body}"))
            })?;
        indices.sort();
        Ok(indices)
    }

    /// Applies alias `actions` (`add`, `remove`) in one atomic request.
    pub async fn update_aliases(&self, actions: &[Value]) -> Result<(), SearchError> {
        let (status, body) = self
            .send(
                self.request(reqwest::Method::POST, "/_aliases")
                    .json(&json!({ "actions": actions })),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(SearchError::Refused(format!(
                "updating aliases: {status}: {body}"
            )))
        }
    }

    /// Deletes `index`; one that does not exist is already gone.
    pub async fn delete_index(&self, index: &str) -> Result<(), SearchError> {
        let (status, body) = self
            .send(self.request(reqwest::Method::DELETE, &format!("/{index}")))
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(SearchError::Refused(format!(
                "deleting {index}: {status}: {body}"
            )))
        }
    }

    /// The current version and `_source` of each found document.
    pub async fn mget(
        &self,
        index: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, (i64, Value)>, SearchError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let (status, body) = self
            .send(
                self.request(reqwest::Method::POST, &format!("/{index}/_mget"))
                    .query(&[("realtime", "true")])
                    .json(&json!({ "ids": ids })),
            )
            .await?;
        if !status.is_success() {
            return Err(SearchError::Refused(format!(
                "_mget on {index}: {status}: {body}"
            )));
        }
        let mut found = HashMap::new();
        for doc in body["docs"].as_array().into_iter().flatten() {
            if doc["found"].as_bool() == Some(true)
                && let (Some(id), Some(version)) = (doc["_id"].as_str(), doc["_version"].as_i64())
            {
                found.insert(id.to_owned(), (version, doc["_source"].clone()));
            }
        }
        Ok(found)
    }

    /// Runs a `_search` request body (query DSL, aggregations, highlight)
    /// on `index` and returns the engine's answer.
    pub async fn search(&self, index: &str, body: &Value) -> Result<SearchReply, SearchError> {
        let (status, reply) = self
            .send(
                self.request(reqwest::Method::POST, &format!("/{index}/_search"))
                    .json(body),
            )
            .await?;
        if status.is_success() {
            SearchReply::read(reply, index)
        } else {
            Err(SearchError::Refused(format!(
                "_search on {index}: {status}: {reply}"
            )))
        }
    }

    /// Makes every indexed document of `index` visible to searches now
    /// rather than at the next periodic refresh.
    pub async fn refresh(&self, index: &str) -> Result<(), SearchError> {
        let (status, reply) = self
            .send(self.request(reqwest::Method::POST, &format!("/{index}/_refresh")))
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(SearchError::Refused(format!(
                "_refresh on {index}: {status}: {reply}"
            )))
        }
    }

    /// Indexes documents with external versioning: a document already at
    /// this version or newer stays as it is.
    pub async fn bulk(&self, ops: &[IndexOp]) -> Result<Vec<BulkOutcome>, SearchError> {
        let span = telemetry::span!("search.bulk", otel.kind = "client", documents = ops.len());
        self.bulk_once(ops).instrument(span).await
    }

    async fn bulk_once(&self, ops: &[IndexOp]) -> Result<Vec<BulkOutcome>, SearchError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut body = String::new();
        for op in ops {
            let action = json!({ "index": {
                "_index": op.index, "_id": op.id,
                "version": op.version, "version_type": "external"
            }});
            let _ = writeln!(body, "{action}");
            let _ = writeln!(body, "{}", op.source);
        }
        let started = std::time::Instant::now();
        let sent = self
            .send(
                self.request(reqwest::Method::POST, "/_bulk")
                    .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                    .body(body),
            )
            .await;
        metrics::histogram!("eshop_search_bulk_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let (status, reply) = sent?;
        if !status.is_success() {
            return Err(SearchError::Refused(format!("_bulk: {status}: {reply}")));
        }
        let items = reply["items"]
            .as_array()
            .cloned()
            .ok_or_else(|| SearchError::Malformed(format!("_bulk without items: {reply}")))?;
        if items.len() != ops.len() {
            return Err(SearchError::Unavailable(format!(
                "_bulk answered {} items for {} documents",
                items.len(),
                ops.len()
            )));
        }
        Ok(items
            .iter()
            .map(|item| {
                let item = &item["index"];
                let status = item["status"].as_u64().unwrap_or(500);
                match status {
                    200..=299 => BulkOutcome::Indexed,
                    409 => BulkOutcome::Stale,
                    429 | 500.. => BulkOutcome::Retry(item["error"].to_string()),
                    _ => BulkOutcome::Rejected(item["error"].to_string()),
                }
            })
            .collect())
    }
}
