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
#[cfg(test)]
mod testing;

pub mod basket_view;
pub mod order_view;
pub mod product_catalog;
pub mod sales_daily;

use std::sync::Arc;

pub use contract::{
    ApplyError, FoldError, Folded, NoTotals, Projection, ReadModel, View, fold_batch,
};
pub use exact_sum::ExactSum;
pub use order_view::OrderRecord;
pub use rows::{CopyValue, Fold, Json, Rows, Table, pg_json_time};

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

/// The name of the search projection, which keeps the search index rather
/// than tables (its runtime lives with the projector).
pub const SEARCH: &str = "search";

/// The names of every projection: the PostgreSQL read models, then
/// [`SEARCH`].
#[must_use]
pub fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name()).chain([SEARCH]).collect()
}
