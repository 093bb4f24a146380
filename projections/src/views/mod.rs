//! The read models. Each projection is one file: the aggregate types it
//! reads, and the rows each event changes.

mod order_view;
mod product_catalog;

use std::sync::Arc;

pub use order_view::OrderView;
pub use product_catalog::ProductCatalog;

use crate::projector::Projection;

/// Every projection `eshop project` runs.
#[must_use]
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(ProductCatalog), Arc::new(OrderView)]
}
