//! The search indices the projection builds, as the GraphQL API queries
//! them: full text, filters, facets and highlights over the REST API that
//! Elasticsearch 8/9 and OpenSearch 2/3 share.

use search_index::{IndexKind, SearchClient, SearchConfig, SearchError, SearchReply};
use serde_json::Value;

/// The product and order indices (through their aliases).
#[derive(Clone)]
pub struct SearchIndex {
    client: SearchClient,
    config: SearchConfig,
}

impl SearchIndex {
    #[must_use]
    pub const fn new(client: SearchClient, config: SearchConfig) -> Self {
        Self { client, config }
    }

    pub async fn search(&self, kind: IndexKind, body: &Value) -> Result<SearchReply, SearchError> {
        metrics::counter!("eshop_graphql_search_requests_total").increment(1);
        self.client.search(&self.config.alias(kind), body).await
    }

    /// Whether each `(type, id, sequence)` is in its index at that version
    /// or a newer one.
    pub async fn has_applied(
        &self,
        written: &[&(String, String, i64)],
    ) -> Result<bool, SearchError> {
        for kind in IndexKind::ALL {
            let wanted: Vec<&(String, String, i64)> = written
                .iter()
                .copied()
                .filter(|(t, _, _)| IndexKind::of(t) == Some(kind))
                .collect();
            let ids: Vec<&str> = wanted.iter().map(|(_, id, _)| id.as_str()).collect();
            let found = self.client.mget(&self.config.alias(kind), &ids).await?;
            let behind = wanted.iter().any(|(_, id, sequence)| {
                found.get(id).is_none_or(|(version, _)| version < sequence)
            });
            if behind {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The engine's root document: the readiness check.
    pub async fn info(&self) -> Result<Value, SearchError> {
        self.client.info().await
    }

    /// Makes what is indexed visible to searches now.
    pub async fn refresh(&self) -> Result<(), SearchError> {
        for kind in IndexKind::ALL {
            self.client.refresh(&self.config.alias(kind)).await?;
        }
        Ok(())
    }
}
