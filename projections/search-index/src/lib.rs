//! eshop's search index as an attached resource: where it lives
//! ([`SearchConfig`]), its indices and aliases, and a client for
//! Elasticsearch 8/9 and OpenSearch 2/3 ([`SearchClient`]). The documents
//! and their mappings are read models (`read_models::search_document`);
//! the projector writes them, the query side reads them.
//!
//! Each index is written through an alias (`{prefix}-products` pointing at
//! `{prefix}-products-v1`), so a rebuild can fill a new index and swap the
//! alias.

mod client;
mod reply;

pub use client::{BulkOutcome, IndexOp, SearchClient, SearchError};
pub use read_models::search_document::IndexKind;
pub use reply::{Hit, Hits, SearchReply, Total};
use reqwest::Url;

/// The version of the index mappings, part of each index's name.
const MAPPING_VERSION: &str = "v1";

/// Where the search index lives.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchConfig {
    /// Elasticsearch 8/9 or OpenSearch 2/3 base URL; credentials in the URL
    /// are sent as basic auth.
    #[arg(
        id = "search_url",
        long = "search-url",
        env = "SEARCH_URL",
        default_value = "http://127.0.0.1:9200"
    )]
    pub url: Url,

    /// Index aliases are `{prefix}-products` and `{prefix}-orders`.
    #[arg(
        long = "search-index-prefix",
        env = "SEARCH_INDEX_PREFIX",
        default_value = "eshop"
    )]
    pub index_prefix: String,
}

impl SearchConfig {
    /// The alias that queries read and the projection writes.
    #[must_use]
    pub fn alias(&self, kind: IndexKind) -> String {
        format!("{}-{}", self.index_prefix, kind.suffix())
    }

    /// The concrete index the alias points at when eshop creates it.
    #[must_use]
    pub fn index(&self, kind: IndexKind) -> String {
        format!("{}-{MAPPING_VERSION}", self.alias(kind))
    }
}

/// Creates the indices with their mappings and aliases, or adds new fields
/// to existing ones.
pub async fn ensure_indices(
    client: &SearchClient,
    config: &SearchConfig,
) -> Result<(), SearchError> {
    for kind in IndexKind::ALL {
        client
            .ensure_index(&config.alias(kind), &config.index(kind), &kind.mappings())
            .await
            .map_err(|error| {
                error.context(&format!("preparing the index {}", config.alias(kind)))
            })?;
    }
    Ok(())
}
