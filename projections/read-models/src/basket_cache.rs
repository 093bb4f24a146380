//! `basket_view` rows in the distributed cache, for `basket(id)`.
//!
//! The guarantee: a reader never gets a basket older than what
//! `basket_view` had committed when its request arrived. How:
//!
//! - An entry's version is **twice the row's version** for a row, and
//!   **one less** for a *marker*: before the projector commits a change
//!   that takes a basket's row to version V, it stores a marker at 2V − 1
//!   ([`BasketCache::invalidate`]). Every entry is written with
//!   compare-and-set by version, so the marker replaces any row older
//!   than V and no row older than V can be stored after it.
//! - A reader serves rows only; a marker or nothing is a miss. On a miss
//!   it reads `basket_view` and offers the row at 2 × its version
//!   ([`BasketCache::fill`]): a row read before the commit (V − 1, entry
//!   2V − 2) loses against the marker; one read after it (V, entry 2V)
//!   replaces the marker.
//!
//! So once a commit of V has happened, the cache holds a marker at 2V − 1
//! or something newer, and a hit is at version V or later.
//!
//! A cache that is down, slow or holds what does not decode is a miss
//! (the reader goes to PostgreSQL). A marker the projector could not store
//! is kept and stored again by [`PendingMarkers`] once the cache answers,
//! before any newer change of that basket is committed without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache::{Cache, CacheError, Entry, Key};
use futures::StreamExt as _;
use uuid::Uuid;

use crate::basket_view::BasketRow;

/// The format of a cached row's JSON. Bump it with any change of
/// [`BasketRow`]'s serialized shape (a test pins that shape): a deploy then
/// reads none of the old entries.
pub const ROW_FORMAT: u32 = 1;

/// Most markers stored at once (Memcached's default pool holds 16
/// connections; Redis multiplexes).
const MARKING_AT_ONCE: usize = 16;

/// What the fallback metric calls a cached `basket_view` row.
const ROW: &str = "basket_row";

/// Most markers kept for a cache that does not answer; beyond it the
/// oldest are dropped (and counted): their baskets' rows may then be
/// served stale from a cache that kept its data through the outage, until
/// they expire.
const MAX_PENDING: usize = 100_000;

/// `basket_view` rows in the cache.
#[derive(Clone)]
pub struct BasketCache {
    cache: Cache,
    pending: PendingMarkers,
}

impl BasketCache {
    #[must_use]
    pub fn new(cache: Cache) -> Self {
        Self {
            cache,
            pending: PendingMarkers::default(),
        }
    }

    /// `redis` or `memcached`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        self.cache.kind()
    }

    /// Whether the cache answers, for health checks.
    ///
    /// # Errors
    /// The cache is down or slow.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.cache.ping().await
    }

    fn key(basket_id: Uuid) -> Key {
        Key::new("basket_view", ROW_FORMAT, &basket_id.to_string())
            .expect("a UUID fits a cache key")
    }

    /// The cached row of a basket, when the cache holds one (not a marker)
    /// that decodes.
    pub async fn get(&self, basket_id: Uuid) -> Option<BasketRow> {
        let key = Self::key(basket_id);
        let entry = self.cache.get_or_fall_back(&key, ROW).await?;
        if entry.version % 2 == 1 {
            // A marker: the row is being changed.
            cache::count_fallback(ROW, "miss");
            return None;
        }
        match serde_json::from_slice::<BasketRow>(&entry.bytes) {
            Ok(row)
                if row.basket_id == basket_id
                    && entry_version(row.version) == Some(entry.version) =>
            {
                Some(row)
            }
            Ok(_) | Err(_) => {
                cache::count_fallback(ROW, "malformed");
                tracing::warn!(basket.id = %basket_id, "a cached basket row that does not decode; forgetting it");
                let _ = self.cache.delete(&key).await;
                None
            }
        }
    }

    /// Offers a row read from `basket_view`: stored unless the cache holds
    /// this version, a newer one, or a marker of a newer one.
    pub async fn fill(&self, row: &BasketRow) {
        let (Some(version), Ok(bytes)) = (entry_version(row.version), serde_json::to_vec(row))
        else {
            return;
        };
        let _ = self
            .cache
            .put_if_newer(&Self::key(row.basket_id), &Entry { version, bytes })
            .await;
    }

    /// Marks the rows of these baskets older than the given versions as
    /// gone, before a commit that takes them there. A marker the cache
    /// does not take now is kept and stored later ([`Self::retry_pending`]).
    ///
    /// Up to [`MARKING_AT_ONCE`] markers are stored at a time: a batch of
    /// a backlog touches hundreds of baskets, and one round trip after
    /// another would slow the projection down by as many.
    pub async fn invalidate(&self, baskets: impl IntoIterator<Item = (Uuid, i64)>) {
        futures::stream::iter(baskets)
            .for_each_concurrent(MARKING_AT_ONCE, |(basket_id, version)| async move {
                if self.mark(basket_id, version).await.is_err() {
                    self.pending.keep(basket_id, version);
                }
            })
            .await;
    }

    /// Stores the markers the cache did not take; returns how many are
    /// still kept.
    pub async fn retry_pending(&self) -> usize {
        for (basket_id, version) in self.pending.take() {
            if self.mark(basket_id, version).await.is_err() {
                self.pending.keep(basket_id, version);
            }
        }
        self.pending.len()
    }

    async fn mark(&self, basket_id: Uuid, version: i64) -> Result<(), CacheError> {
        let Some(version) = entry_version(version).and_then(|v| v.checked_sub(1)) else {
            return Ok(());
        };
        self.cache
            .put_if_newer(
                &Self::key(basket_id),
                &Entry {
                    version,
                    bytes: Vec::new(),
                },
            )
            .await
            .map(|_| ())
    }

    /// Stores the kept markers every `every`, for as long as the process
    /// runs.
    pub fn spawn_retries(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if !this.pending.is_empty() {
                    let left = this.retry_pending().await;
                    metrics::gauge!("eshop_cache_pending_markers").set(left as f64);
                }
            }
        })
    }
}

