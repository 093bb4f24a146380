//! A `_search` reply, as far as eshop reads it. A reply that does not have
//! this shape is a [`SearchError::Malformed`], never an empty result.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::SearchError;

#[derive(Debug, Clone, Deserialize)]
pub struct SearchReply {
    pub hits: Hits,
    /// The aggregations asked for (`null` when none were).
    #[serde(default)]
    pub aggregations: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hits {
    pub total: Total,
    pub hits: Vec<Hit>,
}

/// How many documents matched: an object since Elasticsearch 7 and in
/// every OpenSearch, a bare number before.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Total {
    Counted { value: u64 },
    Number(u64),
}

impl Total {
    #[must_use]
    pub const fn value(self) -> u64 {
        match self {
            Self::Counted { value } | Self::Number(value) => value,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hit {
    #[serde(rename = "_id")]
    pub id: String,
    /// Present when the search asked for `"version": true`.
    #[serde(rename = "_version")]
    pub version: Option<i64>,
    /// `null` when the hits are sorted by something other than the score.
    #[serde(rename = "_score")]
    pub score: Option<f64>,
    #[serde(rename = "_source", default)]
    pub source: Value,
    /// The sort values, for `search_after`.
    #[serde(default)]
    pub sort: Value,
    /// Highlighted fragments per field, when highlighting was asked for.
    #[serde(default)]
    pub highlight: BTreeMap<String, Vec<String>>,
}

impl SearchReply {
    /// Reads the reply to a `_search` on `index`.
    ///
    /// # Errors
    /// [`SearchError::Malformed`] when the reply does not have the shape of
    /// a search reply.
    pub fn read(reply: Value, index: &str) -> Result<Self, SearchError> {
        serde_json::from_value(reply).map_err(|error| {
            SearchError::Malformed(format!("the _search reply of {index}: {error}"))
        })
    }
}

impl Hit {
    /// Its version, which the search asked for.
    ///
    /// # Errors
    /// [`SearchError::Malformed`] when the engine sent none.
    pub fn version(&self) -> Result<i64, SearchError> {
        self.version
            .ok_or_else(|| SearchError::Malformed(format!("the hit {} has no _version", self.id)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_reply_without_hits_is_malformed_not_empty() {
        for reply in [
            json!({}),
            json!({"hits": {"total": 3}}),
            json!({"hits": {"hits": [{}]}}),
        ] {
            let error = SearchReply::read(reply.clone(), "products").expect_err("malformed");
            assert!(
                matches!(error, SearchError::Malformed(_)),
                "{reply}: {error}"
            );
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn both_spellings_of_the_total_are_read() {
        for (total, value) in [(json!({"value": 7, "relation": "eq"}), 7), (json!(9), 9)] {
            let reply = SearchReply::read(json!({"hits": {"total": total, "hits": []}}), "orders")
                .expect("a reply");
            assert_eq!(reply.hits.total.value(), value);
        }
    }

    #[test]
    fn a_hit_reads_its_id_version_score_and_highlights() {
        let reply = SearchReply::read(
            json!({"hits": {"total": {"value": 1}, "hits": [{
                "_id": "p-1", "_version": 4, "_score": null, "_source": {"sku": "MUG"},
                "highlight": {"name": ["<em>Mug</em>"]}, "sort": ["p-1"]
            }]}}),
            "products",
        )
        .expect("a reply");
        let hit = &reply.hits.hits[0];
        assert_eq!(
            (hit.id.as_str(), hit.version().expect("version")),
            ("p-1", 4)
        );
        assert_eq!(hit.score, None);
        assert_eq!(hit.highlight["name"], ["<em>Mug</em>"]);
        assert_eq!(hit.sort, json!(["p-1"]));
        let unversioned = Hit {
            version: None,
            ..hit.clone()
        };
        assert!(unversioned.version().is_err());
    }
}
