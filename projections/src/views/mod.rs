//! The read models. Each projection is one file: the aggregate types it
//! reads, and the rows each event changes.

mod basket_view;
mod exact_sum;
mod order_view;
mod product_catalog;
mod sales_daily;

use std::sync::Arc;

pub use basket_view::BasketView;
pub use order_view::{OrderRecord, OrderView};
pub use product_catalog::ProductCatalog;
pub use sales_daily::SalesDaily;

use crate::projector::Projection;

/// Every projection `eshop project` runs.
#[must_use]
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(ProductCatalog),
        Arc::new(BasketView),
        Arc::new(OrderView),
        Arc::new(SalesDaily),
    ]
}
