//! eshop's read models, each declared once: the events it reads, its row
//! type, its tables, and one pure function that folds an event into its
//! row. The live projector and a rebuild both run that fold: the live one
//! loads a batch's rows in one statement, folds, and writes them back in
//! one statement ([`View`]); a rebuild folds whole histories in memory and
//! COPYs the rows ([`Fold`]).
//!
//! Adding a read model means one file here and one line in [`all`].

mod contract;
pub mod event;
mod exact_sum;
mod rows;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub mod basket_cache;
pub mod basket_view;
pub mod order_view;
pub mod product_catalog;
pub mod sales_daily;
pub mod schema;
pub mod search_document;
pub mod status;

use std::sync::Arc;

pub use contract::{
    ApplyError, Fold, FoldError, Folded, NoTotals, Projection, ReadModel, View, fold_batch,
};
pub use exact_sum::ExactSum;
pub use order_view::OrderRecord;
pub use rows::{CopyValue, Json, Rows, Table, pg_json_time};

/// The registry: every PostgreSQL read model, as the projector, rebuild,
/// verify and status run them.
#[must_use]
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(View::<product_catalog::ProductCatalog>::new()),
        Arc::new(View::<basket_view::BasketView>::new()),
        Arc::new(View::<order_view::OrderView>::new()),
        Arc::new(View::<sales_daily::SalesDaily>::new()),
    ]
}

/// The name of the search projection, which keeps documents in the search
/// index rather than rows in tables: [`search_document`] folds them.
pub const SEARCH: &str = "search";

/// The aggregate types whose events reach the search index.
pub const SEARCH_AGGREGATE_TYPES: &[&str] = &["Product", "Order"];

/// Every projection and the aggregate types it reads: the PostgreSQL read
/// models, then [`SEARCH`]. What the stall watch, status and the query
/// side's consistency waits go by.
#[must_use]
pub fn catalog() -> Vec<(&'static str, &'static [&'static str])> {
    all()
        .iter()
        .map(|p| (p.name(), p.aggregate_types()))
        .chain([(SEARCH, SEARCH_AGGREGATE_TYPES)])
        .collect()
}

/// The names of every projection: the PostgreSQL read models, then
/// [`SEARCH`].
#[must_use]
pub fn names() -> Vec<&'static str> {
    catalog().into_iter().map(|(name, _)| name).collect()
}
