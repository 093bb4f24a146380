//! Batch loading for nested fields: every `product` under the lines of a
//! page of orders or baskets is fetched in one statement, not one each.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use crate::read_models::{ProductRow, ReadModels};

/// Products by id from `product_catalog`.
pub struct ProductLoader(pub ReadModels);

impl Loader<Uuid> for ProductLoader {
    type Value = ProductRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = self.0.products_by_id(keys).await.map_err(Arc::new)?;
        Ok(rows
            .into_iter()
            .map(|row| (row.row.product_id, row))
            .collect())
    }
}