/// A row's entry version: twice its version (`None` past `u64`).
fn entry_version(row_version: i64) -> Option<u64> {
    u64::try_from(row_version)
        .ok()?
        .checked_mul(2)
        .filter(|v| *v > 0)
}

/// Markers the cache did not take, the newest per basket.
#[derive(Clone, Default)]
struct PendingMarkers(Arc<Mutex<HashMap<Uuid, i64>>>);

impl PendingMarkers {
    fn keep(&self, basket_id: Uuid, version: i64) {
        let Ok(mut pending) = self.0.lock() else {
            return;
        };
        if pending.len() >= MAX_PENDING && !pending.contains_key(&basket_id) {
            metrics::counter!("eshop_cache_markers_dropped_total").increment(1);
            return;
        }
        let kept = pending.entry(basket_id).or_insert(version);
        *kept = (*kept).max(version);
    }

    fn take(&self) -> Vec<(Uuid, i64)> {
        self.0
            .lock()
            .map(|mut pending| pending.drain().collect())
            .unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.0.lock().map(|p| p.len()).unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_sits_between_the_row_before_and_the_row_it_announces() {
        let before = entry_version(6).expect("a version");
        let marker = entry_version(7).expect("a version") - 1;
        let after = entry_version(7).expect("a version");
        assert!(before < marker && marker < after);
        assert_eq!(marker % 2, 1);
        assert_eq!(after % 2, 0);
    }

    #[test]
    fn a_version_with_no_entry_is_not_cached() {
        assert_eq!(entry_version(0), None);
        assert_eq!(entry_version(-1), None);
        assert_eq!(
            entry_version(i64::MAX),
            Some(u64::try_from(i64::MAX).expect("positive") * 2)
        );
    }

    /// The JSON of a row, as cached under [`ROW_FORMAT`]. When this test
    /// fails, the shape changed: bump `ROW_FORMAT` and update the JSON.
    #[test]
    fn the_cached_row_keeps_its_format() {
        use chrono::TimeZone;
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 29, 12, 0, 0)
            .unwrap();
        let row = BasketRow {
            basket_id: Uuid::from_u128(1),
            customer_id: Uuid::from_u128(2),
            status: domain::basket::BasketStatus::CheckedOut,
            currency: Some("EUR".to_owned()),
            lines: vec![crate::basket_view::Line {
                product_id: Uuid::from_u128(3),
                sku: "SKU-1".to_owned(),
                name: "Mug".to_owned(),
                unit_price_minor: 1250,
                quantity: 2,
                line_total_minor: 2500,
            }],
            total_minor: 2500,
            item_count: 2,
            order_id: Some(Uuid::from_u128(4)),
            opened_at: at,
            updated_at: at,
            version: 4,
        };
        assert_eq!(ROW_FORMAT, 1);
        assert_eq!(
            serde_json::to_value(&row).expect("JSON"),
            serde_json::json!({
                "basket_id": "00000000-0000-0000-0000-000000000001",
                "customer_id": "00000000-0000-0000-0000-000000000002",
                "status": "checked_out",
                "currency": "EUR",
                "lines": [{
                    "product_id": "00000000-0000-0000-0000-000000000003",
                    "sku": "SKU-1", "name": "Mug", "unit_price_minor": 1250,
                    "quantity": 2, "line_total_minor": 2500
                }],
                "total_minor": 2500,
                "item_count": 2,
                "order_id": "00000000-0000-0000-0000-000000000004",
                "opened_at": "2026-11-29T12:00:00Z",
                "updated_at": "2026-11-29T12:00:00Z",
                "version": 4
            })
        );
    }

    #[test]
    fn the_newest_kept_marker_of_a_basket_wins() {
        let pending = PendingMarkers::default();
        let basket = Uuid::now_v7();
        pending.keep(basket, 3);
        pending.keep(basket, 2);
        assert_eq!(pending.take(), vec![(basket, 3)]);
        assert!(pending.is_empty());
    }
}
